"""Raw question records as a file format reads them, before validation, and the error they raise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input that strict validation (or an unreadable file) refuses.

    ``problem`` is the bare description (without file and example id) when the error is
    about one record, so that lenient mode can drop that record and report why.
    """

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem


@dataclass
class RawQuestion:
    """One question as found in a file: nothing checked yet but its id."""

    id: str
    question: Any
    context: Any
    answers: list[tuple[Any, Any]]  # (text, start) as found in the file
    problem: str | None = None  # a missing key: the record cannot become an example


def need(record: Any, key: str, path: Path, where: str) -> Any:
    """``record[key]``, or a :class:`DataError` naming the file, the place and the missing key."""
    if not isinstance(record, dict):
        problem = f"not an object: expected an object, got {type(record).__name__}"
        raise DataError(f"{path}: {where}: {problem}", problem)
    if key not in record:
        raise DataError(f"{path}: {where}: missing key {key!r}", f"missing key: {key!r}")
    return record[key]


def need_list(record: Any, key: str, path: Path, where: str, default: Any = ...) -> list:
    """``record[key]`` when it is a list (``default`` when the key is absent and a default is given)."""
    if default is not ... and isinstance(record, dict) and key not in record:
        return default
    value = need(record, key, path, where)
    if not isinstance(value, list):
        problem = f"bad {key}: expected a list, got {type(value).__name__ if value is not None else 'null'}"
        raise DataError(f"{path}: {where}: {problem}", problem)
    return value
