"""One way out, part 2: the writers library code uses (see :mod:`.transaction` for the design).

:func:`atomic_open`, :func:`write_json`, :func:`append_open`, :func:`staged_dir`, :func:`ensure_dir`,
:func:`workdir` and :func:`remove_tree` route a declared output's path to its staging place when a
command's transaction is running, and are atomic per file or folder without one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .transaction import (MARKER, OutputError, Transaction, check_replaceable, current, folder_kind, fsync_tree,
                          note_input, replace_folder, transaction, write_marker)

__all__ = ["MARKER", "OutputError", "Transaction", "append_open", "atomic_open", "check_replaceable", "current",
           "ensure_dir", "is_writer", "note_input", "remove_tree", "staged_dir", "transaction", "workdir",
           "write_json"]


# ---------------------------------------------------------------- the writers library code uses


def _route(path: str | os.PathLike) -> Path:
    tx = current()
    return tx.route(path) if tx is not None else Path(path)


def _writable_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot write here ({err.strerror or err})") from None


@contextmanager
def atomic_open(path: str | os.PathLike, newline: str | None = "\n", binary: bool = False) -> Iterator[IO]:
    """Open ``path`` for writing (UTF-8 text, or bytes with ``binary``): a temporary file beside it,
    fsynced and renamed over it when the block ends without error, removed when it raises.

    Inside a command, a declared output's path is routed to its staging place first.
    """
    named = Path(path)
    path = _route(path)
    if path.is_dir():
        raise OutputError(f"{named} is a folder; give a file path to write")
    _writable_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OutputError(f"{named}: cannot write here ({err.strerror or err})") from None
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline=newline)) as fh:
            os.fchmod(fh.fileno(), 0o644)  # mkstemp makes 0600; outputs are for sharing
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON (Chinese kept readable), atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")
    return Path(path)


@contextmanager
def append_open(path: str | os.PathLike, newline: str | None = "\n") -> Iterator[IO]:
    """Open a log file inside a run folder for appending (logs grow line by line; never staged)."""
    path = _route(path)
    _writable_parent(path)
    with open(path, "a", encoding="utf-8", newline=newline) as fh:
        yield fh


@contextmanager
def staged_dir(out_dir: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield a folder to fill; on success it becomes ``out_dir`` as a whole, else it is removed.

    A declared folder output is already staged by the command's transaction: its staging folder
    is yielded and committed with the command. Otherwise a sibling temporary folder replaces
    ``out_dir`` when the block ends — only when ``out_dir`` is absent, empty or ours of ``kind``;
    the old folder is moved aside first and deleted once the new one is in place, so a failure at
    any point leaves the old or the new folder, never a mixture.
    """
    tx = current()
    if tx is not None and tx.staged(out_dir):
        yield tx.route(out_dir)
        return
    target = _route(out_dir)
    check_replaceable(target, kind)
    _writable_parent(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as err:
        raise OutputError(f"{out_dir}: cannot write here ({err.strerror or err})") from None
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are for sharing
        write_marker(tmp, kind)
        yield tmp
        fsync_tree(tmp)
        replace_folder(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and parents) or say, naming it, why it cannot be written."""
    named, path = Path(path), _route(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{named} exists and is not a folder; choose another output path") from None
    except OSError as err:
        raise OutputError(f"{named}: cannot create this folder ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{named}: this folder is not writable")
    return named


def workdir(path: str | os.PathLike, kind: str) -> Path:
    """Declare run folder ``path`` of ``kind`` (see :meth:`Transaction.workdir`), in a command or not.

    Only the process of global rank 0 checks and creates it; the others write inside it later.
    """
    tx = current() or Transaction("library", writer=is_writer())
    return tx.workdir(path, kind)


def is_writer() -> bool:
    """Whether this process writes outputs: global rank 0 of a launch, or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def remove_tree(path: str | os.PathLike, kind: str | None = None) -> None:
    """Delete folder ``path`` — only when it is ours (of ``kind``, when given): a stale stage of a workflow."""
    target = _route(path)
    if not target.exists():
        return
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
        return
    found = folder_kind(target) if target.is_dir() else None
    if found is None or (kind is not None and found != kind):
        what = f"qa-scale {kind} output" if kind else "qa-scale output"
        raise OutputError(f"{path}: not a {what} folder (no {MARKER}); refusing to delete it")
    shutil.rmtree(target)
