"""Data-parallel training on ``torch.distributed``: one process per device, ``torchrun``-style.

``torchrun --standalone --nproc_per_node=N -m gptref train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables; ``init()`` reads them and joins
the process group (``gloo`` on CPU, ``nccl`` on CUDA). The API equivalent::

    ctx = distributed.init()                     # or init(rank=, world_size=, init_method=)
    loader = create_dataloader(..., seed=s, rank=ctx.rank, world_size=ctx.world_size)
    model = distributed.wrap(GPTModel(cfg).to(ctx.device), ctx)
    train(model, loader, ..., group=ctx)          # the group comes in as an argument
    distributed.shutdown()

What each rank does (``train_step`` / ``evaluate`` / ``train`` with ``group=ctx``):

- batches: rank ``r`` trains on ``batch_order(..., rank=r, world_size=N)``: the ranks'
  ``j``-th batches together are the ``j``-th global batch of the one-process order, so N ranks
  at batch ``b`` take the same steps as one process at batch ``N*b`` (tested to 1e-6);
- loss and gradient: the mean over the *global* batch's counted targets (the counts are
  all-reduced before the backward pass, so padding/ignore_index weigh as in one process);
- evaluation: each rank evaluates its shard; the losses are all-reduced, batch- or
  token-weighted as asked;
- rank 0 alone logs, writes metrics, plots and checkpoints; a checkpoint keeps every rank's
  RNG state and resumes exactly at the same world size (another world size is refused).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class DistContext:
    """This process's place in the process group: what ``train`` / ``train_step`` /
    ``evaluate`` take as ``group`` (``None``: one process, no collectives)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """float (n,) -> float64 (n,) on this group's device: the sum over the ranks,
        elementwise (the values themselves for one process)."""
        t = values.to(self.device, torch.float64)
        if self.world_size > 1:
            t = t.clone() if t is values else t
            dist.all_reduce(t)
        return t

    def gather(self, obj: Any) -> list[Any]:
        """-> every rank's ``obj`` (picklable), in rank order; ``[obj]`` for one process."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.world_size > 1:
            dist.barrier()


def launched() -> bool:
    """Whether this process was started by torchrun (or anything that sets WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> DistContext | None:
    """The process group this process joined (with ``init`` or ``init_process_group``) as a
    DistContext; None without one."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    rank, world_size = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistContext(rank, world_size, local_rank, device)


def init(
    device: str = "auto",
    *,
    rank: int | None = None,
    world_size: int | None = None,
    init_method: str | None = None,
    timeout_s: float = 600.0,
) -> DistContext:
    """Join the process group -> DistContext. Without arguments, from torchrun's variables
    (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). ``device``:
    "cpu" (gloo), "cuda" (nccl, one GPU per local rank) or "auto" (cuda when available).
    A collective that waits longer than ``timeout_s`` (a rank died) raises instead of hanging.
    """
    env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    rank = int(env_rank) if rank is None and env_rank is not None else rank
    world_size = int(env_world) if world_size is None and env_world is not None else world_size
    if rank is None or world_size is None:
        raise ValueError(
            "distributed.init: no RANK/WORLD_SIZE in the environment; launch with "
            "torchrun --nproc_per_node=N, or pass rank=, world_size= and init_method="
        )
    if not 0 <= rank < world_size:
        raise ValueError(f"distributed.init: rank must be in [0, {world_size}), got {rank}")
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("distributed.init: device 'cuda' but torch sees no CUDA device")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"distributed.init: local rank {local_rank} but only {torch.cuda.device_count()} "
                "CUDA devices; use --nproc_per_node <= the GPU count"
            )
        torch.cuda.set_device(local_rank)
        dev, backend = torch.device("cuda", local_rank), "nccl"
    elif device == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
    else:
        raise ValueError(f"distributed.init: device must be auto, cpu or cuda, got {device!r}")
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            init_method=init_method or "env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistContext(rank, world_size, local_rank, dev)


def shutdown(*, wait: bool = False) -> None:
    """Leave the process group (no-op without one). ``wait=True`` (a clean finish) first
    waits for every rank, so none tears down its connections while another still uses them;
    after an error, leave at once (a barrier would wait for a rank that is gone)."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """-> ``DistributedDataParallel(model)`` on ``ctx.device`` (rank 0's weights broadcast to
    all ranks); ``model`` itself when ``world_size`` is 1."""
    if ctx.world_size == 1:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
