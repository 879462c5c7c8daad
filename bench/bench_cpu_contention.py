"""Benchmark: answering a long paragraph on a CPU that other work shares, per thread setting.

The bot's forward passes are many small operations (a demo reader: 2 layers, hidden 128, 64-token
windows), each an OpenMP parallel region whose threads meet at a barrier. On an idle machine that
costs little; when other processes want the same cores (a training run, a test suite), a thread
that spins at a barrier takes the core from the one it waits for, and every region can cost a
scheduler time slice. This bench measures that, like for like:

* work: ``answer()`` of qa-scale's serving path — windows, every reader's logits, their mean, the
  decoder — for one ``--chars``-character paragraph with ``--questions`` questions, ``--readers``
  readers of the demo's shape (random weights: time does not depend on them);
* settings (each in a fresh worker process, since OpenMP reads its environment when torch loads),
  set as ``qa-scale answer``/``serve`` set them (``ReaderOptions.prepare_process`` before torch
  loads): ``old`` — the path before issue 20: ``--cpu-wait default`` (OpenMP's own long spin before
  sleeping), one thread per core, 32 windows per forward, fp32; ``new`` — the defaults now:
  ``--cpu-wait short``, ``--compute auto`` (bf16 on a CPU with AMX or AVX-512 BF16) and ``--batch-size 128``;
  and the variants in ``SETTINGS``;
* machines: ``quiet`` (nothing else started by the bench) and ``busy`` (``--hogs`` processes, each a
  torch matrix-multiply loop with its default threads, started before and stopped after);
* each (setting, machine) pair is timed ``--repeats`` times after one untimed warm-up call in the
  same worker; settings alternate within a round, rounds alternate quiet and busy; the median is
  reported, every run recorded.

Check (exit status 1 if it fails): every fp32 setting gives the same answers as ``old`` (same text
and span for every question; the thread count and batch size change summation order only); a bf16
setting's share of answers equal to ``old``'s is recorded (``answers_as_old``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import emit, header

HERE = Path(__file__).resolve().parent
SETTINGS = {  # name → ReaderOptions fields: CPU thread waits, thread count, batch size, forward dtype
    "old": {"cpu_wait": "default", "threads": "auto", "batch_size": 32, "compute": "fp32"},  # before issue 20
    "new": {"cpu_wait": "short", "threads": "auto", "batch_size": 128, "compute": "auto"},  # qa-scale's defaults now
    "short_fp32": {"cpu_wait": "short", "threads": "auto", "batch_size": 32, "compute": "fp32"},
    "passive": {"cpu_wait": "passive", "threads": "auto", "batch_size": 32, "compute": "fp32"},
    "passive_1thread": {"cpu_wait": "passive", "threads": 1, "batch_size": 32, "compute": "fp32"},
    "short_batch128": {"cpu_wait": "short", "threads": "auto", "batch_size": 128, "compute": "fp32"},
    "passive_bf16": {"cpu_wait": "passive", "threads": "auto", "batch_size": 32, "compute": "bf16"},
    "short_bf16": {"cpu_wait": "short", "threads": "auto", "batch_size": 32, "compute": "bf16"},
    "passive_bf16_batch128": {"cpu_wait": "passive", "threads": "auto", "batch_size": 128, "compute": "bf16"},
}
HOG = ("import torch, time\n"
       "a = torch.randn(256, 256)\n"
       "while True:\n"
       "    a = torch.tanh(a @ a.T / 256)\n")


def worker(args) -> None:
    """One setting in this process: set the CPU threads as the commands do, load the readers, warm up,
    time ``answer()``; print JSON."""
    from qa_scale.inference.options import ReaderOptions

    options = ReaderOptions(device="cpu", **json.loads(args.setting))
    options.prepare_process()  # before torch loads, as `qa-scale answer` and `serve` do
    import torch

    from qa_scale import data
    from qa_scale.serving.answering import Query, answer
    from qa_scale.serving.readers import load_panel

    root = Path(args.root)
    examples = data.load(next((root / "sample").glob("*dev*.json")), "lenient").examples
    context, seen = "", set()
    for ex in examples:
        if ex.context not in seen:
            seen.add(ex.context)
            context += ex.context
        if len(context) >= args.chars:
            break
    context = context[: args.chars]
    queries = [Query(context, ex.question) for ex in examples[: args.questions]]
    panel = load_panel([root / "demo" / "model"] * args.readers, options)
    answer(panel, queries[:2])  # warm-up
    times, results = [], None
    for _ in range(args.repeats):
        t = time.perf_counter()
        results = answer(panel, queries, nbest=False)
        times.append(time.perf_counter() - t)
    print(json.dumps({"times": times, "threads": torch.get_num_threads(), "info": panel.info(),
                      "answers": [(r["answer"], r["start"], r["end"]) for r in results]}))


def run_setting(name: str, args, root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--root", str(root), "--chars", str(args.chars),
           "--questions", str(args.questions), "--readers", str(args.readers), "--repeats", str(args.repeats),
           "--setting", json.dumps(SETTINGS[name])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=HERE).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chars", type=int, default=10_000)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--readers", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hogs", type=int, default=2, help="busy: processes running a torch matmul loop")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    import torch

    from bench_serve import readers as make_readers

    result = header("cpu_contention", torch=torch.__version__)
    result["settings"] = {"chars": args.chars, "questions": args.questions, "readers": args.readers,
                          "repeats": args.repeats, "rounds": args.rounds, "hogs": args.hogs,
                          "candidates": {n: SETTINGS[n] for n in args.settings}}
    runs: dict = {m: {n: [] for n in args.settings} for m in ("quiet", "busy")}
    answers, failures, ran, agreement = {}, [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_readers(root)  # the demo-shaped reader and the sample data
        for _ in range(args.rounds):
            for machine in ("quiet", "busy"):
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs if machine == "busy" else 0)]
                try:
                    time.sleep(1 if hogs else 0)
                    for name in args.settings:
                        got = run_setting(name, args, root)
                        runs[machine][name] += got["times"]
                        ran.setdefault(name, {k: got["info"][k] for k in ("threads", "omp", "batch_size", "compute")})
                        answers.setdefault(name, got["answers"])
                        same = [a == b for a, b in zip(got["answers"], answers.get("old", got["answers"]))]
                        agreement[name] = sum(same) / len(same)
                        # fp32 settings change summation order only: the same answers; bf16 rounds the
                        # weights and activations: its agreement with fp32 is reported, not required
                        if got["info"]["compute"] == "fp32" and not all(same):
                            failures.append(f"{name} ({machine}): answers differ from old")
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
    summary = {}
    for machine, per in runs.items():
        med = {n: statistics.median(t) for n, t in per.items()}
        summary[machine] = {n: {"median_s": round(m, 3), "speedup_over_old": round(med["old"] / m, 2)}
                            for n, m in med.items()} if "old" in med else {n: {"median_s": round(m, 3)} for n, m in med.items()}
    result.update(summary=summary, ran_as=ran, answers_as_old=agreement, runs={m: {n: [round(x, 3) for x in t] for n, t in per.items()}
                                         for m, per in runs.items()},
                  failures=failures, passed=not failures)
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
