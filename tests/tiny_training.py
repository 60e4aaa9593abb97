"""A tiny model and data for the training tests; run under torchrun, it trains them.

python tiny_training.py SPEC.json trains tiny_model() on data() with TrainConfig(**SPEC["config"])
and, on rank 0, saves {"history", "state"} to SPEC["out"]. SPEC["stop_at"] stops through the
callback after that step; SPEC["bad_rank"] gives that rank a bad learning rate, to fail alone.
"""

import json
import sys

import torch

from course_lib.distributed import init_distributed, world
from course_lib.model import GPT, GPTConfig
from course_lib.train import TrainConfig, train

VOCAB = 50


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32))


def data(n: int = 4000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n,), generator=g)


def main(spec_path: str) -> None:
    spec = json.loads(open(spec_path).read())
    init_distributed("cpu")
    rank, _ = world()
    kw = dict(spec["config"])
    if spec.get("bad_rank") == rank:
        kw["learning_rate"] = -1.0
    stop_at = spec.get("stop_at")
    callback = None if stop_at is None else (lambda info: info["step"] < stop_at)
    model = tiny_model()
    history = train(model, data(), data(600, seed=1), TrainConfig(**kw), callback=callback)
    if rank == 0:
        torch.save({"history": history, "state": model.state_dict()}, spec["out"])
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
