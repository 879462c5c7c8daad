"""DeepSpeed checkpoints → Hugging Face model directories (safetensors), written atomically.

``engine.save_checkpoint`` writes one shard per rank, in the training precision, partitioned
by ZeRO. Export consolidates the fp32 master weights into one model and saves it with
``save_pretrained``, so that ``predict``, other tools and the hub read it without DeepSpeed.
It runs in one process: rank 0 after a barrier, or offline after training.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """A checkpoint that does not fit the model it is exported as, or an unexportable model."""


@contextmanager
def _staged_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a sibling temporary folder; on success it replaces ``out_dir``, else it is removed.

    A directory cannot be renamed over a non-empty one, so the old folder is first moved
    aside and deleted only once the new one is in place: a failure at any point leaves
    either the old or the new export under ``out_dir``, never a mixture.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; exports are for sharing
        yield tmp
        _fsync_tree(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old)  # onto the empty folder just made: allowed on POSIX
            try:
                os.replace(tmp, out_dir)
            except BaseException:
                os.replace(old, out_dir)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful rename


def _fsync_tree(root: Path) -> None:
    # The rename is only a commit if the data reached the disk before it.
    for path in [*root.rglob("*"), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def export_state_dict(model: PreTrainedModel, out_dir: str | os.PathLike,
                      tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Save a model (and its tokenizer) as a Hugging Face directory in safetensors, atomically.

    Args:
        model: a model whose parameters are whole (not ZeRO-3 shards: use
            :func:`export_checkpoint` for a ZeRO-3 run).
        out_dir: the directory to write; an existing one is replaced once the new one is complete.
        tokenizer: saved alongside, so that the directory is self-contained.

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
    with _staged_dir(out_dir) as tmp:
        # Safetensors is the default of transformers ≥ 4.35 and the only format of 5.x, which
        # ignores `safe_serialization`; checking the files works with either.
        model.save_pretrained(tmp)
        if not any(tmp.glob("*.safetensors")):
            raise ExportError(f"save_pretrained wrote no safetensors file for {out_dir}")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    log.info("exported %s to %s", type(model).__name__, out_dir)
    return out_dir


def _resolve_tag(checkpoint_dir: Path, tag: str | None) -> str:
    if tag is not None:
        return tag
    latest = checkpoint_dir / "latest"
    if not latest.is_file():
        raise ExportError(f"no tag given and no 'latest' file in {checkpoint_dir}")
    return latest.read_text().strip()


def consolidated_state_dict(checkpoint_dir: str | os.PathLike, tag: str | None = None) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of a DeepSpeed checkpoint, any ZeRO stage and number of ranks.

    ZeRO 1-3 keep fp32 master weights in their optimizer shards, which DeepSpeed's
    ``zero_to_fp32`` reassembles (frozen parameters included). Stage 0 writes no such shards:
    its module state is whole and is read directly. In bf16/fp16 that is the half-precision
    copy, since the stage-0 optimizer stores its fp32 masters without parameter names.

    Args:
        checkpoint_dir: the folder given to ``engine.save_checkpoint``.
        tag: the tag it was saved under; default: the one named in its ``latest`` file.
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
    module = state["module"]
    if any(t.is_floating_point() and t.dtype != torch.float32 for t in module.values()):
        log.warning("%s: ZeRO stage 0 in half precision: exporting the half-precision weights", shard_dir)
    return {k: t.float() if t.is_floating_point() else t for k, t in module.items()}


def _key_problems(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
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
                      model_class: type | None = None) -> Path:
    """Consolidate a DeepSpeed checkpoint into a Hugging Face model directory.

    Args:
        checkpoint_dir: the folder given to ``engine.save_checkpoint``.
        tag: its tag (``None``: the one in the ``latest`` file).
        model_config: the architecture of the trained model.
        out_dir: the model directory to write (replaced atomically when it exists).
        tokenizer: saved alongside when given.
        model_class: the class to export as (an ``Auto…`` class or a model class); default
            ``AutoModelForQuestionAnswering``.

    Returns:
        ``out_dir``.

    Raises:
        ExportError: the checkpoint's tensors do not match the model (names every missing,
            unexpected and misshapen key, up to 8 of each).
    """
    from transformers import AutoModelForQuestionAnswering

    model_class = model_class or AutoModelForQuestionAnswering
    state = consolidated_state_dict(checkpoint_dir, tag)
    # Auto classes build through from_config; concrete model classes through _from_config.
    build = getattr(model_class, "from_config", None) or getattr(model_class, "_from_config", None)
    if build is None:
        raise ExportError(f"cannot build a {model_class.__name__} from a config: pass an Auto class or a "
                          "transformers model class (a peft model: export the merged base model)")
    model = build(model_config)
    problems = _key_problems(model, state)
    if problems:
        raise ExportError(f"checkpoint {checkpoint_dir} (tag {tag}) does not fit "
                          f"{type(model).__name__}: {problems}")
    model.load_state_dict(state, strict=True)
    return export_state_dict(model, out_dir, tokenizer)
