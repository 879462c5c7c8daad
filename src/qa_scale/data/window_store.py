"""Window sets on disk as ``datasets`` Arrow tables, and a cache keyed by what made them.

Windows are stored unpadded (ragged Arrow lists) and padded back to ``max_seq_len`` on load.
A cache entry is named by a hash of the examples, the tokenizer identity, the window
settings and the strategy, so changing any of them builds new windows instead of reusing
stale ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from ..common.outputs import staged_dir, write_json
from .examples import Example
from .tokenization import tokenizer_identity
from .windows import Strategy, WindowConfig, WindowSet, build_windows

_RAGGED = ("input_ids", "token_type_ids", "offset_start", "offset_end")
_FLAT = ("example_index", "window_index", "cls_index", "start_positions", "end_positions")


def _ragged(padded: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    mask = np.arange(padded.shape[1])[None, :] < lengths[:, None]
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(bounds), pa.array(padded[mask]))


def _padded(column: pa.ChunkedArray, lengths: np.ndarray, width: int, fill, dtype) -> np.ndarray:
    flat = pa.concat_arrays([c.flatten() for c in column.chunks]).to_numpy(zero_copy_only=False)
    out = np.full((len(lengths), width), fill, dtype)
    out[np.arange(width)[None, :] < lengths[:, None]] = flat
    return out


def to_dataset(ws: WindowSet) -> datasets.Dataset:
    """The windows as a ``datasets.Dataset`` (one row per window, unpadded lists)."""
    columns = {
        "input_ids": _ragged(ws.input_ids, ws.lengths),
        "token_type_ids": _ragged(ws.token_type_ids, ws.lengths),
        "offset_start": _ragged(ws.offsets[:, :, 0], ws.lengths),
        "offset_end": _ragged(ws.offsets[:, :, 1], ws.lengths),
        "example_index": pa.array(ws.example_index),
        "window_index": pa.array(ws.window_index),
        "cls_index": pa.array(ws.cls_index),
    }
    if ws.start_positions is not None:
        columns["start_positions"] = pa.array(ws.start_positions)
        columns["end_positions"] = pa.array(ws.end_positions)
    return datasets.Dataset(pa.table(columns))


def save_windows(ws: WindowSet, out_dir: str | os.PathLike) -> Path:
    """Write the window set (Arrow data + ``windows.json`` metadata) as a new folder, atomically."""
    out = Path(out_dir)
    bars = datasets.utils.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a bar per save is noise for sets this small and fast
    try:
        with staged_dir(out, kind="windows") as tmp:  # replaces only a window folder of ours
            to_dataset(ws).save_to_disk(str(tmp / "arrow"))
            write_json(tmp / "windows.json", {
                "config": dataclasses.asdict(ws.config), "strategy": ws.strategy, "pad_id": ws.pad_id,
                "example_ids": ws.example_ids, "fingerprint": ws.fingerprint(),
            })
    finally:
        if bars:
            datasets.enable_progress_bars()
    return out


def load_windows(path: str | os.PathLike) -> WindowSet:
    """Read a window set written by :func:`save_windows`."""
    from ..common.inputs import InputError, read_json
    from ..common.outputs import note_input

    path = Path(path)
    meta_file = path / "windows.json"
    meta = read_json(meta_file, "window set file")  # damaged JSON, surrogates…: named by the input layer
    note_input(path / "arrow")
    try:
        table = datasets.load_from_disk(str(path / "arrow")).data.table
        return _window_set(meta, table)
    except InputError:
        raise
    except FileNotFoundError as err:
        raise InputError(f"{path / 'arrow'}: window data missing ({err.filename or err}); the window set is "
                         "damaged: make it again") from None
    except (KeyError, TypeError, IndexError, ValueError, AttributeError, OSError, RecursionError,
            pa.ArrowException) as err:
        raise InputError(f"{path}: damaged window set ({type(err).__name__}: {err}); make it again") from None


def _window_set(meta: dict, table: pa.Table) -> WindowSet:
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError("windows.json has no 'config' mapping")
    config = WindowConfig(**meta["config"])
    lengths = pa.compute.list_value_length(table["input_ids"]).to_numpy(zero_copy_only=False).astype(np.int32)
    L = config.max_seq_len
    offsets = np.stack([_padded(table["offset_start"], lengths, L, -1, np.int32),
                        _padded(table["offset_end"], lengths, L, -1, np.int32)], axis=-1)
    flat = {name: table[name].to_numpy() for name in _FLAT if name in table.column_names}
    ws = WindowSet(
        config=config, example_ids=meta["example_ids"],
        example_index=flat["example_index"].astype(np.int32), window_index=flat["window_index"].astype(np.int32),
        input_ids=_padded(table["input_ids"], lengths, L, meta["pad_id"], np.int32), pad_id=meta["pad_id"],
        token_type_ids=_padded(table["token_type_ids"], lengths, L, 0, np.int8),
        lengths=lengths, offsets=offsets, cls_index=flat["cls_index"].astype(np.int32),
        start_positions=flat.get("start_positions"), end_positions=flat.get("end_positions"),
        strategy=meta["strategy"], tokenizer=meta["fingerprint"]["tokenizer"],
    )
    return ws


def cache_key(examples: Sequence[Example], tok: PreTrainedTokenizerBase, config: WindowConfig,
              strategy: Strategy, seed: int, labels: bool | None) -> str:
    """Hash of everything that determines a window set."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.question, ex.context, [(a.text, a.start) for a in ex.answers]],
                            ensure_ascii=False).encode())
    h.update(json.dumps([tokenizer_identity(tok), dataclasses.asdict(config), strategy, seed, labels],
                        sort_keys=True).encode())
    return h.hexdigest()[:24]


def cached_windows(examples: Sequence[Example], tok: PreTrainedTokenizerBase, config: WindowConfig,
                   cache_dir: str | os.PathLike, strategy: Strategy = "all", seed: int = 0,
                   labels: bool | None = None) -> WindowSet:
    """:func:`build_windows`, reusing a window set saved under ``cache_dir`` when one matches."""
    path = Path(cache_dir) / f"windows-{cache_key(examples, tok, config, strategy, seed, labels)}"
    if (path / "windows.json").exists():
        return load_windows(path)
    ws = build_windows(examples, tok, config, strategy=strategy, seed=seed, labels=labels)
    save_windows(ws, path)
    return ws
