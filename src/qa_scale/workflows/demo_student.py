"""The demo's student: one reader distilled from the ensemble, measured against both on held-out dev.

The student is chosen by nothing on the held-out part: its best checkpoint is picked on the
search part (its dev file), as the members' are. On the held-out part it is compared, question
by question with paired bootstrap intervals, with the member best on the search part and with
the ensemble; ``gain_kept`` is the share of the ensemble's held-out EM gain over that member that
the student keeps (None when the ensemble gains nothing there). Answer latency is measured
through the serving path (:func:`~qa_scale.serving.answering.answer`, what ``qa-scale answer``
and ``serve`` call), one question per call as a user asks, and all of them in one call (what a
file of questions or a busy service gets: the per-call work of windowing and decoding is shared),
ensemble and student alternating in the same process; the faster of two rounds of each is kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .. import data
from ..common.inputs import read_json
from ..evaluation import metrics
from ..inference.logits_store import Store, open_store
from ..inference.options import ReaderOptions
from .compare import bootstrap_ci
from .demo_config import DemoConfig, DemoFiles

log = logging.getLogger(__name__)
LATENCY_QUESTIONS = 64


def _scores(s: metrics.Scores) -> dict:
    out = {"em": round(s.em, 3), "f1": round(s.f1, 3)}
    if s.hw7_accuracy is not None:
        out["hw7_accuracy"] = round(s.hw7_accuracy, 5)
    return out


def _paired(a: metrics.Scores, b: metrics.Scores, seed: int) -> dict:
    """Mean held-out EM/F1 difference a − b and its 95% paired bootstrap interval."""
    out = {}
    for key in ("em", "f1"):
        x = np.array([getattr(q, key) for q in a.per_question]) * 100
        y = np.array([getattr(q, key) for q in b.per_question]) * 100
        lo, hi = bootstrap_ci(x, y, resamples=2000, seed=seed)
        out[f"{key}_gain"], out[f"{key}_gain_ci95"] = round(float((x - y).mean()), 3), [round(lo, 3), round(hi, 3)]
    return out


def student_report(cfg: DemoConfig, out: Path, files: DemoFiles, stores: dict[str, Store],
                   ensemble_report: dict) -> dict:
    """Scores of the student (``stores``: its dev and test stores) against the best member and the ensemble."""
    from ..ensemble.weight_search import split_ids

    refs = data.load_references(files.squad_dev)
    search, held = split_ids(list(refs), 1 - cfg.search_fraction)
    parts = {"search": {i: refs[i] for i in search}, "holdout": {i: refs[i] for i in held}, "dev": refs}
    preds = stores["dev"].predictions()
    report: dict = {part: _scores(metrics.evaluate(preds, ref)) for part, ref in parts.items()}
    truth = read_json(files.hw7_test_answers)
    report["test"] = _scores(metrics.evaluate(stores["test"].predictions(), {k: [v] for k, v in truth.items()},
                                              hw7=True))
    best = ensemble_report["ensemble_vs_best_member"]["best_member"]
    held_refs = parts["holdout"]
    student = metrics.evaluate(preds, held_refs)
    member = metrics.evaluate(open_store(out / "members" / best / "dev_store").predictions(), held_refs)
    ensemble = metrics.evaluate(read_json(out / "dev_predictions.json"), held_refs)
    vs_member, vs_ensemble = _paired(student, member, cfg.seed), _paired(student, ensemble, cfg.seed)
    ensemble_gain = ensemble.em - member.em
    report["vs_best_member"] = {"best_member": best, "questions": len(held), **vs_member}
    report["vs_ensemble"] = vs_ensemble
    report["gain_kept"] = round((student.em - member.em) / ensemble_gain, 3) if ensemble_gain > 0 else None
    return report


def answer_latency(cfg: DemoConfig, out: Path, files: DemoFiles, student_model: Path) -> dict:
    """Seconds per question of the ensemble (its recipe's readers) and of the student, through the serving path."""
    from ..ensemble.weight_search import split_ids
    from ..serving.answering import Query, answer
    from ..serving.readers import load_panel

    examples = data.load(files.squad_dev, "strict").examples
    _, held = split_ids([ex.id for ex in examples], 1 - cfg.search_fraction)
    held = set(held)
    queries = [Query(ex.context, ex.question) for ex in examples if ex.id in held][:LATENCY_QUESTIONS]
    options = ReaderOptions(device="cpu", batch_size=64)
    panels = {"ensemble": load_panel([], options, recipe=out / "ensemble_recipe.yaml"),
              "student": load_panel([student_model], options)}
    for panel in panels.values():
        answer(panel, queries[:4], nbest=False)  # warm-up: first calls allocate
    best = {(name, how): float("inf") for name in panels for how in ("one", "all")}
    for _ in range(2):
        for name, panel in panels.items():
            t0 = time.perf_counter()
            for q in queries:
                answer(panel, [q], nbest=False)
            t1 = time.perf_counter()
            answer(panel, queries, nbest=False)
            t2 = time.perf_counter()
            best[name, "one"], best[name, "all"] = min(best[name, "one"], t1 - t0), min(best[name, "all"], t2 - t1)
    per_q = {how: {name: round(best[name, how] / len(queries), 5) for name in panels} for how in ("one", "all")}
    return {"questions": len(queries), "how": "faster of 2 rounds, ensemble and student alternating",
            "readers": {name: len(p.readers) for name, p in panels.items()},
            "seconds_per_question": per_q["one"], "ensemble_over_student": _ratio(per_q["one"]),
            "seconds_per_question_in_one_call": per_q["all"], "ensemble_over_student_in_one_call": _ratio(per_q["all"])}


def _ratio(seconds: dict) -> float:
    return round(seconds["ensemble"] / seconds["student"], 2)
