"""LoRA mode: peft adapters on a QA reader, trained by the same engine, exported twice.

``mode: lora`` wraps the reader built by :mod:`qa_scale.model` with peft's LoRA before
DeepSpeed sees it: the backbone's weights are frozen, low-rank updates are added to the
attention and feed-forward projections, and the span head (``qa_outputs``) is trained in full.
Checkpoints, resume and logging are the engine's own. Export consolidates the checkpoint
(any ZeRO stage) and writes two Hugging Face directories: the adapter alone (peft format,
small) and the merged model (a plain ``…ForQuestionAnswering`` that every other command reads).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from .config import option

if TYPE_CHECKING:
    from peft import LoraConfig, PeftModel
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# BERT-family module names (MacBERT, RoBERTa-wwm-ext and bert-base-chinese are all BertModel):
# attention projections "attention.self.{query,key,value}", and "dense" matches the attention
# output, the FFN's "intermediate.dense" and "output.dense". The QA head is "qa_outputs" and
# these readers have no pooler, so "dense" touches nothing else.
DEFAULT_TARGETS = ("query", "key", "value", "dense")
HEAD = "qa_outputs"


@dataclass
class LoraSection:
    """LoRA settings of ``mode: lora`` (ignored in full fine-tuning)."""

    r: int = option(8, "rank of the low-rank updates")
    alpha: float = option(16.0, "updates are scaled by alpha / r")
    dropout: float = option(0.1, "dropout on the input of each LoRA update")
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS), metadata={
        "help": "module-name suffixes that get LoRA updates (default: attention q/k/v/output and both FFN layers)"})
    modules_to_save: list[str] = field(default_factory=list, metadata={
        "help": "more modules trained in full beside the adapters (the span head qa_outputs always is)"})
    bias: Literal["none", "all", "lora_only"] = option("none", "which biases train")

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora: need r ≥ 1, alpha > 0 and 0 ≤ dropout < 1, got r={self.r}, "
                             f"alpha={self.alpha}, dropout={self.dropout}")
        for name in ("target_modules", "modules_to_save"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"lora.{name}: expected a list of module names, got {value!r}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty")

    def peft_config(self) -> LoraConfig:
        from peft import LoraConfig

        # No task_type on purpose: peft's QUESTION_ANS wrapper (PeftModelForQuestionAnswering,
        # peft 0.21) drops token_type_ids before calling the model, so a reader would train
        # without segment embeddings and its merged export would then answer differently. The
        # plain PeftModel passes every argument through; the head is listed here instead.
        heads = [HEAD, *(m for m in self.modules_to_save if m != HEAD)]
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), modules_to_save=heads, bias=self.bias)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _linear_suffixes(model: torch.nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def apply_lora(model: torch.nn.Module, section: LoraSection) -> PeftModel:
    """Freeze ``model`` and add LoRA updates (and a trainable head) as ``section`` says.

    Raises:
        ValueError: a target or head module matches nothing in the model (names the linear
            layers it has).
    """
    from peft import get_peft_model

    names = [n for n, _ in model.named_modules()]
    for target in [*section.target_modules, *section.modules_to_save, HEAD]:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ValueError(f"lora: no module of {type(model).__name__} is named {target!r}; "
                             f"its linear layers end in: {', '.join(_linear_suffixes(model))}")
    peft_model = get_peft_model(model, section.peft_config())
    total, trainable = parameter_counts(peft_model)
    log.info("LoRA r=%d alpha=%g on %s: %d of %d parameters trainable (%.3f%%)", section.r, section.alpha,
             ",".join(section.target_modules), trainable, total, 100 * trainable / total)
    return peft_model


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable), without LoRA's bookkeeping copy of the head counted twice.

    peft keeps the head's original weights beside its trainable copy (``original_module``);
    the model computes with one of them, so the frozen copy is left out of the total.
    """
    from .model import count_parameters

    total, trainable = count_parameters(model)
    extra = sum(getattr(p, "ds_numel", p.numel()) for n, p in model.named_parameters() if ".original_module." in n)
    return total - extra, trainable


def _check_adapter(state: dict[str, torch.Tensor], model: PeftModel) -> None:
    """Every trainable tensor (adapters and head) is present with its true, non-empty shape.

    A known failure of saving peft models under ZeRO-3 is empty (0-element) or partial
    adapters, written from the rank-local shards; this refuses such a checkpoint by name.
    """
    from .export import ExportError

    bad = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        got = state.get(name)
        if got is None or got.numel() == 0 or got.shape != param.shape:
            bad.append(f"{name}: {'missing' if got is None else tuple(got.shape)} (expected {tuple(param.shape)})")
    if bad:
        raise ExportError(f"incomplete LoRA checkpoint, {len(bad)} tensors: " + "; ".join(bad[:8]))


def export_lora_checkpoint(checkpoint_dir: str | os.PathLike, tag: str | None, base_config: PretrainedConfig,
                           section: LoraSection, model_dir: str | os.PathLike, adapter_dir: str | os.PathLike,
                           tokenizer: PreTrainedTokenizerBase | None = None, base_class: type | None = None,
                           base_name: str | None = None) -> tuple[Path, Path]:
    """Consolidate a LoRA run's DeepSpeed checkpoint into an adapter directory and a merged model.

    Args:
        checkpoint_dir, tag: as for :func:`qa_scale.export.export_checkpoint`.
        base_config: the backbone's architecture.
        section: the LoRA settings the run trained with.
        model_dir: where the merged ``…ForQuestionAnswering`` goes (what ``predict`` reads).
        adapter_dir: where the peft adapter goes (``PeftModel.from_pretrained(base, adapter_dir)``).
        tokenizer: saved with the merged model.
        base_class: the backbone's model class (default ``AutoModelForQuestionAnswering``).
        base_name: recorded in the adapter's config as its base model.

    Raises:
        ExportError: the checkpoint does not fit the model, or an adapter or head tensor is
            missing, empty or misshapen.
    """
    from peft import get_peft_model
    from transformers import AutoModelForQuestionAnswering

    from .export import (
        ExportError,
        _key_problems,
        _staged_dir,
        consolidated_state_dict,
        export_state_dict,
    )

    state = consolidated_state_dict(checkpoint_dir, tag)
    base_class = base_class or AutoModelForQuestionAnswering
    build = getattr(base_class, "from_config", None) or base_class._from_config
    model = get_peft_model(build(base_config), section.peft_config())
    problems = _key_problems(model, state)
    if problems:
        raise ExportError(f"checkpoint {checkpoint_dir} (tag {tag}) does not fit the LoRA model: {problems}")
    _check_adapter(state, model)
    model.load_state_dict(state, strict=True)
    if base_name:
        model.peft_config["default"].base_model_name_or_path = base_name
    with _staged_dir(Path(adapter_dir)) as tmp:
        model.save_pretrained(tmp)
        if not any(tmp.glob("adapter_model.safetensors")):
            raise ExportError(f"peft wrote no adapter_model.safetensors for {adapter_dir}")
    merged = model.merge_and_unload()
    export_state_dict(merged, model_dir, tokenizer)
    log.info("exported LoRA adapter to %s and the merged model to %s", adapter_dir, model_dir)
    return Path(model_dir), Path(adapter_dir)


def load_adapter_model(base: torch.nn.Module, adapter_dir: str | os.PathLike) -> PeftModel:
    """A base reader with an exported adapter applied (unmerged), for checks and further training."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir))
