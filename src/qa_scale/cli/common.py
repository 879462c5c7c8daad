"""What every command shares: the registry of subcommands, output, and common flags."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..common.settings import add_arguments

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


def is_main_rank() -> bool:
    """True on rank 0 of the launcher's ranks (and in a plain process)."""
    return int(os.environ.get("RANK", "0")) == 0


def emit(obj: dict, args: argparse.Namespace, text: str) -> None:
    """Print JSON (``--json``) or the human summary; write ``--out`` JSON when asked."""
    if getattr(args, "out_json", None):
        from ..common.files import write_json
        write_json(args.out_json, obj)
    print(json.dumps(obj, ensure_ascii=False, indent=2) if getattr(args, "json", False) else text)


def data_arguments(p: argparse.ArgumentParser) -> None:
    """The data file and how it is read."""
    from ..data.formats import FORMATS

    p.add_argument("data", type=Path, help="data file (" + "; ".join(f.description for f in FORMATS.values()) + ")")
    p.add_argument("--mode", choices=["strict", "lenient"], default="lenient",
                   help="strict: fail on any problem; lenient: repair or drop and report (default: lenient)")
    p.add_argument("--format", dest="fmt", choices=["auto", *FORMATS], default="auto",
                   help="input format (default: from the file's keys)")


def windows_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The tokenizer and the window settings."""
    from ..data.windows import WindowConfig

    p.add_argument("--tokenizer", required=required,
                   help="vocab.txt, tokenizer/model directory, or hub name (from the local cache when offline)")
    add_arguments(p, WindowConfig, "window settings")


def json_arguments(p: argparse.ArgumentParser, out: bool = True) -> None:
    """``--json`` (print JSON) and, with ``out``, ``--out FILE`` (also write it)."""
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    if out:
        p.add_argument("--out", dest="out_json", type=Path, help="also write the JSON result here")
