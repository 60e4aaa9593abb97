"""The helpers sampling.py offers lessons 8 and 7: logits, filtering summaries, repeats, text."""

import pytest
import torch

from course_lib.sampling import (
    describe_filtering,
    generate,
    generate_text,
    next_token_logits,
    next_token_probs,
    repeated_ngram_fraction,
)
from course_lib.tokenization import CharTokenizer


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(50) * 3


def test_next_token_logits_match_next_token_probs(small_model):
    ids = [1, 5, 9, 2]
    logits = next_token_logits(small_model, ids)
    assert logits.shape == (97,)
    assert torch.allclose(torch.softmax(logits, -1), next_token_probs(small_model, ids)[0])


def test_next_token_logits_crops_long_prompts_and_rejects_batches(small_model):
    long = list(range(40))  # block_size is 32
    assert torch.allclose(next_token_logits(small_model, long), next_token_logits(small_model,
                                                                                  long[-32:]))
    with pytest.raises(ValueError, match="one sequence"):
        next_token_logits(small_model, torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        next_token_logits(small_model, [])


def test_describe_filtering_without_filters_changes_nothing(logits):
    d = describe_filtering(logits, n=10)
    assert d["before"] == pytest.approx(d["after"])
    assert d["kept"] == 50
    assert d["entropy_before"] == pytest.approx(d["entropy_after"])
    assert d["before"] == sorted(d["before"], reverse=True)
    assert d["ids"][0] == int(logits.argmax())
    assert d["cumulative"][-1] < 1.0 and d["cumulative"] == sorted(d["cumulative"])


def test_describe_filtering_temperature(logits):
    cold = describe_filtering(logits, temperature=0.05)
    hot = describe_filtering(logits, temperature=3.0)
    assert cold["after"][0] > 0.99
    assert cold["entropy_after"] < 0.1 < hot["entropy_before"] < hot["entropy_after"]
    greedy = describe_filtering(logits, temperature=0)
    assert greedy["kept"] == 1 and greedy["after"][0] == 1.0 and greedy["entropy_after"] == 0


def test_describe_filtering_top_k_and_top_p(logits):
    d = describe_filtering(logits, top_k=5)
    assert d["kept"] == 5
    assert sum(d["after"][:5]) == pytest.approx(1.0)
    assert d["after"][5:] == [0.0] * 15
    # Renormalised: each kept token gains the same factor.
    ratio = d["after"][0] / d["before"][0]
    assert d["after"][4] / d["before"][4] == pytest.approx(ratio)
    p = describe_filtering(logits, top_p=0.5)
    # Top-p keeps the first tokens whose cumulative probability reaches p.
    first_reaching = next(i for i, c in enumerate(p["cumulative"]) if c >= 0.5)
    assert p["kept"] == first_reaching + 1
    assert describe_filtering(logits, top_p=0.3)["kept"] <= p["kept"]
    with pytest.raises(ValueError, match="top_p"):
        describe_filtering(logits, top_p=1.5)
    with pytest.raises(ValueError, match="1-D"):
        describe_filtering(logits[None])


def test_repeated_ngram_fraction():
    assert repeated_ngram_fraction([1, 2, 3, 4, 5], n=2) == 0.0
    # 1 2 1 2 1 2: bigrams 12 21 12 21 12 -> the last three repeat.
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], n=2) == pytest.approx(3 / 5)
    assert repeated_ngram_fraction(torch.tensor([[7, 7, 7, 7]]), n=1) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="at least"):
        repeated_ngram_fraction([1, 2], n=3)
    with pytest.raises(ValueError, match="n must"):
        repeated_ngram_fraction([1, 2], n=0)


def test_generate_text_is_the_decoded_continuation(small_model):
    tok = CharTokenizer([chr(32 + i) for i in range(95)] + ["\n", "\t"])
    assert tok.vocab_size == 97
    text = generate_text(small_model, tok, "Hi", 8, seed=3)
    ids = generate(small_model, tok.encode("Hi"), 8, seed=3)[0].tolist()
    assert text == tok.decode(ids[2:]) and len(text) == 8
    with pytest.raises(ValueError, match="prompt is empty"):
        generate_text(small_model, tok, "", 3)
    assert generate_text(small_model, tok, "a", 0) == ""
