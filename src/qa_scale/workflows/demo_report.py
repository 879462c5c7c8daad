"""The demo's ensemble and its honest comparison with the best member.

Dev is split once, by a hash of the question ids: on the *search* part the member weights are
searched (``ensemble.weight_search``, which keeps uniform weights when the searched ones do not
hold up on a held-out slice of that part) and the best member is chosen; on the *held-out* part,
which neither choice has seen, the ensemble is compared with that member, question by question,
with a paired percentile-bootstrap interval of the EM difference. The members chose their own
best checkpoints on the search part only (their dev file), so nothing was selected on held-out.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import data
from ..common.inputs import read_json
from ..common.outputs import write_json
from ..ensemble.combine import ensemble
from ..ensemble.spec import EnsembleRecipe, Member, save_recipe
from ..ensemble.weight_search import SearchSettings, search_weights, split_ids
from ..evaluation import metrics, submit
from ..evaluation.baselines import trivial_baselines
from .compare import bootstrap_ci
from .demo_config import DemoConfig

log = logging.getLogger(__name__)


def _scores(s: metrics.Scores) -> dict:
    out = {"em": round(s.em, 3), "f1": round(s.f1, 3)}
    if s.hw7_accuracy is not None:
        out["hw7_accuracy"] = round(s.hw7_accuracy, 5)
    return out


def _per_question(s: metrics.Scores) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([q.em for q in s.per_question]) * 100, np.array([q.f1 for q in s.per_question]) * 100)


def ensemble_report(cfg: DemoConfig, out: Path, files: DemoFiles, members: list[tuple[str, Path]],
                    stores: dict[str, list]) -> dict:
    """Weights on the search part, the comparison on the held-out part, the test submission."""
    refs = data.load_references(files.squad_dev)
    search, held = split_ids(list(refs), 1 - cfg.search_fraction)
    parts = {"search": {i: refs[i] for i in search}, "holdout": {i: refs[i] for i in held}, "dev": refs}
    log.info("7/10 ensemble: weights searched on %d dev questions, compared on the other %d", len(search), len(held))
    found = search_weights(stores["dev"], parts["search"], SearchSettings(
        holdout=0.3, metric="em", rule=cfg.combine, references_name=f"{files.squad_dev} (search part)"))
    names = [name for name, _ in members]
    report: dict = {"members": {}, "ensemble": {"weights": dict(zip(names, map(float, found.weights))),
                                                "weights_chosen": found.chosen, "reason": found.found_by["reason"]}}
    per_q = {}
    for name, store in zip(names, stores["dev"]):
        for part, ref in parts.items():
            s = metrics.evaluate(store.predictions(), ref)
            report["members"].setdefault(name, {})[part] = _scores(s)
            per_q[(name, part)] = s
    result = ensemble(stores["dev"], found.weights, cfg.combine, nbest=False).decoded
    uniform = ensemble(stores["dev"], None, cfg.combine, nbest=False).decoded
    for part, ref in parts.items():
        s = metrics.evaluate(result.predictions, ref)
        report["ensemble"][part] = _scores(s)
        report.setdefault("uniform_ensemble", {})[part] = _scores(metrics.evaluate(uniform.predictions, ref))
        per_q[("ensemble", part)] = s
    write_json(out / "dev_predictions.json", result.predictions)
    metrics.write_error_file(per_q[("ensemble", "dev")], out / "dev_errors.jsonl")
    report["ensemble_vs_best_member"] = _comparison(report, per_q, cfg)
    report["ensemble"]["test"] = _test(out, files, members, stores["test"], found.weights, cfg.combine, report)
    save_recipe(EnsembleRecipe([Member(n, round(float(w), 6), str(r / "dev_store"), str(r / "model"))
                                for (n, r), w in zip(members, found.weights)], cfg.combine, found.found_by,
                               found.scores), out / "ensemble_recipe.yaml",
                comment="The demo's ensemble: weights searched on the search part of dev.")
    train = data.load(files.squad_train, "strict").examples
    dev = data.load(files.squad_dev, "strict").examples
    report["baselines"] = trivial_baselines(train, dev, refs)
    return report


def _comparison(report: dict, per_q: dict, cfg: DemoConfig) -> dict:
    """The ensemble against the member best on the search part, on the held-out part, paired."""
    best = max(report["members"], key=lambda n: (report["members"][n]["search"]["em"],
                                                 report["members"][n]["search"]["f1"]))
    ens_em, ens_f1 = _per_question(per_q[("ensemble", "holdout")])
    mem_em, mem_f1 = _per_question(per_q[(best, "holdout")])
    em_ci = bootstrap_ci(ens_em, mem_em, resamples=2000, seed=cfg.seed)
    f1_ci = bootstrap_ci(ens_f1, mem_f1, resamples=2000, seed=cfg.seed)
    return {"best_member": best, "chosen_on": "search", "measured_on": "holdout", "questions": len(ens_em),
            "holdout_em_gain": round(float((ens_em - mem_em).mean()), 3),
            "holdout_em_gain_ci95": [round(em_ci[0], 3), round(em_ci[1], 3)],
            "holdout_f1_gain": round(float((ens_f1 - mem_f1).mean()), 3),
            "holdout_f1_gain_ci95": [round(f1_ci[0], 3), round(f1_ci[1], 3)]}


def _test(out: Path, files: DemoFiles, members: list, test_stores: list, weights: list[float], rule: str,
          report: dict) -> dict:
    """The HW7 test split: every member's and the ensemble's accuracy, and the submission files."""
    log.info("8/10 submissions")
    truth = read_json(files.hw7_test_answers)
    refs = {k: [v] for k, v in truth.items()}
    for (name, _), store in zip(members, test_stores):
        report["members"][name]["test"] = _scores(metrics.evaluate(store.predictions(), refs, hw7=True))
    preds = ensemble(test_stores, weights, rule, nbest=False).decoded.predictions
    ids = list(data.load_references(files.hw7_test))
    submit.write_hw7_csv(preds, ids, out / "submission.csv")
    submit.write_prediction_json(preds, ids, out / "test_predictions.json")
    return _scores(metrics.evaluate(preds, refs, hw7=True))


def report_text(report: dict, out: Path) -> str:
    """The human summary of a demo report."""
    fid, ens, gain = report["dev_oracle"], report["ensemble"], report["ensemble_vs_best_member"]
    lines = [f"dev oracle fidelity: EM {fid['em_any_reference']:.2f} over {fid['windows']} windows",
             "trivial baselines (dev EM): " + ", ".join(f"{k} {v['em']:.2f}" for k, v in report["baselines"].items()),
             f"{'':>12}  search EM | held-out EM    F1 | test HW7 acc"]
    rows = [*report["members"].items(), ("ensemble", ens), ("uniform", {**report["uniform_ensemble"], "test": None})]
    rows += [("student", report["student"])] if report.get("student") else []
    for name, m in rows:
        test = f"{m['test']['hw7_accuracy']:.4f}" if m.get("test") else "     -"
        lines.append(f"{name:>12}: {m['search']['em']:9.2f} | {m['holdout']['em']:11.2f} {m['holdout']['f1']:6.2f} "
                     f"| {test}")
    lo, hi = gain["holdout_em_gain_ci95"]
    lines += [f"weights ({ens['weights_chosen']}): " + ", ".join(f"{n} {w:.3f}" for n, w in ens["weights"].items()),
              f"ensemble vs best member on search ({gain['best_member']}), on {gain['questions']} held-out "
              f"questions: EM {gain['holdout_em_gain']:+.2f} [95% CI {lo:+.2f}, {hi:+.2f}], "
              f"F1 {gain['holdout_f1_gain']:+.2f}",
              *_student_lines(report.get("student")),
              f"submission: {report['files']['submission.csv']}\nreport: {Path(out) / 'report.json'} "
              f"({report['seconds']['total']} s)"]
    return "\n".join(lines)


def _student_lines(student: dict | None) -> list[str]:
    if not student:
        return []
    m, e, lat = student["vs_best_member"], student["vs_ensemble"], student["latency"]
    kept = "n/a (the ensemble gains nothing over it)" if student["gain_kept"] is None else f"{student['gain_kept']:.0%}"
    return [f"student vs {m['best_member']}: EM {m['em_gain']:+.2f} [95% CI {m['em_gain_ci95'][0]:+.2f}, "
            f"{m['em_gain_ci95'][1]:+.2f}]; vs the ensemble: EM {e['em_gain']:+.2f} [{e['em_gain_ci95'][0]:+.2f}, "
            f"{e['em_gain_ci95'][1]:+.2f}]; ensemble gain kept: {kept}",
            f"answer time per question: ensemble ({lat['readers']['ensemble']} readers) "
            f"{lat['seconds_per_question']['ensemble'] * 1000:.1f} ms, student "
            f"{lat['seconds_per_question']['student'] * 1000:.1f} ms ({lat['ensemble_over_student']:.2f}x); "
            f"{lat['questions']} in one call: {lat['ensemble_over_student_in_one_call']:.2f}x"]

