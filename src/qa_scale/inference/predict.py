"""``qa-scale predict``: a model directory × a data file → a logits store.

Window and decode settings default to the model's training config (``config.yaml`` beside the
exported ``model/``), so that prediction cuts windows the way training did; flags override them.
The logits are computed by :func:`.forward.predict_logits`, sharded over the ranks of the
process group when run under the ``deepspeed`` launcher; rank 0 decodes and writes the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import numpy as np

from ..data import Example
from ..runtime.distributed import Dist, single
from .forward import predict_logits
from .options import ReaderOptions
from .reader import Reader, load_reader, reader_settings, resolve_compute

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class StoreOptions:
    """How :func:`predict_to_store` runs and what the store records beside the logits."""

    batch_size: int | str = 32  # windows per forward pass on each rank, or "auto" (one process only)
    precision: Literal["fp32", "fp16"] = "fp32"  # how the logits are stored
    references: Mapping[str, list[str]] | None = None  # id → reference texts: the predictions are scored
    model_info: dict | None = None  # recorded in store.json (where the logits came from)
    data_info: dict | None = None  # the data file's path, format and validation report
    progress: bool = True  # a tqdm bar on rank 0


def predict_to_store(reader: Reader, examples: Sequence[Example], out: str | Path,
                     options: StoreOptions = StoreOptions(), d: Dist | None = None) -> dict | None:
    """Windows → logits (sharded over ranks) → decoded answers → a logits store written by rank 0.

    The process group, if any, must already exist; every rank calls this with the same arguments.

    Args:
        reader: the model (in eval mode, on ``d``'s device), its tokenizer, window and decode settings.
        examples: the data set, in file order.
        out: the store folder (rank 0 writes it).
        options: batch size (``"auto"``: the largest that fits, from 256 down, halved on each
            out-of-memory error; one process only), storage dtype, references (HW7 accuracy too
            when they are an HW7 file's), what to record.
        d: this process's place among the ranks and its device (default: alone, on the CPU).

    Returns:
        On rank 0 a summary (store path, windows, metrics, seconds); None elsewhere.
    """
    from ..common.progress import progress as bar_of
    from ..data.windows import build_windows
    from ..evaluation import metrics
    from ..evaluation.decode import decode
    from . import logits_store

    d, o = d or single(), options
    t0 = time.perf_counter()
    ws = build_windows(examples, reader.tokenizer, reader.settings.windows)
    bar = bar_of(len(ws), o.progress and d.main, "predict")
    batch_size, logits = _logits(reader.model, ws, o.batch_size, d, bar)
    bar.close()
    if logits is None:
        return None
    bad = np.union1d(*(logits_store.nonfinite_windows(x, ws.lengths) for x in logits))
    if len(bad):
        first = ws.example_ids[ws.example_index[bad[0]]]
        raise ValueError(f"{(o.model_info or {}).get('path', 'the model')}: non-finite logits (NaN or inf) on "
                         f"{len(bad)} of {len(ws)} windows, first in example {first}: the model has diverged or "
                         "its weights are damaged; nothing was written")
    start, end = (logits_store.cast(x, o.precision) for x in logits)
    decoded = decode(ws, start, end, examples, reader.settings.decoding, nbest=True)
    scores = None
    if o.references is not None:
        scores = metrics.evaluate(decoded.predictions, o.references, hw7=getattr(o.references, "exact_accuracy", False),
                                  predictions_from=(o.data_info or {}).get("path")).to_dict()
    seconds = round(time.perf_counter() - t0, 3)
    store = logits_store.write_store(out, logits_store.StoreContent(
        ws, examples, start, end, decoded, precision=o.precision, decode_config=reader.settings.decoding,
        model=o.model_info, data=o.data_info, metrics=scores,
        extra={"predict": {"batch_size": batch_size, "world_size": d.world_size, "device": str(d.device),
                           "seconds": seconds}}))
    return {"store": str(store.path), "examples": len(examples), "windows": len(ws), "precision": o.precision,
            "windows_config": store.meta["windows"], "world_size": d.world_size, "metrics": scores,
            "no_span": len(decoded.no_span), "seconds": seconds}


@dataclass(frozen=True)
class PredictOptions:
    """One ``qa-scale predict``: which model, which data, where to, and how."""

    model: Path  # a Hugging Face QA model directory (``runs/x/model``) or a LoRA run's ``adapter/``
    data: Path  # the data file (HW7 or SQuAD style)
    out: Path  # the logits store to write
    reader: ReaderOptions = field(default_factory=ReaderOptions)
    precision: Literal["fp32", "fp16"] = "fp32"  # storage dtype of the logits
    references: Path | None = None  # a data file whose answers score the predictions
    mode: Literal["strict", "lenient"] = "lenient"  # how the data file is read (see qa_scale.data.load)
    fmt: str = "auto"


def run(options: PredictOptions) -> dict | None:
    """``qa-scale predict``: one process, or every rank under the ``deepspeed`` launcher.

    Everything cheap is checked before the model loads: the output folder, the settings (the
    command line's over the training config's, see :func:`~.reader.reader_settings`), the data
    and the references.

    Returns:
        Rank 0's summary; None on the other ranks.
    """
    from .. import data
    from ..common.outputs import check_replaceable
    from ..data.tokenization import load_tokenizer
    from ..evaluation import metrics
    from ..runtime import distributed
    from .logits_store import model_identity

    o = options
    settings = reader_settings(o.model, o.reader)
    check_replaceable(o.out, "store")  # before any work: an unrelated folder is never replaced
    ds = data.load(o.data, mode=o.mode, fmt=o.fmt).require_examples()
    refs = None
    if o.references is not None:  # checked before any model is loaded: a score must mean something
        refs = data.load_references(o.references)
        metrics.check_scorable([ex.id for ex in ds.examples], refs, predictions_from=o.data)
    tok = load_tokenizer(settings.tokenizer)
    d = distributed.init(o.reader.device)
    reader = load_reader(settings, d.device, resolve_compute(o.reader.compute, d.device, record=True), tok)
    data_info = {"path": str(o.data), "format": ds.report.format, "report": ds.report.to_dict(max_issues=10)}
    model_info = {**model_identity(o.model), "tokenizer": settings.tokenizer, "compute": reader.compute}
    return predict_to_store(reader, ds.examples, o.out, StoreOptions(
        o.reader.batch_size, o.precision, refs, model_info, data_info), d)
