import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.evaluation import bits_per_char, cross_entropy, perplexity, surprisal, token_nll


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
    assert perplexity(small_model, ids) == pytest.approx(math.exp(cross_entropy(small_model, ids)))
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


def test_bad_input(small_model):
    with pytest.raises(ValueError, match="text is empty"):
        bits_per_char(small_model, Chars(), "")
    with pytest.raises(ValueError, match="at least 2"):
        perplexity(small_model, [3])
    with pytest.raises(TypeError, match="text"):
        surprisal(small_model, Chars(), None)
