"""Many processes, one run: PyTorch's own distributed engine (torchrun, or srun on SLURM).

::

    ctx = init_distributed(device="auto", launcher="auto")   # reads torchrun's / SLURM's env
    ctx.rank, ctx.world, ctx.device, ctx.is_main
    ctx.all_reduce_sum(tensor)        # in place, every rank gets the sum
    ctx.gather_rows(array)            # rows of every rank, in rank order, on every rank
    ctx.close()

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
``launcher="slurm"`` derives them from the variables ``srun`` gives each task (``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID``, the first host of ``SLURM_JOB_NODELIST``) for runs started
as ``srun napari-cryodrgn train ... --launcher slurm``. Without either, the context is a single
process and every collective is a no-op. CUDA ranks use NCCL on ``cuda:LOCAL_RANK``; CPU ranks
use gloo.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError

log = logging.getLogger(__name__)

LAUNCHERS = ("auto", "torchrun", "slurm", "none")
DEFAULT_PORT = 29500
TIMEOUT = _dt.timedelta(minutes=30)


@dataclass
class DistContext:
    """This process's place in a (possibly one-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: not initialised (one process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all ranks, in place (a no-op for one process)."""
        if self.distributed:
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def gather_rows(self, arr: np.ndarray) -> np.ndarray:
        """Concatenate every rank's ``arr`` (same trailing shape, any row count) in rank order."""
        if not self.distributed:
            return arr
        t = torch.as_tensor(np.ascontiguousarray(arr), device=self.device)
        n = torch.tensor([t.shape[0]], device=self.device)
        counts = [torch.zeros_like(n) for _ in range(self.world)]
        torch.distributed.all_gather(counts, n)
        counts = [int(c.item()) for c in counts]
        pad = torch.zeros((max(counts), *t.shape[1:]), dtype=t.dtype, device=self.device)
        pad[: t.shape[0]] = t
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        torch.distributed.all_gather(parts, pad)
        return np.concatenate([p[:c].cpu().numpy() for p, c in zip(parts, counts, strict=True)])

    def gather_batch(self, t: torch.Tensor, rows: int) -> torch.Tensor:
        """Every rank's ``t`` (1D: one value per image of its part of a global batch, at most
        ``rows``), padded with NaN to ``rows`` and concatenated in rank order (no gradient):
        batch statistics over the whole global batch take ``nanmedian`` of it."""
        if not self.distributed:
            return t.detach()
        pad = torch.full((rows,), float("nan"), dtype=t.dtype, device=t.device)
        pad[: t.shape[0]] = t.detach()
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        torch.distributed.all_gather(parts, pad)
        return torch.cat(parts)

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def close(self, sync: bool = False) -> None:
        """Leave the process group (safe to call twice). ``sync`` (a run that ended normally on
        every rank): wait up to a minute for the other ranks first, so that no rank tears the
        group down while a peer still talks to it (a rank once aborted in gloo's teardown,
        "terminate called without an active exception", after a resumed run had finished)."""
        if self.backend is not None and torch.distributed.is_initialized():
            if sync and self.world > 1:
                with contextlib.suppress(RuntimeError):  # a peer is gone: leave anyway
                    if self.backend == "gloo":
                        torch.distributed.monitored_barrier(timeout=_dt.timedelta(seconds=60))
                    else:
                        torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        self.backend = None


def _int_env(name: str) -> int | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise InputError(f"environment variable {name}={v!r} is not an integer") from None


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[01-04,07],cpu1`` -> ``gpu01``); uses
    ``scontrol show hostnames`` when available, else expands the first bracket itself."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    first = re.split(r",(?![^\[]*\])", nodelist.strip())[0]
    m = re.fullmatch(r"([^\[]*)\[([^\],\-]+)[^\]]*\](.*)", first)
    return first if m is None else m.group(1) + m.group(2) + m.group(3)


def _slurm_env() -> None:
    """Set torch's rendezvous variables from the ones srun gives each task."""
    rank, world = _int_env("SLURM_PROCID"), _int_env("SLURM_NTASKS")
    if rank is None or world is None:
        raise InputError("--launcher slurm needs SLURM_PROCID and SLURM_NTASKS: start the command "
                         "with srun inside a SLURM allocation")
    local = _int_env("SLURM_LOCALID") or 0
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    os.environ.setdefault("LOCAL_RANK", str(local))
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
        if not nodes:
            raise InputError("--launcher slurm: SLURM_JOB_NODELIST is not set; export MASTER_ADDR "
                             "(the first node's host name)")
        os.environ["MASTER_ADDR"] = first_slurm_host(nodes)
    if "MASTER_PORT" not in os.environ:
        job = _int_env("SLURM_JOB_ID") or 0
        os.environ["MASTER_PORT"] = str(DEFAULT_PORT + job % 10000)


def _device(pref: str, local_rank: int) -> torch.device:
    from .trainer import pick_device

    dev = pick_device(pref)
    if dev.type == "cuda" and dev.index is None:
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise InputError(f"local rank {local_rank} has no GPU: this node has {n}; start at "
                             f"most {n} processes per node (torchrun --nproc_per_node={n})")
        dev = torch.device("cuda", local_rank)
    return dev


def init_distributed(device: str = "auto", launcher: str = "auto") -> DistContext:
    """Join the run's process group if this process was started by torchrun (or srun with
    ``launcher='slurm'``); otherwise a one-process context on the chosen device."""
    if launcher not in LAUNCHERS:
        raise InputError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if launcher == "slurm":
        _slurm_env()
    world = _int_env("WORLD_SIZE") or 1
    if launcher == "torchrun" and world == 1 and _int_env("RANK") is None:
        raise InputError("--launcher torchrun: WORLD_SIZE/RANK are not set; start the command "
                         "with torchrun --nproc_per_node=N")
    if launcher == "none" or world <= 1:
        return DistContext(device=_device(device, 0))
    rank, local = _int_env("RANK"), _int_env("LOCAL_RANK")
    if rank is None:
        raise InputError(f"WORLD_SIZE={world} but RANK is not set; start with torchrun")
    local = rank if local is None else local
    dev = _device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend, timeout=TIMEOUT)
    log.info("rank %d of %d on %s (%s)", rank, world, dev, backend)
    return DistContext(rank, world, local, dev, backend)
