"""Answers that need no model: the bar a trained reader has to clear on a data set.

Both baselines look only at the training answers and the dev contexts, never at the dev answers:

* ``most_frequent_answer``: the training set's most common answer text, for every question;
* ``random_span``: a span of the training answers' median length (in characters) at a random
  place in each context, the expected score over a few seeds.
"""

from __future__ import annotations

import collections
import random
import statistics
from collections.abc import Mapping, Sequence

from ..data import Example
from . import metrics


def most_frequent_answer(train: Sequence[Example], dev: Sequence[Example]) -> dict[str, str]:
    counts = collections.Counter(a.text for ex in train for a in ex.answers[:1])
    answer = counts.most_common(1)[0][0] if counts else ""
    return {ex.id: answer for ex in dev}


def random_span(train: Sequence[Example], dev: Sequence[Example], seed: int) -> dict[str, str]:
    lengths = [len(a.text) for ex in train for a in ex.answers[:1]]
    width = int(statistics.median(lengths)) if lengths else 1
    rng = random.Random(seed)
    out = {}
    for ex in dev:
        start = rng.randrange(0, max(len(ex.context) - width, 0) + 1)
        out[ex.id] = ex.context[start:start + width]
    return out


def trivial_baselines(train: Sequence[Example], dev: Sequence[Example],
                      references: Mapping[str, Sequence[str]], seeds: int = 5) -> dict[str, dict]:
    """``{name: {"em", "f1"}}`` of each baseline on ``dev`` (random span: mean over ``seeds``)."""
    frequent = metrics.evaluate(most_frequent_answer(train, dev), references)
    spans = [metrics.evaluate(random_span(train, dev, s), references) for s in range(seeds)]
    return {"most_frequent_answer": {"em": round(frequent.em, 3), "f1": round(frequent.f1, 3)},
            "random_span": {"em": round(statistics.mean(s.em for s in spans), 3),
                            "f1": round(statistics.mean(s.f1 for s in spans), 3)}}
