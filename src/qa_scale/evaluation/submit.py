"""Leaderboard files: the Kaggle ``ID,Answer`` CSV of NTU ML HW7, and CMRC 2018 / DRCD JSON.

Writers are registered by kind (``csv``, ``json``); a data format names the kind its
leaderboard takes (``data/formats/``), so ``submit --format auto`` needs no format knowledge here.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path
from typing import Mapping, Sequence

from ..common.outputs import atomic_open, write_json


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


WRITERS: dict[str, Callable[[Mapping[str, str], Sequence[str], str | os.PathLike], Path]] = {
    "csv": write_hw7_csv,
    "json": write_prediction_json,
}


def submission_kind(path: str | os.PathLike, kind: str = "auto", data_default: str | None = None) -> str:
    """The writer kind for ``path``: as given, else from its suffix, else the data format's default."""
    if kind != "auto":
        return kind
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in WRITERS:
        return suffix
    if data_default in WRITERS:
        return data_default
    raise SubmissionError(f"cannot tell the submission format from {path}; pass --format {' or '.join(WRITERS)}")


def write_submission(predictions: Mapping[str, str], test_ids: Sequence[str], path: str | os.PathLike,
                     kind: str = "auto", data_default: str | None = None) -> Path:
    """Write the leaderboard file of ``kind`` (see :func:`submission_kind`)."""
    return WRITERS[submission_kind(path, kind, data_default)](predictions, test_ids, path)


def read_hw7_csv(path: str | os.PathLike) -> dict[str, str]:
    """Read an ``ID,Answer`` submission back (blank lines skipped; bad rows and repeated ids refused).

    Read through the input layer (:func:`qa_scale.common.inputs.read_csv`): a missing file, a
    folder, non-UTF-8 text or broken quoting is an ``InputError`` naming the file.
    """
    from ..common.inputs import read_csv

    rows = read_csv(path)  # quoted fields may hold newlines
    if not rows or rows[0] != ["ID", "Answer"]:
        raise SubmissionError(f"{path}: first row must be ID,Answer")
    out: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise SubmissionError(f"{path}: line {line}: expected 2 columns (ID,Answer), got {len(row)}")
        if row[0] in out:
            raise SubmissionError(f"{path}: line {line}: id {row[0]!r} appears twice")
        out[row[0]] = row[1]
    return out


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """``{id: answer}`` from a JSON object or an ``ID,Answer`` CSV (by the file's suffix).

    JSON is read through :func:`qa_scale.common.inputs.read_json`: invalid JSON, lone surrogates
    (``"\\ud800"``), repeated ids, huge or non-finite numbers and deep nesting are refused naming the file.
    """
    from ..common.inputs import read_json

    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_hw7_csv(path)
    preds = read_json(path, "predictions file")
    if not isinstance(preds, dict):
        raise SubmissionError(f"{path}: expected a JSON object {{id: answer text}}, got {type(preds).__name__}")
    wrong = next((k for k, v in preds.items() if not isinstance(v, str)), None)
    if wrong is not None:
        raise SubmissionError(f"{path}: id {wrong!r}: the answer must be text, got {type(preds[wrong]).__name__}")
    return preds
