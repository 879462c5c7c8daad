"""The ``qa-scale`` parser and entry point: every registered command, errors as exit status 2."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import data, inference, serving, training, workflows  # noqa: F401 - each module registers its commands
from ..common.inputs import check_arguments
from ..common.outputs import transaction
from .common import COMMANDS, declare_io, is_main_rank


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


def _on_sigterm(signum, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough: a second must not cut the clean-up short
    raise SystemExit(128 + signum)  # unwinds like an error: the transaction removes its staging


def _error(text: str) -> None:
    """Print an error on stderr; a lone surrogate echoed from bad input is shown as ``\\udXXX``, not raised."""
    print(text.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr)


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that recipe overrides may also follow options.

    argparse takes a command's positionals in one run: ``train R --resume auto k=v`` leaves ``k=v``
    over. For a command with ``overrides``, ``KEY=VALUE`` words left over are overrides too; anything
    else is refused as ``parse_args`` refuses it (exit 2, naming the arguments).
    """
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and \
            all("=" in e and not e.startswith("-") for e in extra):
        args.overrides += extra
    elif extra:
        parser.parse_args(argv)  # exits 2 naming the unrecognised arguments
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one command in a transaction (see ``common.outputs``); bad input or output paths exit 2."""
    args = parse_arguments(build_parser(), argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    ok = False
    try:
        check_arguments({k: v for k, v in vars(args).items() if not k.startswith("_")})
        with transaction(args.command, writer=is_main_rank()) as tx:
            declare_io(args, tx)
            code = COMMANDS[args.command].handler(args)
        ok = True
        return code
    except (ValueError, RuntimeError) as err:
        _error(f"qa-scale {args.command}: error: {err}")
        return 2
    except OSError as err:  # a file that cannot be read or written: name it, no traceback
        where = f"{err.filename}: " if err.filename else ""
        _error(f"qa-scale {args.command}: error: {where}{err.strerror or err}")
        return 2
    except KeyboardInterrupt:
        print(f"qa-scale {args.command}: interrupted; outputs left as they were", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        # Only commands that ran a model joined a group. No import here: a signal that landed while
        # torch was importing leaves it half-initialised, and importing it again would raise.
        distributed = sys.modules.get("qa_scale.runtime.distributed")
        if distributed is not None:
            distributed.leave(ok)
