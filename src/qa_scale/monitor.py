"""Training observability: metric files, TensorBoard, loss plot, throughput and MFU.

Only rank 0 builds an enabled :class:`Monitor`; every other rank builds a disabled one, whose
methods do nothing, so no two processes ever write the same file. Each ``log`` call lands in
``metrics.jsonl`` (the source of truth, flushed per call), ``metrics.csv`` (for spreadsheets)
and TensorBoard; ``close`` draws ``loss_curve.png`` from the JSONL.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .files import atomic_open

__all__ = [
    "Monitor", "Throughput", "encoder_flops_per_token", "format_metrics", "mfu",
    "peak_flops", "peak_memory", "plot_loss_curve", "progress",
]

log = logging.getLogger(__name__)
_warned_no_tensorboard = False


def _clean(key: str, value: Any) -> float | int | bool | None:
    """A JSON-safe scalar: tensors and NumPy scalars unwrapped, NaN and inf become None."""
    if hasattr(value, "item"):  # 0-d tensors and NumPy scalars, so callers need not convert
        value = value.item()
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"metric {key!r} must be a number or None, got {type(value).__name__}")


def _read_jsonl(path: Path) -> list[dict]:
    """Records of a JSONL file; a line torn by a crash mid-write is skipped, not fatal."""
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping unreadable line in %s: %.60s", path, line)
    return records


class Monitor:
    """Metric logger for one training run (JSONL + CSV + TensorBoard + loss plot).

    Args:
        out_dir: Folder for ``metrics.jsonl``, ``metrics.csv``, ``tensorboard/`` and
            ``loss_curve.png``. Created when enabled. An existing ``metrics.jsonl`` is
            appended to, so a resumed run continues the same files.
        enabled: False on every rank but 0: all methods then do nothing on disk.
        tensorboard: Also write TensorBoard scalars (skipped with a warning when the
            ``tensorboard`` package is missing).
    """

    def __init__(self, out_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.jsonl_path = self.out_dir / "metrics.jsonl"
        self.csv_path = self.out_dir / "metrics.csv"
        self.png_path = self.out_dir / "loss_curve.png"
        self._use_tensorboard = tensorboard
        self._writer = None
        self._closed = False
        self._columns: list[str] = []
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.jsonl_path.exists():
            # A crash mid-write can leave the last line without its newline; start clean so
            # the next record is not glued onto it.
            with open(self.jsonl_path, "rb+") as fh:
                if fh.seek(0, os.SEEK_END) > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")
            self._rewrite_csv()

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "train") -> None:
        """Record ``metrics`` at ``step`` under split ``prefix`` (e.g. "train", "dev").

        Args:
            step: Global optimizer step (the x axis everywhere).
            metrics: Scalars by name; None, NaN and inf are stored as null / empty.
            prefix: Split name, written as the ``split`` field and the TensorBoard tag prefix.
        """
        if not self.enabled:
            return
        clean = {key: _clean(key, value) for key, value in metrics.items()}
        if {"step", "split"} & clean.keys():
            raise ValueError("'step' and 'split' are reserved metric names")
        record = {"step": int(step), "split": prefix, **clean}
        # Opened per call: closing flushes, so a crash loses at most the line being written.
        with open(self.jsonl_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        if any(key not in self._columns for key in record):
            self._rewrite_csv()  # the JSONL already holds this record
        else:
            with open(self.csv_path, "a", encoding="utf-8", newline="") as fh:
                csv.DictWriter(fh, self._columns, lineterminator="\n").writerow(record)
        writer = self._tensorboard()
        if writer is not None:
            for key, value in clean.items():
                if value is not None:
                    writer.add_scalar(f"{prefix}/{key}", float(value), global_step=int(step))

    def _rewrite_csv(self) -> None:
        """Rebuild the CSV from the JSONL so that every row has the current set of columns."""
        records = _read_jsonl(self.jsonl_path)
        columns = ["step", "split"]
        for record in records:
            columns += [key for key in record if key not in columns]
        with atomic_open(self.csv_path, newline="") as fh:
            writer = csv.DictWriter(fh, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
        self._columns = columns

    def _tensorboard(self):
        """The SummaryWriter, made on first use; None when disabled or not installed."""
        global _warned_no_tensorboard
        if self._writer is None and self._use_tensorboard:
            try:  # imported here: TensorBoard is optional and slow to import
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                if not _warned_no_tensorboard:
                    log.warning("TensorBoard logging off (%s); metrics still go to JSONL/CSV", err)
                    _warned_no_tensorboard = True
                self._use_tensorboard = False
                return None
            self._writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self._writer

    def console(self, step: int, metrics: Mapping[str, Any]) -> str:
        """One short line for ``tqdm.set_postfix_str`` or a log message.

        Pure formatting, so it works on disabled monitors too. See :func:`format_metrics`.
        """
        return format_metrics(step, metrics)

    def close(self) -> None:
        """Flush and close TensorBoard and draw ``loss_curve.png``. Safe to call twice."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        plot_loss_curve(self.jsonl_path, self.png_path)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # also after an exception: the curve up to a crash is worth having


def _format_value(key: str, value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return str(value)  # "nan" / "inf" must stay visible: they mean divergence
    if key == "mfu":
        return f"{value:.1%}"
    if key == "lr" or key.endswith("_lr") or (value != 0 and abs(value) < 1e-3):
        return f"{value:.1e}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


# Rates read better as "1,234 tok/s" than as "tokens_per_s 1,234".
_UNITS = {"tokens_per_s": "tok/s", "samples_per_s": "samples/s"}


def format_metrics(step: int, metrics: Mapping[str, Any]) -> str:
    """``"step 1,200 | loss 1.234 | lr 2.0e-05 | 1,234 tok/s | mfu 41.2%"``.

    Four significant digits by default; learning rates and tiny values in scientific
    notation; values of 1000 or more as thousands-separated integers; ``mfu`` (a fraction)
    as a percentage; NaN and inf shown as such.
    """
    parts = [f"step {int(step):,}"]
    for key, value in metrics.items():
        text = _format_value(key, value)
        parts.append(f"{text} {_UNITS[key]}" if key in _UNITS else f"{key} {text}")
    return " | ".join(parts)


def _ema(values: list[float]) -> list[float]:
    """Exponential moving average spanning about 5% of the points (none for short runs)."""
    alpha = 2 / (max(1, len(values) // 20) + 1)
    out, avg = [], values[0]
    for v in values:
        avg = alpha * v + (1 - alpha) * avg
        out.append(avg)
    return out


def plot_loss_curve(jsonl_path: str | os.PathLike, png_path: str | os.PathLike) -> Path | None:
    """Draw train loss (raw and smoothed) and, when logged, dev EM/F1 against step.

    Args:
        jsonl_path: A ``metrics.jsonl`` written by :class:`Monitor`.
        png_path: Where to write the PNG (atomically).

    Returns:
        ``png_path``, or None when there is nothing to plot (no PNG is written).
    """
    # Figure + FigureCanvasAgg, not pyplot: no global backend switch, no GUI, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = _read_jsonl(Path(jsonl_path))

    def series(split: str, key: str) -> tuple[list[int], list[float]]:
        rows = [r for r in records if r.get("split") == split and r.get(key) is not None]
        return [r["step"] for r in rows], [r[key] for r in rows]

    train = series("train", "loss")
    dev_loss, em, f1 = series("dev", "loss"), series("dev", "em"), series("dev", "f1")
    has_dev_scores = bool(em[0] or f1[0])
    if not (train[0] or dev_loss[0] or has_dev_scores):
        return None

    fig = Figure(figsize=(8, 7 if has_dev_scores else 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2 if has_dev_scores else 1, 1, sharex=True, squeeze=False)[:, 0]
    ax = axes[0]
    if train[0]:
        ax.plot(*train, color="tab:blue", alpha=0.3, linewidth=1, label="train loss")
        ax.plot(train[0], _ema(train[1]), color="tab:blue", linewidth=2,
                label="train loss (smoothed)")
    if dev_loss[0]:
        ax.plot(*dev_loss, "o-", color="tab:orange", label="dev loss")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if has_dev_scores:
        for (steps, values), name in ((em, "dev EM"), (f1, "dev F1")):
            if steps:
                axes[1].plot(steps, values, "o-", label=name)
        axes[1].set_ylabel("score (%)")
        axes[1].grid(alpha=0.3)
        axes[1].legend()
    axes[-1].set_xlabel("step")

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(png_path, binary=True) as fh:  # a viewer refreshing the file never sees half an image
        fig.savefig(fh, format="png", dpi=120)
    return png_path


class Throughput:
    """Samples and tokens per second between log points.

    Counts are whatever the caller passes: per-rank counts give per-GPU rates (what
    :func:`mfu` wants), global counts give job-wide rates.

    Args:
        clock: Seconds as a float; ``time.perf_counter`` unless a test substitutes one.
    """

    def __init__(self, clock: Callable[[], float] | None = None):
        self._clock = clock or time.perf_counter
        self.reset()

    def reset(self) -> None:
        """Zero the counts and restart the clock (e.g. after evaluation, so it is not counted)."""
        self.samples = 0
        self.tokens = 0
        self._start = self._clock()

    def update(self, samples: int, tokens: int) -> None:
        """Add one step's work."""
        self.samples += samples
        self.tokens += tokens

    def rates(self) -> dict[str, float]:
        """``{"samples_per_s", "tokens_per_s"}`` since the last call or reset; then reset."""
        now = self._clock()
        elapsed = now - self._start
        out = {
            "samples_per_s": self.samples / elapsed if elapsed > 0 else 0.0,
            "tokens_per_s": self.tokens / elapsed if elapsed > 0 else 0.0,
        }
        self.samples = self.tokens = 0
        self._start = now  # the same reading: no time falls between two windows
        return out


def encoder_flops_per_token(
    n_params_non_embedding: int, n_layers: int, hidden: int, seq_len: int, training: bool = True
) -> float:
    """Model FLOPs per token of a bidirectional Transformer encoder.

    Forward: ``2·N + 4·n_layers·seq_len·hidden``. Every non-embedding weight is used in one
    multiply-add per token (2 FLOPs each: the ``2·N`` term, the accounting of Kaplan et al.
    2020, Table 1). Attention adds two parameter-free matmuls per layer: scores ``Q·Kᵀ`` and
    the weighted sum over ``V``, each ``seq_len·hidden`` multiply-adds per token, hence
    ``4·n_layers·seq_len·hidden``. The often-quoted ``2·n_layer·n_ctx·d`` (Kaplan et al.)
    is half that, which fits a causal decoder whose tokens see half the context on average;
    an encoder token sees every position, as in PaLM's appendix B training count
    ``6N + 12·L·H·Q·T``. Training costs 3× the forward: the backward pass
    computes gradients for both activations and weights, two matmuls per forward matmul.
    Embedding lookups, softmax, norms and activation recomputation are not counted, as
    usual for MFU.

    Args:
        n_params_non_embedding: Parameters excluding token/position/type embeddings.
        n_layers: Encoder layers.
        hidden: Model width (= heads × head size).
        seq_len: Tokens per window (the padded length actually computed).
        training: Count forward + backward (×3) rather than forward only.
    """
    forward = 2 * n_params_non_embedding + 4 * n_layers * seq_len * hidden
    return float(3 * forward if training else forward)


# Dense (no 2:4 sparsity) tensor-core peaks from vendor datasheets, in FLOP/s, per GPU.
# Matched in order against torch.cuda.get_device_name(); whole-word patterns so that "A10"
# does not match "A100" nor "L4" match "L40S". An H100 SXM reports "NVIDIA H100 80GB HBM3".
_BF16_FP16 = ("bf16", "fp16")
_PEAKS: tuple[tuple[str, tuple[str, ...], float | None], ...] = (
    (r"H[12]00 NVL", _BF16_FP16, None),  # lower clocks than SXM; no figure we are sure of
    (r"\bH[18]00\b.*\bPCIe\b", _BF16_FP16, 756e12),
    (r"\bG?H[128]00\b", _BF16_FP16, 989e12),  # H100/H800 SXM, H200, GH200
    (r"\bA[18]00\b", _BF16_FP16, 312e12),
    (r"\bL40S\b", _BF16_FP16, 362e12),
    (r"\bL40\b", _BF16_FP16, 181e12),
    (r"\bL4\b", _BF16_FP16, 121e12),
    (r"\bA10\b", _BF16_FP16, 125e12),
    (r"\bRTX 4090\b(?! D\b)", _BF16_FP16, 165e12),  # fp32 accumulate, as training uses
    (r"\bV100S\b", ("fp16",), 130e12),  # Volta has no bf16
    (r"\bV100\b.*\bPCIe\b", ("fp16",), 112e12),
    (r"\bV100\b", ("fp16",), 125e12),
)
_DTYPES = {"bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16"}


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of one GPU for bf16/fp16 matmuls, or None when not known.

    Args:
        device_name: ``torch.cuda.get_device_name()``.
        dtype: "bf16"/"bfloat16"/"fp16"/"float16" (a ``torch.dtype`` works too). Anything
            else, fp32 included, gives None: MFU is quoted against the half-precision peak.
    """
    dtype = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
    for pattern, dtypes, peak in _PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak if dtype in dtypes else None
    return None


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation, a fraction: achieved model FLOP/s over ``peak``.

    ``tokens_per_s`` and ``peak`` must describe the same hardware (one GPU, or multiply
    ``peak`` by the world size for job-wide rates). None when the peak is unknown.
    """
    if not peak:
        return None
    return tokens_per_s * flops_per_token / peak


def peak_memory(device) -> tuple[str, int]:
    """(what was measured, bytes): CUDA max allocated on a GPU, else this process's peak RSS.

    The two are not the same quantity: RSS counts the interpreter and libraries too, so only
    compare runs measured the same way (the ``kind`` says which).
    """
    import resource

    import torch

    if torch.device(device).type == "cuda":
        return "cuda_max_allocated", int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return "peak_rss", int(rss if os.uname().sysname == "Darwin" else rss * 1024)


def progress(total: int | None, enabled: bool, desc: str | None = None) -> tqdm:
    """A tqdm bar on rank 0; elsewhere ``tqdm(disable=True)``, whose methods do nothing.

    Low smoothing keeps the ETA near the run's average speed, which pauses for evaluation
    and checkpointing would otherwise throw about.
    """
    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, smoothing=0.05)
