"""What every command shares: the registry of subcommands, output, and common flags."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..common.settings import add_arguments, register_io

Handler = Callable[[argparse.Namespace], int]


@dataclass
class Command:
    """One subcommand: its flags (``arguments``) and what it does (``handler``)."""

    name: str
    help: str
    description: str | None
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler


COMMANDS: dict[str, Command] = {}


def command(name: str, arguments: Callable[[argparse.ArgumentParser], None], help: str,  # noqa: A002
            description: str | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of subcommand ``name``."""
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, help, description, arguments, fn)
        return fn
    return register


def _dest(p: argparse.ArgumentParser, names: tuple[str, ...], kw: dict) -> str:
    action = p.add_argument(*names, type=Path, **kw)
    return action.dest


def input_arg(p: argparse.ArgumentParser, *names: str, **kw) -> None:
    """A path the command reads: noted before any work, so that no output of the command can be it."""
    register_io(p, _dest(p, names, kw), "input")


def output_file(p: argparse.ArgumentParser, *names: str, **kw) -> None:
    """A file the command writes: staged, renamed into place only when the command succeeds."""
    register_io(p, _dest(p, names, kw), "file")


def output_folder(p: argparse.ArgumentParser, *names: str, kind: str, **kw) -> None:
    """A folder of ``kind`` the command writes as a whole: staged, replacing only a folder of ours."""
    register_io(p, _dest(p, names, kw), f"folder:{kind}")


def output_workdir(p: argparse.ArgumentParser, *names: str, kind: str, **kw) -> None:
    """A run folder of ``kind`` written in place (checkpoints, stages): accepted when new, empty or ours."""
    register_io(p, _dest(p, names, kw), f"workdir:{kind}")


def declare_io(args: argparse.Namespace, tx) -> None:
    """Note every input flag, then declare every output flag, in ``tx`` (the command's transaction)."""
    spec = getattr(args, "_qa_io", None) or {}
    for want in ("input", "output"):
        for dest, how in spec.items():
            if (how == "input") != (want == "input"):
                continue
            value = getattr(args, dest, None)
            for path in value if isinstance(value, (list, tuple)) else [value]:
                if path is None:
                    continue
                if how == "input":
                    tx.add_input(path)
                elif how == "file":
                    tx.file(path)
                else:
                    what, kind = how.split(":")
                    (tx.folder if what == "folder" else tx.workdir)(path, kind)


def positive_int(text: str) -> int:
    """An argparse type: a whole number ≥ 1 (a bad value exits 2 naming the flag)."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1, got {text!r}")
    return int(text)


def is_main_rank() -> bool:
    """True on rank 0 of the launcher's ranks (and in a plain process)."""
    return int(os.environ.get("RANK", "0")) == 0


def emit(obj: dict, args: argparse.Namespace, text: str) -> None:
    """Print JSON (``--json``) or the human summary; write ``--out`` JSON when asked."""
    if getattr(args, "out_json", None):
        from ..common.outputs import write_json
        write_json(args.out_json, obj)
    print(json.dumps(obj, ensure_ascii=False, indent=2) if getattr(args, "json", False) else text)


def data_arguments(p: argparse.ArgumentParser) -> None:
    """The data file and how it is read."""
    from ..data.formats import FORMATS

    input_arg(p, "data", help="data file (" + "; ".join(f.description for f in FORMATS.values()) + ")")
    p.add_argument("--mode", choices=["strict", "lenient"], default="lenient",
                   help="strict: fail on any problem; lenient: repair or drop and report (default: lenient)")
    p.add_argument("--format", dest="fmt", choices=["auto", *FORMATS], default="auto",
                   help="input format (default: from the file's keys)")


def windows_arguments(p: argparse.ArgumentParser, required: bool = True, config: type | None = None) -> None:
    """The tokenizer and the window settings (the fields of ``config``, default :class:`WindowConfig`)."""
    from ..data.windows import WindowConfig

    p.add_argument("--tokenizer", required=required,
                   help="vocab.txt, tokenizer/model directory, or hub name (from the local cache when offline)")
    add_arguments(p, config or WindowConfig, "window settings")


def json_arguments(p: argparse.ArgumentParser, out: bool = True) -> None:
    """``--json`` (print JSON) and, with ``out``, ``--out FILE`` (also write it)."""
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    if out:
        output_file(p, "--out", dest="out_json", help="also write the JSON result here")
