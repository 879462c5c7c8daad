"""Training tasks: what the engine loop trains on. QA fine-tuning here; masked-LM in :mod:`.backbone`.

The loop (:mod:`.loop`) knows nothing of QA: it asks a :class:`Task` for its model, its
windows of an epoch, the arrays to batch, how to turn a batch into model inputs, what counts
as a correct prediction, and (when it has dev data) how to evaluate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .. import data
from ..data.window_store import cached_windows
from ..data.windows import MATCH_TYPE, Template, WindowSet, build_windows
from ..evaluation.decode import decode
from ..evaluation.metrics import evaluate as score
from ..inference.forward import predict_logits
from ..runtime.distributed import Dist, broadcast_object, main_first
from .auto_lengths import resolve_auto
from .recipe import TrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Batchable(Protocol):
    """Rows the loop cuts into global batches: real tokens per row and the pad id."""

    lengths: np.ndarray
    pad_id: int


class Task(Protocol):
    """What the engine loop needs from a training task.

    Built as ``make_task(config, tokenizer, cache_dir, dist)`` on every rank.
    """

    has_dev: bool
    config: TrainConfig
    """The run's config as the task uses it: its ``auto`` lengths are numbers (what ``config.yaml`` saves)."""

    def build_model(self) -> torch.nn.Module:
        """The model to train (same initialisation on every rank)."""

    def windows(self, epoch: int) -> Batchable:
        """The training rows of ``epoch`` (the same on every rank)."""

    def arrays(self, rows: Batchable) -> dict[str, np.ndarray]:
        """Name → array of the rows, for :func:`~qa_scale.data.batches.collate`."""

    def prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A collated CPU batch → the model's keyword arguments (still on the CPU)."""

    def forward(self, engine, batch: dict[str, torch.Tensor]):
        """The model's outputs on a prepared batch (on the device); ``outputs.loss`` is what is trained."""

    def correct(self, outputs, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(right predictions, predictions) of a micro-batch, as tensors on its device."""

    def evaluate(self, engine, d: Dist) -> tuple[dict, dict | None]:
        """Dev scores on every rank, and rank 0's predictions (None elsewhere)."""


class QATask:
    """Extractive QA: training windows with span labels, dev windows and references."""

    output_kind = "train"  # the run folder's kind for the output layer

    def __init__(self, config: TrainConfig, tok: PreTrainedTokenizerBase, cache_dir: Path, d: Dist):
        dc = config.data
        if not dc.train_files():
            raise ValueError("data.train_file is required")
        if config.distill.stores and type(self) is QATask:  # never train silently without the teacher asked for
            raise ValueError("distill.stores is set: train with the distillation task (`qa-scale distill`, or "
                             "`qa-scale train`, which picks it), not the plain QA task")
        self.tok, self.cache, self.dist = tok, cache_dir, d
        train, self.train_counts = data.load_many(dc.train_files(), dc.mode)
        self.train = [ex for ex in train[: dc.max_train_examples] if ex.answers]
        if not self.train:
            raise ValueError(f"{', '.join(dc.train_files())}: no training example has an answer")
        # The recipe's "auto" lengths become numbers here, once, from the training examples, before any
        # window is cut (every rank computes the same numbers from the same data).
        self.config, self.auto_resolved = resolve_auto(config, self.train, tok)
        self.dev, self.dev_windows, self.dev_refs = [], None, {}
        if dc.dev_file:
            self.dev = data.load(dc.dev_file, dc.mode).require_examples().examples[: dc.max_dev_examples]
            refs = data.load_references(dc.dev_file, skip_bad=dc.mode == "lenient")
            self.dev_refs = {ex.id: refs.get(ex.id) or [a.text for a in ex.answers] for ex in self.dev}
            if not any(self.dev_refs.values()):
                raise ValueError(f"{dc.dev_file}: data.dev_file has no reference answers (a test file?): dev EM/F1 "
                                 "would be 0 whatever the model does and could not choose the best checkpoint; "
                                 "give a dev file with answers, or none")
            self.dev_windows = self._cached(self.dev, labels=False)
        self._all: WindowSet | None = None
        self._epoch: tuple[int, WindowSet] | None = None  # the last epoch's windows (random strategies)

    def _cached(self, examples, labels: bool | None = None) -> WindowSet:
        # Rank 0 builds and saves the cache entry; the others then read it instead of racing it.
        with main_first(self.dist):
            return cached_windows(examples, self.tok, self.config.data.windows, self.cache, labels=labels)

    @property
    def has_dev(self) -> bool:
        return self.dev_windows is not None

    def build_model(self) -> torch.nn.Module:
        from ..modeling.lora import apply_lora
        from ..modeling.model import check_positions, check_vocab, extend_token_types, load_qa_model

        m = self.config.model
        # new_head: training may start from a masked-LM or encoder backbone, whose span head is new.
        model = load_qa_model(m.name_or_path, vocab_size=max(self.tok.get_vocab().values()) + 1, tiny=m.tiny,
                              gradient_checkpointing=m.gradient_checkpointing,
                              attn_implementation=m.attn_implementation, seed=self.config.run.seed, new_head=True)
        check_vocab(model, self.tok)
        check_positions(model, self.config.data.windows)
        if self.config.data.windows.mark_matches:
            extend_token_types(model, MATCH_TYPE + 1, like=Template.of(self.tok).context_type)
        return apply_lora(model, self.config.lora) if self.config.mode == "lora" else model

    def windows(self, epoch: int) -> WindowSet:
        dc = self.config.data
        if dc.strategy != "all":  # a fresh placement every epoch, the same on every rank
            if self._epoch is None or self._epoch[0] != epoch:  # setup and the first epoch share one cut
                self._epoch = (epoch, build_windows(self.train, self.tok, dc.windows, dc.strategy,
                                                    self.config.run.seed + epoch))
            return self._epoch[1]
        if self._all is None:
            self._all = self._cached(self.train)
        return self._all

    @staticmethod
    def arrays(ws: WindowSet) -> dict[str, np.ndarray]:
        return {"input_ids": ws.input_ids, "token_type_ids": ws.token_type_ids,
                "start_positions": ws.start_positions, "end_positions": ws.end_positions}

    @staticmethod
    def prepare(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch

    @staticmethod
    def forward(engine, batch: dict[str, torch.Tensor]):
        """The span loss of the gold start and end (the model's own)."""
        return engine(**batch)

    @staticmethod
    def correct(out, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(spans with start and end both right, spans)."""
        ok = (out.start_logits.argmax(-1) == batch["start_positions"]) & (out.end_logits.argmax(-1) == batch["end_positions"])
        # new_full launches a fill on the device; torch.tensor(n, device=…) would copy from the host and wait
        return ok.sum(), ok.new_full((), ok.numel(), dtype=torch.long)

    def evaluate(self, engine, d: Dist) -> tuple[dict, dict | None]:
        """Dev EM/F1 with the shared decoder (every rank forwards, rank 0 decodes and scores)."""
        engine.eval()
        logits = predict_logits(engine, self.dev_windows, self.config.run.eval_batch_size, d)
        engine.train()
        result, answers = None, None
        if d.main:
            answers = decode(self.dev_windows, *logits, self.dev, self.config.decode).predictions
            s = score(answers, self.dev_refs)
            result = {"em": s.em, "f1": s.f1}
        return broadcast_object(result, d), answers
