import pytest
import torch

from course_lib.sampling import (
    apply_temperature,
    entropy_bits,
    generate,
    next_token_probs,
    stream_generate,
    top_k_filter,
    top_p_filter,
)


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, 50) * 3


def test_filters_match_transformers_logits_processors(logits):
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    ids = torch.zeros(4, 1, dtype=torch.long)
    for t in (0.3, 1.0, 2.5):
        assert torch.allclose(apply_temperature(logits, t), TemperatureLogitsWarper(t)(ids, logits))
    for k in (1, 5, 50, 80):
        assert torch.equal(top_k_filter(logits, k), TopKLogitsWarper(k)(ids, logits.clone()))
    for p in (0.05, 0.3, 0.9, 1.0):
        assert torch.equal(top_p_filter(logits, p), TopPLogitsWarper(p)(ids, logits.clone()))


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.75))
    assert kept.tolist() == [True, True, False, False]
    kept = torch.isfinite(top_p_filter(probs.log(), 0.01))
    assert kept.tolist() == [True, False, False, False]  # the top token always stays


def test_temperature_zero_is_greedy(logits):
    probs = torch.softmax(apply_temperature(logits, 0), -1)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))
    assert torch.allclose(probs.max(-1).values, torch.ones(4))


def test_entropy_bits():
    assert entropy_bits(torch.full((8,), 1 / 8)).item() == pytest.approx(3.0)
    assert entropy_bits(torch.tensor([1.0, 0.0])).item() == 0.0


def test_generate_returns_prompt_then_new_tokens(small_model):
    out = generate(small_model, [5, 6, 7], 10, temperature=0)
    assert out.shape == (1, 13) and out[0, :3].tolist() == [5, 6, 7]


@pytest.mark.parametrize("n_new", [20, 60])  # 60 runs past block_size=32: the window slides
def test_cached_equals_uncached(small_model, n_new):
    prompt = torch.randint(0, 97, (2, 5))
    greedy = generate(small_model, prompt, n_new, temperature=0)
    assert torch.equal(greedy, generate(small_model, prompt, n_new, temperature=0,
                                        use_cache=False))
    sampled = generate(small_model, prompt, n_new, temperature=1.0, top_k=20, seed=3)
    assert torch.equal(sampled, generate(small_model, prompt, n_new, temperature=1.0, top_k=20,
                                         seed=3, use_cache=False))


def test_seed_makes_sampling_reproducible(small_model):
    a = generate(small_model, [1], 30, seed=7)
    assert torch.equal(a, generate(small_model, [1], 30, seed=7))
    assert not torch.equal(a, generate(small_model, [1], 30, seed=8))


def test_stream_yields_the_same_tokens(small_model):
    streamed = [t.item() for t in stream_generate(small_model, [3, 4], 12, seed=1)]
    assert streamed == generate(small_model, [3, 4], 12, seed=1)[0, 2:].tolist()


def test_next_token_probs_with_top_k(small_model):
    probs = next_token_probs(small_model, [1, 2, 3], temperature=1.0, top_k=5)
    assert (probs[0] > 0).sum().item() == 5
    assert probs.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
    ],
)
def test_bad_sampling_arguments(small_model, kwargs, match):
    args = dict(max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(small_model, [1, 2], **args)


def test_bad_prompts(small_model):
    with pytest.raises(ValueError, match="empty"):
        generate(small_model, [], 3)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(small_model, [1, 500], 3)
    with pytest.raises(TypeError, match="top_k"):
        generate(small_model, [1], 3, top_k=2.5)
