"""Benchmark: ``qa_scale.data.windows.build_windows`` against the bare fast-tokenizer overflow call.

What is compared: the wall time of cutting CMRC 2018 dev into 384-token windows with 128
context tokens of overlap, two ways, in one process with one tokenizer:

* ours: ``build_windows(examples, tok, WindowConfig(384, max_question_len=64, doc_overlap=128),
  labels=True)``: input ids, token types, context offsets, start/end labels, padded numpy arrays
  and the tokenizer identity;
* bare: ``tok(questions, contexts, truncation="only_second", max_length=384, stride=128,
  return_overflowing_tokens=True, return_offsets_mapping=True)``: the call Hugging Face's
  ``run_qa.py`` makes, before its own Python loop that computes labels (not timed here).

Why it is fair: the question and context lists for the bare call are made before timing, so
both sides start from the same in-memory strings; the repeats alternate (ours, bare, ours, …)
so that warm-up, caches and machine noise hit both alike; medians are reported. The bare call
does strictly less work (no labels, no padding, no numpy arrays), so ours/bare ≤ 1.5 is the
target. Ours tokenizes each distinct context once and slices windows from it; the bare call
tokenizes every (question, context) pair.

Correctness: our windows must be token-for-token the bare call's ``input_ids`` (count of
mismatching windows must be 0); the window → example mapping, token types and the character
offsets of context tokens are compared too. Exit status 1 if any of these differ.

Also timed, for information only: the HW7 setting (``max_question_len=60``,
``max_context_len=150``, ``doc_step=15``, ``max_seq_len=213`` = 1 + 60 + 1 + 150 + 1). The
overflow call has no equivalent (it neither truncates the question nor gives every window the
same 150 context tokens whatever the question's length: it gives the context what the question
leaves free), so there is no bare time for it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tokenizers
import transformers

from qa_scale.data import load
from qa_scale.data.tokenization import load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CONFIG = WindowConfig(max_seq_len=384, max_question_len=64, doc_overlap=128)
HW7 = WindowConfig(max_seq_len=213, max_question_len=60, max_context_len=150, doc_step=15)


def timed(fn):
    t = time.perf_counter()
    result = fn()
    return time.perf_counter() - t, result


def compare(ws, enc) -> dict:
    """Mismatch counts between our window set and the bare call's encoding."""
    ids, types, offs = enc["input_ids"], enc["token_type_ids"], enc["offset_mapping"]
    n = min(len(ws), len(ids))
    bad_ids = bad_types = bad_offsets = 0
    for w in range(n):
        length = int(ws.lengths[w])
        bad_ids += ws.input_ids[w, :length].tolist() != ids[w]
        bad_types += ws.token_type_ids[w, :length].tolist() != types[w]
        ctx = [i for i, s in enumerate(enc.sequence_ids(w)) if s == 1]
        theirs = [list(offs[w][i]) for i in ctx]
        ours_ctx = np.flatnonzero(ws.context_mask[w]).tolist()
        bad_offsets += ours_ctx != ctx or ws.offsets[w, ctx].tolist() != theirs
    mapping = np.asarray(enc["overflow_to_sample_mapping"][:n]) != ws.example_index[:n]
    return {
        "windows_ours": len(ws), "windows_bare": len(ids),
        "mismatching_windows_input_ids": bad_ids + abs(len(ws) - len(ids)),
        "mismatching_windows_example": int(mapping.sum()),
        "mismatching_windows_token_types": bad_types,
        "mismatching_windows_context_offsets": bad_offsets,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "cmrc2018_dev.json"))
    ap.add_argument("--vocab", default=str(SHARED / "bert-base-chinese-vocab.txt"))
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of each side, alternating")
    ap.add_argument("--hw7-repeats", type=int, default=3, help="timed runs of the HW7 setting")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()

    examples = load(args.data, "lenient").examples
    tok = load_tokenizer(args.vocab)
    questions, contexts = [ex.question for ex in examples], [ex.context for ex in examples]

    def ours():
        return build_windows(examples, tok, CONFIG, labels=True)

    def bare():
        return tok(questions, contexts, truncation="only_second", max_length=CONFIG.max_seq_len,
                   stride=CONFIG.doc_overlap, return_overflowing_tokens=True, return_offsets_mapping=True)

    t_ours, t_bare = [], []
    for _ in range(args.repeats):
        t, ws = timed(ours)
        t_ours.append(t)
        t, enc = timed(bare)
        t_bare.append(t)
    checks = compare(ws, enc)
    checks["passed"] = all(v == 0 for k, v in checks.items() if k.startswith("mismatching"))

    t_hw7 = []
    for _ in range(args.hw7_repeats):
        t, hw7 = timed(lambda: build_windows(examples, tok, HW7, labels=True))
        t_hw7.append(t)

    med_ours, med_bare = statistics.median(t_ours), statistics.median(t_bare)
    result = {
        "benchmark": "windows",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                    "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "(unset)")},
        "data": {"file": Path(args.data).name, "examples": len(examples),
                 "distinct_contexts": len(set(contexts)), "windows": len(ws)},
        "settings": {"repeats": args.repeats, "order": "alternating: ours, bare, ours, bare, ...",
                     "timing": "median of repeats, time.perf_counter",
                     "ours": "build_windows(examples, tok, WindowConfig(max_seq_len=384, max_question_len=64, "
                             "doc_overlap=128), labels=True)",
                     "bare": "tok(questions, contexts, truncation='only_second', max_length=384, stride=128, "
                             "return_overflowing_tokens=True, return_offsets_mapping=True)"},
        "timings": {"ours_median_s": round(med_ours, 4), "bare_median_s": round(med_bare, 4),
                    "ours_all_s": [round(t, 4) for t in t_ours], "bare_all_s": [round(t, 4) for t in t_bare],
                    "ratio_ours_over_bare": round(med_ours / med_bare, 3), "target_ratio": 1.5,
                    "within_target": med_ours / med_bare <= 1.5},
        "checks": checks,
        "hw7_setting": {"config": {"max_seq_len": 213, "max_question_len": 60, "max_context_len": 150,
                                   "doc_step": 15},
                        "windows": len(hw7), "median_s": round(statistics.median(t_hw7), 4),
                        "all_s": [round(t, 4) for t in t_hw7],
                        "bare_equivalent": "none: the overflow call neither truncates the question nor gives every "
                                           "window 150 context tokens whatever the question length"},
        "passed": checks["passed"],
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
