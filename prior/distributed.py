"""torchrun / ``torch.distributed`` set-up: the only module that knows about ranks.

Training code receives a :class:`DistContext` and asks it questions (is this the main process?
which slice of the global batch is mine?) or hands it tensors to reduce; with
``world_size == 1`` every call is a no-op, so the same loop runs with and without torchrun.
Backend: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.distributed as tdist
from torch import Tensor, nn

__all__ = ["DistContext", "init_distributed", "shutdown", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" -> cuda:<local_rank> when available, else cpu; otherwise ``torch.device(name)``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


@dataclass(frozen=True)
class DistContext:
    """Rank information plus the few collectives the training loop needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def local_slice(self, global_batch: int) -> slice:
        """This rank's part of a global batch (the batch must split evenly)."""
        if global_batch % self.world_size:
            raise ValueError(
                f"batch size {global_batch} is not divisible by world size {self.world_size}"
            )
        per = global_batch // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """DistributedDataParallel when several processes run, else the model itself."""
        if not self.active:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    @staticmethod
    def unwrap(model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

    def all_reduce_mean(self, x: Tensor) -> Tensor:
        """Mean of ``x`` over ranks (a copy; ``x`` is unchanged)."""
        if not self.active:
            return x.clone()
        y = x.detach().clone()
        tdist.all_reduce(y, op=tdist.ReduceOp.SUM)
        return y / self.world_size

    def gather_objects(self, obj: Any) -> list[Any]:
        """Picklable ``obj`` from every rank, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()


def init_distributed(env: Mapping[str, str], device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group described by torchrun's variables in ``env``.

    Args:
        env: the environment (entry points pass ``os.environ``): WORLD_SIZE, RANK, LOCAL_RANK,
            MASTER_ADDR, MASTER_PORT as set by torchrun. Absent = a single process.
        device: "auto", "cpu", "cuda", "cuda:N".
    Returns:
        (context, this process's device).
    """
    world = int(env.get("WORLD_SIZE", "1"))
    rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not tdist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("rank %d/%d joined (%s, %s)", rank, world, backend, dev)
    return DistContext(rank, world, local_rank), dev


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.active and tdist.is_initialized():
        tdist.destroy_process_group()
