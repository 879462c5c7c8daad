"""Whole jobs: ``demo`` (the embedded default), ``compare`` (LoRA vs full) and ``lora-params``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common.settings import add_arguments, from_arguments
from .common import command, emit, input_arg, output_workdir, positive_int


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    from ..workflows.demo_config import DemoConfig

    output_workdir(p, "--out", kind="demo", default=Path("demo"),
                   help="folder to write: new, empty or an earlier demo's, whose finished stages are reused "
                        "(default: ./demo)")
    add_arguments(p, DemoConfig, "demo settings")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


@command("demo", _demo_arguments,
         help="the embedded default, offline: sample data → 2 backbones → 4 readers (DeepSpeed, CPU) → predict → "
              "weighted ensemble → scores → submission",
         description="Everything the project does, on data and masked-LM backbones it makes itself: readers "
                     "fine-tuned from two backbones of different shapes and seeds with `deepspeed --num_gpus RANKS` "
                     "(CPU ranks on gloo), their logits stores, member weights searched on one part of dev, the "
                     "ensemble against the best member on the other part (paired bootstrap interval), and the HW7 "
                     "CSV. About 15 minutes on 2 CPU cores; finished stages are reused on a re-run.")
def demo(args: argparse.Namespace) -> int:
    from ..workflows.demo import run_demo
    from ..workflows.demo_config import DemoConfig
    from ..workflows.demo_report import report_text

    report = run_demo(args.out, from_arguments(DemoConfig, args))
    emit(report, args, report_text(report, args.out))
    return 0


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    input_arg(p, "recipe", nargs="?", help="YAML recipe both runs start from (needs data.dev_file)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for both runs")
    output_workdir(p, "--out", kind="compare", required=True,
                   help="folder for the two runs and the comparison: new, empty or an earlier comparison's")
    p.add_argument("--lora-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the LoRA run only, e.g. optim.lr=3e-4 (repeatable)")
    p.add_argument("--full-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the full run only (repeatable)")
    p.add_argument("--launcher", default="",
                   help='prefix of each training command, e.g. "deepspeed --num_gpus 8" (default: one plain process)')
    input_arg(p, "--collect", nargs=2, metavar=("FULL_RUN", "LORA_RUN"),
              help="compare these two finished run folders instead of training")
    p.add_argument("--bootstrap", type=positive_int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")


@command("compare", _compare_arguments,
         help="LoRA vs full fine-tuning on the same backbone, data and seed: table, JSON, chart",
         description="Runs RECIPE twice (mode=full into OUT/full, mode=lora into OUT/lora; finished runs are reused, "
                     "unfinished ones resumed), or collects two finished run folders with --collect, then writes "
                     "OUT/comparison.{md,json,png}: trainable parameters, peak memory, samples/s, wall time, dev EM/F1 "
                     "with bootstrap 95% intervals.")
def compare(args: argparse.Namespace) -> int:
    from ..workflows.compare import compare as run

    result = run(args.recipe, args.overrides, args.out, args.launcher, args.lora_set, args.full_set, args.collect,
                 args.bootstrap, args.seed)
    emit(result, args, result.pop("text"))
    return 0


def _lora_params_arguments(p: argparse.ArgumentParser) -> None:
    from ..modeling.families import shapes

    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="model directory or cached hub name (only its config is read)")
    where.add_argument("--shape", choices=sorted(shapes()), help="a named architecture: " + "; ".join(
        f"{k}: {v['num_hidden_layers']} layers, hidden {v['hidden_size']}" for k, (_, v) in shapes().items()))
    p.add_argument("overrides", nargs="*", help="lora.* settings, e.g. lora.r=16 lora.target_modules=[query,value]")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


@command("lora-params", _lora_params_arguments,
         help="total and trainable parameters of full fine-tuning vs LoRA for a model or shape",
         description="Builds the model on PyTorch's meta device (shapes only, nothing downloaded or allocated) and "
                     "applies the LoRA settings of a recipe (defaults otherwise).")
def lora_params(args: argparse.Namespace) -> int:
    from ..modeling.lora import LoraSection, shape_counts
    from ..modeling.model import config_of_shape, load_config
    from ..training.recipe import apply_overrides, build

    overrides = [o if o.startswith("lora.") else f"lora.{o}" for o in args.overrides]
    section = build(LoraSection, apply_overrides({}, overrides)["lora"], "lora.") if overrides else LoraSection()
    counts = shape_counts(load_config(args.model) if args.model else config_of_shape(args.shape), section)
    out = {"model": args.model or args.shape, **counts, "lora": vars(section)}
    emit(out, args, f"{out['model']}: {counts['total']:,} parameters; full fine-tuning trains all of them, LoRA "
                    f"(r={section.r}, {','.join(counts['targets'])} + span head) trains {counts['lora_trainable']:,} "
                    f"({counts['lora_trainable_percent']:.3f}%)")
    return 0
