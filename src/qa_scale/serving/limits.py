"""What the service accepts: the limits of one request, and the request body → queries, checked.

Bad input is a :class:`RequestError` with its HTTP status and a message that names the field and
the limit: 400 for a body the input layer refuses (not UTF-8, not JSON, a lone surrogate, nesting
past its depth limit, a number too long or not finite, a key given twice — see
:func:`qa_scale.common.inputs.parse_json_bytes`), 413 for a body over ``max_body_bytes`` (refused
from its Content-Length before it is read, or while it streams in), 415 for a body sent as
another media type than JSON, 422 for missing or mistyped fields, empty text and the limits on
context length, question length and questions per request. The body is read and checked here
rather than by FastAPI's model binding, so that its size is bounded before parsing and every
problem gets one of these messages; :func:`request_schema` describes the same rules as a JSON
schema for the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..common.inputs import InputError, parse_json_bytes
from ..common.settings import option
from .query import Query

FIELDS = ("context", "questions", "nbest")
MAX_DETAILS = 20  # problems listed in one error at most
_SPACE = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
NOT_ONLY_SPACE = f"[^{_SPACE}]"
"""JSON-schema pattern of text that is not only white space (white space as ``str.strip`` sees it)."""


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
        RequestError: 400 (what the input layer refuses), 422 (fields, empty text, limits).
    """
    if not body.strip():
        raise RequestError(400, 'request body: empty; send a JSON object {"context": ..., "questions": [...]}')
    try:
        raw = parse_json_bytes(body, "request body")
    except InputError as err:
        raise RequestError(400, str(err)) from None
    if not isinstance(raw, dict):
        raise RequestError(422, 'request body: expected a JSON object {"context": ..., "questions": [...]}')
    problems = [f"unknown field {k[:40]!r}" for k in raw if k not in FIELDS]
    context, questions, nbest = raw.get("context"), raw.get("questions"), raw.get("nbest", True)
    if not isinstance(context, str):
        problems.append("context: required, a string" if "context" not in raw else "context: must be a string")
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
        more = [f"… and {len(problems) - MAX_DETAILS} more"] if len(problems) > MAX_DETAILS else []
        raise RequestError(422, problems[0] if len(problems) == 1 else f"{len(problems)} problems",
                           problems[:MAX_DETAILS] + more)
    return [Query(context, q) for q in questions], nbest


def request_schema(limits: Limits) -> dict:
    """The JSON schema of a request body under ``limits`` (what :func:`parse_request` accepts)."""
    text = {"type": "string", "minLength": 1, "pattern": NOT_ONLY_SPACE}
    return {
        "type": "object",
        "title": "AnswerRequest",
        "required": ["context", "questions"],
        "additionalProperties": False,
        "properties": {
            "context": {**text, "maxLength": limits.max_context_chars, "description": "the paragraph"},
            "questions": {"type": "array", "minItems": 1, "maxItems": limits.max_questions,
                          "items": {**text, "maxLength": limits.max_question_chars},
                          "description": "questions about the paragraph, answered in order"},
            "nbest": {"type": "boolean", "default": True, "description": "also give each answer's n-best list"},
        },
    }


def check_media_type(content_type: str | None) -> None:
    """Refuse a body declared as another media type than JSON (none declared: read as JSON)."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise RequestError(415, f"request body: sent as {media or 'an empty media type'!r}; send JSON with "
                                "Content-Type: application/json")


async def read_body(request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    check_media_type(request.headers.get("content-type"))
    declared = (request.headers.get("content-length") or "").strip()
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        size = f"{int(declared):,} bytes" if len(declared) <= 18 else f"a {len(declared)}-digit number of bytes"
        raise RequestError(413, f"request body of {size}; the limit is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body over {limit:,} bytes; the limit is {limit:,}")
        chunks.append(chunk)
    return b"".join(chunks)
