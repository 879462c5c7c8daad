"""``qa-scale check-data``: a data file's validation report and the oracle ceiling of a window setting.

A workflow over two stages: :mod:`qa_scale.data` reads and validates the file, and
:func:`qa_scale.evaluation.oracle.oracle_fidelity` measures what the windows let a perfect reader reach,
at the decoder's answer-length limit and without one. The report also gives the lengths those limits
are about (answers and questions, in tokens of the tokenizer) and what a recipe's ``auto`` would
choose on this file (:func:`qa_scale.training.recipe.auto_max_answer_len`,
:func:`~qa_scale.training.recipe.auto_max_question_len`; training chooses from its training file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..common.settings import option
from ..data.windows import WindowConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class CheckWindows(WindowConfig):
    """The window settings check-data measures: ``max_question_len`` may be ``auto``, as in a recipe
    (``training.recipe.WindowSection``; not imported here, so that building the CLI stays light)."""

    max_question_len: int | Literal["auto"] = option(
        64, "question tokens kept; longer questions are truncated. auto: what a recipe's "
            "data.windows.max_question_len: auto would choose from this file's questions", ge=1)


def _lengths_entry(choice: dict) -> dict:
    """The JSON of one length distribution: its percentiles and what ``auto`` would choose."""
    return {"unit": "tokens", **choice["lengths"],
            "auto": {k: v for k, v in choice.items() if k != "lengths"}}


def _lengths_text(what: str, key: str, choice: dict) -> str:
    n = choice["lengths"]
    shown = ", ".join(f"{k} {v}" for k, v in n.items() if k != "count")
    return (f"  {what} in tokens ({n['count']}): {shown}; {key}: auto would choose {choice['value']} "
            f"(the {choice['percentile']:g}th percentile {choice['percentile_length']}, at least {choice['floor']}, "
            f"at most {choice['cap']}; covers {choice['covered_percent']:.2f}%)")


def check_data(path: str | os.PathLike, tok: PreTrainedTokenizerBase, config: WindowConfig, mode: str = "lenient",
               fmt: str = "auto", max_answer_len: int | Literal["auto"] = 30) -> tuple[dict, str]:
    """``qa-scale check-data``: the validation report and the oracle ceiling of ``config`` on a file.

    Args:
        config: the window settings; a ``max_question_len`` of ``"auto"`` (:class:`CheckWindows`) becomes
            what training would choose on this file.
        max_answer_len: the decoder's limit the ceiling is measured at, or ``"auto"``: what
            ``decode.max_answer_len: auto`` chooses from this file's answers.

    Returns:
        (the JSON report, the human summary).
    """
    from .. import data
    from ..data.windows import Template
    from ..evaluation.oracle import answer_token_lengths, oracle_fidelity, question_token_lengths
    from ..training.auto_lengths import auto_max_answer_len, auto_max_question_len

    ds = data.load(path, mode=mode, fmt=fmt)
    report = ds.report.to_dict()
    n_special = Template.of(tok).n_special
    q_lengths = question_token_lengths(ds.examples, tok)
    questions = auto_max_question_len(q_lengths, config, n_special)
    given_question_len = config.max_question_len
    if given_question_len == "auto":
        config = WindowConfig(**{**vars(config), "max_question_len": questions["value"]})
    result = {"data": report, "windows": {**vars(config), "stride": config.stride(),
                                          "max_question_len_given": given_question_len}}
    text = [f"{path}: {report['examples_kept']}/{report['questions_read']} examples kept, "
            f"{report['answers_repaired']} answers repaired, {report['answers_dropped']} dropped, "
            f"{report['examples_dropped']} examples dropped"]
    text += [f"  {k}: {v}" for k, v in report["problems"].items()]
    result["question_lengths"] = {**_lengths_entry(questions),
                                  "longer_than_max_question_len": int((q_lengths > config.max_question_len).sum())}
    lines = [_lengths_text("question lengths", "data.windows.max_question_len", questions)
             + f"; {result['question_lengths']['longer_than_max_question_len']} longer than {config.max_question_len}"
               + (" (auto)" if given_question_len == "auto" else "") + " are cut"]
    if not ds.has_answers:
        text += lines
        text.append("no answers in this file: oracle fidelity skipped")
        return result, "\n".join(text)
    answers = auto_max_answer_len(answer_token_lengths(ds.examples, tok), config, n_special)
    result["answer_lengths"] = {**_lengths_entry(answers), "of": "first reference"}
    limit = answers["value"] if max_answer_len == "auto" else max_answer_len
    refs = data.load_references(path, fmt=ds.report.format)
    fid = oracle_fidelity(ds.examples, tok, config, refs, max_answer_len=limit)
    result["oracle"] = {**fid.to_dict(), "max_answer_len_given": max_answer_len}
    given = " (auto)" if max_answer_len == "auto" else ""
    text.append(f"oracle ceiling over {fid.windows} windows, answers ≤ {limit} tokens{given}: EM "
                f"{fid.em_any_reference:.3f} (any reference), {fid.em_first_reference:.3f} (first), exact text "
                f"{fid.exact_text_any_reference:.3f}, F1 {fid.f1_any_reference:.3f}; {len(fid.unreachable)} unreachable")
    text.append(f"  windowing alone (no length limit): EM {fid.windowing_only.em_any_reference:.3f}; the limit costs "
                f"{fid.lost_to_max_answer_len} exact matches ({fid.answers_longer_than_max_answer_len} first "
                f"references are longer than {limit} tokens)")
    text.append(_lengths_text("answer lengths (first reference)", "decode.max_answer_len", answers))
    text += lines
    text += [f"  unreachable {u['id']}: {u['reason']}: {u['answers'][0]!r}" for u in fid.unreachable[:20]]
    return result, "\n".join(text)
