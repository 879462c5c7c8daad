"""A finished demo's readers on a large fresh evaluation set: members, ensemble, student, control.

``python bench/heldout_large.py DEMO_DIR [--paragraphs 800] [--out FILE]``

The demo scores its readers on the held-out half of its dev split: about 450 questions, so a paired
difference of two readers has a 95% interval about ±4 EM wide, too wide to tell whether an ensemble
or a distilled student gains a few points. This script draws a new evaluation split from the demo's
own sample-data generator (its paragraph lengths, another seed: questions no reader has seen, none
used to choose weights or the best member), predicts it with every reader of the demo's ensemble
recipe, the student (``DEMO_DIR/student``) and its gold-only control (``DEMO_DIR/student_control``,
from ``bench/student_control.sh``) when present, combines the members with the recipe's weights and
rule, and reports EM/F1 of each with paired bootstrap intervals against the member best on the
demo's search part (the one the demo compares with). Nothing is trained; the demo folder is only read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from record import emit, header

from qa_scale import data, synthetic
from qa_scale.common.inputs import read_json
from qa_scale.ensemble.combine import ensemble
from qa_scale.ensemble.spec import load_recipe
from qa_scale.evaluation import metrics
from qa_scale.inference.logits_store import open_store
from qa_scale.inference.options import ReaderOptions
from qa_scale.inference.predict import PredictOptions
from qa_scale.inference.predict import run as predict
from qa_scale.workflows.compare import bootstrap_ci


def _eval_split(demo: Path, paragraphs: int, seed: int, work: Path) -> tuple[Path, int]:
    """A new dev file from the demo's generator, without any paragraph the demo's files hold."""
    cfg = read_json(demo / "demo.json")["config"]
    sample = synthetic.SampleConfig(seed=seed, train_paragraphs=1, dev_paragraphs=paragraphs, test_paragraphs=1,
                                    paragraph_chars=tuple(cfg["paragraph_chars"]))
    path = synthetic.write_all(sample, work / "data")["squad_dev"]
    seen = {ex.context for name in ("squad_train.json", "squad_dev.json")
            for ex in data.load(demo / "data" / name, "strict").examples}
    raw = read_json(path)
    dropped = 0
    for article in raw["data"]:
        kept = [p for p in article["paragraphs"] if p["context"] not in seen]
        dropped += len(article["paragraphs"]) - len(kept)
        article["paragraphs"] = kept
    raw["data"] = [a for a in raw["data"] if a["paragraphs"]]
    out = work / "data" / "eval.json"
    out.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return out, dropped


def _paired(x: np.ndarray, y: np.ndarray) -> dict:
    lo, hi = bootstrap_ci(x, y, resamples=2000, seed=0)
    return {"em_gain": round(float((x - y).mean()), 3), "ci95": [round(lo, 3), round(hi, 3)]}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo", type=Path, help="a finished demo folder (read only)")
    p.add_argument("--paragraphs", type=int, default=800, help="paragraphs of the new evaluation split")
    p.add_argument("--eval-seed", type=int, default=None, help="generator seed (default: 10,000 + the demo's seed)")
    p.add_argument("--recipe", type=Path, default=None, help="ensemble recipe (default: DEMO/ensemble_recipe.yaml)")
    p.add_argument("--best", default=None, help="the member best on search (default: the demo report's)")
    p.add_argument("--student", type=Path, default=None, help="student run folder (default: DEMO/student)")
    p.add_argument("--control", type=Path, default=None, help="control run folder (default: DEMO/student_control)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    demo = args.demo.resolve()
    seed = args.eval_seed if args.eval_seed is not None else 10_000 + read_json(demo / "demo.json")["config"]["seed"]
    recipe = load_recipe(args.recipe or demo / "ensemble_recipe.yaml")
    best = args.best or read_json(demo / "report.json")["ensemble_vs_best_member"]["best_member"]
    readers = {m.name: Path(m.model) for m in recipe.members}
    if best not in readers:
        raise SystemExit(f"--best {best}: not a member of the recipe ({', '.join(readers)})")
    runs = {"student": args.student or demo / "student", "control": args.control or demo / "student_control"}
    for name, run in runs.items():
        if (run / "model").is_dir():
            readers[name] = run / "model"
    work = Path(tempfile.mkdtemp(prefix="heldout_large_"))
    try:
        path, dropped = _eval_split(demo, args.paragraphs, seed, work)
        refs = data.load_references(path)
        stores, em, scores = {}, {}, {}
        for name, model in readers.items():
            predict(PredictOptions(model, path, work / name, ReaderOptions(device="cpu", batch_size=args.batch_size)))
            stores[name] = open_store(work / name)
        decoded = ensemble([stores[m.name] for m in recipe.members], [m.weight for m in recipe.members],
                           recipe.combine, nbest=False).decoded
        predictions = {**{n: s.predictions() for n, s in stores.items()}, "ensemble": decoded.predictions}
        for name, pred in predictions.items():
            s = metrics.evaluate(pred, refs)
            scores[name] = {"em": round(s.em, 3), "f1": round(s.f1, 3)}
            em[name] = np.array([q.em for q in s.per_question]) * 100
        result = {**header("heldout_large"), "demo": str(demo), "eval_seed": seed, "paragraphs": args.paragraphs,
                  "paragraphs_dropped_as_seen": dropped, "questions": len(refs), "windows": stores[best].shape[0],
                  "best_member": best, "weights": {m.name: m.weight for m in recipe.members},
                  "combine": recipe.combine, "scores": scores,
                  "ensemble_vs_best": _paired(em["ensemble"], em[best])}
        if "student" in em:
            result["student_vs_best"] = _paired(em["student"], em[best])
            result["student_vs_ensemble"] = _paired(em["student"], em["ensemble"])
            gain = result["ensemble_vs_best"]["em_gain"]
            result["student_share_of_ensemble_gain"] = (round(result["student_vs_best"]["em_gain"] / gain, 3)
                                                        if gain > 0 else None)
        if "control" in em and "student" in em:
            result["student_vs_control"] = _paired(em["student"], em["control"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["passed"] = result["questions"] > 0  # a measurement, no target
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
