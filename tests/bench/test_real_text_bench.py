"""``bench/real_text.py`` end to end on tiny settings: split, backbone, two readers, stores, ensemble, baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, require_shared

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_real_text_bench_runs_end_to_end(tmp_path):
    require_shared(SHARED_DATA / "drcd_dev.json")
    out, result = tmp_path / "run", tmp_path / "result.json"
    cmd = [sys.executable, str(ROOT / "bench" / "real_text.py"), "--data", str(SHARED_DATA), "--out", str(out),
           "--result", str(result), "--backbone", "1x32", "--heads", "2", "--mlm-steps", "2", "--mlm-batch", "8",
           "--mlm-seq-len", "64", "--profile-steps", "1", "--members", "1,2:answer_and_negative", "--reader-steps", "3",
           "--batch", "8", "--eval-every", "2", "--max-train-questions", "64", "--max-eval-questions", "24",
           "--max-seq-len", "64", "--max-question-len", "16", "--doc-overlap", "16"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)  # a hang guard, not a bound
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(result.read_text(encoding="utf-8"))
    assert r["scores"]["questions"] == 24 and set(r["scores"]) == {"questions", "s1", "s2_neg", "ensemble"}
    assert [r["members"][m]["strategy"] for m in ("s1", "s2_neg")] == ["random_answer", "answer_and_negative"]
    assert set(r["baselines"]) == {"most_frequent_answer", "random_span", "lexical_overlap"}
    assert [p["step"] for p in r["members"]["s1"]["learning_curve"]] == [2, 3]
    assert r["mlm_profile"]["masked_only"]["samples_per_s"] > 0 and r["backbone"]["steps"] == 2
    a, b = r["split"]["drcd_articles"]["eval"], r["split"]["drcd_articles"]["train"]
    assert a + b == 383 and abs(a - b) <= 1  # by article, half each
    for name in ("s1", "s2_neg"):  # exported at the last step (the evaluation split chooses nothing), store kept
        summary = json.loads((out / "members" / name / "summary.json").read_text(encoding="utf-8"))
        assert summary["best_checkpoint"] is None and (out / "members" / name / "model" / "config.json").exists()
        assert (out / "members" / name / "eval_store" / "store.json").exists()
        assert "mark_matches: true" in (out / "members" / name / "config.yaml").read_text(encoding="utf-8")
    assert len(r["commands"]) == 6 and r["timings_s"]["total"] > 0

    # A second run on the first one's backbone: no masked-LM stage, the folder named in the result.
    again = [*cmd[:cmd.index("--out")], "--out", str(tmp_path / "again"), "--result", str(tmp_path / "again.json"),
             *cmd[cmd.index("--backbone"):], "--backbone-from", str(out / "backbone"), "--members", "3",
             "--no-mark-matches", "--profile-steps", "0"]
    proc = subprocess.run(again, capture_output=True, text=True, env=env, timeout=900)  # a hang guard, not a bound
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads((tmp_path / "again.json").read_text(encoding="utf-8"))
    assert r["backbone"]["reused"] and r["backbone"]["folder"] == str(out / "backbone")
    assert not any(" backbone " in c for c in r["commands"]) and set(r["scores"]) == {"questions", "s3", "ensemble"}
    assert not (tmp_path / "again" / "backbone").exists()


def test_real_text_bench_names_a_missing_data_folder(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "real_text.py"), "--data", str(tmp_path / "nowhere"), "--out",
           str(tmp_path / "run"), "--result", ""]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          timeout=120)
    assert proc.returncode == 2 and str(tmp_path / "nowhere") in proc.stderr


@pytest.mark.parametrize("members", ["1,x", "1:most_likely", "2,2"])
def test_real_text_bench_refuses_bad_member_specs(tmp_path, members):
    cmd = [sys.executable, str(ROOT / "bench" / "real_text.py"), "--out", str(tmp_path / "run"), "--members", members]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          timeout=120)
    assert proc.returncode == 2 and f"--members {members!r}" in proc.stderr and not (tmp_path / "run").exists()
