"""One question about one paragraph, and the checks every way in (HTTP, JSONL, stdin, flags) applies.

Kept apart from :mod:`.answering` (which runs models) so that the service's request parsing and
``--help`` import no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.inputs import InputError, check_text


@dataclass(frozen=True)
class Query:
    """One question about one paragraph."""

    context: str
    question: str


def check_text_of(query: Query, where: str) -> None:
    """Refuse a context or question that is not text: not a string, or holding a lone surrogate
    (no tokenizer takes one). Raises :class:`~qa_scale.common.inputs.InputError` naming ``where``."""
    for name in ("context", "question"):
        value = getattr(query, name)
        if not isinstance(value, str):
            raise InputError(f"{where}: the {name} must be a string, not {type(value).__name__}")
        check_text(value, f"{where}: the {name}")


def check_query(query: Query, where: str) -> None:
    """Refuse what cannot be answered: text that is not text, an empty paragraph or question (``where`` names it)."""
    check_text_of(query, where)
    if not query.context.strip():
        raise InputError(f"{where}: the context is empty")
    if not query.question.strip():
        raise InputError(f"{where}: the question is empty")
