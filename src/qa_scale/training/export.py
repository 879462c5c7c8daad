"""DeepSpeed checkpoints → Hugging Face model directories (safetensors), written atomically.

``engine.save_checkpoint`` writes one shard per rank, in the training precision, partitioned
by ZeRO. Export consolidates the fp32 master weights into one model and saves it with
``save_pretrained``, so that ``predict``, other tools and the hub read it without DeepSpeed.
It runs in one process: rank 0 after a barrier, or offline after training.

Every exported reader folder carries a ``README.md`` model card (:mod:`.model_card`), rendered from
the run's ``config.yaml`` and the dev scores ``metrics.jsonl`` holds for the exported step, or from
the facts a caller passes. A LoRA adapter whose base was built from a config (``model.tiny``: a
random model that exists in no folder) carries that base, the exact weights it was trained on, in
``adapter/base/``, named by its absolute path in ``adapter_config.json`` so that peft loads it offline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..common.inputs import read_text
from ..common.outputs import atomic_open, staged_dir
from ..modeling.families import family_of
from . import checkpoint
from .model_card import CARD, CardFacts, adapter_card, model_card

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from ..modeling.lora import LoraSection

log = logging.getLogger(__name__)
BASE_DIR = "base"  # in an adapter folder: the base a random (config-built) model's adapter was trained on


class ExportError(ValueError):
    """A checkpoint that does not fit the model it is exported as, or an unexportable model."""


def export_state_dict(model: PreTrainedModel, out_dir: str | os.PathLike,
                      tokenizer: PreTrainedTokenizerBase | None = None, card: str | None = None) -> Path:
    """Save a model (and its tokenizer) as a Hugging Face directory in safetensors, atomically.

    Args:
        model: a model whose parameters are whole (not ZeRO-3 shards: use
            :func:`export_checkpoint` for a ZeRO-3 run).
        out_dir: the directory to write; an existing one is replaced once the new one is complete.
        tokenizer: saved alongside, so that the directory is self-contained.
        card: the text of its ``README.md`` model card, written with it.

    Raises:
        ExportError: the model holds ZeRO-3 partitioned parameters, or nothing was saved as safetensors.
    """
    # A ZeRO-3 module holds empty shards outside a forward (some may stay gathered after one,
    # which makes a size check unreliable); only a module gathered whole can be saved.
    if any(getattr(p, "ds_status", None) is not None and p.ds_status.name != "AVAILABLE"
           for p in model.parameters()):
        raise ExportError("the model's parameters are ZeRO-3 partitions; export its checkpoint "
                          "with export_checkpoint instead")
    out_dir = Path(out_dir)
    with staged_dir(out_dir, kind="model") as tmp:  # replaces only a model folder of ours
        # Safetensors is the default of transformers ≥ 4.35 and the only format of 5.x, which
        # ignores `safe_serialization`; checking the files works with either.
        model.save_pretrained(tmp)
        if not any(tmp.glob("*.safetensors")):
            raise ExportError(f"save_pretrained wrote no safetensors file for {out_dir}")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if card is not None:
            with atomic_open(tmp / CARD) as fh:
                fh.write(card)
    log.info("exported %s to %s", type(model).__name__, out_dir)
    return out_dir


def _resolve_tag(checkpoint_dir: Path, tag: str | None) -> str:
    if tag is not None:
        return tag
    done = checkpoint.committed(checkpoint_dir)
    if done:
        return done[-1][1]
    latest = checkpoint_dir / "latest"  # what engine.save_checkpoint(save_latest=True) writes
    if latest.is_file():
        return read_text(latest).strip()
    raise ExportError(f"no tag given, and {checkpoint_dir} has no committed checkpoint nor a 'latest' file")


def _step_of(tag: str) -> int | None:
    m = checkpoint.TAG.match(tag)
    return int(m.group(1)) if m else None


def _facts(card: CardFacts | None, out_dir: Path, tag: str) -> CardFacts:
    """The card's facts: the caller's, else the run folder's (``out_dir``'s parent, as training lays it out)."""
    return card if card is not None else CardFacts.of_run(out_dir.parent, _step_of(tag))


def _is_reader(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith("ForQuestionAnswering")


def consolidated_state_dict(checkpoint_dir: str | os.PathLike, tag: str | None = None) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of a DeepSpeed checkpoint, any ZeRO stage and number of ranks.

    ZeRO 1-3 keep fp32 master weights in their optimizer shards, which DeepSpeed's
    ``zero_to_fp32`` reassembles (frozen parameters included). Stage 0 writes no such shards:
    its module state is whole and is read directly. In bf16/fp16 that is the half-precision
    copy, so the fp32 masters the stage-0 optimizer saved replace it, by the parameter names
    its groups carry (:func:`~.optimizer.build_optimizer`); without the names (an optimizer
    built elsewhere) the half-precision copy is exported, with a warning.

    Args:
        checkpoint_dir: the folder given to ``engine.save_checkpoint``.
        tag: the tag it was saved under; default: the newest committed checkpoint, else the one
            named in DeepSpeed's ``latest`` file.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    checkpoint_dir = Path(checkpoint_dir)
    tag = _resolve_tag(checkpoint_dir, tag)
    shard_dir = checkpoint_dir / tag
    if not shard_dir.is_dir():
        raise ExportError(f"checkpoint {tag!r} not found: {shard_dir} is not a directory")
    if any(shard_dir.glob("*_optim_states.pt")):
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag,
                                                        exclude_frozen_parameters=False)
    state = torch.load(shard_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    module = {**state["module"], **_stage0_masters(state.get("optimizer"))}
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in module.values()):
        log.warning("%s: ZeRO stage 0 in half precision: exporting the half-precision weights", shard_dir)
    return {k: t.float() if t.is_floating_point() else t for k, t in module.items()}


def _stage0_masters(optimizer: dict | None) -> dict[str, torch.Tensor]:
    """Name → fp32 master of a stage-0 half-precision checkpoint's optimizer state; {} when it has none.

    DeepSpeed's unfused bf16/fp16 wrapper saves its masters as ``fp32_groups`` (one list per AdamW
    group, in the group's order) beside the AdamW state, whose groups hold ``param_names``.
    """
    if not isinstance(optimizer, dict) or "fp32_groups" not in optimizer:
        return {}
    groups = (optimizer.get("optimizer_state_dict") or {}).get("param_groups", [])
    masters = optimizer["fp32_groups"]
    if len(groups) != len(masters) or any(len(g.get("param_names", ())) != len(m) for g, m in zip(groups, masters)):
        return {}
    return {name: t.float() for g, m in zip(groups, masters) for name, t in zip(g["param_names"], m)}


def key_problems(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                  for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return None
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:8])}{' …' if len(keys) > 8 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected),
                                 ("shape checkpoint vs model", mismatched)) if keys]
    if any(k.startswith("base_model.model.") for k in unexpected):
        parts.append("the checkpoint is of a peft-wrapped model: export the merged model instead")
    return "; ".join(parts)


def export_checkpoint(checkpoint_dir: str | os.PathLike, tag: str | None, model_config: PretrainedConfig,
                      out_dir: str | os.PathLike, tokenizer: PreTrainedTokenizerBase | None = None,
                      model_class: type | None = None, card: CardFacts | None = None) -> Path:
    """Consolidate a DeepSpeed checkpoint into a Hugging Face model directory.

    Args:
        checkpoint_dir: the folder given to ``engine.save_checkpoint``.
        tag: its tag (``None``: the newest committed checkpoint, else DeepSpeed's ``latest``).
        model_config: the architecture of the trained model.
        out_dir: the model directory to write (replaced atomically when it exists).
        tokenizer: saved alongside when given.
        model_class: the class to export as (an ``Auto…`` class or a model class); default
            ``AutoModelForQuestionAnswering``.
        card: what the model card says of the run; default: what the run folder (``out_dir``'s
            parent) holds. Only question-answering readers get a card.

    Returns:
        ``out_dir``.

    Raises:
        ExportError: the checkpoint's tensors do not match the model (names every missing,
            unexpected and misshapen key, up to 8 of each).
    """
    from transformers import AutoModelForQuestionAnswering

    model_class = model_class or AutoModelForQuestionAnswering
    tag = _resolve_tag(Path(checkpoint_dir), tag)
    state = consolidated_state_dict(checkpoint_dir, tag)
    # Auto classes build through from_config; concrete model classes through _from_config.
    build = getattr(model_class, "from_config", None) or getattr(model_class, "_from_config", None)
    if build is None:
        raise ExportError(f"cannot build a {model_class.__name__} from a config: pass an Auto class or a "
                          "transformers model class (a peft model: export the merged base model)")
    model = build(model_config)
    problems = key_problems(model, state)
    if problems:
        raise ExportError(f"checkpoint {checkpoint_dir} (tag {tag}) does not fit "
                          f"{type(model).__name__}: {problems}")
    model.load_state_dict(state, strict=True)
    out_dir = Path(out_dir)
    text = None
    if _is_reader(model):  # a masked-LM backbone is no reader: it gets no reader card
        text = model_card(_facts(card, out_dir, tag), out_dir, tokenizer_saved=tokenizer is not None)
    return export_state_dict(model, out_dir, tokenizer, card=text)


def _check_adapter(state: dict[str, torch.Tensor], model: PeftModel) -> None:
    """Every trainable tensor (adapters and head) is present with its true, non-empty shape.

    A known failure of saving peft models under ZeRO-3 is empty (0-element) or partial
    adapters, written from the rank-local shards; this refuses such a checkpoint by name.
    """
    bad = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        got = state.get(name)
        if got is None or got.numel() == 0 or got.shape != param.shape:
            bad.append(f"{name}: {'missing' if got is None else tuple(got.shape)} (expected {tuple(param.shape)})")
    if bad:
        raise ExportError(f"incomplete LoRA checkpoint, {len(bad)} tensors: " + "; ".join(bad[:8]))


def _pre_lora_base(model: PeftModel, build, base_config: PretrainedConfig) -> torch.nn.Module:
    """The base a peft model was made from, as it was before LoRA: the frozen layers and the original head.

    LoRA never changes the base layers (frozen) nor the head's original copy (peft trains a copy in
    ``modules_to_save``), so the peft model's state holds them exactly; the adapters and trained
    copies are left out.
    """
    state = {}
    for name, tensor in model.get_base_model().state_dict().items():
        parts = name.split(".")
        if "modules_to_save" in parts or any(p.startswith("lora_") for p in parts):
            continue
        state[".".join(p for p in parts if p not in ("base_layer", "original_module"))] = tensor
    base = build(base_config)
    problems = key_problems(base, state)
    if problems:
        raise ExportError(f"cannot take the base model out of the LoRA model: {problems}")
    base.load_state_dict(state, strict=True)
    return base


def export_lora_checkpoint(checkpoint_dir: str | os.PathLike, tag: str | None, base_config: PretrainedConfig,
                           section: LoraSection, model_dir: str | os.PathLike, adapter_dir: str | os.PathLike,
                           tokenizer: PreTrainedTokenizerBase | None = None, base_class: type | None = None,
                           base_name: str | None = None, card: CardFacts | None = None) -> tuple[Path, Path]:
    """Consolidate a LoRA run's DeepSpeed checkpoint into an adapter directory and a merged model.

    Args:
        checkpoint_dir, tag: as for :func:`export_checkpoint`.
        base_config: the backbone's architecture. When it names no source (``name_or_path`` empty: a
            model built from a config, such as ``model.tiny``), the base weights the adapter was
            trained on are saved into ``adapter_dir/base`` and the adapter config names that folder
            by its absolute path, so that peft loads the adapter offline.
        section: the LoRA settings the run trained with.
        model_dir: where the merged ``…ForQuestionAnswering`` goes (what ``predict`` reads).
        adapter_dir: where the peft adapter goes (``PeftModel.from_pretrained(base, adapter_dir)``, or
            ``AutoPeftModelForQuestionAnswering.from_pretrained(adapter_dir)``: its task type is QUESTION_ANS).
        tokenizer: saved with the merged model.
        base_class: the backbone's model class (default ``AutoModelForQuestionAnswering``).
        base_name: recorded in the adapter's config as its base model (a hub name or folder; ignored
            for a base built from a config, which is saved instead).
        card: what the model cards say of the run; default: what the run folder holds.

    Raises:
        ExportError: the checkpoint does not fit the model, or an adapter or head tensor is
            missing, empty or misshapen.
    """
    from peft import get_peft_model
    from transformers import AutoModelForQuestionAnswering

    tag = _resolve_tag(Path(checkpoint_dir), tag)
    state = consolidated_state_dict(checkpoint_dir, tag)
    base_class = base_class or AutoModelForQuestionAnswering
    build = getattr(base_class, "from_config", None) or base_class._from_config
    base = build(base_config)
    family = family_of(base)
    model = get_peft_model(base, section.peft_config(family))
    problems = key_problems(model, state)
    if problems:
        raise ExportError(f"checkpoint {checkpoint_dir} (tag {tag}) does not fit the LoRA model: {problems}")
    _check_adapter(state, model)
    model.load_state_dict(state, strict=True)
    model_dir, adapter_dir = Path(model_dir), Path(adapter_dir)
    random_base = _pre_lora_base(model, build, base_config) if not base_config.name_or_path else None
    if random_base is not None:
        # Its final place (the folder staged below is renamed there), absolute: peft resolves a relative
        # base against the working directory, not the adapter folder.
        base_name = str(Path(os.path.abspath(adapter_dir)) / BASE_DIR)
    base_name = base_name or base_config.name_or_path or None
    model.peft_config["default"].base_model_name_or_path = base_name
    # Saved as a QUESTION_ANS adapter so that peft's AutoPeftModelForQuestionAnswering loads it; the
    # training model stays the plain PeftModel (the QA wrapper drops token_type_ids: modeling/lora.py).
    model.peft_config["default"].task_type = "QUESTION_ANS"
    facts = dataclasses.replace(_facts(card, model_dir, tag), lora_targets=section.targets(family))
    with staged_dir(adapter_dir, kind="adapter") as tmp:
        model.save_pretrained(tmp)
        if not any(tmp.glob("adapter_model.safetensors")):
            raise ExportError(f"peft wrote no adapter_model.safetensors for {adapter_dir}")
        if random_base is not None:
            random_base.save_pretrained(tmp / BASE_DIR)
        with atomic_open(tmp / CARD) as fh:  # in place of peft's template card
            fh.write(adapter_card(facts, adapter_dir, base_name, model_dir, saved_base=random_base is not None))
    merged = model.merge_and_unload()
    export_state_dict(merged, model_dir, tokenizer,
                      card=model_card(facts, model_dir, lora=True, tokenizer_saved=tokenizer is not None))
    log.info("exported LoRA adapter to %s and the merged model to %s", adapter_dir, model_dir)
    return model_dir, adapter_dir
