"""The ``qa-scale`` parser and entry point: every registered command, errors as exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys

from . import data, inference, serving, training, workflows  # noqa: F401 - each module registers its commands
from .common import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa-scale", description=(
        "Train, ensemble and submit Chinese extractive QA models. Run `qa-scale COMMAND --help` for each command."))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The deepspeed launcher puts --local_rank=N before the subcommand; LOCAL_RANK is read instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    ok = False
    try:
        code = COMMANDS[args.command].handler(args)
        ok = True
        return code
    except (ValueError, RuntimeError) as err:
        print(f"qa-scale {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file that cannot be read or written: name it, no traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"qa-scale {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # only commands that ran a model joined a group
            from ..runtime import distributed
            distributed.leave(ok)
