"""Hugging Face ``datasets`` data as input, read like a SQuAD-style file.

Every data argument (``data.train_file`` / ``dev_file``, ``check-data``, ``predict``, ``evaluate``,
``--references``, …) also takes, as ``run_qa.py --dataset_name`` does:

- ``FOLDER``: a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk`` (known by
  its ``state.json`` / ``dataset_info.json`` or ``dataset_dict.json``), read with
  ``datasets.load_from_disk``; ``FOLDER@SPLIT`` picks a split of a ``DatasetDict``;
- ``hf:NAME[:CONFIG][@SPLIT]``: ``datasets.load_dataset(NAME, CONFIG, split=SPLIT)`` (the hub, or its
  local cache). The prefix is required: a bare name that is not a path could as well be a
  mistyped file name, and turning that into a hub request would answer "not found on the hub"
  (or, online, download something else) instead of "file not found".

A ``DatasetDict`` without ``@SPLIT`` is read when it has one split; otherwise the error lists its splits.
Rows are SQuAD-style columns, as the hub's ``squad`` / ``cmrc2018`` have: ``id``, ``context``,
``question``, ``answers`` (``{text: [...], answer_start: [...]}``, or a list of
``{text, answer_start}``), ``title`` optional and unused. They become the same
:class:`~.records.RawQuestion` records the ``squad`` JSON reader yields, so validation (strict or
lenient, repairs, the report) and the references are those of the JSON twin. A saved folder is
noted as a whole as an input of the running command, so no output may lie inside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..common import transaction
from ..common.inputs import InputError, read_json
from .records import DataError, RawQuestion

HUB_PREFIX = "hf:"
COLUMNS = ("id", "context", "question", "answers")
"""The columns every row needs (``title`` may be there too)."""
ANSWER_FIELDS = ("text", "answer_start")
DICT_FILE, STATE_FILE, INFO_FILE = "dataset_dict.json", "state.json", "dataset_info.json"


@dataclass(frozen=True)
class Source:
    """A dataset named by a data argument: a saved ``folder``, or a hub ``name`` (and ``config``)."""

    spec: str  # as given: what messages and reports call it
    folder: Path | None = None
    name: str | None = None
    config: str | None = None
    split: str | None = None

    def __str__(self) -> str:
        return self.spec


def _looks_saved(folder: Path) -> bool:
    """Whether ``folder`` was written by ``save_to_disk`` (its files, or a split folder's, show it)."""
    if any((folder / f).exists() for f in (DICT_FILE, STATE_FILE, INFO_FILE)) or any(folder.glob("*.arrow")):
        return True
    return any((sub / STATE_FILE).exists() or (sub / INFO_FILE).exists() for sub in folder.iterdir() if sub.is_dir())


def source(path: str | os.PathLike) -> Source | None:
    """The dataset ``path`` names, or ``None`` when it is a (JSON) file path.

    An existing path is always a path: a saved folder is a dataset, anything else is left to the file
    readers. ``hf:`` starts a hub name; ``FOLDER@SPLIT`` is a split of an existing saved folder.
    """
    spec = os.fspath(path)
    p = Path(spec)
    if p.exists():
        return Source(spec, folder=p) if p.is_dir() and _looks_saved(p) else None
    if spec.startswith(HUB_PREFIX):
        rest, at, split = spec[len(HUB_PREFIX):].rpartition("@")
        name, _, config = (rest if at else split).partition(":")
        if not name or (at and not split):
            raise DataError(f"{spec}: expected {HUB_PREFIX}NAME[:CONFIG][@SPLIT] (e.g. hf:cmrc2018@validation)")
        return Source(spec, name=name, config=config or None, split=split if at else None)
    base, at, split = spec.rpartition("@")
    if at and base and split and Path(base).is_dir() and _looks_saved(Path(base)):
        return Source(spec, folder=Path(base), split=split)
    return None


def read_records(src: Source, fmt: str = "auto") -> Iterator[RawQuestion]:
    """Every row of ``src`` as a raw question record, in row order (columns checked first, eagerly)."""
    if fmt not in ("auto", "squad"):
        raise DataError(f"{src}: a datasets dataset holds SQuAD-style rows; --format {fmt} does not apply "
                        "(use auto or squad)")
    ds = _load_folder(src) if src.folder is not None else _load_hub(src)
    missing = [c for c in COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{src}: missing column {', '.join(map(repr, missing))} (the columns are "
                        f"{', '.join(ds.column_names)}; SQuAD-style rows need {', '.join(COLUMNS)})")
    _check_answer_fields(ds.features["answers"], src)
    return _rows(ds.select_columns(list(COLUMNS)), src)


# ---------------------------------------------------------------- loading


def _load_folder(src: Source):
    import datasets

    folder = src.folder
    transaction.note_input(folder)  # the folder as a whole: no output may be it or lie inside it
    single = (folder / STATE_FILE).exists() or (folder / INFO_FILE).exists() or any(folder.glob("*.arrow"))
    if not single and not (folder / DICT_FILE).exists():
        subs = sorted(p.name for p in folder.iterdir() if (p / STATE_FILE).exists() or (p / INFO_FILE).exists())
        raise DataError(f"{folder / DICT_FILE}: missing: {folder} holds saved datasets ({', '.join(subs[:5])}"
                        f"{', …' if len(subs) > 5 else ''}) but is no DatasetDict itself (damaged, or a folder of "
                        "datasets: name one of them)")
    if (folder / DICT_FILE).exists():
        splits = _json(folder / DICT_FILE, folder).get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise DataError(f"{folder / DICT_FILE}: damaged datasets folder ('splits' is not a list of names)")
        target = folder / _split(src, splits)
    else:
        target = folder
        saved = _json(folder / STATE_FILE, folder).get("_split")
        if src.split is not None and src.split != saved:
            raise DataError(f"{src}: {folder} holds one Dataset (split {saved!r}), not a DatasetDict: drop "
                            f"'@{src.split}'")
    for name in (STATE_FILE, INFO_FILE):
        if not (target / name).is_file():
            raise DataError(f"{target / name}: damaged datasets folder: this file is missing")
    files = _json(target / STATE_FILE, folder).get("_data_files")
    for entry in files if isinstance(files, list) else []:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if isinstance(name, str) and not (target / name).is_file():
            raise DataError(f"{target / name}: damaged datasets folder: this data file is missing")
    try:
        return datasets.load_from_disk(str(target))
    except Exception as err:  # noqa: BLE001 - whatever the Arrow reader raises, name the folder
        raise DataError(f"{target}: damaged datasets folder ({type(err).__name__}: {err})") from None


def _json(path: Path, folder: Path) -> dict:
    try:
        doc = read_json(path, "datasets metadata file")
    except InputError as err:
        raise DataError(f"{err} (in the datasets folder {folder})") from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: damaged datasets folder (expected an object)")
    return doc


def _split(src: Source, splits: list[str]) -> str:
    """The split of a ``DatasetDict`` that ``src`` asks for (or its only one)."""
    if src.split is not None:
        if src.split not in splits:
            raise DataError(f"{src}: no split {src.split!r}; the splits are {', '.join(splits)}")
        return src.split
    if len(splits) == 1:
        return splits[0]
    raise DataError(f"{src}: a DatasetDict with splits {', '.join(splits) or '(none)'}: choose one with "
                    f"{src.spec}@SPLIT (e.g. {src.spec}@{splits[-1] if splits else 'validation'})")


def _load_hub(src: Source):
    import datasets

    try:
        ds = datasets.load_dataset(src.name, src.config, split=src.split)
    except ConnectionError as err:
        why = (" (offline mode: HF_DATASETS_OFFLINE / HF_HUB_OFFLINE is set)" if datasets.config.HF_HUB_OFFLINE
               else " (no network? HF_DATASETS_OFFLINE=1 fails at once instead of retrying)")
        raise DataError(f"{src}: cannot load dataset {src.name!r}: the Hugging Face Hub is unreachable{why} and "
                        f"the dataset is not in the local cache ({err})") from None
    except Exception as err:  # noqa: BLE001 - not found, a bad config or split, …: name the dataset
        raise DataError(f"{src}: cannot load dataset {src.name!r}"
                        f"{f' config {src.config!r}' if src.config else ''}: {type(err).__name__}: {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[_split(src, list(ds))]
    return ds


# ---------------------------------------------------------------- rows


def _check_answer_fields(feature: Any, src: Source) -> None:
    """``answers`` must be a struct of lists, or a list of structs, with ``text`` and ``answer_start``."""
    inner = getattr(feature, "feature", feature)  # List / Sequence / LargeList of a struct
    if isinstance(inner, dict):
        missing = [k for k in ANSWER_FIELDS if k not in inner]
        if not missing:
            return
        raise DataError(f"{src}: missing column {', '.join(f'answers.{k}' for k in missing)} (answers has "
                        f"{', '.join(inner)})")
    raise DataError(f"{src}: column 'answers' is {feature}, not {{text: [...], answer_start: [...]}}")


def _answers(value: Any) -> tuple[list[tuple[Any, Any]], str | None]:
    """(text, start) pairs of one row's ``answers``, or a problem that drops the row."""
    if value is None:
        return [], "bad answers: expected {text, answer_start}, got null"
    if isinstance(value, dict):  # {text: [...], answer_start: [...]}
        texts, starts = value.get("text") or [], value.get("answer_start") or []
        if len(texts) != len(starts):
            return [], f"bad answers: {len(texts)} text(s) but {len(starts)} answer_start(s)"
        return list(zip(texts, starts)), None
    return [(a.get("text"), a.get("answer_start")) if isinstance(a, dict) else (None, None) for a in value], None


def _rows(ds, src: Source) -> Iterator[RawQuestion]:
    n = 0
    try:
        for batch in ds.iter(batch_size=1000):
            for qid, context, question, answers in zip(*(batch[c] for c in COLUMNS)):
                if qid is None:
                    raise DataError(f"{src}: row {n}: the id is null")
                pairs, problem = _answers(answers)
                yield RawQuestion(str(qid), question, context, pairs, problem=problem)
                n += 1
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{src}: damaged datasets data at row {n} ({type(err).__name__}: {err})") from None
