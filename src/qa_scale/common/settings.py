"""Typed settings: one dataclass field carries its default, its documentation and its CLI flag.

``option(default, "help")`` declares a field; :func:`add_arguments` turns a dataclass into
``--flags`` (with that help in ``--help``) and :func:`from_arguments` builds the validated
dataclass back from parsed arguments, so a setting has exactly one source of truth.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,  # noqa: A002
           le: float | None = None, lt: float | None = None, io: str | None = None, flag: bool = True) -> Any:
    """A dataclass field with a default, its documentation and (for numbers) its allowed range.

    The range is checked by :func:`check_fields`, which a dataclass calls in ``__post_init__``.
    ``io`` marks a path setting as read (``"input"``) or written (``"file"``, ``"folder:KIND"``,
    ``"workdir:KIND"``) by the command, for the output layer (see :func:`register_io`). ``flag=False``
    keeps a field off the command line (:func:`add_arguments` skips it).
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    metadata = {"help": help, **bounds, **({"io": io} if io else {}), **({} if flag else {"flag": False})}
    return dataclasses.field(default=default, metadata=metadata)


def register_io(parser: argparse.ArgumentParser, dest: str, how: str) -> None:
    """Record in ``parser``'s defaults that flag ``dest`` is a path the command reads or writes.

    ``how``: ``"input"``, ``"file"``, ``"folder:KIND"`` or ``"workdir:KIND"``. The command's
    transaction (``common.outputs``) notes the inputs and declares the outputs before any work.
    """
    parser.set_defaults(_qa_io={**(parser.get_default("_qa_io") or {}), dest: how})


class FieldError(ValueError):
    """A setting of the wrong type or out of its range; the message starts with the field's name."""


_BOUNDS = {"ge": (lambda v, b: v >= b, "≥"), "gt": (lambda v, b: v > b, ">"),
           "le": (lambda v, b: v <= b, "≤"), "lt": (lambda v, b: v < b, "<")}


def literals(annotation: Any) -> tuple:
    """The ``Literal`` values an annotation admits (``int | Literal["auto"]`` → ``("auto",)``)."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(v for a in typing.get_args(annotation) for v in literals(a))
    return ()


def check_fields(obj: Any) -> None:
    """Check every number field of dataclass ``obj``: its type (a bool is not a number), finiteness
    and the range declared with :func:`option`; and every ``Literal`` field: one of its values.

    Raises:
        FieldError: naming the first field that is wrong, its value and what is allowed.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, annotation = getattr(obj, f.name), hints[f.name]
        if value is None or value in literals(annotation):
            continue
        kind = base_type(annotation)
        if typing.get_origin(_without_none(annotation)) is typing.Literal:  # Literal[...] or Optional of one
            choices = ", ".join(map(repr, literals(annotation)))
            raise FieldError(f"{f.name}: must be one of {choices}, got {value!r}")
        if kind not in (int, float):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            raise FieldError(f"{f.name}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # an int is finite (and may exceed a float)
            raise FieldError(f"{f.name}: must be a finite number, got {value!r}")
        for key, (ok, sign) in _BOUNDS.items():
            bound = f.metadata.get(key)
            if bound is not None and not ok(value, bound):
                raise FieldError(f"{f.name}: must be {sign} {bound}, got {value!r}")


def _without_none(annotation: Any) -> Any:
    """``X | None`` → ``X`` (a union of several other types stays as it is)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def base_type(annotation: Any) -> type:
    """``int | None`` → ``int``; ``Literal["a", "b"]`` → ``str``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return base_type(args[0])
    if origin is typing.Literal:
        return type(typing.get_args(annotation)[0])
    return annotation


def unknown_key_message(key: str, valid: Sequence[str], where: str = "", prefix: str = "") -> str | None:
    """``None`` when ``key`` is valid, else "unknown key …; did you mean …?" (or the valid keys)."""
    if key in valid:
        return None
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid: {', '.join(valid)}"
    return f"{where}{': ' if where else ''}unknown key {prefix}{key}{hint}"


def check_keys(keys: Iterable[str], valid: Sequence[str], where: str = "", prefix: str = "") -> None:
    """Raise ValueError for the first key not in ``valid``, suggesting the closest valid one."""
    for key in keys:
        message = unknown_key_message(str(key), valid, where, prefix)
        if message:
            raise ValueError(message)


def _number_or_word(kind: type, words: tuple) -> Callable[[str], Any]:
    """An argparse type for ``int | Literal["auto"]``-style fields: one of ``words`` or a ``kind``."""
    def convert(text: str) -> Any:
        if text in words:
            return text
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(map(repr, words))} or a number, got {text!r}") from None
    convert.__name__ = f"{kind.__name__} or {'/'.join(words)}"
    return convert


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line flags (not those declared with ``flag=False``)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", True)]


def add_arguments(parser: argparse.ArgumentParser, cls: type, group: str | None = None) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (defaults left to the dataclass).

    A default of None is not printed: the field's help says what its absence means.
    """
    target = parser.add_argument_group(group) if group else parser
    hints = typing.get_type_hints(cls)
    for f in flag_fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kind = base_type(hints[f.name])
        plain = _without_none(hints[f.name])
        choices = typing.get_args(plain) if typing.get_origin(plain) is typing.Literal else None
        words = () if choices else literals(hints[f.name])
        if words and kind in (int, float):
            kind = _number_or_word(kind, words)
        default_note = f" (default: {f.default})" if f.default not in (dataclasses.MISSING, None) else ""
        if typing.get_origin(kind) is tuple:  # fixed-size tuple: MIN MAX style
            items = typing.get_args(kind)
            target.add_argument(flag, dest=f.name, type=items[0], nargs=len(items), default=argparse.SUPPRESS,
                                metavar=tuple(n.upper() for n in ("min", "max")[: len(items)]) if len(items) == 2 else None,
                                help=help_text + default_note)
        elif typing.get_origin(kind) is list:  # any number of values
            target.add_argument(flag, dest=f.name, type=typing.get_args(kind)[0], nargs="+",
                                default=argparse.SUPPRESS, help=help_text)
        elif kind is bool:
            target.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text + default_note)
        else:
            target.add_argument(flag, dest=f.name, type=kind, choices=choices,
                                default=argparse.SUPPRESS, help=help_text + default_note)
        if "io" in f.metadata:
            register_io(parser, f.name, f.metadata["io"])


def given(args: argparse.Namespace, cls: type) -> dict:
    """The fields of dataclass ``cls`` that were given as flags (absent flags are not in ``args``)."""
    return {f.name: getattr(args, f.name) for f in flag_fields(cls) if hasattr(args, f.name)}


def from_arguments(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build ``cls`` from the flags the user gave (others keep the dataclass defaults)."""
    hints = typing.get_type_hints(cls)
    values = {k: tuple(v) if isinstance(v, list) and typing.get_origin(base_type(hints[k])) is tuple else v
              for k, v in given(args, cls).items()}
    values.update(overrides)
    obj = cls(**values)
    check_fields(obj)  # types and declared ranges, for every settings class built from flags
    return obj
