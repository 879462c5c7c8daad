"""Answers that need no model: the bar a trained reader has to clear on a data set.

Both baselines look only at the training answers and the dev contexts, never at the dev answers:

* ``most_frequent_answer``: the training set's most common answer text, for every question;
* ``random_span``: a span of the training answers' median length (in characters) at a random
  place in each context, the expected score over a few seeds.

and one lexical baseline, which reads the question but learns nothing:

* ``lexical_overlap``: the question's content characters (CJK letters, Latin letters and digits,
  minus question words and particles such as 什么/什麼/哪/谁/誰/幾/的/是) are looked for in every
  ``window``-character stretch of the context; the stretch holding the most distinct ones wins
  (the first on ties). Its matched region runs from its first to its last matched character. The
  answer is the text right next to that region, on the side where the question's question word
  stands: "X 是什么" (question word in the second half of the question) → the text after the
  region; "谁发明了 X" (first half) → the text before it. It runs up to the training answers'
  median length and stops at punctuation. With no content character matched at all, the context's
  first characters are the answer.
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


# Question words and particles in simplified and traditional script: not content to look for.
QUESTION_WORDS = ("什么", "什麼", "哪里", "哪裡", "哪儿", "哪些", "哪个", "哪個", "哪一", "哪", "谁", "誰", "几", "幾",
                  "多少", "多久", "多大", "多长", "多長", "何时", "何時", "何", "怎么", "怎麼", "怎样", "怎樣", "为何",
                  "為何", "吗", "嗎", "呢")
STOP_CHARS = frozenset("的是了在为為有和与與及之其于於被把从從由以也就而并並又或该該此这這那个個一")
PUNCTUATION = frozenset("，。、；：？！,.;:?!（）()「」『』《》〈〉“”\"'‘’【】[] \t\n")


def _is_content(char: str) -> bool:
    return char.isalnum() and char not in STOP_CHARS


def question_terms(question: str) -> frozenset[str]:
    """The content characters of a question: its letters and digits, less question words and particles."""
    for word in QUESTION_WORDS:
        question = question.replace(word, " ")
    return frozenset(c for c in question if _is_content(c))


def question_word_side(question: str) -> str:
    """``"after"`` when the question word stands in the second half of the question (or is absent),
    else ``"before"``: on which side of the matched words the answer is looked for."""
    positions = [question.find(w) for w in QUESTION_WORDS if w in question]
    if not positions:
        return "after"
    return "after" if min(positions) >= len(question.rstrip("？?。 ")) / 2 else "before"


def best_window(context: str, terms: frozenset[str], window: int) -> tuple[int, int, int]:
    """``(score, start, end)`` of the best ``window``-character stretch: the most distinct terms.

    ``start``/``end`` bound its matched region (first to last matched character, end exclusive);
    ``(0, 0, 0)`` when nothing matches. One pass, the counts updated as the stretch slides.
    """
    counts: dict[str, int] = {}
    best = (0, 0, 0)
    for right, char in enumerate(context):
        if char in terms:
            counts[char] = counts.get(char, 0) + 1
        left = right - window
        if left >= 0 and context[left] in terms:
            counts[context[left]] -= 1
            if not counts[context[left]]:
                del counts[context[left]]
        if len(counts) > best[0]:
            lo = max(left + 1, 0)
            hits = [i for i in range(lo, right + 1) if context[i] in terms]
            best = (len(counts), hits[0], hits[-1] + 1)
    return best


def span_next_to(context: str, start: int, end: int, side: str, width: int) -> str:
    """At most ``width`` characters beside ``context[start:end]``, stopping at punctuation (and
    skipping punctuation that directly touches the region)."""
    if side == "after":
        i = end
        while i < len(context) and context[i] in PUNCTUATION:
            i += 1
        j = i
        while j < len(context) and j - i < width and context[j] not in PUNCTUATION:
            j += 1
        return context[i:j]
    j = start
    while j > 0 and context[j - 1] in PUNCTUATION:
        j -= 1
    i = j
    while i > 0 and j - i < width and context[i - 1] not in PUNCTUATION:
        i -= 1
    return context[i:j]


def lexical_overlap(train: Sequence[Example], dev: Sequence[Example], window: int = 20) -> dict[str, str]:
    """The lexical baseline (see the module's docstring): an answer per dev question."""
    lengths = [len(a.text) for ex in train for a in ex.answers[:1]]
    width = int(statistics.median(lengths)) if lengths else 1
    out = {}
    for ex in dev:
        score, start, end = best_window(ex.context, question_terms(ex.question), window)
        if not score:
            out[ex.id] = ex.context[:width]
            continue
        out[ex.id] = span_next_to(ex.context, start, end, question_word_side(ex.question), width)
    return out


def trivial_baselines(train: Sequence[Example], dev: Sequence[Example],
                      references: Mapping[str, Sequence[str]], seeds: int = 5) -> dict[str, dict]:
    """``{name: {"em", "f1"}}`` of each baseline on ``dev`` (random span: mean over ``seeds``)."""
    frequent = metrics.evaluate(most_frequent_answer(train, dev), references)
    spans = [metrics.evaluate(random_span(train, dev, s), references) for s in range(seeds)]
    return {"most_frequent_answer": {"em": round(frequent.em, 3), "f1": round(frequent.f1, 3)},
            "random_span": {"em": round(statistics.mean(s.em for s in spans), 3),
                            "f1": round(statistics.mean(s.f1 for s in spans), 3)}}


def all_baselines(train: Sequence[Example], dev: Sequence[Example], references: Mapping[str, Sequence[str]],
                  seeds: int = 5, window: int = 20) -> dict[str, dict]:
    """The trivial baselines and the lexical one: ``{name: {"em", "f1"}}`` on ``dev``."""
    lexical = metrics.evaluate(lexical_overlap(train, dev, window), references)
    return {**trivial_baselines(train, dev, references, seeds),
            "lexical_overlap": {"em": round(lexical.em, 3), "f1": round(lexical.f1, 3)}}
