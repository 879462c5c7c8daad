"""``qa-scale answer``'s three modes: questions on the command line, a JSONL batch, or interactive.

* ``--question Q`` (repeatable) about ``--context TEXT`` / ``--context-file FILE``: all answered
  in one call (their windows share forward passes), printed as text or ``--json``.
* ``--input FILE.jsonl``: one ``{"context": ..., "question": ...}`` object a line (``id`` kept
  when given) → one JSON answer a line, answered in chunks, to ``--output`` or stdout.
* no question: one question a line on stdin, each answered as soon as it is read.

Bad input is a ``ValueError`` naming the file and line (and id) or the flag: exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, Iterator

from .answering import Query, answer, check_query
from .readers import Panel

CHUNK = 256  # JSONL queries answered per call


def read_context(context: str | None, context_file: str | os.PathLike | None) -> str | None:
    """The paragraph from ``--context`` or ``--context-file`` (UTF-8), or None when neither is given."""
    if context is not None and context_file is not None:
        raise ValueError("give --context or --context-file, not both")
    if context_file is None:
        return context
    path = Path(context_file)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"context file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[str | None, Query]]:
    """(id or None, query) of every non-empty line of a JSONL file, checked as it is read."""
    path = Path(path)
    try:
        fh = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"input file not found: {path}") from None
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                yield _record(json.loads(line) if line.strip() else None, f"{path} line {n}")
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} line {n}: not JSON: {err}") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None


def _record(raw, where: str) -> tuple[str | None, Query]:
    if not isinstance(raw, dict):
        raise ValueError(f'{where}: expected an object {{"context": ..., "question": ...}}')
    if raw.get("id") is not None:
        where += f" (id {raw['id']})"
    unknown = sorted(set(raw) - {"id", "context", "question"})
    missing = [k for k in ("context", "question") if k not in raw]
    if missing or unknown:
        raise ValueError(f"{where}: " + "; ".join([f"missing key {k!r}" for k in missing]
                                                  + [f"unknown key {k!r}" for k in unknown]))
    query = Query(raw["context"], raw["question"])
    check_query(query, where)
    return (None if raw.get("id") is None else str(raw["id"])), query


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


def answer_jsonl(panel: Panel, path: str | os.PathLike, out: IO[str], nbest: bool) -> int:
    """Answer a JSONL file chunk by chunk; returns the number of answers written."""
    done, chunk = 0, []

    def flush() -> None:
        results = answer(panel, [q for _, q in chunk], nbest)
        for (ident, _), result in zip(chunk, results):
            if ident is not None:
                result = {"id": ident, **result}
            out.write(json.dumps(result, ensure_ascii=False) + "\n")
        chunk.clear()

    for record in read_jsonl(path):
        chunk.append(record)
        done += 1
        if len(chunk) == CHUNK:
            flush()
    if chunk:
        flush()
    return done


def run(panel: Panel, *, context: str | None, questions: list[str], input_path: str | None = None,
        output: str | None = None, nbest: bool = False, as_json: bool = False, stdin: IO[str] | None = None,
        stdout: IO[str] | None = None) -> int:
    """``qa-scale answer``: pick the mode from what is given, answer, write. Returns the exit status."""
    stdout = stdout or sys.stdout
    if input_path is not None:
        if questions or context is not None:
            raise ValueError("--input takes its contexts and questions from the file: drop --context/--question")
        if output is None:
            answer_jsonl(panel, input_path, stdout, nbest)
            return 0
        with open(output, "w", encoding="utf-8") as out:
            n = answer_jsonl(panel, input_path, out, nbest)
        print(f"wrote {n} answers to {output}", file=sys.stderr)
        return 0
    if context is None:
        raise ValueError("give the paragraph with --context or --context-file (or a JSONL file with --input)")
    if questions:
        for n, q in enumerate(questions):
            check_query(Query(context, q), f"--question {n + 1}")
        results = answer(panel, [Query(context, q) for q in questions], nbest)
        if as_json:
            stdout.write(json.dumps({"context": context, "answers": results, **panel.info()},
                                    ensure_ascii=False, indent=2) + "\n")
        else:
            _emit(results, stdout, False, nbest)
        return 0
    check_query(Query(context, "?"), "--context")
    stdin = stdin or sys.stdin
    if stdin.isatty():
        print("one question a line; end with Ctrl-D", file=sys.stderr)
    for line in stdin:
        if line.strip():
            _emit(answer(panel, [Query(context, line.strip())], nbest), stdout, as_json, nbest)
    return 0
