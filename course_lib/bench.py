"""Benchmark course_lib against what a learner would use instead; every figure is a ratio.

python -m course_lib.bench            all figures (CPU: a few minutes)
python -m course_lib.bench --quick    smaller sizes, for a smoke run
taskset -c 1 python -m course_lib.bench --skip training generation cache bpe ddp smollm2
                                      SmolLM2 in the file's 4 bits on one core (issue 27's table)
On a GPU it adds tokens/s and model FLOPs utilisation at GPT-2-small shape in bf16.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from course_lib.device import autocast, default_device
from course_lib.files import write_text
from course_lib.model import GPT
from course_lib.sampling import generate
from course_lib.tokenization import BPETokenizer, naive_train_bpe
from course_lib.train import fused_adamw
from course_lib.validation import check_device

# Dense bf16 peak FLOP/s of GPUs we know, for MFU (from the vendors' data sheets).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}


def _course_shape() -> dict:
    """The shape of the model the course ships and trains (course_lib/assets)."""
    from course_lib.pretrained import MODEL_FILE

    c = json.loads(MODEL_FILE.with_suffix(".json").read_text())
    return dict(n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"],
                n_positions=c["block_size"], vocab_size=c["vocab_size"])


SHAPES = {
    "course": _course_shape(),
    # A CPU-sized model: big enough that framework overhead is not the whole story.
    "small": dict(n_layer=6, n_head=6, n_embd=384, n_positions=512, vocab_size=8192),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50304),
    # nanoGPT's README run on a CPU (shakespeare_char: 65 characters, batch 12, context 64).
    "nanogpt": dict(n_layer=4, n_head=4, n_embd=128, n_positions=64, vocab_size=65),
}


def hf_and_ours(shape: str, device: torch.device, seed: int = 0):
    """A randomly initialised transformers GPT-2 and our GPT holding the same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(**SHAPES[shape], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(config).to(device)
    ours = GPT.from_hf_gpt2(hf).to(device)
    return hf, ours


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_times(fns: dict[str, Callable[[], object]], device: torch.device,
                repeats: int) -> dict[str, float]:
    """Fastest of `repeats` timed runs of each function, after one warm-up each.

    The runs are interleaved (a, b, a, b, ...) so that a slow spell of the machine hits every
    contender alike, and the minimum is the least noisy estimate of each.
    """
    for fn in fns.values():
        fn()
    _sync(device)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def training_step_fn(model, forward: Callable, batch: tuple, device: torch.device,
                     bf16: bool | None = None):
    # Fused AdamW for both models: transformers' Trainer default, and what course_lib.train uses.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused_adamw(device))

    def step():
        with autocast(device, bf16):
            loss = forward(*batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_training(shape: str, batch_size: int, seq_len: int, steps: int,
                   device: torch.device, compile: bool = True, cpu_bf16: bool = False) -> dict:
    """Training tokens/s (forward, backward, AdamW): ours, eager and compiled, against
    transformers' GPT-2 as it comes (eager); cpu_bf16 adds ours under bf16 autocast."""
    hf, ours = hf_and_ours(shape, device)
    hf.train()
    ours.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, SHAPES[shape]["vocab_size"], (batch_size, seq_len + 1), generator=g)
    x = x.to(device)
    inputs, targets = x[:, :-1], x[:, 1:]
    ours_step = training_step_fn(ours, lambda a, b: ours(a, b)[1], (inputs, targets), device)
    # shift_labels: transformers scores exactly our targets instead of shifting labels itself.
    targets = targets.contiguous()
    hf_step = training_step_fn(
        hf, lambda a, b: hf(a, labels=b, shift_labels=b).loss, (inputs, targets), device
    )
    tokens = batch_size * seq_len

    def run(step):
        return lambda: [step() for _ in range(steps)]

    fns = {"ours": run(ours_step), "hf": run(hf_step)}
    if compile:  # what TrainConfig(compile=True) does; the warm-up pays for compilation
        compiled = torch.compile(ours)
        fns["compiled"] = run(
            training_step_fn(ours, lambda a, b: compiled(a, b)[1], (inputs, targets), device)
        )
    if cpu_bf16:
        fns["bf16"] = run(training_step_fn(ours, lambda a, b: ours(a, b)[1], (inputs, targets),
                                           device, bf16=True))
    seconds = _best_times(fns, device, 3)
    return {f"{name}_tok_s": tokens * steps / s for name, s in seconds.items()}


def bench_ddp(nproc: int, steps: int, device: torch.device) -> dict:
    """The trainer's own tokens/s, `python -m course_lib.train` against the same run under
    `torchrun --nproc_per_node=nproc` (gloo on CPUs, nccl on GPUs), same global batch.

    Figures are the medians over steps of the whole job's tokens/s and of each process's. Every
    process gets one thread (torchrun's default), so the ratio is what nproc workers buy over one.
    """
    import os
    import socket
    import subprocess
    import sys
    import tempfile

    from course_lib.data import load_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = Path(tmp) / "tokenizer.json"
        BPETokenizer.train(load_corpus("train")[:20_000], 320).save(tokenizer)
        args = ["-m", "course_lib.train", "--config", "tiny", "--tokenizer", str(tokenizer),
                "--max-steps", str(steps), "--batch-size", "32", "--eval-chars", "2000",
                "--device", device.type]
        with socket.socket() as sock:  # a free port on loopback for the rendezvous
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        runs = {
            "one": ([sys.executable, *args, "--out", f"{tmp}/one"], {"OMP_NUM_THREADS": "1"}),
            "ddp": ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                     "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={port}", *args,
                     "--out", f"{tmp}/ddp"], {"OMP_NUM_THREADS": "1"}),
        }
        summaries = {}
        for name, (cmd, env) in runs.items():
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                  env=os.environ | env)
            if done.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}"
                                   f"{done.stderr[-2000:]}")
            summaries[name] = json.loads((Path(tmp) / name / "summary.json").read_text())
    one, ddp = summaries["one"], summaries["ddp"]
    return {"processes": nproc, "one_tok_s": one["median_tokens_per_s"],
            "ddp_tok_s": ddp["median_tokens_per_s"],
            "ddp_tok_s_per_process": ddp["median_tokens_per_s_per_process"],
            "same_final_loss": abs(one["final_train_loss"] - ddp["final_train_loss"]) < 1e-4}


def _random_prompt(shape: str, length: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, SHAPES[shape]["vocab_size"], (1, length), generator=g).to(device)


@torch.no_grad()
def bench_generation(shape: str, prompt_len: int, new_tokens: int, device: torch.device) -> dict:
    """Greedy generation tokens/s with the KV cache: ours against transformers' generate."""
    hf, ours = hf_and_ours(shape, device)
    hf.eval()
    ours.eval()
    prompt = _random_prompt(shape, prompt_len, 1, device)
    out = {}

    def ours_run():
        out["ours"] = generate(ours, prompt, new_tokens, temperature=0)

    def hf_run():
        out["hf"] = hf.generate(prompt, attention_mask=torch.ones_like(prompt),
                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                do_sample=False, pad_token_id=0)

    seconds = _best_times({"ours": ours_run, "hf": hf_run}, device, 3)
    return {"ours_tok_s": new_tokens / seconds["ours"], "hf_tok_s": new_tokens / seconds["hf"],
            "same_tokens": torch.equal(out["ours"], out["hf"])}


@torch.no_grad()
def bench_cache(shape: str, prompt_len: int, new_tokens: int, device: torch.device) -> dict:
    """Generation with the KV cache against without it, on our own model."""
    _, ours = hf_and_ours(shape, device)
    ours.eval()
    prompt = _random_prompt(shape, prompt_len, 2, device)
    out = {}

    def cached():
        out["cached"] = generate(ours, prompt, new_tokens, temperature=0, use_cache=True)

    def plain():
        out["plain"] = generate(ours, prompt, new_tokens, temperature=0, use_cache=False)

    seconds = _best_times({"cached": cached, "plain": plain}, device, 1)
    return {"cached_tok_s": new_tokens / seconds["cached"],
            "uncached_tok_s": new_tokens / seconds["plain"],
            "same_tokens": torch.equal(out["cached"], out["plain"])}


def bench_bpe(n_bytes: int, vocab_size: int) -> dict:
    """BPE training time: incremental pair counts against recounting every merge."""
    from course_lib.data import load_corpus

    text = load_corpus("train").encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")
    t0 = time.perf_counter()
    fast = BPETokenizer.train(text, vocab_size)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = naive_train_bpe(text, vocab_size)
    naive_s = time.perf_counter() - t0
    return {"mb": len(text.encode()) / 1e6, "ours_s": fast_s, "naive_s": naive_s,
            "same_merges": fast.merges == naive}


def gpu_mfu(batch_size: int, steps: int, device: torch.device) -> dict:
    """Our training throughput and MFU at GPT-2-small shape in bf16 (nanoGPT's FLOP count)."""
    _, ours = hf_and_ours("gpt2", device)
    ours.train()
    T = SHAPES["gpt2"]["n_positions"]
    x = torch.randint(0, SHAPES["gpt2"]["vocab_size"], (batch_size, T + 1), device=device)
    step = training_step_fn(ours, lambda a, b: ours(a, b)[1], (x[:, :-1], x[:, 1:]), device)
    seconds = _best_times({"ours": lambda: [step() for _ in range(steps)]}, device, 2)["ours"]
    tok_s = batch_size * T * steps / seconds
    n = ours.num_parameters() - ours.transformer.wpe.weight.numel()
    c = ours.config
    flops_per_token = 6 * n + 12 * c.n_layer * c.n_embd * T
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    return {"device": name, "tok_s": tok_s,
            "mfu": None if peak is None else flops_per_token * tok_s / peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m course_lib.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer steps")
    parser.add_argument("--device", help="cpu or cuda (default: best available)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile training figure (compiling takes minutes)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["training", "generation", "cache", "bpe", "mfu", "smollm2",
                                 "smollm2-q4", "ddp"])
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH as JSON")
    args = parser.parse_args(argv)
    device = check_device("--device", args.device) if args.device else default_device()
    gpu = device.type == "cuda"
    q = args.quick
    big = "gpt2" if gpu else "small"
    report = {"device": torch.cuda.get_device_name(device) if gpu else "cpu",
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "shapes": {name: SHAPES[name] for name in ("course", big)}, "rows": [],
              "gpu_training": None}
    print(f"device: {report['device']}, torch {report['torch']}, {report['threads']} threads")
    for name, shape in report["shapes"].items():
        print(f"shape {name}: {shape}")

    def row(figure: str, ours: str, ref: str, ratio: float, target: float | None,
            extra: str = ""):
        meets = None if target is None else ratio >= target
        verdict = "no target" if target is None else \
            f"target >= {target}x, {'meets' if meets else 'below'}"
        print(f"{figure:<40} {ours:>14} {ref:>26}  {ratio:5.2f}x  ({verdict}){extra}")
        report["rows"].append({"figure": figure, "course_lib": ours, "reference": ref,
                               "ratio": round(ratio, 2), "target": target, "meets": meets,
                               "note": extra.lstrip(", ")})

    print(f"{'figure':<40} {'course_lib':>14} {'reference':>26}  ratio")
    for name in ("course", big):
        n_positions = SHAPES[name]["n_positions"]
        if "training" not in args.skip:
            batch, seq_len = (32, n_positions) if name == "course" else (8, 256)
            r = bench_training(name, batch // 2 if q else batch, seq_len, 1 if q else 3,
                               device, compile=not args.no_compile and name != "course",
                               cpu_bf16=not gpu and name == "course")
            row(f"training tokens/s, {name}", f"{r['ours_tok_s']:,.0f}",
                f"HF GPT2LMHeadModel {r['hf_tok_s']:,.0f}", r["ours_tok_s"] / r["hf_tok_s"],
                1.2)
            if "bf16_tok_s" in r:  # worth it only on CPUs with bf16 units (AMX, AVX512-BF16)
                row(f"training tokens/s, {name}, bf16 on CPU", f"{r['bf16_tok_s']:,.0f}",
                    f"course_lib fp32 {r['ours_tok_s']:,.0f}", r["bf16_tok_s"] / r["ours_tok_s"],
                    None)
            if "compiled_tok_s" in r:
                row(f"training tokens/s, {name}, compiled", f"{r['compiled_tok_s']:,.0f}",
                    f"HF GPT2LMHeadModel {r['hf_tok_s']:,.0f}",
                    r["compiled_tok_s"] / r["hf_tok_s"], 1.2)
        if "generation" not in args.skip:
            new_tokens = min(64 if q else 256, n_positions - 16)
            r = bench_generation(name, 16, new_tokens, device)
            row(f"cached generation tokens/s, {name}", f"{r['ours_tok_s']:,.1f}",
                f"HF generate {r['hf_tok_s']:,.1f}", r["ours_tok_s"] / r["hf_tok_s"], 1.5,
                f", {new_tokens} tokens, same greedy tokens: {r['same_tokens']}")
    if "training" not in args.skip:  # the shape nanoGPT's README trains on a CPU
        r = bench_training("nanogpt", 12, 64, 5 if q else 20, device, compile=False)
        row("training tokens/s, nanogpt 12x64", f"{r['ours_tok_s']:,.0f}",
            f"HF GPT2LMHeadModel {r['hf_tok_s']:,.0f}", r["ours_tok_s"] / r["hf_tok_s"], 1.2)
    if "ddp" not in args.skip:
        nproc = torch.cuda.device_count() if gpu else 2
        r = bench_ddp(nproc, 10 if q else 40, device)
        row(f"trainer tokens/s, {nproc} DDP processes", f"{r['ddp_tok_s']:,.0f}",
            f"1 process {r['one_tok_s']:,.0f}", r["ddp_tok_s"] / r["one_tok_s"], None,
            f", {r['ddp_tok_s_per_process']:,.0f} per process, same final loss: "
            f"{r['same_final_loss']}")
    if "cache" not in args.skip:
        r = bench_cache(big, 16, 64 if q else 256, device)
        row(f"cached vs uncached, {64 if q else 256} new tokens", f"{r['cached_tok_s']:,.1f}",
            f"uncached {r['uncached_tok_s']:,.1f}", r["cached_tok_s"] / r["uncached_tok_s"], 5,
            f", identical tokens: {r['same_tokens']}")
    if "bpe" not in args.skip:
        n_bytes, vocab = (100_000, 512) if q else (1_000_000, 2048)
        r = bench_bpe(n_bytes, vocab)
        row(f"BPE train {r['mb']:.2f} MB -> {vocab} (s)", f"{r['ours_s']:.2f}",
            f"recount every merge {r['naive_s']:.1f}", r["naive_s"] / r["ours_s"], 10,
            f", same merges: {r['same_merges']}")
    if gpu and "mfu" not in args.skip:
        r = gpu_mfu(8 if q else 16, 5 if q else 10, device)
        mfu = "unknown peak" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(f"GPT-2-small bf16 training on {r['device']}: {r['tok_s']:,.0f} tokens/s, "
              f"MFU {mfu}")
        report["gpu_training"] = r
    if not gpu and "smollm2" not in args.skip:
        from course_lib.bench_smollm2 import smollm2_rows  # it imports this module

        report["smollm2"] = smollm2_rows(row, q)
    if not gpu and "smollm2-q4" not in args.skip:
        from course_lib.bench_smollm2 import smollm2_q4_rows

        report["smollm2_q4"] = smollm2_q4_rows(row, q)
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
