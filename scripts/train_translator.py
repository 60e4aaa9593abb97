"""Train the shipped translator (English number words -> French) and write course_lib/assets.

OMP_NUM_THREADS=1 python scripts/train_translator.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from course_lib.seq2seq import Seq2Seq, Seq2SeqConfig
from course_lib.train import TrainConfig
from course_lib.translation import (
    TranslationTokenizer,
    evaluate_translator,
    make_batch,
    train_on_pairs,
    translation_split,
)

ASSETS = Path(__file__).resolve().parent.parent / "course_lib" / "assets"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    train_pairs, held_out = translation_split()
    tokenizer = TranslationTokenizer.from_pairs(train_pairs)
    config = Seq2SeqConfig(
        vocab_size=tokenizer.vocab_size, block_size=64, n_encoder_layer=2, n_decoder_layer=2,
        n_head=4, n_embd=128, mlp_hidden=256, activation="relu", norm_first=True,
        position="learned", dropout=0.0)
    model = Seq2Seq(config)
    train_config = TrainConfig(max_steps=args.steps, batch_size=args.batch_size,
                               learning_rate=2e-3, min_lr=1e-4, warmup_steps=100,
                               weight_decay=0.01, seed=args.seed, device="cpu")

    def loss_of(model: Seq2Seq, batch: list) -> torch.Tensor:
        src, src_mask, tgt, targets = make_batch(tokenizer, batch)
        return model(src, tgt, targets, src_mask=src_mask)[1]

    train_on_pairs(model, loss_of, train_pairs, train_config, seed=args.seed, log_every=100)
    train_s = time.perf_counter() - t_start
    t0 = time.perf_counter()
    greedy = evaluate_translator(model, tokenizer, held_out)
    greedy_s = time.perf_counter() - t0
    beam = evaluate_translator(model, tokenizer, held_out[:200], num_beams=4)
    greedy_200 = evaluate_translator(model, tokenizer, held_out[:200])
    print(f"held-out greedy: {greedy} ({greedy_s:.1f} s)\nfirst 200: greedy {greedy_200}, "
          f"beam 4 {beam}")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "translator.safetensors", dtype=torch.float16)
    tokenizer.save(args.out / "translator_tokenizer.json")
    card = {
        "task": "English number words -> French number words (num2words 0.5.14), 0..9999",
        "data": f"translation_split(): {len(train_pairs)} training pairs, {len(held_out)} "
                "held-out numbers never seen in training (shuffled with seed 0)",
        "command": "OMP_NUM_THREADS=1 python scripts/"
                   f"train_translator.py --steps {args.steps} --batch-size {args.batch_size} "
                   f"--seed {args.seed}",
        "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed,
        "optimizer": "AdamW, lr 2e-3 warm-up 100 then cosine to 1e-4, weight decay 0.01",
        "train_seconds": round(train_s), "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} CPU, one core",
        "parameters": model.num_parameters(), "weights_dtype": "float16",
        "config": asdict(config),
        "held_out_greedy": {k: round(v, 4) for k, v in greedy.items()},
        "held_out_first_200_greedy": {k: round(v, 4) for k, v in greedy_200.items()},
        "held_out_first_200_beam4": {k: round(v, 4) for k, v in beam.items()},
    }
    (args.out / "translator_card.json").write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {args.out}; total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
