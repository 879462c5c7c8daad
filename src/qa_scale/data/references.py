"""Reference answers for scoring: every answer text of every question of a data file, as the
official evaluators read them (positions not checked), and the format that says how to score them."""

from __future__ import annotations

from pathlib import Path

from . import formats
from .examples import read_records
from .records import DataError


class References(dict):
    """Example id → every reference answer text, in file order; ``format`` says how to score it."""

    def __init__(self, answers: dict[str, list[str]], fmt: formats.DataFormat, path: str):
        super().__init__(answers)
        self.format, self.path = fmt, path

    @property
    def exact_accuracy(self) -> bool:
        """Whether HW7-style exact accuracy is scored for this file."""
        return self.format.exact_accuracy


def load_references(path: str | Path, fmt: str = "auto", skip_bad: bool = False) -> References:
    """Example id → every reference answer text, positions not checked.

    Official evaluators score against all reference texts, including those whose
    ``answer_start`` is wrong or missing, so evaluation reads them here rather than from
    validated examples (which keep only answers they can locate).

    Args:
        path: the data file, or a ``datasets`` dataset (a saved folder, ``hf:NAME``; see
            :func:`~.examples.load`).
        fmt: a registered format name or ``"auto"``.
        skip_bad: leave out records that cannot be read and repeated ids (the first wins), as
            lenient training does; by default they are an error, so that no score or submission
            silently covers fewer questions than the file holds.

    A reference answer whose text is not a string (``"text": 1987``) is never dropped silently:
    it is one of the bad records (an error; with ``skip_bad`` that answer is left out, as
    lenient validation drops it and counts it in its report).

    Raises:
        DataError: an unreadable file, or (unless ``skip_bad``) records without an id's
            question and context, repeated ids, or answer texts that are not strings (naming the
            example id and key), naming up to 10 of them.
    """
    found, records = read_records(path, fmt)
    refs: dict[str, list[str]] = {}
    bad: list[str] = []
    n = 0
    for rec in records:
        n += 1
        if rec.problem is not None or rec.id in refs:
            bad.append(f"example {rec.id}: {rec.problem or 'duplicate id'}")
            continue
        refs[rec.id] = []
        for k, (text, _) in enumerate(rec.answers):
            if isinstance(text, str):
                refs[rec.id].append(text)
            else:
                hint = f' (write it as "{text}")' if isinstance(text, (int, float)) and not isinstance(text, bool) else ""
                bad.append(f"example {rec.id}: {found.answer_text_key(k)} is {text!r}, not a string{hint}")
    if n == 0:
        raise DataError(f"{path}: the file holds no questions")
    if bad and not skip_bad:
        shown = "; ".join(bad[:10]) + (f"; … and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DataError(f"{path}: {len(bad)} question(s) cannot be scored or submitted: {shown}")
    return References(refs, found, str(path))
