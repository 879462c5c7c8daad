"""The sizes of the embedded-default job (``qa-scale demo``), kept apart so ``--help`` stays light."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..common.settings import option
from ..data.windows import WindowConfig


@dataclass
class DemoConfig:
    """Sizes of the embedded default, chosen so that the whole demo fits in ~15 min on 2 CPU cores."""

    seed: int = option(0, "seed of the sample data")
    ranks: int = option(2, "DeepSpeed CPU ranks per training run (1: plain processes, no launcher)")
    train_paragraphs: int = option(1500, "sample-data training paragraphs")
    dev_paragraphs: int = option(200, "sample-data dev paragraphs (member and ensemble scores)")
    paragraph_chars: tuple[int, int] = option((120, 300), "MIN MAX characters per sample paragraph")
    vocab_size: int = option(1000, "bound on the character vocabulary (the sample corpus has ~900 distinct characters)")
    hidden_size: int = option(128, "backbone width")
    layers: int = option(2, "backbone encoder layers")
    heads: int = option(4, "backbone attention heads")
    backbone_steps: int = option(1000, "masked-LM steps of the backbone")
    backbone_lr: float = option(1e-3, "masked-LM peak learning rate")
    backbone_seq_len: int = option(128, "tokens per masked-LM block")
    member_steps: int = option(1200, "optimizer steps of each reader")
    member_lr: float = option(1e-3, "peak learning rate of the full fine-tunes")
    lora_lr: float = option(3e-3, "peak learning rate of the LoRA reader")
    lora_r: int = option(16, "LoRA rank of the LoRA reader")
    batch_size: int = option(32, "windows per optimizer step")
    # Short windows: a small reader from a briefly pre-trained backbone learns far faster on
    # 64-token windows (one answer window per question) than on 256-token ones, at equal time.
    max_seq_len: int = option(64, "reader window length in tokens")
    doc_overlap: int = option(16, "tokens shared by consecutive windows")
    max_question_len: int = option(32, "question tokens kept")
    strategy: Literal["random_answer", "all"] = option(
        "random_answer", "training windows: one answer window per question, or every window")
    members: list[str] = field(default_factory=lambda: ["full:1", "full:2", "lora:1"], metadata={
        "help": "readers as MODE:SEED"})

    def windows(self) -> WindowConfig:
        return WindowConfig(max_seq_len=self.max_seq_len, max_question_len=self.max_question_len,
                            doc_overlap=self.doc_overlap)
