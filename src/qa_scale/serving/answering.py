"""Paragraphs and questions → answers with spans, scores, probabilities and n-best lists.

The path is the one of ``qa-scale predict`` and ``qa-scale ensemble``, stage for stage: examples
→ :func:`~qa_scale.data.windows.build_windows` (the panel's settings, i.e. the training config's)
→ each reader's fp32 logits (:func:`~qa_scale.inference.forward.predict_logits`) → their weighted
mean by the ensembler's own arithmetic (:func:`~qa_scale.ensemble.combine.combine_arrays`) → the
shared decoder. Questions of several requests can be answered in one call: their windows share
forward passes, and each example is decoded from its own windows only.
"""

from __future__ import annotations

from typing import Sequence

from ..data import Example
from ..data.windows import build_windows
from ..ensemble.combine import combine_arrays
from ..evaluation.decode import Decoded, balance_span, decode
from ..inference.forward import predict_logits
from ..runtime.distributed import single
from .query import Query, check_query, check_text_of
from .readers import Panel

__all__ = ["Query", "answer", "answer_of", "check_query", "check_text_of", "logits_of"]


def logits_of(panel: Panel, examples: Sequence[Example]):
    """(windows, mean start logits, mean end logits) of the panel's readers on ``examples``."""
    ws = build_windows(examples, panel.tokenizer, panel.windows, labels=False)
    d = single(panel.device)
    members = [predict_logits(r.model, ws, panel.batch_size, d) for r in panel.readers]
    start, end = combine_arrays(members, panel.weights, panel.rule)
    return ws, start, end


def _entry(item: dict) -> dict:
    return {"text": item["text"], "start": item["start"], "end": item["start"] + len(item["text"]),
            "score": item["score"], "probability": item["probability"]}


def answer_of(decoded: Decoded, n: int, example: Example, panel: Panel, nbest: bool) -> dict:
    """The answer to example ``n`` of ``decoded``: text, character span [start, end), score, probability."""
    text = decoded.predictions[example.id]
    a, b = (int(x) for x in decoded.best_span[n])
    found = decoded.nbest[example.id]
    # The probability is the n-best softmax's share of the chosen span (the list always holds it).
    prob = next((c["probability"] for c in found if c["start"] == a and len(c["text"]) == b - a), None)
    out = {"question": example.question, "answer": text, "start": None, "end": None, "score": None,
           "probability": None}
    if text:
        if panel.decoding.balance_marks:
            a, b = balance_span(example.context, a, b)
        out.update(start=a, end=b, score=float(decoded.best_score[n]), probability=prob)
    if nbest:
        out["nbest"] = [_entry(c) for c in found]
    return out


def answer(panel: Panel, queries: Sequence[Query], nbest: bool = True) -> list[dict]:
    """Answer every query, sharing the forward passes of all their windows.

    Returns:
        One dict per query, in order: ``question``, ``answer`` (``""`` when no span is valid or
        the null answer wins), ``start``/``end`` (character offsets into the context, None
        without an answer), ``score`` (start + end logit of the mean), ``probability`` (softmax
        over the n-best list) and, with ``nbest``, ``nbest`` (text, start, end, score,
        probability, best first).
    """
    if not queries:
        return []
    for n, q in enumerate(queries):
        check_text_of(q, f"query {n + 1}")
    examples = [Example(f"q{n}", q.question, q.context) for n, q in enumerate(queries)]
    ws, start, end = logits_of(panel, examples)
    decoded = decode(ws, start, end, examples, panel.decoding, nbest=True)
    return [answer_of(decoded, n, ex, panel, nbest) for n, ex in enumerate(examples)]

