import math

import pytest
import torch
from test_evaluation import Chars  # the same independent character tokenizer

from course_lib.evaluation import bits_per_char, perplexity, score_text, token_nll


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


def test_bad_input(small_model):
    with pytest.raises(ValueError, match="empty"):
        score_text(small_model, Chars(), "")
    with pytest.raises(TypeError, match="text"):
        score_text(small_model, Chars(), 3)
    with pytest.raises(ValueError, match="at least 2"):
        score_text(small_model, Chars(), "a")
