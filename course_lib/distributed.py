"""Training in several processes under torchrun: this process's rank, the group, its rows.

course_lib.train uses these; a single process (no torchrun) passes through them unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta

import torch
import torch.distributed as dist

from course_lib.device import default_device
from course_lib.validation import check_device


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless a torch.distributed group is running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher using its environment variables) started us."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(device: str | None = None) -> torch.device:
    """Join torchrun's process group and return this process's device.

    nccl on CUDA (one GPU per process, chosen by LOCAL_RANK), gloo on CPUs. Without torchrun
    it starts nothing and returns the device that a single process would use.
    """
    dev = check_device("device", device) if device else default_device()
    if not launched_by_torchrun() or world()[1] > 1:
        return dev
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    elif dev.type == "mps":
        raise ValueError("several processes on Apple's MPS are not supported; use --device cpu")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=10))
    return dev


def micro_batches(ids: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator,
                  device: torch.device, rank: int, world_size: int,
                  accumulation: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's micro-batches of one step's global batch.

    Every rank draws the same batch_size window starts from the same generator (so its state
    is one number for the whole job, and a checkpoint resumes at any number of processes); rank
    r then takes the rows of micro-batches r, r + world_size, ...  One process without
    accumulation gets exactly data.get_batch's batch.
    """
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    micro = batch_size // (world_size * accumulation)
    offsets = torch.arange(block_size)
    for a in range(accumulation):
        first = (a * world_size + rank) * micro
        rows = starts[first : first + micro, None] + offsets
        yield (ids[rows].to(device, non_blocking=True),
               ids[rows + 1].to(device, non_blocking=True))


def run_main(main: Callable[[], None]) -> None:
    """Call a command line's main(); under torchrun, through torchrun's error recorder.

    torchrun then shows the failing rank's exception in its summary, not just "exit 1". The
    recorder's module is imported only here: every other use of course_lib would pay for it.
    """
    if launched_by_torchrun():
        from torch.distributed.elastic.multiprocessing.errors import record

        record(main)()
    else:
        main()
