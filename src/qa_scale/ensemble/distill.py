"""Distillation: one student reader trained on a teacher ensemble's span distributions.

The teacher is an ensemble over the **training** windows: one logits store per member, made by
``qa-scale predict MEMBER/model TRAIN_FILE`` (so each member runs once, sharded over ranks),
combined with the ensemble recipe's weights and rule by :func:`.combine.mean_logits` — the very
arithmetic ``qa-scale ensemble`` decodes, so the teacher *is* the ensemble. The mean is written
once (rank 0, the others wait) as two float32 ``.npy`` files in the run's cache, accumulated in
place through memory maps, and training reads them memory-mapped: each micro-batch reads only its
own rows, so a store set larger than memory trains as well as a small one. A float32 teacher
takes ``2 × windows × max_seq_len × 4`` bytes (at 384 tokens: 3 KiB per window).

The stores must hold exactly the student's training windows: tokenizer identity, window
settings, example ids and every window's input ids are compared (the stores' fingerprints), and
the first difference stops the run before any step. ``data.strategy`` must be ``all``: other
strategies place windows at random, which no store can have seen.

Loss of a window, start and end alike (then averaged, as the gold loss is)::

    kl_weight · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − kl_weight) · CE(gold)

over the window's tokens (padding has probability 0 on both sides; T² keeps the gradient's scale
as T changes, as in Hinton et al. 2015). A window without the answer keeps the teacher's whole
distribution in the KL term: that is where members disagree most, and where the gold label only
says "no answer here" (the CLS token).

Written here, not taken from a library: transformers' Trainer has no distillation, and the KL
must be computed over each window's real tokens with the teacher read from stores row by row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..common.inputs import load_npy
from ..common.outputs import staged_dir, write_json
from ..data.batches import RowSubset
from ..data.windows import WindowSet, fingerprint_difference
from ..inference.logits_store import LOGITS, Store, open_store
from ..runtime.distributed import Dist, main_first
from ..training.recipe import DistillSection, TrainConfig
from ..training.tasks import QATask
from . import rules
from .combine import check_compatible, mean_logits, normalise
from .errors import EnsembleError
from .spec import load_recipe, resolve

log = logging.getLogger(__name__)
TEACHER_KEYS = ("teacher_start", "teacher_end")  # the batch's teacher logits, beside the model's inputs


def teacher_members(section: DistillSection) -> tuple[list[Store], np.ndarray, str]:
    """The teacher's stores, normalised weights and combination rule (reads store.json files and the recipe only).

    Raises:
        EnsembleError / StoreError / InputError: a missing or damaged store or recipe, stores that cannot be
            averaged, or stores that match the recipe's members badly (each named).
    """
    stores = [open_store(p) for p in section.stores]
    weights, rule = None, rules.DEFAULT
    if section.teacher:
        recipe = load_recipe(section.teacher)
        stores, weights = resolve(recipe, stores)
        rule = recipe.combine
    check_compatible(stores)
    return stores, normalise(weights, len(stores)), rule


def check_windows(stores: Sequence[Store], ws: WindowSet) -> None:
    """Refuse stores whose windows are not the student's training windows, naming the first difference."""
    diff = fingerprint_difference(ws.fingerprint(), stores[0].fingerprint)
    if diff is not None:
        raise EnsembleError(f"{stores[0].path} does not hold this run's training windows ({diff}): predict the "
                            "training file with the student's tokenizer and window settings "
                            "(`qa-scale predict MODEL TRAIN_FILE --tokenizer TOK --max-seq-len … --out STORE`)")


def teacher_logits(stores: Sequence[Store], weights: np.ndarray, rule: str, cache_dir: Path,
                   d: Dist) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's (start, end) float32 logits ``[W, L]``, memory-mapped from the run's cache.

    Rank 0 writes them once per teacher (keyed by the stores' metadata, weights and rule), the
    other ranks then map the same files.
    """
    key = hashlib.sha256(json.dumps({"stores": [s.meta for s in stores], "weights": [float(w) for w in weights],
                                     "rule": rule}, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"teacher-{key}"
    with main_first(d):
        if not (path / "teacher.json").is_file():
            with staged_dir(path, kind="teacher") as tmp:
                shape = stores[0].shape
                arrays = tuple(np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.float32,
                                                         shape=shape) for name in LOGITS)
                mean_logits(stores, weights, rule, out=arrays)
                for array in arrays:
                    array.flush()
                del arrays
                write_json(tmp / "teacher.json", {"stores": [str(s.path) for s in stores],
                                                  "weights": [float(w) for w in weights], "combine": rule,
                                                  "shape": list(shape), "dtype": "float32"})
            log.info("teacher: %d store(s) combined by %s into %s", len(stores), rule, path)
    start, end = (load_npy(path / f"{name}.npy", mmap=True) for name in LOGITS)
    return start, end


def span_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over windows of KL(softmax(teacher/T) ‖ softmax(student/T)), ``[B, L]`` each, −inf teacher = padding.

    Computed in float32 whatever the training precision; padding contributes exactly 0 and no NaN
    reaches the gradient (−inf is replaced before any subtraction).
    """
    pad = torch.isneginf(teacher)
    log_q = torch.log_softmax((student.float() / temperature).masked_fill(pad, float("-inf")), dim=-1)
    log_p = torch.log_softmax(teacher.float() / temperature, dim=-1)
    p = log_p.exp()  # exactly 0 on padding
    per_window = (p * (log_p.masked_fill(pad, 0.0) - log_q.masked_fill(pad, 0.0))).sum(-1)
    return per_window.mean()


def chosen_rows(ws: WindowSet, strategy: str, seed: int, epoch: int) -> np.ndarray:
    """Rows of ``ws`` for one epoch: the windows holding the gold answer, plus (``answer_and_negative``)
    one window without it per question, drawn with ``(seed, epoch)``; in window order."""
    positive = ws.start_positions != ws.cls_index
    keep = positive.copy()
    if strategy == "answer_and_negative":
        rng = np.random.default_rng([seed, epoch])
        negatives = np.flatnonzero(~positive)
        order = rng.permutation(len(negatives))  # a random negative per question: the first in a shuffled order
        examples = ws.example_index[negatives[order]]
        _, first = np.unique(examples, return_index=True)
        keep[negatives[order[first]]] = True
    return np.flatnonzero(keep)


class DistillTask(QATask):
    """:class:`~qa_scale.training.tasks.QATask` whose loss also pulls the student toward the teacher."""

    def __init__(self, config: TrainConfig, tok, cache_dir: Path, d: Dist):
        if not config.distill.stores:
            raise ValueError("distillation needs distill.stores (the teacher's stores of the training file)")
        stores, weights, rule = teacher_members(config.distill)  # before any window is cut: cheap errors first
        super().__init__(config, tok, cache_dir, d)
        check_windows(stores, super().windows(0))
        self.teacher = teacher_logits(stores, weights, rule, cache_dir, d)
        self.kl_weight, self.temperature = config.distill.kl_weight, config.distill.temperature
        self.strategy = config.distill.strategy
        self.facts = {"distill": {"stores": [str(s.path) for s in stores], "teacher": config.distill.teacher,
                                  "weights": [round(float(w), 6) for w in weights], "combine": rule,
                                  "kl_weight": self.kl_weight, "temperature": self.temperature,
                                  "strategy": self.strategy, "windows_per_epoch": len(self.windows(0).lengths),
                                  "teacher_windows": int(stores[0].shape[0])}}
        log.info("distilling from %d store(s) (%s, weights %s): kl_weight %g, temperature %g", len(stores), rule,
                 np.round(weights, 4).tolist(), self.kl_weight, self.temperature)

    def windows(self, epoch: int) -> WindowSet | RowSubset:
        """All training windows, or the rows ``distill.strategy`` keeps this epoch (the same on every rank)."""
        ws = super().windows(0)
        if self.strategy == "all":
            return ws
        return RowSubset(ws.lengths, ws.pad_id, chosen_rows(ws, self.strategy, self.config.run.seed, epoch))

    def arrays(self, rows: WindowSet | RowSubset) -> dict[str, np.ndarray]:
        ws = super().windows(0)
        arrays = {**QATask.arrays(ws), TEACHER_KEYS[0]: self.teacher[0], TEACHER_KEYS[1]: self.teacher[1]}
        return rows.view(arrays) if isinstance(rows, RowSubset) else arrays

    def forward(self, engine, batch: dict[str, torch.Tensor]):
        inputs = {k: v for k, v in batch.items() if k not in TEACHER_KEYS}
        out = engine(**inputs)
        t = self.temperature
        kl = (span_kl(out.start_logits, batch[TEACHER_KEYS[0]], t) + span_kl(out.end_logits, batch[TEACHER_KEYS[1]], t)) / 2
        out.loss = self.kl_weight * t * t * kl + (1 - self.kl_weight) * out.loss
        return out
