"""The settings of ``qa-scale backbone`` (fields → flags), kept light for ``--help``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..common.settings import option


@dataclass
class BackboneOptions:
    """A small BERT pre-trained with masked-LM on a corpus."""

    tokenizer: str | None = option(None, "vocab.txt or tokenizer directory; default: build a character "
                                         "vocabulary from the corpus into OUT/tokenizer")
    vocab_size: int = option(8000, "size bound when building the vocabulary")
    hidden_size: int = option(128, "model width (the FFN is 4× as wide)")
    layers: int = option(4, "encoder layers")
    heads: int = option(4, "attention heads")
    seq_len: int = option(128, "tokens per pre-training block")
    steps: int = option(300, "optimizer steps")
    batch_size: int = option(32, "blocks per step, over all ranks")
    lr: float = option(5e-4, "peak learning rate")
    seed: int = option(0, "seed of initialisation, masking and data order")
    deepspeed: str = option("ds_configs/zero2_bf16.json", "DeepSpeed template")
    precision: Literal["fp32", "bf16", "fp16"] = option("fp32", "training precision (fp32 for CPUs)")
    device: Literal["auto", "cuda", "cpu"] = option("auto", "where the ranks run (see run.device)")
