"""How close can eager PyTorch come to the matrix-vector limit of a SmolLM2 decode step?

    OMP_NUM_THREADS=1 taskset -c 1 python scripts/measure_decode_floor.py [--rounds 12]
        [--quantized]   (the 4-bit model: products on the int4 kernel, as its layers run them)
        [--layouts]     (instead: each float32 matrix shape's product, row by row against
                         column by column, the rule of pretrained.decode_faster_column_major)

Times three things on one thread, in interleaved rounds (best of each, so machine noise hits
all alike), 30 decode steps a round after a 37-token prompt:
  limit  the matrix products alone (each linear layer on one token's vector, in order, in the
         order in memory load_smollm2 stores it: wide float32 matrices column by column);
  bare   the same operations on the same weights as one flat loop: no modules, no hooks, no
         input checks, 2-D tensors (bare_step below; its logits are checked against GPT's);
  GPT    our model's cached step, model(token, kv_cache=cache, last_only=True).
bare / limit is the most any eager implementation on these kernels can reach: each small
operation between the products costs microseconds, more after a product has streamed megabytes
of weights through the caches. A measurement for the fast inference issue, not course code.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from course_lib.int4_linear import _INT4_MM, GROUP, Int4Linear
from course_lib.model import GPT
from course_lib.positional import rope_rotation
from course_lib.pretrained import column_major


def product(layer: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x W^T for a linear layer, as a bare call: F.linear on its weight, or the int4
    kernel on a 4-bit layer's buffers (what Int4Linear.forward runs, minus the module)."""
    if isinstance(layer, Int4Linear):
        if layer.n_planes != 1:
            return layer  # two planes (Q8_0): the layer's own sum of two products
        packed, table = layer.packed_0, layer.scales_and_zeros_0
        return lambda x: _INT4_MM(x.to(torch.bfloat16), packed, GROUP, table).to(x.dtype)
    return partial(F.linear, weight=layer.weight)


def bare_weights(model: GPT, capacity: int) -> list[tuple]:
    """Per layer, (norm 1, qkv, out, norm 2, gate-up, down) and empty key and value rooms."""
    c = model.config
    head = c.n_embd // c.n_head
    return [(b.ln_1.weight, product(b.attn.c_attn), product(b.attn.c_proj), b.ln_2.weight,
             product(b.mlp.c_fc), product(b.mlp.c_proj),
             torch.zeros(1, c.kv_heads, capacity, head), torch.zeros(1, c.kv_heads, capacity, head))
            for b in model.transformer.h]


def bare_step(model: GPT, layers: list[tuple], token: int, pos: int) -> torch.Tensor:
    """The logits (1, vocab) of token at position pos, keys and values of earlier positions
    in layers' rooms: a Llama-style step (RMSNorm, rotary, grouped-query, SwiGLU) written flat."""
    c = model.config
    H, Hk, D, eps = c.n_head, c.kv_heads, c.n_embd // c.n_head, c.norm_eps
    x = model.transformer.wte(torch.tensor([token])).view(1, c.n_embd)
    rot = rope_rotation(pos, 1, D, c.rope_base)
    for ln1, qkv_of, out_of, ln2, gate_up_of, down_of, keys, values in layers:
        qkv = qkv_of(F.rms_norm(x, (c.n_embd,), ln1, eps))
        pairs = torch.view_as_complex(qkv[:, :(H + Hk) * D].reshape(H + Hk, D // 2, 2))
        qk = torch.view_as_real(pairs * rot).view(H + Hk, D)
        keys[0, :, pos], values[0, :, pos] = qk[H:], qkv[0, (H + Hk) * D:].view(Hk, D)
        y = F.scaled_dot_product_attention(qk[:H].view(1, H, 1, D), keys[:, :, :pos + 1],
                                           values[:, :, :pos + 1], enable_gqa=H != Hk)
        x = x + out_of(y.view(1, c.n_embd))
        gate, up = gate_up_of(F.rms_norm(x, (c.n_embd,), ln2, eps)).chunk(2, dim=-1)
        x = x + down_of(F.silu(gate) * up)
    return model.lm_head(F.rms_norm(x, (c.n_embd,), model.transformer.ln_f.weight, eps))


@torch.inference_mode()
def check_bare_step(model: GPT, prompt: list[int]) -> float:
    """The largest difference between bare_step's logits and the model's cached steps over
    prompt, a token at a time (bare_step must do the model's work, or timing it means
    nothing; one token a pass on both sides, as the 4-bit kernel rounds by row count)."""
    layers = bare_weights(model, len(prompt))
    cache = model.eval().new_cache(len(prompt))
    ours = torch.cat([model(torch.tensor([[t]]), kv_cache=cache)[0][0] for t in prompt])
    bare = torch.cat([bare_step(model, layers, t, i) for i, t in enumerate(prompt)])
    return (bare - ours).abs().max().item()


@torch.inference_mode()
def measure(model: GPT, rounds: int = 12, steps: int = 30, prompt_len: int = 37) -> dict:
    """Best ms per decode step of the limit, the bare loop and GPT, interleaved rounds."""
    linear = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Int4Linear))]
    products = [(product(m), torch.randn(1, m.in_features)) for m in linear]
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len))
    cache = model.new_cache(prompt_len + steps)
    model(prompt, kv_cache=cache)
    layers = bare_weights(model, prompt_len + steps)
    one = torch.tensor([[7]])

    def limit():
        for _ in range(steps):
            for multiply, x in products:
                multiply(x)

    def bare():
        for i in range(steps):
            bare_step(model, layers, 7, prompt_len + i)

    def ours():
        cache._lengths = [prompt_len] * model.config.n_layer  # the same positions each round
        for _ in range(steps):
            model(one, kv_cache=cache, last_only=True)

    best = {"limit": float("inf"), "bare": float("inf"), "GPT": float("inf")}
    for _ in range(rounds):
        for name, fn in (("limit", limit), ("bare", bare), ("GPT", ours)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], 1e3 * (time.perf_counter() - start) / steps)
    return best


@torch.inference_mode()
def layouts(model: GPT, rounds: int = 12,
            min_bytes: float = 200e6) -> dict[tuple[int, int], dict[str, float]]:
    """Per (out, in) shape of the model's float32 linear layers: GB/s of one token's product
    with all its matrices of that shape, stored row by row and column by column (best of
    interleaved rounds; a layer of that shape repeated to min_bytes, well past the caches)."""
    shapes: dict[tuple[int, int], list[torch.Tensor]] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            shapes.setdefault(tuple(m.weight.shape), []).append(m.weight.contiguous())
    out = {}
    for shape, mats in shapes.items():
        while sum(w.numel() for w in mats) * 4 < min_bytes:
            mats = mats + [w.clone() for w in mats]
        columns = [column_major(w) for w in mats]
        x = torch.randn(1, shape[1])
        best = {"rows": float("inf"), "columns": float("inf")}
        for _ in range(rounds):
            for name, ws in (("rows", mats), ("columns", columns)):
                start = time.perf_counter()
                for w in ws:
                    F.linear(x, w)
                best[name] = min(best[name], time.perf_counter() - start)
        gb = sum(w.numel() for w in mats) * 4 / 1e9
        out[shape] = {name: gb / sec for name, sec in best.items()}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--quantized", action="store_true", help="the 4-bit model")
    parser.add_argument("--layouts", action="store_true",
                        help="float32 products, row by row against column by column")
    args = parser.parse_args(argv)
    from course_lib.pretrained import decode_faster_column_major, load_smollm2

    torch.set_num_threads(1)
    model, tokenizer = load_smollm2(quantized=args.quantized)
    if args.layouts:
        found = layouts(model, args.rounds)
        for (rows, cols), speed in found.items():
            chosen = "columns" if decode_faster_column_major(torch.empty(rows, cols)) else "rows"
            print(f"{rows:>6} x {cols:<5} rows {speed['rows']:5.1f} GB/s, columns "
                  f"{speed['columns']:5.1f} GB/s: {speed['columns'] / speed['rows']:.2f}x "
                  f"(load_smollm2 stores it by {chosen})")
        return found
    diff = check_bare_step(model, tokenizer.encode("The sea was calm and the sky"))
    print(f"bare loop vs GPT logits: max difference {diff:.1e}")
    if diff > 1e-3:
        raise SystemExit("the bare loop does not compute the model's logits")
    best = measure(model, args.rounds)
    for name, ms in best.items():
        print(f"{name:<6} {ms:6.2f} ms/token   limit / this = {best['limit'] / ms:.3f}")
    return best


if __name__ == "__main__":
    main()
