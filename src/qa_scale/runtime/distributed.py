"""The process group and every collective of qa-scale: one module, one code path for 1 rank or N.

Every command that runs a model (``train``, ``backbone``, ``predict``) joins a process group
through :func:`init`: the one the ``deepspeed`` launcher describes in ``RANK``/``WORLD_SIZE``/
``MASTER_*``, or a group of one for a plain process. The collectives below run whenever that
group exists, with one rank as with eight, so a one-GPU run goes through exactly the code of a
multi-GPU run. A group of one is torch's own (an in-memory store): DeepSpeed's communication
backend would build or load its C++ all-reduce op (a minute's compile on a loaded CPU) for a
process that has no peer; ``deepspeed.initialize`` wraps the group when training. Their tensors
are made on :attr:`Dist.device` (``cuda:LOCAL_RANK`` under ``nccl``, the CPU under ``gloo``): an
``nccl`` group has no CPU backend, and a CPU tensor there fails at the first collective. No other
module calls ``torch.distributed`` (a test checks).

Writes to a shared place (window caches, logs, exports) are rank-0 work ordered by
:func:`main_first` or followed by :func:`barrier`; :func:`check_shared` proves at the start that
every rank sees that place. The others wait for such work under the group's timeout
(``run.timeout_minutes``), long enough for an export or a cache build on slow shared storage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist

from ..common.outputs import write_json
from .processes import free_port

log = logging.getLogger(__name__)
CPU_FP16_ENV = "QA_SCALE_CPU_FP16"  # tests: let DeepSpeed's fp16 path run on the CPU accelerator
Device = Literal["auto", "cuda", "cpu"]
# Rank-0-only work (export, checkpoint cleaning, plots, cache builds, decoding, stores) keeps the
# others in a barrier; DeepSpeed's default of 10 minutes can end a long run at its very end.
DEFAULT_TIMEOUT_MINUTES = 60.0
TIMEOUT_SETTING = "run.timeout_minutes"
_timeout_minutes = DEFAULT_TIMEOUT_MINUTES  # of the group this process joined (named in timeout errors)


class DeviceError(RuntimeError):
    """GPUs that this torch cannot use, or a device that is asked for and absent."""


class CollectiveTimeout(RuntimeError):
    """A rank waited in a collective longer than the process group's timeout."""


class SharedStorageError(RuntimeError):
    """A run folder that some rank cannot see: it is not on storage shared by every node."""


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
    """Give each rank its share of the node's cores, unless OMP_NUM_THREADS says otherwise.

    The deepspeed launcher starts every rank with PyTorch's default of one thread per core, so
    two CPU ranks on two cores run four busy threads and each step takes about twice as long
    as it would with one thread per rank; on a GPU node, 8 ranks would each run host work
    (collation, tokenization, decoding) on every core. ``LOCAL_WORLD_SIZE`` counts the ranks of
    this node, so each node divides its own cores.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // max(1, ranks_here)))
    return torch.get_num_threads()


def _world_of_one() -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")


def init(device: Device = "auto", timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> Dist:
    """Join the launcher's process group, or make a group of one when run plainly.

    Args:
        device: ``auto`` (CUDA when torch has it; an error when GPUs are visible but torch
            cannot use them), ``cuda`` or ``cpu``.
        timeout_minutes: how long a rank waits in a collective for the others (``run.timeout_minutes``):
            longer than any work that rank 0 does alone.

    Returns:
        This rank's :class:`Dist`; ``nccl`` on CUDA (one GPU per local rank), ``gloo`` on CPU.
    """
    global _timeout_minutes
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
    alone = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if kind == "cpu" and not alone:  # a stale buffer under our name would be opened by the peers first
        _shm_buffer().unlink(missing_ok=True)  # output-layer: DeepSpeed's shared-memory buffer, not an output
    if kind == "cpu" and torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if kind == "cuda":
        torch.cuda.set_device(local)
    backend, timeout = "nccl" if kind == "cuda" else "gloo", timedelta(minutes=timeout_minutes)
    _timeout_minutes = timeout_minutes
    if alone:  # no peer, no DeepSpeed communication backend: it would build its shared-memory op
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
    else:
        with _logs_to_stderr():
            deepspeed.init_distributed(dist_backend=backend, timeout=timeout)
    if kind == "cpu" and not alone:
        dist.barrier()  # every rank has mapped every buffer: the names can go, the memory stays
        _shm_buffer().unlink(missing_ok=True)  # output-layer: DeepSpeed's shared-memory buffer, not an output
    share_cpu_threads()  # GPU ranks too: 8 ranks of a 96-core node each get 12 threads for their host work
    return current()


@contextlib.contextmanager
def _waiting() -> Iterator[None]:
    """Name the setting when a collective outlasts the group's timeout (gloo, nccl: "timed out")."""
    try:
        yield
    except RuntimeError as err:
        if "timed out" not in str(err).lower() and "timeout" not in str(err).lower():
            raise
        raise CollectiveTimeout(
            f"rank {dist.get_rank()} waited longer than the process-group timeout ({TIMEOUT_SETTING} = "
            f"{_timeout_minutes:g} minutes) for the other ranks; work that rank 0 does alone (export, "
            f"checkpoint cleaning, caches, stores) took longer, or a rank died: raise {TIMEOUT_SETTING} "
            f"if rank 0 is only slow ({err})") from err


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
        with _waiting():
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
        with _waiting():
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
        with _waiting():
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
    with _waiting():
        dist.broadcast_object_list(box, src=src, device=d.device)
    return box[0]


def gather_objects(obj: Any, d: Dist, dst: int = 0) -> list | None:
    """Every rank's ``obj`` in rank order on rank ``dst``; None elsewhere."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * d.world_size if d.rank == dst else None
    with _waiting():
        dist.gather_object(obj, out, dst=dst)  # nccl: pickles travel through cuda.current_device()
    return out


def check_shared(folders: Mapping[str, str | os.PathLike | None], d: Dist) -> None:
    """Fail on every rank unless every rank sees the files rank 0 writes in ``folders`` (None: unset).

    Caches, checkpoints and exports assume one storage for all nodes: a node-local ``output_dir``
    makes the ranks of another node build their own caches, decide resumption apart from node 0
    and hang in its collectives. Rank 0 writes a token of a random name into each folder (setting
    name → folder, as this rank sees it); every rank looks for it, and all learn who missed it.

    Raises:
        SharedStorageError: on every rank, naming the first rank (and host) that cannot see a folder.
    """
    folders = {key: Path(folder) for key, folder in folders.items() if folder}
    token = broadcast_object(secrets.token_hex(8), d)
    name = f".shared-check-{token}.json"
    if d.main:
        for folder in folders.values():
            write_json(folder / name, {"token": token})
    barrier()
    missing = []
    for key, folder in folders.items():
        try:
            seen = (folder / name).read_text(encoding="utf-8")
        except OSError:
            seen = ""
        if token not in seen:
            missing.append((key, str(folder)))
    found = broadcast_object(gather_objects((d.rank, socket.gethostname(), missing), d), d)
    if d.main:  # every rank has looked (the gather): the tokens can go
        for folder in folders.values():
            (folder / name).unlink(missing_ok=True)  # output-layer: the check's own token file
    for rank, host, lost in found:
        if lost:
            key, folder = lost[0]
            raise SharedStorageError(
                f"{key} {folder} is not on storage shared by all nodes: rank {rank} (host {host}) cannot see "
                f"{name}, which rank 0 wrote there; put run.output_dir and data.cache_dir on storage that "
                "every node mounts at the same path")


def leave(ok: bool) -> None:
    """Destroy the process group this process joined, before it exits.

    Left to interpreter shutdown, gloo's worker threads can be torn down while joinable and the
    process aborts ("terminate called without an active exception", exit -6) after its work is
    done — which the launcher reports as a failed run.
    """
    if not dist.is_available() or not dist.is_initialized():
        return
    if ok:
        barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()
