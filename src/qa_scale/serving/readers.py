"""Trained readers loaded once for answering: one model, several, an ensemble recipe, LoRA adapters.

A *panel* is what ``qa-scale answer`` and ``qa-scale serve`` ask: its readers (models on one
device, in eval mode), their weights and combination rule, and the one tokenizer, window and
decode settings they share. Settings come from each model's training ``config.yaml`` (as for
``qa-scale predict``), overridden by what is given; readers whose tokenizers or window settings
differ cannot average their logits over identical windows and are refused, naming the difference
(the wording of the ensembler's fingerprint check). Decoding follows the first reader, as
``qa-scale ensemble`` follows its first store.

A LoRA run's ``adapter/`` directory is a reader too: its base model (the adapter config's
``base_model_name_or_path``) is loaded, the adapter applied with peft and merged, so the model
is called exactly as the exported ``model/`` is, ``token_type_ids`` included.
"""

from __future__ import annotations

import dataclasses
import logging
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
from ..inference.predict import resolve_settings, tokenizer_spec

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
DTYPES = ("fp32", "bf16", "fp16")
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class Reader:
    """One loaded model."""

    name: str
    path: Path
    model: torch.nn.Module
    adapter: bool = False


@dataclass
class Panel:
    """Readers that answer together: weighted mean of their logits over shared windows, one decode."""

    readers: list[Reader]
    weights: list[float]
    rule: str
    tokenizer: PreTrainedTokenizerBase
    windows: WindowConfig
    decoding: DecodeConfig
    device: str
    compute: str = "fp32"
    batch_size: int = 32

    def info(self) -> dict:
        """The readers and settings, as the service's ``/info`` and ``answer --json`` report them."""
        return {"readers": [{"name": r.name, "path": str(r.path), "weight": w, "adapter": r.adapter}
                            for r, w in zip(self.readers, self.weights)],
                "combine": self.rule, "windows": dataclasses.asdict(self.windows),
                "decode": dataclasses.asdict(self.decoding), "device": self.device, "compute": self.compute,
                "batch_size": self.batch_size}


def is_adapter(path: Path) -> bool:
    """True for a peft adapter directory (``adapter/`` of a LoRA run)."""
    return (path / ADAPTER_CONFIG).is_file()


def load_adapter_reader(adapter_dir: Path):
    """Base model + LoRA adapter, merged: a plain ``…ForQuestionAnswering`` that takes token_type_ids.

    Raises:
        ValueError: the adapter's base model cannot be found (naming where it looked).
    """
    from ..modeling.lora import load_adapter_model
    from ..modeling.model import load_qa_model

    from ..common.inputs import read_json

    settings = read_json(adapter_dir / ADAPTER_CONFIG, "adapter config")  # errors name the file and key
    base_name = settings.get("base_model_name_or_path") if isinstance(settings, dict) else None
    if not isinstance(base_name, str) or not base_name:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG} names no base_model_name_or_path")
    tried = [Path(base_name), adapter_dir / base_name, adapter_dir.parent / base_name]
    base_dir = next((p for p in tried if p.is_dir()), None)
    if base_dir is None:
        raise ValueError(f"{adapter_dir}: base model {base_name!r} not found (looked in "
                         + ", ".join(str(p) for p in tried) + ")")
    return load_adapter_model(load_qa_model(str(base_dir), new_head=True), adapter_dir).merge_and_unload()


def members_of(models: Sequence[str | os.PathLike], recipe: str | os.PathLike | None,
               weights: str | None) -> tuple[list[tuple[str, Path]], list[float] | None, str | None]:
    """(name, model path) of every member, their weights (None: uniform) and the recipe's rule.

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
        return [(m.name, Path(m.model)) for m in kept], [m.weight for m in kept], spec.combine
    if not models:
        raise ValueError("give one or more model directories (or adapter directories), or an ensemble recipe")
    names = [p.parent.name if p.name in ("model", "adapter") and p.parent.name else p.name for p in models]
    return list(zip(names, models)), parse_weights(weights, len(models)) if weights else None, None


def _same_settings(paths: list[Path], settings: list[WindowConfig]) -> None:
    first = dataclasses.asdict(settings[0])
    for path, other in zip(paths[1:], settings[1:]):
        diff = [f"{k} {first[k]} vs {v}" for k, v in dataclasses.asdict(other).items() if first[k] != v]
        if diff:
            raise ValueError(f"{path} cannot answer with {paths[0]}: window settings differ ({'; '.join(diff)}); "
                             "give the window flags (e.g. --max-seq-len, --doc-overlap) to use one setting for all")


def load_panel(models: Sequence[str | os.PathLike], recipe: str | os.PathLike | None = None, *,
               weights: str | None = None, combine: str | None = None, tokenizer: str | None = None,
               windows: dict | None = None, decoding: dict | None = None, device: str = "auto",
               compute: str = "fp32", batch_size: int = 32) -> Panel:
    """Load every reader once, check they can be averaged, resolve the shared settings.

    Args:
        models: model directories (``runs/x/model``), LoRA ``adapter/`` directories, or one recipe file.
        recipe: an ensemble recipe (``ensemble/*.yaml``): its members' ``model`` paths and weights.
        weights: ``"0.5,0.3,0.2"``, one per model (default: uniform, or the recipe's).
        combine: the combination rule (default: the recipe's, else ``mean_logits``).
        tokenizer: tokenizer spec for every reader (default: each model's own or its training config's).
        windows, decoding: ``WindowConfig`` / ``DecodeConfig`` fields over the training configs'.
        device: ``auto``, ``cuda`` or ``cpu``.
        compute: dtype of the forward pass, ``fp32``, ``bf16`` or ``fp16``.
        batch_size: windows per forward pass.

    Raises:
        FileNotFoundError: a model directory is missing.
        ValueError: tokenizers or window settings differ (naming the first difference), a bad
            recipe or weight, a tokenizer the model has no embeddings for.
    """
    import torch

    from ..modeling.model import check_inputs, load_qa_model
    from ..runtime.distributed import choose_device

    if compute not in DTYPES:
        raise ValueError(f"compute must be one of {', '.join(DTYPES)}, got {compute!r}")
    members, member_weights, recipe_rule = members_of(models, recipe, weights)
    rule = combine or recipe_rule or rules.DEFAULT
    rules.get(rule)  # an unknown rule is refused before any model is loaded
    kind = choose_device(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[compute]
    readers, settings, decode_configs, tokenizers, identities = [], [], [], {}, []
    for name, path in members:
        if not path.is_dir():
            raise FileNotFoundError(f"model directory not found: {path}")
        w, d, section = resolve_settings(path, windows or {}, decoding or {})
        spec = tokenizer_spec(path, tokenizer, section)
        if spec not in tokenizers:
            tokenizers[spec] = load_tokenizer(spec)
        tok, identity = tokenizers[spec], tokenizer_identity(tokenizers[spec])
        diff = fingerprint_difference({"tokenizer": identities[0]}, {"tokenizer": identity}) if identities else None
        if diff is not None:
            raise ValueError(f"{path} cannot answer with {members[0][1]}: {diff}")
        adapter = is_adapter(path)
        model = load_adapter_reader(path) if adapter else load_qa_model(str(path))
        check_inputs(model, tok, w)
        readers.append(Reader(name, path, model.to(device=kind, dtype=dtype).eval(), adapter))
        settings.append(w)
        decode_configs.append(d)
        identities.append(identity)
        log.info("loaded %s (%s) on %s in %s", name, path, kind, compute)
    _same_settings([p for _, p in members], settings)
    first_tok = tokenizers[next(iter(tokenizers))]
    return Panel(readers, normalise(member_weights, len(readers)).tolist(), rule, first_tok, settings[0],
                 decode_configs[0], kind, compute, batch_size)
