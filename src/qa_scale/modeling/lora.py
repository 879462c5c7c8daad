"""LoRA mode: peft adapters on a QA reader, trained by the same engine as full fine-tuning.

``mode: lora`` wraps the reader built by :mod:`.model` with peft's LoRA before DeepSpeed sees
it: the backbone's weights are frozen, low-rank updates are added to the projections its family
names (``families.py``: attention and feed-forward layers for BERT), and the span head is
trained in full. Checkpoints, resume and logging are the engine's own; the export of the adapter
and of the merged model is ``training/export.py``'s.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..common.settings import check_fields, option
from .families import ModelFamily, family_of

if TYPE_CHECKING:  # torch (and .model) only where used: the recipe, and so `qa-scale train --help`, imports LoraSection
    import torch
    from peft import LoraConfig, PeftModel

log = logging.getLogger(__name__)


@dataclass
class LoraSection:
    """LoRA settings of ``mode: lora`` (ignored in full fine-tuning)."""

    r: int = option(8, "rank of the low-rank updates", ge=1)
    alpha: float = option(16.0, "updates are scaled by alpha / r", gt=0)
    dropout: float = option(0.1, "dropout on the input of each LoRA update", ge=0, lt=1)
    target_modules: list[str] | None = field(default=None, metadata={
        "help": "module-name suffixes that get LoRA updates (default: the model family's, for BERT "
                "attention q/k/v/output and both FFN layers)"})
    modules_to_save: list[str] = field(default_factory=list, metadata={
        "help": "more modules trained in full beside the adapters (the span head qa_outputs always is)"})
    bias: Literal["none", "all", "lora_only"] = option("none", "which biases train")

    def __post_init__(self) -> None:
        check_fields(self)
        for name in ("target_modules", "modules_to_save"):
            value = getattr(self, name)
            if value is None and name == "target_modules":
                continue
            if isinstance(value, str):
                setattr(self, name, [value])
            elif not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"lora.{name}: expected a list of module names, got {value!r}")
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("lora.target_modules is empty")

    def targets(self, family: ModelFamily) -> list[str]:
        """The modules that get LoRA updates: the recipe's, else the family's default."""
        return list(self.target_modules or family.lora_targets)

    def peft_config(self, family: ModelFamily) -> LoraConfig:
        """The peft ``LoraConfig`` of these settings for a model of ``family``."""
        from peft import LoraConfig

        # No task_type on purpose: peft's QUESTION_ANS wrapper (PeftModelForQuestionAnswering,
        # peft 0.21) drops token_type_ids before calling the model, so a reader would train
        # without segment embeddings and its merged export would then answer differently. The
        # plain PeftModel passes every argument through; the head is listed here instead.
        heads = [family.head, *(m for m in self.modules_to_save if m != family.head)]
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.targets(family), modules_to_save=heads, bias=self.bias)


def is_peft(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _linear_suffixes(model: torch.nn.Module) -> list[str]:
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def apply_lora(model: torch.nn.Module, section: LoraSection) -> PeftModel:
    """Freeze ``model`` and add LoRA updates (and a trainable head) as ``section`` says.

    Raises:
        ValueError: a target or head module matches nothing in the model (names the linear
            layers it has).
    """
    from peft import get_peft_model

    family = family_of(model)
    names = [n for n, _ in model.named_modules()]
    for target in [*section.targets(family), *section.modules_to_save, family.head]:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise ValueError(f"lora: no module of {type(model).__name__} is named {target!r}; "
                             f"its linear layers end in: {', '.join(_linear_suffixes(model))}")
    peft_model = get_peft_model(model, section.peft_config(family))
    total, trainable = parameter_counts(peft_model)
    log.info("LoRA r=%d alpha=%g on %s: %d of %d parameters trainable (%.3f%%)", section.r, section.alpha,
             ",".join(section.targets(family)), trainable, total, 100 * trainable / total)
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


def load_adapter_model(base: torch.nn.Module, adapter_dir: str | os.PathLike) -> PeftModel:
    """A base reader with an exported adapter applied (unmerged), for checks and further training.

    Adapters are saved with task type QUESTION_ANS (so that peft's AutoPeftModelForQuestionAnswering
    loads them), which would make ``PeftModel.from_pretrained`` build the QA wrapper that drops
    token_type_ids; the task type is cleared here, so it is the plain PeftModel, as in training.
    """
    from peft import PeftConfig, PeftModel

    from ..common.inputs import check_safetensors
    from .model import ModelLoadError

    # The span head travels in the adapter (modules_to_save): a base loaded with a new head
    # (``load_qa_model(..., new_head=True)``, a backbone) is a reader only with it.
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if weights.is_file():
        head = family_of(base).head
        if not any(f".{head}." in f".{name}" for name in check_safetensors(weights)):
            raise ModelLoadError(f"{weights}: the adapter holds no weights for the span head {head!r}, so its "
                                 "answers would come from a randomly initialised head: export the adapter again")
    config = PeftConfig.from_pretrained(str(adapter_dir))
    config.task_type = None
    return PeftModel.from_pretrained(base, str(adapter_dir), config=config)


def shape_counts(config, section: LoraSection) -> dict:
    """Parameters of full fine-tuning vs LoRA for an architecture, built on the meta device.

    Nothing is allocated or downloaded: the model exists only as shapes.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering

    with torch.device("meta"):
        model = AutoModelForQuestionAnswering.from_config(config)
        full_total, _ = parameter_counts(model)
        family = family_of(model)
        total, trainable = parameter_counts(apply_lora(model, section))
    return {"full_fine_tuning_trainable": full_total, "total": total, "lora_trainable": trainable,
            "lora_trainable_percent": round(100 * trainable / total, 4), "targets": section.targets(family)}
