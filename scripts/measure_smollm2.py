"""Load time and peak memory of SmolLM2 on our code, in a fresh process, as a learner meets it.

    OMP_NUM_THREADS=1 taskset -c 0 python scripts/measure_smollm2.py [--new-tokens 64] [--json]
        [--quantized]

Prints the seconds load_smollm2() takes, the peak resident memory (RSS) after loading and after
a greedy chat reply, and the reply's tokens/s. Issue 17's limits: 10 s, 1.2 GB on one core;
issue 27's for --quantized (the file's 4-bit blocks): 2 s, 500 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def cpu_seconds() -> float:
    # CPU time, not wall time: on a shared, busy machine it still says what the work costs.
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    parser.add_argument("--quantized", action="store_true",
                        help="load_smollm2(quantized=True): the file's 4-bit blocks")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    import torch

    from course_lib.chat import encode_chat
    from course_lib.pretrained import load_smollm2
    from course_lib.sampling import generate

    t_import = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), cpu_seconds()
    model, tok = load_smollm2(quantized=args.quantized)
    load_s, load_cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    rss_load = peak_rss_mb()
    prompt = encode_chat(tok, [{"role": "user", "content": "Write a short poem about the sea."}])
    t0, c0 = time.perf_counter(), cpu_seconds()
    out = generate(model, prompt, args.new_tokens, temperature=0)
    gen_s, gen_cpu_s = time.perf_counter() - t0, cpu_seconds() - c0
    result = {
        "quantized": args.quantized,
        "threads": torch.get_num_threads(),
        "import_s": round(t_import, 2),
        "load_s": round(load_s, 2),
        "load_cpu_s": round(load_cpu_s, 2),
        "peak_rss_after_load_mb": round(rss_load),
        "peak_rss_after_generate_mb": round(peak_rss_mb()),
        "new_tokens": out.shape[1] - len(prompt),
        "generate_tok_s": round((out.shape[1] - len(prompt)) / gen_s, 1),
        "generate_tok_per_cpu_s": round((out.shape[1] - len(prompt)) / gen_cpu_s, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:<28} {v}")
    return result


if __name__ == "__main__":
    main()
