"""How close can eager PyTorch come to the matrix-vector limit of a SmolLM2 decode step?

    OMP_NUM_THREADS=1 taskset -c 1 python scripts/measure_decode_floor.py [--rounds 12]
        [--quantized]   (the 4-bit model: products on the int4 kernel, as its layers run them)
        [--products]    (instead: one token's product with each float32 matrix shape, by
                         F.linear and by few_rows_linear's matrix-matrix form)
        [--batches]     (instead: float32 decode steps of 1, 2, 4 and 8 sequences, with
                         FewRowsLinear layers and with plain nn.Linear ones)

Times three things on one thread, in interleaved rounds (best of each, so machine noise hits
all alike), 30 decode steps a round after a 37-token prompt:
  limit  the matrix products alone (each linear layer on one token's vector, in order, as the
         layer computes it: few_rows_product for float32, the int4 kernel for 4-bit);
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

import torch
import torch.nn.functional as F

from course_lib.few_rows_linear import FewRowsLinear, bare_product, few_rows_product
from course_lib.int4_linear import _INT4_MM, GROUP, Int4Linear
from course_lib.model import GPT
from course_lib.positional import rope_rotation


def product(layer: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x W^T for a linear layer, as a bare call: its own route (bare_product: the
    two-row product of a FewRowsLinear, F.linear otherwise), or the int4 kernel on a 4-bit
    layer's buffers (what Int4Linear.forward runs, minus the module)."""
    if isinstance(layer, Int4Linear):
        if layer.n_planes != 1:
            return layer  # two planes (Q8_0): the layer's own sum of two products
        packed, table = layer.packed_0, layer.scales_and_zeros_0
        return lambda x: _INT4_MM(x.to(torch.bfloat16), packed, GROUP, table).to(x.dtype)
    return bare_product(layer)


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
def products(model: GPT, rounds: int = 12,
             min_bytes: float = 200e6) -> dict[tuple[int, int], dict[str, float]]:
    """Per (out, in) shape of the model's float32 linear layers: GB/s of one token's product
    with all its matrices of that shape, by F.linear and by few_rows_product (best of
    interleaved rounds; a layer of that shape repeated to min_bytes, well past the caches)."""
    shapes: dict[tuple[int, int], list[torch.Tensor]] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            shapes.setdefault(tuple(m.weight.shape), []).append(m.weight)
    out = {}
    for shape, mats in shapes.items():
        while sum(w.numel() for w in mats) * 4 < min_bytes:
            mats = mats + [w.clone() for w in mats]
        x = torch.randn(1, shape[1])
        best = {"F.linear": float("inf"), "W @ X^T": float("inf")}
        for _ in range(rounds):
            for name, multiply in (("F.linear", F.linear), ("W @ X^T", few_rows_product)):
                start = time.perf_counter()
                for w in mats:
                    multiply(x, w)
                best[name] = min(best[name], time.perf_counter() - start)
        gb = sum(w.numel() for w in mats) * 4 / 1e9
        out[shape] = {name: gb / sec for name, sec in best.items()}
    return out


@torch.inference_mode()
def batches(model: GPT, sizes: tuple[int, ...] = (1, 2, 4, 8), rounds: int = 3,
            steps: int = 8) -> dict[int, dict[str, float]]:
    """Per batch size, best ms of one cached decode step with the model's FewRowsLinear layers
    and with the same parameters in plain nn.Linear layers (F.linear), interleaved."""
    import copy

    plain = copy.deepcopy(model)
    for m in plain.modules():
        if type(m) is FewRowsLinear:
            m.__class__ = torch.nn.Linear  # the same parameters, F.linear's forward
    out = {}
    for size in sizes:
        prompt = torch.randint(0, model.config.vocab_size, (size, 32))
        one = torch.randint(0, model.config.vocab_size, (size, 1))
        best = {"FewRowsLinear": float("inf"), "nn.Linear": float("inf")}
        for _ in range(rounds):
            for name, m in (("FewRowsLinear", model), ("nn.Linear", plain)):
                cache = m.new_cache(32 + steps)
                m(prompt, kv_cache=cache)
                start = time.perf_counter()
                for _ in range(steps):
                    m(one, kv_cache=cache, last_only=True)
                best[name] = min(best[name], 1e3 * (time.perf_counter() - start) / steps)
        out[size] = best
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--quantized", action="store_true", help="the 4-bit model")
    parser.add_argument("--products", action="store_true",
                        help="one token's float32 products, F.linear against W @ X^T")
    parser.add_argument("--batches", action="store_true",
                        help="float32 decode steps of a few sequences, both kinds of layers")
    args = parser.parse_args(argv)
    from course_lib.pretrained import load_smollm2

    torch.set_num_threads(1)
    model, tokenizer = load_smollm2(quantized=args.quantized)
    if args.products:
        found = products(model, args.rounds)
        for (rows, cols), speed in found.items():
            print(f"{rows:>6} x {cols:<5} F.linear {speed['F.linear']:5.1f} GB/s, W @ X^T "
                  f"{speed['W @ X^T']:5.1f} GB/s: {speed['W @ X^T'] / speed['F.linear']:.2f}x")
        return found
    if args.batches:
        found = batches(model)
        for size, ms in found.items():
            print(f"{size} sequence(s): FewRowsLinear {ms['FewRowsLinear']:6.1f} ms, nn.Linear "
                  f"{ms['nn.Linear']:6.1f} ms a step: "
                  f"{ms['nn.Linear'] / ms['FewRowsLinear']:.2f}x")
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
