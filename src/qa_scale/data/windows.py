"""Examples → sliding windows with offsets, training labels and a fingerprint.

A window is ``[prefix] question [middle] context[s:s+k] [suffix]`` where the special tokens
come from the tokenizer's own pair template. Contexts are tokenized once (not once per
question and per window, as the fast tokenizer's overflow mode does) and windows are sliced
from those tokens: the result is token-for-token what ``tokenizer(q, c, truncation=
"only_second", stride=..., return_overflowing_tokens=True)`` gives, but it also supports
HW7's fixed-size paragraph windows (``max_context_len``), which the overflow mode cannot.

Stride: ``doc_overlap`` is the number of context tokens two consecutive windows share (what
Hugging Face calls ``stride``); ``doc_step`` is the distance between the starts of
consecutive windows (what the HW7 code calls ``doc_stride``). Give one of them.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np

from ..common.settings import check_fields, option
from .examples import Example
from .tokenization import TokenizerError, tokenizer_identity

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Strategy = Literal["all", "random_answer", "answer_and_negative"]
STRATEGIES = ("all", "random_answer", "answer_and_negative")
MATCH_TYPE = 2  # token type of a context token that also occurs in the question (mark_matches)
STRIDE_MEANING = {
    "doc_overlap": "context tokens shared by consecutive windows",
    "doc_step": "context tokens between the starts of consecutive windows",
}


@dataclass(frozen=True)
class WindowConfig:
    """How examples are cut into model inputs."""

    max_seq_len: int = option(384, "tokens per window, special tokens included", ge=4)
    max_question_len: int = option(64, "question tokens kept; longer questions are truncated", ge=1)
    doc_overlap: int | None = option(
        None, "context tokens shared by consecutive windows (Hugging Face 'stride'); default: 128 when "
              "--doc-step is not given either", ge=0)
    doc_step: int | None = option(
        None, "context tokens between the starts of consecutive windows (HW7 'doc_stride'); "
              "give this or --doc-overlap, not both", ge=1)
    max_context_len: int | None = option(
        None, "context tokens per window (HW7 'max_paragraph_len'); default: all that fit", ge=1)
    mark_matches: bool = option(
        False, "context tokens that also occur in the question get token type 2 (an exact-match feature, as in "
               "DrQA); training gives the model that third token type, starting as a copy of the context's")

    def __post_init__(self) -> None:
        check_fields(self)
        if self.doc_overlap is not None and self.doc_step is not None:
            raise ValueError("give doc_overlap (tokens shared) or doc_step (tokens between starts), not both")
        if self.doc_overlap is None and self.doc_step is None:
            object.__setattr__(self, "doc_overlap", 128)

    @classmethod
    def layered(cls, *layers: Mapping[str, Any]) -> "WindowConfig":
        """Settings from ``layers`` of fields, each over the ones before (e.g. the training config's,
        then the command line's). A layer that names a stride (``doc_overlap`` or ``doc_step``)
        replaces the stride of the layers below it, whichever of the two they named."""
        merged: dict[str, Any] = {}
        for layer in layers:
            if STRIDE_MEANING.keys() & layer.keys():
                for key in STRIDE_MEANING:
                    merged.pop(key, None)
            merged.update(layer)
        return cls(**merged)

    def context_len(self, question_len: int, n_special: int) -> int:
        """Context tokens in a window whose question has ``question_len`` tokens."""
        room = self.max_seq_len - question_len - n_special
        return room if self.max_context_len is None else min(room, self.max_context_len)

    def check(self, n_special: int) -> None:
        """Reject settings that cannot make windows, given the template's special tokens."""
        shortest = self.context_len(self.max_question_len, n_special)
        if shortest < 1:
            raise ValueError(
                f"max_seq_len {self.max_seq_len} leaves no room for context after a "
                f"{self.max_question_len}-token question and {n_special} special tokens")
        if self.doc_overlap is not None and self.doc_overlap >= shortest:
            raise ValueError(
                f"doc_overlap {self.doc_overlap} must be smaller than the {shortest} context tokens "
                "of a window with the longest question (it is an overlap, not a step)")
        if self.doc_step is not None and self.doc_step > shortest:
            raise ValueError(
                f"doc_step {self.doc_step} exceeds the {shortest} context tokens of a window with the "
                "longest question: context between windows would never be seen")

    def stride(self) -> dict:
        """The stride with its meaning, as recorded in fingerprints."""
        key = "doc_overlap" if self.doc_overlap is not None else "doc_step"
        return {key: getattr(self, key), "meaning": STRIDE_MEANING[key]}


@dataclass(frozen=True)
class Template:
    """Special tokens around question and context, read off the tokenizer's pair encoding."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    question_type: int
    context_type: int
    cls_index: int
    pad_id: int

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    @classmethod
    def of(cls, tok: PreTrainedTokenizerBase) -> "Template":
        enc = tok("a", "b", return_token_type_ids=True)
        seq = enc.sequence_ids()
        ids, types = enc["input_ids"], enc["token_type_ids"]
        q = [i for i, s in enumerate(seq) if s == 0]
        c = [i for i, s in enumerate(seq) if s == 1]
        if not q or not c:
            raise TokenizerError(f"{type(tok).__name__} does not encode text pairs")
        if tok.cls_token_id is None or tok.cls_token_id not in ids[: q[0]]:
            raise TokenizerError(f"{type(tok).__name__} puts no CLS token before the question; "
                                 "windows need one to label 'no answer in this window'")
        return cls(
            prefix=tuple(ids[: q[0]]), middle=tuple(ids[q[-1] + 1 : c[0]]), suffix=tuple(ids[c[-1] + 1 :]),
            question_type=types[q[0]], context_type=types[c[0]],
            cls_index=ids.index(tok.cls_token_id),  # found, not assumed to be 0
            pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        )


@dataclass
class WindowSet:
    """All windows of a data set, padded to ``max_seq_len``, in example order."""

    config: WindowConfig
    example_ids: list[str]
    example_index: np.ndarray  # [W] index into example_ids
    window_index: np.ndarray  # [W] k-th window of its example
    input_ids: np.ndarray  # [W, L] int32, padded with the pad id
    token_type_ids: np.ndarray  # [W, L] int8
    lengths: np.ndarray  # [W] real tokens per window
    offsets: np.ndarray  # [W, L, 2] int32 character offsets into the context; -1 outside the context
    cls_index: np.ndarray  # [W] position of the CLS token
    start_positions: np.ndarray | None = None  # [W] training labels (CLS when the answer is not inside)
    end_positions: np.ndarray | None = None
    strategy: str = "all"
    tokenizer: dict = field(default_factory=dict)
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.example_index)

    @functools.cached_property
    def context_mask(self) -> np.ndarray:
        """[W, L] True where the token belongs to the context."""
        return self.offsets[:, :, 0] >= 0

    def attention_mask(self) -> np.ndarray:
        return (np.arange(self.input_ids.shape[1])[None, :] < self.lengths[:, None]).astype(np.int8)

    def window_hashes(self) -> list[str]:
        """Per-window hash of the real input ids (what must agree across ensemble members)."""
        return [hashlib.sha256(self.input_ids[w, : self.lengths[w]].tobytes()).hexdigest()[:16]
                for w in range(len(self))]

    def fingerprint(self) -> dict:
        """Everything two window sets must share for their logits to be averaged."""
        hashes = self.window_hashes()
        return {
            "tokenizer": self.tokenizer,
            "max_seq_len": self.config.max_seq_len,
            "max_question_len": self.config.max_question_len,
            "max_context_len": self.config.max_context_len,
            "doc_stride": self.config.stride(),
            "strategy": self.strategy,
            "num_examples": len(self.example_ids),
            "example_ids": list(self.example_ids),
            "num_windows": len(self),
            "window_hashes": hashes,
            "windows_sha256": hashlib.sha256("".join(hashes).encode()).hexdigest(),
        }


def fingerprint_difference(a: dict, b: dict) -> str | None:
    """The first difference between two fingerprints, in words, or None when they agree."""
    order = ["tokenizer", "max_seq_len", "max_question_len", "max_context_len", "doc_stride", "strategy",
             "num_examples", "example_ids", "num_windows", "window_hashes"]
    for key in order + sorted((a.keys() | b.keys()) - set(order) - {"windows_sha256"}):
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        if key == "tokenizer" and isinstance(va, dict) and isinstance(vb, dict):
            sub = next(k for k in sorted(va.keys() | vb.keys()) if va.get(k) != vb.get(k))
            return f"tokenizer differs in {sub}: {_short(va.get(sub))} vs {_short(vb.get(sub))}"
        if key in ("example_ids", "window_hashes") and isinstance(va, list) and isinstance(vb, list):
            i = next((i for i, (x, y) in enumerate(zip(va, vb)) if x != y), min(len(va), len(vb)))
            what = "example id" if key == "example_ids" else "window input ids"
            return f"{what} differ first at position {i}: {_short(va[i] if i < len(va) else None)} vs {_short(vb[i] if i < len(vb) else None)}"
        return f"{key} differs: {_short(va)} vs {_short(vb)}"
    return None


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def token_span(offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """Context tokens covering characters [start, end): (first, last), first > last if none."""
    first = int(np.searchsorted(offsets[:, 1], start, side="right"))
    last = int(np.searchsorted(offsets[:, 0], end, side="left")) - 1
    return first, last


def _window_starts(n: int, width: int, step: int) -> list[int]:
    starts = [0]
    while starts[-1] + width < n:
        starts.append(starts[-1] + step)
    return starts


def _negative_start(n: int, width: int, first: int, last: int, rng: np.random.Generator) -> list[int]:
    """One window start, uniform over those whose window does not hold all of ``first..last``
    (none when every placement holds it, e.g. a context shorter than the window)."""
    top = max(n - width, 0)
    holding = range(max(last - width + 1, 0), min(first, top) + 1)  # starts whose window holds the answer
    free = top + 1 - len(holding)
    if free <= 0:
        return []
    k = int(rng.integers(free))  # the k-th start outside ``holding``
    return [k if k < holding.start else k + len(holding)]


def build_windows(examples: Sequence[Example], tok: PreTrainedTokenizerBase, config: WindowConfig,
                  strategy: Strategy = "all", seed: int = 0, labels: bool | None = None) -> WindowSet:
    """Cut examples into windows.

    Args:
        examples: validated examples, in data set order.
        tok: a fast tokenizer.
        config: window sizes and stride.
        strategy: ``"all"`` keeps every window; ``"random_answer"`` keeps one window per
            question, placed so that its (first) answer sits at a random position inside it
            (the HW7 strong-baseline trick), drawn from ``seed``; ``"answer_and_negative"`` adds
            one window at a random place that does not hold the whole answer (labelled CLS), when
            the context has room for one, so the reader also learns which windows hold no answer.
        seed: seed of the random placement.
        labels: compute start/end labels from the first answer; default: when examples have answers.

    Returns:
        The window set; label positions point at the CLS token when the answer is not wholly
        inside a window.
    """
    tpl = Template.of(tok)
    config.check(tpl.n_special)
    if labels is None:
        labels = any(ex.answers for ex in examples)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if strategy != "all" and not labels:
        raise ValueError(f"strategy {strategy!r} needs examples with answers")
    questions = tok([ex.question for ex in examples], add_special_tokens=False, truncation=True,
                    max_length=config.max_question_len)["input_ids"]
    unique = {c: i for i, c in enumerate(dict.fromkeys(ex.context for ex in examples))}
    enc = tok(list(unique), add_special_tokens=False, return_offsets_mapping=True)
    ctx_ids = [np.asarray(x, dtype=np.int32) for x in enc["input_ids"]]
    ctx_off = [np.asarray(x, dtype=np.int32).reshape(-1, 2) for x in enc["offset_mapping"]]
    rng = np.random.default_rng(seed)

    plan = []  # (example, question ids, context index, window start, width, label start, label end)
    for e, ex in enumerate(examples):
        q, ci = questions[e], unique[ex.context]
        n, width = len(ctx_ids[ci]), config.context_len(len(questions[e]), tpl.n_special)
        first = last = -1
        if labels and ex.answers:
            first, last = token_span(ctx_off[ci], ex.answers[0].start, ex.answers[0].end)
        if strategy == "all":
            step = config.doc_step or width - config.doc_overlap
            starts = _window_starts(n, width, step)
        else:
            hi = max(min(first, n - width), 0)
            lo = min(max(last - width + 1, 0), hi)
            starts = [int(rng.integers(lo, hi + 1))]
            if strategy == "answer_and_negative":
                starts += _negative_start(n, width, first, last, rng)
        plan.extend((e, q, ci, s, width, first, last) for s in starts)

    W, L = len(plan), config.max_seq_len
    out = WindowSet(
        config=config, example_ids=[ex.id for ex in examples],
        example_index=np.empty(W, np.int32), window_index=np.empty(W, np.int32),
        input_ids=np.full((W, L), tpl.pad_id, np.int32), token_type_ids=np.zeros((W, L), np.int8),
        lengths=np.empty(W, np.int32), offsets=np.full((W, L, 2), -1, np.int32),
        cls_index=np.empty(W, np.int32), strategy=strategy, tokenizer=tokenizer_identity(tok), pad_id=tpl.pad_id,
    )
    if labels:
        out.start_positions = np.empty(W, np.int64)
        out.end_positions = np.empty(W, np.int64)
    pre, mid, suf = np.asarray(tpl.prefix, np.int32), np.asarray(tpl.middle, np.int32), np.asarray(tpl.suffix, np.int32)
    prev_e, k = -1, 0
    for w, (e, q, ci, s, width, first, last) in enumerate(plan):
        k = k + 1 if e == prev_e else 0
        prev_e = e
        ids, row, trow = ctx_ids[ci][s : s + width], out.input_ids[w], out.token_type_ids[w]
        head = np.concatenate([pre, np.asarray(q, np.int32), mid])
        c0, c1 = len(head), len(head) + len(ids)
        row[:c0], row[c0:c1], row[c1 : c1 + len(suf)] = head, ids, suf
        trow[len(pre) : c0] = tpl.question_type
        trow[c0:] = tpl.context_type
        trow[c1 + len(suf) :] = 0
        if config.mark_matches:
            trow[c0:c1][np.isin(ids, q)] = MATCH_TYPE
        out.offsets[w, c0:c1] = ctx_off[ci][s : s + width]
        out.lengths[w], out.example_index[w], out.window_index[w] = c1 + len(suf), e, k
        out.cls_index[w] = tpl.cls_index
        if labels:
            inside = 0 <= first <= last and s <= first and last < s + len(ids)
            out.start_positions[w] = c0 + first - s if inside else out.cls_index[w]
            out.end_positions[w] = c0 + last - s if inside else out.cls_index[w]
    return out
