"""What the synthetic sample data holds: sizes, seed, questions per paragraph, paragraph lengths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..common.settings import option

#: Split names produced by :func:`~.paragraphs.generate`, in order.
SPLITS: tuple[str, ...] = ("train", "dev", "test")


def _as_range(value: Any, name: str) -> tuple[int, int]:
    """Validate a ``(min, max)`` pair of ints and return it as a tuple."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a (min, max) pair of integers, got {value!r}")
    lo, hi = value
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be a (min, max) pair of integers, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name}: min must be <= max, got min={lo} > max={hi}")
    return (lo, hi)


@dataclass
class SampleConfig:
    """What :func:`generate` produces. Same configuration => same data, byte for byte."""

    seed: int = option(0, "seed of every random choice; another seed gives different data")
    train_paragraphs: int = option(300, "paragraphs of the train split")
    dev_paragraphs: int = option(60, "paragraphs of the dev split")
    test_paragraphs: int = option(60, "paragraphs of the test split")
    questions_per_paragraph: tuple[int, int] = option(
        (3, 6), "inclusive MIN MAX questions per paragraph; 1 <= MIN <= MAX <= 12")
    paragraph_chars: tuple[int, int] = option(
        (250, 900), "inclusive MIN MAX paragraph length in characters; MIN >= 120, MAX - MIN >= 20")

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        for name in ("train_paragraphs", "dev_paragraphs", "test_paragraphs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        q_lo, q_hi = _as_range(self.questions_per_paragraph, "questions_per_paragraph")
        if q_lo < 1:
            raise ValueError(f"questions_per_paragraph: min must be >= 1, got {q_lo}")
        if q_hi > 12:
            raise ValueError(f"questions_per_paragraph: max must be <= 12, got {q_hi}")
        c_lo, c_hi = _as_range(self.paragraph_chars, "paragraph_chars")
        if c_lo < 120:
            raise ValueError(f"paragraph_chars: min must be >= 120 characters, got {c_lo}")
        if c_hi - c_lo < 20:
            raise ValueError(
                f"paragraph_chars: the range must span at least 20 characters, got ({c_lo}, {c_hi})"
            )
        self.questions_per_paragraph = (q_lo, q_hi)
        self.paragraph_chars = (c_lo, c_hi)

    def split_sizes(self) -> dict[str, int]:
        """Paragraph count of each split, in :data:`SPLITS` order."""
        return {
            "train": self.train_paragraphs,
            "dev": self.dev_paragraphs,
            "test": self.test_paragraphs,
        }
