"""Commands that train: ``train`` (a reader from a recipe) and ``backbone`` (the offline masked-LM backbone)."""

from __future__ import annotations

import argparse
import json

from ..common.settings import add_arguments, from_arguments
from .common import command, input_arg, is_main_rank, output_workdir


def _train_arguments(p: argparse.ArgumentParser) -> None:
    input_arg(p, "recipe", nargs="?", help="YAML recipe (see launch/recipes/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.lr=2e-5")
    p.add_argument("--resume", help="'auto' (newest committed checkpoint) or a checkpoint folder; same as run.resume=")


@command("train", _train_arguments,
         help="fine-tune a reader with DeepSpeed (ZeRO-2/3, bf16/fp16), or plainly in one process",
         description="Train from a YAML recipe plus dotted overrides, e.g. `qa-scale train launch/recipes/tiny_cpu.yaml "
                     "optim.lr=1e-4 run.output_dir=runs/x`. Under the launcher: `deepspeed --num_gpus 8 "
                     "$(which qa-scale) train RECIPE ...`.")
def train(args: argparse.Namespace) -> int:
    from ..training.loop import run
    from ..training.recipe import load_recipe

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and not recipe.exists() and "=" in str(recipe):  # only overrides
        recipe, overrides = None, [str(args.recipe), *overrides]
    overrides += [f"run.resume={args.resume}"] if args.resume else []
    summary = run(load_recipe(recipe, overrides))
    if is_main_rank():
        print(json.dumps(summary, ensure_ascii=False))
    return 0


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
