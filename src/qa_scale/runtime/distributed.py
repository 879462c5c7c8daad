"""The process group and every collective of qa-scale: one module, one code path for 1 rank or N.

Every command that runs a model (``train``, ``backbone``, ``predict``) joins a process group
through :func:`init`: the one the ``deepspeed`` launcher describes in ``RANK``/``WORLD_SIZE``/
``MASTER_*``, or a group of one for a plain process. The collectives below run whenever that
group exists, with one rank as with eight, so a one-GPU run goes through exactly the code of a
multi-GPU run. Their tensors are made on :attr:`Dist.device` (``cuda:LOCAL_RANK`` under
``nccl``, the CPU under ``gloo``): an ``nccl`` group has no CPU backend, and a CPU tensor there
fails at the first collective. No other module calls ``torch.distributed`` (a test checks).

Writes to a shared place (window caches, logs, exports) are rank-0 work ordered by
:func:`main_first` or followed by :func:`barrier`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from .processes import free_port

log = logging.getLogger(__name__)
CPU_FP16_ENV = "QA_SCALE_CPU_FP16"  # tests: let DeepSpeed's fp16 path run on the CPU accelerator
Device = Literal["auto", "cuda", "cpu"]


class DeviceError(RuntimeError):
    """GPUs that this torch cannot use, or a device that is asked for and absent."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the group and the device its tensors live on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def single(device: torch.device | str = "cpu") -> Dist:
    """The place of a process that computes alone, outside any group (library use, tests)."""
    return Dist(0, 1, 0, torch.device(device))


def gpus_visible() -> list[str]:
    """NVIDIA device files of this machine that ``CUDA_VISIBLE_DEVICES`` does not hide."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return []
    return sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))


def choose_device(device: Device = "auto") -> str:
    """``"cuda"`` or ``"cpu"`` for ``device``; refuses GPUs that this torch build cannot drive.

    ``auto`` takes CUDA when torch has it; on a machine with visible NVIDIA GPUs but a torch
    without CUDA (a CPU wheel, a driver too old for the wheel) it fails instead of quietly
    starting CPU ranks: CPU ranks only when asked for (``run.device=cpu`` / ``--device cpu``).
    """
    if device not in ("auto", "cuda", "cpu"):
        raise DeviceError(f"device must be auto, cuda or cpu, got {device!r}")
    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    gpus = gpus_visible()
    if device == "cuda" or gpus:
        seen = f"GPUs are visible ({', '.join(gpus[:4])}) but" if gpus else "device cuda was asked for but"
        raise DeviceError(
            f"{seen} torch {torch.__version__} cannot use CUDA (built for CUDA: {torch.version.cuda or 'no'}). "
            "Install a CUDA build of torch that matches the driver (https://pytorch.org/get-started/locally/) "
            "into this environment, or run on CPU ranks on purpose with run.device=cpu (train) or --device cpu.")
    return "cpu"


def _logs_to_stderr() -> contextlib.AbstractContextManager:
    """DeepSpeed logs and prints to stdout; moved to stderr, stdout stays ours (``--json`` output)."""
    from deepspeed.utils import logger as ds_logger

    for handler in ds_logger.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
    return contextlib.redirect_stdout(sys.stderr)


def _shm_buffer() -> Path:
    """This rank's shared-memory all-reduce buffer of DeepSpeed's CPU backend (csrc/cpu/comm/shm.cpp).

    DeepSpeed names it after the master address and port and never removes it: every CPU run
    would leave 69 MB per rank in /dev/shm, and a later run that gets the same port would find
    the old buffer, whose peers map it before its owner re-initialises it — a race that can
    corrupt the first all-reduces. Each rank removes its own name before and after joining.
    """
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_"
            f"{os.environ['MASTER_PORT']}_{os.environ['RANK']}")
    return Path("/dev/shm") / name


def share_cpu_threads() -> int:
    """Give each CPU rank its share of the cores, unless OMP_NUM_THREADS says otherwise.

    The deepspeed launcher starts every rank with PyTorch's default of one thread per core, so
    two CPU ranks on two cores run four busy threads and each step takes about twice as long
    as it would with one thread per rank.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(1, ranks_here)))
    return torch.get_num_threads()


def _world_of_one() -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")


def init(device: Device = "auto") -> Dist:
    """Join the launcher's process group, or make a group of one when run plainly.

    Args:
        device: ``auto`` (CUDA when torch has it; an error when GPUs are visible but torch
            cannot use them), ``cuda`` or ``cpu``.

    Returns:
        This rank's :class:`Dist`; ``nccl`` on CUDA (one GPU per local rank), ``gloo`` on CPU.
    """
    kind = choose_device(device)
    with contextlib.redirect_stdout(sys.stderr):
        import deepspeed

    if dist.is_initialized():  # a second command in one process (tests): reuse the group
        return current()
    if "RANK" not in os.environ:
        _world_of_one()
    if os.environ.get(CPU_FP16_ENV) == "1":
        from deepspeed.accelerator import get_accelerator
        get_accelerator().is_fp16_supported = lambda: True
    if kind == "cpu":  # a stale buffer under our name would be opened by the peers before we re-create it
        _shm_buffer().unlink(missing_ok=True)  # output-layer: DeepSpeed's shared-memory buffer, not an output
        if torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if kind == "cuda":
        torch.cuda.set_device(local)
    with _logs_to_stderr():
        deepspeed.init_distributed(dist_backend="nccl" if kind == "cuda" else "gloo")
    if kind == "cpu":
        dist.barrier()  # every rank has mapped every buffer: the names can go, the memory stays
        _shm_buffer().unlink(missing_ok=True)  # output-layer: DeepSpeed's shared-memory buffer, not an output
        share_cpu_threads()
    return current()


def current() -> Dist:
    """The :class:`Dist` of the group this process has joined."""
    if not dist.is_initialized():
        raise RuntimeError("no process group: call qa_scale.runtime.distributed.init() first")
    local = int(os.environ.get("LOCAL_RANK", 0))
    cuda = dist.get_backend() == "nccl"
    return Dist(dist.get_rank(), dist.get_world_size(), local,
                torch.device("cuda", local) if cuda else torch.device("cpu"))


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first(d: Dist) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds and saves a cache); the others run it after.

    The others then find rank 0's result on disk instead of racing to write the same place.
    """
    if not d.main:
        barrier()
    try:
        yield
    finally:
        if d.main:
            barrier()


def all_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place, on its device; returns it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def sum_floats(values: Sequence[float], d: Dist) -> list[float]:
    """Element-wise sum over the ranks of a few host numbers (one all-reduce on ``d.device``)."""
    t = torch.tensor(list(values), dtype=torch.float64 if d.device.type == "cpu" else torch.float32, device=d.device)
    return all_sum_(t).tolist()


def max_float(value: float, d: Dist) -> float:
    """The largest ``value`` over the ranks."""
    t = torch.tensor([float(value)], dtype=torch.float64 if d.device.type == "cpu" else torch.float32, device=d.device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def any_rank(flag: torch.Tensor) -> bool:
    """True when ``flag`` (a 0-d or 1-element tensor on the device, nonzero = true) is set on any rank.

    One all-reduce and one host read: the price of a decision every rank must take together.
    """
    t = flag.detach().reshape(1).to(torch.float32)
    return bool(all_sum_(t).item() > 0)


def broadcast_object(obj: Any, d: Dist, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=d.device)
    return box[0]


def gather_objects(obj: Any, d: Dist, dst: int = 0) -> list | None:
    """Every rank's ``obj`` in rank order on rank ``dst``; None elsewhere."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * d.world_size if d.rank == dst else None
    dist.gather_object(obj, out, dst=dst)  # nccl: pickles travel through cuda.current_device()
    return out


def leave(ok: bool) -> None:
    """Destroy the process group this process joined, before it exits.

    Left to interpreter shutdown, gloo's worker threads can be torn down while joinable and the
    process aborts ("terminate called without an active exception", exit -6) after its work is
    done — which the launcher reports as a failed run.
    """
    if not dist.is_available() or not dist.is_initialized():
        return
    if ok:
        dist.barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()
