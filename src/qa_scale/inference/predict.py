"""``qa-scale predict``: a model directory × a data file → a logits store.

Window and decode settings default to the model's training config (``config.yaml`` beside the
exported ``model/``), so that prediction cuts windows the way training did; flags override them.
The logits are computed by :func:`.forward.predict_logits`, sharded over the ranks of the
process group when run under the ``deepspeed`` launcher; rank 0 decodes and writes the store.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import Example
from ..data.windows import WindowConfig
from ..evaluation.decode import DecodeConfig
from ..runtime.distributed import Dist, single
from .forward import predict_logits

log = logging.getLogger(__name__)


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
    from ..common.inputs import InputError, read_mapping

    def section(obj: dict, *keys: str) -> dict:
        for n, key in enumerate(keys):
            obj = obj.get(key) or {}
            if not isinstance(obj, dict):
                raise InputError(f"{path}: {'.'.join(keys[: n + 1])}: expected a mapping of settings, "
                                 f"got {type(obj).__name__}")
        return dict(obj)

    base_w, base_d, model = {}, {}, {}
    path = training_config(model_dir)
    if path is not None:
        saved = read_mapping(path, "training config")  # errors name the file and line or key
        base_w, base_d, model = section(saved, "data", "windows"), section(saved, "decode"), section(saved, "model")
        log.info("window and decode settings default to %s", path)
    if {"doc_overlap", "doc_step"} & windows.keys():  # one stride given replaces the saved one
        base_w.pop("doc_overlap", None)
        base_w.pop("doc_step", None)
    try:
        return WindowConfig(**{**base_w, **windows}), DecodeConfig(**{**base_d, **decoding}), model
    except TypeError as err:
        raise ValueError(f"{path}: cannot read its window/decode settings: {err}") from None
    except ValueError as err:
        if path is None or isinstance(err, InputError):
            raise
        raise ValueError(f"{err} (settings from the command line over {path})") from None


def tokenizer_spec(model_dir: Path, given: str | None, model_section: dict) -> str:
    """The tokenizer to load: the given one, the model directory's own, else the training config's."""
    if given:
        return given
    if any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return str(model_dir)
    spec = model_section.get("tokenizer") or model_section.get("name_or_path")
    if not spec:
        raise ValueError(f"{model_dir} holds no tokenizer and no training config names one: pass --tokenizer")
    return str(spec)


AUTO_START = 256  # first batch size tried by ``--batch-size auto``


def _logits(model: Callable, ws, batch_size: int | str, d: Dist, bar) -> tuple[int, tuple | None]:
    """(the batch size used, the logits) — searching the largest that fits when ``batch_size`` is "auto"."""
    if batch_size != "auto":
        return int(batch_size), predict_logits(model, ws, int(batch_size), d, progress=bar)
    if d.world_size > 1:  # ranks that shrank differently would split the windows differently
        raise ValueError("--batch-size auto works in one process; under the launcher give a number")
    from accelerate.utils import find_executable_batch_size

    size = AUTO_START

    def halve() -> int:
        nonlocal size
        size //= 2
        bar.reset()
        return size

    @find_executable_batch_size(starting_batch_size=size, reduce_batch_size_fn=halve)
    def attempt(batch: int):
        return batch, predict_logits(model, ws, batch, d, progress=bar)

    return attempt()


def predict_to_store(model: Callable, tok, examples: Sequence[Example], window_config: WindowConfig,
                     out: str | os.PathLike, *, batch_size: int | str = 32, precision: str = "fp32",
                     decode_config: DecodeConfig = DecodeConfig(), references: dict[str, list[str]] | None = None,
                     hw7: bool = False, model_info: dict | None = None, data_info: dict | None = None,
                     d: Dist | None = None, progress: bool = True) -> dict | None:
    """Windows → logits (sharded over ranks) → decoded answers → a logits store written by rank 0.

    The process group, if any, must already exist; every rank calls this with the same arguments.

    Args:
        model: the QA model, in eval mode, on ``device``.
        tok: its fast tokenizer.
        examples: the data set, in file order.
        window_config: how examples are cut into windows.
        out: the store folder (rank 0 writes it).
        batch_size: windows per forward pass on each rank, or ``"auto"`` (one process only): the
            largest that fits, from 256 down, halved on each out-of-memory error.
        precision: ``"fp32"`` or ``"fp16"``: how logits are stored.
        decode_config: settings of the single-model predictions.
        references: id → reference texts; when given, the predictions are scored.
        hw7: also score HW7 accuracy.
        model_info, data_info: recorded in ``store.json``.
        d: this process's place among the ranks and its device (default: alone, on the CPU).
        progress: show a tqdm bar on rank 0.

    Returns:
        On rank 0 a summary (store path, windows, metrics, seconds); None elsewhere.
    """
    from ..common.progress import progress as bar_of
    from ..data.windows import build_windows
    from ..evaluation import metrics
    from ..evaluation.decode import decode
    from . import logits_store

    d = d or single()
    t0 = time.perf_counter()
    ws = build_windows(examples, tok, window_config)
    bar = bar_of(len(ws), progress and d.main, "predict")
    batch_size, logits = _logits(model, ws, batch_size, d, bar)
    bar.close()
    if logits is None:
        return None
    bad = np.union1d(*(logits_store.nonfinite_windows(x, ws.lengths) for x in logits))
    if len(bad):
        first = ws.example_ids[ws.example_index[bad[0]]]
        raise ValueError(f"{(model_info or {}).get('path', 'the model')}: non-finite logits (NaN or inf) on "
                         f"{len(bad)} of {len(ws)} windows, first in example {first}: the model has diverged or "
                         "its weights are damaged; nothing was written")
    start, end = (logits_store.cast(x, precision) for x in logits)
    decoded = decode(ws, start, end, examples, decode_config, nbest=True)
    scores = None
    if references is not None:
        scores = metrics.evaluate(decoded.predictions, references, hw7=hw7,
                                  predictions_from=(data_info or {}).get("path")).to_dict()
    seconds = round(time.perf_counter() - t0, 3)
    store = logits_store.write_store(
        out, ws, examples, start, end, decoded, precision=precision, decode_config=decode_config,
        model=model_info, data=data_info, metrics=scores,
        extra={"predict": {"batch_size": batch_size, "world_size": d.world_size, "device": str(d.device),
                           "seconds": seconds}})
    return {"store": str(store.path), "examples": len(examples), "windows": len(ws), "precision": precision,
            "windows_config": store.meta["windows"], "world_size": d.world_size, "metrics": scores,
            "no_span": len(decoded.no_span), "seconds": seconds}


def run(model_dir: str | os.PathLike, data_path: str | os.PathLike, out: str | os.PathLike, *,
        tokenizer: str | None = None, windows: dict | None = None, decoding: dict | None = None,
        batch_size: int | str = 32, precision: str = "fp32", compute: str = "fp32", device: str = "auto",
        references: str | os.PathLike | None = None, mode: str = "lenient", fmt: str = "auto") -> dict | None:
    """``qa-scale predict``: one process, or every rank under the ``deepspeed`` launcher.

    Args:
        model_dir: a Hugging Face QA model directory (e.g. ``runs/x/model`` from training).
        data_path: the data file (HW7 or SQuAD style).
        out: the logits store to write.
        tokenizer: tokenizer spec; default: the model directory's own, else the training config's.
        windows, decoding: ``WindowConfig`` / ``DecodeConfig`` fields that override the training
            config's (see :func:`resolve_settings`).
        batch_size: windows per forward pass on each rank, or ``"auto"`` (see :func:`predict_to_store`).
        precision: storage dtype of the logits, ``"fp32"`` or ``"fp16"``.
        compute: dtype of the forward pass, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (GPUs).
        device: ``auto``, ``cuda`` or ``cpu`` (see :func:`qa_scale.runtime.distributed.choose_device`).
        references: a data file whose answers score the predictions.
        mode, fmt: how the data file is read (see :func:`qa_scale.data.load`).

    Returns:
        Rank 0's summary; None on the other ranks.
    """
    from .. import data
    from ..common.outputs import check_replaceable
    from ..data.tokenization import load_tokenizer
    from ..evaluation import metrics
    from ..modeling.model import check_inputs, load_qa_model
    from ..runtime import distributed
    from .logits_store import model_identity

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    check_replaceable(out, "store")  # before any work: an unrelated folder is never replaced
    window_config, decode_config, model_section = resolve_settings(model_dir, windows or {}, decoding or {})
    ds = data.load(data_path, mode=mode, fmt=fmt).require_examples()
    refs, hw7 = None, False
    if references is not None:  # checked before any model is loaded: a score must mean something
        refs = data.load_references(references)
        hw7 = refs.exact_accuracy
        metrics.check_scorable([ex.id for ex in ds.examples], refs, predictions_from=data_path)
    tok_spec = tokenizer_spec(model_dir, tokenizer, model_section)
    tok = load_tokenizer(tok_spec)
    d = distributed.init(device)
    model = load_qa_model(str(model_dir))  # weights must cover the model (no new head when predicting)
    check_inputs(model, tok, window_config)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[compute]
    model = model.to(device=d.device, dtype=dtype).eval()
    data_info = {"path": str(data_path), "format": ds.report.format, "report": ds.report.to_dict(max_issues=10)}
    model_info = {**model_identity(model_dir), "tokenizer": tok_spec, "compute": compute}
    return predict_to_store(model, tok, ds.examples, window_config, out, batch_size=batch_size,
                            precision=precision, decode_config=decode_config, references=refs, hw7=hw7,
                            model_info=model_info, data_info=data_info, d=d)
