"""DeepSpeed JSON templates → the config DeepSpeed runs with. The one place ``"auto"`` is filled.

DeepSpeed itself does not resolve ``"auto"`` (only the Hugging Face Trainer integration does),
so the values the recipe owns — batch sizes, accumulation, clipping, precision — are written
into the template here from the :class:`~.recipe.TrainConfig` and the world size. A
template value that is explicit and disagrees with the recipe is an error, never silently
overridden: one source of truth per setting.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

from .recipe import TrainConfig


class DSConfigError(ValueError):
    """A DeepSpeed template that disagrees with the recipe or cannot be filled."""


def _fill(node: dict, key: str, value: Any, where: str) -> None:
    current = node.get(key, "auto")
    if current == "auto":
        node[key] = value
    elif current != value:
        raise DSConfigError(f"{where}{key} is {current!r} in the DeepSpeed config but the recipe gives {value!r}; "
                            f"set it to \"auto\" (the recipe owns it) or change the recipe")


def _remaining_auto(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _remaining_auto(v, f"{path}{k}.")]
    return [path.rstrip(".")] if node == "auto" else []


def batch_plan(config: TrainConfig, world_size: int) -> tuple[int, int, int]:
    """(micro batch per rank, accumulation steps, global batch) for ``world_size`` ranks.

    With ``optim.micro_batch_size: auto`` the micro-batch is the largest divisor of
    ``global_batch_size / world_size`` that is at most ``optim.max_micro_batch_size``: one recipe
    then runs one GPU at micro-batch 32 without accumulation, or 8 GPUs at 4 each.
    """
    micro, total = config.optim.micro_batch_size, config.optim.global_batch_size
    if micro == "auto":
        if total % world_size:
            raise DSConfigError(f"optim.global_batch_size {total} is not divisible by {world_size} ranks")
        per_rank = total // world_size
        micro = max(d for d in range(1, min(per_rank, config.optim.max_micro_batch_size) + 1) if per_rank % d == 0)
    if total % (micro * world_size):
        raise DSConfigError(
            f"optim.global_batch_size {total} is not divisible by micro_batch_size {micro} × {world_size} ranks; "
            f"pick a global batch that is a multiple of {micro * world_size}")
    return micro, total // (micro * world_size), total


# Under this many windows a rank computes too little per step to hide its share of the gradient
# all-reduce (about 650 MB of bf16 gradients for a 330M encoder, every step whatever the batch).
SMALL_MICRO_BATCH = 8


def small_batch_warning(config: TrainConfig, world_size: int) -> str | None:
    """Why and how to grow the batch when each of several ranks gets under 8 windows, else None.

    Only data-parallel runs are warned: one rank exchanges no gradients, so a small micro-batch
    there costs kernel efficiency only, and ``max_micro_batch_size`` already says what fits. The
    device is not known here, so a multi-rank CPU (gloo) run with small batches is warned too.
    The learning-rate rule is the square root of the batch ratio (Adam's; Malladi et al. 2022),
    the rule the shipped GPU recipes state in their headers.
    """
    micro, accumulation, total = batch_plan(config, world_size)
    if world_size <= 1 or micro >= SMALL_MICRO_BATCH:
        return None
    head = (f"{world_size} ranks, global batch {total}: {micro} windows per rank per micro-step "
            f"(accumulation {accumulation}), under {SMALL_MICRO_BATCH}, too little compute to hide the "
            f"gradient all-reduce. ")
    grown = SMALL_MICRO_BATCH * world_size
    if total >= grown:  # the global batch allows 8 a rank: the micro-batch was set (or capped) small
        return head + (f"Set optim.micro_batch_size to {SMALL_MICRO_BATCH} or more (or raise "
                       f"optim.max_micro_batch_size) and let accumulation shrink")
    factor = math.sqrt(grown / total)
    return head + (f"Raise optim.global_batch_size with the GPU count (e.g. {grown} = {SMALL_MICRO_BATCH} × "
                   f"{world_size}) and scale optim.lr by the square root of the batch ratio (× {factor:.2f}: "
                   f"{config.optim.lr:.2e} → {config.optim.lr * factor:.2e}), or use fewer GPUs")


MIN_REDUCE_BUCKET = 1 << 20  # elements
MAX_BUCKET = 500_000_000  # DeepSpeed's own default reduce bucket


def _clamp(value: int, low: int, high: int) -> int:
    return int(min(max(value, low), high))


# "auto" rules of the ZeRO bucket sizes, from the hidden size h and the trainable parameters n.
# Reduce buckets: an eighth of the gradients (8 buckets a backward pass, so the reduction of one
# overlaps the computation of the next: 40M elements for a 330M encoder), never under h² or 1M
# elements (a hidden-128 model would otherwise all-reduce 30 tiny buckets a step). Stage-3
# prefetch: about one encoder layer ahead (n / 16), at least 0.9·h². Persistence: 10·h (biases and
# norms stay whole), the Hugging Face rule.
ZERO_RULES = {
    "reduce_bucket_size": lambda h, n: _clamp(n // 8, max(h * h, MIN_REDUCE_BUCKET), MAX_BUCKET),
    "stage3_prefetch_bucket_size": lambda h, n: _clamp(n // 16, int(0.9 * h * h), 50_000_000),
    "stage3_param_persistence_threshold": lambda h, n: 10 * h,
}
# Package data (also in a wheel); the project root's ds_configs/ is a link to this folder.
SHIPPED = Path(str(resources.files("qa_scale") / "ds_configs"))


def find_template(path: str | Path) -> Path:
    """A DeepSpeed JSON path as given, or else the shipped config of that name (``ds_configs/``).

    Recipes say ``ds_configs/zero2_bf16.json``; that works from the project root and, through
    the fallback, from any other working directory.
    """
    given = Path(path)
    if given.is_file():
        return given
    shipped = SHIPPED / given.name
    if not given.is_absolute() and given.parent.name in ("ds_configs", "") and shipped.is_file():
        return shipped
    raise DSConfigError(f"DeepSpeed config not found: {path} (shipped configs: "
                        f"{', '.join(sorted(p.name for p in SHIPPED.glob('*.json')))})")


def _read_template(path: Path) -> dict:
    from ..common.inputs import read_json  # errors name the file and line (or key)

    template = read_json(path, "DeepSpeed config")
    if not isinstance(template, dict):
        raise DSConfigError(f"{path}: a DeepSpeed config is a JSON object, got a {type(template).__name__}")
    return template


def resolve(template: dict | str | Path, config: TrainConfig, world_size: int,
            hidden_size: int | None = None, trainable_params: int | None = None) -> dict:
    """Fill a DeepSpeed template for this run.

    Args:
        template: the JSON (a dict, or a path to it).
        config: the run config that owns batch sizes, clipping and precision.
        world_size: number of data-parallel ranks.
        hidden_size: the model's hidden size, for ZeRO bucket sizes left at ``"auto"``.
        trainable_params: the number of parameters with gradients, for the same (a 330M-parameter
            encoder wants buckets far larger than hidden², which is 1M elements at hidden 1024).

    Raises:
        DSConfigError: an explicit value disagrees with the recipe, a precision block is missing,
            the template brings its own optimizer or scheduler, or an ``"auto"`` has no rule.
    """
    if not isinstance(template, dict):
        template = _read_template(find_template(template))
    ds = copy.deepcopy(template)
    for block in ("optimizer", "scheduler"):
        if block in ds:
            raise DSConfigError(f"the DeepSpeed config has a {block!r} block: qa-scale builds AdamW and the "
                                "schedule from the recipe (optim.*); remove the block")
    micro, accumulation, total = batch_plan(config, world_size)
    _fill(ds, "train_micro_batch_size_per_gpu", micro, "")
    _fill(ds, "gradient_accumulation_steps", accumulation, "")
    _fill(ds, "train_batch_size", total, "")
    _fill(ds, "gradient_clipping", float(config.optim.grad_clip), "")

    precision = config.run.precision
    for name in ("bf16", "fp16"):
        if name == precision and name not in ds:
            raise DSConfigError(f"run.precision is {precision} but the DeepSpeed config has no {name!r} block; "
                                f"use a *_{precision} config from ds_configs/ or change run.precision")
        if name in ds:
            _fill(ds[name], "enabled", name == precision, f"{name}.")

    zero = ds.get("zero_optimization", {})
    for key, rule in ZERO_RULES.items():
        if zero.get(key) == "auto":
            if hidden_size is None:
                raise DSConfigError(f"zero_optimization.{key} is 'auto' but the model's hidden size is unknown")
            zero[key] = rule(hidden_size, trainable_params or 0)
    ds.setdefault("steps_per_print", 10**9)  # qa-scale logs itself; keep DeepSpeed's own prints rare
    left = _remaining_auto(ds)
    if left:
        raise DSConfigError(f"no rule fills {', '.join(left)} = \"auto\"; give explicit values")
    return ds


def zero_stage(ds: dict) -> int:
    """The ZeRO stage of a resolved config (DeepSpeed's default, 0, when it has no ``zero_optimization`` block)."""
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def offloads_optimizer(ds: dict) -> bool:
    device = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device not in (None, "none")
