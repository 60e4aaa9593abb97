"""SmolLM2-135M-Instruct on the CPU, for course_lib.bench: float32 against transformers, and the
file's 4-bit blocks (load_smollm2(quantized=True)) against float32, transformers and llama.cpp,
with the matrix-vector limit of every weight format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from course_lib.bench import _best_times
from course_lib.few_rows_linear import bare_product, few_rows_product
from course_lib.model import GPT
from course_lib.sampling import generate


def _smollm2_pair():
    """(ours, transformers') SmolLM2 in float32 from the same GGUF file, in eval mode."""
    import transformers
    from transformers import AutoModelForCausalLM

    from course_lib.pretrained import load_smollm2, smollm2_path

    path = smollm2_path()
    ours, tok = load_smollm2()
    transformers.logging.set_verbosity_error()
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()
    return ours, hf, tok


def matvec_seconds(model: GPT, repeats: int = 5) -> float:
    """The matrix-vector limit of one decoding step: the time of torch's products of one
    token's vector with every weight matrix of the model (each layer's, then the head's), and
    nothing else. Decoding reads every weight once, so no implementation on the same
    kernels can be much faster. Each product is computed as its layer computes it (a
    FewRowsLinear by few_rows_product, whose routine streams the weights faster)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    products = [(bare_product(m), torch.randn(1, m.in_features)) for m in layers]

    def step():
        for multiply, x in products:
            multiply(x)

    with torch.no_grad():
        return _best_times({"mv": step}, torch.device("cpu"), repeats)["mv"]


def bench_smollm2(prompt_len: int, new_tokens: int, threads: tuple[int, ...] = (1, 2)) -> dict:
    """SmolLM2 on the CPU: load time and memory (fresh process), prefill and cached greedy
    generation tokens/s against transformers on the same weights, and the matrix-vector limit."""

    script = Path(__file__).resolve().parent.parent / "scripts" / "measure_smollm2.py"
    out: dict = {}
    if script.is_file():  # a fresh process at one thread, as a learner's kernel
        env = dict(os.environ, OMP_NUM_THREADS="1")
        run = subprocess.run([sys.executable, str(script), "--json", "--new-tokens", "16"],
                             capture_output=True, text=True, env=env, check=True)
        out["fresh"] = json.loads(run.stdout.strip().splitlines()[-1])
    ours, hf, tok = _smollm2_pair()
    old_threads = torch.get_num_threads()
    prompt = torch.tensor([tok.encode("The sea is calm tonight. " * 64)[:prompt_len]])
    mask = torch.ones_like(prompt)
    out["threads"] = {}
    res: dict = {}
    try:
        for n in threads:
            torch.set_num_threads(n)

            def ours_prefill():
                with torch.no_grad():
                    ours(prompt)

            def hf_prefill():
                with torch.no_grad():
                    hf(prompt)

            def ours_gen():
                res["ours"] = generate(ours, prompt, new_tokens, temperature=0)

            def hf_gen():
                res["hf"] = hf.generate(prompt, attention_mask=mask, max_new_tokens=new_tokens,
                                        min_new_tokens=new_tokens, do_sample=False,
                                        pad_token_id=2)

            pre = _best_times({"ours": ours_prefill, "hf": hf_prefill}, torch.device("cpu"), 2)
            gen = _best_times({"ours": ours_gen, "hf": hf_gen}, torch.device("cpu"), 2)
            # A decoding step's share: generation minus one prefill, per new token.
            step_ours = (gen["ours"] - pre["ours"]) / new_tokens
            step_hf = (gen["hf"] - pre["hf"]) / new_tokens
            limit = matvec_seconds(ours)
            out["threads"][n] = {
                "prefill_tok_s": prompt_len / pre["ours"],
                "hf_prefill_tok_s": prompt_len / pre["hf"],
                "gen_tok_s": new_tokens / gen["ours"],
                "hf_gen_tok_s": new_tokens / gen["hf"],
                "decode_step_ms": 1e3 * step_ours,
                "hf_decode_step_ms": 1e3 * step_hf,
                "matvec_limit_tok_s": 1 / limit,
                "fraction_of_limit": limit / step_ours,
                "same_tokens": torch.equal(res["ours"], res["hf"]),
            }
    finally:
        torch.set_num_threads(old_threads)
    return out


def smollm2_rows(row: Callable, quick: bool) -> dict:
    """Run bench_smollm2 and print its rows through main's row()."""
    prompt_len, new_tokens = (32, 32) if quick else (128, 128)
    r = bench_smollm2(prompt_len, new_tokens)
    if "fresh" in r:
        f = r["fresh"]
        row("SmolLM2 load (s), 1 thread, fresh process", f"{f['load_s']:.1f}", "limit 10 s",
            10 / max(f["load_s"], 1e-9), 1.0,
            f", {f['load_cpu_s']:.1f} s of CPU (wall time grows on a busy machine), "
            f"peak RSS {f['peak_rss_after_generate_mb']} MB (limit 1,200 MB)")
    for n, t in r["threads"].items():
        row(f"SmolLM2 prefill tokens/s, {n} thread(s)", f"{t['prefill_tok_s']:,.0f}",
            f"HF Llama {t['hf_prefill_tok_s']:,.0f}", t["prefill_tok_s"] / t["hf_prefill_tok_s"],
            None, f", {prompt_len}-token prompt")
        row(f"SmolLM2 cached greedy tokens/s, {n} thr", f"{t['gen_tok_s']:,.1f}",
            f"HF generate {t['hf_gen_tok_s']:,.1f}", t["gen_tok_s"] / t["hf_gen_tok_s"], 1.15,
            f", {new_tokens} tokens, same greedy tokens: {t['same_tokens']}")
        row(f"SmolLM2 decode step vs mat-vec limit, {n} thr", f"{t['decode_step_ms']:.1f} ms",
            f"limit {1e3 / t['matvec_limit_tok_s']:.1f} ms/token", t["fraction_of_limit"], 0.9,
            f", HF {t['hf_decode_step_ms']:.1f} ms")
    return r


# ----- SmolLM2 in the file's 4 bits (issue 27): one core, every weight format -----------------


def matvec_limits(f32: GPT, q4: GPT, repeats: int = 5) -> dict[str, dict]:
    """Per weight format, the bytes of weights one decoded token reads and the time of one
    token's vector multiplied by every matrix (nothing else): float32 as f32's layers compute it
    (few_rows_linear's W @ X^T) and by F.linear, the float32 bytes merely summed (how fast one
    core reads them: the memory's limit), bfloat16 (F.linear), int8 weight-only with bfloat16
    activations (torch's _weight_int8pack_mm, a scale per row), and the file's 4-bit blocks on
    the int4 kernel (q4's own layers)."""
    from course_lib.int4_linear import Int4Linear

    mats = [m.weight.detach() for m in f32.modules() if isinstance(m, torch.nn.Linear)]
    bf16 = [w.bfloat16() for w in mats]
    int8 = []
    for w in mats:
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127
        int8.append(((w / scale[:, None]).round().to(torch.int8), scale.bfloat16()))
    int4 = [m for m in q4.modules() if isinstance(m, Int4Linear)]
    x32 = {w.shape[1]: torch.randn(1, w.shape[1]) for w in mats}
    x16 = {k: v.bfloat16() for k, v in x32.items()}
    f32_bytes = sum(w.numel() * 4 for w in mats)
    steps = {
        "float32, bytes read alone": (lambda: [w.sum() for w in mats], f32_bytes),
        "float32, F.linear": (lambda: [F.linear(x32[w.shape[1]], w) for w in mats], f32_bytes),
        "float32": (lambda: [few_rows_product(x32[w.shape[1]], w) for w in mats], f32_bytes),
        "bfloat16": (lambda: [F.linear(x16[w.shape[1]], w) for w in bf16],
                     sum(w.numel() * 2 for w in bf16)),
        "int8, bf16 activations": (
            lambda: [torch.ops.aten._weight_int8pack_mm(x16[w.shape[1]], w, s) for w, s in int8],
            sum(w.numel() + s.numel() * 2 for w, s in int8)),
        "int4 (the file's blocks)": (lambda: [m(x32[m.in_features]) for m in int4],
                                     sum(b.numel() * b.element_size() for m in int4
                                         for b in m.buffers())),
    }
    with torch.no_grad():
        seconds = _best_times({k: fn for k, (fn, _) in steps.items()}, torch.device("cpu"),
                              repeats)
    return {k: {"bytes": steps[k][1], "ms": 1e3 * seconds[k]} for k in steps}


def _llama_cpp_tok_s(path: Path, prompt: list[int], new_tokens: int) -> float | None:
    """llama.cpp's greedy tokens/s on the same GGUF file, one thread; None if not installed."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=512, verbose=False)
    best = float("inf")
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        for i, _tok in enumerate(llm.generate(prompt, temp=0.0, top_k=1)):
            if i + 1 == new_tokens:
                break
        best = min(best, time.perf_counter() - t0)
    return new_tokens / best


def bench_smollm2_q4(new_tokens: int = 64, repeats: int = 3) -> dict:
    """load_smollm2(quantized=True) against float32, transformers and llama.cpp, one thread."""

    from course_lib.chat import encode_chat
    from course_lib.pretrained import load_smollm2, smollm2_path

    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out: dict = {"fresh": {}}
    script = Path(__file__).resolve().parent.parent / "scripts" / "measure_smollm2.py"
    try:
        if script.is_file():  # load time and peak memory in a fresh process, as a learner's
            env = dict(os.environ, OMP_NUM_THREADS="1")
            for name, flags in (("int4", ["--quantized"]), ("float32", [])):
                run = subprocess.run([sys.executable, str(script), "--json", "--new-tokens",
                                      str(new_tokens), *flags], capture_output=True, text=True,
                                     env=env, check=True)
                out["fresh"][name] = json.loads(run.stdout.strip().splitlines()[-1])
        f32, hf, tok = _smollm2_pair()
        q4, _ = load_smollm2(quantized=True)
        prompt = encode_chat(tok, [{"role": "user",
                                    "content": "Write a short poem about the sea."}])
        x = torch.tensor([prompt])
        res: dict = {}
        fns = {
            "int4": lambda: res.__setitem__("int4", generate(q4, prompt, new_tokens,
                                                             temperature=0)),
            "float32": lambda: res.__setitem__("float32", generate(f32, prompt, new_tokens,
                                                                   temperature=0)),
            "transformers": lambda: res.__setitem__("transformers", hf.generate(
                x, attention_mask=torch.ones_like(x), max_new_tokens=new_tokens,
                min_new_tokens=new_tokens, do_sample=False, pad_token_id=2)),
        }
        gen = _best_times(fns, torch.device("cpu"), repeats)
        with torch.inference_mode():  # the prompt's pass as generate runs it
            pre = _best_times({"int4": lambda: q4(x, last_only=True),
                               "float32": lambda: f32(x, last_only=True)},
                              torch.device("cpu"), repeats)
        out["tok_s"] = {k: new_tokens / v for k, v in gen.items()}
        out["decode_ms"] = {k: 1e3 * (gen[k] - pre[k]) / new_tokens for k in pre}
        out["prefill_tok_s"] = {k: len(prompt) / v for k, v in pre.items()}
        llama = _llama_cpp_tok_s(smollm2_path(), prompt, new_tokens)
        if llama is not None:
            out["tok_s"]["llama.cpp"] = llama
        out["same_tokens_int4_float32"] = torch.equal(res["int4"], res["float32"])
        out["limits"] = matvec_limits(f32, q4)
    finally:
        torch.set_num_threads(old_threads)
    return out


def smollm2_q4_rows(row: Callable, quick: bool) -> dict:
    """Print bench_smollm2_q4's table (the issue's), then its rows through main's row()."""
    r = bench_smollm2_q4(32 if quick else 64, 2 if quick else 3)
    print(f"\nSmolLM2 on one thread ({os.getloadavg()[0]:.2f} load average): decoding reads "
          f"every weight once per token")
    print(f"{'weights':<26} {'MB read/token':>14} {'ms/token, products':>19} {'tok/s limit':>12}")
    for name, lim in r["limits"].items():
        print(f"{name:<26} {lim['bytes'] / 1e6:>14.0f} {lim['ms']:>19.1f} "
              f"{1e3 / lim['ms']:>12.1f}")
    t = r["tok_s"]
    print("cached greedy tokens/s: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
          + ("" if "llama.cpp" in t else
             " (llama.cpp: not installed; pip install llama-cpp-python to compare)"))
    print("prefill tokens/s (the chat prompt, one pass): " + ", ".join(
        f"{k} {v:.0f}" for k, v in r["prefill_tok_s"].items()))
    hf = t["transformers"]
    row("SmolLM2 4-bit greedy tok/s, 1 thread", f"{t['int4']:.1f}", f"HF generate {hf:.1f}",
        t["int4"] / hf, 3.0, f", same tokens as float32: {r['same_tokens_int4_float32']}")
    if "llama.cpp" in t:
        row("SmolLM2 4-bit vs llama.cpp, 1 thread", f"{t['int4']:.1f}",
            f"llama.cpp {t['llama.cpp']:.1f}", t["int4"] / t["llama.cpp"], 1.0)
    row("SmolLM2 float32 greedy tok/s, 1 thread", f"{t['float32']:.1f}", f"HF generate {hf:.1f}",
        t["float32"] / hf, None)
    plain = r["limits"]["float32, F.linear"]["ms"]
    for name, key in (("int4", "int4 (the file's blocks)"), ("float32", "float32")):
        limit, step = r["limits"][key]["ms"], r["decode_ms"][name]
        row(f"SmolLM2 {name} decode vs mat-vec limit", f"{step:.1f} ms",
            f"limit {limit:.1f} ms/token", limit / step, 0.9 if name == "float32" else None,
            f", {plain / step:.2f}x the products by F.linear ({plain:.1f} ms)"
            if name == "float32" else "")
    for name, f in r["fresh"].items():
        row(f"SmolLM2 {name} load (s), fresh process", f"{f['load_s']:.2f}",
            "limit 2 s" if name == "int4" else "limit 10 s",
            (2 if name == "int4" else 10) / max(f["load_s"], 1e-9), 1.0,
            f", {f['load_cpu_s']:.2f} s of CPU, peak RSS {f['peak_rss_after_generate_mb']} MB "
            f"after generating (limit {500 if name == 'int4' else 1200} MB)")
    return r
