"""The embedded-default demo end to end at toy sizes: backbone, three readers under the launcher,
logits stores, the ensemble, the report and a submission with every test id."""

from __future__ import annotations

import csv
import json

import pytest
from cli_runs import qa_scale

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_demo_runs_every_stage_and_writes_a_complete_submission(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", out, "--train-paragraphs", "20", "--backbone-steps", "4", "--member-steps", "4",
            "--hidden-size", "32", "--layers", "1", "--heads", "2", "--batch-size", "8", "--json"]
    proc = qa_scale(args, None, tmp_path)
    report = json.loads(proc.stdout)
    assert set(report["members"]) == {"full_s1", "full_s2", "lora_s1"}
    for name in report["members"]:
        summary = json.loads((out / "members" / name / "summary.json").read_text())
        assert summary["finished"] and summary["world_size"] == 2  # trained by 2 DeepSpeed ranks
        assert summary["mode"] == name.split("_")[0]
        assert (out / "members" / name / "dev_store" / "store.json").exists()
    assert (out / "members" / "lora_s1" / "adapter" / "adapter_config.json").exists()
    gain = report["ensemble_vs_best_member"]
    best = report["members"][gain["best_member"]]["dev"]["em"]
    assert gain["dev_em_gain"] == pytest.approx(report["ensemble"]["dev"]["em"] - best, abs=1e-3)
    truth = json.loads((out / "data" / "hw7_test_answers.json").read_text())
    with open(out / "submission.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Answer"] and {r[0] for r in rows[1:]} == set(truth)
    assert report["dev_oracle"]["em_any_reference"] == 100.0
    # a second run reuses every finished stage
    again = json.loads(qa_scale(args, None, tmp_path).stdout)
    assert again["ensemble"] == report["ensemble"] and again["seconds"]["total"] < report["seconds"]["total"]


def test_a_stage_is_redone_when_its_command_or_inputs_change(tmp_path, monkeypatch):
    from qa_scale.workflows import demo

    calls = []

    def fake_run(args, ranks, log_file):  # stands in for the launcher: writes a finished run
        calls.append(args)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / "summary.json").write_text(json.dumps({"finished": args[-1] != "crash"}))

    monkeypatch.setattr(demo, "_qa_scale", fake_run)
    log = tmp_path / "log"
    key = demo._stage(tmp_path / "run", ["train", "a"], 2, log, "data-1")
    assert demo._stage(tmp_path / "run", ["train", "a"], 2, log, "data-1") == key and len(calls) == 1  # reused
    demo._stage(tmp_path / "run", ["train", "b"], 2, log, "data-1")  # another command
    demo._stage(tmp_path / "run", ["train", "b"], 2, log, "data-2")  # same command, other inputs
    demo._stage(tmp_path / "run", ["train", "b"], 1, log, "data-2")  # other rank count
    assert len(calls) == 4
    demo._stage(tmp_path / "run", ["train", "crash"], 1, log, "data-2")  # unfinished: never reused
    demo._stage(tmp_path / "run", ["train", "crash"], 1, log, "data-2")
    assert len(calls) == 6
