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

    p = sub.add_parser("demo", help="the embedded default, offline: sample data → backbone → 3 readers (DeepSpeed, CPU) "
                                    "→ predict → ensemble → scores → submission",
                       description="Everything the project does, on data and a masked-LM backbone it makes itself: "
                                   "two full fine-tunes and one LoRA reader trained with `deepspeed --num_gpus RANKS` "
                                   "(CPU ranks on gloo), their logits stores, the ensemble, EM/F1 of each and the HW7 "
                                   "CSV. About 15 minutes on 2 CPU cores; finished stages are reused on a re-run.")
    p.add_argument("--out", type=Path, default=Path("demo"), help="folder to write (default: ./demo)")
    from .demo import DemoConfig
    add_arguments(p, DemoConfig, "demo settings")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = sub.add_parser("vocab", help="build a character-level Chinese WordPiece vocabulary from a corpus")
    p.add_argument("corpus", type=Path, nargs="+", help="text files, one document per line")
    p.add_argument("--out", required=True, type=Path, help="tokenizer folder to write (vocab.txt + tokenizer files)")
    p.add_argument("--vocab-size", type=int, default=8000, help="upper bound on entries (default: 8000)")

    _predict_ensemble_parsers(sub)
    _compare_parsers(sub)
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
                             seq_len=args.seq_len, steps=args.steps, batch_size=args.batch_size,
                             micro_batch_size=max(args.batch_size // int(os.environ.get("WORLD_SIZE", "1")), 1), lr=args.lr,
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
    from .demo import DemoConfig, run_demo
    report = run_demo(args.out, from_arguments(DemoConfig, args))
    fid, ens = report["dev_oracle"], report["ensemble"]
    lines = [f"dev oracle fidelity: EM {fid['em_any_reference']:.2f} over {fid['windows']} windows",
             f"trivial baselines (dev EM): " + ", ".join(f"{k} {v['em']:.2f}" for k, v in report["baselines"].items())]
    lines += [f"{name:>10}: dev EM {m['dev']['em']:6.2f}  F1 {m['dev']['f1']:6.2f} | test HW7 accuracy "
              f"{m['test']['hw7_accuracy']:.4f}" for name, m in report["members"].items()]
    gain = report["ensemble_vs_best_member"]
    lines += [f"{'ensemble':>10}: dev EM {ens['dev']['em']:6.2f}  F1 {ens['dev']['f1']:6.2f} | test HW7 accuracy "
              f"{ens['test']['hw7_accuracy']:.4f}",
              f"ensemble vs best member ({gain['best_member']}): dev EM {gain['dev_em_gain']:+.2f}, "
              f"F1 {gain['dev_f1_gain']:+.2f}",
              f"submission: {report['files']['submission.csv']}\nreport: {args.out / 'report.json'} "
              f"({report['seconds']['total']} s)"]
    _emit(report, args, "\n".join(lines))
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


def _predict_ensemble_parsers(sub) -> None:
    """``predict`` (model × data → logits store) and ``ensemble`` (stores → answers)."""
    from .decode import DecodeConfig
    from .windows import WindowConfig

    p = sub.add_parser("predict", help="a model directory × a data file → a logits store (logits of every window, answers, n-best)",
                       description="Length-sorted, dynamically padded batches; one process, or sharded over ranks: "
                                   "`deepspeed --num_gpus 8 $(which qa-scale) predict MODEL DATA --out STORE` "
                                   "(CPU ranks use gloo). Window and decode settings default to the training config "
                                   "(config.yaml beside MODEL_DIR) when there is one.")
    p.add_argument("model", type=Path, help="model directory, e.g. runs/x/model (exported by train)")
    _data_args(p)
    p.add_argument("--out", required=True, type=Path, help="logits store folder to write (replaced atomically)")
    p.add_argument("--tokenizer", help="vocab.txt, tokenizer directory or hub name (default: the model directory's own)")
    add_arguments(p, WindowConfig, "window settings (default: the model's training config, else the values below)")
    add_arguments(p, DecodeConfig, "decoding (default: the model's training config, else the values below)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per forward pass per rank (default: 32)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32", help="dtype the logits are stored in (default: fp32)")
    p.add_argument("--compute", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="dtype of the forward pass; bf16/fp16 for GPUs (default: fp32)")
    p.add_argument("--references", type=Path, help="score the predictions against this file's answers (EM/F1, HW7 accuracy)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # set by the deepspeed launcher

    p = sub.add_parser("ensemble", help="average the logits of several stores (fingerprint-checked), decode, submit, score",
                       description="Streaming (weighted) mean of start/end logits over identical windows, then the shared "
                                   "decoder. Writes predictions.json, nbest.json, submission.csv (HW7 data), metrics.json "
                                   "(with --references) and ensemble.json into --out. Stores whose fingerprints differ "
                                   "are refused, naming the first difference.")
    p.add_argument("stores", type=Path, nargs="*", help="logits stores (from `qa-scale predict`); with --recipe: optional, "
                                                        "matched to its members by model path")
    p.add_argument("--out", required=True, type=Path, help="folder to write")
    p.add_argument("--weights", help="comma-separated weights, one per store (normalised to sum 1; default: uniform)")
    p.add_argument("--recipe", type=Path, help="ensemble recipe YAML (ensemble/*.yaml): members and weights")
    p.add_argument("--log-softmax", action="store_true", help="average per-window log-softmax instead of raw logits")
    p.add_argument("--references", type=Path, help="data file with answers: score the ensemble and every member")
    p.add_argument("--search-weights", action="store_true",
                   help="search weights on --references (scipy SLSQP on the simplex, held-out check) and write a recipe")
    p.add_argument("--holdout", type=float, default=0.3, help="fraction of reference examples held out of the search (default: 0.3)")
    p.add_argument("--search-metric", choices=["f1", "em"], default="f1",
                   help="metric that decides between searched and uniform weights (default: f1)")
    p.add_argument("--recipe-out", type=Path, help="where --search-weights writes the recipe (default: OUT/recipe.yaml)")
    p.add_argument("--no-nbest", action="store_true", help="skip the n-best lists (faster)")
    add_arguments(p, DecodeConfig, "decoding (default: the first store's settings)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _given(args: argparse.Namespace, cls: type) -> dict:
    """The fields of dataclass ``cls`` given as flags (absent flags are not in ``args``)."""
    import dataclasses
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from .decode import DecodeConfig
    from .predict import run
    from .windows import WindowConfig
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be ≥ 1, got {args.batch_size}")
    summary = run(args.model, args.data, args.out, tokenizer=args.tokenizer, windows=_given(args, WindowConfig),
                  decoding=_given(args, DecodeConfig), batch_size=args.batch_size, precision=args.precision,
                  compute=args.compute, references=args.references, mode=args.mode, fmt=args.fmt)
    if summary is None:  # not rank 0
        return 0
    text = (f"wrote {summary['store']}: {summary['windows']} windows of {summary['examples']} examples "
            f"({summary['precision']} logits, {summary['world_size']} rank(s), {summary['seconds']} s)")
    if summary["metrics"]:
        m = summary["metrics"]
        text += f"\nEM {m['em']:.3f}  F1 {m['f1']:.3f} over {m['total']} questions"
    _emit(summary, args, text)
    return 0


def _relative(path) -> str:
    """``path`` relative to the working directory when inside it (recipes stay portable), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@command("ensemble")
def _ensemble(args: argparse.Namespace) -> int:
    import dataclasses
    import time

    from . import data, metrics, submit
    from .decode import DecodeConfig
    from .ensemble import EnsembleError, ensemble, parse_weights
    from .ensemble_recipe import EnsembleRecipe, Member, load_recipe, resolve, save_recipe
    from .files import write_json
    from .logits_store import open_store
    from .weight_search import member_names, search_weights

    t0 = time.perf_counter()
    if sum(map(bool, (args.recipe, args.weights, args.search_weights))) > 1:
        raise EnsembleError("give at most one of --weights, --recipe and --search-weights")
    stores = [open_store(p) for p in args.stores] or None
    weights, log_softmax = None, args.log_softmax
    if args.recipe:
        recipe = load_recipe(args.recipe)
        stores, weights = resolve(recipe, stores)
        log_softmax = log_softmax or recipe.log_softmax
    elif not stores:
        raise EnsembleError("give the stores to average, or --recipe")
    elif args.weights:
        weights = parse_weights(args.weights, len(stores))
    config = DecodeConfig(**{**dataclasses.asdict(stores[0].decode_config()), **_given(args, DecodeConfig)})
    refs = data.load_references(args.references) if args.references else None
    names, summary = member_names(stores), {}
    if args.search_weights:
        if refs is None:
            raise EnsembleError("--search-weights needs --references (dev data with answers)")
        found = search_weights(stores, refs, args.holdout, args.search_metric, log_softmax, config, str(args.references))
        weights = found.weights
        recipe_path = args.recipe_out or args.out / "recipe.yaml"
        members = [Member(n, round(w, 6), _relative(s.path), s.model_path and _relative(s.model_path))
                   for n, w, s in zip(names, weights, stores)]
        save_recipe(EnsembleRecipe(members, log_softmax, found.found_by, found.scores), recipe_path,
                    comment=f"Ensemble recipe written by `qa-scale ensemble --search-weights` (see ensemble/README.md).\n"
                            f"Use: qa-scale ensemble --recipe {recipe_path} [TEST_STORES...] --out DIR")
        summary["search"] = {"chosen": found.chosen, "reason": found.found_by["reason"], "recipe": str(recipe_path),
                             "scores": found.scores}
    result = ensemble(stores, weights, log_softmax, config, nbest=not args.no_nbest)
    ids, preds = result.example_ids, result.decoded.predictions
    out = args.out
    files = {"predictions": str(submit.write_prediction_json(preds, ids, out / "predictions.json"))}
    if result.decoded.nbest is not None:
        files["nbest"] = str(write_json(out / "nbest.json", result.decoded.nbest, indent=None))
    if stores[0].meta.get("data", {}).get("format") == "hw7":
        files["submission"] = str(submit.write_hw7_csv(preds, ids, out / "submission.csv"))
    summary.update({
        "stores": [str(s.path) for s in stores], "members": [], "weights": result.weights, "log_softmax": log_softmax,
        "decode": dataclasses.asdict(config), "examples": len(ids), "windows": len(stores[0].windows),
        "metrics": None, "files": files})
    for name, store, w in zip(names, stores, result.weights):
        summary["members"].append({"name": name, "store": str(store.path), "weight": w, "model": store.model_path})
    text = [f"ensemble of {len(stores)} store(s) over {len(stores[0].windows)} windows of {len(ids)} examples"]
    if refs is not None:
        hw7 = data.detect_format(json.loads(args.references.read_text(encoding="utf-8"))) == "hw7"
        summary["metrics"] = metrics.evaluate(preds, refs, hw7=hw7).to_dict()
        for member, store in zip(summary["members"], stores):
            member["metrics"] = metrics.evaluate(store.predictions(), refs, hw7=hw7).to_dict()
            text.append(f"  {member['name']} (weight {member['weight']:.3f}): EM {member['metrics']['em']:.3f}  "
                        f"F1 {member['metrics']['f1']:.3f}")
        best = max(m["metrics"]["em"] for m in summary["members"])
        summary["em_gain_over_best_member"] = round(summary["metrics"]["em"] - best, 4)
        text.append(f"ensemble: EM {summary['metrics']['em']:.3f}  F1 {summary['metrics']['f1']:.3f} "
                    f"({summary['em_gain_over_best_member']:+.3f} EM over the best member)")
        files["metrics"] = str(write_json(out / "metrics.json", summary["metrics"]))
    else:
        text.append("  weights: " + ", ".join(f"{m['name']} {m['weight']:.3f}" for m in summary["members"]))
    if "search" in summary:
        text.append(f"weights {summary['search']['chosen']}: {summary['search']['reason']}; "
                    f"recipe: {summary['search']['recipe']}")
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    files["summary"] = str(out / "ensemble.json")
    write_json(out / "ensemble.json", summary)
    text.append("wrote " + ", ".join(files.values()))
    _emit(summary, args, "\n".join(text))
    return 0


def _compare_parsers(sub) -> None:
    """``compare`` (LoRA vs full fine-tuning) and ``lora-params`` (trainable share of a shape)."""
    p = sub.add_parser("compare", help="LoRA vs full fine-tuning on the same backbone, data and seed: table, JSON, chart",
                       description="Runs RECIPE twice (mode=full into OUT/full, mode=lora into OUT/lora; finished runs "
                                   "are reused, unfinished ones resumed), or collects two finished runs with --collect, "
                                   "then writes OUT/comparison.{md,json,png}: trainable parameters, peak memory, "
                                   "samples/s, wall time, dev EM/F1 with bootstrap 95% intervals.")
    p.add_argument("recipe", nargs="?", type=Path, help="YAML recipe both runs start from (needs data.dev_file)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides for both runs")
    p.add_argument("--out", required=True, type=Path, help="folder for the two runs and the comparison")
    p.add_argument("--lora-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the LoRA run only, e.g. optim.lr=3e-4 (repeatable)")
    p.add_argument("--full-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override for the full run only (repeatable)")
    p.add_argument("--launcher", default="",
                   help='prefix of each training command, e.g. "deepspeed --num_gpus 8" (default: one plain process)')
    p.add_argument("--collect", nargs=2, type=Path, metavar=("FULL_RUN", "LORA_RUN"),
                   help="compare these two finished run folders instead of training")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")

    p = sub.add_parser("lora-params", help="total and trainable parameters of full fine-tuning vs LoRA for a model or shape",
                       description="Builds the model on PyTorch's meta device (shapes only, nothing downloaded or "
                                   "allocated) and applies the LoRA settings of a recipe (defaults otherwise).")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="model directory or cached hub name (only its config is read)")
    where.add_argument("--shape", choices=sorted(SHAPES), help="a named architecture: " + "; ".join(
        f"{k}: {v['num_hidden_layers']} layers, hidden {v['hidden_size']}" for k, v in SHAPES.items()))
    p.add_argument("overrides", nargs="*", help="lora.* settings, e.g. lora.r=16 lora.target_modules=[query,value]")
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


# Architectures of the hub backbones, for `lora-params` without a download (their config.json values).
SHAPES = {
    "macbert-large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "intermediate_size": 4096, "vocab_size": 21128},
    "bert-base-chinese": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                          "intermediate_size": 3072, "vocab_size": 21128},
}


@command("compare")
def _compare(args: argparse.Namespace) -> int:
    from . import compare
    seconds = None
    if args.collect:
        dirs = dict(zip(compare.MODES, args.collect))
    else:
        recipe, overrides = args.recipe, list(args.overrides)
        if recipe is not None and not recipe.exists() and "=" in str(recipe):  # only overrides
            recipe, overrides = None, [str(recipe), *overrides]
        runs = compare.run_pair(recipe, overrides, args.out, args.launcher, args.lora_set, args.full_set)
        dirs = {m: Path(r["dir"]) for m, r in runs.items()}
        seconds = {m: r["process_seconds"] for m, r in runs.items()}
    result = compare.collect(dirs, resamples=args.bootstrap, seed=args.seed, process_seconds=seconds)
    files = compare.write_outputs(result, args.out)
    result["files"] = {k: str(v) for k, v in files.items()}
    _emit(result, args, compare.markdown(result) + f"\nwrote {', '.join(map(str, files.values()))}")
    return 0


@command("lora-params")
def _lora_params(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForQuestionAnswering

    from .lora import LoraSection, apply_lora, parameter_counts
    from .model import _load_config, tiny_bert_config
    from .recipe import apply_overrides, build
    overrides = [o if o.startswith("lora.") else f"lora.{o}" for o in args.overrides]
    section = build(LoraSection, apply_overrides({}, overrides)["lora"], "lora.") if overrides else LoraSection()
    config = _load_config(args.model) if args.model else tiny_bert_config(**SHAPES[args.shape])
    with torch.device("meta"):  # shapes only
        model = AutoModelForQuestionAnswering.from_config(config)
        full_total, _ = parameter_counts(model)
        total, trainable = parameter_counts(apply_lora(model, section))
    out = {"model": args.model or args.shape, "full_fine_tuning_trainable": full_total, "total": total,
           "lora_trainable": trainable, "lora_trainable_percent": round(100 * trainable / total, 4),
           "lora": {k: v for k, v in vars(section).items()}}
    _emit(out, args, f"{out['model']}: {total:,} parameters; full fine-tuning trains all of them, LoRA "
                     f"(r={section.r}, {','.join(section.target_modules)} + span head) trains {trainable:,} "
                     f"({out['lora_trainable_percent']:.3f}%)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .data import DataError
    from .submit import SubmissionError
    from .tokenization import TokenizerError
    ok = False
    try:
        code = COMMANDS[args.command](args)
        ok = True
        return code
    except (DataError, TokenizerError, SubmissionError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"qa-scale {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        _leave_process_group(ok)


def _leave_process_group(ok: bool) -> None:
    """Destroy the process group a command joined (train, backbone, predict) before exiting.

    Left to interpreter shutdown, gloo's worker threads can be torn down while joinable and the
    process aborts ("terminate called without an active exception", exit -6) after its work is
    done — which the launcher reports as a failed run.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return
    if ok:
        dist.barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
