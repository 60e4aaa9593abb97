"""Load test of course_lib.engine in-process: throughput and latency of three ways of serving.

    OMP_NUM_THREADS=1 python scripts/load_test.py [--model shipped|smollm2] [--threads 1]
        [--requests 16] [--concurrency 1 4 16 inf] [--rates R ...] [--new-tokens 96]

Greedy requests for --new-tokens tokens after short Shakespeare prompts arrive as a Poisson
process. A load level is a concurrency c: requests arrive at c / T1 per second, T1 being the
time one request takes alone, so c requests would be in flight if batching cost nothing
(--rates gives arrival rates in requests/s instead; concurrency inf: all requests arrive at
once, a burst). Each level is served by three setups:
one request at a time (max_batch_size=1), static batching (batch 16, a new batch only when
the last one is done), and continuous batching (batch 16, requests join and leave every
step). For each: generated tokens/s (first arrival to last token), time to first token
(arrival to first token) and inter-token latency, p50 and p95; and the greedy texts, which
must be identical across setups.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from course_lib.load_test import (  # noqa: E402
    SETUPS,
    kv_blocks_for,
    load_level,
    make_prompts,
    percentile,
    poisson_arrivals,
    time_alone,
)
from course_lib.sampling import SamplingParams  # noqa: E402


def load_model(name: str):
    if name == "shipped":
        from course_lib.pretrained import load_pretrained

        return load_pretrained()
    from course_lib.pretrained import load_smollm2

    return load_smollm2()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("shipped", "smollm2"), default="shipped")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--requests", type=int, default=16, help="requests per load level")
    parser.add_argument("--concurrency", type=float, nargs="+", default=[1, 4, 16, float("inf")],
                        help="load levels; inf: every request arrives at once (a burst)")
    parser.add_argument("--rates", type=float, nargs="+", default=None,
                        help="arrival rates in requests/s (instead of --concurrency)")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    max_prompt = min(24, model.config.block_size - args.new_tokens)
    prompts = make_prompts(tokenizer, args.requests, max_prompt, args.seed)
    # The KV pool needs only what these requests can use, not 16 full contexts of SmolLM2.
    num_kv_blocks = kv_blocks_for(prompts, args.new_tokens)
    print(f"model {args.model} ({model.num_parameters() / 1e6:.1f}M parameters), "
          f"threads {torch.get_num_threads()}, machine {platform.processor() or platform.machine()}"
          f" with {os.cpu_count()} CPUs, torch {torch.__version__}")
    t1 = time_alone(model, prompts, params, num_kv_blocks)
    print(f"{args.requests} greedy requests of {args.new_tokens} new tokens, prompts of "
          f"{min(map(len, prompts))}-{max(map(len, prompts))} tokens; one request alone: "
          f"{t1:.2f} s")
    levels = ([(f"{r:g} req/s", r) for r in args.rates] if args.rates else
              [(f"concurrency {c:g}" if c != float("inf") else "burst", c / t1)
               for c in args.concurrency])
    results = {}
    header = (f"{'load':>16} {'setup':>14} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} "
              f"{'ITL p50':>8} {'ITL p95':>8}")
    print(header)
    for label, rate in levels:
        arrivals = poisson_arrivals(len(prompts), rate, args.seed)
        try:
            level = load_level(model, prompts, arrivals, params, SETUPS, num_kv_blocks)
        except AssertionError as e:
            raise SystemExit(f"{e} at {label}") from None
        for name, r in level.items():
            results[label, name] = r
            ms = {k: [1000 * v for v in r[k]] for k in ("ttft", "itl")}
            print(f"{label:>16} {name:>14} {r['tokens_per_s']:9.1f} "
                  f"{percentile(ms['ttft'], 50):7.0f}ms {percentile(ms['ttft'], 95):7.0f}ms "
                  f"{percentile(ms['itl'], 50):6.1f}ms {percentile(ms['itl'], 95):6.1f}ms")
        one, cont = results[label, "one at a time"], results[label, "continuous"]
        static = results[label, "static"]
        print(f"{'':>16} continuous / one at a time: "
              f"{cont['tokens_per_s'] / one['tokens_per_s']:.1f}x tokens/s; TTFT p95 "
              f"continuous {1000 * percentile(cont['ttft'], 95):.0f} ms vs static "
              f"{1000 * percentile(static['ttft'], 95):.0f} ms; texts identical")
    return results


if __name__ == "__main__":
    main()
