"""Ensemble selection (Caruana et al. 2004): greedy forward selection of members, with replacement, on dev.

The split is the weight search's (:func:`weight_search.split_ids`): the answered dev examples
ranked by ``sha256(id)``, the first ``holdout`` fraction held out, the rest the search split.

The greedy climb. The bag starts empty. At each step every member of the pool is tried as the
next addition (with replacement: a member may be added again), and the one whose addition gives
the best search-split score is added: ``metric`` (EM or F1) first, the other metric as the
tie-break, then the lowest pool index, so that the climb is deterministic. A bag's weights are
its counts over its size, combined by the registered rule (``rules.get(rule)``) with the
arithmetic of :func:`combine.mean_logits` (:func:`combine.normalise`, then
:func:`combine.add_member` member after member in pool order), so that ``ensemble()`` on the same
weights decodes the very predictions the climb scored. The climb stops after ``max_steps``
additions (default 2 × K: weights in steps of 1/(2K), enough for a pool of a few readers) or
after ``patience`` steps in a row that do not beat the best score seen. The bag kept is the
best-scoring prefix of the climb (Caruana's rule; the shortest one on a tie).

Initialisation: the first step from the empty bag adds the best single member, which is
Caruana's "sorted initialisation" with N = 1; no larger sorted initialisation is done.

Then the real metric decides, as in the weight search: the selected weights are kept only if on
the search split they score at least as well as the uniform mean of the whole pool, and on the
held-out split they do not score below it; otherwise the uniform weights are kept and the result
says why. The result has the weight search's shape (``SearchResult``: ``chosen`` is
``"selected"`` or ``"uniform"``, ``scores`` has ``uniform``, ``selected`` and ``members`` per
split), plus the bag's counts; the recipe written from it records the counts as weights (the
ensembler normalises them), so that the recipe reproduces the selection bit for bit.

Memory: every member's rule-transformed logits are held once, float32: K × W × L × 4 bytes × 2
(start and end), plus two [W, L] float32 accumulators and one scratch buffer. A candidate's
mean is recomputed from the held arrays, one multiply-add per member in the bag (a running sum
would round differently from ``ensemble()``), then decoded once; a bag already scored (as
proportions: 2:2 is 1:1) is not decoded again.
"""

from __future__ import annotations

import datetime
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ..evaluation.decode import DecodeConfig, decode
from ..evaluation.metrics import evaluate
from ..inference.logits_store import LOGITS, Store, nonfinite_windows
from . import rules
from .combine import add_member, check_compatible, normalise
from .errors import EnsembleError
from .weight_search import SearchResult, member_names, split_ids

log = logging.getLogger(__name__)
METHOD = "greedy forward selection with replacement (Caruana et al. 2004)"
CHUNK_ROWS = 256  # the rows the rule transforms at a time: mean_logits' blocks, so the values are the same
_HELD = rules.CombineRule("held", "members already transformed by the rule", lambda block: block)


@dataclass(frozen=True)
class SelectionSettings:
    """How :func:`select_members` splits, climbs and decides."""

    holdout: float = 0.3  # fraction of dev examples held out of the selection
    metric: str = "f1"  # "f1" or "em": what the climb maximises (the other breaks ties) and what decides
    rule: str = rules.DEFAULT  # the combination rule of the weighted mean (rules.RULES)
    decode_config: DecodeConfig | None = None  # decoder settings; default: the first store's
    references_name: str | None = None  # recorded in found_by (default: the references' file, when known)
    max_steps: int | None = None  # additions at most; default 2 × the number of members
    patience: int = 3  # stop after this many steps in a row that do not beat the best search score


@dataclass
class SelectionResult(SearchResult):
    """A :class:`SearchResult` (``chosen``: ``"selected"`` or ``"uniform"``) plus the bag.

    Attributes:
        counts: the chosen weights as counts (the selected bag, or one of each member for uniform):
            ``weights`` is ``counts`` normalised, and recipes record the counts.
        selected_counts: the bag the climb kept, chosen or not.
        predictions: what the kept bag's mean decodes to (every example): the predictions it was scored by.
    """

    counts: list[int] = field(default_factory=list)
    selected_counts: list[int] = field(default_factory=list)
    predictions: dict[str, str] = field(default_factory=dict)


class Pool:
    """The members' rule-transformed logits held in memory, and the bags' decoded predictions."""

    def __init__(self, stores: Sequence[Store], rule: rules.CombineRule, config: DecodeConfig):
        first = stores[0]
        self.windows, self.examples, self.config = first.windows, first.examples, config
        self.held = [[self._transformed(s, k, name, rule) for name in LOGITS] for k, s in enumerate(stores)]
        self.scratch = np.empty(first.shape, np.float32)
        self.cache: dict[tuple[int, ...], dict[str, str]] = {}

    def _transformed(self, store: Store, k: int, name: str, rule: rules.CombineRule) -> np.ndarray:
        """One member's ``rule(logits)`` [W, L] float32, block by block as :func:`combine.mean_logits` reads it."""
        out = np.empty(store.shape, np.float32)
        lengths, bad = self.windows.lengths, 0
        for rows, block in store.iter_rows(name, CHUNK_ROWS):
            bad += len(nonfinite_windows(block, lengths[rows]))
            t = out[rows]
            np.copyto(t, block)
            out[rows] = rule.transform(t)
        if bad:
            raise EnsembleError(f"{store.path} (member {k + 1}): non-finite {name} (NaN or inf) on {bad} of "
                                f"{store.shape[0]} windows; predict that member again")
        return out

    def mean(self, counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The bag's weighted mean (start, end), bit for bit :func:`combine.mean_logits`' on ``counts``."""
        w = normalise(list(counts), len(counts))
        out = []
        for side in range(2):
            acc = np.zeros(self.scratch.shape, np.float32)
            for member, wk in zip(self.held, w):
                if wk > 0:  # members in pool order, as mean_logits adds them
                    np.copyto(self.scratch, member[side])
                    add_member(acc, self.scratch, np.float32(wk), _HELD)
            out.append(acc)
        return out[0], out[1]

    def predictions(self, counts: Sequence[int]) -> dict[str, str]:
        """The decoded mean of the bag ``counts`` (one count per member, not all 0)."""
        g = math.gcd(*counts)
        key = tuple(c // g for c in counts)  # proportional bags have the same weights, bit for bit
        if key not in self.cache:
            start, end = self.mean(key)
            self.cache[key] = decode(self.windows, start, end, self.examples, self.config, nbest=False).predictions
        return self.cache[key]


def _score(predictions: Mapping[str, str], refs: Mapping[str, list[str]], ids: Sequence[str]) -> dict:
    s = evaluate(predictions, {i: refs[i] for i in ids})
    return {"em": round(s.em, 4), "f1": round(s.f1, 4)}


def _climb(K: int, score: Callable[[list[int]], tuple[tuple, dict]], max_steps: int,
           patience: int) -> tuple[list[int], list[dict], str]:
    """The greedy climb over K members: (the best prefix's counts, the steps, why it stopped).
    ``score(counts)`` gives a comparable key (higher is better) and the scores recorded for the step."""
    counts, steps = [0] * K, []
    best_key, best_counts, stale = None, None, 0
    stopped = f"max_steps ({max_steps}) additions made"
    for _ in range(max_steps):
        chosen = None
        for k in range(K):  # the first of equal candidates wins: the lowest index
            trial = counts.copy()
            trial[k] += 1
            key, scores = score(trial)
            if chosen is None or key > chosen[1]:
                chosen = (k, key, scores)
        k, key, scores = chosen
        counts[k] += 1
        steps.append({"added": k, "search": scores})
        if best_key is None or key > best_key:
            best_key, best_counts, stale = key, counts.copy(), 0
        else:
            stale += 1
            if stale >= patience:
                stopped = f"{patience} step(s) in a row without a better search score (patience)"
                break
    return best_counts, steps, stopped


def select_members(stores: Sequence[Store], references: Mapping[str, list[str]],
                   settings: SelectionSettings = SelectionSettings()) -> SelectionResult:
    """Choose member weights on dev by ensemble selection (see the module docstring).

    Args:
        stores: the pool: compatible stores predicted on dev (answer labels not needed).
        references: id → reference texts (every reference answer, as the metrics use).
        settings: holdout fraction, metric, combination rule, decoder settings, steps and patience.

    Raises:
        EnsembleError: incompatible stores, non-finite logits inside a member's tokens, fewer than 2
            answered examples shared with the references, or a setting out of range.
    """
    metric = settings.metric
    if metric not in ("f1", "em"):
        raise EnsembleError(f"metric must be 'f1' or 'em', got {metric!r}")
    stores = list(stores)
    check_compatible(stores)
    K = len(stores)
    max_steps = 2 * K if settings.max_steps is None else settings.max_steps
    if max_steps < 1 or settings.patience < 1:
        raise EnsembleError(f"max_steps and patience must be ≥ 1, got {max_steps} and {settings.patience}")
    ids = [i for i in stores[0].windows.example_ids if references.get(i)]
    if len(ids) < 2:
        raise EnsembleError("the references share fewer than 2 answered example ids with the stores")
    search, held = split_ids(ids, settings.holdout)
    pool = Pool(stores, rules.get(settings.rule), settings.decode_config or stores[0].decode_config())
    other = "f1" if metric == "em" else "em"
    references_name = settings.references_name or getattr(references, "path", None)

    def scored(counts: Sequence[int], split: Sequence[str] = search) -> tuple[tuple, dict]:
        s = _score(pool.predictions(counts), references, split)
        return (s[metric], s[other]), s

    selected, steps, stopped = _climb(K, scored, max_steps, settings.patience)
    uniform = [1] * K
    names = member_names(stores)
    runs = {split: {"uniform": scored(uniform, part), "selected": scored(selected, part)}
            for split, part in (("search", search), ("holdout", held))}
    if runs["search"]["selected"][0] < runs["search"]["uniform"][0]:
        chosen, why = "uniform", f"selected weights scored below uniform on the search split ({metric})"
    elif runs["holdout"]["selected"][0] < runs["holdout"]["uniform"][0]:
        chosen, why = "uniform", f"selected weights scored below uniform on the held-out split ({metric}): overfit"
    else:
        chosen, why = "selected", f"selected weights ≥ uniform on the search and held-out splits ({metric})"
    counts = selected if chosen == "selected" else uniform
    weights = normalise(counts, K)
    found_by = {
        "method": METHOD, "selection_metric": metric, "tie_break": f"{other}, then the lowest member index",
        "combine": settings.rule, "references": None if references_name is None else str(references_name),
        "holdout_fraction": settings.holdout,
        "split": "answered dev examples ranked by sha256(id); the first holdout fraction is held out",
        "initialisation": "the empty bag; the first step adds the best single member (sorted initialisation, N=1)",
        "max_steps": max_steps, "patience": settings.patience, "stopped": stopped,
        "steps": [{"added": names[s["added"]], "search": s["search"]} for s in steps],
        "kept_prefix": sum(selected),
        "selected_counts": {n: c for n, c in zip(names, selected) if c},
        "selected_weights": [round(float(x), 6) for x in normalise(selected, K)],
        "chosen": chosen, "reason": why,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    scores = {split: {"examples": len(part), "uniform": runs[split]["uniform"][1],
                      "selected": runs[split]["selected"][1],
                      "members": {n: scored([int(j == k) for j in range(K)], part)[1] for k, n in enumerate(names)}}
              for split, part in (("search", search), ("holdout", held))}
    log.info("selected bag %s, weights %s (%s): %s", found_by["selected_counts"], np.round(weights, 4).tolist(),
             chosen, why)
    return SelectionResult([float(x) for x in weights], chosen, found_by, scores, counts=list(counts),
                           selected_counts=list(selected), predictions=dict(pool.predictions(selected)))
