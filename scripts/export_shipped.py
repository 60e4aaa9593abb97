"""Copy a training run (python -m course_lib.train --out RUN) into course_lib/assets.

Usage: python scripts/export_shipped.py RUN [--from-checkpoint] [--config NAME] [--dtype D]
                                         [--previous-steps N] [--command C]
--from-checkpoint exports the latest checkpoint.pt of a run still in progress (shape from
--config). --dtype bfloat16 halves the file; the score in the card is measured on the weights
as stored.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch

from course_lib.data import load_corpus
from course_lib.evaluation import bits_per_char
from course_lib.model import GPT, GPTConfig
from course_lib.pretrained import CARD_FILE, MODEL_FILE, TOKENIZER_FILE
from course_lib.tokenization import BPETokenizer

parser = argparse.ArgumentParser()
parser.add_argument("run")
parser.add_argument("--from-checkpoint", action="store_true")
parser.add_argument("--config", default="shipped",
                    help="the run's --config (for --from-checkpoint)")
parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="how the weights are stored")
parser.add_argument("--previous-steps", type=int, default=0,
                    help="steps of the run that RUN was started from (--init-from)")
parser.add_argument("--command", default="python -m course_lib.train --config shipped "
                    "--out runs/shipped")
args = parser.parse_args()
run = Path(args.run)
tokenizer = BPETokenizer.load(run / "tokenizer.json")
if args.from_checkpoint:
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    from course_lib.train import CONFIGS

    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, **CONFIGS[args.config]["model"]))
    model.load_state_dict(ckpt["model"])
    steps = ckpt["step"]
else:
    model = GPT.load(run / "model.safetensors")
    steps = json.loads((run / "summary.json").read_text())["steps"]
MODEL_FILE.parent.mkdir(exist_ok=True)
model.save(MODEL_FILE, dtype=getattr(torch, args.dtype))
shutil.copy(run / "tokenizer.json", TOKENIZER_FILE)
model = GPT.load(MODEL_FILE).eval()  # score the weights as they ship
bpc = bits_per_char(model, tokenizer, load_corpus("val"))
card = {
    "command": args.command,
    "steps": args.previous_steps + steps,
    "parameters": model.num_parameters(),
    "config": json.loads(MODEL_FILE.with_suffix(".json").read_text()),
    "tokenizer_vocab_size": tokenizer.vocab_size,
    "val_plays_bits_per_char": round(bpc, 4),
}
CARD_FILE.write_text(json.dumps(card, indent=2) + "\n")
print(json.dumps(card, indent=2))
