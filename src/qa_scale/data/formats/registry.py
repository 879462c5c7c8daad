"""The registry of input formats: how a file is recognised, read, scored and submitted.

A format is one :class:`DataFormat` entry, registered by its module under ``data/formats/``.
Everything else (format detection, ``--format`` choices, whether HW7-style exact accuracy is
scored, which leaderboard file ``submit`` writes by default) reads this registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...common.registry import Registry
from ..records import DataError, RawQuestion


@dataclass(frozen=True)
class DataFormat:
    """One input format.

    Attributes:
        name: what ``--format`` and data reports call it.
        description: one line for ``--help``.
        detect: ``raw JSON → bool``: whether a parsed file is in this format (only the top-level
            structure is looked at).
        read: ``(raw JSON, path) → RawQuestion…``: every question of the file, in file order.
        exact_accuracy: also score exact accuracy (prediction identical to the first reference,
            no normalisation), as the HW7 leaderboard does.
        submission: the leaderboard file kind of this data (``"csv"`` Kaggle ``ID,Answer`` or
            ``"json"`` ``{id: answer}``), when ``submit --format auto`` cannot tell from the suffix.
        answer_key: where answer ``{n}`` (from 0) of a question keeps its text, for messages.
    """

    name: str
    description: str
    detect: Callable[[Any], bool]
    read: Callable[[Any, Path], Iterable[RawQuestion]]
    exact_accuracy: bool = False
    submission: str = "json"
    answer_key: str = "answers[{n}].text"

    def answer_text_key(self, n: int) -> str:
        """The key of answer ``n``'s text in a question of this format (``answers[0].text``)."""
        return self.answer_key.format(n=n)


FORMATS: Registry[DataFormat] = Registry("data format")


def register(fmt: DataFormat) -> DataFormat:
    """Add a format to the registry (its name must be new)."""
    return FORMATS.register(fmt.name, fmt)


def get(name: str) -> DataFormat:
    """The registered format called ``name``."""
    return FORMATS.get(name)


def detect(raw: Any) -> DataFormat:
    """The one registered format that recognises ``raw``."""
    hits = [f for f in FORMATS.values() if f.detect(raw)]
    if len(hits) == 1:
        return hits[0]
    keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
    if not hits:
        known = "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())
        raise DataError(f"unknown format: top-level {keys} fits no registered format ({known})")
    raise DataError(f"ambiguous format: top-level {keys} fits {', '.join(f.name for f in hits)}; pass --format")
