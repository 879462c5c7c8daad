"""SQuAD style, as CMRC 2018 and DRCD ship it.

``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}``, with one or more reference answers per question. Leaderboards take
``{id: answer}`` JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..records import DataError, RawQuestion, need
from .registry import DataFormat, register


def detect(raw: Any) -> bool:
    return isinstance(raw, dict) and "data" in raw and not ("questions" in raw and "paragraphs" in raw)


def read(raw: dict, path: Path) -> Iterable[RawQuestion]:
    articles = raw["data"]
    if not isinstance(articles, list):
        raise DataError(f"{path}: 'data' must be a list of articles")
    for a, article in enumerate(articles):
        for p, para in enumerate(need(article, "paragraphs", path, f"article #{a}")):
            context = need(para, "context", path, f"article #{a} paragraph #{p}")
            for n, qa in enumerate(need(para, "qas", path, f"article #{a} paragraph #{p}")):
                qid = str(need(qa, "id", path, f"article #{a} paragraph #{p} question #{n}"))
                where = f"example {qid}"
                try:
                    answers = [(need(ans, "text", path, where), need(ans, "answer_start", path, where))
                               for ans in qa.get("answers", [])]
                    yield RawQuestion(qid, need(qa, "question", path, where), context, answers)
                except DataError as err:
                    yield RawQuestion(qid, None, None, [], problem=err.problem or str(err))


FORMAT = register(DataFormat(
    name="squad", description="SQuAD style (CMRC 2018, DRCD), top-level 'data'",
    detect=detect, read=read, exact_accuracy=False, submission="json"))
