"""SamplingParams checked once, and sample_next: one step for a batch, each row its own settings."""

import dataclasses

import pytest
import torch

from course_lib.sampling import (
    SamplingParams,
    beam_search,
    generate,
    make_params,
    sample_next,
    speculative_generate,
)


@pytest.mark.parametrize("field, value, message", [
    ("temperature", -0.5, "temperature"),
    ("temperature", float("nan"), "temperature"),
    ("top_k", 0, "top_k"),
    ("top_k", 2.5, "top_k"),
    ("top_p", 0.0, "top_p"),
    ("min_p", 1.5, "min_p"),
    ("repetition_penalty", 0.0, "repetition_penalty"),
    ("presence_penalty", "high", "presence_penalty"),
    ("frequency_penalty", float("inf"), "frequency_penalty"),
    ("seed", -1, "seed"),
    ("max_new_tokens", -1, "max_new_tokens"),
    ("max_new_tokens", 10**12, "max_new_tokens"),
    ("stop_ids", [], "stop_ids"),
    ("stop_ids", [-3], "stop_ids"),
    ("stop", [""], "stop"),
    ("stop", [3], "stop"),
])
def test_a_bad_field_is_refused_when_built_with_its_name(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SamplingParams(**{field: value})
    good = SamplingParams()
    with pytest.raises((ValueError, TypeError), match=message):  # replace checks again
        dataclasses.replace(good, **{field: value})


def test_params_are_normalised_frozen_and_hashable():
    p = SamplingParams(stop_ids={5, 2}, stop="END", top_k=torch.tensor(3), temperature=1)
    assert p.stop_ids == (2, 5) and p.stop == ("END",) and p.top_k == 3
    assert type(p.top_k) is int and type(p.temperature) is float
    assert p == SamplingParams(stop_ids=[2, 5], stop=["END"], top_k=3)
    assert hash(p) == hash(SamplingParams(stop_ids=(2, 5), stop=("END",), top_k=3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 0.5
    assert SamplingParams(temperature=0).greedy and not p.greedy
    assert SamplingParams(frequency_penalty=0.1).penalized and not p.penalized


def test_make_params_merges_keywords_over_params_and_names_unknown_settings():
    base = SamplingParams(temperature=0.5, top_k=10)
    assert make_params(base, {"top_k": 3}) == SamplingParams(temperature=0.5, top_k=3)
    assert make_params(base) is base
    assert make_params(None, {"seed": 1}, temperature=0.0) == SamplingParams(temperature=0.0,
                                                                              seed=1)
    assert make_params(None, {"temperature": 1.0}, temperature=0.0).temperature == 1.0
    with pytest.raises(TypeError, match="temprature.*SamplingParams has .*temperature"):
        make_params(None, {"temprature": 0.5})
    with pytest.raises(TypeError, match="params must be a SamplingParams"):
        make_params({"temperature": 0.5})


def test_generate_takes_params_or_keywords_alike(small_model):
    prompt = [1, 2, 3]
    params = SamplingParams(max_new_tokens=12, temperature=0.9, top_k=20, seed=4)
    by_params = generate(small_model, prompt, params=params)
    assert torch.equal(by_params, generate(small_model, prompt, 12, temperature=0.9, top_k=20,
                                           seed=4))
    # a keyword replaces one field of params
    assert torch.equal(generate(small_model, prompt, params=params, seed=5),
                       generate(small_model, prompt, 12, temperature=0.9, top_k=20, seed=5))
    with pytest.raises(TypeError, match="unknown sampling setting top_n"):
        generate(small_model, prompt, 3, top_n=5)


def _random_params(rng: torch.Generator, i: int) -> SamplingParams:
    pick = int(torch.randint(0, 4, (), generator=rng))
    return [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, repetition_penalty=1.8),
        SamplingParams(temperature=0.8, top_k=7, seed=i),
        SamplingParams(temperature=1.2, top_p=0.8, min_p=0.05, presence_penalty=0.5, seed=i),
    ][pick]


@pytest.mark.parametrize("seed", range(5))
def test_sample_next_gives_each_row_what_it_alone_would_get(seed):
    """Rows with different settings in one batch: each token equals that row sampled alone."""
    rng = torch.Generator().manual_seed(seed)
    n, vocab = 9, 40
    logits = torch.randn(n, vocab, generator=rng) * 3
    contexts = [torch.randint(0, vocab, (int(torch.randint(1, 12, (), generator=rng)),),
                              generator=rng) for _ in range(n)]
    params = [_random_params(rng, i) for i in range(n)]

    def gens():
        return [None if p.seed is None else torch.Generator().manual_seed(p.seed)
                for p in params]

    together = sample_next(logits, params, contexts, gens())
    alone = [int(sample_next(logits[i : i + 1], p, contexts[i][None], g)[0])
             for i, (p, g) in enumerate(zip(params, gens(), strict=True))]
    assert together.tolist() == alone
    # greedy rows are the argmax after their penalty
    for i, p in enumerate(params):
        if p.greedy and not p.penalized:
            assert together[i] == logits[i].argmax()
    with pytest.raises(ValueError, match="9 rows of logits need 9 params"):
        sample_next(logits, params[:3])


def test_one_params_for_a_batch_draws_as_one_tensor():
    """One SamplingParams and one generator for all rows: transformers' processors, then one
    torch.multinomial over the batch."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper

    logits = torch.randn(5, 30, generator=torch.Generator().manual_seed(1))
    p = SamplingParams(temperature=0.7, top_k=10)
    got = sample_next(logits, p, generator=torch.Generator().manual_seed(3))
    ids = torch.zeros(5, 1, dtype=torch.long)
    warped = TopKLogitsWarper(10)(ids, TemperatureLogitsWarper(0.7)(ids, logits.clone()))
    want = torch.multinomial(torch.softmax(warped, -1), 1,
                             generator=torch.Generator().manual_seed(3))[:, 0]
    assert got.tolist() == want.tolist()
    # one params per row, all equal and sharing a generator: the same as one params
    same = sample_next(logits, [p] * 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, same)


def test_beam_and_speculative_take_params_and_refuse_what_they_cannot_use(small_model):
    prompt = [1, 2, 3]
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    assert torch.equal(beam_search(small_model, prompt, 1, params=params),
                       generate(small_model, prompt, params=params))
    assert torch.equal(speculative_generate(small_model, small_model, prompt, params=params),
                       generate(small_model, prompt, params=params))
    with pytest.raises(ValueError, match="beam search does not sample.*top_k"):
        beam_search(small_model, prompt, 2, 5, top_k=3)
    with pytest.raises(ValueError, match="speculative decoding takes no penalties"):
        speculative_generate(small_model, small_model, prompt, 5, repetition_penalty=1.2)


def test_speculative_decoding_stops_where_generate_stops(small_model):
    prompt = [1, 2, 3]
    full = generate(small_model, prompt, 30, temperature=0.0)[0, 3:].tolist()
    for stop in full[3:8]:
        want = generate(small_model, prompt, 30, temperature=0.0, stop_ids=stop)
        got = speculative_generate(small_model, small_model, prompt, 30, stop_ids=stop)
        assert got.tolist() == want.tolist()
        assert got[0, -1] == stop
