"""Trained readers loaded once for answering: one model, several, an ensemble recipe, LoRA adapters.

A *panel* is what ``qa-scale answer`` and ``qa-scale serve`` ask: its readers (loaded by
:func:`qa_scale.inference.reader.load_reader`, as ``predict`` loads its one), their weights and
combination rule. The readers must share one tokenizer and one window setting, so that their
logits can be averaged over identical windows; readers that differ are refused, naming the
difference (the wording of the ensembler's fingerprint check). Decoding follows the first reader,
as ``qa-scale ensemble`` follows its first store.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..data.tokenization import load_tokenizer, tokenizer_identity
from ..data.windows import WindowConfig, fingerprint_difference
from ..ensemble import rules
from ..ensemble.combine import normalise, parse_weights
from ..ensemble.spec import load_recipe
from ..evaluation.decode import DecodeConfig
from ..inference.options import ReaderOptions
from ..inference.reader import Reader, ReaderSettings, load_reader, reader_settings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class Panel:
    """Readers that answer together: weighted mean of their logits over shared windows, one decode."""

    readers: list[Reader]
    weights: list[float]
    rule: str
    device: str
    options: ReaderOptions

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.readers[0].tokenizer

    @property
    def windows(self) -> WindowConfig:
        return self.readers[0].settings.windows

    @property
    def decoding(self) -> DecodeConfig:
        return self.readers[0].settings.decoding

    @property
    def batch_size(self) -> int:
        return self.options.fixed_batch("answering")

    def info(self) -> dict:
        """The readers and settings, as the service's ``/info`` and ``answer --json`` report them."""
        return {"readers": [{"name": r.name, "path": str(r.path), "weight": w, "adapter": r.settings.adapter}
                            for r, w in zip(self.readers, self.weights)],
                "combine": self.rule, "windows": dataclasses.asdict(self.windows),
                "decode": dataclasses.asdict(self.decoding), "device": self.device,
                "compute": self.readers[0].compute, "batch_size": self.batch_size, **_cpu(self.device)}


def _cpu(device: str) -> dict:
    """The CPU threads of the forward pass and how they wait (None on a GPU)."""
    if device != "cpu":
        return {"threads": None, "omp": None}
    import torch

    from ..runtime.cpu import omp_environment

    return {"threads": torch.get_num_threads(), "omp": omp_environment()}


def members_of(models: Sequence[str | os.PathLike], recipe: str | os.PathLike | None,
               weights: str | None) -> tuple[list[Path], list[float] | None, str | None]:
    """The model path of every member, their weights (None: uniform) and the recipe's rule.

    A single model argument that is a ``.yaml`` file is taken as the recipe. Recipe members of
    weight 0 are left out (they would not change the mean).
    """
    models = [Path(m) for m in models]
    if recipe is None and len(models) == 1 and models[0].suffix in (".yaml", ".yml") and models[0].is_file():
        recipe, models = models[0], []
    if recipe is not None:
        if models:
            raise ValueError("give model directories or an ensemble recipe, not both")
        spec = load_recipe(recipe)
        kept = [m for m in spec.members if m.weight > 0]
        missing = [m.name for m in kept if not m.model]
        if missing:
            raise ValueError(f"{recipe}: member(s) {', '.join(missing)} name no model directory")
        for i, m in enumerate(spec.members):
            if m.weight > 0 and not Path(m.model).is_dir():
                raise ValueError(f"{recipe}: member {i + 1} ({m.name}): model directory not found: {m.model}")
        return [Path(m.model) for m in kept], [m.weight for m in kept], spec.combine
    if not models:
        raise ValueError("give one or more model directories (or adapter directories), or an ensemble recipe")
    return models, parse_weights(weights, len(models)) if weights else None, None


def _check_alike(first: ReaderSettings, other: ReaderSettings) -> None:
    """Refuse a reader whose windows would not be the first reader's."""
    a, b = dataclasses.asdict(first.windows), dataclasses.asdict(other.windows)
    diff = [f"{k} {a[k]} vs {v}" for k, v in b.items() if a[k] != v]
    if diff:
        raise ValueError(f"{other.path} cannot answer with {first.path}: window settings differ ({'; '.join(diff)}); "
                         "give the window flags (e.g. --max-seq-len, --doc-overlap) to use one setting for all")


def load_panel(models: Sequence[str | os.PathLike], options: ReaderOptions = ReaderOptions(), *,
               recipe: str | os.PathLike | None = None, weights: str | None = None,
               combine: str | None = None) -> Panel:
    """Load every reader once, check they can be averaged, resolve the shared settings.

    Args:
        models: model directories (``runs/x/model``), LoRA ``adapter/`` directories, or one recipe file.
        options: tokenizer, window and decode overrides, device, compute dtype, batch size.
        recipe: an ensemble recipe (``ensemble/*.yaml``): its members' ``model`` paths and weights.
        weights: ``"0.5,0.3,0.2"``, one per model (default: uniform, or the recipe's).
        combine: the combination rule (default: the recipe's, else ``mean_logits``).

    Raises:
        FileNotFoundError: a model directory is missing.
        ValueError: tokenizers or window settings differ (naming the first difference), a bad
            recipe or weight, a tokenizer the model has no embeddings for.
    """
    from ..runtime.distributed import choose_device

    options.fixed_batch("answer and serve")
    paths, member_weights, recipe_rule = members_of(models, recipe, weights)
    rule = combine or recipe_rule or rules.DEFAULT
    rules.get(rule)  # an unknown rule is refused before any model is loaded
    settings = [reader_settings(p, options) for p in paths]  # every member's files read before any weight
    for other in settings[1:]:
        _check_alike(settings[0], other)
    kind = choose_device(options.device)
    readers, tokenizers = [], {}
    for s in settings:
        if s.tokenizer not in tokenizers:
            tokenizers[s.tokenizer] = load_tokenizer(s.tokenizer)
        tok = tokenizers[s.tokenizer]
        if readers:
            diff = fingerprint_difference({"tokenizer": tokenizer_identity(readers[0].tokenizer)},
                                          {"tokenizer": tokenizer_identity(tok)})
            if diff is not None:
                raise ValueError(f"{s.path} cannot answer with {settings[0].path}: {diff}")
        readers.append(load_reader(s, kind, options.compute, tok))
    return Panel(readers, normalise(member_weights, len(readers)).tolist(), rule, kind, options)
