"""Commands on data files: ``check-data``, ``windows``, ``evaluate``, ``submit``, ``vocab``, ``sample-data``."""

from __future__ import annotations

import argparse
import sys

from ..common.settings import add_arguments, from_arguments
from ..data.windows import STRATEGIES
from .common import (command, data_arguments, emit, input_arg, json_arguments, output_file, output_folder,
                     positive_int, windows_arguments)


def _limit_or_auto(text: str) -> int | str:
    """An argparse type: ``auto`` or a whole number ≥ 1."""
    return text if text == "auto" else positive_int(text)


def _check_data_arguments(p: argparse.ArgumentParser) -> None:
    from ..workflows.check_data import CheckWindows

    data_arguments(p)
    windows_arguments(p, config=CheckWindows)  # --max-question-len also auto, as in a recipe
    p.add_argument("--max-answer-len", type=_limit_or_auto, default=30,
                   help="decoder limit in tokens that the ceiling is measured at; longer gold answers are counted. "
                        "auto: what a recipe's decode.max_answer_len: auto would choose from this file's answers "
                        "(the ceiling without a limit is always reported too; default: 30)")
    json_arguments(p)


@command("check-data", _check_data_arguments, help="validate a data file and measure the oracle ceiling of window settings",
         description="Validation report plus oracle fidelity: gold spans as one-hot logits, through windows and the "
                     "n-best decoder, scored with EM/F1.")
def check_data(args: argparse.Namespace) -> int:
    from ..data.tokenization import load_tokenizer
    from ..workflows.check_data import CheckWindows
    from ..workflows.check_data import check_data as run

    result, text = run(args.data, load_tokenizer(args.tokenizer), from_arguments(CheckWindows, args),
                       args.mode, args.fmt, args.max_answer_len)
    emit(result, args, text)
    return 0


def _windows_arguments(p: argparse.ArgumentParser) -> None:
    data_arguments(p)
    windows_arguments(p)
    output_folder(p, "--out", kind="windows", required=True, help="folder to write")
    p.add_argument("--strategy", choices=list(STRATEGIES), default="all",
                   help="all windows; one window per question with the answer at a random position; or that one "
                        "and one random window without the answer")
    p.add_argument("--seed", type=int, default=0, help="seed of the random answer placement")


@command("windows", _windows_arguments,
         help="cut a data file into windows and save them (datasets Arrow) for inspection or reuse")
def windows(args: argparse.Namespace) -> int:
    from .. import data
    from ..data.tokenization import load_tokenizer
    from ..data.window_store import save_windows
    from ..data.windows import WindowConfig, build_windows

    ds = data.load(args.data, mode=args.mode, fmt=args.fmt).require_examples()
    ws = build_windows(ds.examples, load_tokenizer(args.tokenizer), from_arguments(WindowConfig, args),
                       strategy=args.strategy, seed=args.seed)
    save_windows(ws, args.out)
    print(f"wrote {len(ws)} windows of {len(ds.examples)} examples to {args.out}")
    return 0


def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    input_arg(p, "data", help="the reference data file (HW7 or SQuAD style)")
    input_arg(p, "predictions", help="{id: answer} JSON, or an ID,Answer CSV")
    output_file(p, "--errors", help="write a per-question JSONL here, errors first")
    p.add_argument("--allow-unanswerable", action="store_true",
                   help="score a file in which no question has an answer (each counts 0; the output says so)")
    json_arguments(p)


@command("evaluate", _evaluate_arguments, help="EM/F1 (CMRC 2018 evaluator semantics) and HW7 accuracy of predictions")
def evaluate(args: argparse.Namespace) -> int:
    from .. import data
    from ..evaluation import metrics
    from ..evaluation.submit import read_predictions

    refs = data.load_references(args.data)
    scores, warnings = metrics.score_file(read_predictions(args.predictions), refs, args.predictions,
                                          allow_unanswerable=args.allow_unanswerable)
    for warning in warnings:
        print(f"qa-scale evaluate: warning: {warning}", file=sys.stderr)
    if args.errors:
        metrics.write_error_file(scores, args.errors)
    text = (f"EM {scores.em:.3f}  F1 {scores.f1:.3f}  over {scores.total} questions "
            f"({scores.total - scores.answered} unanswered)")
    if scores.hw7_accuracy is not None:
        text += f"  HW7 accuracy {scores.hw7_accuracy:.5f}"
    emit(scores.to_dict(), args, text)
    return 0


def _submit_arguments(p: argparse.ArgumentParser) -> None:
    input_arg(p, "data", help="the test data file (its ids and their order)")
    input_arg(p, "predictions", help="{id: answer} JSON")
    output_file(p, "--out", required=True, help="submission file to write (.csv or .json)")
    p.add_argument("--format", dest="sub_format", choices=["auto", "csv", "json"], default="auto",
                   help="csv: Kaggle ID,Answer; json: {id: answer}; auto: from --out's suffix, else the data's format")


@command("submit", _submit_arguments, help="write a leaderboard file (Kaggle HW7 CSV or CMRC/DRCD JSON)")
def submit(args: argparse.Namespace) -> int:
    from .. import data
    from ..evaluation.submit import SubmissionError, read_predictions, write_submission

    refs = data.load_references(args.data)
    try:
        write_submission(read_predictions(args.predictions), list(refs), args.out, args.sub_format,
                         refs.format.submission)
    except SubmissionError as err:
        raise SubmissionError(f"{args.predictions} against {args.data}: {err}") from None
    print(f"wrote {args.out} ({len(refs)} answers)")
    return 0


def _vocab_arguments(p: argparse.ArgumentParser) -> None:
    input_arg(p, "corpus", nargs="+", help="text files, one document per line")
    output_folder(p, "--out", kind="tokenizer", required=True,
                  help="tokenizer folder to write (vocab.txt + tokenizer files); an existing one only if ours")
    p.add_argument("--vocab-size", type=positive_int, default=8000, help="upper bound on entries (default: 8000)")


@command("vocab", _vocab_arguments, help="build a character-level Chinese WordPiece vocabulary from a corpus")
def vocab(args: argparse.Namespace) -> int:
    from ..data.tokenization import build_char_vocab, corpus_lines

    tok = build_char_vocab(corpus_lines(args.corpus), args.out, vocab_size=args.vocab_size)
    print(f"wrote {args.out} ({len(tok.get_vocab())} entries)")
    return 0


def _sample_data_arguments(p: argparse.ArgumentParser) -> None:
    from ..synthetic.config import SampleConfig

    output_folder(p, "--out", kind="sample-data", required=True,
                  help="folder to write (replaced as a whole; an existing one only if it holds sample data of ours)")
    add_arguments(p, SampleConfig, "sample settings")


@command("sample-data", _sample_data_arguments,
         help="generate the synthetic Chinese QA sample data (HW7 and SQuAD formats)")
def sample_data(args: argparse.Namespace) -> int:
    from .. import synthetic

    for name, path in synthetic.write_all(from_arguments(synthetic.SampleConfig, args), args.out).items():
        print(f"{name}: {path}")
    return 0
