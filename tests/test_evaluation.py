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
    assert cross_entropy is mean_loss  # the old name, kept for lessons 7 and 10
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
