"""Raw QA files → canonical examples, with a validation report.

A file is read by its format (``data/formats/``: HW7, SQuAD style for CMRC 2018 and DRCD), a
Hugging Face ``datasets`` dataset by :mod:`.hf_datasets` (SQuAD-style rows), then validated.
``strict`` validation raises :class:`DataError` naming the file, the example id and every
problem found; ``lenient`` validation repairs what is safely repairable (an
``answer_start`` that does not point at its text, when the text occurs in the context: the
nearest occurrence wins), drops what is not, keeps everything else, and counts both in a
:class:`DataReport`. Character offsets always index the original, unmodified context string.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal

from . import formats
from .records import DataError, RawQuestion

Mode = Literal["strict", "lenient"]


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

    @property
    def format(self) -> formats.DataFormat:
        return formats.get(self.report.format)

    def require_examples(self) -> "Dataset":
        """This data set, or a :class:`DataError` when validation left no example to work on."""
        if not self.examples:
            r = self.report
            raise DataError(f"{r.path}: no example left after {r.mode} validation ({r.questions_read} read, "
                            f"{r.examples_dropped} dropped; see `qa-scale check-data {r.path}`)")
        return self


# ---------------------------------------------------------------- reading


_TEXT_KEYS = frozenset({"context", "question", "question_text"})
"""Keys whose text the validator judges per example (lone surrogates: refused naming the example in
strict mode, the example dropped and counted in lenient mode); HW7 contexts are items of ``paragraphs``."""


def read_json(path: str | Path) -> Any:
    """A JSON data file read through the input layer (:func:`qa_scale.common.inputs.read_json`).

    Every problem — missing, a folder, not UTF-8, invalid JSON, deep nesting, huge or non-finite
    numbers, repeated keys — is a :class:`DataError` with the input layer's message, naming the file
    and the line or key. Lone surrogates are refused
    there too, except inside contexts and questions: those are left to the validator, which names
    the example (strict) or drops it and counts it (lenient). Nowhere else may one pass.
    """
    import json

    from ..common.inputs import InputError, check_document, read_text
    from ..common.inputs import read_json as read_checked

    try:
        return read_checked(path)
    except InputError as err:
        if "lone surrogate" not in str(err):
            raise DataError(str(err)) from None  # same message; callers of the data layer catch DataError
    # Parsing passed every limit (repeated keys, numbers and constants are refused while parsing);
    # only the walk over the document found a surrogate. Walk again with the per-example texts
    # blanked: anything else (ids, answers, keys, depth, non-finite numbers) is still refused.
    raw = json.loads(read_text(path))
    try:
        check_document(_without_example_texts(raw), str(path))
    except InputError as err:
        raise DataError(str(err)) from None
    return raw


def _without_example_texts(doc: Any) -> Any:
    """A copy of ``doc`` with the strings at :data:`_TEXT_KEYS` (and in ``paragraphs`` lists) blanked."""
    top: list = [None]
    stack: list[tuple[Any, Any, Any, bool]] = [(doc, top, 0, False)]  # (node, parent copy, slot, example text)
    while stack:
        node, parent, slot, text = stack.pop()
        if isinstance(node, dict):
            copy: Any = {}
            stack += [(v, copy, k, k in _TEXT_KEYS) for k, v in node.items()]
        elif isinstance(node, list):
            copy = [None] * len(node)
            stack += [(v, copy, i, slot == "paragraphs") for i, v in enumerate(node)]
        else:
            copy = "" if text and isinstance(node, str) else node
        parent[slot] = copy
    return top[0]


def _surrogate(*texts: str) -> str | None:
    """A problem when a text holds a lone UTF-16 surrogate (valid JSON, not valid Unicode text)."""
    for text in texts:
        for i, ch in enumerate(text):
            if "\ud800" <= ch <= "\udfff":
                return f"invalid text: a lone surrogate U+{ord(ch):04X} at character {i}"
    return None


def read_records(path: str | Path, fmt: str = "auto") -> tuple[formats.DataFormat, Iterable[RawQuestion]]:
    """The file's format and its raw question records (not yet validated).

    ``path`` may also name a Hugging Face ``datasets`` dataset (a ``save_to_disk`` folder, or
    ``hf:NAME[:CONFIG][@SPLIT]``; see :mod:`.hf_datasets`): its rows are SQuAD-style records.
    """
    from . import hf_datasets

    src = hf_datasets.source(path)
    if src is not None:
        return formats.get("squad"), hf_datasets.read_records(src, fmt)
    path = Path(path)
    if path.is_dir():
        from ..common.transaction import note_input

        note_input(path)
        raise DataError(f"{path}: is a folder, neither a JSON data file nor a dataset saved by `datasets` "
                        f"(no {hf_datasets.STATE_FILE}, {hf_datasets.INFO_FILE} or {hf_datasets.DICT_FILE} in it)")
    raw = read_json(path)
    if fmt == "auto":
        try:
            found = formats.detect(raw)
        except DataError as err:
            raise DataError(f"{path}: {err}") from None
    else:
        found = formats.get(fmt)
        if not found.detect(raw):
            keys = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
            raise DataError(f"{path}: not a {fmt} file ({found.description}); its top level is {keys}")
    return found, found.read(raw, path)


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
    if not isinstance(text, str):
        kind = "a number" if isinstance(text, (int, float)) and not isinstance(text, bool) else type(text).__name__
        return None, f"bad answer text: {text!r} is {kind}, not a string", False
    if not text.strip():
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


def validate(records: Iterable[RawQuestion], path: Path, fmt: str, mode: Mode) -> Dataset:
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
        elif (bad := _surrogate(rec.context, rec.question)) is not None:
            drop = bad
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
    if report.questions_read == 0:
        raise DataError(f"{path}: the file holds no questions")
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
    """Load and validate a data file in any registered format.

    Args:
        path: the JSON file, or a ``datasets`` dataset: a ``save_to_disk`` folder (``FOLDER@SPLIT``
            for one split of a ``DatasetDict``) or ``hf:NAME[:CONFIG][@SPLIT]`` (see :mod:`.hf_datasets`).
        mode: ``"strict"`` raises on any problem; ``"lenient"`` repairs or drops and reports.
        fmt: a registered format name (``"hw7"``, ``"squad"``) or ``"auto"`` (from the top-level keys).

    Returns:
        The examples in file order and the validation report.

    Raises:
        DataError: unreadable file, structural problems (always), or content problems (strict).
    """
    if mode not in ("strict", "lenient"):
        raise ValueError(f"mode must be 'strict' or 'lenient', got {mode!r}")
    path = Path(path)
    found, records = read_records(path, fmt)
    return validate(records, path, found.name, mode)


def load_many(paths: Iterable[str | Path], mode: Mode = "strict") -> tuple[list[Example], list[dict]]:
    """Examples of several files (each in its own format), with ids kept distinct, and per-file counts.

    Files are mixed the way competitors mix CMRC 2018, DRCD and HW7 for training. An id already
    taken by an earlier file gets the file's name in front (``hw7_train:12``), so no example
    shadows another; each file's entry of the returned counts says how many were renamed.
    """
    examples: list[Example] = []
    counts: list[dict] = []
    seen: set[str] = set()
    for path in paths:
        ds = load(path, mode)
        renamed = 0
        for ex in ds.examples:
            if ex.id in seen:
                new, k = f"{Path(path).stem}:{ex.id}", 2
                while new in seen:
                    new, k = f"{Path(path).stem}:{ex.id}#{k}", k + 1
                ex, renamed = replace(ex, id=new), renamed + 1
            seen.add(ex.id)
            examples.append(ex)
        r = ds.report
        counts.append({"path": str(path), "format": r.format, "questions_read": r.questions_read,
                       "examples_kept": r.examples_kept, "answers_repaired": r.answers_repaired,
                       "examples_dropped": r.examples_dropped, "ids_renamed": renamed})
    return examples, counts
