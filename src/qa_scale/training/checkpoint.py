"""Checkpoints that are committed atomically and resumed exactly.

A checkpoint is ``<output_dir>/checkpoints/step-NNNNNNNN/``: DeepSpeed's files (every rank
writes its own shards), one ``rng-rank-RRR.pt`` per rank (torch, CUDA, NumPy and Python RNG
states), and ``COMMITTED.json``, written by rank 0 last, after every rank has finished. A folder
without ``COMMITTED.json`` is torn (a crash while saving): ``--resume auto`` never picks it, and
the previous checkpoint stays usable because nothing is ever written into a committed folder.
Resuming from an earlier checkpoint (or starting afresh) moves the committed ones after it, and the export
and summary of a later step (an abandoned future, or another run), into
``checkpoints/abandoned-after-step-NNNNNNNN-<time>/``, where nothing looks for checkpoints.
"""

from __future__ import annotations

import io
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..common.inputs import read_mapping
from ..common.outputs import atomic_open, ensure_dir, write_json
from ..runtime.distributed import barrier

log = logging.getLogger(__name__)
TAG = re.compile(r"^step-(\d{8})$")
# Crash-test hook. "crash-before-commit:<step>": every rank dies after the shards of <step>, before the
# commit. "crash-mid-shard:<step>:<rank>": that rank dies while DeepSpeed writes its optimizer shard of
# <step>, leaving half the file; the other ranks are alive (the launcher then ends them).
FAULT_ENV = "QA_SCALE_FAULT"


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed as asked."""


def tag_of(step: int) -> str:
    return f"step-{step:08d}"


def committed(ckpt_dir: Path) -> list[tuple[int, str]]:
    """(step, tag) of every committed checkpoint, oldest first."""
    found = []
    for path in Path(ckpt_dir).glob("step-*"):
        m = TAG.match(path.name)
        if m and (path / "COMMITTED.json").exists():
            found.append((int(m.group(1)), path.name))
    return sorted(found)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _die_mid_shard(engine) -> None:
    """Make this rank's next optimizer-shard write stop halfway and kill the process (``FAULT_ENV``).

    DeepSpeed writes a rank's files one after another through ``engine.checkpoint_engine``; files
    before the optimizer shard (ZeRO-3: the rank's model states) are written whole, as in a kill
    that lands in the middle of the save.
    """
    write = engine.checkpoint_engine.save

    def half_then_die(state_dict, path: str):
        if not os.path.basename(path).endswith("optim_states.pt"):
            return write(state_dict, path)
        buffer = io.BytesIO()
        torch.save(state_dict, buffer)  # output-layer: into memory
        with open(path, "wb") as fh:  # output-layer: fault injection (tests) writes half a shard on purpose
            fh.write(buffer.getbuffer()[: buffer.tell() // 2])
            fh.flush()
            os.fsync(fh.fileno())
        os._exit(17)

    engine.checkpoint_engine.save = half_then_die


def save(engine, ckpt_dir: Path, step: int, client_state: dict, rank: int, world_size: int) -> str:
    """Save and commit the checkpoint of ``step`` (a collective call: every rank calls it)."""
    tag = tag_of(step)
    folder = Path(ckpt_dir) / tag
    if (folder / "COMMITTED.json").exists():
        return tag  # already committed (e.g. the final save lands on a periodic one)
    if rank == 0 and folder.exists():
        shutil.rmtree(folder)  # output-layer: a torn earlier attempt at this step, in our checkpoints folder
    barrier()
    if os.environ.get(FAULT_ENV) == f"crash-mid-shard:{step}:{rank}":
        _die_mid_shard(engine)
    # output-layer: DeepSpeed writes each rank's shards itself; COMMITTED.json (below) commits the step
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=False)
    with atomic_open(folder / f"rng-rank-{rank:03d}.pt", binary=True) as fh:
        torch.save(_rng_state(), fh)
    barrier()
    if os.environ.get(FAULT_ENV) == f"crash-before-commit:{step}":
        os._exit(17)  # simulates a kill after the shards, before the commit
    if rank == 0:
        write_json(folder / "COMMITTED.json", {"step": step, "world_size": world_size, **client_state.get("meta", {})})
    barrier()
    return tag


def find(ckpt_dir: Path, resume: str) -> str | None:
    """The tag to resume from: ``"auto"`` → newest committed (None if none); else a folder."""
    if resume == "auto":
        done = committed(ckpt_dir)
        return done[-1][1] if done else None
    path = Path(resume)
    if not (path / "COMMITTED.json").exists():
        raise ResumeError(f"{path} is not a committed checkpoint (no COMMITTED.json): it may be torn")
    if path.parent.resolve() != Path(ckpt_dir).resolve():
        raise ResumeError(f"{path} is not inside this run's checkpoint folder {ckpt_dir}")
    return path.name


# What a run's end writes from its checkpoints, beside ``checkpoints/`` (``Trainer.finish``).
RESULTS = ("model", "adapter", "summary.json")


def abandon_later(ckpt_dir: Path, step: int) -> list[str]:
    """Rank 0, on training from ``step`` (a resume, or 0 for a fresh start): move a later future aside.

    That is the committed checkpoints of later steps, and the export and summary of a later step (or
    of an unknown one: an export without its summary) beside them. Left in place they would pass for
    this run's: :func:`save` skips a step that is already committed, so a redone step would keep the
    abandoned weights, and ``--resume auto``, the best checkpoint and the export could pick them; a run
    that stops or fails before its own export would leave the other run's ``model/`` as its result.
    They are moved (not deleted) into ``abandoned-after-step-NNNNNNNN-<time>/`` beside the checkpoints,
    which :func:`committed`, :func:`prune` and :func:`clean` do not look into. Torn folders of later
    steps stay: nothing picks them, and :func:`save` replaces a torn attempt at its step.

    Returns:
        The checkpoint tags moved, oldest first, then the results moved.
    """
    ckpt_dir = Path(ckpt_dir)
    later = [tag for s, tag in committed(ckpt_dir) if s > step]
    results = _later_results(ckpt_dir.parent, step)
    if not later and not results:
        return []
    stamp, n = time.strftime("%Y%m%d-%H%M%S"), 1
    dest = ckpt_dir / f"abandoned-after-{tag_of(step)}-{stamp}"
    while dest.exists():  # two resumes within a second
        n += 1
        dest = ckpt_dir / f"abandoned-after-{tag_of(step)}-{stamp}-{n}"
    ensure_dir(dest)
    for tag in later:
        (ckpt_dir / tag).rename(dest / tag)  # output-layer: our committed checkpoints, moved aside whole (same disk)
    for name in results:
        (ckpt_dir.parent / name).rename(dest / name)  # output-layer: our run's own results, moved aside whole
    log.warning("training from %s: moved the later checkpoint(s) and results of an abandoned or earlier run (%s) "
                "to %s", tag_of(step), ", ".join(later + results), dest)
    return later + results


def _later_results(out: Path, step: int) -> list[str]:
    """The results in run folder ``out`` that belong to a step after ``step`` (all of them when the summary
    that says their step is missing or unreadable): they are not this run's."""
    present = [name for name in RESULTS if (out / name).exists()]
    if not present:
        return []
    try:
        done = int(read_mapping(out / "summary.json", "run summary")["steps"])
    except (OSError, ValueError, KeyError, TypeError):  # no summary, or not one we can read: their step is unknown
        return present
    return present if done > step else []


def load(engine, ckpt_dir: Path, tag: str, rank: int, world_size: int) -> dict:
    """Restore engine (model, optimizer, scheduler, loss scaler), this rank's RNG; return client state."""
    meta = read_mapping(Path(ckpt_dir) / tag / "COMMITTED.json", "checkpoint commit record")
    if meta["world_size"] != world_size:
        raise ResumeError(
            f"checkpoint {tag} was written by {meta['world_size']} ranks and this run has {world_size}: "
            f"ZeRO shards are per rank, so resume with {meta['world_size']} ranks (converting to a "
            "DeepSpeed universal checkpoint is not supported here)")
    _, client = engine.load_checkpoint(str(ckpt_dir), tag=tag, load_optimizer_states=True,
                                       load_lr_scheduler_states=True)
    if client is None:
        raise ResumeError(f"DeepSpeed could not load checkpoint {tag} from {ckpt_dir}")
    _set_rng_state(torch.load(Path(ckpt_dir) / tag / f"rng-rank-{rank:03d}.pt", weights_only=False))
    return client


def prune(ckpt_dir: Path, keep: int, protect: set[str]) -> None:
    """Rank 0: delete committed checkpoints beyond the newest ``keep`` (except ``protect``) and torn ones
    older than the newest committed."""
    done = committed(ckpt_dir)
    newest = done[-1][0] if done else -1
    for _, tag in done[:-keep]:
        if tag not in protect:
            shutil.rmtree(Path(ckpt_dir) / tag, ignore_errors=True)  # output-layer: pruning our checkpoints
    for path in Path(ckpt_dir).glob("step-*"):
        m = TAG.match(path.name)
        if m and int(m.group(1)) < newest and not (path / "COMMITTED.json").exists():
            shutil.rmtree(path, ignore_errors=True)  # output-layer: a torn checkpoint older than a committed one


def clean(ckpt_dir: Path, keep: set[str]) -> list[str]:
    """Rank 0, after a successful export: delete every checkpoint folder but ``keep``; returns the tags removed."""
    removed = []
    for path in sorted(Path(ckpt_dir).glob("step-*")):
        if TAG.match(path.name) and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)  # output-layer: checkpoints no longer needed after export
            removed.append(path.name)
    return removed
