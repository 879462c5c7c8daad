"""Benchmark: training samples/s of ``qa-scale train`` against a Hugging Face ``Trainer`` baseline.

What is compared, side by side on one machine, alternating runs (ours, baseline, ours, …):

* ours: ``qa_scale.training.loop.run`` — the DeepSpeed engine (ZeRO-2 template, fp32 on CPU, one
  process), micro-batches padded to their longest window, windows grouped by length;
* baseline (padded): ``transformers.Trainer`` in the style of ``examples/pytorch/question-answering/
  run_qa.py``: every window padded to ``max_seq_len`` (``padding="max_length"``), the default
  random sampler, AdamW with the same linear warmup/decay;
* baseline (dynamic): the fair comparison — the same ``Trainer`` with dynamic padding
  (``DataCollatorWithPadding``, to the longest window of the batch, a multiple of 8) and
  length grouping (``group_by_length``; ``train_sampling_strategy="group_by_length"`` in
  transformers 5), which is what our loop does too.

Equal loss semantics: the same windows (``build_windows`` with the same settings, labels on
the first answer, CLS when the answer is not inside), the same model class and configuration
(``BertForQuestionAnswering``, random init from the same seed), the same loss (mean of start
and end cross-entropy over the batch), global batch, learning rate, schedule and number of
optimizer steps. Samples/s is optimizer steps × windows per step / wall time of the training
loop (ours: ``train_seconds`` of the summary; baseline: ``train_runtime``), model setup excluded.
Each run is a fresh subprocess so that neither inherits the other's threads or caches.

With ``--compile`` the two sides are ours and ours with ``run.compile=true`` (``torch.compile``
through DeepSpeed's ``engine.compile()``, inductor), alternating, each with the same windows,
steps and repeats; the Trainer baselines are left out. Two rates are reported for each: the
whole training loop (compilation included: the compiled side pays it in its first steps, and
again at the first new window width and the first micro-batch without padding), and the steady
rate over the steps after ``--warmup`` (the same steps excluded on both sides), from the per-step
rates of ``metrics.jsonl``: the median over the repeats, and each step at its fastest over the
repeats (the same batches in the same order on both sides; other processes only slow a step
down). Inductor keeps its compiled kernels in a cache on disk, so a repeat of the compiled side
compiles faster than the first run.

    python bench/bench_train.py --out bench/results/train_cpu.json
    python bench/bench_train.py --compile --steps 60 --repeats 2 --out bench/results/train_cpu_compile.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


SHARED = ROOT.parent / "shared" / "data"


def prepare(work: Path, args) -> None:
    """Training data and tokenizer: real CMRC 2018 dev + the Chinese BERT vocabulary, or the sample data."""
    if args.data == "cmrc":
        (work / "tok").mkdir(parents=True)
        (work / "tok" / "vocab.txt").write_bytes((SHARED / "bert-base-chinese-vocab.txt").read_bytes())
        return
    from qa_scale import synthetic
    from qa_scale.data.tokenization import build_char_vocab

    paths = synthetic.write_all(synthetic.SampleConfig(seed=args.seed, dev_paragraphs=1, test_paragraphs=1),
                                  work / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), work / "tok", vocab_size=6000)


def train_file(work: Path, args) -> Path:
    return SHARED / "cmrc2018_dev.json" if args.data == "cmrc" else work / "data" / "squad_train.json"


def run_ours(work: Path, args, compiled: bool = False) -> dict:
    from qa_scale.training.loop import run
    from qa_scale.training.recipe import load_recipe

    out = work / f"ours-{os.getpid()}"  # a fresh run folder each run: metrics.jsonl appends to an existing one
    overrides = [f"model.tokenizer={work / 'tok' / 'vocab.txt' if args.data == 'cmrc' else work / 'tok'}",
                 f"model.tiny={json.dumps(TINY)}", f"data.train_file={train_file(work, args)}",
                 f"data.windows.max_seq_len={args.max_seq_len}", f"data.windows.doc_overlap={args.overlap}",
                 f"optim.max_steps={args.steps}", f"optim.micro_batch_size={args.batch}",
                 f"optim.global_batch_size={args.batch}", f"optim.lr={args.lr}", "optim.warmup_ratio=0.1",
                 f"run.output_dir={out}", "run.precision=fp32", f"run.seed={args.seed}",
                 f"run.deepspeed={ROOT / 'ds_configs' / 'zero2_bf16.json'}", f"run.save_every={10 ** 6}",
                 "run.export=false", "run.tensorboard=false", "run.log_every=1", f"run.compile={compiled}"]
    summary = run(load_recipe(None, overrides + ["data.mode=lenient"]))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text("utf-8").splitlines()]
    # log_every=1: each row's rate is its own step's (step 1, the warm-up, has none)
    steady = [r["samples_per_s"] for r in rows if r["step"] > args.warmup and "samples_per_s" in r]
    return {"seconds": summary["train_seconds"], "samples": summary["steps"] * args.batch,
            "steady_samples_per_s": _steady(steady, args.batch), "step_samples_per_s": steady,
            "mean_train_loss": statistics.mean(r["loss"] for r in rows)}


def _steady(rates: list[float], batch: int) -> float:
    """Samples/s over steps of ``batch`` windows each run at ``rates``: windows over the sum of step times."""
    return len(rates) * batch / sum(batch / x for x in rates)


def run_baseline(work: Path, args, dynamic: bool = False) -> dict:
    import datasets
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from qa_scale import data
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.data.windows import WindowConfig, build_windows
    from qa_scale.modeling.model import load_qa_model

    tok = load_tokenizer(work / "tok" / "vocab.txt" if args.data == "cmrc" else work / "tok")
    examples = [ex for ex in data.load(train_file(work, args), "lenient").examples if ex.answers]
    ws = build_windows(examples, tok, WindowConfig(max_seq_len=args.max_seq_len, doc_overlap=args.overlap))
    mask = (np.arange(ws.input_ids.shape[1])[None, :] < ws.lengths[:, None]).astype(np.int64)
    columns = {"input_ids": ws.input_ids.astype(np.int64), "token_type_ids": ws.token_type_ids.astype(np.int64),
               "attention_mask": mask}
    if dynamic:  # unpadded rows; the collator pads each batch to its longest window
        columns = {k: [row[:n].tolist() for row, n in zip(v, ws.lengths)] for k, v in columns.items()}
    train = datasets.Dataset.from_dict({  # padded: padding="max_length", every window as wide as max_seq_len
        **columns, "start_positions": ws.start_positions, "end_positions": ws.end_positions})
    model = load_qa_model(None, vocab_size=max(tok.get_vocab().values()) + 1, tiny=TINY, seed=args.seed)
    targs = TrainingArguments(output_dir=str(work / "hf"), per_device_train_batch_size=args.batch,
                              max_steps=args.steps, learning_rate=args.lr, warmup_steps=int(0.1 * args.steps), weight_decay=0.01,
                              lr_scheduler_type="linear", report_to=[], save_strategy="no", logging_steps=args.steps,
                              seed=args.seed, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
                              **_length_grouping(dynamic))
    collator = DataCollatorWithPadding(tok, pad_to_multiple_of=8) if dynamic else None
    result = Trainer(model=model, args=targs, train_dataset=train, data_collator=collator).train()
    return {"seconds": result.metrics["train_runtime"], "samples": args.steps * args.batch,
            "mean_train_loss": result.training_loss}  # Trainer's mean over all steps


def _length_grouping(on: bool) -> dict:
    """Trainer's length-grouped sampler: ``group_by_length`` in transformers 4, a sampling strategy in 5."""
    import inspect

    from transformers import TrainingArguments

    if not on:
        return {}
    params = inspect.signature(TrainingArguments.__init__).parameters
    return {"train_sampling_strategy": "group_by_length"} if "train_sampling_strategy" in params else \
        {"group_by_length": True}


IMPLS = {"ours": run_ours, "baseline": run_baseline,
         "baseline_dynamic": lambda work, args: run_baseline(work, args, dynamic=True),
         "ours_compiled": lambda work, args: run_ours(work, args, compiled=True)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--batch", type=int, default=16, help="windows per optimizer step (one micro-batch)")
    ap.add_argument("--max-seq-len", type=int, default=384)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", choices=["cmrc", "sample"], default="cmrc",
                    help="cmrc: CMRC 2018 dev from ../shared/data (real length distribution); sample: the sample data")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, alternating")
    ap.add_argument("--compile", action="store_true",
                    help="compare ours with and without run.compile instead of ours with the Trainer baselines")
    ap.add_argument("--warmup", type=int, default=10,
                    help="steps left out of the steady rate of our sides (compilation happens in them)")
    ap.add_argument("--impl", choices=list(IMPLS), help=argparse.SUPPRESS)  # one run, in a subprocess
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()
    if args.impl:
        result = IMPLS[args.impl](Path(args.work), args)
        print("RESULT " + json.dumps(result))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    prepare(work, args)
    sides = ["ours", "ours_compiled"] if args.compile else ["ours", "baseline", "baseline_dynamic"]
    runs: dict[str, list[dict]] = {impl: [] for impl in sides}
    passthrough = ["--steps", str(args.steps), "--batch", str(args.batch), "--max-seq-len", str(args.max_seq_len),
                   "--overlap", str(args.overlap), "--lr", str(args.lr), "--seed", str(args.seed), "--data", args.data,
                   "--warmup", str(args.warmup)]
    for _ in range(args.repeats):
        for impl in sides:
            proc = subprocess.run([sys.executable, __file__, "--impl", impl, "--work", str(work), *passthrough],
                                  capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "RANK"})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(proc.stderr[-4000:], file=sys.stderr)
                return 1
            r = json.loads(line[7:])
            r["samples_per_s"] = r["samples"] / r["seconds"]
            runs[impl].append(r)
    med = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in runs.items()}
    result = {
        "benchmark": "train",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": {**{k: v for k, v in vars(args).items() if k not in ("impl", "work", "out")}, "model": TINY,
                     "precision": "fp32", "device": "cpu"},
        "runs": runs,
        "median_samples_per_s": med,
    }
    if args.compile:
        steady = {k: statistics.median(r["steady_samples_per_s"] for r in v) for k, v in runs.items()}
        # Both sides run the same batches in the same order: each step at its fastest over the repeats
        # drops what other processes took from it (they only slow a step down).
        best = {k: _steady([max(x) for x in zip(*(r["step_samples_per_s"] for r in v))], args.batch)
                for k, v in runs.items()}
        result.update({"median_steady_samples_per_s": steady, "best_step_steady_samples_per_s": best,
                       "compile_speedup": med["ours_compiled"] / med["ours"],  # the whole loop, compilation included
                       "compile_speedup_steady": steady["ours_compiled"] / steady["ours"],
                       "compile_speedup_steady_best_steps": best["ours_compiled"] / best["ours"]})
    else:
        result.update({"speedup": med["ours"] / med["baseline"],  # against the padded, run_qa-style Trainer
                       "speedup_vs_dynamic": med["ours"] / med["baseline_dynamic"],  # against the Trainer at its best
                       "target_speedup": 1.25})
        result["within_target"] = result["speedup"] >= result["target_speedup"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
