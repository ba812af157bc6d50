"""Several processes under `accelerate launch` (or torchrun): who this process is, and work split
between processes.

The launcher sets RANK and WORLD_SIZE; the Trainer (through Accelerate) opens the process group.
Work before training (reference scoring, reference answers) is split here too, so each process
scores its share and every process gets all the results in the original order. With one process
every helper is the identity: single-process runs pay nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
R = TypeVar("R")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def process_device() -> torch.device:
    """This process's device: its own GPU (LOCAL_RANK) where there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def is_main() -> bool:
    """The process that writes shared files (audit log, model, logs)."""
    return rank() == 0


def _group() -> None:
    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()  # opens the process group the launcher describes (gloo on CPU, nccl on GPUs)


def weights_sharded() -> bool:
    """Whether the launcher shards the weights between processes (FSDP, DeepSpeed ZeRO-3): then
    no process can run the model alone, so nothing may generate with it inside a training step."""
    flag = lambda name: os.environ.get(name, "").lower() in ("1", "true")  # noqa: E731
    return flag("ACCELERATE_USE_FSDP") or (flag("ACCELERATE_USE_DEEPSPEED")
                                           and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3")


def all_gather(value: Any) -> list[Any]:
    """Every process's `value`, in rank order; [value] with one process.
    (torch pickles the values between our own processes; nothing is read from files.)"""
    if world_size() == 1:
        return [value]
    _group()
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def sum_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over all processes (a new tensor; `value` is left alone)."""
    total = value.detach().clone()
    if world_size() > 1:
        _group()
        dist.all_reduce(total)
    return total


def barrier() -> None:
    if world_size() > 1:
        _group()
        dist.barrier()


def map_sharded(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T]) -> list[R]:
    """fn over contiguous shares of `items`, one share per process; every process gets all the
    results, in the order of `items`. fn must not itself wait for other processes."""
    n = world_size()
    if n == 1:
        return fn(items)
    size = math.ceil(len(items) / n)
    share = items[rank() * size:(rank() + 1) * size]
    results = fn(share) if len(share) else []
    return [result for part in all_gather(results) for result in part]


def shut_down() -> None:
    """Close the process group, if one is open, before the interpreter exits: left to interpreter
    shutdown, gloo's threads were seen to abort a process after a finished run ("terminate called
    without an active exception", exit code -6)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
