"""NTU ML 2023 homework 7: ``{"questions": [...], "paragraphs": [str, ...]}``.

Questions are ``{id, paragraph_id, question_text, answer_text, answer_start, answer_end}`` with
``answer_end`` inclusive; the test split has no answer keys. The Kaggle leaderboard scores exact
accuracy and takes an ``ID,Answer`` CSV.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..records import DataError, RawQuestion, need
from .registry import DataFormat, register


def detect(raw: Any) -> bool:
    return isinstance(raw, dict) and "questions" in raw and "paragraphs" in raw


def read(raw: dict, path: Path) -> Iterable[RawQuestion]:
    paragraphs, questions = raw["paragraphs"], raw["questions"]
    if not isinstance(paragraphs, list) or not isinstance(questions, list):
        raise DataError(f"{path}: 'questions' and 'paragraphs' must be lists")
    for n, q in enumerate(questions):
        qid = str(need(q, "id", path, f"question #{n}"))
        try:
            yield _question(q, qid, paragraphs, path)
        except DataError as err:
            yield RawQuestion(qid, None, None, [], problem=err.problem or str(err))


def _question(q: dict, qid: str, paragraphs: list, path: Path) -> RawQuestion:
    where = f"example {qid}"
    pid = need(q, "paragraph_id", path, where)
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 <= pid < len(paragraphs):
        problem = f"bad paragraph_id: {pid!r} is not an index into {len(paragraphs)} paragraphs"
        raise DataError(f"{path}: {where}: {problem}", problem)
    answers = []
    if "answer_text" in q or "answer_start" in q:
        text = need(q, "answer_text", path, where)
        start = need(q, "answer_start", path, where)
        if "answer_end" in q and isinstance(start, int) and isinstance(text, str):
            if q["answer_end"] != start + len(text) - 1:
                # answer_end is redundant; a disagreement means the start is suspect too.
                start = ("end-mismatch", start, q["answer_end"])
        answers.append((text, start))
    return RawQuestion(qid, need(q, "question_text", path, where), paragraphs[pid], answers)


FORMAT = register(DataFormat(
    name="hw7", description="NTU ML HW7, top-level 'questions' + 'paragraphs'",
    detect=detect, read=read, exact_accuracy=True, submission="csv", answer_key="answer_text"))
