"""What the service accepts: the limits of one request, and the request body → queries, checked.

Bad input is a :class:`RequestError` with its HTTP status and a message that names the field and
the limit: 400 for a body that is not UTF-8 or not JSON, 413 for a body over ``max_body_bytes``
(refused from its Content-Length before it is read, or while it streams in), 422 for missing or
mistyped fields, empty text and the limits on context length, question length and questions
per request. The body is read and checked here rather than by FastAPI's model binding, so that
its size is bounded before parsing and every problem gets one of these messages.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ..common.settings import option
from .answering import Query


@dataclass(frozen=True)
class Limits:
    """What one request may ask."""

    max_context_chars: int = option(10_000, "longest paragraph, in characters")
    max_question_chars: int = option(500, "longest question, in characters")
    max_questions: int = option(32, "questions per request")
    max_body_bytes: int = option(1_000_000, "largest request body, in bytes")

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1:
            raise ValueError(f"limits must be ≥ 1: {asdict(self)}")


class RequestError(Exception):
    """A request the service refuses: HTTP status, message, details."""

    def __init__(self, status: int, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or []


def parse_request(body: bytes, limits: Limits) -> tuple[list[Query], bool]:
    """A request body → its queries and whether n-best lists are wanted.

    Raises:
        RequestError: 400 (not UTF-8, not JSON), 422 (fields, empty text, limits).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(400, f"request body is not UTF-8 (byte {err.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(400, f"request body is not JSON: {err}") from None
    if not isinstance(raw, dict):
        raise RequestError(422, 'expected a JSON object {"context": ..., "questions": [...]}')
    problems = [f"unknown field {k!r}" for k in raw if k not in ("context", "questions", "nbest")]
    context, questions, nbest = raw.get("context"), raw.get("questions"), raw.get("nbest", True)
    if not isinstance(context, str):
        problems.append("context: required, a string" if context is None else "context: must be a string")
    elif not context.strip():
        problems.append("context: is empty")
    elif len(context) > limits.max_context_chars:
        problems.append(f"context: {len(context):,} characters; the limit is {limits.max_context_chars:,}")
    if not isinstance(questions, list) or not questions:
        problems.append("questions: required, a non-empty list of strings")
    elif len(questions) > limits.max_questions:
        problems.append(f"questions: {len(questions):,} questions; the limit is {limits.max_questions} per request")
    else:
        for n, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                problems.append(f"questions[{n}]: must be a non-empty string")
            elif len(q) > limits.max_question_chars:
                problems.append(f"questions[{n}]: {len(q):,} characters; the limit is {limits.max_question_chars}")
    if not isinstance(nbest, bool):
        problems.append("nbest: must be true or false")
    if problems:
        raise RequestError(422, problems[0] if len(problems) == 1 else f"{len(problems)} problems", problems)
    return [Query(context, q) for q in questions], nbest


async def read_body(request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared):,} bytes; the limit is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over {limit:,} bytes; the limit is {limit:,}")
        chunks.append(chunk)
    return b"".join(chunks)
