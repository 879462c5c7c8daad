"""Model × windows → start/end logits of every window, in one process or sharded over ranks.

Windows are sorted by length and cut into batches padded only to their longest window. Rank
``r`` runs batches ``r, r + world, …``; every rank runs the same number of forward passes (the
last ones repeat a batch when the count does not divide), because ZeRO-3 gathers parameters
collectively in each forward. Rank 0 receives all logits, in window order.

:func:`run` is ``qa-scale predict``: a model directory × a data file → a logits store
(:mod:`logits_store`). Window and decode settings default to the model's training config
(``config.yaml`` beside the exported ``model/``), so that prediction cuts windows the way
training did; flags override them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .batches import collate
from .data import Example
from .decode import DecodeConfig
from .windows import WindowConfig, WindowSet

log = logging.getLogger(__name__)


def _batches(ws: WindowSet, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(-ws.lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def predict_logits(model: Callable, ws: WindowSet, batch_size: int = 32, rank: int = 0, world_size: int = 1,
                   device: torch.device | str = "cpu", progress=None) -> tuple[np.ndarray, np.ndarray] | None:
    """Start and end logits ``[W, max_seq_len]`` (float32, −inf on padding) on rank 0; None elsewhere.

    Args:
        model: a QA model or a DeepSpeed engine (called with input_ids, token_type_ids,
            attention_mask; returns ``start_logits``/``end_logits``), already in eval mode.
        ws: the windows.
        batch_size: windows per forward pass on each rank.
        rank, world_size: this process's place among the data-parallel ranks.
        device: where the batches go.
        progress: optional object with ``update(n)`` (a tqdm bar) advanced by windows done.
    """
    batches = _batches(ws, batch_size)
    mine = batches[rank::world_size]
    rounds = -(-len(batches) // world_size)
    arrays = {"input_ids": ws.input_ids, "token_type_ids": ws.token_type_ids}
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(rounds):
        idx = mine[k] if k < len(mine) else (mine[-1] if mine else batches[-1])
        out = model(**collate(arrays, ws.lengths, idx, ws.pad_id, device))
        if k < len(mine):
            results.append((idx, out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()))
            if progress is not None:
                progress.update(len(idx) * world_size)
    if world_size > 1:
        gathered = [None] * world_size if rank == 0 else None
        dist.gather_object(results, gathered, dst=0)
        if rank != 0:
            return None
        results = [r for part in gathered for r in part]
    W, L = ws.input_ids.shape
    start = np.full((W, L), -np.inf, np.float32)
    end = np.full((W, L), -np.inf, np.float32)
    for idx, s, e in results:
        start[idx, : s.shape[1]] = s
        end[idx, : e.shape[1]] = e
    return start, end


def training_config(model_dir: str | os.PathLike) -> Path | None:
    """The ``config.yaml`` that training saved beside (or in) a model directory, if any."""
    model_dir = Path(model_dir)
    for path in (model_dir / "config.yaml", model_dir.parent / "config.yaml"):
        if path.is_file():
            return path
    return None


def resolve_settings(model_dir: str | os.PathLike, windows: dict, decoding: dict) -> tuple[WindowConfig, DecodeConfig, dict]:
    """Window and decode settings: the given ones over the training config's over the defaults.

    Args:
        model_dir: the model directory (its training ``config.yaml`` is looked for).
        windows: ``WindowConfig`` fields given on the command line.
        decoding: ``DecodeConfig`` fields given on the command line.

    Returns:
        (window settings, decode settings, the training config's ``model`` section or ``{}``).
    """
    import yaml

    base_w, base_d, model = {}, {}, {}
    path = training_config(model_dir)
    if path is not None:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        base_w = dict((saved.get("data") or {}).get("windows") or {})
        base_d, model = dict(saved.get("decode") or {}), dict(saved.get("model") or {})
        log.info("window and decode settings default to %s", path)
    if {"doc_overlap", "doc_step"} & windows.keys():  # one stride given replaces the saved one
        base_w.pop("doc_overlap", None)
        base_w.pop("doc_step", None)
    try:
        return WindowConfig(**{**base_w, **windows}), DecodeConfig(**{**base_d, **decoding}), model
    except TypeError as err:
        raise ValueError(f"{path}: cannot read its window/decode settings: {err}") from None


def _tokenizer_spec(model_dir: Path, given: str | None, model_section: dict) -> str:
    if given:
        return given
    if any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return str(model_dir)
    spec = model_section.get("tokenizer") or model_section.get("name_or_path")
    if not spec:
        raise ValueError(f"{model_dir} holds no tokenizer and no training config names one: pass --tokenizer")
    return str(spec)


def predict_to_store(model: Callable, tok, examples: Sequence[Example], window_config: WindowConfig,
                     out: str | os.PathLike, *, batch_size: int = 32, precision: str = "fp32",
                     decode_config: DecodeConfig = DecodeConfig(), references: dict[str, list[str]] | None = None,
                     hw7: bool = False, model_info: dict | None = None, data_info: dict | None = None,
                     rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                     progress: bool = True) -> dict | None:
    """Windows → logits (sharded over ranks) → decoded answers → a logits store written by rank 0.

    The process group, if any, must already exist; every rank calls this with the same arguments.

    Args:
        model: the QA model, in eval mode, on ``device``.
        tok: its fast tokenizer.
        examples: the data set, in file order.
        window_config: how examples are cut into windows.
        out: the store folder (rank 0 writes it).
        batch_size: windows per forward pass on each rank.
        precision: ``"fp32"`` or ``"fp16"``: how logits are stored.
        decode_config: settings of the single-model predictions.
        references: id → reference texts; when given, the predictions are scored.
        hw7: also score HW7 accuracy.
        model_info, data_info: recorded in ``store.json``.
        rank, world_size, device: this process's place and device.
        progress: show a tqdm bar on rank 0.

    Returns:
        On rank 0 a summary (store path, windows, metrics, seconds); None elsewhere.
    """
    from . import logits_store, metrics
    from .decode import decode
    from .monitor import progress as bar_of
    from .windows import build_windows

    t0 = time.perf_counter()
    ws = build_windows(examples, tok, window_config)
    bar = bar_of(len(ws), progress and rank == 0, "predict")
    logits = predict_logits(model, ws, batch_size, rank, world_size, device, progress=bar)
    bar.close()
    if logits is None:
        return None
    start, end = (logits_store.cast(x, precision) for x in logits)
    decoded = decode(ws, start, end, examples, decode_config, nbest=True)
    scores = None
    if references is not None:
        scores = metrics.evaluate(decoded.predictions, references, hw7=hw7).to_dict()
    seconds = round(time.perf_counter() - t0, 3)
    store = logits_store.write_store(
        out, ws, examples, start, end, decoded, precision=precision, decode_config=decode_config,
        model=model_info, data=data_info, metrics=scores,
        extra={"predict": {"batch_size": batch_size, "world_size": world_size, "device": str(device),
                           "seconds": seconds}})
    return {"store": str(store.path), "examples": len(examples), "windows": len(ws), "precision": precision,
            "windows_config": store.meta["windows"], "world_size": world_size, "metrics": scores,
            "no_span": len(decoded.no_span), "seconds": seconds}


def run(model_dir: str | os.PathLike, data_path: str | os.PathLike, out: str | os.PathLike, *,
        tokenizer: str | None = None, windows: dict | None = None, decoding: dict | None = None,
        batch_size: int = 32, precision: str = "fp32", compute: str = "fp32",
        references: str | os.PathLike | None = None, mode: str = "lenient", fmt: str = "auto") -> dict | None:
    """``qa-scale predict``: one process, or every rank under the ``deepspeed`` launcher.

    Args:
        model_dir: a Hugging Face QA model directory (e.g. ``runs/x/model`` from training).
        data_path: the data file (HW7 or SQuAD style).
        out: the logits store to write.
        tokenizer: tokenizer spec; default: the model directory's own, else the training config's.
        windows, decoding: ``WindowConfig`` / ``DecodeConfig`` fields that override the training
            config's (see :func:`resolve_settings`).
        batch_size: windows per forward pass on each rank.
        precision: storage dtype of the logits, ``"fp32"`` or ``"fp16"``.
        compute: dtype of the forward pass, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (GPUs).
        references: a data file whose answers score the predictions.
        mode, fmt: how the data file is read (see :func:`qa_scale.data.load`).

    Returns:
        Rank 0's summary; None on the other ranks.
    """
    from . import data
    from .logits_store import model_identity
    from .model import check_vocab, load_qa_model
    from .tokenization import load_tokenizer
    from .train import init_distributed

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    window_config, decode_config, model_section = resolve_settings(model_dir, windows or {}, decoding or {})
    ds = data.load(data_path, mode=mode, fmt=fmt)
    tok_spec = _tokenizer_spec(model_dir, tokenizer, model_section)
    tok = load_tokenizer(tok_spec)
    d = init_distributed()
    model = load_qa_model(str(model_dir))
    check_vocab(model, tok)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[compute]
    model = model.to(device=d.device, dtype=dtype).eval()
    refs, hw7 = None, False
    if references is not None:
        refs = data.load_references(references)
        hw7 = data.detect_format(json.loads(Path(references).read_text(encoding="utf-8"))) == "hw7"
    data_info = {"path": str(data_path), "format": ds.report.format, "report": ds.report.to_dict(max_issues=10)}
    model_info = {**model_identity(model_dir), "tokenizer": tok_spec, "compute": compute}
    return predict_to_store(model, tok, ds.examples, window_config, out, batch_size=batch_size,
                            precision=precision, decode_config=decode_config, references=refs, hw7=hw7,
                            model_info=model_info, data_info=data_info, rank=d.rank,
                            world_size=d.world_size, device=d.device)
