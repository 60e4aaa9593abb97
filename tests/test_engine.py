"""The serving engine: exact greedy output under any arrival schedule, blocks returned, errors."""

import random

import pytest
import torch

from course_lib.engine import Engine, EngineStats, QueueFull, TokenEvent
from course_lib.model import GPT, GPTConfig
from course_lib.sampling import SamplingParams, generate

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)


def _reference(model, prompt, params):
    """What generate gives for this request alone: its new tokens."""
    out = generate(model, [prompt], params=params)
    return out[0, len(prompt):].tolist()


def _random_schedule(model, seed, *, n_requests, max_new, block, cancel=True, **engine_kw):
    """Drive an engine with requests arriving between steps at random, some sharing a prefix
    longer than a block, some cancelled; check every output against generate alone."""
    rng = random.Random(seed)
    V, context = model.config.vocab_size, model.config.block_size
    shared = [rng.randrange(V) for _ in range(block + block // 2 + 1)]
    engine = Engine(model, kv_block_size=block, **engine_kw)
    pending = []
    for i in range(n_requests):
        new = rng.randint(1, max_new)
        tail = [rng.randrange(V) for _ in range(rng.randint(1, 2 * block))]
        prompt = (shared + tail) if i % 3 == 0 else tail
        prompt = prompt[: context - new]
        pending.append((prompt, SamplingParams(max_new_tokens=new, temperature=0)))
    got, cancelled, requests = {}, set(), {}
    first = True
    while pending or engine.has_unfinished():
        # The first request (with the shared prefix) runs alone for a step, so its prompt
        # blocks are cached before the other shared-prefix requests come.
        for _ in range(1 if first else rng.choice([0, 0, 1, 2])):
            if pending:
                prompt, params = pending.pop(0)
                rid = engine.add_request(prompt, params)
                requests[rid], got[rid] = (prompt, params), []
        first = False
        running = [r.id for r in engine.running]
        if cancel and running and rng.random() < 0.08:
            victim = rng.choice(running)
            assert engine.cancel(victim)
            cancelled.add(victim)
        assert engine.stats().requests_running <= engine.max_batch_size
        for event in engine.step():
            assert event.request_id not in got or event.finish_reason != "cancelled" or (
                event.request_id in cancelled)
            if event.token is not None:
                got[event.request_id].append(event.token)
    for rid, (prompt, params) in requests.items():
        ref = _reference(model, prompt, params)
        if rid in cancelled:
            assert got[rid] == ref[: len(got[rid])], rid
        else:
            assert got[rid] == ref, rid
    stats = engine.stats()
    assert stats.kv_cache_blocks_used == 0
    assert engine.reserved == 0
    assert stats.requests_running == stats.requests_waiting == 0
    return engine, cancelled


def _llama_like():
    torch.manual_seed(1)
    config = GPTConfig(vocab_size=101, block_size=64, n_layer=2, n_head=4, n_kv_head=2,
                       n_embd=32, position="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    return GPT(config).eval()


@pytest.mark.parametrize("seed", range(4))
def test_random_arrivals_small_gpt2(seed):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=64, n_layer=2, n_head=4, n_embd=32)).eval()
    engine, _ = _random_schedule(model, seed, n_requests=14, max_new=20, block=4,
                                 max_batch_size=5)
    assert engine.stats().prefix_cache_hits_total > 0


@pytest.mark.parametrize("seed", range(2))
def test_random_arrivals_small_llama(seed):
    """Rotary positions per token and grouped-query attention."""
    engine, _ = _random_schedule(_llama_like(), seed, n_requests=12, max_new=20, block=4,
                                 max_batch_size=4)
    assert engine.stats().prefix_cache_hits_total > 0


def test_random_arrivals_shipped_model():
    from course_lib.pretrained import load_pretrained

    model, _ = load_pretrained()
    engine, _ = _random_schedule(model, 0, n_requests=12, max_new=40, block=16, max_batch_size=6)
    assert engine.stats().prefix_cache_hits_total > 0


def test_smollm2_random_arrivals(smollm2):
    """Llama family with grouped-query attention (9 query heads, 3 key/value heads), short."""
    model, _ = smollm2
    engine, _ = _random_schedule(model, 0, n_requests=4, max_new=8, block=16, max_batch_size=4,
                                 num_kv_blocks=24)
    assert engine.stats().prefix_cache_hits_total >= 1  # the first block of the shared prefix


def test_prefix_cache_hit_counts_and_is_exact(small_model):
    prompt = list(range(1, 11))  # two full blocks of 4 and two tokens
    engine = Engine(small_model, kv_block_size=4)
    first = engine.run([prompt], GREEDY)
    assert engine.stats().prefix_cache_hits_total == 0
    rid = engine.add_request(prompt + [50], GREEDY)
    engine.step()
    # Both full prompt blocks are shared: the same physical blocks as the first request had.
    assert engine.stats().prefix_cache_hits_total == 2
    table = engine.block_table(rid)
    assert len(table) == 3 and engine.pool.refcount[table[0]] == 1
    while engine.has_unfinished():
        engine.step()
    assert first == [_reference(small_model, prompt, GREEDY)]
    again = Engine(small_model, kv_block_size=4, prefix_caching=False)
    assert again.run([prompt + [50]], GREEDY) == [_reference(small_model, prompt + [50], GREEDY)]
    assert again.stats().prefix_cache_hits_total == 0


def test_identical_prompts_share_blocks_and_finish_clean(small_model):
    engine = Engine(small_model, kv_block_size=4)
    prompt = list(range(3, 12))
    engine.run([prompt], GREEDY)
    ids = [engine.add_request(prompt, GREEDY) for _ in range(3)]
    engine.step()
    tables = [engine.block_table(i) for i in ids]
    assert tables[0][:2] == tables[1][:2] == tables[2][:2]  # shared prompt blocks
    assert engine.pool.refcount[tables[0][0]] == 3
    assert len({t[2] for t in tables}) == 3  # each its own last block
    while engine.has_unfinished():
        engine.step()
    assert engine.stats().kv_cache_blocks_used == 0
    assert engine.stats().prefix_cache_hits_total == 6


def test_lru_eviction_when_the_free_list_is_empty(small_model):
    """Cached blocks are evicted least recently used first, and only when nothing is free."""
    engine = Engine(small_model, kv_block_size=4, num_kv_blocks=6)
    params = SamplingParams(max_new_tokens=1, temperature=0)
    a, b = list(range(1, 10)), list(range(20, 29))  # two full blocks each
    engine.run([a], params)
    engine.run([b], params)
    assert len(engine.pool.evictable) == 4 and engine.pool.used == 0
    engine.run([a], params)  # a's blocks become the most recently used
    assert engine.stats().prefix_cache_hits_total == 2
    # 4 free blocks needed: the 2 free ones, then b's 2 cached blocks (older than a's).
    engine.run([list(range(40, 56))], SamplingParams(max_new_tokens=1, temperature=0))
    engine.run([a], params)
    assert engine.stats().prefix_cache_hits_total == 4
    engine.run([b], params)
    assert engine.stats().prefix_cache_hits_total == 4  # b had been evicted
    assert engine.pool.used == 0


def test_cancel_frees_at_once_and_is_reported(small_model):
    engine = Engine(small_model, kv_block_size=4)
    params = SamplingParams(max_new_tokens=20, temperature=0)
    rid = engine.add_request(list(range(1, 8)), params, request_id="a")
    waiting = engine.add_request([5, 6], params)
    assert rid == "a"
    engine.step()
    assert engine.stats().kv_cache_blocks_used == 2 + 1
    assert engine.cancel("a") and engine.cancel(waiting)
    assert engine.stats().kv_cache_blocks_used == 0
    assert not engine.cancel("a") and not engine.cancel("nobody")
    assert engine.step() == [TokenEvent("a", None, "cancelled"),
                             TokenEvent(waiting, None, "cancelled")]
    assert not engine.has_unfinished()


def test_stop_ids_and_length(small_model):
    prompt = [1, 2, 3]
    ref = _reference(small_model, prompt, SamplingParams(max_new_tokens=10, temperature=0))
    stop = ref[3]
    engine = Engine(small_model)
    engine.add_request(prompt, SamplingParams(max_new_tokens=10, temperature=0,
                                              stop_ids=(stop,)), request_id="s")
    engine.add_request(prompt, SamplingParams(max_new_tokens=2, temperature=0), request_id="l")
    engine.add_request(prompt, SamplingParams(max_new_tokens=0), request_id="z")
    events = []
    while engine.has_unfinished():
        events += engine.step()
    ends = {e.request_id: e for e in events if e.finish_reason}
    cut = ref.index(stop)
    assert [e.token for e in events if e.request_id == "s"] == ref[: cut + 1]
    assert ends["s"] == TokenEvent("s", stop, "stop")
    assert ends["l"] == TokenEvent("l", ref[1], "length")
    assert ends["z"] == TokenEvent("z", None, "length")
    assert engine.stats().generated_tokens_total == cut + 1 + 2


def test_static_and_continuous_give_the_same_texts(small_model):
    rng = random.Random(3)
    prompts = [[rng.randrange(97) for _ in range(rng.randint(1, 12))] for _ in range(7)]
    params = [SamplingParams(max_new_tokens=rng.randint(1, 15), temperature=0) for _ in prompts]
    outs = {}
    for policy, batch in (("continuous", 3), ("static", 3), ("continuous", 1)):
        engine = Engine(small_model, kv_block_size=4, max_batch_size=batch, policy=policy)
        outs[policy, batch] = engine.run(prompts, params)
    assert outs["continuous", 3] == outs["static", 3] == outs["continuous", 1]
    assert outs["continuous", 3] == [_reference(small_model, p, q)
                                     for p, q in zip(prompts, params, strict=True)]


def test_static_admits_only_into_an_empty_batch(small_model):
    def trace(policy):
        """(running, waiting) after each step: [1] ends at step 1, [2] at step 5."""
        engine = Engine(small_model, max_batch_size=2, policy=policy)
        for token, new in ((1, 1), (2, 5), (3, 1)):
            engine.add_request([token], SamplingParams(max_new_tokens=new, temperature=0))
        out = []
        while engine.has_unfinished():
            engine.step()
            out.append((engine.stats().requests_running, engine.stats().requests_waiting))
        return out

    # static: [3] waits until the whole batch has finished; continuous: it takes [1]'s slot.
    assert trace("static") == [(1, 1)] * 4 + [(0, 1), (0, 0)]
    assert trace("continuous") == [(1, 1), (1, 0), (1, 0), (1, 0), (0, 0)]


def test_max_batch_size_respected(small_model):
    engine = Engine(small_model, max_batch_size=3)
    for i in range(7):
        engine.add_request([i + 1], SamplingParams(max_new_tokens=4, temperature=0))
    seen = []
    while engine.has_unfinished():
        events = engine.step()
        seen.append(len({e.request_id for e in events}))
        assert engine.stats().requests_running <= 3
    assert max(seen) == 3 and sum(seen) == 7 * 4


def test_kv_block_budget_limits_admission(small_model):
    """With few blocks, requests wait for blocks rather than run out of them mid-way."""
    engine = Engine(small_model, kv_block_size=4, num_kv_blocks=5)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    prompts = [[i + 1] * 6 for i in range(4)]  # 15 positions: 4 blocks each, by the end
    outs = engine.run(prompts, params)
    assert outs == [_reference(small_model, p, params) for p in prompts]
    assert engine.stats().kv_cache_blocks_used == 0


def test_seeded_sampling_is_reproducible_in_any_company(small_model):
    prompt = [4, 5, 6, 7, 8]
    seeded = SamplingParams(max_new_tokens=15, temperature=1.0, top_k=20, seed=123)
    alone = Engine(small_model).run([prompt], seeded)[0]
    assert alone == _reference(small_model, prompt, seeded)
    others = [SamplingParams(max_new_tokens=9, temperature=0.8, seed=s) for s in range(3)]
    crowd = Engine(small_model, max_batch_size=8).run(
        [[1, 2], prompt, [9] * 7, prompt], [others[0], seeded, others[1], seeded])
    assert crowd[1] == crowd[3] == alone
    penalized = SamplingParams(max_new_tokens=15, temperature=0, repetition_penalty=1.5,
                               frequency_penalty=0.5)
    assert Engine(small_model).run([prompt, [3, 3]], penalized)[0] == _reference(
        small_model, prompt, penalized)


def test_bad_requests_raise_and_change_nothing(small_model):
    engine = Engine(small_model, max_waiting=2)
    engine.add_request([1, 2], request_id="taken")
    before = engine.stats()
    cases = [
        (ValueError, "empty", dict(prompt_ids=[])),
        (ValueError, "outside the vocabulary", dict(prompt_ids=[1, 97])),
        (ValueError, "outside the vocabulary", dict(prompt_ids=[-1])),
        (TypeError, "integer token ids", dict(prompt_ids=[1.5])),
        (TypeError, "token ids", dict(prompt_ids="hello")),
        (ValueError, "already in use", dict(prompt_ids=[1], request_id="taken")),
        (TypeError, "request_id", dict(prompt_ids=[1], request_id=7)),
        (ValueError, "beyond the context",
         dict(prompt_ids=[1] * 20, params=SamplingParams(max_new_tokens=13))),
        (TypeError, "SamplingParams", dict(prompt_ids=[1], params={"temperature": 0})),
        (ValueError, "stop_ids", dict(prompt_ids=[1], params=SamplingParams(stop_ids=500))),
        (ValueError, "one sequence", dict(prompt_ids=[[1, 2], [3, 4]])),
    ]
    for error, words, kwargs in cases:
        with pytest.raises(error, match=words):
            engine.add_request(**kwargs)
        assert engine.stats() == before and list(engine.requests) == ["taken"]
    with pytest.raises(ValueError, match="KV blocks"):
        Engine(small_model, kv_block_size=4, num_kv_blocks=2).add_request([1] * 9)
    assert engine.add_request([1]) == "req-0"  # no id was used up by the refused calls
    with pytest.raises(QueueFull, match="max_waiting=2"):
        engine.add_request([2])
    assert engine.stats().requests_waiting == 2


def test_bad_engine_arguments(small_model):
    with pytest.raises(TypeError, match="GPT"):
        Engine("gpt2")
    with pytest.raises(ValueError, match="policy"):
        Engine(small_model, policy="eager")
    with pytest.raises(ValueError, match="max_batch_size"):
        Engine(small_model, max_batch_size=0)
    with pytest.raises(ValueError, match="kv_block_size"):
        Engine(small_model, kv_block_size=0)
    with pytest.raises(TypeError, match="prefix_caching"):
        Engine(small_model, prefix_caching="yes")


def test_stats_and_default_block_count(small_model):
    engine = Engine(small_model, max_batch_size=4, kv_block_size=8)
    # Enough for max_batch_size sequences of the full 32-token context.
    assert engine.stats() == EngineStats(0, 0, 0, 16, 0, 0, 4)
    a = engine.add_request([1, 2, 3], SamplingParams(max_new_tokens=3, temperature=0))
    engine.step()
    assert engine.stats().kv_cache_blocks_used == 1 and engine.block_table(a) != []
    with pytest.raises(KeyError):
        engine.block_table("nobody")


def test_one_forward_pass_per_step_mixes_prefill_and_decode(small_model):
    """A step runs each layer once, over the new prompt's tokens and the decoding token."""
    rows = []
    hook = small_model.transformer.h[0].attn.c_attn.register_forward_hook(
        lambda module, args, out: rows.append(args[0].shape[0]))
    try:
        engine = Engine(small_model, kv_block_size=4)
        engine.add_request([1, 2, 3], GREEDY)
        engine.step()
        engine.add_request([4, 5, 6, 7, 8], GREEDY)
        events = engine.step()
    finally:
        hook.remove()
    assert rows == [3, 1 + 5]
    assert len(events) == 2
