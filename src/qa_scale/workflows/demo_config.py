"""The sizes of the embedded-default job (``qa-scale demo``), kept apart so ``--help`` stays light."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..common.settings import check_fields, option
from ..data.windows import STRATEGIES, WindowConfig
from ..ensemble import rules

SHORT = {"random_answer": "ans", "answer_and_negative": "neg", "all": "all"}


@dataclass(frozen=True)
class BackboneSpec:
    """One masked-LM backbone of the demo."""

    name: str  # A, B, …
    layers: int
    hidden: int
    seed: int  # the seed it is trained with


@dataclass(frozen=True)
class MemberSpec:
    """One reader of the demo."""

    name: str  # e.g. A_full_s1, A_full_s2_neg
    backbone: str  # the BackboneSpec name it is fine-tuned from
    mode: str  # full or lora
    seed: int  # the seed it is trained with
    strategy: str  # its training windows


@dataclass(frozen=True)
class DemoFiles:
    """The files the demo makes and reads: sample data, the search part of dev, the vocabulary."""

    corpus: Path
    squad_train: Path
    squad_dev: Path
    dev_search: Path  # the part of dev on which weights (and the best member) are chosen
    hw7_test: Path
    hw7_test_answers: Path
    tokenizer: Path


@dataclass
class DemoConfig:
    """Sizes of the embedded default, chosen so that the whole demo fits in ~15 min on 2 CPU cores."""

    seed: int = option(0, "seed of the whole demo: sample data, backbones and readers (the same seed gives the same report)", ge=0)
    ranks: int = option(2, "DeepSpeed CPU ranks per training run (1: plain processes, no launcher)", ge=1)
    train_paragraphs: int = option(1500, "sample-data training paragraphs", ge=1)
    dev_paragraphs: int = option(200, "sample-data dev paragraphs (member and ensemble scores)", ge=1)
    paragraph_chars: tuple[int, int] = option((120, 300), "MIN MAX characters per sample paragraph")
    vocab_size: int = option(1000, "bound on the character vocabulary (the sample corpus has ~900 distinct characters)", ge=1)
    backbones: list[str] = field(default_factory=lambda: ["2x128:0", "3x96:1"], metadata={
        "help": "masked-LM backbones as LAYERSxHIDDEN:SEED (named A, B, … in this order); different shapes and "
                "seeds make members that disagree where an ensemble can help"})
    heads: int = option(4, "attention heads of every backbone (must divide each hidden size)", ge=1)
    backbone_steps: int = option(1000, "masked-LM steps of each backbone", ge=1)
    backbone_lr: float = option(1e-3, "masked-LM peak learning rate", gt=0)
    backbone_seq_len: int = option(128, "tokens per masked-LM block", ge=8)
    member_steps: int = option(1000, "optimizer steps of each reader", ge=1)
    member_lr: float = option(1e-3, "peak learning rate of the full fine-tunes", gt=0)
    lora_lr: float = option(3e-3, "peak learning rate of LoRA readers", gt=0)
    lora_r: int = option(16, "LoRA rank of LoRA readers", ge=1)
    batch_size: int = option(32, "windows per optimizer step", ge=1)
    # Short windows: a small reader from a briefly pre-trained backbone learns far faster on
    # 64-token windows (one answer window per question) than on 256-token ones, at equal time.
    max_seq_len: int = option(64, "reader window length in tokens", ge=1)
    doc_overlap: int = option(16, "tokens shared by consecutive windows", ge=0)
    max_question_len: int = option(32, "question tokens kept", ge=1)
    strategy: Literal["random_answer", "answer_and_negative", "all"] = option(
        "random_answer", "training windows: one answer window per question; that one and one window without "
                         "the answer; or every window")
    members: list[str] = field(default_factory=lambda: [
        "A:full:1", "A:full:2:answer_and_negative", "B:full:1", "B:full:2:answer_and_negative"], metadata={
        "help": "readers as BACKBONE:MODE:SEED[:STRATEGY], e.g. A:full:1, B:lora:3 or A:full:2:answer_and_negative "
                "(STRATEGY: the member's training windows, default --strategy; a LoRA member takes part only as "
                "far as the weight search gives it weight)"})
    combine: str = option("mean_log_softmax", "how the members' logits are averaged (a rule of "
                                              "qa_scale.ensemble.rules: mean_logits, mean_log_softmax)")
    student_steps: int = option(2000, "optimizer steps of the student distilled from the ensemble (0: no student)",
                                ge=0)
    student_strategy: Literal["all", "answer", "answer_and_negative"] = option(
        "answer_and_negative", "the student's training windows (distill.strategy): every window, those holding the "
                               "answer, or those and one without it per question")
    student_kl_weight: float = option(0.5, "weight of the KL to the ensemble in the student's loss (distill.kl_weight)",
                                      ge=0, le=1)
    student_temperature: float = option(2.0, "softmax temperature of the distillation (distill.temperature)", gt=0)
    search_fraction: float = option(0.5, "part of dev on which member weights (and the best member) are chosen; "
                                         "the rest measures the ensemble against that member", gt=0, lt=1)

    def __post_init__(self) -> None:
        check_fields(self)
        letters = [chr(ord("A") + i) for i in range(len(self.backbones))]
        for spec in self.backbones:
            shape, _, seed = spec.partition(":")
            layers, _, hidden = shape.partition("x")
            if not (layers.isdigit() and hidden.isdigit() and seed.isdigit()) or int(hidden) % self.heads:
                raise ValueError(f"backbone {spec!r}: expected LAYERSxHIDDEN:SEED with HIDDEN a multiple of "
                                 f"heads ({self.heads}), e.g. 2x128:0")
        for spec in self.members:
            parts = spec.split(":")
            if (len(parts) not in (3, 4) or parts[0] not in letters or parts[1] not in ("full", "lora")
                    or not parts[2].isdigit() or parts[3:] and parts[3] not in STRATEGIES):
                raise ValueError(f"member {spec!r}: expected BACKBONE:MODE:SEED[:STRATEGY] with BACKBONE one of "
                                 f"{letters}, MODE full or lora, STRATEGY one of {', '.join(STRATEGIES)}, e.g. A:full:1")
        rules.get(self.combine)  # an unknown rule is named with the known ones

    def member_specs(self) -> list[MemberSpec]:
        """The readers, in order; a name marks a strategy given in the spec (``A_full_s2_neg``), so
        members that differ only there have their own folders. Seeds are offset by the demo's seed."""
        out = []
        for spec in self.members:
            backbone, mode, seed, *strategy = spec.split(":")
            name = f"{backbone}_{mode}_s{seed}" + (f"_{SHORT[strategy[0]]}" if strategy else "")
            out.append(MemberSpec(name, backbone, mode, int(seed) + 100 * self.seed,
                                  strategy[0] if strategy else self.strategy))
        return out

    def backbone_specs(self) -> list[BackboneSpec]:
        """The backbones, named A, B, … in order; seeds offset by the demo's seed."""
        out = []
        for i, spec in enumerate(self.backbones):
            shape, _, seed = spec.partition(":")
            layers, _, hidden = shape.partition("x")
            out.append(BackboneSpec(chr(ord("A") + i), int(layers), int(hidden), int(seed) + 100 * self.seed))
        return out

    def windows(self) -> WindowConfig:
        return WindowConfig(max_seq_len=self.max_seq_len, max_question_len=self.max_question_len,
                            doc_overlap=self.doc_overlap)
