"""The registry of combination rules: how each member's logits enter the weighted mean.

A rule maps one member's block of window logits (``[rows, max_seq_len]`` float32, −inf on
padding) to the values that are averaged; the weighted mean of those is what the decoder reads.
Because every rule is "transform, then weighted mean", the weight search's convex surrogate
works for all of them. Ensemble recipes name their rule (``combine:``); ``--combine`` picks one
on the command line. Adding a rule is one :func:`register` call (here or in your own module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..common.registry import Registry


@dataclass(frozen=True)
class CombineRule:
    """One way of averaging members.

    Attributes:
        name: what recipes and ``--combine`` call it.
        description: one line for ``--help`` and the README.
        transform: a member's ``[rows, L]`` float32 block → the ``[rows, L]`` float32 values that
            are averaged; it must keep −inf where the block is −inf (padding).
    """

    name: str
    description: str
    transform: Callable[[np.ndarray], np.ndarray]


RULES: Registry[CombineRule] = Registry("combination rule")
DEFAULT = "mean_logits"


def register(rule: CombineRule) -> CombineRule:
    """Add ``rule`` (its name must be new)."""
    return RULES.register(rule.name, rule)


def get(name: str) -> CombineRule:
    """The registered rule called ``name``."""
    return RULES.get(name)


def _log_softmax(block: np.ndarray) -> np.ndarray:
    from scipy.special import log_softmax

    return log_softmax(block, axis=1).astype(np.float32, copy=False)


register(CombineRule("mean_logits", "weighted mean of the raw start/end logits", lambda block: block))
register(CombineRule(
    "mean_log_softmax",
    "weighted mean of each window's start/end log-softmax (members whose logit scales differ count alike)",
    _log_softmax))
