"""The sample data on disk: HW7 files, SQuAD-style (CMRC 2018 / DRCD) files and a text corpus."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..common.outputs import atomic_open, staged_dir, write_json
from .config import SampleConfig
from .paragraphs import generate

FORMAT_VERSION = "qa-scale-sample"
KIND = "sample-data"  # the output layer's marker: `sample-data --out` replaces only such a folder


def hw7_split(records: Sequence[Mapping[str, Any]], with_answers: bool) -> tuple[dict[str, Any], dict[str, str]]:
    questions: list[dict[str, Any]] = []
    paragraphs: list[str] = []
    answers: dict[str, str] = {}
    for p_index, record in enumerate(records):
        paragraphs.append(record["context"])
        for qa in record["qas"]:
            q: dict[str, Any] = {
                "id": len(questions),
                "paragraph_id": p_index,
                "question_text": qa["question"],
            }
            first = qa["answers"][0] if qa.get("answers") else None
            if first is not None:
                answers[str(q["id"])] = first["text"]
            if with_answers:
                if first is None:
                    raise ValueError(f"question {qa.get('id')!r} has no answer")
                q["answer_text"] = first["text"]
                q["answer_start"] = first["answer_start"]
                q["answer_end"] = first["answer_start"] + len(first["text"]) - 1  # inclusive
            questions.append(q)
    return {"questions": questions, "paragraphs": paragraphs}, answers


def write_hw7(splits: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``hw7_<split>.json`` for every split (the HW7 homework format).

    ``{"questions": [{"id", "paragraph_id", "question_text", "answer_text", "answer_start",
    "answer_end"}], "paragraphs": [...]}`` with ``answer_end`` inclusive and question ids
    ``0, 1, 2, ...`` within each split. The ``test`` split is written without the three
    answer keys; its reference answers go to ``hw7_test_answers.json`` as
    ``{"<question id>": "answer text"}``.

    Returns ``{split: path}`` plus ``"test_answers"`` when a test split was written.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for split, records in splits.items():
        is_test = split == "test"
        data, answers = hw7_split(records, with_answers=not is_test)
        paths[split] = out / f"hw7_{split}.json"
        write_json(paths[split], data)
        if is_test:
            paths["test_answers"] = out / "hw7_test_answers.json"
            write_json(paths["test_answers"], answers)
    return paths


def write_squad(splits: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``squad_<split>.json`` for every split (CMRC 2018 / DRCD layout).

    One article per paragraph, ``{"version": "qa-scale-sample", "data": [{"title", "id",
    "paragraphs": [{"id", "context", "qas": [{"id", "question", "answers": [{"text",
    "answer_start"}]}]}]}]}``; ids follow CMRC (``TRAIN_3``, ``TRAIN_3_QUERY_0``).
    Returns ``{split: path}``.
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for split, records in splits.items():
        data = []
        for record in records:
            qas = [
                {
                    "id": qa["id"],
                    "question": qa["question"],
                    "answers": [{"text": a["text"], "answer_start": a["answer_start"]} for a in qa["answers"]],
                }
                for qa in record["qas"]
            ]
            data.append({
                "title": record["title"],
                "id": record["id"],
                "paragraphs": [{"id": record["id"], "context": record["context"], "qas": qas}],
            })
        paths[split] = out / f"squad_{split}.json"
        write_json(paths[split], {"version": FORMAT_VERSION, "data": data})
    return paths


def write_all(config: SampleConfig | None, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Generate with ``config`` and write every file into ``out_dir``.

    Returns ``{"hw7_train", "hw7_dev", "hw7_test", "hw7_test_answers", "squad_train",
    "squad_dev", "squad_test", "corpus"}`` -> path. ``corpus.txt`` holds every context of
    every split (train, dev, test order), one per line, for a vocabulary or MLM
    pre-training.
    """
    splits = generate(config)
    out = Path(out_dir)
    with staged_dir(out, kind=KIND) as tmp:  # the whole set or none: no new file beside an old one
        written = {f"hw7_{k}": v for k, v in write_hw7(splits, tmp).items()}
        written |= {f"squad_{k}": v for k, v in write_squad(splits, tmp).items()}
        written["corpus"] = tmp / "corpus.txt"
        with atomic_open(written["corpus"]) as fh:
            fh.writelines(r["context"] + "\n" for rs in splits.values() for r in rs)
    return {key: out / path.name for key, path in written.items()}
