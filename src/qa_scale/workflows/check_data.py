"""``qa-scale check-data``: a data file's validation report and the oracle ceiling of a window setting.

A workflow over two stages: :mod:`qa_scale.data` reads and validates the file, and
:func:`qa_scale.evaluation.oracle.oracle_fidelity` measures what the windows let a perfect reader reach.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..data.windows import WindowConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def check_data(path: str | os.PathLike, tok: PreTrainedTokenizerBase, config: WindowConfig, mode: str = "lenient", fmt: str = "auto",
               max_answer_len: int = 30) -> tuple[dict, str]:
    """``qa-scale check-data``: the validation report and the oracle ceiling of ``config`` on a file.

    Returns:
        (the JSON report, the human summary).
    """
    from .. import data
    from ..evaluation.oracle import oracle_fidelity

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
    text.append(f"oracle over {fid.windows} windows, answers ≤ {max_answer_len} tokens: EM {fid.em_any_reference:.3f} "
                f"(any reference), {fid.em_first_reference:.3f} (first), exact text "
                f"{fid.exact_text_any_reference:.3f}, F1 {fid.f1_any_reference:.3f}; {len(fid.unreachable)} unreachable")
    text.append(f"  windowing alone (no length limit): EM {fid.windowing_only.em_any_reference:.3f}; the limit costs "
                f"{fid.lost_to_max_answer_len} exact matches ({fid.answers_longer_than_max_answer_len} first "
                f"references are longer than {max_answer_len} tokens)")
    text += [f"  unreachable {u['id']}: {u['reason']}: {u['answers'][0]!r}" for u in fid.unreachable[:20]]
    return result, "\n".join(text)
