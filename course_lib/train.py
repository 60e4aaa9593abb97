"""Training a GPT: AdamW, warmup + cosine schedule, clipping, eval, checkpoints, and a CLI.

Running under torchrun is course_lib.distributed's part; saving and resuming the training
state, course_lib.training_state's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from course_lib.data import get_batch
from course_lib.device import autocast, default_device
from course_lib.distributed import init_distributed, micro_batches, run_main, world
from course_lib.files import write_text
from course_lib.model import GPT, GPTConfig
from course_lib.training_state import load_checkpoint, restore_checkpoint, save_checkpoint
from course_lib.validation import (
    check_bool,
    check_device,
    check_float,
    check_int,
    check_model,
    check_token_ids,
)

# No run needs more steps or rows than this; a larger number is a typo, not a plan.
_MAX_COUNT = 10**9


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 32  # rows per optimizer step, over all processes: the global batch
    block_size: int | None = None  # None: the model's block_size
    # Rows one process runs through the model at once; None: batch_size / processes. Smaller
    # means gradient accumulation (batch_size / (micro_batch_size * processes) passes a step).
    micro_batch_size: int | None = None
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
        # Every field is checked here, so a bad value fails at once, named, and not mid-run.
        def name(field: str) -> str:
            return f"TrainConfig.{field}"

        for field in ("max_steps", "batch_size", "eval_batches"):
            setattr(self, field, check_int(name(field), getattr(self, field), minimum=1,
                                           maximum=_MAX_COUNT))
        for field in ("warmup_steps", "eval_interval", "checkpoint_interval"):
            setattr(self, field, check_int(name(field), getattr(self, field), minimum=0,
                                           maximum=_MAX_COUNT))
        for field in ("block_size", "micro_batch_size"):
            if getattr(self, field) is not None:
                setattr(self, field, check_int(name(field), getattr(self, field), minimum=1,
                                               maximum=_MAX_COUNT))
        self.learning_rate = check_float(name("learning_rate"), self.learning_rate, minimum=0.0,
                                         min_inclusive=False)
        self.min_lr = check_float(name("min_lr"), self.min_lr, minimum=0.0,
                                  maximum=self.learning_rate)
        self.weight_decay = check_float(name("weight_decay"), self.weight_decay, minimum=0.0)
        for field in ("beta1", "beta2"):  # Adam's moving averages need a factor below 1
            setattr(self, field, check_float(name(field), getattr(self, field), minimum=0.0,
                                             maximum=1.0, max_inclusive=False))
        self.grad_clip = check_float(name("grad_clip"), self.grad_clip, minimum=0.0)
        self.seed = check_int(name("seed"), self.seed, minimum=0, maximum=2**64 - 1)
        if self.device is not None:
            check_device(name("device"), self.device)
        for field in ("compile", "resume", "progress"):
            setattr(self, field, check_bool(name(field), getattr(self, field)))
        self.bf16 = check_bool(name("bf16"), self.bf16, allow_none=True)
        if self.checkpoint_path is not None:
            if not isinstance(self.checkpoint_path, (str, os.PathLike)):
                raise TypeError(f"TrainConfig.checkpoint_path must be a path (str), got "
                                f"{type(self.checkpoint_path).__name__}")
            self.checkpoint_path = os.fspath(self.checkpoint_path)
            if not self.checkpoint_path:
                raise ValueError("TrainConfig.checkpoint_path is empty: give a file path")
        if self.resume and not self.checkpoint_path:
            raise ValueError("TrainConfig.resume needs checkpoint_path")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise ValueError(f"TrainConfig.micro_batch_size ({self.micro_batch_size}) must "
                             f"divide TrainConfig.batch_size ({self.batch_size})")

    def accumulation_steps(self, world_size: int = 1) -> int:
        """Forward/backward passes per optimizer step in each of world_size processes."""
        micro = self.micro_batch_size or self.batch_size // world_size
        if micro < 1 or self.batch_size % (micro * world_size):
            raise ValueError(
                f"TrainConfig.batch_size ({self.batch_size}) must be a multiple of "
                f"micro_batch_size ({self.micro_batch_size or 'batch_size / processes'}) times "
                f"the {world_size} processes, so every step sees the same global batch"
            )
        return self.batch_size // (micro * world_size)


# In a notebook each redraw of a bar is a widget message to the browser: at most this many
# per run, and two a second, so that a slow or loaded machine does not send more of them.
BAR_REDRAWS = 50


def progress_bar(steps: range, *, desc: str, enabled: bool = True, **options) -> tqdm:
    """tqdm over a run's steps, redrawn at most BAR_REDRAWS times and twice a second."""
    return tqdm(steps, desc=desc, unit="step", disable=not enabled, mininterval=0.5,
                miniters=max(1, len(steps) // BAR_REDRAWS), **options)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside, torch's generator seeded with seed (dropout draws from it), so a short training
    loop with a seed repeats; after, the caller's generator as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


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
    g = torch.Generator().manual_seed((config.seed + 1) % 2**64)
    losses = []
    for _ in range(config.eval_batches):
        x, y = get_batch(ids, config.batch_size, block_size, g, device)
        with autocast(device, config.bf16):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train(was_training)
    return sum(losses) / len(losses)


# ----- the training loop ----------------------------------------------------------------------


def _check_ids(name: str, ids, vocab_size: int, block_size: int) -> torch.Tensor:
    ids = check_token_ids(name, ids, vocab_size)
    if ids.shape[0] != 1:
        raise ValueError(f"{name} must be one 1-D sequence of token ids, got shape "
                         f"{tuple(ids.shape)}")
    if ids.shape[1] <= block_size:
        raise ValueError(f"{name} must hold more than block_size={block_size} tokens to make "
                         f"a batch, got {ids.shape[1]}")
    return ids[0]


def train(
    model: GPT,
    train_ids: torch.Tensor,
    val_ids: torch.Tensor | None,
    config: TrainConfig,
    callback: Callable[[dict], bool | None] | None = None,
) -> dict[str, list]:
    """Train model in place and return its history.

    history: step, train_loss, lr, tokens_per_s (the whole job's), tokens_per_s_per_process
    (one entry per step) and val_step, val_loss.
    callback(info) runs after every step with a dict of the same figures; returning False
    stops training early.

    Under torchrun (a torch.distributed group is running, see init_distributed) the model is
    wrapped in DistributedDataParallel: each process runs its share of every step's global
    batch of config.batch_size rows, train_loss is the mean over all of them, and evaluation,
    checkpoints, the progress bar and the callback happen on rank 0 only (its False stops
    every rank). The losses equal a single process's with the same batch_size.
    """
    model = check_model("model", model)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    rank, world_size = world()
    device = torch.device(config.device) if config.device else default_device()
    if world_size > 1 and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    block_size = config.block_size or model.config.block_size
    if block_size > model.config.block_size:
        raise ValueError(
            f"TrainConfig.block_size {block_size} exceeds the model's {model.config.block_size}"
        )
    accumulation = config.accumulation_steps(world_size)
    train_ids = _check_ids("train_ids", train_ids, model.config.vocab_size, block_size)
    if val_ids is not None:
        val_ids = _check_ids("val_ids", val_ids, model.config.vocab_size, block_size)
    if config.resume and config.checkpoint_path and rank == 0:
        path = Path(config.checkpoint_path)
        ckpt = load_checkpoint(path, model) if path.exists() else None
    else:
        ckpt = None
    if world_size > 1 and config.resume:
        # Only rank 0 reads the file (the output folder lives on its machine); the others
        # receive the state from it.
        box = [ckpt]
        dist.broadcast_object_list(box, src=0)
        ckpt = box[0]
    # Dropout draws from torch's global generator: a different stream on every rank.
    torch.manual_seed((config.seed + rank) % 2**64)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config, device)
    generator = torch.Generator().manual_seed(config.seed)
    keys = ("step", "train_loss", "lr", "tokens_per_s", "tokens_per_s_per_process",
            "val_step", "val_loss")
    history: dict[str, list] = {k: [] for k in keys}
    start = 0
    if ckpt is not None:
        restore_checkpoint(ckpt, config.checkpoint_path, model, optimizer, generator)
        if world_size > 1:  # the rng state saved is rank 0's; each rank keeps its own stream
            torch.manual_seed((config.seed + rank + ckpt["step"]) % 2**64)
        history, start = ckpt["history"], ckpt["step"]
        history.setdefault("tokens_per_s_per_process", list(history["tokens_per_s"]))
    net = model
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    step_fn = torch.compile(net) if config.compile else net
    main_rank = rank == 0
    tokens_per_step = config.batch_size * block_size

    bar = progress_bar(range(start, config.max_steps), desc="training",
                       enabled=config.progress and main_rank, initial=start,
                       total=config.max_steps)
    for step in bar:
        t0 = time.perf_counter()
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum = None
        batches = micro_batches(train_ids, config.batch_size, block_size, generator, device,
                                 rank, world_size, accumulation)
        for a, (x, y) in enumerate(batches):
            # DDP averages gradients across processes in the backward pass; between the
            # accumulation passes of one step that exchange is wasted, so no_sync skips it.
            sync = world_size == 1 or a == accumulation - 1
            with contextlib.nullcontext() if sync else net.no_sync():
                with autocast(device, config.bf16):
                    _, loss = step_fn(x, y)
                (loss / accumulation if accumulation > 1 else loss).backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        loss_mean = loss_sum / accumulation if accumulation > 1 else loss_sum
        if world_size > 1:
            loss_mean = loss_mean.float()
            dist.all_reduce(loss_mean)
            loss_mean /= world_size
        loss_value = loss_mean.item()  # synchronises, so the timing below is honest on a GPU
        tokens_per_s = tokens_per_step / (time.perf_counter() - t0)
        info = {"step": step + 1, "train_loss": loss_value, "lr": lr,
                "tokens_per_s": tokens_per_s, "tokens_per_s_per_process": tokens_per_s / world_size}
        for k, v in info.items():
            history[k].append(v)
        last = step + 1 == config.max_steps
        if main_rank and val_ids is not None and config.eval_interval and (
            (step + 1) % config.eval_interval == 0 or last
        ):
            val_loss = estimate_loss(model, val_ids, config, block_size, device)
            history["val_step"].append(step + 1)
            history["val_loss"].append(val_loss)
            info["val_loss"] = val_loss
        # refresh=False: the bar redraws on its interval, not once per step.
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        if main_rank and config.checkpoint_path and (
            last or (config.checkpoint_interval and (step + 1) % config.checkpoint_interval == 0)
        ):
            save_checkpoint(config.checkpoint_path, model, optimizer, step + 1, generator,
                             history, config)
        stop = main_rank and callback is not None and callback(info) is False
        if world_size > 1 and callback is not None:
            flag = torch.tensor([float(stop)], device=device)
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        if stop:
            break
    bar.close()
    return history


def sample_report(
    tokenizer, prompt: str, eval_text: str, max_new_tokens: int = 40, seed: int = 0
) -> Callable[[GPT], dict]:
    """A report(model) for train_with_reports: held-out loss, bits per char and a seeded sample.

    The sample uses the same seed every time, so two reports differ only by what training did.
    report.val_loss(model) is the held-out loss alone (cheap enough to measure often), the
    same figure as the report's "val_loss".
    """
    from course_lib.evaluation import bits_per_char, mean_loss
    from course_lib.sampling import generate_text

    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty str: the sample needs a start")
    eval_ids = tokenizer.encode(eval_text)
    if len(eval_ids) < 2:
        raise ValueError("eval_text must encode to at least 2 tokens")

    def val_loss(model: GPT) -> float:
        return mean_loss(model, eval_ids)

    def report(model: GPT) -> dict:
        return {
            "val_loss": val_loss(model),
            "bits_per_char": bits_per_char(model, tokenizer, eval_text),
            "sample": generate_text(model, tokenizer, prompt, max_new_tokens, seed=seed),
        }

    report.val_loss = val_loss
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
    parser.add_argument("--micro-batch-size", type=int,
                        help="rows per process per forward pass; smaller than batch size / "
                        "processes means gradient accumulation (default: batch size / processes)")
    parser.add_argument("--checkpoint-interval", type=int, default=500,
                        help="write OUT/checkpoint.pt every N steps, and at the end (default 500)")
    args = parser.parse_args(argv)
    _check_args(args)

    # Under torchrun every process runs this same program; rank 0 alone prints and writes.
    device = init_distributed(args.device)
    rank, world_size = world()
    try:
        _main(args, device, rank, world_size)
    finally:
        if world_size > 1:
            dist.destroy_process_group()


def _check_args(args: argparse.Namespace) -> None:
    """The flags that TrainConfig does not see, checked before any slow work starts."""
    if not args.out.strip():
        raise ValueError("--out is empty: give an output folder, like --out runs/tiny (an empty "
                         "one would write into the current folder)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder")
    if args.eval_chars is not None:
        check_int("--eval-chars (characters of the val plays to score)", args.eval_chars,
                  minimum=1)
    if args.dropout is not None:
        check_float("--dropout", args.dropout, minimum=0.0, maximum=1.0, max_inclusive=False)
    for flag, value in (("--tokenizer", args.tokenizer), ("--init-from", args.init_from)):
        if value is not None and not Path(value).is_file():
            raise ValueError(f"{flag} {value!r}: no such file")


def _main(args, device: torch.device, rank: int, world_size: int) -> None:
    from course_lib.data import load_corpus
    from course_lib.evaluation import bits_per_char
    from course_lib.tokenization import BPETokenizer

    def say(text: str) -> None:
        if rank == 0:
            print(text, flush=True)

    preset = CONFIGS[args.config]
    out = Path(args.out)
    overrides = {k: v for k, v in (("max_steps", args.max_steps),
                                   ("batch_size", args.batch_size),
                                   ("micro_batch_size", args.micro_batch_size),
                                   ("learning_rate", args.learning_rate),
                                   ("min_lr", args.min_lr),
                                   ("warmup_steps", args.warmup_steps)) if v is not None}
    # Checked before the slow work (tokenizer, encoding), so a bad argument fails at once.
    config = TrainConfig(**{**preset["train"], **overrides}, device=str(device),
                         compile=args.compile, bf16=True if args.bf16 else None,
                         seed=args.seed, resume=args.resume,
                         checkpoint_path=str(out / "checkpoint.pt"),
                         checkpoint_interval=args.checkpoint_interval)
    accumulation = config.accumulation_steps(world_size)
    if world_size > 1:
        micro = config.batch_size // world_size // accumulation
        say(f"DistributedDataParallel: {world_size} processes ({dist.get_backend()}), global "
            f"batch {config.batch_size} = {world_size} x {micro} rows x {accumulation} "
            "accumulation step(s)")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    train_text, val_text = load_corpus("train"), load_corpus("val")
    if preset["text_chars"]:
        train_text, val_text = train_text[: preset["text_chars"]], val_text[: preset["text_chars"]]
    if args.tokenizer:
        tokenizer = BPETokenizer.load(args.tokenizer)
    else:
        t0 = time.perf_counter()
        # Every rank trains the same tokenizer (BPE training is deterministic): nothing to send.
        tokenizer = BPETokenizer.train(train_text, preset["vocab_size"])
        say(f"trained BPE tokenizer, vocab {tokenizer.vocab_size}, "
            f"in {time.perf_counter() - t0:.1f} s")
    if rank == 0:
        tokenizer.save(out / "tokenizer.json")
    train_ids = torch.tensor(tokenizer.encode(train_text), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode(val_text), dtype=torch.long)
    say(f"train {len(train_ids):,} tokens ({len(train_text) / len(train_ids):.2f} chars/token), "
        f"val {len(val_ids):,} tokens")

    shape = preset["model"] | ({} if args.dropout is None else {"dropout": args.dropout})
    torch.manual_seed(args.seed)  # the initial weights too follow --seed (DDP sends rank 0's)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **shape))
    if args.init_from:
        start = GPT.load(args.init_from)
        if start.config != model.config:
            raise ValueError(f"--init-from model has config {start.config}, but --config "
                             f"{args.config} needs {model.config}")
        model = start
    say(f"model: {model.num_parameters():,} parameters")
    history = train(model, train_ids, val_ids, config)
    if rank != 0:
        return
    model.cpu().eval()
    model.save(out / "model.safetensors")
    eval_text = val_text[: args.eval_chars] if args.eval_chars else val_text
    bpc = bits_per_char(model, tokenizer, eval_text)
    # The first steps pay for warm-up (allocation, thread start): the median is the steady rate.
    job_rate = sorted(history["tokens_per_s"])[len(history["tokens_per_s"]) // 2]
    summary = {
        "config": args.config,
        "steps": len(history["step"]),
        "final_train_loss": history["train_loss"][-1],
        "final_val_loss": history["val_loss"][-1] if history["val_loss"] else None,
        "val_bits_per_char": bpc,
        "processes": world_size,
        "global_batch": config.batch_size,
        "accumulation_steps": accumulation,
        "mean_tokens_per_s": sum(history["tokens_per_s"]) / len(history["tokens_per_s"]),
        "median_tokens_per_s": job_rate,
        "median_tokens_per_s_per_process": job_rate / world_size,
    }
    write_text(out / "history.json", json.dumps(history) + "\n")
    write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"tokens/s: {job_rate:,.0f} for the whole job, {job_rate / world_size:,.0f} per process "
          f"({world_size} process{'es' if world_size > 1 else ''}, median over steps)")


if __name__ == "__main__":
    run_main(main)
