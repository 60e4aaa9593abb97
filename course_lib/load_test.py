"""Load testing a serving engine in-process: Poisson arrivals, real-time serving, latency stats."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from course_lib.data import load_corpus
from course_lib.engine import Engine
from course_lib.model import GPT
from course_lib.sampling.params import SamplingParams

SETUPS = {  # name: Engine keyword arguments
    "one at a time": dict(max_batch_size=1),
    "static": dict(max_batch_size=16, policy="static"),
    "continuous": dict(max_batch_size=16, policy="continuous"),
}


def make_prompts(tokenizer, n: int, max_len: int, seed: int = 0) -> list[list[int]]:
    """n short prompts: the first words of random lines of the held-out plays."""
    lines = [line for line in load_corpus("val").splitlines() if len(line.split()) >= 4]
    rng = random.Random(seed)
    return [tokenizer.encode(" ".join(rng.choice(lines).split()[:8]))[:max_len]
            for _ in range(n)]


def poisson_arrivals(n: int, rate: float, seed: int = 0) -> list[float]:
    """n arrival times in seconds, the first at 0, gaps exponential with mean 1/rate
    (rate inf: all at once, a burst)."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for _ in range(n):
        arrivals.append(t)
        t += 0.0 if rate == float("inf") else rng.expovariate(rate)
    return arrivals


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 to 100) of values, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def kv_blocks_for(prompts: Sequence[Sequence[int]], new_tokens: int, batch: int = 16,
                  block_size: int = 16) -> int:
    """KV blocks enough for `batch` of the longest request: a pool sized to the test."""
    longest = max(len(p) for p in prompts) + new_tokens
    return batch * -(-longest // block_size)


def serve(model: GPT, prompts: Sequence[Sequence[int]], arrivals: Sequence[float],
          params: SamplingParams, num_kv_blocks: int | None = None, **engine_kw) -> dict:
    """Run one schedule on a fresh Engine in real time: tokens/s (first arrival to last token),
    each request's time to first token, every inter-token latency (s), and the token ids."""
    engine = Engine(model, num_kv_blocks=num_kv_blocks, **engine_kw)
    start = time.perf_counter()
    pending = list(range(len(prompts)))
    times: dict[str, list[float]] = {}
    tokens: dict[str, list[int]] = {}
    ids = {}
    while pending or engine.has_unfinished():
        now = time.perf_counter() - start
        while pending and arrivals[pending[0]] <= now:
            i = pending.pop(0)
            ids[i] = engine.add_request(prompts[i], params, request_id=str(i))
            times[ids[i]], tokens[ids[i]] = [], []
        if not engine.has_unfinished():  # idle until the next arrival
            time.sleep(max(0.0, arrivals[pending[0]] - now))
            continue
        events = engine.step()
        now = time.perf_counter() - start
        for event in events:
            times[event.request_id].append(now)
            tokens[event.request_id].append(event.token)
    ttft = [times[ids[i]][0] - arrivals[i] for i in range(len(prompts))]
    itl = [b - a for t in times.values() for a, b in zip(t, t[1:], strict=False)]
    n_tokens = sum(len(t) for t in tokens.values())
    makespan = max(t[-1] for t in times.values()) - arrivals[0]
    return {"tokens_per_s": n_tokens / makespan, "ttft": ttft, "itl": itl,
            "texts": [tokens[ids[i]] for i in range(len(prompts))]}


def summarize(result: dict) -> dict[str, float]:
    """tokens/s and TTFT / inter-token latency p50 and p95 in milliseconds, from serve()."""
    out = {"tokens_per_s": result["tokens_per_s"]}
    for key in ("ttft", "itl"):
        for q in (50, 95):
            out[f"{key}_p{q}_ms"] = 1000 * percentile(result[key], q)
    return out


def time_alone(model: GPT, prompts: Sequence[Sequence[int]], params: SamplingParams,
               num_kv_blocks: int | None = None) -> float:
    """Seconds one request takes alone (after a warm-up request that is not timed)."""
    warm = Engine(model, max_batch_size=1, num_kv_blocks=num_kv_blocks)
    warm.run(prompts[:1], params)  # first calls are slow: not part of any measurement
    t0 = time.perf_counter()
    warm.run(prompts[1:2] or prompts[:1], params)
    return time.perf_counter() - t0


def load_level(model: GPT, prompts: Sequence[Sequence[int]], arrivals: Sequence[float],
               params: SamplingParams, setups: dict[str, dict] | None = None,
               num_kv_blocks: int | None = None) -> dict[str, dict]:
    """serve() the same schedule with each setup (default SETUPS); greedy texts must agree."""
    results: dict[str, dict] = {}
    for name, engine_kw in (SETUPS if setups is None else setups).items():
        results[name] = serve(model, prompts, arrivals, params, num_kv_blocks, **engine_kw)
        first = next(iter(results.values()))
        if params.temperature == 0 and results[name]["texts"] != first["texts"]:
            raise AssertionError(f"greedy texts differ between setups: {name}")
    return results
