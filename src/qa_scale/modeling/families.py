"""The registry of model families: what qa-scale needs to know about an architecture.

A family says which ``config.model_type`` values it covers, where LoRA goes, what the span head
is called, how encoder layers and embeddings are named (for layer-wise learning-rate decay) and
the shapes of its well-known checkpoints (for shape-only tools such as ``qa-scale lora-params``
and the large-shape tests). Adding an architecture is one :func:`register` call in this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..common.registry import Registry


@dataclass(frozen=True)
class ModelFamily:
    """One architecture family.

    Attributes:
        name: the family's name.
        model_types: ``config.model_type`` values it covers.
        lora_targets: module-name suffixes that get LoRA updates by default.
        head: the span head's module name (trained in full under LoRA).
        layer_pattern: regex whose group 1 is the encoder layer number in a parameter name.
        embeddings_pattern: regex that matches embedding parameters.
        shapes: named architectures (``transformers`` config values) of its known checkpoints.
        checkpoints: hub names of known checkpoints → their shape's name (for shape-only tools).
    """

    name: str
    model_types: tuple[str, ...]
    lora_targets: tuple[str, ...]
    head: str = "qa_outputs"
    layer_pattern: str = r"(?:^|\.)encoder\.layers?\.(\d+)\."
    embeddings_pattern: str = r"(?:^|\.)embeddings\."
    shapes: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)

    @cached_property
    def layer_re(self) -> re.Pattern:
        return re.compile(self.layer_pattern)

    @cached_property
    def embeddings_re(self) -> re.Pattern:
        return re.compile(self.embeddings_pattern)


FAMILIES: Registry[ModelFamily] = Registry("model family")
# The usual naming of Transformer encoders, for layer names of a model outside the registry.
GENERIC = ModelFamily(name="generic", model_types=(), lora_targets=())


def register(family: ModelFamily) -> ModelFamily:
    """Add ``family``; its name and model types must be new."""
    taken = {t for f in FAMILIES.values() for t in f.model_types}
    if taken & set(family.model_types):
        raise ValueError(f"model type(s) {sorted(taken & set(family.model_types))} already belong to a registered family")
    return FAMILIES.register(family.name, family)


def family_of(model_or_config: Any, default: ModelFamily | None = None) -> ModelFamily:
    """The family of a model (peft-wrapped or not) or of its config, by ``model_type``.

    Raises:
        ValueError: no registered family covers it and no ``default`` is given.
    """
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    if default is not None:
        return default
    raise ValueError(f"no model family is registered for model_type {model_type!r} "
                     f"(registered: {', '.join(t for f in FAMILIES.values() for t in f.model_types)}); "
                     "register one in qa_scale/modeling/families.py")


def shapes() -> dict[str, tuple[ModelFamily, dict[str, Any]]]:
    """Every named shape of every family: name → (family, config values)."""
    return {name: (f, shape) for f in FAMILIES.values() for name, shape in f.shapes.items()}


def shape_of_checkpoint(name_or_path: str) -> str | None:
    """The named shape of a known hub checkpoint (``hfl/chinese-macbert-large`` → ``macbert-large``)."""
    for family in FAMILIES.values():
        if name_or_path in family.checkpoints:
            return family.checkpoints[name_or_path]
    return None


# BERT: MacBERT, RoBERTa-wwm-ext (a BERT despite its name), luhua's MRC MacBERT and
# bert-base-chinese are all BertModel. "dense" matches the attention output, the FFN's
# intermediate.dense and output.dense; QA readers have no pooler, so it touches nothing else.
_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
          "vocab_size": 21128}
register(ModelFamily(
    name="bert", model_types=("bert",), lora_targets=("query", "key", "value", "dense"),
    shapes={"macbert-large": _LARGE,
            "bert-base-chinese": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                  "intermediate_size": 3072, "vocab_size": 21128}},
    checkpoints={"hfl/chinese-macbert-large": "macbert-large", "hfl/chinese-roberta-wwm-ext-large": "macbert-large",
                 "luhua/chinese_pretrain_mrc_macbert_large": "macbert-large", "bert-base-chinese": "bert-base-chinese",
                 "hfl/chinese-macbert-base": "bert-base-chinese", "hfl/chinese-roberta-wwm-ext": "bert-base-chinese"},
))

# ELECTRA discriminators (hfl/chinese-electra-180g-large-discriminator): BERT-style blocks under
# "electra.encoder.layer.N", and an "embeddings_project" linear when the embedding width differs.
register(ModelFamily(
    name="electra", model_types=("electra",), lora_targets=("query", "key", "value", "dense"),
    shapes={"chinese-electra-large": {**_LARGE, "embedding_size": 1024}},
    checkpoints={"hfl/chinese-electra-180g-large-discriminator": "chinese-electra-large"},
))
