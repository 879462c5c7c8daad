"""Training observability: metric files, TensorBoard and the loss plot (rates and MFU: :mod:`flops`).

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..common.outputs import append_open, atomic_open, ensure_dir

__all__ = ["Monitor", "format_metrics", "plot_loss_curve"]

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
    from ..common.inputs import InputError, decode, parse_json, read_bytes

    records = []
    if path.exists():
        # Line by line through the input layer: a torn last line may end inside a UTF-8 sequence.
        for n, raw in enumerate(read_bytes(path, "metrics file").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = parse_json(decode(raw, f"{path} line {n}"), f"{path} line {n}")
            except InputError as err:
                log.warning("skipping unreadable line: %s", err)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                log.warning("skipping %s line %d: not a JSON object", path, n)
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
        ensure_dir(self.out_dir)
        if self.jsonl_path.exists():
            # A crash mid-write can leave the last line without its newline; start clean so
            # the next record is not glued onto it.
            with open(self.jsonl_path, "rb") as fh:
                torn = fh.seek(0, os.SEEK_END) > 0 and fh.seek(-1, os.SEEK_END) >= 0 and fh.read(1) != b"\n"
            if torn:
                with append_open(self.jsonl_path) as fh:
                    fh.write("\n")
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
        with append_open(self.jsonl_path) as fh:
            fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        if any(key not in self._columns for key in record):
            self._rewrite_csv()  # the JSONL already holds this record
        else:
            with append_open(self.csv_path, newline="") as fh:
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
        try:
            plot_loss_curve(self.jsonl_path, self.png_path)
        except ImportError as err:  # a bare GPU image may lack matplotlib; the metrics files are what count
            log.warning("no %s: %s", self.png_path.name, err)

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
    with atomic_open(png_path, binary=True) as fh:  # a viewer refreshing the file never sees half an image
        fig.savefig(fh, format="png", dpi=120)
    return png_path
