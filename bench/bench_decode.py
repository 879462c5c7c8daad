"""Benchmark: ``qa_scale.evaluation.decode.decode`` against the Hugging Face ``utils_qa`` n-best loop.

What is compared: the wall time and the answers of two decoders given *the same* window set
(CMRC 2018 dev, 384-token windows, 128 tokens of overlap) and *the same* float32 logits:

* ours: ``decode(windows, start, end, examples, DecodeConfig(n_best_size, max_answer_len))``;
* reference: :func:`reference_decode`, a plain transcription of ``postprocess_qa_predictions``
  from ``transformers/examples/pytorch/question-answering/utils_qa.py`` (per window the top
  ``n_best`` starts and ends by ``np.argsort`` over the whole window, Python loops over the
  ``n × n`` pairs, per example sort, keep ``n_best``, slice text, softmax).

Three timings, like for like:

* ``answers``: ``decode(...)`` (the predictions, best scores and spans) against the reference
  asked for answers only (its candidate loop, then the best candidate's text: no n-best texts,
  no softmax). Our answer is the exact best valid span (sliding-window maximum), so it needs no
  top-k search.
* ``nbest``: ``decode(..., nbest=True)`` against the reference building its n-best lists. Both
  produce the same information for every entry of every list: ours as arrays
  (``Decoded.nbest_lists``: example, character start and end, score, window, probability; the text
  of an entry is ``context[start:end]``, sliced when a consumer reads it), the reference as a list
  of dicts per example (text, start and end logit, probability).
* ``nbest_dicts``: ``decode(..., nbest=True).nbest``, i.e. the same plus every entry made into a
  dict with its text (text, start, score, window, probability): the form the JSON writers and the
  server use, so no cost is left out. Its reference time is the ``nbest`` reference run (that run
  already makes every dict).

Why it is fair: both run in one process on the same arrays; the reference gets its offsets as
Python lists, the form ``utils_qa`` reads them in (the conversion is done before timing). Every
timing has the same warm-up (``--warmup`` untimed runs) and the same number of timed runs
(``--repeats``) on both sides; the best run is reported, all runs are recorded.

Logits (``--seed``): ``realistic``: Gaussian noise N(0, 1) on every token, −10 on question,
separator and padding tokens (as a trained model does), a bump of height U(3, 8) and width 2
tokens centred on the gold start/end token in windows that contain the first gold answer, and a
decoy bump of height U(1, 5) at a random context token in the other windows; ``noise``: N(0, 1)
on every token. The reference only sees the pairs of its whole-window top ``n_best`` starts
and ends (often question or padding tokens in ``noise``); our exact search sees every valid
pair, so its best score can be higher and its text then differs: counted apart.

Checks (exit status 1 if any fails): our best score is never below the reference's (tolerance
1e-5); each of our answers is a valid span (context tokens, start ≤ end, ≤ max_answer_len
tokens) whose score is start + end logit. Reported: where texts differ, whether by an exact
score tie or because ours scores strictly higher. For information only: how many
n-best lists are equal (ours keeps one copy of a span found by two overlapping windows,
``utils_qa`` keeps both, so the lists and their probabilities may legitimately differ).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import numpy as np
from record import emit, header

from qa_scale.data import load
from qa_scale.data.tokenization import load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.evaluation.decode import DecodeConfig, decode

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TOL = 1e-5


def reference_decode(examples, example_index, offsets, start_logits, end_logits, n_best, max_len, nbest=True):
    """The ``utils_qa.postprocess_qa_predictions`` algorithm (no null answer), step for step.

    ``offsets`` are per-window lists with ``None`` for non-context tokens, as ``utils_qa``
    receives them. Returns ({id: text}, best score per example, n-best JSON lists); with
    ``nbest=False`` only the best candidate's text is made and the n-best lists are None.
    """
    features_per_example = collections.defaultdict(list)
    for w, e in enumerate(example_index):
        features_per_example[e].append(w)
    predictions, nbest_json = {}, {}
    best = np.full(len(examples), -np.inf)
    for e, ex in enumerate(examples):
        min_null, prelim = None, []
        for w in features_per_example[e]:
            s, t, off = start_logits[w], end_logits[w], offsets[w]
            null_score = s[0] + t[0]
            if min_null is None or min_null["score"] > null_score:
                min_null = {"offsets": (0, 0), "score": null_score, "start_logit": s[0], "end_logit": t[0]}
            start_indexes = np.argsort(s)[-1 : -n_best - 1 : -1].tolist()
            end_indexes = np.argsort(t)[-1 : -n_best - 1 : -1].tolist()
            for i in start_indexes:
                for j in end_indexes:
                    if (i >= len(off) or j >= len(off) or off[i] is None or len(off[i]) < 2
                            or off[j] is None or len(off[j]) < 2):
                        continue  # not a context token
                    if j < i or j - i + 1 > max_len:
                        continue
                    prelim.append({"offsets": (off[i][0], off[j][1]), "score": s[i] + t[j],
                                   "start_logit": s[i], "end_logit": t[j]})
        if not nbest:  # answers only: the best candidate, its text
            top = max(prelim, key=lambda x: x["score"], default=None)
            if top is not None:
                best[e] = top["score"]
            predictions[ex.id] = ex.context[top["offsets"][0]:top["offsets"][1]] if top is not None else ""
            continue
        top = sorted(prelim, key=lambda x: x["score"], reverse=True)[:n_best]
        for p in top:
            a, b = p.pop("offsets")
            p["text"] = ex.context[a:b]
        if top:
            best[e] = top[0]["score"]
        if not top:
            top.insert(0, {"text": "", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        scores = np.array([p.pop("score") for p in top])
        probs = np.exp(scores - np.max(scores))
        for p, prob in zip(top, probs / probs.sum()):
            p["probability"] = prob
        predictions[ex.id] = top[0]["text"]
        nbest_json[ex.id] = [{k: float(v) if isinstance(v, (np.float32, np.float64)) else v for k, v in p.items()}
                             for p in top]
    return predictions, best, (nbest_json if nbest else None)


def make_logits(ws, variant: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic [W, L] float32 start/end logits (see the module docstring)."""
    rng = np.random.default_rng(seed)
    W, L = ws.input_ids.shape
    start, end = rng.standard_normal((2, W, L), dtype=np.float32)
    if variant == "noise":
        return start, end
    pos = np.arange(L)[None, :]
    ctx = ws.context_mask
    ctx_pos = [np.flatnonzero(row) for row in ctx]
    has = ws.start_positions != ws.cls_index
    decoy = np.array([rng.choice(p) for p in ctx_pos])
    s_at = np.where(has, ws.start_positions, decoy)[:, None]
    e_at = np.where(has, ws.end_positions, decoy + rng.integers(0, 5, W))[:, None]
    height = np.where(has, rng.uniform(3, 8, W), rng.uniform(1, 5, W)).astype(np.float32)[:, None]
    start += height * np.exp(-((pos - s_at) ** 2) / 8).astype(np.float32)
    end += height * np.exp(-((pos - e_at) ** 2) / 8).astype(np.float32)
    outside = ~ctx & (pos != ws.cls_index[:, None])
    start[outside] -= 10
    end[outside] -= 10
    return start, end


def best_of(n: int, fn, warmup: int = 1):
    """(best time, all times, result) of ``n`` timed runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times, result = [], None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), times, result


def check(ws, examples, start, end, ours, ref_pred, ref_best, ref_nbest, n_best, max_len) -> dict:
    """Compare our answers with the reference's (see the module docstring)."""
    ctx = ws.context_mask
    # Windows whose whole-window top n_best starts or ends include a non-context token.
    top_s, top_e = np.argsort(start, 1)[:, -n_best:], np.argsort(end, 1)[:, -n_best:]
    rows = np.arange(len(ws))[:, None]
    narrowed_w = ~ctx[rows, top_s].all(1) | ~ctx[rows, top_e].all(1)
    narrowed = np.bincount(ws.example_index, narrowed_w, len(examples)) > 0
    c = collections.Counter()
    for e, ex in enumerate(examples):
        ob, rb = float(ours.best_score[e]), float(ref_best[e])
        texts = [p["text"] for p in ours.nbest[ex.id]]
        c["info_nbest_texts_equal"] += texts == [p["text"] for p in ref_nbest[ex.id] if np.isfinite(rb)]
        c["score_violations"] += ob < rb - TOL
        if ours.nbest[ex.id]:
            top = ours.nbest[ex.id][0]
            cs, ce = top["start"], top["start"] + len(top["text"])
            ij = []
            for w in ([top["window"]] if top["window"] >= 0 else np.flatnonzero(ws.example_index == e)):
                i = np.flatnonzero(ctx[w] & (ws.offsets[w, :, 0] == cs))
                j = np.flatnonzero(ctx[w] & (ws.offsets[w, :, 1] == ce))
                ij += [(a, b) for a in i for b in j if a <= b < a + max_len
                       and abs(float(start[w, a] + end[w, b]) - top["score"]) <= TOL]
            c["invalid_spans"] += not ij
        if not np.isfinite(rb):
            c["reference_no_span"] += 1
            c["reference_no_span_ours_span"] += bool(ours.predictions[ex.id])
        elif ours.predictions[ex.id] == ref_pred[ex.id]:
            c["text_agree"] += 1
        elif abs(ob - rb) <= TOL:
            c["text_differs_score_tie"] += 1
        elif ob > rb:
            # our exact search found a better valid span outside the reference's top-k × top-k
            c["text_differs_ours_higher_score"] += 1
    out = {k: c[k] for k in ("score_violations", "invalid_spans", "text_agree",
                             "text_differs_score_tie", "text_differs_ours_higher_score",
                             "reference_no_span", "reference_no_span_ours_span", "info_nbest_texts_equal")}
    out["examples_reference_candidates_narrowed"] = int(narrowed.sum())
    out["passed"] = out["score_violations"] == 0 and out["invalid_spans"] == 0
    return out


def timing(ours, ref) -> dict:
    return {"ours_s": round(ours[0], 4), "ours_all_s": [round(t, 4) for t in ours[1]],
            "reference_s": round(ref[0], 4), "reference_all_s": [round(t, 4) for t in ref[1]],
            "speedup": round(ref[0] / ours[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(SHARED / "cmrc2018_dev.json"))
    ap.add_argument("--vocab", default=str(SHARED / "bert-base-chinese-vocab.txt"))
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each decoder, ours and the reference "
                                                           "(best is kept)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each decoder before timing")
    ap.add_argument("--n-best", type=int, default=20)
    ap.add_argument("--max-answer-len", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args()

    examples = load(args.data, "lenient").examples
    tok = load_tokenizer(args.vocab)
    wcfg = WindowConfig(max_seq_len=384, max_question_len=64, doc_overlap=128)
    ws = build_windows(examples, tok, wcfg, labels=True)
    assert len(ws) >= 6000, f"expected ≥ 6,000 windows, got {len(ws)}"
    # utils_qa reads offsets from Python lists, None outside the context
    offsets = [[tuple(o) if o[0] >= 0 else None for o in row] for row in ws.offsets.tolist()]
    dcfg = DecodeConfig(n_best_size=args.n_best, max_answer_len=args.max_answer_len)

    variants, load_before = {}, os.getloadavg()[0]
    for variant in ("realistic", "noise"):
        start, end = make_logits(ws, variant, args.seed)
        timings, results = {}, {}
        for mode, nbest in (("answers", False), ("nbest", True)):
            ours = best_of(args.repeats, lambda: decode(ws, start, end, examples, dcfg, nbest=nbest), args.warmup)
            ref = best_of(args.repeats, lambda: reference_decode(
                examples, ws.example_index.tolist(), offsets, start, end, args.n_best, args.max_answer_len, nbest),
                args.warmup)
            timings[mode] = timing(ours, ref)
            results[mode] = ours[2], ref[2]
            if nbest:  # the same, every entry made into a dict with its text (a fresh Decoded each run)
                dicts = best_of(args.repeats, lambda: decode(ws, start, end, examples, dcfg, nbest=True).nbest,
                                args.warmup)
                timings["nbest_dicts"] = timing(dicts, ref)
                results["nbest_dicts"] = dicts[2]
        (answers, ref_answers), (ours, (ref_pred, ref_best, ref_nbest)) = results["answers"], results["nbest"]
        assert answers.predictions == ours.predictions and ref_answers[0] == ref_pred
        assert results["nbest_dicts"] == ours.nbest
        checks = check(ws, examples, start, end, ours, ref_pred, ref_best, ref_nbest, args.n_best, args.max_answer_len)
        # the answers of the n-best run come partly from its top-k grid: they must be the exact search's
        checks["answers_same_with_nbest"] = bool(np.array_equal(answers.best_score, ours.best_score)
                                                 and np.array_equal(answers.best_span, ours.best_span))
        checks["passed"] = checks["passed"] and checks["answers_same_with_nbest"]
        variants[variant] = {**timings, "checks": checks}
    result = {
        **header("decode", numpy=np.__version__),
        "data": {"file": Path(args.data).name, "examples": len(examples), "windows": len(ws),
                 "window_config": {"max_seq_len": 384, "max_question_len": 64, "doc_overlap": 128}},
        "settings": {"n_best_size": args.n_best, "max_answer_len": args.max_answer_len, "seed": args.seed,
                     "repeats": args.repeats, "warmup": args.warmup,
                     "timing": "best of repeats after warm-up, both sides alike, time.perf_counter",
                     "compared": {
                         "answers": "decode() vs the reference's candidate loop and best text",
                         "nbest": "decode(nbest=True): n-best lists as arrays (example, char start/end, score, "
                                  "window, probability; texts sliced on demand) vs the reference's lists of dicts",
                         "nbest_dicts": "decode(nbest=True).nbest: the same plus every entry as a dict with its "
                                        "text vs the same reference run as nbest"},
                     "score_tolerance": TOL,
                     # other work on the machine slows both sides, ours (threads) at least as much
                     "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}},
        "variants": variants,
        "passed": all(v["checks"]["passed"] for v in variants.values()),
        "nbest_speedup_ge_20": all(v["nbest"]["speedup"] >= 20 for v in variants.values()),
        "nbest_dicts_speedup_ge_20": all(v["nbest_dicts"]["speedup"] >= 20 for v in variants.values()),
    }
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
