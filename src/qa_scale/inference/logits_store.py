"""Logits stores: one model's start/end logits on every window of a data set, on disk.

A store is a folder that the ensembler reads without the model::

    store.json        what made it: the window fingerprint (tokenizer identity, window settings,
                      example ids, a hash of every window's input ids), the model's identity,
                      the data file, the decode settings, dtype and shape, metrics if scored
    start_logits.npy  [W, max_seq_len] float32 or float16, −inf on padding; plain ``.npy``, so
                      ``np.load(..., mmap_mode="r")`` maps it and :func:`iter_rows` streams it
    end_logits.npy
    windows/          the window set (``data.window_store`` Arrow): offsets, CLS positions, labels
    examples.json     ids, questions, contexts (each distinct context once) and answers
    predictions.json  this model's answers ``{id: text}``
    nbest.json        its n-best lists
    metrics.json      EM / F1 (and HW7 accuracy) when references were given

The folder is written beside its destination and renamed into place, so a reader never sees
half a store. Predictions are decoded from the logits *as stored* (after the fp16 cast, if any):
ensembling a store with itself reproduces them exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..common.inputs import InputError, load_npy, read_bytes, read_json
from ..common.outputs import note_input, staged_dir, write_json
from ..data import Answer, Example
from ..data.window_store import load_windows, save_windows
from ..data.windows import WindowSet
from ..evaluation.decode import DecodeConfig, Decoded

FORMAT = "qa-scale logits store"
VERSION = 1
DTYPES = {"fp32": np.float32, "fp16": np.float16}
LOGITS = ("start_logits", "end_logits")


class StoreError(ValueError):
    """A folder that is not a readable logits store."""


def examples_sha256(examples: Sequence[Example]) -> str:
    """Hash of the ids, questions and contexts (answers left out: they do not change logits)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.question, ex.context], ensure_ascii=False).encode())
    return h.hexdigest()


def model_identity(model_dir: str | os.PathLike) -> dict:
    """Where a model lives and what it is: resolved path, config hash, weight files and sizes."""
    path = Path(model_dir).resolve()
    config = path / "config.json"
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")) if path.is_dir() else []
    return {
        "path": str(path),
        "config_sha256": hashlib.sha256(read_bytes(config, "model config")).hexdigest() if config.is_file() else None,
        "weights": {p.name: p.stat().st_size for p in weights},
    }


def _examples_json(examples: Sequence[Example]) -> dict:
    contexts = {c: i for i, c in enumerate(dict.fromkeys(ex.context for ex in examples))}
    return {"contexts": list(contexts), "examples": [
        {"id": ex.id, "question": ex.question, "context": contexts[ex.context],
         "answers": [[a.text, a.start] for a in ex.answers]} for ex in examples]}


@dataclass(frozen=True)
class StoreContent:
    """Everything a store holds: the windows, their logits and answers, and where they came from."""

    ws: WindowSet  # the windows the logits were computed on
    examples: Sequence[Example]  # the examples of ``ws``, in order
    start: np.ndarray  # [W, L] logits, already in the dtype of ``precision`` (see :func:`cast`)
    end: np.ndarray
    decoded: Decoded  # the decoder's answers for exactly these logits (with n-best lists)
    precision: str = "fp32"  # "fp32" or "fp16": the dtype the arrays are saved in
    decode_config: DecodeConfig = DecodeConfig()  # the settings ``decoded`` was made with (ensembles default to them)
    model: dict | None = None  # :func:`model_identity` of the model, or any description of where the logits came from
    data: dict | None = None  # the data file's path, format and validation report
    metrics: dict | None = None  # scores of ``decoded``, when references were given
    extra: dict | None = None  # other facts worth keeping (batch size, world size, seconds…)


def write_store(out: str | os.PathLike, content: StoreContent) -> "Store":
    """Write a store atomically (an existing one at ``out`` is replaced once the new one is complete)."""
    c = content
    ws, examples, start, end, decoded, precision = c.ws, c.examples, c.start, c.end, c.decoded, c.precision
    dtype = DTYPES[precision]
    if start.dtype != dtype or end.dtype != dtype or start.shape != end.shape or start.shape[0] != len(ws):
        raise ValueError(f"logits must be two {precision} arrays of {len(ws)} rows, got "
                         f"{start.dtype}{start.shape} and {end.dtype}{end.shape}")
    meta = {
        "format": FORMAT, "version": VERSION,
        "fingerprint": ws.fingerprint(),
        "windows": {**asdict(ws.config), "stride": ws.config.stride(), "strategy": ws.strategy},
        "examples_sha256": examples_sha256(examples),
        "logits": {"dtype": precision, "shape": list(start.shape), "padding": "-inf"},
        "decode": asdict(c.decode_config),
        "model": c.model or {}, "data": c.data or {}, "metrics": c.metrics, **(c.extra or {}),
    }
    out = Path(out)
    with staged_dir(out, kind="store") as tmp:  # an existing folder is replaced only if it is a store
        for name, array in zip(LOGITS, (start, end)):
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array))
        save_windows(ws, tmp / "windows")
        write_json(tmp / "examples.json", _examples_json(examples), indent=None)
        write_json(tmp / "predictions.json", decoded.predictions)
        write_json(tmp / "nbest.json", decoded.nbest or {}, indent=None)
        if c.metrics is not None:
            write_json(tmp / "metrics.json", c.metrics)
        write_json(tmp / "store.json", meta)  # last: its presence marks a complete store
    # Not read back: inside a command the folder is only staged until the command succeeds (and an
    # output read back would count as an input of the command that writes it).
    return Store(out, meta)


def cast(logits: np.ndarray, precision: str) -> np.ndarray:
    """Logits in the storage dtype; fp16 overflow (|x| > 65504) is an error, not a silent inf."""
    with np.errstate(over="ignore"):  # checked just below, with a better message
        out = np.asarray(logits).astype(DTYPES[precision], copy=False)
    if precision == "fp16" and np.isinf(out[np.isfinite(logits)]).any():
        raise ValueError("logits exceed the fp16 range (|x| > 65504): store them with --precision fp32")
    return out


@dataclass
class Store:
    """A logits store opened for reading (arrays are read on demand)."""

    path: Path
    meta: dict

    @property
    def fingerprint(self) -> dict:
        return self.meta["fingerprint"]

    @property
    def model_path(self) -> str | None:
        return self.meta.get("model", {}).get("path")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.meta["logits"]["shape"])

    @property
    def nbytes(self) -> int:
        """Bytes of both logits arrays as stored."""
        W, L = self.shape
        return 2 * W * L * np.dtype(DTYPES[self.meta["logits"]["dtype"]]).itemsize

    def logits(self, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(start, end) in the stored dtype, memory-mapped unless ``mmap`` is False."""
        out = []
        for name in LOGITS:
            file = self.path / f"{name}.npy"
            array = load_npy(file, mmap=mmap)  # truncated or damaged: an InputError naming the file
            if array.shape != self.shape:
                raise StoreError(f"{file}: shape {array.shape} does not match store.json {self.shape}")
            out.append(array)
        return out[0], out[1]

    def iter_rows(self, name: str, chunk_rows: int = 256) -> Iterator[tuple[slice, np.ndarray]]:
        """Stream one logits array as ``(rows, block)`` pairs with ordinary file reads.

        Only one block of ``chunk_rows`` rows is in memory at a time (a memory map would
        leave every page it touched resident until unmapped). The block buffer is reused:
        consume it before asking for the next one.
        """
        file = self.path / f"{name}.npy"
        note_input(file)
        try:
            fh = open(file, "rb")
        except OSError as err:
            raise StoreError(f"{file}: cannot read ({err.strerror or err})") from None
        with fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise StoreError(f"{file}: unsupported .npy version {version}")
                shape, fortran, dtype = read_header(fh)
            except (ValueError, EOFError, SyntaxError) as err:
                raise StoreError(f"{file}: not a readable .npy file ({err})") from None
            if fortran or len(shape) != 2 or tuple(shape) != self.shape:
                raise StoreError(f"{file}: shape {shape} does not match store.json {self.shape}")
            W, L = shape
            buf = np.empty((min(chunk_rows, W), L), dtype)
            for a in range(0, W, chunk_rows):
                block = buf[: min(chunk_rows, W - a)]
                if fh.readinto(memoryview(block).cast("B")) != block.nbytes:
                    raise StoreError(f"{file} is truncated")
                yield slice(a, a + len(block)), block

    @cached_property
    def windows(self) -> WindowSet:
        return load_windows(self.path / "windows")

    @cached_property
    def examples(self) -> list[Example]:
        file = self.path / "examples.json"
        raw = read_json(file, "store file")
        try:
            contexts = raw["contexts"]
            examples = [Example(e["id"], e["question"], contexts[e["context"]],
                                tuple(Answer(t, s) for t, s in e["answers"])) for e in raw["examples"]]
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise StoreError(f"{file}: damaged ({type(err).__name__}: {err}); predict the store again") from None
        if not all(isinstance(ex.id, str) and isinstance(ex.question, str) and isinstance(ex.context, str)
                   for ex in examples):
            raise StoreError(f"{file}: damaged (an id, question or context that is not text); predict the store again")
        return examples

    def predictions(self) -> dict[str, str]:
        file = self.path / "predictions.json"
        preds = read_json(file, "store file")
        if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
            raise StoreError(f"{file}: damaged (expected {{id: answer text}}); predict the store again")
        return preds

    def nbest(self) -> dict[str, list[dict]]:
        file = self.path / "nbest.json"
        nbest = read_json(file, "store file")
        if not isinstance(nbest, dict) or not all(isinstance(v, list) for v in nbest.values()):
            raise StoreError(f"{file}: damaged (expected {{id: [candidates]}}); predict the store again")
        return nbest

    def decode_config(self) -> DecodeConfig:
        return DecodeConfig(**self.meta.get("decode", {}))


def open_store(path: str | os.PathLike) -> Store:
    """Open a store written by :func:`write_store`.

    Raises:
        StoreError: no ``store.json`` (not a store, or one still being written), or another format.
    """
    path = Path(path)
    note_input(path)  # the whole folder is read: no output of this command may be or lie inside it
    meta_file = path / "store.json"
    if not meta_file.is_file():
        what = "does not exist" if not path.exists() else "is not a logits store (no store.json)"
        raise StoreError(f"{path} {what}; make one with `qa-scale predict MODEL DATA --out {path}`")
    try:
        meta = read_json(meta_file, "store file")
    except InputError as err:
        raise StoreError(f"unreadable store file: {err}; the store is damaged: predict it again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        got = meta if not isinstance(meta, dict) else {k: meta.get(k) for k in ("format", "version")}
        raise StoreError(f"{meta_file}: not a version-{VERSION} logits store ({got})")
    for key in ("fingerprint", "logits", "windows"):
        if not isinstance(meta.get(key), dict):
            raise StoreError(f"{meta_file}: missing or bad {key!r}; the store is damaged: predict it again")
    shape = meta["logits"].get("shape")
    if (not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(x, int) and x > 0 for x in shape)
            or meta["logits"].get("dtype") not in DTYPES):
        raise StoreError(f"{meta_file}: bad 'logits' entry {meta['logits']}; the store is damaged: predict it again")
    return Store(path, meta)


def nonfinite_windows(block: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Rows of ``block`` ([rows, L] logits) with NaN or ±inf inside the window's real tokens.

    −inf belongs on padding only; anywhere else a non-finite logit means a diverged model or a
    damaged store, whose answers would silently be empty.
    """
    real = np.arange(block.shape[1])[None, :] < lengths[:, None]
    return np.flatnonzero((~np.isfinite(block) & real).any(axis=1))
