"""A training step of our GPT against nanoGPT's model.py at the same shape, same optimizer.

nanoGPT is not a dependency and none of its code is in this repository: give the path of its
model.py (from a clone of github.com/karpathy/nanoGPT). Every model is timed in turn, round
after round, in a new order each round, by the CPU time of this thread (so other work on the
machine disturbs it less), and the best round of each counts. Prints step times and ratios
measured in the same run:

    OMP_NUM_THREADS=1 python scripts/compare_nanogpt.py /path/to/nanoGPT/model.py

GPT-2 (and our default GPTConfig, so that from_hf_gpt2 is exact) uses the tanh form of GELU;
nanoGPT uses the exact (erf) form. The like-for-like comparisons are ours (tanh) against nanoGPT
switched to tanh, and ours with GPTConfig(mlp="gelu_exact") against nanoGPT as it is.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import time

import torch

from course_lib.model import GPT, GPTConfig


def load_nanogpt(path: str):
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stepper(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model.train()

    def step() -> None:
        _, loss = model(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("nanogpt_model", help="path of nanoGPT's model.py")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20, help="steps per round")
    # nanoGPT's README trains shakespeare_char on a CPU at this shape.
    parser.add_argument("--shape", type=int, nargs=6, default=[65, 64, 12, 4, 4, 128],
                        metavar=("VOCAB", "CONTEXT", "BATCH", "LAYERS", "HEADS", "WIDTH"))
    args = parser.parse_args()
    vocab, context, batch, layers, heads, width = args.shape
    nano = load_nanogpt(args.nanogpt_model)

    def theirs(tanh: bool):
        torch.manual_seed(0)
        model = nano.GPT(nano.GPTConfig(block_size=context, vocab_size=vocab, n_layer=layers,
                                        n_head=heads, n_embd=width, dropout=0.0, bias=True))
        if tanh:
            for block in model.transformer.h:
                block.mlp.gelu = torch.nn.GELU(approximate="tanh")
        return model

    def ours(mlp: str):
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=vocab, block_size=context, n_layer=layers, n_head=heads,
                             n_embd=width, dropout=0.0, bias=True, mlp=mlp))

    data = torch.randint(0, vocab, (batch, context + 1), generator=torch.Generator().manual_seed(0))
    inputs, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    models = {
        "nanoGPT (erf GELU)": theirs(tanh=False),
        "nanoGPT, tanh GELU": theirs(tanh=True),
        "ours (tanh GELU, default)": ours("gelu"),
        "ours, mlp='gelu_exact'": ours("gelu_exact"),
    }
    steps = {name: stepper(model, inputs, targets) for name, model in models.items()}
    for step in steps.values():  # warm-up: allocator, fused kernels, first-call paths
        for _ in range(3):
            step()
    best = dict.fromkeys(steps, float("inf"))
    order = list(steps)
    shuffle = random.Random(0).shuffle
    for _ in range(args.rounds):
        shuffle(order)  # a fresh order each round: no model always follows the same one
        for name in order:
            step = steps[name]
            start = time.thread_time()
            for _ in range(args.steps):
                step()
            best[name] = min(best[name], (time.thread_time() - start) / args.steps)
    print(f"shape {args.shape}, {torch.get_num_threads()} thread(s), best of {args.rounds} "
          f"rounds of {args.steps} steps, CPU ms per training step:")
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds * 1e3:8.2f}")
    pairs = [("ours (tanh GELU, default)", "nanoGPT, tanh GELU"),
             ("ours, mlp='gelu_exact'", "nanoGPT (erf GELU)"),
             ("ours (tanh GELU, default)", "nanoGPT (erf GELU)")]
    for mine, reference in pairs:
        print(f"speed of {mine} / {reference}: {best[reference] / best[mine]:.3f}x")


if __name__ == "__main__":
    main()
