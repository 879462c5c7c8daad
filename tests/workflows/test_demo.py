"""The embedded-default demo end to end at toy sizes: backbones, three readers under the launcher,
logits stores, the ensemble, the report and a submission with every test id."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import qa_scale

from qa_scale.common.outputs import MARKER

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


ARGS = ["--train-paragraphs", "20", "--dev-paragraphs", "12", "--backbone-steps", "4", "--member-steps", "6",
        "--backbones", "1x32:0", "1x32:1", "--heads", "2", "--members", "A:full:1", "B:full:1", "B:lora:1",
        "--batch-size", "8", "--student-steps", "6", "--json"]


def test_demo_runs_every_stage_and_writes_a_complete_submission(tmp_path):
    out = tmp_path / "demo"
    proc = qa_scale(["demo", "--out", out, *ARGS], None, tmp_path)
    report = json.loads(proc.stdout)
    assert set(report["members"]) == {"A_full_s1", "B_full_s1", "B_lora_s1"} and set(report["backbones"]) == {"A", "B"}
    for name in report["members"]:
        summary = json.loads((out / "members" / name / "summary.json").read_text())
        assert summary["finished"] and summary["world_size"] == 2  # trained by 2 DeepSpeed ranks
        assert summary["mode"] == name.split("_")[1]
        assert (out / "members" / name / "dev_store" / "store.json").exists()
        for part in ("search", "holdout", "dev", "test"):
            assert part in report["members"][name]
    assert (out / "members" / "B_lora_s1" / "adapter" / "adapter_config.json").exists()
    gain = report["ensemble_vs_best_member"]
    best = gain["best_member"]
    assert best == max(report["members"], key=lambda n: (report["members"][n]["search"]["em"],
                                                        report["members"][n]["search"]["f1"]))
    assert gain["holdout_em_gain"] == pytest.approx(report["ensemble"]["holdout"]["em"]
                                                    - report["members"][best]["holdout"]["em"], abs=1e-2)
    lo, hi = gain["holdout_em_gain_ci95"]
    assert lo <= gain["holdout_em_gain"] <= hi
    assert abs(sum(report["ensemble"]["weights"].values()) - 1) < 1e-6
    truth = json.loads((out / "data" / "hw7_test_answers.json").read_text())
    with open(out / "submission.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Answer"] and {r[0] for r in rows[1:]} == set(truth)
    assert report["dev_oracle"]["em_any_reference"] == 100.0
    _no_unknown_question_characters(out)
    _student_was_distilled_from_the_ensemble(out, report)
    # a second run reuses every finished stage
    again = json.loads(qa_scale(["demo", "--out", out, *ARGS], None, tmp_path).stdout)
    assert again["ensemble"] == report["ensemble"] and again["seconds"]["total"] < report["seconds"]["total"]
    # a fresh run with the same seed, elsewhere, gives the same figures (deterministic data, vocabulary, backbone,
    # reader and store); one backbone and one member, no student, to keep the test short: a member's figures
    # depend on its own backbone, seed and data only, not on the other members
    one = ["--backbones", "1x32:0", "--members", "A:full:1", "--student-steps", "0"]
    fresh = json.loads(qa_scale(["demo", "--out", tmp_path / "demo2", *ARGS, *one], None, tmp_path).stdout)
    assert fresh["dev_oracle"] == report["dev_oracle"] and fresh["baselines"] == report["baselines"]
    assert fresh["backbones"] == {"A": report["backbones"]["A"]}
    assert fresh["members"] == {"A_full_s1": report["members"]["A_full_s1"]} and "student" not in fresh


def test_the_demo_never_writes_into_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    proc = qa_scale(["demo", "--out", tmp_path / "mine", *ARGS], None, tmp_path, check=False)
    assert proc.returncode == 2 and "not written by qa-scale" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_stage_is_redone_when_its_command_or_inputs_change(tmp_path, monkeypatch):
    from qa_scale.workflows import demo

    calls = []

    def fake_run(args, ranks, log_file):  # stands in for the launcher: writes a finished run
        calls.append(args)
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / MARKER).write_text('{"kind": "train"}')  # as every run folder of ours holds
        (run_dir / "summary.json").write_text(json.dumps({"finished": args[-1] != "crash"}))

    monkeypatch.setattr(demo, "_qa_scale", fake_run)
    log = tmp_path / "log"
    key = demo._stage(tmp_path / "run", ["train", "a"], 2, log, "data-1")
    assert demo._stage(tmp_path / "run", ["train", "a"], 2, log, "data-1") == key and len(calls) == 1  # reused
    demo._stage(tmp_path / "run", ["train", "b"], 2, log, "data-1")  # another command
    demo._stage(tmp_path / "run", ["train", "b"], 2, log, "data-2")  # same command, other inputs
    demo._stage(tmp_path / "run", ["train", "b"], 1, log, "data-2")  # other rank count
    assert len(calls) == 4
    monkeypatch.setattr(demo, "code_version", lambda: "other code")
    demo._stage(tmp_path / "run", ["train", "b"], 1, log, "data-2")  # same command and inputs, other code
    assert len(calls) == 5
    calls.clear()
    demo._stage(tmp_path / "run", ["train", "crash"], 1, log, "data-2")  # unfinished: never reused
    demo._stage(tmp_path / "run", ["train", "crash"], 1, log, "data-2")
    assert len(calls) == 2


def _no_unknown_question_characters(out):
    """The vocabulary sees the training questions: a dev question character that a training question
    has (？, 哪, 什么…) is never [UNK]."""
    from qa_scale import data
    from qa_scale.data.tokenization import load_tokenizer

    tok = load_tokenizer(out / "tokenizer")
    seen = {c for ex in data.load(out / "data" / "squad_train.json", "strict").examples for c in ex.question}
    dev = data.load(out / "data" / "squad_dev.json", "strict").examples
    unknown = {c for ex in dev for c in ex.question if c in seen and not c.isspace()
               and tok(c, add_special_tokens=False)["input_ids"] == [tok.unk_token_id]}
    assert not unknown, sorted(unknown)


def _student_was_distilled_from_the_ensemble(out, report):
    """The student: trained by `qa-scale distill` on 2 ranks from the weighted members' training-file
    stores and the demo's recipe, scored like a member, timed against the ensemble through `answer`."""
    student = report["student"]
    summary = json.loads((out / "student" / "summary.json").read_text())
    assert summary["finished"] and summary["world_size"] == 2 and summary["mode"] == "full"
    weighted = [n for n, w in report["ensemble"]["weights"].items() if w > 0]
    assert summary["distill"]["stores"] == [str(out / "members" / n / "train_store") for n in weighted]
    assert summary["distill"]["teacher"] == str(out / "ensemble_recipe.yaml")
    assert summary["distill"]["strategy"] == "answer_and_negative"
    best = report["ensemble_vs_best_member"]["best_member"]
    assert student["vs_best_member"]["best_member"] == best
    assert student["vs_best_member"]["em_gain"] == pytest.approx(
        student["holdout"]["em"] - report["members"][best]["holdout"]["em"], abs=1e-2)
    assert student["vs_ensemble"]["em_gain"] == pytest.approx(
        student["holdout"]["em"] - report["ensemble"]["holdout"]["em"], abs=1e-2)
    assert student["teacher_stores"]["members"] == len(weighted) and student["teacher_stores"]["bytes"] > 0
    latency = student["latency"]
    assert latency["readers"] == {"ensemble": len(weighted), "student": 1} and latency["questions"] > 0
    assert set(latency["seconds_per_question_in_one_call"]) == {"ensemble", "student"}
    # the bench measures the same on a finished demo folder (bench/student_latency.py)
    bench = subprocess.run([sys.executable, str(ROOT / "bench" / "student_latency.py"), str(out)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                           timeout=300)
    assert bench.returncode == 0, bench.stderr[-3000:]
    measured = json.loads(bench.stdout)
    assert measured["readers"] == latency["readers"] and measured["questions"] == latency["questions"]
    assert "test" in student and "hw7_accuracy" in student["test"]

