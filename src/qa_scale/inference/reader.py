"""A trained reader, resolved and loaded once: what ``predict``, ``answer``, ``serve`` and the ensembler all read.

Two steps, so that a command can check everything cheap before anything heavy loads:

* :func:`reader_settings` — a model directory (or a LoRA run's ``adapter/``) and the
  :class:`~.options.ReaderOptions` → its window and decode settings (the command line's over the
  training ``config.yaml`` beside the model, over the defaults) and its tokenizer spec. Reads only
  small files; errors name the file and key.
* :func:`load_reader` — those settings → the model on its device, in its compute dtype, in eval mode,
  with its tokenizer, checked against its windows (vocabulary, positions, token types).

A LoRA run's ``adapter/`` is a reader too: its base model (the adapter config's
``base_model_name_or_path``) is loaded, the adapter applied with peft and merged, so the model is
called exactly as an exported ``model/`` is, ``token_type_ids`` included.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..data.windows import Template, WindowConfig
from ..evaluation.decode import DecodeConfig
from .options import ReaderOptions

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def training_config(model_dir: str | os.PathLike) -> Path | None:
    """The ``config.yaml`` that training saved beside (or in) a model directory, if any."""
    model_dir = Path(model_dir)
    for path in (model_dir / "config.yaml", model_dir.parent / "config.yaml"):
        if path.is_file():
            return path
    return None


def is_adapter(path: Path) -> bool:
    """True for a peft adapter directory (``adapter/`` of a LoRA run)."""
    return (path / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class ReaderSettings:
    """What a model directory and the options say, before any weight is read."""

    path: Path
    windows: WindowConfig
    decoding: DecodeConfig
    tokenizer: str  # the tokenizer spec to load
    adapter: bool = False
    source: Path | None = None  # the training config the window and decode settings came from, if any

    @property
    def name(self) -> str:
        """``x`` for ``runs/x/model`` or ``runs/x/adapter``, else the directory's own name."""
        p = self.path
        return p.parent.name if p.name in ("model", "adapter") and p.parent.name else p.name


def _section(saved: Mapping, path: Path, *keys: str) -> dict:
    from ..common.inputs import InputError

    obj: Any = saved
    for n, key in enumerate(keys):
        obj = obj.get(key) or {}
        if not isinstance(obj, dict):
            raise InputError(f"{path}: {'.'.join(keys[: n + 1])}: expected a mapping of settings, "
                             f"got {type(obj).__name__}")
    return dict(obj)


def reader_settings(model_dir: str | os.PathLike, options: ReaderOptions = ReaderOptions()) -> ReaderSettings:
    """Resolve a model directory's settings and tokenizer (see the module docstring).

    Raises:
        FileNotFoundError: the directory is missing.
        InputError: its training config cannot be read (naming the file and key).
        ValueError: settings that contradict each other (naming where each came from), no tokenizer.
    """
    from ..common.inputs import InputError, read_mapping

    path = Path(model_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    saved_w, saved_d, model = {}, {}, {}
    config = training_config(path)
    if config is not None:
        saved = read_mapping(config, "training config")  # errors name the file and line or key
        saved_w, saved_d, model = (_section(saved, config, *k) for k in (("data", "windows"), ("decode",), ("model",)))
        log.info("window and decode settings of %s default to %s", path, config)
    try:
        windows = WindowConfig.layered(saved_w, options.windows)
        decoding = DecodeConfig(**{**saved_d, **options.decoding})
    except TypeError as err:
        raise ValueError(f"{config}: cannot read its window/decode settings: {err}") from None
    except ValueError as err:
        if config is None or isinstance(err, InputError):
            raise
        raise ValueError(f"{err} (settings from the command line over {config})") from None
    return ReaderSettings(path, windows, decoding, _tokenizer_spec(path, options.tokenizer, model), is_adapter(path),
                          config)


def _tokenizer_spec(model_dir: Path, given: str | None, model_section: dict) -> str:
    """The tokenizer to load: the given one, the model directory's own, else the training config's."""
    if given:
        return given
    if any((model_dir / f).is_file() for f in TOKENIZER_FILES):
        return str(model_dir)
    spec = model_section.get("tokenizer") or model_section.get("name_or_path")
    if not spec:
        raise ValueError(f"{model_dir} holds no tokenizer and no training config names one: pass --tokenizer")
    return str(spec)


@dataclass
class Reader:
    """One loaded model with its tokenizer and settings."""

    settings: ReaderSettings
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    compute: str = "fp32"

    @classmethod
    def of(cls, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, windows: WindowConfig,
           decoding: DecodeConfig = DecodeConfig(), path: str | os.PathLike = "model") -> "Reader":
        """A reader of a model already in memory (in eval mode, on its device), e.g. at the end of training."""
        spec = getattr(tokenizer, "name_or_path", "") or "in memory"
        return cls(ReaderSettings(Path(path), windows, decoding, spec), model, tokenizer)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def path(self) -> Path:
        return self.settings.path

    @property
    def adapter(self) -> bool:
        """Whether it was loaded from a LoRA adapter directory (base + adapter, merged)."""
        return self.settings.adapter


def _adapter_model(adapter_dir: Path):
    """Base model + LoRA adapter, merged: a plain ``…ForQuestionAnswering`` that takes token_type_ids.

    Raises:
        ValueError: the adapter's base model cannot be found (naming where it looked).
    """
    from ..common.inputs import read_json
    from ..modeling.lora import load_adapter_model
    from ..modeling.model import load_qa_model

    settings = read_json(adapter_dir / ADAPTER_CONFIG, "adapter config")  # errors name the file and key
    base_name = settings.get("base_model_name_or_path") if isinstance(settings, dict) else None
    if not isinstance(base_name, str) or not base_name:
        raise ValueError(f"{adapter_dir / ADAPTER_CONFIG} names no base_model_name_or_path")
    # As written; relative to the adapter or its run; and the base saved beside the adapter (a base
    # built from a config), whose absolute path no longer holds once the run folder has moved.
    tried = [Path(base_name), adapter_dir / base_name, adapter_dir.parent / base_name, adapter_dir / "base"]
    base_dir = next((p for p in tried if p.is_dir()), None)
    if base_dir is None:
        raise ValueError(f"{adapter_dir}: base model {base_name!r} not found (looked in "
                         + ", ".join(str(p) for p in tried) + ")")
    return load_adapter_model(load_qa_model(str(base_dir), new_head=True), adapter_dir).merge_and_unload()


def torch_dtype(compute: str) -> "torch.dtype":
    """``fp32``/``bf16``/``fp16`` → the torch dtype."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[compute]


def resolve_compute(compute: str, device, record: bool) -> str:
    """The dtype ``compute`` stands for on ``device``: ``auto`` is fp32 where the output is a record
    (``predict``'s stores: the same bits on any machine), else bf16 where the device multiplies bf16
    natively (a CUDA GPU with bf16, a CPU with AMX or AVX-512 BF16), else fp32; any other value is
    itself."""
    if compute != "auto":
        return compute
    if record:
        return "fp32"
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        from ..runtime.cpu import cpu_bf16_matmul

        return "bf16" if cpu_bf16_matmul() else "fp32"
    return "fp32"


def load_reader(settings: ReaderSettings, device, compute: str = "fp32",
                tokenizer: PreTrainedTokenizerBase | None = None) -> Reader:
    """Load the model of ``settings`` onto ``device`` in ``compute`` dtype, in eval mode, checked.

    Args:
        settings: from :func:`reader_settings`.
        device: a torch device or its name (``"cpu"``, ``"cuda:0"``…).
        compute: dtype of the forward pass, ``fp32``, ``bf16`` or ``fp16`` (``auto``: see
            :func:`resolve_compute`, for a reader that answers).
        tokenizer: the tokenizer of ``settings.tokenizer`` when already loaded (shared by several readers).

    Raises:
        ModelLoadError: weights that do not cover the model, or a tokenizer/window setting the
            model has no embeddings for.
    """
    from ..data.tokenization import load_tokenizer
    from ..modeling.model import check_inputs, load_qa_model

    tok = tokenizer if tokenizer is not None else load_tokenizer(settings.tokenizer)
    # Weights must cover the model: no new head when reading (a LoRA base gets its head from the adapter).
    model = _adapter_model(settings.path) if settings.adapter else load_qa_model(str(settings.path))
    check_inputs(model, tok, settings.windows)
    try:  # settings that make no window with this tokenizer's special tokens: said before any forward pass
        settings.windows.check(Template.of(tok).n_special)
    except ValueError as err:
        where = f"the command line over {settings.source}" if settings.source else "the command line"
        raise ValueError(f"{settings.path}: {err} (window settings from {where})") from None
    compute = resolve_compute(compute, device, record=False)
    model = model.to(device=device, dtype=torch_dtype(compute)).eval()
    log.info("loaded %s (%s) on %s in %s", settings.name, settings.path, device, compute)
    return Reader(settings, model, tok, compute)
