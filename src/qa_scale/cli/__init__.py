"""The ``qa-scale`` console script: one module per command group, each handler a few lines that call
the library (``data``: check-data, windows, evaluate, submit, vocab, sample-data; ``training``:
train, backbone; ``inference``: predict, ensemble; ``serving``: answer, serve; ``workflows``: demo, compare,
lora-params).

Subcommands import their heavy dependencies lazily so that ``qa-scale --help`` is quick.
"""

from .app import build_parser, main
from .common import COMMANDS

__all__ = ["COMMANDS", "build_parser", "main"]
