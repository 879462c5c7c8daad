"""SQuAD style, as CMRC 2018 and DRCD ship it.

``{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}``, with one or more reference answers per question. Leaderboards take
``{id: answer}`` JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..records import DataError, RawQuestion, need, need_list
from .registry import DataFormat, register


def detect(raw: Any) -> bool:
    return isinstance(raw, dict) and "data" in raw and not ("questions" in raw and "paragraphs" in raw)


def read(raw: dict, path: Path) -> Iterable[RawQuestion]:
    articles = raw["data"]
    if not isinstance(articles, list):
        raise DataError(f"{path}: 'data' must be a list of articles")
    for a, article in enumerate(articles):
        for p, para in enumerate(need_list(article, "paragraphs", path, f"article #{a}")):
            where = f"article #{a} paragraph #{p}"
            context = need(para, "context", path, where)
            for n, qa in enumerate(need_list(para, "qas", path, where)):
                qid = str(need(qa, "id", path, f"{where} question #{n}"))
                try:
                    answers = [(need(ans, "text", path, f"example {qid}"),
                                need(ans, "answer_start", path, f"example {qid}"))
                               for ans in need_list(qa, "answers", path, f"example {qid}", default=[])]
                    yield RawQuestion(qid, need(qa, "question", path, f"example {qid}"), context, answers)
                except DataError as err:
                    yield RawQuestion(qid, None, None, [], problem=err.problem or str(err))


FORMAT = register(DataFormat(
    name="squad", description="SQuAD style (CMRC 2018, DRCD), top-level 'data'",
    detect=detect, read=read, exact_accuracy=False, submission="json"))
