"""Ensemble weights searched on dev with ``scipy.optimize``, checked on a held-out part of dev.

Dev examples are split by a hash of their id (deterministic, independent of file order): a
``holdout`` fraction is set aside, the rest is the search split.

What is optimised: EM and F1 are step functions of the weights, so the search minimises a
smooth, convex surrogate on the search split — the mean negative log-likelihood of the gold
start and end tokens under the ensemble's logits, softmax over each window's context tokens,
over the windows that contain the gold answer (the reader's own training loss, applied to the
weighted mean). With weights on the simplex (SLSQP: bounds [0, 1], sum 1, exact gradient) the
logits are a convex combination, and the loss is convex in the weights.

Then the real metric decides: the searched weights are kept only if their EM/F1 (``metric``
first) on the search split is at least the uniform mean's, *and* on the held-out split they do
not score below the uniform mean; otherwise the uniform weights are kept and the result says
why. Held-out scores of uniform, searched and every single member are reported either way.

Memory: the members' logits of the search split's gold windows (K × N × L float32, N about
half the windows), plus one streamed ensemble at a time for the scores.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..evaluation.decode import DecodeConfig
from ..evaluation.metrics import evaluate
from ..inference.logits_store import Store, nonfinite_windows
from . import rules
from .combine import check_compatible, ensemble, normalise
from .errors import EnsembleError

log = logging.getLogger(__name__)
METHOD = "scipy.optimize.minimize(method='SLSQP') on the simplex (bounds [0, 1], sum 1)"
OBJECTIVE = ("mean negative log-likelihood of the gold start and end tokens under the weighted mean logits, "
             "softmax over each window's context tokens, over the search split's windows holding the gold answer")


def split_ids(ids: Sequence[str], holdout: float) -> tuple[list[str], list[str]]:
    """(search ids, held-out ids): ids ranked by sha256, the first ``holdout`` fraction held out."""
    if not 0 < holdout < 1:
        raise EnsembleError(f"holdout must be a fraction in (0, 1), got {holdout}")
    ranked = sorted(ids, key=lambda i: hashlib.sha256(str(i).encode()).hexdigest())
    k = max(1, round(holdout * len(ids)))
    held = set(ranked[:k])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


def _gold_rows(store: Store, ids: Sequence[str]) -> np.ndarray:
    ws = store.windows
    if ws.start_positions is None:
        raise EnsembleError(f"{store.path}: its windows have no answer labels; weight search needs stores "
                            "predicted on data with answers (dev)")
    wanted = np.isin(np.asarray(ws.example_ids, dtype=object)[ws.example_index], np.asarray(list(ids), dtype=object))
    return np.flatnonzero(wanted & (ws.start_positions != ws.cls_index))


def _member_rows(store: Store, rows: np.ndarray, rule: rules.CombineRule) -> list[np.ndarray]:
    out = []
    for array in store.logits(mmap=True):
        block = np.asarray(array[rows], np.float32)
        bad = nonfinite_windows(block, store.windows.lengths[rows])
        if len(bad):
            raise EnsembleError(f"{store.path}: non-finite logits (NaN or inf) on {len(bad)} of the search windows")
        out.append(rule.transform(block))
    return out


class Surrogate:
    """The convex span loss of :mod:`weight_search` and its gradient, for weights ``w`` (K,)."""

    def __init__(self, stores: Sequence[Store], rows: np.ndarray, rule: str = rules.DEFAULT):
        ws = stores[0].windows
        self.mask = ws.context_mask[rows]
        self.n = np.arange(len(rows))
        self.gold = (ws.start_positions[rows], ws.end_positions[rows])
        members = [_member_rows(s, rows, rules.get(rule)) for s in stores]
        # [K, N, L] per side; 0 off the context (kept finite so that 0 × value stays 0)
        self.Z = [np.stack([np.where(self.mask, m[side], 0).astype(np.float32) for m in members])
                  for side in (0, 1)]

    def __call__(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        from scipy.special import logsumexp

        value, grad = 0.0, np.zeros(len(w))
        for Z, gold in zip(self.Z, self.gold):
            z = np.where(self.mask, np.tensordot(w, Z, axes=1), -np.inf)  # [N, L] float64
            lse = logsumexp(z, axis=1)
            p = np.exp(z - lse[:, None])
            value += float(np.mean(lse - z[self.n, gold]))
            grad += np.einsum("knl,nl->k", Z, p) / len(gold) - Z[:, self.n, gold].mean(axis=1)
        return value, grad


def _scores(predictions: Mapping[str, str], refs: Mapping[str, list[str]], ids: Sequence[str]) -> dict:
    s = evaluate(predictions, {i: refs[i] for i in ids})
    return {"em": round(s.em, 4), "f1": round(s.f1, 4)}


@dataclass
class SearchResult:
    """Chosen weights, how they were found, and the scores that chose them."""

    weights: list[float]
    chosen: str  # "searched" or "uniform"
    found_by: dict
    scores: dict


@dataclass(frozen=True)
class SearchSettings:
    """How :func:`search_weights` splits, searches and decides."""

    holdout: float = 0.3  # fraction of dev examples held out of the search
    metric: str = "f1"  # "f1" or "em": what decides between searched and uniform weights
    rule: str = rules.DEFAULT  # the combination rule whose weighted mean is searched (rules.RULES)
    decode_config: DecodeConfig | None = None  # decoder settings; default: the first store's
    references_name: str | None = None  # recorded in found_by (default: the references' file, when known)


def search_weights(stores: Sequence[Store], references: Mapping[str, list[str]],
                   settings: SearchSettings = SearchSettings()) -> SearchResult:
    """Search member weights on dev (see the module docstring).

    Args:
        stores: compatible stores predicted on dev (with answer labels).
        references: id → reference texts (every reference answer, as the metrics use).
        settings: holdout fraction, selection metric, combination rule, decoder settings.
    """
    from scipy.optimize import minimize

    holdout, metric, rule, decode_config = settings.holdout, settings.metric, settings.rule, settings.decode_config
    references_name = settings.references_name or getattr(references, "path", None)

    if metric not in ("f1", "em"):
        raise EnsembleError(f"metric must be 'f1' or 'em', got {metric!r}")
    stores = list(stores)
    check_compatible(stores)
    K = len(stores)
    ids = [i for i in stores[0].windows.example_ids if references.get(i)]
    if len(ids) < 2:
        raise EnsembleError("the references share fewer than 2 answered example ids with the stores")
    search, held = split_ids(ids, holdout)
    rows = _gold_rows(stores[0], search)
    if len(rows) == 0:
        raise EnsembleError("no window of the search split contains its gold answer")
    surrogate = Surrogate(stores, rows, rule)
    uniform = np.full(K, 1.0 / K)
    res = minimize(surrogate, uniform, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * K,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                   options={"maxiter": 200, "ftol": 1e-9})
    searched = np.clip(res.x, 0.0, None)
    if not np.all(np.isfinite(searched)) or not searched.max() > 0:
        raise EnsembleError(f"the weight search ended with no usable weights ({res.x.tolist()}; {res.message}): "
                            "nothing was written")
    searched = normalise(searched, K)

    def scored(weights, members=None) -> dict:
        preds = ensemble(members or stores, weights, rule, decode_config, nbest=False).decoded.predictions
        return {"search": _scores(preds, references, search), "holdout": _scores(preds, references, held)}

    runs = {"uniform": scored(uniform), "searched": scored(searched)}
    names = member_names(stores)
    singles = {name: scored([1.0], [s]) for name, s in zip(names, stores)}

    def key(split: str, which: str) -> tuple:
        s = runs[which][split]
        return (s[metric], s["f1" if metric == "em" else "em"])

    if key("search", "searched") < key("search", "uniform"):
        chosen, why = "uniform", f"searched weights scored below uniform on the search split ({metric})"
    elif key("holdout", "searched") < key("holdout", "uniform"):
        chosen, why = "uniform", f"searched weights scored below uniform on the held-out split ({metric}): overfit"
    else:
        chosen, why = "searched", f"searched weights ≥ uniform on the search and held-out splits ({metric})"
    weights = searched if chosen == "searched" else uniform
    found_by = {
        "method": METHOD, "objective": OBJECTIVE, "selection_metric": metric, "combine": rule,
        "references": references_name, "holdout_fraction": holdout,
        "split": "answered dev examples ranked by sha256(id); the first holdout fraction is held out",
        "surrogate": {"uniform": round(surrogate(uniform)[0], 6), "searched": round(float(res.fun), 6),
                      "iterations": int(res.nit), "success": bool(res.success), "message": str(res.message)},
        "searched_weights": [round(float(x), 6) for x in searched],
        "chosen": chosen, "reason": why,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    scores = {split: {"examples": len(part), "uniform": runs["uniform"][split], "searched": runs["searched"][split],
                      "members": {n: singles[n][split] for n in names}}
              for split, part in (("search", search), ("holdout", held))}
    log.info("weights %s (%s): %s", np.round(weights, 4).tolist(), chosen, why)
    return SearchResult([float(x) for x in weights], chosen, found_by, scores)


def member_names(stores: Sequence[Store]) -> list[str]:
    """A short, unique name per store: its model's run folder (``runs/NAME/model``), else the store folder."""
    names = []
    for s in stores:
        model = Path(s.model_path) if s.model_path else None
        base = (model.parent.name if model.name == "model" else model.name) if model else s.path.name
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names
