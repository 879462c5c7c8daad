"""One way out, part 1: the transaction of a command — its declared outputs, its inputs, the commit.

Every file and folder a command writes is staged, then committed at once on success.

A command runs inside a :class:`Transaction` (``cli.app.main`` opens one around every handler).
Its outputs are declared before any work — from the flags declared with ``output_file`` /
``output_folder`` (see ``cli.common``), or by the handler for outputs named in a recipe — and:

- **file** outputs are written to a hidden staging file beside them and renamed into place only
  when the command has succeeded; an existing file is never truncated first;
- **folder** outputs are built in a hidden staging folder and replace the old folder as a whole,
  only when the old one is absent, empty or holds our marker of the same kind;
- **workdir** outputs (training runs, the demo) are written in place — they hold checkpoints a
  resume needs — so they are only accepted when new, empty or ours of the same kind.

No output may be, lie inside, or contain a path the command reads (links resolved): the input
layer (:mod:`.inputs`) notes every path it reads here, and a clash is refused whichever of the two
comes first, before the commit. A failure, SIGINT or SIGTERM removes the staging and leaves the
old outputs untouched; signals are held back while the commit renames. Library code writes only
through :func:`atomic_open`, :func:`write_json`, :func:`staged_dir` and :func:`ensure_dir`, which
route a declared output's path to its staging place (``tests/test_layout.py`` enforces this).

Without a transaction (library use), the same writers are atomic per file or folder.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

MARKER = ".qa-scale-output.json"
"""File in every folder this layer creates: which kind of output it is (``{"kind": ...}``)."""


class OutputError(ValueError):
    """An output path that cannot be written, is an input, or is a folder that is not ours."""


_current: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("qa_scale_outputs", default=None)


def current() -> Transaction | None:
    """The running command's transaction (``None`` outside a command)."""
    return _current.get()


def note_input(path: str | os.PathLike, via: str | None = None) -> None:
    """Record that the running command reads ``path`` (no-op outside a command).

    ``via`` says where the path was given when that is not the command line, e.g.
    ``"data.dev_file in recipe.yaml"``: a refusal that names the input names it too.
    """
    tx = current()
    if tx is not None:
        tx.add_input(path, via)


def _resolve(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and parent in child.parents


def folder_kind(path: Path) -> str | None:
    """The kind our marker in folder ``path`` names, or ``None`` when it has none."""
    try:
        return str(json.loads((path / MARKER).read_text(encoding="utf-8")).get("kind"))
    except (OSError, ValueError, AttributeError):
        return None


def check_replaceable(out_dir: str | os.PathLike, kind: str) -> None:
    """Refuse ``out_dir`` unless it is absent, empty, or ours of this ``kind`` (holds :data:`MARKER`)."""
    out_dir = Path(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is not a folder; choose another output path")
    if not any(out_dir.iterdir()):
        return
    found = folder_kind(out_dir)
    if found is None:
        raise OutputError(f"{out_dir} is a folder with other content (not written by qa-scale): refusing to "
                          "write into it; choose a new or empty output folder")
    if found != kind:
        raise OutputError(f"{out_dir} holds a qa-scale {found} output, not a {kind} output: refusing to replace "
                          "it; choose a new or empty output folder")


def write_marker(folder: Path, kind: str) -> None:
    with open(folder / MARKER, "w", encoding="utf-8") as fh:
        json.dump({"kind": kind}, fh)
        fh.write("\n")


@dataclass
class _Output:
    final: Path  # as the user named it
    real: Path  # resolved
    how: str  # "file" | "folder" | "workdir"
    kind: str = ""
    stage: Path | None = None  # where a staged output is written until the commit


@dataclass
class Transaction:
    """The outputs and inputs of one command; see the module docstring.

    Args:
        command: the command's name, for messages.
        writer: whether this process writes outputs (rank 0); other ranks only check paths.
    """

    command: str
    writer: bool = True
    inputs: list[Path] = field(default_factory=list)
    outputs: list[_Output] = field(default_factory=list)
    made_dirs: list[Path] = field(default_factory=list)
    via: dict[Path, str] = field(default_factory=dict)  # input → where it was given (a recipe key), if not argv

    # ------------------------------------------------------------ declaring

    def add_input(self, path: str | os.PathLike, via: str | None = None) -> None:
        """Note an input (``via``: where it was given); an output already declared that clashes with it is refused."""
        real = _resolve(path)
        if real in self.inputs:
            return
        if via:
            self.via[real] = via
        for out in self.outputs:
            self._check(out, real, Path(path))
        self.inputs.append(real)

    def _check(self, out: _Output, inp: Path, path: Path) -> None:
        named = f"{path} ({self.via[inp]})" if inp in self.via else str(path)
        same = out.real == inp or (inp.exists() and out.real.exists() and os.path.samefile(inp, out.real))
        if same:
            raise OutputError(f"{out.final} is also an input of this command ({named}); choose another output path")
        if _inside(out.real, inp):
            raise OutputError(f"{out.final} lies inside {named}, an input of this command; choose another output path")
        if _inside(inp, out.real) and out.how != "workdir":  # a run folder may read its own earlier files
            raise OutputError(f"{out.final} would replace a folder holding {named}, an input of this command; "
                              "choose another output path")

    def _declare(self, path: str | os.PathLike, how: str, kind: str = "") -> _Output:
        out = _Output(Path(path), _resolve(path), how, kind)
        for existing in self.outputs:
            if existing.real == out.real:
                if (existing.how, existing.kind) == (how, kind) == ("workdir", kind):
                    return existing  # a run folder the command and then its library code declare
                raise OutputError(f"{out.final} is named for two outputs of this command; give each its own path")
            if ((_inside(out.real, existing.real) and existing.how != "workdir")
                    or (_inside(existing.real, out.real) and how != "workdir")):
                raise OutputError(f"{out.final} and {existing.final}: one output lies inside the other")
        for inp in self.inputs:
            self._check(out, inp, inp)
        self.outputs.append(out)
        return out

    def _mkdir_parents(self, path: Path) -> None:
        missing = [p for p in [path, *path.parents] if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise OutputError(f"{path} exists and is not a folder; choose another output path") from None
        except OSError as err:
            raise OutputError(f"{path}: cannot create this folder ({err.strerror or err})") from None
        self.made_dirs += missing

    def file(self, path: str | os.PathLike) -> Path:
        """Declare output file ``path``: written to a staging file, renamed into place at the commit.

        A file inside a folder output declared earlier is written into that folder's staging.
        """
        real = _resolve(path)
        if any(_inside(real, o.real) and o.how == "folder" for o in self.outputs):
            return Path(path)
        out = self._declare(path, "file")
        if out.real.is_dir():
            raise OutputError(f"{out.final} is a folder; give a file path to write")
        if self.writer and out.stage is None:
            self._mkdir_parents(out.real.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{out.real.name}.", suffix=".qa-scale-stage", dir=out.real.parent)
            except OSError as err:
                raise OutputError(f"{out.final}: cannot write here ({err.strerror or err})") from None
            os.close(fd)
            out.stage = Path(tmp)
        return out.final

    def folder(self, path: str | os.PathLike, kind: str) -> Path:
        """Declare output folder ``path`` of ``kind``: built in a staging folder, replacing the old one at the commit."""
        out = self._declare(path, "folder", kind)
        check_replaceable(out.real, kind)
        if self.writer and out.stage is None:
            self._mkdir_parents(out.real.parent)
            try:
                out.stage = Path(tempfile.mkdtemp(prefix=f".{out.real.name}.", suffix=".qa-scale-stage",
                                                  dir=out.real.parent))
                os.chmod(out.stage, 0o755)  # mkdtemp makes 0700; outputs are for sharing
                write_marker(out.stage, kind)
            except OSError as err:
                raise OutputError(f"{out.final}: cannot write here ({err.strerror or err})") from None
        return out.final

    def workdir(self, path: str | os.PathLike, kind: str) -> Path:
        """Declare run folder ``path`` of ``kind``, written in place: accepted when new, empty or ours."""
        out = self._declare(path, "workdir", kind)
        if self.writer:
            check_replaceable(out.real, kind)
            self._mkdir_parents(out.real)
            if not os.access(out.real, os.W_OK | os.X_OK):
                raise OutputError(f"{out.final}: this folder is not writable")
            if folder_kind(out.real) is None:
                write_marker(out.real, kind)
        return out.final

    # ------------------------------------------------------------ writing

    def route(self, path: str | os.PathLike) -> Path:
        """Where a write to ``path`` goes: its staging place, or ``path`` itself inside a run folder.

        Raises:
            OutputError: ``path`` is no declared output of this command (a writer that bypassed the
                declarations), or a non-writing rank tries to write a staged output.
        """
        real = _resolve(path)
        for out in self.outputs:
            if out.stage is not None and (real == out.stage.resolve() or _inside(real, out.stage.resolve())):
                return Path(path)  # already inside a staging place (e.g. the folder staged_dir yielded)
        for out in self.outputs:
            if real == out.real or _inside(real, out.real):
                if out.how == "workdir":
                    return Path(path)
                if out.stage is None:
                    raise OutputError(f"{path}: only rank 0 writes the outputs of `{self.command}`")
                return out.stage / real.relative_to(out.real) if real != out.real else out.stage
        raise OutputError(f"{path}: not an output declared by `qa-scale {self.command}` (a bug: every output "
                          "must be declared before it is written)")

    def staged(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is a declared file or folder output (already staged, committed at the end)."""
        real = _resolve(path)
        return any(out.real == real and out.how != "workdir" for out in self.outputs)

    # ------------------------------------------------------------ ending

    def commit(self) -> None:
        """Move every staged output into place; SIGINT/SIGTERM wait until the renames are done."""
        held = {signal.SIGINT, signal.SIGTERM}
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            for out in self.outputs:
                if out.stage is None:
                    continue
                if out.how == "file":
                    _fsync(out.stage)
                    os.chmod(out.stage, 0o644)
                    os.replace(out.stage, out.real)
                else:
                    fsync_tree(out.stage)
                    replace_folder(out.stage, out.real)
                out.stage = None
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def abort(self) -> None:
        """Remove every staging file and folder, and folders this command created that stayed empty."""
        for out in self.outputs:
            if out.stage is not None:
                if out.stage.is_dir():
                    shutil.rmtree(out.stage, ignore_errors=True)
                else:
                    out.stage.unlink(missing_ok=True)
                out.stage = None
            elif out.how == "workdir" and out.real in self.made_dirs:
                leftover = [p.name for p in out.real.iterdir()] if out.real.is_dir() else []
                if leftover == [MARKER]:
                    (out.real / MARKER).unlink()
        for made in sorted(self.made_dirs, key=lambda p: len(p.parts), reverse=True):  # children first
            try:
                made.rmdir()
            except OSError:
                pass


@contextmanager
def transaction(command: str, writer: bool = True) -> Iterator[Transaction]:
    """Run a command's body in a transaction: committed when the body returns, aborted when it raises."""
    tx = Transaction(command, writer)
    token = _current.set(tx)
    try:
        yield tx
        tx.commit()
    except BaseException:
        tx.abort()
        raise
    finally:
        _current.reset(token)


def replace_folder(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``; an old ``final`` is moved aside first and deleted once replaced."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".qa-scale-old", dir=final.parent))
        os.replace(final, old)  # onto the empty folder just made: allowed on POSIX
        try:
            os.replace(new, final)
        except BaseException:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root``: a rename is only a commit once the data is on disk."""
    for path in [*root.rglob("*"), root]:
        _fsync(path)
