"""Raw QA files → canonical examples, with a validation report.

Two input formats are understood:

* **HW7** (NTU ML 2023 homework 7): ``{"questions": [{id, paragraph_id, question_text,
  answer_text, answer_start, answer_end}], "paragraphs": [str, ...]}``; ``answer_end`` is
  inclusive; the test split has no answer keys.
* **SQuAD style** (CMRC 2018, DRCD): ``{"data": [{"paragraphs": [{"context", "qas": [{"id",
  "question", "answers": [{"text", "answer_start"}]}]}]}]}`` with one or more references.

``strict`` validation raises :class:`DataError` naming the file, the example id and every
problem found; ``lenient`` validation repairs what is safely repairable (an ``answer_start``
that does not point at its text, when the text occurs in the context: the nearest occurrence
wins), drops what is not, keeps everything else, and counts both in a :class:`DataReport`.
Character offsets always index the original, unmodified context string.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

Mode = Literal["strict", "lenient"]


class DataError(ValueError):
    """Bad input that strict validation (or an unreadable file) refuses.

    ``problem`` is the bare description (without file and example id) when the error is
    about one record, so that lenient mode can drop that record and report why.
    """

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class Answer:
    """One reference answer: its text and the character offset where it starts."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """Exclusive character end offset."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class Example:
    """A question about a context, with zero (test) or more reference answers."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...] = ()


@dataclass
class Issue:
    """One problem found in the input, and what was done about it."""

    example_id: str
    problem: str
    action: str  # "error" | "repaired" | "dropped answer" | "dropped example"


@dataclass
class DataReport:
    """What validation saw, repaired and dropped in one file."""

    path: str
    format: str
    mode: str
    questions_read: int = 0
    examples_kept: int = 0
    answers_read: int = 0
    answers_kept: int = 0
    answers_repaired: int = 0
    answers_dropped: int = 0
    examples_dropped: int = 0
    issues: list[Issue] = field(default_factory=list)

    def to_dict(self, max_issues: int = 50) -> dict[str, Any]:
        """JSON-ready summary, listing at most ``max_issues`` issues."""
        counts = Counter(i.problem.split(":")[0] for i in self.issues)
        return {
            "path": self.path,
            "format": self.format,
            "mode": self.mode,
            "questions_read": self.questions_read,
            "examples_kept": self.examples_kept,
            "answers_read": self.answers_read,
            "answers_kept": self.answers_kept,
            "answers_repaired": self.answers_repaired,
            "answers_dropped": self.answers_dropped,
            "examples_dropped": self.examples_dropped,
            "problems": dict(counts),
            "issues": [vars(i) for i in self.issues[:max_issues]],
        }


@dataclass
class Dataset:
    """Validated examples of one file, in file order, plus the report."""

    examples: list[Example]
    report: DataReport

    @property
    def has_answers(self) -> bool:
        return any(ex.answers for ex in self.examples)

    def references(self) -> dict[str, list[str]]:
        """Example id → reference texts, in file order (what the metrics take)."""
        return {ex.id: [a.text for a in ex.answers] for ex in self.examples}


# ---------------------------------------------------------------- reading raw records


@dataclass
class _RawQuestion:
    id: str
    question: Any
    context: Any
    answers: list[tuple[Any, Any]]  # (text, start) as found in the file
    problem: str | None = None  # a missing key: the record cannot become an example


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}") from None


def _need(record: dict, key: str, path: Path, where: str) -> Any:
    if not isinstance(record, dict):
        problem = f"not an object: expected an object, got {type(record).__name__}"
        raise DataError(f"{path}: {where}: {problem}", problem)
    if key not in record:
        raise DataError(f"{path}: {where}: missing key {key!r}", f"missing key: {key!r}")
    return record[key]


def detect_format(raw: Any) -> str:
    """``"hw7"`` or ``"squad"`` from the top-level keys of a parsed file."""
    if isinstance(raw, dict) and "questions" in raw and "paragraphs" in raw:
        return "hw7"
    if isinstance(raw, dict) and "data" in raw:
        return "squad"
    keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
    raise DataError(f"unknown format: expected keys 'questions'+'paragraphs' (HW7) or 'data' (SQuAD), got {keys}")


def _hw7_records(raw: dict, path: Path) -> Iterable[_RawQuestion]:
    paragraphs = raw["paragraphs"]
    questions = raw["questions"]
    if not isinstance(paragraphs, list) or not isinstance(questions, list):
        raise DataError(f"{path}: 'questions' and 'paragraphs' must be lists")
    for n, q in enumerate(questions):
        qid = str(_need(q, "id", path, f"question #{n}"))
        try:
            yield _hw7_question(q, qid, paragraphs, path)
        except DataError as err:
            yield _RawQuestion(qid, None, None, [], problem=err.problem or str(err))


def _hw7_question(q: dict, qid: str, paragraphs: list, path: Path) -> _RawQuestion:
    where = f"example {qid}"
    pid = _need(q, "paragraph_id", path, where)
    if not isinstance(pid, int) or not 0 <= pid < len(paragraphs):
        problem = f"bad paragraph_id: {pid!r} is not an index into {len(paragraphs)} paragraphs"
        raise DataError(f"{path}: {where}: {problem}", problem)
    answers = []
    if "answer_text" in q or "answer_start" in q:
        text = _need(q, "answer_text", path, where)
        start = _need(q, "answer_start", path, where)
        if "answer_end" in q and isinstance(start, int) and isinstance(text, str):
            if q["answer_end"] != start + len(text) - 1:
                # answer_end is redundant; a disagreement means the start is suspect too.
                start = ("end-mismatch", start, q["answer_end"])
        answers.append((text, start))
    return _RawQuestion(qid, _need(q, "question_text", path, where), paragraphs[pid], answers)


def _squad_records(raw: dict, path: Path) -> Iterable[_RawQuestion]:
    articles = raw["data"]
    if not isinstance(articles, list):
        raise DataError(f"{path}: 'data' must be a list of articles")
    for a, article in enumerate(articles):
        for p, para in enumerate(_need(article, "paragraphs", path, f"article #{a}")):
            context = _need(para, "context", path, f"article #{a} paragraph #{p}")
            for n, qa in enumerate(_need(para, "qas", path, f"article #{a} paragraph #{p}")):
                qid = str(_need(qa, "id", path, f"article #{a} paragraph #{p} question #{n}"))
                where = f"example {qid}"
                try:
                    answers = [
                        (_need(ans, "text", path, where), _need(ans, "answer_start", path, where))
                        for ans in qa.get("answers", [])
                    ]
                    yield _RawQuestion(qid, _need(qa, "question", path, where), context, answers)
                except DataError as err:
                    yield _RawQuestion(qid, None, None, [], problem=err.problem or str(err))


# ---------------------------------------------------------------- validation


def _nearest(context: str, text: str, start: int) -> int | None:
    """Start of the occurrence of ``text`` in ``context`` closest to ``start``."""
    best, pos = None, context.find(text)
    while pos != -1:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def _clip(text: str, limit: int = 30) -> str:
    """``repr`` of ``text``, shortened in the middle so that reports stay one line."""
    return repr(text if len(text) <= limit else text[: limit // 2] + "…" + text[-limit // 2 :])


def _check_answer(context: str, text: Any, start: Any) -> tuple[Answer | None, str | None, bool]:
    """Validate one answer: (answer or None, problem or None, repaired?)."""
    if not isinstance(text, str) or not text.strip():
        return None, "empty answer: answer text is empty", False
    hint = start
    if isinstance(start, tuple):  # HW7 answer_end disagreeing with start + len(text) - 1
        hint, problem = start[1], f"misaligned answer: answer_end {start[2]} != answer_start {start[1]} + len(text) - 1"
    elif not isinstance(start, int) or isinstance(start, bool):
        return None, f"bad answer_start: {start!r} is not an integer", False
    elif start < 0 or start + len(text) > len(context):
        problem = f"answer beyond context: [{start}, {start + len(text)}) outside context of {len(context)} chars"
    elif context[start : start + len(text)] != text:
        problem = f"misaligned answer: context[{start}:{start + len(text)}] is {_clip(context[start:start + len(text)])}, not {_clip(text)}"
    else:
        return Answer(text, start), None, False
    fixed = _nearest(context, text, hint if isinstance(hint, int) else 0)
    if fixed is None:
        return None, f"{problem}; text does not occur in the context", False
    return Answer(text, fixed), f"{problem}; nearest occurrence at {fixed}", True


def validate(records: Iterable[_RawQuestion], path: Path, fmt: str, mode: Mode) -> Dataset:
    """Turn raw records into examples, applying the strict or lenient policy."""
    report = DataReport(str(path), fmt, mode)
    examples: list[Example] = []
    seen: set[str] = set()
    for rec in records:
        report.questions_read += 1
        report.answers_read += len(rec.answers)
        problems: list[tuple[str, str]] = []  # (problem, action) for this example
        drop = None
        if rec.problem:
            drop = rec.problem
        elif rec.id in seen:
            drop = "duplicate id: an earlier example has the same id"
        elif not isinstance(rec.context, str) or not rec.context.strip():
            drop = "empty context"
        elif not isinstance(rec.question, str) or not rec.question.strip():
            drop = "empty question"
        answers: list[Answer] = []
        if drop is None:
            for text, start in rec.answers:
                answer, problem, repaired = _check_answer(rec.context, text, start)
                if problem:
                    problems.append((problem, "repaired" if repaired else "dropped answer"))
                if answer is not None:
                    answers.append(answer)
            if rec.answers and not answers:
                problems.append(("no valid answer: every reference was dropped", "dropped example"))
                drop = "no valid answer"
        else:
            problems.append((drop, "dropped example"))
        if mode == "strict" and problems:
            report.issues.extend(Issue(rec.id, p, "error") for p, _ in problems)
            continue
        report.issues.extend(Issue(rec.id, p, a) for p, a in problems)
        report.answers_repaired += sum(a == "repaired" for _, a in problems)
        report.answers_dropped += len(rec.answers) - len(answers)
        if drop:
            report.examples_dropped += 1
            continue
        seen.add(rec.id)
        examples.append(Example(rec.id, rec.question, rec.context, tuple(answers)))
    if mode == "strict" and report.issues:
        shown = "\n".join(f"  {path}: example {i.example_id}: {i.problem}" for i in report.issues[:20])
        more = f"\n  … and {len(report.issues) - 20} more" if len(report.issues) > 20 else ""
        raise DataError(
            f"{path}: {len(report.issues)} problem(s) in strict mode "
            f"(use lenient mode to repair or drop them):\n{shown}{more}"
        )
    report.examples_kept = len(examples)
    report.answers_kept = sum(len(ex.answers) for ex in examples)
    return Dataset(examples, report)


def load(path: str | Path, mode: Mode = "strict", fmt: str = "auto") -> Dataset:
    """Load and validate a HW7 or SQuAD-style file.

    Args:
        path: the JSON file.
        mode: ``"strict"`` raises on any problem; ``"lenient"`` repairs or drops and reports.
        fmt: ``"hw7"``, ``"squad"`` or ``"auto"`` (from the top-level keys).

    Returns:
        The examples in file order and the validation report.

    Raises:
        DataError: unreadable file, structural problems (always), or content problems (strict).
    """
    if mode not in ("strict", "lenient"):
        raise ValueError(f"mode must be 'strict' or 'lenient', got {mode!r}")
    path = Path(path)
    raw = _read_json(path)
    if fmt == "auto":
        try:
            fmt = detect_format(raw)
        except DataError as err:
            raise DataError(f"{path}: {err}") from None
    readers = {"hw7": _hw7_records, "squad": _squad_records}
    if fmt not in readers:
        raise ValueError(f"fmt must be one of {sorted(readers)} or 'auto', got {fmt!r}")
    return validate(readers[fmt](raw, path), path, fmt, mode)


def load_references(path: str | Path, fmt: str = "auto") -> dict[str, list[str]]:
    """Example id → every reference answer text, positions not checked.

    Official evaluators score against all reference texts, including those whose
    ``answer_start`` is wrong or missing, so evaluation reads them here rather than from
    validated examples (which keep only answers they can locate). The first of duplicate ids wins.
    """
    path = Path(path)
    raw = _read_json(path)
    fmt = detect_format(raw) if fmt == "auto" else fmt
    readers = {"hw7": _hw7_records, "squad": _squad_records}
    refs: dict[str, list[str]] = {}
    for rec in readers[fmt](raw, path):
        if rec.problem is None and rec.id not in refs:
            refs[rec.id] = [text for text, _ in rec.answers if isinstance(text, str)]
    return refs
