"""The embedded-default job: everything offline, on data and a vocabulary the project makes.

sample data → character vocabulary → validation and oracle fidelity → windows (cached with
``datasets``) → oracle logits → the shared decoder → EM/F1 → HW7 CSV and CMRC-style JSON.

Until a trained reader exists, the logits are the oracle's (gold spans as one-hot logits):
the run checks that every stage between the raw files and the leaderboard file loses nothing,
and shows where each artefact lands. The report says so in its ``logits`` field.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import data, metrics, oracle, sample_data, submit
from .decode import DecodeConfig, decode
from .files import write_json
from .tokenization import build_char_vocab
from .window_store import cached_windows
from .windows import WindowConfig, WindowSet

log = logging.getLogger(__name__)


def oracle_logits(ws: WindowSet) -> tuple[np.ndarray, np.ndarray]:
    """One-hot start/end logits at the labelled positions of every window holding the answer."""
    start = np.zeros(ws.input_ids.shape, np.float32)
    end = np.zeros(ws.input_ids.shape, np.float32)
    rows = np.arange(len(ws))
    start[rows, ws.start_positions] = 1.0
    end[rows, ws.end_positions] = 1.0
    start[rows, ws.cls_index] = end[rows, ws.cls_index] = 0.0
    return start, end


def run_demo(out_dir: str | Path, seed: int = 0, windows: WindowConfig | None = None) -> dict:
    """Run the embedded-default job into ``out_dir`` and return its report."""
    out, t0 = Path(out_dir), time.perf_counter()
    windows = windows or WindowConfig(max_seq_len=256, max_question_len=48, doc_overlap=64)
    log.info("1/6 sample data → %s", out / "data")
    paths = sample_data.write_all(sample_data.SampleConfig(seed=seed), out / "data")
    log.info("2/6 character vocabulary from %s", paths["corpus"])
    lines = paths["corpus"].read_text(encoding="utf-8").splitlines()
    tok = build_char_vocab(lines, out / "tokenizer", vocab_size=6000)
    report: dict = {"logits": "oracle (gold spans as one-hot logits): no trained reader yet",
                    "windows": {**vars(windows), "stride": windows.stride()}}
    log.info("3/6 validation and oracle fidelity of the dev split")
    dev = data.load(paths["squad_dev"], "strict")
    report["dev_oracle"] = oracle.oracle_fidelity(dev.examples, tok, windows).to_dict(max_listed=10)
    truth = json.loads(paths["hw7_test_answers"].read_text(encoding="utf-8"))
    for split, key in (("dev", "squad_dev"), ("test", "hw7_test")):
        ds = data.load(paths[key], "strict")
        if split == "test":  # the demo knows the hidden answers; a real test split does not
            ds = data.Dataset([data.Example(ex.id, ex.question, ex.context,
                                            (data.Answer(truth[ex.id], ex.context.find(truth[ex.id])),))
                               for ex in ds.examples], ds.report)
        log.info("4/6 %s windows (cached under %s)", split, out / "cache")
        ws = cached_windows(ds.examples, tok, windows, out / "cache")
        log.info("5/6 decode %d %s windows", len(ws), split)
        decoded = decode(ws, *oracle_logits(ws), ds.examples, DecodeConfig(max_answer_len=64))
        if split == "dev":
            scores = metrics.evaluate(decoded.predictions, data.load_references(paths["squad_dev"]))
            report["dev_scores"] = scores.to_dict()
            write_json(out / "dev_predictions.json", decoded.predictions)
            metrics.write_error_file(scores, out / "dev_errors.jsonl")
        else:
            log.info("6/6 submissions")
            ids = [ex.id for ex in ds.examples]
            submit.write_hw7_csv(decoded.predictions, ids, out / "submission.csv")
            submit.write_prediction_json(decoded.predictions, ids, out / "test_predictions.json")
            report["test_accuracy_hw7"] = metrics.evaluate(
                decoded.predictions, {i: [truth[i]] for i in ids}, hw7=True).hw7_accuracy
    report["files"] = {name: str(out / name) for name in
                       ("submission.csv", "test_predictions.json", "dev_predictions.json", "dev_errors.jsonl")}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "report.json", report)
    return report
