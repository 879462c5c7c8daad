"""The settings of ``qa-scale backbone`` (fields → flags), kept light for ``--help``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..common.settings import FieldError, check_fields, option


@dataclass
class BackboneOptions:
    """A small BERT pre-trained with masked-LM on a corpus."""

    tokenizer: str | None = option(None, "vocab.txt or tokenizer directory; default: build a character "
                                         "vocabulary from the corpus into OUT/tokenizer")
    vocab_size: int = option(8000, "size bound when building the vocabulary", ge=6)
    hidden_size: int = option(128, "model width (the FFN is 4× as wide)", ge=1)
    layers: int = option(4, "encoder layers", ge=1)
    heads: int = option(4, "attention heads", ge=1)
    seq_len: int = option(128, "tokens per pre-training block", ge=8)
    steps: int = option(300, "optimizer steps", ge=1)
    batch_size: int = option(32, "blocks per step, over all ranks", ge=1)
    lr: float = option(5e-4, "peak learning rate", gt=0)
    seed: int = option(0, "seed of initialisation, masking and data order", ge=0)
    deepspeed: str = option("ds_configs/zero2_bf16.json", "DeepSpeed template")
    precision: Literal["fp32", "bf16", "fp16"] = option("fp32", "training precision (fp32 for CPUs)")
    device: Literal["auto", "cuda", "cpu"] = option("auto", "where the ranks run (see run.device)")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.hidden_size % self.heads:
            raise FieldError(f"hidden_size: {self.hidden_size} is not a multiple of heads ({self.heads})")
