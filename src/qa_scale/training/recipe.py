"""Training recipes: a YAML file plus dotted overrides → one validated :class:`TrainConfig`.

``what to train`` lives here (model, data, optimisation, run); ``how to distribute`` lives in the
DeepSpeed JSON that ``run.deepspeed`` names, whose ``"auto"`` values :mod:`.ds_config` fills
from this config. Overrides look like ``optim.lr=2e-5`` or ``data.windows.doc_step=15``;
unknown keys are refused with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import yaml

from ..common.inputs import InputError, read_mapping
from ..common.settings import (
    FieldError,
    base_type,
    check_fields,
    check_keys,
    literals,
    option,
)
from ..data.windows import WindowConfig
from ..evaluation.decode import DecodeConfig
from ..modeling.lora import LoraSection
from .auto_lengths import AUTO_PERCENTILE, MIN_AUTO_ANSWER_LEN, MIN_AUTO_QUESTION_LEN



@dataclass(frozen=True)
class WindowSection(WindowConfig):
    """Window settings as a recipe gives them: :class:`WindowConfig` with ``max_question_len`` also ``auto``."""

    max_question_len: int | Literal["auto"] = option(
        64, "question tokens kept; longer questions are truncated. auto: chosen at the start of training, the "
            f"{AUTO_PERCENTILE:g}th percentile of the training questions' lengths in tokens, at least "
            f"{MIN_AUTO_QUESTION_LEN}, at most what leaves half the window (and more than doc_overlap) to context",
        ge=1)

    def check(self, n_special: int) -> None:
        if self.max_question_len == "auto":
            raise ValueError("data.windows.max_question_len is still 'auto': resolve_auto fills it from the "
                             "training data before windows are cut")
        super().check(n_special)


@dataclass(frozen=True)
class DecodeSection(DecodeConfig):
    """Decoding as a recipe gives it: :class:`DecodeConfig` with ``max_answer_len`` also ``auto``."""

    max_answer_len: int | Literal["auto"] = option(
        30, "longest answer, in tokens. auto: chosen at the start of training, the "
            f"{AUTO_PERCENTILE:g}th percentile of the training answers' lengths in tokens (first reference, as the "
            f"decoder counts them), at least {MIN_AUTO_ANSWER_LEN}; the saved config.yaml holds the number",
        ge=1)


@dataclass
class ModelSection:
    """Which backbone, and how it runs."""

    name_or_path: str | None = option(None, "hub name or local directory (QA or masked-LM checkpoint)")
    tokenizer: str | None = option(None, "vocab.txt, tokenizer directory or hub name; default: the model's own")
    tiny: dict | None = option(None, "build a random small BERT with these config overrides instead of loading one")
    gradient_checkpointing: bool = option(False, "recompute activations in backward to save memory")
    attn_implementation: str = option("sdpa", "attention kernel: sdpa (PyTorch scaled-dot-product) or eager")

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every number, as declared above
        if self.tiny is not None:  # a mapping's keys and sizes are checked too: a typo must not train defaults
            from ..modeling.model import check_tiny

            check_tiny(self.tiny, "model.tiny")


@dataclass
class DataSection:
    """Where examples come from and how they become windows."""

    train_file: str | list[str] | None = option(
        None, "training data (HW7 or SQuAD style), or a list of files mixed (formats detected per file, ids "
              "kept distinct)")
    dev_file: str | None = option(None, "dev data for periodic EM/F1 and best-checkpoint selection")
    mode: Literal["strict", "lenient"] = option("lenient", "validation of the input files")
    strategy: Literal["all", "random_answer", "answer_and_negative"] = option(
        "all", "training windows: every window; one per question with the answer at a random position; or "
               "that one and one random window without the answer")
    windows: WindowSection = field(default_factory=WindowSection, metadata={"help": "window settings"})
    cache_dir: str | None = option(None, "window cache (datasets Arrow); default: <output_dir>/cache")
    max_train_examples: int | None = option(None, "use only the first N training examples (smoke tests)", ge=1)
    max_dev_examples: int | None = option(None, "use only the first N dev examples", ge=1)

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every number, as declared above

    def train_files(self) -> list[str]:
        """``train_file`` as a list (one file or several)."""
        if self.train_file is None:
            return []
        return [self.train_file] if isinstance(self.train_file, str) else list(self.train_file)


@dataclass
class OptimSection:
    """AdamW, the learning-rate schedule and batch sizes."""

    lr: float = option(3e-5, "peak learning rate", gt=0)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm)", ge=0)
    warmup_ratio: float = option(0.1, "fraction of the steps spent warming up", ge=0, lt=1)
    scheduler: str = option("linear", "transformers.get_scheduler name: linear, cosine, constant_with_warmup…")
    epochs: float = option(2.0, "passes over the training windows", gt=0)
    max_steps: int | None = option(None, "optimizer steps in all (overrides epochs)", ge=1)
    micro_batch_size: int | Literal["auto"] = option(
        8, "windows per rank per forward pass; auto: global_batch_size / ranks, at most max_micro_batch_size "
           "(accumulation makes up the rest), so one recipe fits 1 GPU or 8", ge=1)
    max_micro_batch_size: int = option(32, "the largest micro-batch that fits one device (micro_batch_size: auto)",
                                       ge=1)
    global_batch_size: int = option(32, "windows per optimizer step over all ranks and accumulation steps", ge=1)
    grad_clip: float = option(1.0, "gradient-norm clipping (0: none)", ge=0)
    layer_lr_decay: float | None = option(None, "layer-wise LR decay factor (e.g. 0.9); None: off", gt=0, le=1)
    adam_beta1: float = option(0.9, "AdamW beta1", ge=0, lt=1)
    adam_beta2: float = option(0.999, "AdamW beta2", ge=0, lt=1)
    adam_eps: float = option(1e-8, "AdamW epsilon", gt=0)

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every number, as declared above


@dataclass
class RunSection:
    """Precision, engine, checkpoints, logging."""

    output_dir: str = option("runs/default", "where checkpoints, logs and the exported model go")
    seed: int = option(42, "seed of initialisation, data order and dropout", ge=0)
    precision: Literal["bf16", "fp16", "fp32"] = option("bf16", "training precision; the DeepSpeed config must agree")
    device: Literal["auto", "cuda", "cpu"] = option(
        "auto", "auto: CUDA when torch has it (an error when GPUs are visible but torch cannot use them); "
                "cpu: CPU ranks on gloo on purpose")
    deepspeed: str = option(
        "ds_configs/zero2_bf16.json", "DeepSpeed JSON template ('auto' values are filled). ZeRO stage 0 "
                                      "(zero0_bf16.json, for one GPU: nothing to partition) steps a fused torch "
                                      "AdamW (foreach on CPU) over whole parameters instead of flat ZeRO partitions")
    save_every: int = option(500, "optimizer steps between checkpoints (and one at the end)", ge=1)
    eval_every: int = option(500, "optimizer steps between dev evaluations (and one at the end)", ge=1)
    log_every: int = option(10, "optimizer steps between log lines", ge=1)
    keep_checkpoints: int = option(2, "newest committed checkpoints kept (the best by dev EM is kept too)", ge=1)
    resume: str | None = option(None, "'auto' (newest committed checkpoint), a checkpoint folder, or None")
    stop_after: int | None = option(None, "stop this invocation after N optimizer steps (schedule unchanged)", ge=1)
    max_nonfinite_steps: int = option(10, "consecutive fp16 overflow-skipped steps that stop the run", ge=1)
    length_grouping: bool = option(
        True, "batch windows of similar length together (less padding; a micro-batch whose windows all fill its "
              "width, common then, runs without an attention mask: SDPA's flash/efficient kernel, no mask check)")
    compile: bool = option(
        False, "torch.compile the model (inductor, through DeepSpeed's engine.compile()): slower first steps, and "
               "again at the first new window width and the first batch without padding, then faster ones; "
               "losses equal the uncompiled run's within float rounding")
    eval_batch_size: int = option(32, "windows per rank per forward pass in evaluation", ge=1)
    export: bool = option(True, "export a Hugging Face model directory at the end (best by dev EM)")
    select_best: bool = option(True, "export the checkpoint with the best dev EM; false: the last one (when the "
                                     "dev file is an evaluation set that must not choose, its EM only a curve)")
    clean_checkpoints: Literal["none", "keep_best", "all"] = option(
        "none", "after a successful export: keep every kept checkpoint (none), only the best one (keep_best; "
                "~4.7 GB each for a large model), or none of them (all)")
    tensorboard: bool = option(True, "also log to TensorBoard")
    timeout_minutes: float = option(
        60.0, "how long a rank waits in a collective for the others: longer than any work rank 0 does alone "
              "(export, checkpoint cleaning, cache builds) on the slowest storage; DeepSpeed's own default is 10",
        ge=1)

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every number, as declared above


@dataclass
class DistillSection:
    """Distillation from a teacher ensemble's stores (`qa-scale distill`).

    The teacher's span distributions over the training windows come from ``predict`` stores of the
    training file, combined as ``qa-scale ensemble`` combines them (see ``ensemble/distill.py``).
    """

    stores: list[str] = field(default_factory=list, metadata={"help": (
        "logits stores of the training file (`qa-scale predict MEMBER_MODEL TRAIN_FILE --out S`), one per teacher "
        "member, predicted with this run's window settings; empty: no distillation")})
    teacher: str | None = option(
        None, "ensemble recipe (ensemble/*.yaml) whose weights and combination rule make the teacher; its members "
              "are matched to the stores by model path. None: the uniform mean of the stores' raw logits")
    kl_weight: float = option(
        0.5, "loss = kl_weight × T² × KL(teacher ‖ student) + (1 − kl_weight) × gold span cross-entropy", ge=0, le=1)
    temperature: float = option(2.0, "softmax temperature T of teacher and student in the KL term", gt=0)
    strategy: Literal["all", "answer", "answer_and_negative"] = option(
        "all", "the training windows the student learns on each epoch: every window (the teacher's view of windows "
               "without the answer too); the windows holding the gold answer; or those and one random window without "
               "it per question, drawn anew each epoch")

    def __post_init__(self) -> None:
        check_fields(self)  # types and ranges of every number, as declared above
        if not isinstance(self.stores, list) or not all(isinstance(x, str) and x for x in self.stores):
            raise FieldError(f"stores: must be a list of store folders, got {self.stores!r}")
        if self.teacher is not None and not self.stores:
            raise ValueError("distill.teacher needs distill.stores: the teacher's logits over the training windows")


@dataclass
class TrainConfig:
    """One training run, as a recipe gives it."""

    mode: Literal["full", "lora"] = option("full", "full fine-tuning, or LoRA adapters with the span head trained in full")
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection, metadata={"help": "LoRA settings (mode: lora)"})
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    run: RunSection = field(default_factory=RunSection)
    decode: DecodeSection = field(default_factory=DecodeSection, metadata={"help": "how spans are chosen"})
    distill: DistillSection = field(default_factory=DistillSection)

    def __post_init__(self) -> None:
        o = self.optim
        if o.micro_batch_size != "auto" and o.global_batch_size % o.micro_batch_size:
            raise ValueError(f"optim.global_batch_size {o.global_batch_size} is not a multiple of "
                             f"optim.micro_batch_size {o.micro_batch_size}")
        if not self.run.output_dir:
            raise ValueError("run.output_dir is empty: give the folder the run writes to")
        if self.model.tiny is None and not self.model.name_or_path:
            raise ValueError("give model.name_or_path (hub name or directory) or model.tiny (a random small BERT)")
        if self.model.tiny is not None and not self.model.tokenizer:
            raise ValueError("model.tiny needs model.tokenizer (there is no checkpoint to take one from)")
        if self.distill.stores and self.data.strategy != "all":
            raise ValueError(f"distill.stores needs data.strategy: all (the teacher's stores hold every window of the "
                             f"training file), got {self.data.strategy}")
        if self.data.windows.mark_matches and self.mode == "lora":
            raise ValueError("data.windows.mark_matches needs mode: full (LoRA freezes the token type embeddings, "
                             "so the match type would stay a copy of the context type)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def recipe_fields(cls: type = TrainConfig, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Every key of a recipe as ``(dotted key, field, type)``, depth first in declaration order.

    A section (a nested dataclass, such as ``data.windows``) comes before its own keys, with its
    dataclass as the type; every other field is a leaf that a recipe or an override sets.
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f, hints[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            yield from recipe_fields(hints[f.name], f"{prefix}{f.name}.")


def _admits_list(annotation: Any) -> bool:
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return any(typing.get_origin(a) is list for a in args)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML or command-line value into the field's type, or raise naming the key."""
    kind = base_type(annotation)
    if value is None or (isinstance(value, str) and value in literals(annotation)):
        return value
    if isinstance(value, list) and _admits_list(annotation):
        if not value or not all(isinstance(v, (str, Path)) and str(v) for v in value):
            raise ValueError(f"{key}: expected a file path or a non-empty list of file paths, got {value!r}")
        return [str(v) for v in value]
    if kind is dict and not isinstance(value, dict):
        raise ValueError(f"{key}: expected a mapping such as {{hidden_size: 64}}, got {value!r}")
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            value = value.lower() in ("true", "1", "yes")
        elif kind in (int, float):
            if isinstance(value, bool):  # YAML true/false are not numbers
                raise ValueError(value)
            number = kind(value)
            if kind is int and isinstance(value, float) and value != number:
                raise ValueError(value)
            value = number
        elif kind is str:
            value = str(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key}: expected {kind.__name__}, got {value!r}") from None
    if typing.get_origin(annotation) is Literal and value not in typing.get_args(annotation):
        raise ValueError(f"{key}: must be one of {list(typing.get_args(annotation))}, got {value!r}")
    return value


def build(cls: type, values: dict, prefix: str = "") -> Any:
    """Nested dataclass from a nested dict; unknown keys are refused with a suggestion."""
    if not isinstance(values, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'recipe'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    check_keys(values, names, prefix=prefix)
    for key, value in values.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = build(kind, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, kind, prefix + key)
    try:
        return cls(**kwargs)
    except FieldError as err:  # a field of this section: name it with its full key
        raise ValueError(f"{prefix}{err}") from None


def _override_value(raw: str, key: str) -> Any:
    """An override's value, parsed as YAML (a non-finite number is left for the field's own check)."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise InputError(f"override {key}: invalid YAML value {raw!r}: {getattr(err, 'problem', None) or err}") from None
    except (ValueError, RecursionError) as err:
        raise InputError(f"override {key}: unreadable value: {err}") from None


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        *path, leaf = key.strip().split(".")
        node = values
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
        node[leaf] = _override_value(raw, key.strip()) if raw.strip() else None
    return values


def load_recipe(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe (or start from defaults), apply overrides, validate.

    The file is read through :mod:`qa_scale.common.inputs` (UTF-8, a mapping at the top level);
    every error names the file, or the key (``model.tiny.hidden_size: …``).
    """
    values = {}
    if path is not None:
        values = read_mapping(path, "recipe")
    try:
        return build(TrainConfig, apply_overrides(values, overrides))
    except ValueError as err:
        if path is None or isinstance(err, InputError):
            raise
        where = f"{path} with overrides {' '.join(overrides)}" if overrides else str(path)
        raise ValueError(f"{where}: {err}") from None


def dump_recipe(config: TrainConfig) -> str:
    """The resolved config as YAML (saved beside every checkpoint and logits store)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
