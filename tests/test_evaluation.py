"""Measuring a model: per-token loss, perplexity, bits per character, surprisal, bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib.evaluation import (
    bits_per_char,
    cross_entropy,
    mean_loss,
    perplexity,
    repeated_phrase_costs,
    score_text,
    surprisal,
    token_nll,
)


class Chars:
    """A minimal character tokenizer over a fixed alphabet, independent of course_lib's."""

    alphabet = "abcdefghijklmnopqrstuvwxyz ."

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


def test_token_nll_equals_cross_entropy_by_hand(small_model):
    ids = torch.randint(0, 97, (20,))
    logits, _ = small_model(ids[None, :-1])
    expected = F.cross_entropy(logits[0], ids[1:], reduction="none")
    assert torch.allclose(token_nll(small_model, ids), expected, atol=1e-5)


def test_long_texts_are_scored_window_by_window(small_model):
    ids = torch.randint(0, 97, (100,))  # block_size is 32
    nll = token_nll(small_model, ids)
    assert nll.shape == (99,)
    logits, _ = small_model(ids[None, 32:64])
    expected = F.cross_entropy(logits[0], ids[33:65], reduction="none")
    assert torch.allclose(nll[32:64], expected, atol=1e-5)


def test_perplexity_is_exp_cross_entropy(small_model):
    ids = torch.randint(0, 97, (50,)).tolist()
    assert perplexity(small_model, ids) == pytest.approx(math.exp(mean_loss(small_model, ids)))
    assert cross_entropy is mean_loss  # the old name, kept for lessons 8 and 11
    # an untrained model is close to uniform: perplexity near the vocabulary size
    assert 60 < perplexity(small_model, ids) < 140


def test_bits_per_char_counts_characters_after_the_first_token(small_model):
    tok = Chars()
    text = "the cat sat on the mat."
    nll = token_nll(small_model, tok.encode(text))
    expected = nll.sum().item() / math.log(2) / (len(text) - 1)
    assert bits_per_char(small_model, tok, text) == pytest.approx(expected)


def test_surprisal(small_model):
    tok = Chars()
    rows = surprisal(small_model, tok, "abc")
    assert [p for p, _ in rows] == ["a", "b", "c"]
    assert rows[0][1] is None
    nll = token_nll(small_model, tok.encode("abc"))
    assert rows[2][1] == pytest.approx(nll[1].item() / math.log(2))


class Pairs(Chars):
    """Two characters per token (a made-up coarser tokenizer over the same alphabet)."""

    def encode(self, text):
        n = len(self.alphabet)
        ids = [self.alphabet.index(c) for c in text]
        return [a * n + b for a, b in zip(ids[::2], ids[1::2], strict=False)]

    def decode(self, ids):
        n = len(self.alphabet)
        return "".join(self.alphabet[i // n] + self.alphabet[i % n] for i in ids)


def test_score_text_agrees_with_the_single_figures(small_model):
    text = "the cat sat on the mat."
    s = score_text(small_model, Chars(), text)
    ids = Chars().encode(text)
    assert s["tokens"] == len(ids) - 1 and s["chars"] == len(text) - 1
    assert s["bits_per_char"] == pytest.approx(bits_per_char(small_model, Chars(), text))
    assert s["perplexity"] == pytest.approx(perplexity(small_model, ids))
    assert s["total_bits"] == pytest.approx(token_nll(small_model, ids).sum().item() / math.log(2))
    assert s["bits_per_token"] == pytest.approx(math.log2(s["perplexity"]))


def _uniform(vocab_size: int):
    from course_lib.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=1, n_head=1, n_embd=8))
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied to lm_head: every logit is 0
    return model


def test_per_token_perplexity_depends_on_the_tokenizer_bits_per_char_does_not():
    """Uniform over 28 characters and uniform over 28 * 28 pairs of them give every text of
    even length the same probability, 28 ** -len: the same model of text. Their per-token
    perplexities differ 28-fold; their bits per character are equal."""
    text = "the cat sat on the mat again"
    chars, pairs = score_text(_uniform(28), Chars(), text), score_text(_uniform(784), Pairs(), text)
    assert chars["perplexity"] == pytest.approx(28)
    assert pairs["perplexity"] == pytest.approx(784)
    # the first token (1 or 2 characters) is context, so compare per scored character
    assert chars["bits_per_char"] == pytest.approx(math.log2(28))
    assert pairs["bits_per_char"] == pytest.approx(math.log2(28))


# ----- bad input ---------------------------------------------------------------------------------

BAD_IDS = [
    ([3], ValueError, "at least 2"),
    ([], ValueError, "empty"),
    ([[1, 2], [3, 4]], ValueError, "one sequence"),
    ([1.0, 2.0, 3.0], TypeError, "integer"),
    (np.array([1.5, 2.5]), TypeError, "integer"),
    ([[1, 2], [3]], TypeError, "ids"),
    ([1, 97], ValueError, "outside the vocabulary"),  # small_model has 97 tokens
    ([1, -1], ValueError, "outside the vocabulary"),
    ([1, 2**70], TypeError, "ids"),
    (torch.tensor([True, False]), TypeError, "integer"),
    (torch.zeros(2, 2, 2, dtype=torch.long), ValueError, "shape"),
    ("ab", TypeError, "encode"),
    (None, TypeError, "ids"),
    (3, ValueError, "shape"),
]


@pytest.mark.parametrize("ids, error, match", BAD_IDS)
@pytest.mark.parametrize("measure", [token_nll, mean_loss, perplexity])
def test_bad_ids(small_model, measure, ids, error, match):
    with pytest.raises(error, match=match):
        measure(small_model, ids)


@pytest.mark.parametrize("ids", [np.array([1, 2, 3]), [[1, 2, 3]], torch.tensor([[1, 2, 3]]),
                                 (np.int64(1), 2, 3), torch.tensor([1, 2, 3], dtype=torch.int32)])
def test_ids_in_any_integer_form(small_model, ids):
    assert token_nll(small_model, ids).tolist() == token_nll(small_model, [1, 2, 3]).tolist()


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-1, ValueError),
                                               (1.5, TypeError), (None, TypeError)])
def test_bad_batch_size(small_model, batch_size, error):
    with pytest.raises(error, match="batch_size"):
        token_nll(small_model, [1, 2, 3], batch_size=batch_size)


BAD_TEXT = [
    ("", ValueError, "empty"),
    (None, TypeError, "text"),
    (3, TypeError, "text"),
    (b"abc", TypeError, "text"),
    (["a", "b"], TypeError, "text"),
]


@pytest.mark.parametrize("text, error, match", BAD_TEXT)
@pytest.mark.parametrize("measure", [bits_per_char, surprisal, score_text])
def test_bad_text(small_model, measure, text, error, match):
    with pytest.raises(error, match=match):
        measure(small_model, Chars(), text)


@pytest.mark.parametrize("measure", [bits_per_char, score_text])
def test_one_token_is_too_short(small_model, measure):
    with pytest.raises(ValueError, match="at least 2"):
        measure(small_model, Chars(), "a")


def test_a_tokenizer_bigger_than_the_model(small_model):
    # Pairs gives ids up to 783; small_model knows 97: a clear error, not an IndexError
    with pytest.raises(ValueError, match="outside the vocabulary"):
        bits_per_char(small_model, Pairs(), "zz zz")


@pytest.mark.parametrize("measure", [token_nll, mean_loss, perplexity])
def test_the_callers_mode_is_kept(small_model, measure):
    small_model.train()
    measure(small_model, [1, 2, 3])
    assert small_model.training
    small_model.eval()
    measure(small_model, [1, 2, 3])
    assert not small_model.training


def test_dropout_does_not_change_the_score(small_model):
    small_model.config.dropout = 0.5
    for m in small_model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.5
    small_model.train()
    assert token_nll(small_model, [1, 2, 3, 4]).tolist() == token_nll(small_model,
                                                                      [1, 2, 3, 4]).tolist()


def test_surprisal_summary_matches_score_text():
    from course_lib.evaluation import score_text, surprisal, surprisal_summary
    from course_lib.model import GPT, GPTConfig
    from course_lib.tokenization import CharTokenizer

    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text("abcdefgh ")
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2,
                          n_embd=16))
    text = "abc defg hab"
    summary = surprisal_summary(surprisal(model, tokenizer, text), text)
    score = score_text(model, tokenizer, text)
    for key in ("tokens", "chars", "total_bits", "bits_per_token", "perplexity", "bits_per_char"):
        assert summary[key] == pytest.approx(score[key], rel=1e-5), key
    assert surprisal_summary([("a", None)], "a") is None


# ----- sliding windows, multiple choice, bootstrap (issue 14) --------------------------------


def test_sliding_window_with_stride_block_is_the_default_and_stride_one_is_full_context(
        small_model):
    torch.manual_seed(3)
    ids = torch.randint(0, 97, (90,))
    default = token_nll(small_model, ids)
    assert torch.equal(token_nll(small_model, ids, stride=32), default)
    for stride in (1, 7, 16):
        nll = token_nll(small_model, ids, stride=stride)
        assert nll.shape == default.shape  # every token scored exactly once
        assert torch.allclose(nll[:32], default[:32])  # the first window is the same
    nll = token_nll(small_model, ids, stride=1)
    with torch.no_grad():
        for t in (33, 50, 89):  # token t with the full window of 32 tokens before it
            logits, _ = small_model(ids[t - 32 : t][None])
            want = -torch.log_softmax(logits[0, -1], -1)[ids[t]]
            assert nll[t - 1].item() == pytest.approx(want.item(), abs=1e-5)
    # mean_loss passes stride on
    assert mean_loss(small_model, ids, stride=32) == pytest.approx(default.mean().item())
    with pytest.raises(ValueError, match="stride"):
        token_nll(small_model, ids, stride=33)
    with pytest.raises(ValueError, match="stride"):
        score_text(small_model, Chars(), "abc def ghi", stride=0)


def _play_text():
    lines = [f"line number {i} of the speech, long enough" for i in range(200)]
    speeches = []
    for s in range(20):
        speeches.append("\n".join([f"SPEAKER{s % 3}:"] + lines[s * 10 : s * 10 + 10]))
    return "\n\n".join(speeches) + "\n"


def test_next_line_choices_are_deterministic_real_next_lines():
    from course_lib.data import load_corpus
    from course_lib.multiple_choice import next_line_choices

    text = load_corpus("val")
    items = next_line_choices(text, 60, seed=1)
    assert items == next_line_choices(text, 60, seed=1)
    assert items != next_line_choices(text, 60, seed=2)
    assert len(items) == 60 and all(len(it.choices) == 4 for it in items)
    answers = [it.answer for it in items]
    assert set(answers) == {0, 1, 2, 3}  # the right answer is not always in one place
    for it in items:
        speaker, before = it.context.split("\n", 1)
        assert speaker.endswith(":") and (before + it.choices[it.answer] + "\n") in text
        assert len(set(it.choices)) == 4
        for k, c in enumerate(it.choices):  # distractors are real lines, not the next one
            assert ("\n" + c + "\n") in text
            if k != it.answer:
                assert (before + c + "\n") not in text
    with pytest.raises(ValueError, match="usable questions"):
        next_line_choices(_play_text(), 10_000)


class CharsNL(Chars):
    alphabet = Chars.alphabet + "\n:"


def test_choice_logprobs_are_the_sum_by_hand_and_score_choices_picks_the_best(small_model):
    from course_lib.multiple_choice import ChoiceItem, choice_logprobs, score_choices

    tok = CharsNL()
    items = [ChoiceItem("the cat sat on ", ("the mat.", "a hat.", "zzz."), 0),
             ChoiceItem("hello ", ("world.", "there.", "you."), 2)]
    got = choice_logprobs(small_model, tok, items, batch_size=2)  # rows split across batches
    assert got.shape == (2, 3)
    with torch.no_grad():
        for i, it in enumerate(items):
            ctx = tok.encode(it.context)
            for j, c in enumerate(it.choices):
                cont = tok.encode(c + "\n")
                ids = torch.tensor(ctx + cont)
                logits, _ = small_model(ids[:-1][None])
                logp = torch.log_softmax(logits[0], -1)
                want = sum(logp[len(ctx) - 1 + k, cont[k]].item() for k in range(len(cont)))
                assert got[i, j].item() == pytest.approx(want, abs=1e-4)
    r = score_choices(small_model, tok, items)
    assert r["correct"] == [int(row.argmax()) == it.answer for row, it in zip(got, items,
                                                                            strict=True)]
    chars = torch.tensor([[len(c) + 1 for c in it.choices] for it in items])
    assert r["correct_norm"] == [int(row.argmax()) == it.answer for row, it in
                                 zip(got / chars, items, strict=True)]
    assert r["accuracy"] == pytest.approx(sum(r["correct"]) / 2)
    assert r["chance"] == pytest.approx(1 / 3)
    with pytest.raises(TypeError, match="ChoiceItem"):
        score_choices(small_model, tok, [])


def test_shipped_model_beats_chance_on_the_held_out_benchmark():
    from course_lib.bootstrap import bootstrap_interval
    from course_lib.data import load_corpus
    from course_lib.multiple_choice import next_line_choices, score_choices
    from course_lib.pretrained import load_pretrained

    model, tok = load_pretrained()
    r = score_choices(model, tok, next_line_choices(load_corpus("val"), 100))
    lo, hi = bootstrap_interval(r["correct"])
    assert lo <= r["accuracy"] <= hi and r["accuracy"] > r["chance"]


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_data():
    from course_lib.bootstrap import bootstrap_interval, paired_bootstrap_interval

    g = torch.Generator().manual_seed(0)
    small = (torch.rand(100, generator=g) < 0.4).float()
    big = (torch.rand(2000, generator=g) < 0.4).float()
    lo, hi = bootstrap_interval(small)
    assert lo < small.mean().item() < hi
    lo2, hi2 = bootstrap_interval(big)
    assert lo2 < big.mean().item() < hi2 and hi2 - lo2 < (hi - lo) / 2
    assert bootstrap_interval(small) == bootstrap_interval(small)  # seeded
    # weighted: bits over characters
    bits, chars = torch.rand(50, generator=g) * 100, torch.randint(20, 60, (50,), generator=g)
    lo, hi = bootstrap_interval(bits, chars)
    assert lo < (bits.sum() / chars.sum()).item() < hi
    # paired: a constant gap is certain; separate intervals would overlap
    a = torch.rand(200, generator=g)
    lo, hi = paired_bootstrap_interval(a + 0.01, a)
    assert lo == pytest.approx(0.01) and hi == pytest.approx(0.01)
    assert bootstrap_interval(a + 0.01)[0] < bootstrap_interval(a)[1]
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap_interval(a, a[:10])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(small, confidence=1.0)
    with pytest.raises(ValueError, match="weights"):
        bootstrap_interval(small, weights=torch.ones(3))


def test_shared_context_scoring_equals_row_scoring(small_model):
    from course_lib.multiple_choice import ChoiceItem, choice_logprobs

    tok = CharsNL()
    items = [ChoiceItem("the cat sat on ", ("the mat.", "a", "zzz."), 0),
             ChoiceItem("hello ", ("world.", "there.", "you."), 2)]
    rows = choice_logprobs(small_model, tok, items)
    shared = choice_logprobs(small_model, tok, items, share_context=True)
    assert torch.allclose(rows, shared, atol=1e-4)
    with pytest.raises(TypeError, match="share_context"):
        choice_logprobs(small_model, tok, items, share_context="yes")


# ----- words: the unit two tokenizers share (issue 14, surprisal on plain English) ------------


def _owner_of_each_char(text):
    """For each character, the index of the word that owns it: a word owns the whitespace
    before it, and the text's trailing whitespace belongs to the last word."""
    starts = [i for i, c in enumerate(text)
              if not c.isspace() and (i == 0 or text[i - 1].isspace())]
    owners = []
    for i in range(len(text)):
        j = next((k for k in range(i, len(text)) if not text[k].isspace()), None)
        owners.append(len(starts) - 1 if j is None else sum(s <= j for s in starts) - 1)
    return owners


def test_word_surprisal_with_one_character_per_token(small_model):
    from course_lib.evaluation import word_surprisal

    text = "a cat  sat. on the   mat "
    words = word_surprisal(small_model, Chars(), text)
    assert [w for w, _ in words] == text.split()
    assert words[0] == ("a", None)  # the first token alone: given, not scored
    bits = [b for _, b in surprisal(small_model, Chars(), text)]
    owners = _owner_of_each_char(text)
    for k, (_, b) in enumerate(words[1:], start=1):
        want = sum(bits[i] for i in range(1, len(text)) if owners[i] == k)
        assert b == pytest.approx(want)
    assert sum(b for _, b in words[1:]) == pytest.approx(
        score_text(small_model, Chars(), text)["total_bits"])


def test_word_surprisal_on_the_shipped_tokenizer_and_split_characters():
    from course_lib.evaluation import word_surprisal
    from course_lib.pretrained import load_pretrained
    from course_lib.tokenization import token_pieces

    model, tokenizer = load_pretrained()
    text = "KING HENRY:\nOnce more unto the breach, dear friends \u2615 caf\u00e9 2025!\n\n"
    ids = tokenizer.encode(text)
    pieces = token_pieces(tokenizer, ids)
    assert any(p.decode("utf-8", "replace") != p.decode("utf-8", "ignore")
               for p in pieces)  # some token holds part of a character
    words = word_surprisal(model, tokenizer, text)
    assert [w for w, _ in words] == text.split()
    # by hand: each token's bits to the owner of the character where its first byte lies
    owners = _owner_of_each_char(text)
    byte_owner = [o for c, o in zip(text, owners, strict=True) for _ in c.encode()]
    nll = token_nll(model, ids) / math.log(2)
    want = [None] * len(words)
    offset = len(pieces[0])
    for piece, b in zip(pieces[1:], nll.tolist(), strict=True):
        k = byte_owner[offset]
        want[k] = (want[k] or 0.0) + b
        offset += len(piece)
    assert words[0] == ("KING", None)  # one token, the first: given, not scored
    assert [b for _, b in words[1:]] == pytest.approx(want[1:]) and want[0] is None
    assert sum(want[1:]) == pytest.approx(score_text(model, tokenizer, text)["total_bits"])


def test_word_surprisal_refuses_what_it_cannot_split(small_model):
    from course_lib.evaluation import word_surprisal

    with pytest.raises(ValueError, match="at least one word"):
        word_surprisal(small_model, Chars(), "   ")
    with pytest.raises(ValueError, match="at least 2 tokens"):
        word_surprisal(small_model, Chars(), "a")

    class DropsFullStops(Chars):
        def encode(self, text):
            return super().encode(text.replace(".", ""))

    with pytest.raises(ValueError, match="decode back"):
        word_surprisal(small_model, DropsFullStops(), "one. two.")
    for text, error, match in BAD_TEXT:
        with pytest.raises(error, match=match):
            word_surprisal(small_model, Chars(), text)


def test_word_surprisal_compares_two_tokenizers_word_for_word(smollm2):
    from course_lib.evaluation import word_surprisal

    model, tokenizer = smollm2
    text = "The meeting on March 3, 2025 cost $58 million in Portland."
    words = word_surprisal(model, tokenizer, text)
    assert [w for w, _ in words] == text.split()
    assert sum(b for _, b in words if b is not None) == pytest.approx(
        score_text(model, tokenizer, text)["total_bits"], rel=1e-5)


class CharsWithNewline(Chars):
    alphabet = Chars.alphabet + "\n"


def test_repeated_phrase_costs_equal_token_nll_of_each_text(small_model):
    """The batched, padded costs equal token_nll summed over each copy, phrase by phrase."""
    tok, phrases = CharsWithNewline(), [" a cat sat.", " dogs run", " xyz"]
    costs = repeated_phrase_costs(small_model, tok, phrases)
    for p, (first, second) in zip(phrases, costs.tolist(), strict=True):
        nll = token_nll(small_model, tok.encode("\n" + p + p))  # nll[t]: token t + 1
        n = len(p)
        assert first == pytest.approx(nll[1 : n].sum().item(), abs=1e-4)
        assert second == pytest.approx(nll[n + 1 : 2 * n].sum().item(), abs=1e-4)


@pytest.mark.parametrize("phrases, error, match", [
    ("a cat", TypeError, "phrases must be a list"),
    ([], ValueError, "phrases is empty"),
    ([" " + "a" * 20], ValueError, "block_size"),
])
def test_repeated_phrase_costs_bad_phrases(small_model, phrases, error, match):
    with pytest.raises(error, match=match):
        repeated_phrase_costs(small_model, CharsWithNewline(), phrases)
