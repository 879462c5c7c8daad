"""The recipe's ``auto`` lengths: ``max_question_len`` and ``max_answer_len`` chosen from the training data.

:func:`resolve_auto` is the one place where they become numbers (once, before any window is cut);
``check-data`` reports the same choices for a data file (:func:`auto_max_answer_len`,
:func:`auto_max_question_len`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Sequence

import numpy as np

from ..data.windows import Template, WindowConfig

if typing.TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..data import Example

# "auto" lengths (resolve_auto): the 99.9th percentile (nearest rank: an observed length) of the training
# lengths in tokens. The 99th would give up 1 answer in 100 for good (CMRC 2018 dev: p99 50 tokens, p99.9 71,
# max 85); the maximum would hand the limit to one outlier or annotation error. Never below a floor: for answers
# the decoder's usual 30, so that a short-answered training set cannot make longer test answers unreachable; for
# questions the window default 64 (a question takes only the tokens it has: a larger limit costs a window nothing).
AUTO_PERCENTILE, MIN_AUTO_ANSWER_LEN, MIN_AUTO_QUESTION_LEN = 99.9, 30, 64


def unresolved_auto(config) -> list[str]:
    """The length keys of a :class:`~.recipe.TrainConfig` that still say ``auto`` (none once :func:`resolve_auto` ran)."""
    values = {"data.windows.max_question_len": config.data.windows.max_question_len,
              "decode.max_answer_len": config.decode.max_answer_len}
    return [key for key, value in values.items() if value == "auto"]


def _choose(lengths: Sequence[int], floor: int, cap: int, **how: int) -> dict:
    """The :data:`AUTO_PERCENTILE` percentile of ``lengths`` (nearest rank), at least ``floor``, at most ``cap``."""
    from ..evaluation.oracle import covering_length, length_percentiles

    percentile = covering_length(lengths, AUTO_PERCENTILE)
    value = min(max(percentile, floor), cap)
    covered = float(100.0 * np.mean(np.asarray(lengths) <= value)) if len(lengths) else 100.0
    return {"value": value, "percentile": AUTO_PERCENTILE, "percentile_length": percentile, "floor": floor,
            "cap": cap, **how, "covered_percent": covered,
            "lengths": length_percentiles(lengths, (50, 90, 99, AUTO_PERCENTILE))}


def auto_max_answer_len(answer_lengths: Sequence[int], windows: WindowConfig, n_special: int) -> dict:
    """What ``decode.max_answer_len: auto`` becomes for these answer lengths (tokens), and how it was chosen:
    at least :data:`MIN_AUTO_ANSWER_LEN`, at most the context tokens a window holds (no longer span decodes)."""
    return _choose(answer_lengths, MIN_AUTO_ANSWER_LEN, windows.context_len(0, n_special))


def auto_max_question_len(question_lengths: Sequence[int], windows: WindowConfig, n_special: int) -> dict:
    """What ``data.windows.max_question_len: auto`` becomes for these question lengths (tokens), and how.

    At least :data:`MIN_AUTO_QUESTION_LEN`, capped so that a window keeps room for context: half of
    ``max_seq_len`` less the special tokens, and more than ``doc_overlap`` (at least ``doc_step``)
    tokens, so that the windows stay valid.
    """
    room = windows.max_seq_len - n_special
    min_context = max(-(-room // 2), (windows.doc_overlap or 0) + 1, windows.doc_step or 0)
    return _choose(question_lengths, MIN_AUTO_QUESTION_LEN, max(room - min_context, 1), min_context=min_context)


def resolve_auto(config, train_examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase) -> tuple[Any, dict]:
    """The one place where a :class:`~.recipe.TrainConfig`'s ``auto`` lengths become numbers (:func:`auto_max_question_len`,
    :func:`auto_max_answer_len`), from the training examples in tokens of ``tokenizer``.

    Training calls it once, before any window is cut; the same data and tokenizer give the same numbers
    on every rank. Returns the config with numbers (as it is when nothing says ``auto``) and, for each
    key that said ``auto``, how its value was chosen (the run summary reports it).
    """
    todo = unresolved_auto(config)
    if not todo:
        return config, {}
    from ..evaluation.oracle import answer_token_lengths, question_token_lengths

    n_special = Template.of(tokenizer).n_special
    windows, decoding, resolved = config.data.windows, config.decode, {}
    if "data.windows.max_question_len" in todo:
        choice = auto_max_question_len(question_token_lengths(train_examples, tokenizer), windows, n_special)
        windows = dataclasses.replace(windows, max_question_len=choice["value"])
        resolved["data.windows.max_question_len"] = choice
    if "decode.max_answer_len" in todo:
        lengths = answer_token_lengths(train_examples, tokenizer)
        if not len(lengths):
            raise ValueError("decode.max_answer_len: auto needs training answers, and none is located in the "
                             "context: give a number")
        choice = auto_max_answer_len(lengths, windows, n_special)
        decoding = dataclasses.replace(decoding, max_answer_len=choice["value"])
        resolved["decode.max_answer_len"] = choice
    out = dataclasses.replace(config, data=dataclasses.replace(config.data, windows=windows), decode=decoding)
    return out, resolved
