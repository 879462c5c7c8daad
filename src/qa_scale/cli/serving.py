"""Commands that ask trained readers questions: ``answer`` (command line) and ``serve`` (HTTP + page)."""

from __future__ import annotations

import argparse
import ipaddress
import re

from ..common.settings import add_arguments, from_arguments
from .common import command, input_arg, output_file

_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _port(text: str) -> int:
    """A TCP port, 1–65535."""
    if not (text.isascii() and text.isdigit()) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def _host(text: str) -> str:
    """An IPv4 or IPv6 address or a host name (whether it is one of this machine's is checked when binding)."""
    try:
        if ":" in text:
            ipaddress.IPv6Address(text)
        elif re.fullmatch(r"[0-9.]+", text):
            ipaddress.IPv4Address(text)
        elif not (len(text) <= 253 and all(_LABEL.fullmatch(p) for p in text.removesuffix(".").split("."))):
            raise ValueError("not a host name")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IP address or a host name, got {text!r}") from None
    return text


def _reader_arguments(p: argparse.ArgumentParser) -> None:
    """The readers, how they are combined, and where they run."""
    from ..ensemble import rules
    from ..inference.options import add_reader_arguments

    input_arg(p, "models", nargs="*", metavar="MODEL",
              help="model directories (runs/x/model), LoRA adapter directories (runs/x/adapter), or one "
                   "ensemble recipe (ensemble/*.yaml); several: their logits are averaged over identical windows")
    input_arg(p, "--recipe", help="ensemble recipe: its members' model directories and weights")
    p.add_argument("--weights", help="comma-separated weights, one per MODEL (default: uniform, or the recipe's)")
    p.add_argument("--combine", choices=list(rules.RULES), help="combination rule (default: the recipe's, else "
                                                                 f"{rules.DEFAULT})")
    add_reader_arguments(p, "the models' training config")


def _options(args: argparse.Namespace):
    """The readers' options, with this process's CPU threads set (before torch loads)."""
    from ..inference.options import ReaderOptions

    options = ReaderOptions.from_arguments(args)
    options.prepare_process()
    return options


def _panel(args: argparse.Namespace, options):
    from ..serving.readers import load_panel

    return load_panel(args.models, options, recipe=args.recipe, weights=args.weights, combine=args.combine)


def _answer_arguments(p: argparse.ArgumentParser) -> None:
    _reader_arguments(p)
    p.add_argument("--context", help="the paragraph")
    input_arg(p, "--context-file", help="a UTF-8 file holding the paragraph")
    p.add_argument("--question", action="append", default=[], help="a question (repeatable); none: read one "
                                                                   "question a line from stdin")
    input_arg(p, "--input", help='JSONL file, one {"context": ..., "question": ...} a line ("id" kept)')
    output_file(p, "--output", help="with --input: write the JSONL answers here (default: stdout); written "
                                    "only when every line is answered, never over one of the inputs")
    p.add_argument("--nbest", action="store_true", help="also give each answer's n-best list")
    p.add_argument("--json", action="store_true", help="print JSON (one object; a JSON line per answer when "
                                                       "interactive)")


@command("answer", _answer_arguments,
         help="ask one or several trained readers (or an ensemble recipe) questions about any paragraph",
         description="Windows, logits, ensemble mean and decoder of `predict`/`ensemble`: the answer, its character "
                     "span, score and probability (n-best with --nbest). Questions from --question, a JSONL file "
                     "(--input), or stdin one a line.")
def answer(args: argparse.Namespace) -> int:
    options = _options(args)
    from ..serving import ask

    context = ask.read_context(args.context, args.context_file)
    records = ask.prepare(context, args.question, args.input)  # every line checked before the models load
    return ask.run(_panel(args, options), ask.Asked(context, args.question, records, args.output, args.nbest,
                                                    args.json))


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    from ..serving.batcher import BatchSettings
    from ..serving.limits import Limits

    _reader_arguments(p)
    p.add_argument("--host", type=_host, default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8000, help="port, 1-65535 (default: 8000; bound before the models "
                                                             "load, so a port in use is refused at once)")
    add_arguments(p, Limits, "limits of one request")
    add_arguments(p, BatchSettings, "batching of concurrent requests")


@command("serve", _serve_arguments,
         help="an HTTP service and web page answering questions with trained readers (FastAPI + uvicorn)",
         description="POST /answer {context, questions[, nbest]} → answers with spans, scores, probabilities and n-best; "
                     "GET /health; GET /info (readers and settings); GET / a page to paste a paragraph and ask. Models "
                     "are loaded once; concurrent requests share forward passes.")
def serve(args: argparse.Namespace) -> int:
    from ..serving.batcher import BatchSettings
    from ..serving.limits import Limits

    options = _options(args)
    from ..serving.app import open_socket
    from ..serving.app import serve as run

    limits, batching = from_arguments(Limits, args), from_arguments(BatchSettings, args)
    sock = open_socket(args.host, args.port)  # a port in use is refused before the models load
    try:
        run(_panel(args, options), args.host, args.port, limits, batching, sock=sock)
    finally:
        sock.close()
    return 0
