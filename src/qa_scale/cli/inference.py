"""Commands that run trained readers: ``predict`` (a logits store) and ``ensemble`` (stores → answers)."""

from __future__ import annotations

import argparse

from ..common.settings import add_arguments, from_arguments, given
from .common import command, data_arguments, emit, input_arg, output_folder


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    from ..inference.options import add_reader_arguments

    input_arg(p, "model", help="model directory, e.g. runs/x/model (exported by train), or a LoRA run's adapter/")
    data_arguments(p)
    output_folder(p, "--out", kind="store", required=True,
                  help="logits store folder to write (replaced atomically; an existing one only if it is a store)")
    add_reader_arguments(p, "the model's training config")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="dtype the logits are stored in (default: fp32)")
    input_arg(p, "--references", help="score the predictions against this file's answers (EM/F1, HW7 accuracy)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


@command("predict", _predict_arguments,
         help="a model directory × a data file → a logits store (logits of every window, answers, n-best)",
         description="Length-sorted, dynamically padded batches; one process, or sharded over ranks: "
                     "`deepspeed --num_gpus 8 $(which qa-scale) predict MODEL DATA --out STORE` (CPU ranks use gloo). "
                     "Window and decode settings default to the training config (config.yaml beside MODEL_DIR).")
def predict(args: argparse.Namespace) -> int:
    from ..inference.options import ReaderOptions

    options = ReaderOptions.from_arguments(args)
    options.prepare_process()  # CPU threads and how they wait: before torch loads

    from ..inference.predict import PredictOptions, run

    summary = run(PredictOptions(args.model, args.data, args.out, options, args.precision, args.references,
                                 args.mode, args.fmt))
    if summary is None:  # not rank 0
        return 0
    text = (f"wrote {summary['store']}: {summary['windows']} windows of {summary['examples']} examples "
            f"({summary['precision']} logits, {summary['world_size']} rank(s), {summary['seconds']} s)")
    if summary["metrics"]:
        m = summary["metrics"]
        text += f"\nEM {m['em']:.3f}  F1 {m['f1']:.3f} over {m['total']} questions"
    emit(summary, args, text)
    return 0


def _ensemble_arguments(p: argparse.ArgumentParser) -> None:
    from ..ensemble.options import EnsembleOptions
    from ..evaluation.decode import DecodeConfig

    input_arg(p, "stores", nargs="*", help="logits stores (from `qa-scale predict`); with --recipe: optional, "
                                           "matched to its members by model path")
    output_folder(p, "--out", kind="ensemble", required=True,
                  help="folder to write (replaced as a whole, atomically; an existing one only if it is an ensemble's)")
    add_arguments(p, EnsembleOptions, "members, weights and outputs")
    add_arguments(p, DecodeConfig, "decoding (default: the first store's settings)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


@command("ensemble", _ensemble_arguments,
         help="average the logits of several stores (fingerprint-checked), decode, submit, score",
         description="Streaming (weighted) mean of start/end logits over identical windows, then the shared decoder. "
                     "Writes predictions.json, nbest.json, submission.csv (HW7 data), metrics.json (with --references) "
                     "and ensemble.json into --out. Stores whose fingerprints differ are refused, naming the first "
                     "difference.")
def ensemble(args: argparse.Namespace) -> int:
    from ..ensemble.options import EnsembleOptions
    from ..ensemble.run import run_ensemble, summary_text
    from ..evaluation.decode import DecodeConfig

    summary = run_ensemble(args.stores, args.out, from_arguments(EnsembleOptions, args), given(args, DecodeConfig))
    emit(summary, args, summary_text(summary))
    return 0
