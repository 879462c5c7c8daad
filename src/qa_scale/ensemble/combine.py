"""Several logits stores → one (weighted) mean of start/end logits → the shared decoder.

Members are averaged only when their windows are identical: the fingerprints (tokenizer
identity, window settings, example ids, a hash of every window's input ids) and the examples'
text must agree, else :class:`EnsembleError` names the first difference. The mean is streamed:
one float32 accumulator per logits array and one block of one member at a time, so memory
stays near one store's logits however many members there are. Weights are normalised to sum
to 1; a member of weight 0 is not read. What is averaged is the combination rule's (``rules.py``):
the raw logits (``mean_logits``, the default), or each window's log-softmax (``mean_log_softmax``,
members whose logit scales differ then count alike), or any registered rule.

Decoding uses the first member's windows and examples (all members have the same) and, unless
told otherwise, its decode settings: an ensemble of one store reproduces that store's
predictions exactly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.windows import fingerprint_difference
from ..evaluation.decode import DecodeConfig, Decoded, decode
from ..inference.logits_store import LOGITS, Store, nonfinite_windows
from . import rules
from .errors import EnsembleError

log = logging.getLogger(__name__)


def check_compatible(stores: Sequence[Store]) -> None:
    """Raise :class:`EnsembleError` naming the first store and difference that breaks the ensemble."""
    if not stores:
        raise EnsembleError("no stores to ensemble")
    first = stores[0]
    for other in stores[1:]:
        diff = fingerprint_difference(first.fingerprint, other.fingerprint)
        if diff is None and first.meta.get("examples_sha256") != other.meta.get("examples_sha256"):
            diff = "the examples' questions or contexts differ (same ids and window tokens)"
        if diff is None and first.shape != other.shape:
            diff = f"logits shape differs: {first.shape} vs {other.shape}"
        if diff is not None:
            raise EnsembleError(f"{other.path} cannot be averaged with {first.path}: {diff}")


def parse_weights(text: str, n: int) -> list[float]:
    """``"0.5,0.3,0.2"`` → floats, one per store: finite, ≥ 0 and not all 0 (see :func:`normalise`)."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise EnsembleError(f"--weights must be comma-separated numbers, got {text!r}") from None
    if len(weights) != n:
        raise EnsembleError(f"--weights: {len(weights)} weights for {n} stores")
    check_weights(weights, "--weights")
    return weights


def check_weights(weights: Sequence[float], where: str) -> None:
    """Refuse weights that make no mean: a non-finite or negative one (named), or all of them 0."""
    for k, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float, np.floating, np.integer)):
            raise EnsembleError(f"{where}: weights must be numbers; weight {k + 1} is {w!r}")
        if not math.isfinite(w) or w < 0:
            raise EnsembleError(f"{where}: weights must be finite numbers ≥ 0; weight {k + 1} is {w!r}")
    if not any(w > 0 for w in weights):
        raise EnsembleError(f"{where}: weights must be ≥ 0 and not all 0, got {list(weights)}")


def normalise(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Weights on the simplex (uniform when None); negative, non-finite or all-zero weights are refused.

    The weights are divided by the largest first, so no sum overflows (``1e308,1e308`` is ``0.5,0.5``)
    and none underflows to nothing (``5e-324,5e-324`` is ``0.5,0.5`` too); the sum is exact (``fsum``).
    """
    if weights is None:
        return np.full(n, 1.0 / n)
    weights = list(np.atleast_1d(np.asarray(weights, dtype=object)))
    if len(weights) != n:
        raise EnsembleError(f"weights must be one per member: {len(weights)} weights for {n} members")
    check_weights(weights, "weights")
    w = np.asarray(weights, np.float64)
    w = w / w.max()  # every value now in [0, 1], the largest exactly 1
    return w / math.fsum(w)


def add_member(acc: np.ndarray, block: np.ndarray, weight: np.float32, rule: rules.CombineRule) -> None:
    """``acc += weight × rule(block)`` in float32, in place (``block``, float32, may be overwritten).

    The one step of every weighted mean: streamed stores (:func:`mean_logits`) and logits held in
    memory (:func:`combine_arrays`, the service) both add their members with it.
    """
    t = rule.transform(block)
    t *= weight
    acc += t


def _accumulate(acc: np.ndarray, tmp: np.ndarray, store: Store, name: str, weight: np.float32,
                rule: rules.CombineRule) -> int:
    """``acc += weight × rule(member)``, ``len(tmp)`` rows at a time (the member's read buffer is
    freed on return). Returns the number of windows with NaN or inf inside their tokens."""
    lengths, bad = store.windows.lengths, 0
    for rows, block in store.iter_rows(name, len(tmp)):
        bad += len(nonfinite_windows(block, lengths[rows]))
        t = tmp[: len(block)]
        np.copyto(t, block)  # fp16 → fp32 without a new array
        add_member(acc[rows], t, weight, rule)
    return bad


def mean_logits(stores: Sequence[Store], weights: Sequence[float] | None = None, rule: str = rules.DEFAULT,
                chunk_rows: int = 256, out: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean start and end logits ``[W, L]`` float32, streamed member by member.

    Args:
        stores: compatible stores (see :func:`check_compatible`; checked here too).
        weights: one per store, normalised to sum to 1; default uniform.
        rule: the combination rule's name (``rules.RULES``): what of each member is averaged.
        chunk_rows: rows read at a time from a member (the only per-member memory).
        out: two float32 ``[W, L]`` arrays to accumulate into (e.g. ``.npy`` files opened with
            ``np.lib.format.open_memmap``, so that the mean of a large set never sits in memory
            whole); default: new arrays.

    Returns:
        (start, end); padding positions stay −inf.
    """
    check_compatible(stores)
    combine = rules.get(rule)
    w = normalise(weights, len(stores))
    W, L = stores[0].shape
    targets = out
    if targets is not None and any(a.shape != (W, L) or a.dtype != np.float32 for a in targets):
        raise ValueError(f"out must be two float32 arrays of shape {(W, L)}")
    out = []
    for n, name in enumerate(LOGITS):
        acc = np.zeros((W, L), np.float32) if targets is None else targets[n]
        if targets is not None:
            acc[...] = 0
        tmp = np.empty((min(chunk_rows, W), L), np.float32)
        for k, (store, wk) in enumerate(zip(stores, w)):
            if wk > 0:  # 0 × −inf padding would be NaN; a zero weight means "not a member"
                bad = _accumulate(acc, tmp, store, name, np.float32(wk), combine)
                if bad:  # its mean would decode to empty or arbitrary answers without a word
                    raise EnsembleError(f"{store.path} (member {k + 1}): non-finite {name} (NaN or inf) on {bad} "
                                        f"of {store.shape[0]} windows; predict that member again")
        out.append(acc)
    return out[0], out[1]


def combine_arrays(members: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float] | None = None,
                   rule: str = rules.DEFAULT) -> tuple[np.ndarray, np.ndarray]:
    """The weighted mean of members' (start, end) logits held in memory, by the rule of :func:`mean_logits`.

    Every member's arrays must be ``[W, L]`` over the same windows; the arithmetic is
    :func:`mean_logits`'s, member after member in the given order, so the same logits give
    the same mean to the last bit whether they come from stores or from models.
    """
    combine = rules.get(rule)
    w = normalise(weights, len(members))
    out = []
    for n in range(2):
        acc = np.zeros(members[0][n].shape, np.float32)
        for member, wk in zip(members, w):
            if wk > 0:
                add_member(acc, np.array(member[n], np.float32), np.float32(wk), combine)
        out.append(acc)
    return out[0], out[1]


@dataclass
class EnsembleResult:
    """What :func:`ensemble` decoded, and from what."""

    decoded: Decoded
    weights: list[float]
    stores: list[Store]
    decode_config: DecodeConfig
    rule: str = rules.DEFAULT

    @property
    def example_ids(self) -> list[str]:
        return self.stores[0].windows.example_ids


def ensemble(stores: Sequence[Store], weights: Sequence[float] | None = None, rule: str = rules.DEFAULT,
             decode_config: DecodeConfig | None = None, nbest: bool = True, chunk_rows: int = 256) -> EnsembleResult:
    """Mean logits of the stores, decoded with the shared decoder.

    Args:
        stores: compatible logits stores.
        weights: one per store (normalised); default uniform.
        rule: the combination rule (``rules.RULES``); default: the mean of the raw logits.
        decode_config: decoder settings; default: the first store's.
        nbest: also build n-best lists.
        chunk_rows: rows per streamed block.
    """
    stores = list(stores)
    start, end = mean_logits(stores, weights, rule, chunk_rows)
    first = stores[0]
    config = decode_config or first.decode_config()
    decoded = decode(first.windows, start, end, first.examples, config, nbest=nbest)
    return EnsembleResult(decoded, normalise(weights, len(stores)).tolist(), stores, config, rule)
