import math

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char, surprisal
from course_lib.pretrained import load_pretrained
from widgets.checks.evaluation import (
    SENTENCE,
    check_bits_per_char,
    check_low_perplexity_text,
    check_perplexity,
)


def _bits():
    model, tokenizer = load_pretrained()
    rows = surprisal(model, tokenizer, SENTENCE)
    return rows, [b for _, b in rows if b is not None]


def test_perplexity():
    _, bits = _bits()
    mean = sum(bits) / len(bits)
    assert check_perplexity(2 ** mean)
    assert "None" in check_perplexity(None).message
    assert not check_perplexity("12")
    assert "mean surprisal" in check_perplexity(mean).message
    assert "raise 2, not e" in check_perplexity(math.exp(mean)).message
    assert "not their sum" in check_perplexity(2 ** sum(bits)).message
    assert not check_perplexity(2 ** mean + 5)


def test_bits_per_char():
    rows, bits = _bits()
    assert check_bits_per_char(sum(bits) / (len(SENTENCE) - len(rows[0][0])))
    assert "None" in check_bits_per_char(None).message
    assert "first token" in check_bits_per_char(sum(bits) / len(SENTENCE)).message
    assert "bits per token" in check_bits_per_char(sum(bits) / len(bits)).message
    assert not check_bits_per_char(1.0e3)


def test_with_another_model(small_model):
    class Chars:
        alphabet = "".join(sorted(set(SENTENCE)))

        def encode(self, text):
            return [self.alphabet.index(c) for c in text]

        def decode(self, ids):
            return "".join(self.alphabet[i] for i in ids)

    tok = Chars()
    expected = bits_per_char(small_model, tok, SENTENCE)
    assert check_bits_per_char(expected, small_model, tok)
    assert not check_bits_per_char(expected + 0.5, small_model, tok)


def test_low_perplexity_text():
    model, tokenizer = load_pretrained()
    plays = bits_per_char(model, tokenizer, load_corpus("val")[:20_000])
    repetitive = "my lord, " * 30
    assert bits_per_char(model, tokenizer, repetitive) < plays  # what makes the right answer right
    assert check_low_perplexity_text(repetitive)
    assert "None" in check_low_perplexity_text(None).message
    assert not check_low_perplexity_text(42)
    assert "at least 200" in check_low_perplexity_text("my lord, " * 3).message
    assert "copied" in check_low_perplexity_text(load_corpus("val")[5000:5400]).message
    unusual = "Zygomorphic quasars juxtapose kvetching wombats beneath xylophones. " * 3
    assert bits_per_char(model, tokenizer, unusual) > plays
    assert not check_low_perplexity_text(unusual)


def _logprob(model, context_ids, continuation_ids, shift=1):
    import torch

    ids = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logits, _ = model(ids)
    logp = torch.log_softmax(logits[0], dim=-1)
    n = len(context_ids)
    return sum(logp[n - shift + j, t].item() for j, t in enumerate(continuation_ids))


def test_continuation_logprob_right_and_the_usual_slips():
    import math

    from widgets.checks.evaluation import check_continuation_logprob

    assert check_continuation_logprob(_logprob)
    assert "None" in check_continuation_logprob(None).message
    off_by_one = check_continuation_logprob(lambda m, a, b: _logprob(m, a, b, shift=0))
    assert not off_by_one and "Off by one" in off_by_one.message
    mean = check_continuation_logprob(lambda m, a, b: _logprob(m, a, b) / len(b))
    assert not mean and "take the sum" in mean.message
    nll = check_continuation_logprob(lambda m, a, b: -_logprob(m, a, b))
    assert not nll and "minus that" in nll.message
    bits = check_continuation_logprob(lambda m, a, b: _logprob(m, a, b) / math.log(2))
    assert not bits and "bits" in bits.message
    whole = check_continuation_logprob(lambda m, a, b: _logprob(m, a[:1], a[1:] + b))
    assert not whole and "context's tokens too" in whole.message
    assert "one finite number" in check_continuation_logprob(lambda m, a, b: "junk").message


def test_continuation_logprob_on_another_model(small_model):
    from course_lib.tokenization import CharTokenizer
    from widgets.checks.evaluation import CONTINUATIONS, check_continuation_logprob

    tokenizer = CharTokenizer.from_text("".join(a + b for a, b in CONTINUATIONS))
    assert check_continuation_logprob(_logprob, small_model, tokenizer)
    assert not check_continuation_logprob(lambda m, a, b: 0.0, small_model, tokenizer)
