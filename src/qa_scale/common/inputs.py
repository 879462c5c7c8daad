"""One way in: every file, argument, stdin line and request body is read here.

Every error is an :class:`InputError` whose message starts with where the bad input is — the file
(and line, or the key path inside a JSON/YAML document), ``<stdin> line N``, ``argument --flag`` or
``request body`` — so that commands exit 2 naming it and the service answers 4xx. Checked at the
boundary, for every format alike:

- encoding: UTF-8, a leading BOM accepted (and dropped) for every text format;
- lone UTF-16 surrogates (``"\\ud800"`` escapes in JSON/YAML, undecodable bytes in arguments):
  refused with the key path and character position, so no later tokenizer sees them;
- nesting deeper than :data:`MAX_DEPTH`, numbers longer than :data:`MAX_DIGITS` digits, non-finite
  numbers (``NaN``, ``Infinity``, ``1e999``) and repeated keys in one JSON object;
- truncated or corrupt ``.npy`` and ``.safetensors`` files.

Every local path read through this module is also noted as an input of the running command (see
:mod:`.outputs`), so that no output of the same command can be, or lie inside, something it read.

Written by hand because the standard readers (``json``, ``yaml``, ``numpy``, ``safetensors``)
raise errors without the file's name, accept surrogates and recurse without a bound.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import transaction

MAX_DEPTH = 100
"""Deepest nesting of lists and objects any input may have (data files need about 6)."""
MAX_DIGITS = 100
"""Longest integer or number literal, in characters (Python refuses past 4300 anyway)."""


_SURROGATE = re.compile("[\ud800-\udfff]")


class InputError(ValueError):
    """Bad input: the message starts with the file (and line, key or id), the argument or the body."""


def _note(path: Path) -> None:
    transaction.note_input(path)  # the command's transaction keeps the paths it read


# ---------------------------------------------------------------- text


def decode(data: bytes, where: str) -> str:
    """UTF-8 bytes (a leading BOM dropped) → text, or an error naming ``where`` and the line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(f"{where}: not UTF-8 text (line {line}, byte {err.start}: {err.reason}); "
                         "save it as UTF-8") from None


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """The bytes of file ``path``; a missing file, a folder or an unreadable one is named."""
    path = Path(path)
    _note(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a {what}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """UTF-8 text of ``path`` (BOM dropped), or an :class:`InputError` naming it."""
    return decode(read_bytes(path, what), str(path))


def check_text(text: str, where: str) -> str:
    """``text`` itself, or an error when it holds a lone surrogate (not Unicode; no tokenizer takes it)."""
    found = _SURROGATE.search(text)
    if found:
        raise InputError(f"{where}: invalid text: a lone surrogate U+{ord(found.group()):04X} at character "
                         f"{found.start()}")
    return text


# ---------------------------------------------------------------- JSON and YAML documents


def _key_path(parts: list) -> str:
    """``data[0].paragraphs[2].qas`` (keys with lone surrogates escaped, so the message prints)."""
    def show(key) -> str:
        return str(key).encode("utf-8", "backslashreplace").decode("utf-8")

    return "".join(f"[{p}]" if isinstance(p, int) else (f".{show(p)}" if i else show(p))
                   for i, p in enumerate(parts)) or "top level"


def check_document(obj: Any, where: str) -> Any:
    """Walk a parsed document without recursion: depth, surrogates in keys and strings, finite numbers."""
    stack: list[tuple[Any, list, int]] = [(obj, [], 1)]
    while stack:
        node, parts, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_DEPTH:
                raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels at {_key_path(parts)}")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, value in items:
                if isinstance(key, str):
                    check_text(key, f"{where}: key {_key_path(parts + [key])}")
                stack.append((value, parts + [key], depth + 1))
        elif isinstance(node, str):
            check_text(node, f"{where}: {_key_path(parts)}")
        elif isinstance(node, float) and not math.isfinite(node):
            raise InputError(f"{where}: {_key_path(parts)}: not a finite number ({node})")
    return obj


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


class _Refused(ValueError):
    """A problem found while the JSON parser runs (re-raised with the place)."""


def _number(text: str) -> str:
    if len(text) > MAX_DIGITS:
        raise _Refused(f"a number of {len(text)} characters (the limit is {MAX_DIGITS})")
    return text


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not a number JSON allows")


def parse_json(text: str, where: str) -> Any:
    """JSON text → a checked document (see :func:`check_document`), or an error naming ``where``."""
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_constant,
                         parse_int=lambda s: int(_number(s)), parse_float=lambda s: float(_number(s)))
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except _Refused as err:
        raise InputError(f"{where}: {err}") from None
    except RecursionError:
        raise InputError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    return check_document(obj, where)


def parse_json_bytes(data: bytes, where: str) -> Any:
    """UTF-8 JSON bytes (a request body, a stdin line) → a checked document."""
    return parse_json(decode(data, where), where)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A JSON file → a checked document; every problem names the file (and line or key)."""
    text = read_text(path, what)
    if not text.strip():
        raise InputError(f"{path}: empty file, expected JSON")
    return parse_json(text, str(path))


def iter_jsonl(text: str, where: str) -> Iterator[tuple[int, Any]]:
    """(line number, document) for each non-blank line of JSON-lines ``text``."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, parse_json(line, f"{where} line {n}")


def parse_yaml(text: str, where: str) -> Any:
    """YAML text (safe loader) → a checked document, or an error naming ``where`` and the line."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        """Anchors and aliases refused: ten levels of ten aliases expand to 10¹⁰ nodes (a "billion laughs")."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted here", mark)
            return super().compose_node(parent, index)

    try:
        obj = yaml.load(text, Loader=NoAliases)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise InputError(f"{where}: invalid YAML{at}: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise InputError(f"{where}: invalid YAML: {err}") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer past Python's digit limit
        raise InputError(f"{where}: unreadable value: {err}") from None
    return check_document(obj, where)


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """A YAML file → a checked document (an empty file is ``None``)."""
    return parse_yaml(read_text(path, what), str(path))


def read_mapping(path: str | os.PathLike, what: str = "settings file") -> dict:
    """A YAML (or JSON) file whose top level must be a mapping; empty → ``{}``."""
    path = Path(path)
    obj = read_json(path, what) if path.suffix == ".json" else read_yaml(path, what)
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a mapping of settings at the top level, got {type(obj).__name__}")
    return obj


def read_csv(path: str | os.PathLike) -> list[list[str]]:
    """Rows of a UTF-8 CSV file (quoted fields may hold newlines), checked for surrogates."""
    text = read_text(path, "CSV file")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise InputError(f"{path}: invalid CSV: {err}") from None
    return rows


# ---------------------------------------------------------------- arrays and tensors


def load_npy(path: str | os.PathLike, mmap: bool = False):
    """A ``.npy`` array (no pickles), or an error naming the file when it is truncated or corrupt."""
    import numpy as np

    path = Path(path)
    _note(path)
    if not path.is_file():
        raise InputError(f"{path}: array file not found")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as err:
        raise InputError(f"{path}: damaged array file ({err})") from None
    return array


def check_safetensors(path: str | os.PathLike) -> dict[str, dict]:
    """Read a ``.safetensors`` header and check the file holds every byte it declares.

    Returns:
        tensor name → ``{"dtype", "shape", "data_offsets"}``.
    """
    path = Path(path)
    _note(path)
    try:  # the header only: the tensors (gigabytes for a large reader) are checked by their extent
        with open(path, "rb") as fh:
            total = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            (size,) = struct.unpack("<Q", prefix) if len(prefix) == 8 else (None,)
            if size is None or size > total - 8:
                raise InputError(f"{path}: damaged weights file ({total} bytes; not a safetensors header)")
            raw = fh.read(size)
    except FileNotFoundError:
        raise InputError(f"{path}: weights file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a weights file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    header = parse_json_bytes(raw, f"{path} header")
    if not isinstance(header, dict):
        raise InputError(f"{path}: damaged weights file (header is not an object)")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise InputError(f"{path}: damaged weights file (tensor {name!r} has no data offsets)")
        end = max(end, offsets[1])
    if 8 + size + end > total:
        raise InputError(f"{path}: truncated weights file ({total} bytes; its tensors need {8 + size + end})")
    return header


# ---------------------------------------------------------------- arguments and stdin


def check_arguments(values: dict[str, Any]) -> None:
    """Refuse an argument whose text is not valid Unicode (bytes the terminal could not decode)."""
    for dest, value in values.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, (str, os.PathLike)):
                flag = "--" + dest.replace("_", "-") if not dest.startswith("_") else dest
                check_text(os.fspath(item), f"argument {flag}")


def stdin_lines(stream: io.BufferedIOBase | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of standard input, decoded as UTF-8 (errors name the line)."""
    import sys

    stream = stream if stream is not None else sys.stdin.buffer
    for n, raw in enumerate(stream, 1):
        yield n, decode(raw, f"<stdin> line {n}").rstrip("\r\n")
