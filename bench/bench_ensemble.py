"""Benchmark: ensembling 5 logits stores and decoding, against decoding one store.

Setting: CMRC 2018 dev (3,219 examples, ``load(path, "lenient")``), the bert-base-chinese
vocabulary, ``WindowConfig(max_seq_len=384, max_question_len=64, doc_overlap=128)`` → 6,327
windows. Five stores are written with :func:`qa_scale.inference.logits_store.write_store`. Each holds
the ``realistic`` synthetic logits of ``bench_decode.py`` (noise, gold bumps, decoys) drawn
with its own seed, as ``--precision`` arrays (default fp32, padded to 384 tokens).

Time: the same code path (``qa_scale.ensemble.combine.ensemble``) with one and with five stores.
It opens the stores, loads the windows and examples of the first, streams the weighted mean
of the logits and decodes with the shared decoder. Timed with n-best lists (what
``qa-scale ensemble`` writes) and without (answers only). Target: five ≤ 2 × one. The bare
decoder on logits already in memory is timed too (for information), and so is a breakdown of
the five-store run. Best of ``--repeats``; one and five alternate.

Memory: each figure comes from a fresh child process. The stores are opened and the first's
windows and examples are loaded *before* the baseline, because any decode needs them, with one
member or five. Then the measured step runs:

* ``mean`` is ``mean_logits`` (the ensemble step alone);
* ``ensemble`` is ``mean_logits`` + decode with n-best.

Two measures, each above the baseline:

* the peak of ``tracemalloc`` (numpy reports its buffers to it);
* the peak RSS growth: ``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus
  ``VmRSS`` before. The baseline is taken after ``gc.collect()`` and glibc's ``malloc_trim(0)``,
  so that memory freed from loading is not handed back during the step, which would hide growth.

They come from separate runs, because tracemalloc's own bookkeeping would inflate RSS. Both are
compared with one store's logits as stored (start + end, ``W × 384 × 4`` bytes in fp32).
Target: ensemble step ≤ 1.5 × that.

Checks (exit status 1 if one fails): the streamed mean equals the in-memory mean of the five
arrays (float32 tolerance), and ensembling one store reproduces its own predictions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import make_logits  # noqa: E402  (the same synthetic logits)

from qa_scale.data import load  # noqa: E402
from qa_scale.data.tokenization import load_tokenizer  # noqa: E402
from qa_scale.data.windows import WindowConfig, build_windows  # noqa: E402
from qa_scale.ensemble.combine import ensemble, mean_logits  # noqa: E402
from qa_scale.evaluation.decode import decode  # noqa: E402
from qa_scale.inference.logits_store import StoreContent, cast, open_store, write_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
WINDOWS = WindowConfig(max_seq_len=384, max_question_len=64, doc_overlap=128)


def write_stores(data: str, vocab: str, workdir: Path, n: int, precision: str) -> list[Path]:
    examples = load(data, "lenient").examples
    ws = build_windows(examples, load_tokenizer(vocab), WINDOWS, labels=True)
    assert len(ws) >= 6000, f"expected ≥ 6,000 windows, got {len(ws)}"
    paths = []
    for k in range(n):
        start, end = (cast(x, precision) for x in make_logits(ws, "realistic", seed=k))
        decoded = decode(ws, start, end, examples, nbest=True)
        paths.append(write_store(workdir / f"store{k}", StoreContent(ws, examples, start, end, decoded, precision=precision,
                                                             model={"path": f"synthetic/seed{k}"})).path)
    return paths


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_ensemble(paths, nbest: bool):
    return ensemble([open_store(p) for p in paths], nbest=nbest)


def _status(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(mode: str, how: str, paths: list[str]) -> dict:
    """One memory measurement in this (fresh) process; see the module docstring."""
    import tracemalloc

    stores = [open_store(p) for p in paths]
    _ = stores[0].windows.context_mask, stores[0].examples  # needed by any decode: before the baseline
    step = (lambda: mean_logits(stores)) if mode == "mean" else (lambda: ensemble(stores, nbest=True))
    if how == "tracemalloc":
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        out = step()
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    else:
        import ctypes
        import gc

        gc.collect()  # free what loading left behind now, not during the step (it would hide growth)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:  # reset the peak RSS (VmHWM) to the current RSS
            fh.write("5")
        out = step()
        peak = _status("VmHWM") - base
    del out
    return {"peak_bytes": int(peak)}


def measure(mode: str, how: str, paths: list[Path]) -> int:
    cmd = [sys.executable, __file__, "--child", mode, how, *map(str, paths)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "cmrc2018_dev.json"))
    ap.add_argument("--vocab", default=str(SHARED / "bert-base-chinese-vocab.txt"))
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each (best is kept)")
    ap.add_argument("--workdir", help="where the stores go (default: a temporary folder, removed)")
    ap.add_argument("--out", help="also write the JSON result here")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2:])))
        return 0

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench_ensemble.")
    workdir = Path(args.workdir or tmp.name)
    t_write, paths = timed(lambda: write_stores(args.data, args.vocab, workdir, args.members, args.precision))
    one, five = paths[:1], paths

    timings = {}
    for nbest in (True, False):
        runs = {"one": [], "five": []}
        for _ in range(args.repeats):
            for name, group in (("one", one), ("five", five)):
                runs[name].append(timed(lambda: run_ensemble(group, nbest))[0])
        timings["with_nbest" if nbest else "answers_only"] = {
            "one_store_s": round(min(runs["one"]), 4), "five_stores_s": round(min(runs["five"]), 4),
            "ratio": round(min(runs["five"]) / min(runs["one"]), 3),
            "one_all_s": [round(t, 4) for t in runs["one"]], "five_all_s": [round(t, 4) for t in runs["five"]]}

    # breakdown of a five-store run, and the bare decoder on arrays in memory (information)
    stores = [open_store(p) for p in five]
    t_load, _ = timed(lambda: (stores[0].windows.context_mask, stores[0].examples))
    t_mean, (start, end) = timed(lambda: mean_logits(stores))
    ws, examples = stores[0].windows, stores[0].examples
    t_dec = min(timed(lambda: decode(ws, start, end, examples, nbest=True))[0] for _ in range(args.repeats))
    t_dec_answers = min(timed(lambda: decode(ws, start, end, examples))[0] for _ in range(args.repeats))
    s0 = np.asarray(stores[0].logits()[0], np.float32)
    t_dec_one = min(timed(lambda: decode(ws, s0, np.asarray(stores[0].logits()[1], np.float32), examples,
                                          nbest=True))[0] for _ in range(args.repeats))

    # checks
    mean_in_memory = np.mean([np.asarray(s.logits()[0], np.float32) for s in stores], axis=0)
    finite = np.isfinite(mean_in_memory)
    mean_error = float(np.max(np.abs(start[finite] - mean_in_memory[finite])))
    reproduces = run_ensemble(one, True).decoded.predictions == stores[0].predictions()
    checks = {"streamed_mean_max_abs_error": mean_error, "one_store_reproduces_its_predictions": reproduces,
              "passed": mean_error < 1e-5 and reproduces}

    logits_bytes = stores[0].nbytes
    memory = {"one_store_logits_bytes": logits_bytes,
              "logits_float32_bytes": 2 * start.nbytes,
              "measured_in": "fresh child process per figure; baseline after opening the stores and loading "
                             "the first store's windows and examples"}
    for mode in ("mean", "ensemble"):
        for how in ("tracemalloc", "rss"):
            for name, group in (("one", one), ("five", five)):
                peak = measure(mode, how, group)
                memory[f"{mode}_{name}_{how}_peak_bytes"] = peak
                memory[f"{mode}_{name}_{how}_ratio"] = round(peak / logits_bytes, 3)
    result = {
        "benchmark": "ensemble",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "data": {"file": Path(args.data).name, "examples": len(examples), "windows": len(ws),
                 "window_config": {"max_seq_len": 384, "max_question_len": 64, "doc_overlap": 128}},
        "settings": {"members": args.members, "precision": args.precision, "repeats": args.repeats,
                     "logits": "bench_decode.make_logits(ws, 'realistic', seed=k) for k in range(members)",
                     "timing": "best of repeats, time.perf_counter, one and five alternating"},
        "write_stores_s": round(t_write, 2),
        "time": timings,
        "five_store_breakdown_s": {"load_windows_examples": round(t_load, 4), "streamed_mean": round(t_mean, 4),
                                   "decode_with_nbest": round(t_dec, 4), "decode_answers_only": round(t_dec_answers, 4)},
        "bare_decode_one_store_in_memory_with_nbest_s": round(t_dec_one, 4),
        "memory": memory,
        "targets": {"time_ratio_with_nbest_le_2": timings["with_nbest"]["ratio"] <= 2,
                    "time_ratio_answers_only_le_2": timings["answers_only"]["ratio"] <= 2,
                    "ensemble_step_peak_le_1.5x_store_tracemalloc": memory["mean_five_tracemalloc_ratio"] <= 1.5,
                    "ensemble_step_peak_le_1.5x_store_rss": memory["mean_five_rss_ratio"] <= 1.5},
        "checks": checks,
        "passed": checks["passed"],
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    if tmp is not None:
        tmp.cleanup()
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
