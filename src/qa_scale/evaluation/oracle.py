"""Oracle fidelity: how much of the gold answers survive tokenization, windowing and decoding.

Gold spans become one-hot start/end logits on every window that wholly contains them; the
shared decoder picks the answers back and the metrics score them. Anything below 100% is
lost to token boundaries or to windowing, never to the model: the ceiling of the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase

from ..data import Example
from ..data.windows import Template, WindowConfig, build_windows, token_span
from . import metrics
from .decode import DecodeConfig, decode


@dataclass
class OracleReport:
    """Oracle scores of one data set under one tokenizer and window setting."""

    examples: int
    windows: int
    em_any_reference: float
    """Percent of examples whose oracle answer, from some located reference, is an exact match."""
    em_first_reference: float
    """Percent exact match when only the first (training) reference is pushed through."""
    exact_text_any_reference: float
    """Percent whose oracle text equals a reference character for character (HW7 accuracy)."""
    f1_any_reference: float
    answers_longer_than_max_answer_len: int
    unreachable: list[dict] = field(default_factory=list)

    def to_dict(self, max_listed: int = 50) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "unreachable"}
        out["unreachable_count"] = len(self.unreachable)
        out["unreachable"] = self.unreachable[:max_listed]
        return out


def _why_unreachable(ex: Example, tok_offsets: np.ndarray, width: int) -> str:
    """Why no reference of ``ex`` can be produced exactly."""
    reasons = []
    for ans in ex.answers:
        first, last = token_span(tok_offsets, ans.start, ans.end)
        if first > last:
            reasons.append("no token covers the answer")
        elif tok_offsets[first, 0] != ans.start or tok_offsets[last, 1] != ans.end:
            reasons.append("not on token boundaries")
        elif last - first + 1 > width:
            reasons.append("longer than a window")
        else:
            reasons.append("cut by windowing")
    return "; ".join(dict.fromkeys(reasons)) or "no located reference"


def oracle_fidelity(examples: Sequence[Example], tok: PreTrainedTokenizerBase, config: WindowConfig,
                    references: dict[str, list[str]] | None = None, max_answer_len: int = 30) -> OracleReport:
    """Push gold spans through windows and the decoder and score what comes out.

    Args:
        examples: validated examples with located answers.
        tok: the fast tokenizer.
        config: window settings.
        references: reference texts to score against (default: the examples' answers); pass
            every reference of the file to score like the official evaluator.
        max_answer_len: the decoder's limit in real use; gold answers longer than it are
            counted, but the oracle decodes without that limit to measure windowing alone.
    """
    examples = [ex for ex in examples if ex.answers]
    references = references or {ex.id: [a.text for a in ex.answers] for ex in examples}
    n_refs = max(len(ex.answers) for ex in examples)
    decoder = DecodeConfig(n_best_size=1, max_answer_len=config.max_seq_len)
    best_em, best_f1, best_exact, first_em = (np.zeros(len(examples)) for _ in range(4))
    n_windows = 0
    for r in range(n_refs):
        # The r-th reference goes first so that build_windows labels it.
        rotated = [replace(ex, answers=(ex.answers[min(r, len(ex.answers) - 1)],)) for ex in examples]
        ws = build_windows(rotated, tok, config, labels=True)
        n_windows = len(ws)
        start = np.zeros(ws.input_ids.shape, np.float32)
        end = np.zeros(ws.input_ids.shape, np.float32)
        hit = ws.start_positions != ws.cls_index
        rows = np.flatnonzero(hit)
        start[rows, ws.start_positions[hit]] = 1.0
        end[rows, ws.end_positions[hit]] = 1.0
        found = np.zeros(len(examples), bool)
        found[ws.example_index[hit]] = True
        preds = decode(ws, start, end, rotated, decoder).predictions
        for i, ex in enumerate(examples):
            refs = references.get(ex.id) or [a.text for a in ex.answers]
            pred = preds[ex.id] if found[i] else ""
            em = metrics.exact_match(pred, refs)
            best_em[i] = max(best_em[i], em)
            best_f1[i] = max(best_f1[i], metrics.f1(pred, refs))
            best_exact[i] = max(best_exact[i], float(pred in refs))
            if r == 0:
                first_em[i] = em
    tpl = Template.of(tok)
    long_answers = 0
    unreachable = []
    enc = tok([ex.context for ex in examples], add_special_tokens=False, return_offsets_mapping=True)
    q_lens = [len(x) for x in tok([ex.question for ex in examples], add_special_tokens=False,
                                  truncation=True, max_length=config.max_question_len)["input_ids"]]
    for i, ex in enumerate(examples):
        offs = np.asarray(enc["offset_mapping"][i], np.int32).reshape(-1, 2)
        first, last = token_span(offs, ex.answers[0].start, ex.answers[0].end)
        long_answers += int(last - first + 1 > max_answer_len)
        if best_em[i] == 0:
            unreachable.append({"id": ex.id, "answers": [a.text for a in ex.answers],
                                "reason": _why_unreachable(ex, offs, config.context_len(q_lens[i], tpl.n_special))})
    pct = lambda a: float(100.0 * a.mean()) if len(a) else 0.0  # noqa: E731
    return OracleReport(len(examples), n_windows, pct(best_em), pct(first_em), pct(best_exact), pct(best_f1),
                        long_answers, unreachable)


def check_data(path, tok: PreTrainedTokenizerBase, config: WindowConfig, mode: str = "lenient", fmt: str = "auto",
               max_answer_len: int = 30) -> tuple[dict, str]:
    """``qa-scale check-data``: the validation report and the oracle ceiling of ``config`` on a file.

    Returns:
        (the JSON report, the human summary).
    """
    from .. import data

    ds = data.load(path, mode=mode, fmt=fmt)
    report = ds.report.to_dict()
    result = {"data": report, "windows": {**vars(config), "stride": config.stride()}}
    text = [f"{path}: {report['examples_kept']}/{report['questions_read']} examples kept, "
            f"{report['answers_repaired']} answers repaired, {report['answers_dropped']} dropped, "
            f"{report['examples_dropped']} examples dropped"]
    text += [f"  {k}: {v}" for k, v in report["problems"].items()]
    if not ds.has_answers:
        text.append("no answers in this file: oracle fidelity skipped")
        return result, "\n".join(text)
    refs = data.load_references(path, fmt=ds.report.format)
    fid = oracle_fidelity(ds.examples, tok, config, refs, max_answer_len=max_answer_len)
    result["oracle"] = fid.to_dict()
    text.append(f"oracle over {fid.windows} windows: EM {fid.em_any_reference:.3f} (any reference), "
                f"{fid.em_first_reference:.3f} (first), exact text {fid.exact_text_any_reference:.3f}, "
                f"F1 {fid.f1_any_reference:.3f}; {len(fid.unreachable)} unreachable; "
                f"{fid.answers_longer_than_max_answer_len} gold answers longer than {max_answer_len} tokens")
    text += [f"  unreachable {u['id']}: {u['reason']}: {u['answers'][0]!r}" for u in fid.unreachable[:20]]
    return result, "\n".join(text)
