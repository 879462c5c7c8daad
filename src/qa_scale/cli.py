"""The ``qa-scale`` console script: one subcommand per job, each with ``--help``.

Subcommands import their heavy dependencies lazily so that ``qa-scale --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from .config import add_arguments, from_arguments

log = logging.getLogger("qa_scale")
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    """Register ``fn`` as the handler of subcommand ``name``."""
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register


def _emit(obj: dict, args: argparse.Namespace, text: str) -> None:
    """Print JSON (``--json``) or the human summary; write ``--out`` JSON when asked."""
    if getattr(args, "out_json", None):
        from .files import write_json
        write_json(args.out_json, obj)
    print(json.dumps(obj, ensure_ascii=False, indent=2) if args.json else text)


def _windows_args(p: argparse.ArgumentParser) -> None:
    from .windows import WindowConfig
    p.add_argument("--tokenizer", required=True,
                   help="vocab.txt, tokenizer/model directory, or hub name (from the local cache when offline)")
    add_arguments(p, WindowConfig, "window settings")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="HW7 or SQuAD-style (CMRC 2018, DRCD) JSON file")
    p.add_argument("--mode", choices=["strict", "lenient"], default="lenient",
                   help="strict: fail on any problem; lenient: repair or drop and report (default: lenient)")
    p.add_argument("--format", dest="fmt", choices=["auto", "hw7", "squad"], default="auto",
                   help="input format (default: from the file's keys)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa-scale", description=(
        "Train, ensemble and submit Chinese extractive QA models. "
        "Run `qa-scale COMMAND --help` for each command."))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # the deepspeed launcher puts --local_rank=N before the subcommand (LOCAL_RANK is read instead)
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check-data", help="validate a data file and measure the oracle ceiling of window settings",
                       description="Validation report plus oracle fidelity: gold spans as one-hot logits, "
                                   "through windows and the n-best decoder, scored with EM/F1.")
    _data_args(p)
    _windows_args(p)
    p.add_argument("--max-answer-len", type=int, default=30,
                   help="decoder limit in tokens; longer gold answers are counted (default: 30)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument("--out", dest="out_json", type=Path, help="also write the JSON report here")

    p = sub.add_parser("evaluate", help="EM/F1 (CMRC 2018 evaluator semantics) and HW7 accuracy of predictions")
    p.add_argument("data", type=Path, help="the reference data file (HW7 or SQuAD style)")
    p.add_argument("predictions", type=Path, help="{id: answer} JSON, or an ID,Answer CSV")
    p.add_argument("--errors", type=Path, help="write a per-question JSONL here, errors first")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--out", dest="out_json", type=Path, help="also write the JSON scores here")

    p = sub.add_parser("submit", help="write a leaderboard file (Kaggle HW7 CSV or CMRC/DRCD JSON)")
    p.add_argument("data", type=Path, help="the test data file (its ids and their order)")
    p.add_argument("predictions", type=Path, help="{id: answer} JSON")
    p.add_argument("--out", required=True, type=Path, help="submission file to write (.csv or .json)")
    p.add_argument("--format", dest="sub_format", choices=["auto", "csv", "json"], default="auto",
                   help="csv: Kaggle ID,Answer; json: {id: answer}; auto: from --out's suffix")

    p = sub.add_parser("windows", help="cut a data file into windows and save them (datasets Arrow) for inspection or reuse")
    _data_args(p)
    _windows_args(p)
    p.add_argument("--out", required=True, type=Path, help="folder to write")
    p.add_argument("--strategy", choices=["all", "random_answer"], default="all",
                   help="all windows, or one window per question with the answer at a random position")
    p.add_argument("--seed", type=int, default=0, help="seed of the random answer placement")

    p = sub.add_parser("train", help="fine-tune a reader with DeepSpeed (ZeRO-2/3, bf16/fp16), or plainly in one process",
                       description="Train from a YAML recipe plus dotted overrides, e.g. "
                                   "`qa-scale train launch/recipes/tiny_cpu.yaml optim.lr=1e-4 run.output_dir=runs/x`. "
                                   "Under the launcher: `deepspeed --num_gpus 8 $(which qa-scale) train RECIPE ...`.")
    p.add_argument("recipe", nargs="?", type=Path, help="YAML recipe (see launch/recipes/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. optim.lr=2e-5")
    p.add_argument("--resume", help="'auto' (newest committed checkpoint) or a checkpoint folder; same as run.resume=")
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # set by the deepspeed launcher

    p = sub.add_parser("backbone", help="pre-train a small Chinese BERT with masked-LM on a corpus (the offline default backbone)",
                       description="Masked-LM pre-training on the training engine; the model lands in OUT/model "
                                   "(a Hugging Face directory with its tokenizer) for `model.name_or_path`.")
    p.add_argument("corpus", type=Path, help="text file, one document per line (e.g. sample-data's corpus.txt)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, logs, model/)")
    p.add_argument("--tokenizer", help="vocab.txt or tokenizer directory; default: build a character vocabulary from the corpus")
    p.add_argument("--vocab-size", type=int, default=8000, help="size bound when building the vocabulary (default: 8000)")
    p.add_argument("--hidden-size", type=int, default=128, help="(default: 128)")
    p.add_argument("--layers", type=int, default=4, help="(default: 4)")
    p.add_argument("--heads", type=int, default=4, help="(default: 4)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per pre-training block (default: 128)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default: 300)")
    p.add_argument("--batch-size", type=int, default=32, help="blocks per step (default: 32)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: 5e-4)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.add_argument("--deepspeed", default=str(Path(__file__).resolve().parents[2] / "ds_configs" / "zero2_bf16.json"),
                   help="DeepSpeed template (default: ds_configs/zero2_bf16.json)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="(default: fp32, for CPUs)")

    p = sub.add_parser("sample-data", help="generate the synthetic Chinese QA sample data (HW7 and SQuAD formats)")
    from .sample_data import SampleConfig
    p.add_argument("--out", required=True, type=Path, help="folder to write")
    add_arguments(p, SampleConfig, "sample settings")

    p = sub.add_parser("demo", help="the embedded default: sample data → vocabulary → windows → decode → scores → submission, offline")
    p.add_argument("--out", type=Path, default=Path("demo"), help="folder to write (default: ./demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample data")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("vocab", help="build a character-level Chinese WordPiece vocabulary from a corpus")
    p.add_argument("corpus", type=Path, nargs="+", help="text files, one document per line")
    p.add_argument("--out", required=True, type=Path, help="tokenizer folder to write (vocab.txt + tokenizer files)")
    p.add_argument("--vocab-size", type=int, default=8000, help="upper bound on entries (default: 8000)")
    return parser


@command("check-data")
def _check_data(args: argparse.Namespace) -> int:
    from . import data, oracle, tokenization, windows
    ds = data.load(args.data, mode=args.mode, fmt=args.fmt)
    tok = tokenization.load_tokenizer(args.tokenizer)
    config = from_arguments(windows.WindowConfig, args)
    report = ds.report.to_dict()
    result = {"data": report, "windows": {**vars(config), "stride": config.stride()}}
    text = [f"{args.data}: {report['examples_kept']}/{report['questions_read']} examples kept, "
            f"{report['answers_repaired']} answers repaired, {report['answers_dropped']} dropped, "
            f"{report['examples_dropped']} examples dropped"]
    text += [f"  {k}: {v}" for k, v in report["problems"].items()]
    if ds.has_answers:
        refs = data.load_references(args.data, fmt=ds.report.format)
        fid = oracle.oracle_fidelity(ds.examples, tok, config, refs, max_answer_len=args.max_answer_len)
        result["oracle"] = fid.to_dict()
        text.append(f"oracle over {fid.windows} windows: EM {fid.em_any_reference:.3f} (any reference), "
                    f"{fid.em_first_reference:.3f} (first), exact text {fid.exact_text_any_reference:.3f}, "
                    f"F1 {fid.f1_any_reference:.3f}; {len(fid.unreachable)} unreachable; "
                    f"{fid.answers_longer_than_max_answer_len} gold answers longer than {args.max_answer_len} tokens")
        text += [f"  unreachable {u['id']}: {u['reason']}: {u['answers'][0]!r}" for u in fid.unreachable[:20]]
    else:
        text.append("no answers in this file: oracle fidelity skipped")
    _emit(result, args, "\n".join(text))
    return 0


def _read_predictions(path: Path) -> dict[str, str]:
    if path.suffix.lower() == ".csv":
        from .submit import read_hw7_csv
        return read_hw7_csv(path)
    preds = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise ValueError(f"{path}: expected a JSON object {{id: answer text}}")
    return preds


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from . import data, metrics
    refs = data.load_references(args.data)
    fmt = data.detect_format(json.loads(args.data.read_text(encoding="utf-8")))
    scores = metrics.evaluate(_read_predictions(args.predictions), refs, hw7=fmt == "hw7")
    if args.errors:
        metrics.write_error_file(scores, args.errors)
    out = scores.to_dict()
    text = (f"EM {scores.em:.3f}  F1 {scores.f1:.3f}  over {scores.total} questions "
            f"({scores.total - scores.answered} unanswered)")
    if scores.hw7_accuracy is not None:
        text += f"  HW7 accuracy {scores.hw7_accuracy:.5f}"
    _emit(out, args, text)
    return 0


@command("submit")
def _submit(args: argparse.Namespace) -> int:
    from . import data, submit
    ids = list(data.load_references(args.data))
    preds = _read_predictions(args.predictions)
    kind = args.sub_format if args.sub_format != "auto" else args.out.suffix.lower().lstrip(".")
    writers = {"csv": submit.write_hw7_csv, "json": submit.write_prediction_json}
    if kind not in writers:
        raise ValueError(f"cannot tell the submission format from {args.out}; pass --format csv or json")
    writers[kind](preds, ids, args.out)
    print(f"wrote {args.out} ({len(ids)} answers)")
    return 0


@command("windows")
def _windows(args: argparse.Namespace) -> int:
    from . import data, tokenization, window_store, windows
    ds = data.load(args.data, mode=args.mode, fmt=args.fmt)
    tok = tokenization.load_tokenizer(args.tokenizer)
    ws = windows.build_windows(ds.examples, tok, from_arguments(windows.WindowConfig, args),
                               strategy=args.strategy, seed=args.seed)
    window_store.save_windows(ws, args.out)
    print(f"wrote {len(ws)} windows of {len(ds.examples)} examples to {args.out}")
    return 0


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .recipe import load_recipe
    from .train import run
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and not recipe.exists() and "=" in str(recipe):  # only overrides
        recipe, overrides = None, [str(args.recipe), *overrides]
    overrides += [f"run.resume={args.resume}"] if args.resume else []
    summary = run(load_recipe(recipe, overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, ensure_ascii=False))
    return 0


@command("backbone")
def _backbone(args: argparse.Namespace) -> int:
    from .backbone import backbone_config, pretrain
    tokenizer = args.tokenizer
    if tokenizer is None:
        from .tokenization import build_char_vocab
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # ranks would race to write it
            raise ValueError("under the launcher, build the vocabulary first (`qa-scale vocab`) and pass --tokenizer")
        tokenizer = str(args.out / "tokenizer")
        if not (args.out / "tokenizer" / "vocab.txt").exists():
            lines = [ln.strip() for ln in args.corpus.read_text(encoding="utf-8").splitlines() if ln.strip()]
            build_char_vocab(lines, tokenizer, vocab_size=args.vocab_size)
    config = backbone_config(str(args.corpus), tokenizer, str(args.out), hidden_size=args.hidden_size,
                             layers=args.layers, heads=args.heads, intermediate_size=4 * args.hidden_size,
                             seq_len=args.seq_len, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                             seed=args.seed, deepspeed=args.deepspeed, precision=args.precision)
    summary = pretrain(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, ensure_ascii=False))
    return 0


@command("sample-data")
def _sample_data(args: argparse.Namespace) -> int:
    from . import sample_data
    paths = sample_data.write_all(from_arguments(sample_data.SampleConfig, args), args.out)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    report = run_demo(args.out, seed=args.seed)
    dev, fid = report["dev_scores"], report["dev_oracle"]
    text = (f"logits: {report['logits']}\n"
            f"dev oracle fidelity: EM {fid['em_any_reference']:.2f} over {fid['windows']} windows\n"
            f"dev: EM {dev['em']:.2f}  F1 {dev['f1']:.2f} ({dev['total']} questions)\n"
            f"test HW7 accuracy: {report['test_accuracy_hw7']:.4f}\n"
            f"submission: {report['files']['submission.csv']}\nreport: {args.out / 'report.json'} "
            f"({report['seconds']} s)")
    _emit(report, args, text)
    return 0


@command("vocab")
def _vocab(args: argparse.Namespace) -> int:
    from .tokenization import build_char_vocab

    def lines():
        for path in args.corpus:
            with open(path, encoding="utf-8") as fh:
                yield from (line.strip() for line in fh if line.strip())
    tok = build_char_vocab(lines(), args.out, vocab_size=args.vocab_size)
    print(f"wrote {args.out} ({len(tok.get_vocab())} entries)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .data import DataError
    from .submit import SubmissionError
    from .tokenization import TokenizerError
    try:
        return COMMANDS[args.command](args)
    except (DataError, TokenizerError, SubmissionError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"qa-scale {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
