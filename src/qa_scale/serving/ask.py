"""``qa-scale answer``'s three modes: questions on the command line, a JSONL batch, or interactive.

* ``--question Q`` (repeatable) about ``--context TEXT`` / ``--context-file FILE``: all answered
  in one call (their windows share forward passes), printed as text or ``--json``.
* ``--input FILE.jsonl``: one ``{"context": ..., "question": ...}`` object a line (``id`` kept
  when given) → one JSON answer a line, answered in chunks, to ``--output`` or stdout.
* no question: one question a line on stdin, each answered as soon as it is read.

Bad input is an :class:`~qa_scale.common.inputs.InputError` (a ``ValueError``) naming the file and line
(and id), ``<stdin> line N`` or the flag, found before any model loads where it can be: exit status 2.
``--output`` is written through the output layer, so an old file stays as it was until every line is
answered.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from ..common.inputs import InputError, check_text, iter_jsonl, read_text, stdin_lines
from ..common.outputs import atomic_open
from .answering import Query, answer, check_query
from .readers import Panel

CHUNK = 256  # JSONL queries answered per call


def read_context(context: str | None, context_file: str | os.PathLike | None) -> str | None:
    """The paragraph from ``--context`` or ``--context-file`` (UTF-8), or None when neither is given."""
    if context is not None and context_file is not None:
        raise ValueError("give --context or --context-file, not both")
    if context_file is None:
        text, where = context, "argument --context"
    else:
        text, where = read_text(context_file, "context file"), str(context_file)
    if text is not None and not check_text(text, where).strip():
        raise InputError(f"{where}: the paragraph is empty")
    return text


def read_jsonl(path: str | os.PathLike) -> list[tuple[str | None, Query]]:
    """(id or None, query) of every non-blank line of a JSONL file, all checked before any is answered."""
    records = [_record(raw, f"{path} line {n}") for n, raw in iter_jsonl(read_text(path, "input file"), str(path))]
    if not records:
        raise InputError(f"{path}: no lines to answer (an empty JSONL file)")
    return records


def _record(raw, where: str) -> tuple[str | None, Query]:
    if not isinstance(raw, dict):
        raise InputError(f'{where}: expected an object {{"context": ..., "question": ...}}')
    if raw.get("id") is not None:
        where += f" (id {str(raw['id'])[:80]})"
    unknown = sorted(set(raw) - {"id", "context", "question"})
    missing = [k for k in ("context", "question") if k not in raw]
    if missing or unknown:
        raise InputError(f"{where}: " + "; ".join([f"missing key {k!r}" for k in missing]
                                                  + [f"unknown key {k[:40]!r}" for k in unknown]))
    query = Query(raw["context"], raw["question"])
    check_query(query, where)
    return (None if raw.get("id") is None else str(raw["id"])), query


def prepare(context: str | None, questions: list[str], input_path: str | os.PathLike | None
            ) -> list[tuple[str | None, Query]] | None:
    """Check what is asked, before any model loads; the JSONL file's records with ``input_path``."""
    if input_path is not None:
        if questions or context is not None:
            raise ValueError("--input takes its contexts and questions from the file: drop --context/--question")
        return read_jsonl(input_path)
    if context is None:
        raise ValueError("give the paragraph with --context or --context-file (or a JSONL file with --input)")
    check_text(context, "--context")
    for n, q in enumerate(questions):
        check_text(q, f"argument --question {n + 1}")
        check_query(Query(context, q), f"--question {n + 1}")
    if not questions:
        check_query(Query(context, "?"), "--context")
    return None
def text_of(result: dict, nbest: bool) -> str:
    """One answer for people: the answer, its span, probability and score (and n-best)."""
    if not result["answer"]:
        line = f"{result['question']}\n  → (no answer)"
    else:
        line = (f"{result['question']}\n  → {result['answer']}  [{result['start']}, {result['end']})  "
                f"p={result['probability']:.3f}  score {result['score']:.3f}")
    if nbest and result.get("nbest"):
        line += "\n" + "\n".join(f"     {k}. {c['text']}  [{c['start']}, {c['end']})  p={c['probability']:.3f}"
                                 for k, c in enumerate(result["nbest"], 1))
    return line


def _emit(results: list[dict], out: IO[str], as_json: bool, nbest: bool) -> None:
    for result in results:
        out.write((json.dumps(result, ensure_ascii=False) if as_json else text_of(result, nbest)) + "\n")
    out.flush()


def answer_jsonl(panel: Panel, records: list[tuple[str | None, Query]], out: IO[str], nbest: bool) -> int:
    """Answer a JSONL file's records (:func:`read_jsonl`) chunk by chunk; returns the number of answers written."""
    done, chunk = 0, []

    def flush() -> None:
        results = answer(panel, [q for _, q in chunk], nbest)
        for (ident, _), result in zip(chunk, results):
            if ident is not None:
                result = {"id": ident, **result}
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
        chunk.clear()

    for record in records:
        chunk.append(record)
        done += 1
        if len(chunk) == CHUNK:
            flush()
    if chunk:
        flush()
    return done


def stdin_questions(stdin: IO | None = None) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of ``stdin`` (default: the process's, read as UTF-8 bytes);
    a line that is not UTF-8 or holds a lone surrogate is refused naming ``<stdin> line N``."""
    if stdin is None or isinstance(stdin, io.BufferedIOBase) or hasattr(stdin, "buffer"):
        yield from stdin_lines(None if stdin is None else getattr(stdin, "buffer", stdin))
        return
    for n, line in enumerate(stdin, 1):
        yield n, check_text(line.rstrip("\r\n"), f"<stdin> line {n}")


@dataclass
class Asked:
    """What ``qa-scale answer`` is asked: a paragraph and questions, or a JSONL file's records."""

    context: str | None = None
    questions: list[str] = field(default_factory=list)
    records: list[tuple[str | None, Query]] | None = None  # a JSONL file's, read by :func:`prepare`
    output: str | os.PathLike | None = None  # with records: the JSONL answers (default: stdout)
    nbest: bool = False
    as_json: bool = False


def run(panel: Panel, asked: Asked, stdin: IO | None = None, stdout: IO[str] | None = None) -> int:
    """``qa-scale answer``: pick the mode from what is asked, answer, write. Returns the exit status.

    ``asked.output`` is written through the output layer: only when every line is answered (inside a
    command, at its commit).
    """
    stdout = stdout or sys.stdout
    if asked.records is None:
        prepare(asked.context, asked.questions, None)  # checked here too when called from Python
    else:
        if asked.output is None:
            answer_jsonl(panel, asked.records, stdout, asked.nbest)
            return 0
        with atomic_open(asked.output) as out:
            n = answer_jsonl(panel, asked.records, out, asked.nbest)
        print(f"wrote {n} answers to {asked.output}", file=sys.stderr)
        return 0
    if asked.questions:
        results = answer(panel, [Query(asked.context, q) for q in asked.questions], asked.nbest)
        if asked.as_json:
            stdout.write(json.dumps({"context": asked.context, "answers": results, **panel.info()},
                                    ensure_ascii=False, indent=2) + "\n")
        else:
            _emit(results, stdout, False, asked.nbest)
        return 0
    if (stdin or sys.stdin).isatty():
        print("one question a line; end with Ctrl-D", file=sys.stderr)
    for _, line in stdin_questions(stdin):
        if line.strip():
            _emit(answer(panel, [Query(asked.context, line.strip())], asked.nbest), stdout, asked.as_json, asked.nbest)
    return 0
