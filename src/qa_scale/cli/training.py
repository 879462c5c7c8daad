"""Commands that train: ``train`` (a reader from a recipe) and ``backbone`` (the offline masked-LM backbone)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
import types
import typing
from typing import Any

from ..common.settings import add_arguments, from_arguments
from .common import command, input_arg, is_main_rank, output_workdir


_SIGNS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
_GLUE = "\0"  # a space that wrapping keeps: "≥ 1" stays on one line


def _as_yaml(value: Any) -> str:
    """A default as an override writes it (``KEY=VALUE`` reads VALUE as YAML): null, true, [], "quoted" when
    YAML would read the bare text as something else."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)
    text = str(value)
    if isinstance(value, str):
        import yaml

        try:
            same = yaml.safe_load(text) == value
        except yaml.YAMLError:
            same = False
        return text if same else json.dumps(value, ensure_ascii=False)
    return text


def _limits(f: dataclasses.Field, annotation: Any) -> str:
    """``≥ 0, < 1``, ``one of: a, b`` or ``or auto``: what a key admits beyond its type."""
    from ..common.settings import literals

    parts = [f"{sign}{_GLUE}{f.metadata[key]}" for key, sign in _SIGNS if key in f.metadata]
    choices = literals(annotation)
    if choices:
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        members = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
        only = all(typing.get_origin(a) is typing.Literal for a in members)  # else "int or auto"
        parts.append(("one of: " if only else "or ") + ", ".join(map(str, choices)))
    return ", ".join(parts)


def _section_title(f: dataclasses.Field, cls: type) -> str:
    return f.metadata.get("help") or (cls.__doc__ or "").strip().splitlines()[0].rstrip(".")


def recipe_keys_help(width: int = 100) -> str:
    """Every recipe key (walked from :class:`TrainConfig`) with its default, range and help, by section."""
    from ..training.recipe import TrainConfig, recipe_fields

    sections: dict[str, list[str]] = {"": []}
    titles = {"": (TrainConfig.__doc__ or "").strip().splitlines()[0].rstrip(".")}
    rows: list[tuple[str, str, str]] = []  # (section, "key = default", help)
    for key, f, annotation in recipe_fields():
        section = key.rpartition(".")[0]
        if dataclasses.is_dataclass(annotation):
            sections[key], titles[key] = [], _section_title(f, annotation)
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        limits = _limits(f, annotation)
        rows.append((section, f"{key} = {_as_yaml(default)}",
                     f.metadata.get("help", "") + (f" ({limits})" if limits else "")))
    column = min(max(len(left) for _, left, _ in rows), max(24, width * 2 // 5)) + 6
    text_width = max(width - column, 30)
    for section, left, help_text in rows:
        lines = [line.replace(_GLUE, " ") for line in textwrap.wrap(help_text, text_width, break_on_hyphens=False)]
        lines = lines or [""]
        if len(left) + 6 > column:  # too long for the column: its help starts on the next line
            sections[section].append(f"    {left}")
        else:
            sections[section].append(f"    {left:<{column - 6}}  {lines.pop(0)}".rstrip())
        sections[section] += [" " * column + line for line in lines]
    out = ["recipe keys (in the YAML recipe, or overrides KEY=VALUE with VALUE as YAML):"]
    for section, lines in sections.items():
        if lines:
            out += [f"  {section or '(top level)'}: {titles[section]}", *lines]
    return "\n".join(out)


_RECIPE_KEYS = "(every recipe key; see _TrainHelpFormatter)"  # the epilog's stand-in, matched by identity


class _TrainHelpFormatter(argparse.HelpFormatter):
    """argparse's layout, except for the epilog: the recipe keys, rendered only when help is printed."""

    def _format_text(self, text: str) -> str:
        if text is _RECIPE_KEYS:
            return recipe_keys_help(self._width) + "\n"
        return super()._format_text(text)


def _train_arguments(p: argparse.ArgumentParser) -> None:
    input_arg(p, "recipe", nargs="?", help="YAML recipe (see launch/recipes/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.lr=2e-5 (keys below)")
    p.add_argument("--resume", help="'auto' (newest committed checkpoint) or a checkpoint folder; same as run.resume=")
    # The keys are listed from TrainConfig itself when --help prints, so that a plain run (and every
    # other command, whose parser is built too) imports no recipe.
    p.epilog, p.formatter_class = _RECIPE_KEYS, _TrainHelpFormatter


@command("train", _train_arguments,
         help="fine-tune a reader with DeepSpeed (ZeRO-2/3, bf16/fp16), or plainly in one process",
         description="Train from a YAML recipe plus dotted overrides, e.g. `qa-scale train launch/recipes/tiny_cpu.yaml "
                     "optim.lr=1e-4 run.output_dir=runs/x`. Under the launcher: `deepspeed --num_gpus 8 "
                     "$(which qa-scale) train RECIPE ...`.")
def train(args: argparse.Namespace) -> int:
    return _train(args, [])


def _train(args: argparse.Namespace, extra: list[str], distill: bool = False) -> int:
    """Load the recipe with its overrides (then ``extra``) and train; a ``distill:`` section distills."""
    from ..common.outputs import note_input
    from ..training.loop import recipe_input_keys, run
    from ..training.recipe import load_recipe
    from ..training.tasks import QATask

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and not recipe.exists() and "=" in str(recipe):  # only overrides
        recipe, overrides = None, [str(args.recipe), *overrides]
    overrides += [f"run.resume={args.resume}"] if args.resume else []
    config = load_recipe(recipe, overrides + extra)
    for key, path in recipe_input_keys(config):  # noted with where they were given, for any refusal's message
        note_input(path, via=f"{key} of {recipe}" if recipe is not None else key)
    make_task = QATask
    if config.distill.stores:  # the teacher's stores and recipe are checked before any rank starts
        from ..ensemble.distill import DistillTask, teacher_members

        teacher_members(config.distill)
        make_task = DistillTask
    elif distill:
        raise ValueError("qa-scale distill needs the teacher's stores of the training file: --store S1 --store S2 … "
                         "(or distill.stores in the recipe)")
    summary = run(config, make_task=make_task)
    if is_main_rank():
        print(json.dumps(summary, ensure_ascii=False))
    return 0


def _distill_arguments(p: argparse.ArgumentParser) -> None:
    _train_arguments(p)
    input_arg(p, "--store", dest="stores", action="append",
              help="a teacher member's logits store of the training file (`qa-scale predict MEMBER/model TRAIN_FILE "
                   "--out S`); repeat it, one per member; same as distill.stores=[…]")
    input_arg(p, "--teacher", help="ensemble recipe giving the members' weights and combination rule (matched to "
                                   "the stores by model path); same as distill.teacher=")


@command("distill", _distill_arguments,
         help="train one reader on a teacher ensemble's span distributions (logits stores of the training file)",
         description="Distillation through the training engine: `qa-scale distill RECIPE --store S1 --store S2 … [--teacher "
                     "ENSEMBLE.yaml] distill.kl_weight=0.5 distill.temperature=2`. The stores must be predictions of "
                     "the recipe's training file with its windows; the student trains like `train` (full or LoRA, "
                     "ZeRO-2/3, resume) and exports a reader for `answer`/`serve`.")
def distill(args: argparse.Namespace) -> int:
    extra = []
    if args.stores:
        extra.append("distill.stores=" + json.dumps([str(s) for s in args.stores], ensure_ascii=False))
    if args.teacher:
        extra.append("distill.teacher=" + json.dumps(str(args.teacher), ensure_ascii=False))
    return _train(args, extra, distill=True)


def _backbone_arguments(p: argparse.ArgumentParser) -> None:
    from ..training.backbone_options import BackboneOptions

    input_arg(p, "corpus", help="text file, one document per line (e.g. sample-data's corpus.txt)")
    output_workdir(p, "--out", kind="backbone", required=True,
                   help="run folder (checkpoints, logs, model/): new, empty, or an earlier backbone run to resume")
    add_arguments(p, BackboneOptions, "backbone settings")


@command("backbone", _backbone_arguments,
         help="pre-train a small Chinese BERT with masked-LM on a corpus (the offline default backbone)",
         description="Masked-LM pre-training on the training engine; the model lands in OUT/model (a Hugging Face "
                     "directory with its tokenizer) for `model.name_or_path`.")
def backbone(args: argparse.Namespace) -> int:
    from ..training.backbone import run_backbone
    from ..training.backbone_options import BackboneOptions

    summary = run_backbone(args.corpus, args.out, from_arguments(BackboneOptions, args))
    if is_main_rank():
        print(json.dumps(summary, ensure_ascii=False))
    return 0
