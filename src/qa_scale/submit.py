"""Leaderboard files: the Kaggle ``ID,Answer`` CSV of NTU ML HW7, and CMRC 2018 / DRCD JSON."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping, Sequence

from .files import atomic_open, write_json


class SubmissionError(ValueError):
    """Predictions that do not cover the test set exactly."""


def _check_ids(predictions: Mapping[str, str], test_ids: Sequence[str]) -> None:
    missing = [i for i in test_ids if i not in predictions]
    if missing:
        raise SubmissionError(f"{len(missing)} test id(s) have no prediction, first: {missing[:5]}")
    wanted = set(test_ids)
    extra = [i for i in predictions if i not in wanted]
    if extra:
        raise SubmissionError(f"{len(extra)} prediction id(s) are not in the test set, first: {extra[:5]} "
                              "(predictions and test file do not match)")


def hw7_answer(text: str) -> str:
    """An answer as the HW7 references are written: commas removed (they were stripped there)."""
    return text.replace(",", "")


def write_hw7_csv(predictions: Mapping[str, str], test_ids: Sequence[str], path: str | os.PathLike) -> Path:
    """Write the Kaggle HW7 submission: header ``ID,Answer``, one row per test id, in test order.

    Fields are quoted as RFC 4180 requires (the ``csv`` module's minimal quoting); the file is
    written atomically.

    Raises:
        SubmissionError: a test id lacks a prediction, or a prediction is not a test id.
    """
    _check_ids(predictions, test_ids)
    with atomic_open(path, newline="") as fh:
        writer = csv.writer(fh)  # RFC 4180: CRLF line ends, quotes only where needed
        writer.writerow(["ID", "Answer"])
        for qid in test_ids:
            writer.writerow([qid, hw7_answer(predictions[qid])])
    return Path(path)


def write_prediction_json(predictions: Mapping[str, str], test_ids: Sequence[str], path: str | os.PathLike) -> Path:
    """Write ``{id: answer}`` JSON, the format CMRC 2018 and DRCD evaluators read, in test order."""
    _check_ids(predictions, test_ids)
    return write_json(path, {qid: predictions[qid] for qid in test_ids})


def read_hw7_csv(path: str | os.PathLike) -> dict[str, str]:
    """Read a submission back (for checks and tests)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0] != ["ID", "Answer"]:
        raise SubmissionError(f"{path}: first row must be ID,Answer")
    return {row[0]: row[1] for row in rows[1:]}
