"""Atomic writes: a reader (or a crash) never sees half a file or half a folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class OutputError(ValueError):
    """An output path that cannot be written, or a folder that is not ours to replace."""


def _writable(path: Path, make):
    """Create ``path``'s parent folders, then ``make()`` a temporary beside it; OS errors name the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return make()
    except OSError as err:
        raise OutputError(f"{path}: cannot write here ({err.strerror or err})") from None


@contextmanager
def atomic_open(path: str | os.PathLike, newline: str | None = "\n", binary: bool = False) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (UTF-8 text, or bytes with ``binary``);
    move it into place on success.

    The temporary file is fsynced and renamed over ``path`` (atomic on POSIX), and removed
    if the block raises. Parent folders are created.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file path to write")
    fd, tmp = _writable(path, lambda: tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
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


def check_replaceable(out_dir: str | os.PathLike, marker: str) -> None:
    """Refuse to replace ``out_dir`` unless it is absent, empty, or one of ours (holds ``marker``).

    Commands that write a whole folder replace it; a folder the user named that is not
    recognisably an earlier output of the same kind is never deleted.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder; choose another output path")
    if any(out_dir.iterdir()) and not (out_dir / marker).is_file():
        raise OutputError(f"{out_dir} is a folder with other content (no {marker}): refusing to replace it; "
                          "choose a new or empty output folder")


@contextmanager
def staged_dir(out_dir: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """Yield a sibling temporary folder; on success it replaces ``out_dir``, else it is removed.

    A directory cannot be renamed over a non-empty one, so the old folder is first moved
    aside and deleted only once the new one is in place: a failure at any point leaves
    either the old or the new folder under ``out_dir``, never a mixture. With ``marker``, an
    existing ``out_dir`` is replaced only when it holds that file (see :func:`check_replaceable`).
    """
    out_dir = Path(out_dir)
    if marker is not None:
        check_replaceable(out_dir, marker)
    tmp = Path(_writable(out_dir, lambda: tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent)))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; outputs are for sharing
        yield tmp
        fsync_tree(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old)  # onto the empty folder just made: allowed on POSIX
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``: a rename is only a commit once the data is on disk."""
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and parents) or say, naming it, why it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path} exists and is not a folder; choose another output path") from None
    except OSError as err:
        raise OutputError(f"{path}: cannot create this folder ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: this folder is not writable")
    return path
