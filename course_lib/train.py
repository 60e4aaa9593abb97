"""Training a GPT: AdamW, warmup + cosine schedule, clipping, eval, checkpoints, and a CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from course_lib.data import get_batch
from course_lib.device import autocast, default_device
from course_lib.model import GPT, GPTConfig


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 32
    block_size: int | None = None  # None: the model's block_size
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 turns clipping off
    eval_interval: int = 100  # 0 turns periodic evaluation off
    eval_batches: int = 20
    seed: int = 1337
    device: str | None = None  # None: default_device()
    compile: bool = False
    bf16: bool | None = None  # None: bf16 autocast on a GPU that has it; True: on the CPU too
    checkpoint_path: str | None = None
    checkpoint_interval: int = 0  # 0: only at the end (when checkpoint_path is set)
    resume: bool = False  # continue from checkpoint_path if it exists
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.resume and not self.checkpoint_path:
            raise ValueError("TrainConfig.resume needs checkpoint_path")


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at max_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    span = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (
        config.learning_rate - config.min_lr
    )


def fused_adamw(device: torch.device) -> bool:
    """Whether torch has the fused AdamW kernel (one pass over all parameters) for device.

    It is also what transformers' Trainer uses by default.
    """
    return device.type in ("cuda", "cpu")


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device):
    """AdamW; weight decay only on matrices of linear layers, not norms, biases or embeddings."""
    embeddings = {
        id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)
    }
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        fused=fused_adamw(device),
    )


@torch.no_grad()
def estimate_loss(model, ids, config: TrainConfig, block_size: int, device) -> float:
    """Mean loss over eval_batches fixed batches (same seed every time, so evals compare)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(config.seed + 1)
    losses = []
    for _ in range(config.eval_batches):
        x, y = get_batch(ids, config.batch_size, block_size, g, device)
        with autocast(device, config.bf16):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train(was_training)
    return sum(losses) / len(losses)


def _save_checkpoint(path, model, optimizer, step, generator, history, config) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "generator": generator.get_state(),
        "rng": torch.get_rng_state(),
        "history": history,
        "train_config": asdict(config),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    model: GPT,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor | None,
    config: TrainConfig,
    callback: Callable[[dict], bool | None] | None = None,
) -> dict[str, list]:
    """Train model in place and return its history.

    history: step, train_loss, lr, tokens_per_s (one entry per step) and val_step, val_loss.
    callback(info) runs after every step with a dict of the same figures; returning False
    stops training early.
    """
    device = torch.device(config.device) if config.device else default_device()
    block_size = config.block_size or model.config.block_size
    if block_size > model.config.block_size:
        raise ValueError(
            f"TrainConfig.block_size {block_size} exceeds the model's {model.config.block_size}"
        )
    train_ids = torch.as_tensor(train_ids, dtype=torch.long)
    val_ids = None if val_ids is None else torch.as_tensor(val_ids, dtype=torch.long)
    torch.manual_seed(config.seed)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config, device)
    generator = torch.Generator().manual_seed(config.seed)
    keys = ("step", "train_loss", "lr", "tokens_per_s", "val_step", "val_loss")
    history: dict[str, list] = {k: [] for k in keys}
    start = 0
    if config.resume and config.checkpoint_path and Path(config.checkpoint_path).exists():
        ckpt = torch.load(config.checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["rng"])
        history, start = ckpt["history"], ckpt["step"]
    step_fn = torch.compile(model) if config.compile else model

    bar = tqdm(range(start, config.max_steps), initial=start, total=config.max_steps,
               disable=not config.progress, desc="training", unit="step")
    for step in bar:
        t0 = time.perf_counter()
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_ids, config.batch_size, block_size, generator, device)
        with autocast(device, config.bf16):
            _, loss = step_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        loss_value = loss.item()  # synchronises, so the timing below is honest on a GPU
        tokens_per_s = x.numel() / (time.perf_counter() - t0)
        info = {"step": step + 1, "train_loss": loss_value, "lr": lr,
                "tokens_per_s": tokens_per_s}
        for k, v in info.items():
            history[k].append(v)
        last = step + 1 == config.max_steps
        if val_ids is not None and config.eval_interval and (
            (step + 1) % config.eval_interval == 0 or last
        ):
            val_loss = estimate_loss(model, val_ids, config, block_size, device)
            history["val_step"].append(step + 1)
            history["val_loss"].append(val_loss)
            info["val_loss"] = val_loss
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_s:,.0f}")
        if config.checkpoint_path and (
            last or (config.checkpoint_interval and (step + 1) % config.checkpoint_interval == 0)
        ):
            _save_checkpoint(config.checkpoint_path, model, optimizer, step + 1, generator,
                             history, config)
        if callback is not None and callback(info) is False:
            break
    bar.close()
    return history


def sample_report(
    tokenizer, prompt: str, eval_text: str, max_new_tokens: int = 40, seed: int = 0
) -> Callable[[GPT], dict]:
    """A report(model) for train_with_reports: held-out loss, bits per char and a seeded sample.

    The sample uses the same seed every time, so two reports differ only by what training did.
    """
    from course_lib.evaluation import bits_per_char, cross_entropy
    from course_lib.sampling import generate_text

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty str: the sample needs a start")
    eval_ids = tokenizer.encode(eval_text)
    if len(eval_ids) < 2:
        raise ValueError("eval_text must encode to at least 2 tokens")

    def report(model: GPT) -> dict:
        return {
            "val_loss": cross_entropy(model, eval_ids),
            "bits_per_char": bits_per_char(model, tokenizer, eval_text),
            "sample": generate_text(model, tokenizer, prompt, max_new_tokens, seed=seed),
        }

    return report


def train_with_reports(
    model: GPT,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor | None,
    config: TrainConfig,
    report: Callable[[GPT], dict],
    report_at: Iterable[int],
    callback: Callable[[dict], bool | None] | None = None,
) -> tuple[dict[str, list], list[dict]]:
    """train(), plus {"step": s, **report(model)} after each step s in report_at (0: before any).

    The callback sees train's info, with the new report under "report" at those steps (the
    step-0 call, before training, has only "step" and "report").
    Returns (history, reports).
    """
    report_at = sorted(set(report_at))
    if any(not isinstance(s, int) or s < 0 or s > config.max_steps for s in report_at):
        raise ValueError(f"report_at must hold steps in [0, max_steps={config.max_steps}], "
                         f"got {report_at}")
    reports: list[dict] = []
    if 0 in report_at:
        reports.append({"step": 0, **report(model)})
        if callback is not None:
            callback({"step": 0, "report": reports[-1]})

    def on_step(info: dict) -> bool | None:
        if info["step"] in report_at:
            reports.append({"step": info["step"], **report(model)})
            info = {**info, "report": reports[-1]}
        return None if callback is None else callback(info)

    history = train(model, train_ids, val_ids, config, callback=on_step)
    return history, reports


# ----- command line ---------------------------------------------------------------------------

# Named configurations: (tokenizer vocabulary, model shape, training schedule).
CONFIGS: dict[str, dict] = {
    # Seconds on a laptop: for tests and for checking the command line works.
    "tiny": dict(
        vocab_size=320,
        model=dict(block_size=32, n_layer=1, n_head=2, n_embd=32),
        train=dict(max_steps=20, batch_size=8, learning_rate=3e-3, warmup_steps=5,
                   eval_interval=10, eval_batches=2),
        text_chars=200_000,
    ),
    # Twice the shipped model (4.7M parameters), to see what size buys (README: it is 2.025
    # bits/char against 2.038, so data, not size, is what limits).
    "medium": dict(
        vocab_size=2048,
        model=dict(block_size=128, n_layer=6, n_head=6, n_embd=240, dropout=0.1),
        train=dict(max_steps=4500, batch_size=32, learning_rate=1.5e-3, min_lr=1.5e-4,
                   warmup_steps=200, eval_interval=250, eval_batches=20),
        text_chars=None,
    ),
    # The model shipped in course_lib/assets (see the README for the exact command).
    "shipped": dict(
        vocab_size=2048,
        model=dict(block_size=128, n_layer=4, n_head=6, n_embd=192, dropout=0.1),
        train=dict(max_steps=5000, batch_size=32, learning_rate=2e-3, min_lr=2e-4,
                   warmup_steps=200, eval_interval=250, eval_batches=20),
        text_chars=None,
    ),
}


def main(argv: list[str] | None = None) -> None:
    from course_lib.data import load_corpus
    from course_lib.evaluation import bits_per_char
    from course_lib.tokenization import BPETokenizer

    parser = argparse.ArgumentParser(
        prog="python -m course_lib.train",
        description="Train a BPE tokenizer and a GPT on the Shakespeare plays (val plays held "
        "out), then report held-out bits per character.",
    )
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                        help="named configuration (default: tiny)")
    parser.add_argument("--out", default="runs/tiny", help="output folder")
    parser.add_argument("--tokenizer", help="use this tokenizer file instead of training one")
    parser.add_argument("--max-steps", type=int, help="override the configuration's steps")
    parser.add_argument("--batch-size", type=int, help="override the batch size")
    parser.add_argument("--device", help="cpu, cuda or mps (default: best available)")
    parser.add_argument("--compile", action="store_true", help="use torch.compile")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast on the CPU too (a GPU uses it anyway); fast only on "
                        "CPUs with AMX or AVX512-BF16")
    parser.add_argument("--resume", action="store_true", help="resume from OUT/checkpoint.pt")
    parser.add_argument("--eval-chars", type=int, default=None,
                        help="evaluate bits/char on the first N characters of the val plays")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--init-from", help="start from this saved model (.safetensors) "
                        "instead of random weights; its shape must match the configuration")
    parser.add_argument("--learning-rate", type=float, help="override the peak learning rate")
    parser.add_argument("--min-lr", type=float, help="override the final learning rate")
    parser.add_argument("--warmup-steps", type=int, help="override the warmup steps")
    parser.add_argument("--dropout", type=float, help="override the model's dropout")
    args = parser.parse_args(argv)

    preset = CONFIGS[args.config]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_text, val_text = load_corpus("train"), load_corpus("val")
    if preset["text_chars"]:
        train_text, val_text = train_text[: preset["text_chars"]], val_text[: preset["text_chars"]]
    if args.tokenizer:
        tokenizer = BPETokenizer.load(args.tokenizer)
    else:
        t0 = time.perf_counter()
        tokenizer = BPETokenizer.train(train_text, preset["vocab_size"])
        print(f"trained BPE tokenizer, vocab {tokenizer.vocab_size}, "
              f"in {time.perf_counter() - t0:.1f} s")
    tokenizer.save(out / "tokenizer.json")
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    print(f"train {len(train_ids):,} tokens ({len(train_text) / len(train_ids):.2f} chars/token), "
          f"val {len(val_ids):,} tokens")

    shape = preset["model"] | ({} if args.dropout is None else {"dropout": args.dropout})
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **shape))
    if args.init_from:
        start = GPT.load(args.init_from)
        if start.config != model.config:
            raise ValueError(f"--init-from model has config {start.config}, but --config "
                             f"{args.config} needs {model.config}")
        model = start
    print(f"model: {model.num_parameters():,} parameters")
    overrides = {k: v for k, v in (("max_steps", args.max_steps),
                                   ("batch_size", args.batch_size),
                                   ("learning_rate", args.learning_rate),
                                   ("min_lr", args.min_lr),
                                   ("warmup_steps", args.warmup_steps)) if v is not None}
    config = TrainConfig(**{**preset["train"], **overrides}, device=args.device,
                         compile=args.compile, bf16=True if args.bf16 else None,
                         seed=args.seed, resume=args.resume,
                         checkpoint_path=str(out / "checkpoint.pt"),
                         checkpoint_interval=500)
    history = train(model, train_ids, val_ids, config)
    model.cpu().eval()
    model.save(out / "model.safetensors")
    eval_text = val_text[: args.eval_chars] if args.eval_chars else val_text
    bpc = bits_per_char(model, tokenizer, eval_text)
    summary = {
        "config": args.config,
        "steps": len(history["step"]),
        "final_train_loss": history["train_loss"][-1],
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "val_bits_per_char": bpc,
        "mean_tokens_per_s": sum(history["tokens_per_s"]) / len(history["tokens_per_s"]),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
