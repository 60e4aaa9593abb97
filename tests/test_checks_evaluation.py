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
