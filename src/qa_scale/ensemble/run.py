"""``qa-scale ensemble``: stores (or a recipe) → weights → mean logits → answers, scores and files.

Every input is read and checked before anything is written, and the output folder is written
staged and committed at once: a failure leaves the previous output folder as it was.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..common.outputs import staged_dir, write_json
from ..data import load_references
from ..evaluation import metrics, submit
from ..evaluation.decode import DecodeConfig
from ..inference.logits_store import Store, open_store
from . import rules
from .combine import EnsembleResult, ensemble, parse_weights
from .errors import EnsembleError
from .options import EnsembleOptions
from .spec import EnsembleRecipe, Member, load_recipe, resolve, save_recipe
from .selection import METHOD as SELECTION, SelectionResult, SelectionSettings, select_members
from .weight_search import SearchSettings, member_names, search_weights

MARKER = "ensemble.json"


def relative(path) -> str:
    """``path`` relative to the working directory when inside it (recipes stay portable), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _members(stores: list[Path], opts: EnsembleOptions) -> tuple[list[Store], list[float] | None, str]:
    """The stores to average, their weights (None: uniform) and the combination rule."""
    opened = [open_store(p) for p in stores] or None
    if opts.recipe:
        recipe = load_recipe(opts.recipe)
        opened, weights = resolve(recipe, opened)
        return opened, weights, opts.combine or recipe.combine
    if not opened:
        raise EnsembleError("give the stores to average, or --recipe")
    weights = parse_weights(opts.weights, len(opened)) if opts.weights else None
    return opened, weights, opts.combine or rules.DEFAULT


def run_ensemble(stores: list[Path], out: Path, opts: EnsembleOptions, decoding: dict | None = None) -> dict:
    """Average the stores, decode, score against references, write the output folder.

    Args:
        stores: logits store folders (optional with a recipe: matched to its members).
        out: the output folder (predictions, n-best, submission, metrics, summary, recipe).
        opts: member, weight and output choices.
        decoding: ``DecodeConfig`` fields that override the first store's settings.

    Returns:
        The summary written to ``OUT/ensemble.json``.
    """
    t0 = time.perf_counter()
    members, weights, rule = _members(stores, opts)
    config = DecodeConfig(**{**dataclasses.asdict(members[0].decode_config()), **(decoding or {})})
    refs = load_references(opts.references) if opts.references else None
    choosing = "--search-weights" if opts.search_weights else "--select-members" if opts.select_members else None
    if choosing and refs is None:
        raise EnsembleError(f"{choosing} needs --references (dev data with answers)")
    if refs is not None:  # before any work: references of another file, or without answers, score nothing
        metrics.check_scorable(members[0].windows.example_ids, refs,
                               predictions_from=", ".join(str(m.path) for m in members))
    names, summary = member_names(members), {}
    found = None
    if opts.search_weights:
        found = search_weights(members, refs, SearchSettings(opts.holdout, opts.search_metric, rule, config,
                                                              str(opts.references)))
        weights = found.weights
    elif opts.select_members:
        found = select_members(members, refs, SelectionSettings(opts.holdout, opts.search_metric, rule, config,
                                                                str(opts.references), opts.select_steps))
        weights = found.counts  # normalised by ensemble() to found.weights, bit for bit
    result = ensemble(members, weights, rule, config, nbest=opts.nbest)
    ids, preds = result.example_ids, result.decoded.predictions
    summary.update({"stores": [str(s.path) for s in members], "weights": result.weights, "combine": rule,
                    "decode": dataclasses.asdict(config), "examples": len(ids), "windows": len(members[0].windows),
                    "members": [{"name": n, "store": str(s.path), "weight": w, "model": s.model_path}
                                for n, s, w in zip(names, members, result.weights)],
                    "metrics": None})
    if refs is not None:
        summary["metrics"] = metrics.evaluate(preds, refs, hw7=refs.exact_accuracy).to_dict()
        for member, store in zip(summary["members"], members):
            member["metrics"] = metrics.evaluate(store.predictions(), refs, hw7=refs.exact_accuracy).to_dict()
        best = max(m["metrics"]["em"] for m in summary["members"])
        summary["em_gain_over_best_member"] = round(summary["metrics"]["em"] - best, 4)
    recipe_path = opts.recipe_out or out / "recipe.yaml"
    if found is not None:
        summary["search"] = {"method": found.found_by["method"], "chosen": found.chosen,
                             "reason": found.found_by["reason"], "recipe": str(recipe_path), "scores": found.scores}
        if isinstance(found, SelectionResult):
            summary["search"]["bag"] = found.found_by["selected_counts"]
    summary["files"] = _write(out, summary, result, names, found, recipe_path)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(out / MARKER, summary)  # the folder is in place; the summary gains its timing
    return summary


def _write(out: Path, summary: dict, result: EnsembleResult, names: list[str], found,
           recipe_path: Path) -> dict[str, str]:
    """Write the whole output folder staged, then commit it at once (a recipe outside it after)."""
    ids, preds, members = result.example_ids, result.decoded.predictions, result.stores
    files = {}
    with staged_dir(out, kind="ensemble") as tmp:
        files["predictions"] = submit.write_prediction_json(preds, ids, tmp / "predictions.json").name
        if result.decoded.nbest is not None:
            files["nbest"] = write_json(tmp / "nbest.json", result.decoded.nbest, indent=None).name
        if members[0].meta.get("data", {}).get("format") == "hw7":
            files["submission"] = submit.write_hw7_csv(preds, ids, tmp / "submission.csv").name
        if summary["metrics"] is not None:
            files["metrics"] = write_json(tmp / "metrics.json", summary["metrics"]).name
        files["summary"] = MARKER
        files = {k: str(out / v) for k, v in files.items()}
        inside = found is not None and recipe_path.resolve().parent == out.resolve()
        if inside:
            _save_searched(found, members, names, tmp / recipe_path.name, recipe_path)
            files["recipe"] = str(recipe_path)
        write_json(tmp / MARKER, {**summary, "files": files})
    if found is not None and not inside:
        files["recipe"] = str(_save_searched(found, members, names, recipe_path, recipe_path))
    return files


def _save_searched(found, members: list[Store], names: list[str], path: Path, shown: Path) -> Path:
    """Write the recipe of a weight search, or of a selection (its bag's counts as weights: the same mean)."""
    selected = isinstance(found, SelectionResult)
    weights = found.counts if selected else found.weights
    recipe_members = [Member(n, round(w, 6), relative(s.path), s.model_path and relative(s.model_path))
                      for n, w, s in zip(names, weights, members)]
    rule = found.found_by["combine"]
    return save_recipe(EnsembleRecipe(recipe_members, rule, found.found_by, found.scores), path,
                       comment=f"Ensemble recipe written by `qa-scale ensemble "
                               f"{'--select-members' if selected else '--search-weights'}` "
                               f"(see ensemble/README.md).\nUse: qa-scale ensemble --recipe {shown} "
                               "[TEST_STORES...] --out DIR")


def summary_text(summary: dict) -> str:
    """The human summary of :func:`run_ensemble`'s result."""
    text = [f"ensemble of {len(summary['members'])} store(s) over {summary['windows']} windows of "
            f"{summary['examples']} examples ({summary['combine']})"]
    if summary["metrics"] is not None:
        text += [f"  {m['name']} (weight {m['weight']:.3f}): EM {m['metrics']['em']:.3f}  F1 {m['metrics']['f1']:.3f}"
                 for m in summary["members"]]
        text.append(f"ensemble: EM {summary['metrics']['em']:.3f}  F1 {summary['metrics']['f1']:.3f} "
                    f"({summary['em_gain_over_best_member']:+.3f} EM over the best member)")
    else:
        text.append("  weights: " + ", ".join(f"{m['name']} {m['weight']:.3f}" for m in summary["members"]))
    if "search" in summary:
        found = summary["search"]
        if found.get("method") == SELECTION:
            bag = ", ".join(f"{name}×{count}" for name, count in found["bag"].items())
            text.append(f"ensemble selection kept the bag {bag} (counts over {sum(found['bag'].values())} additions)")
        text.append(f"weights {found['chosen']}: {found['reason']}; recipe: {found['recipe']}")
    text.append("wrote " + ", ".join(summary["files"].values()))
    return "\n".join(text)
