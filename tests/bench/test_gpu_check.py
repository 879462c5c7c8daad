"""The one-GPU check runs end to end on the CPU in its dry-run mode (tiny shape, same path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_measures_every_configuration(tmp_path, monkeypatch):
    # as after an in-process command: this process holds a group of one on MASTER_PORT (CI failed so once)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(held.getsockname()[1]))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, env=env)
    held.close()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_dryrun.json").read_text())
    runs = {r["name"]: r for r in result["train"]}
    assert set(runs) == {"zero2_bf16_mb2", "zero2_bf16_mb4", "zero3_bf16_mb4", "lora_zero2_bf16_mb4",
                         "zero2_fp16_mb4"}
    for r in runs.values():
        assert r["steps"] == 4 and r["tokens_per_s"] > 0 and r["peak_memory_gib"] > 0
    # LoRA trains a small share: the word embeddings dominate, so the share depends on the vocabulary the
    # script found (the real 21,128 entries beside the project, else a 3,000-character one it builds)
    real_vocab = (ROOT.parent / "shared" / "data" / "bert-base-chinese-vocab.txt").exists()
    assert runs["lora_zero2_bf16_mb4"]["parameters"]["trainable_percent"] < (2 if real_vocab else 10)
    assert runs["zero2_fp16_mb4"]["final_loss_scale"] is not None  # the fp16 run went through the loss scaler
    assert result["predict"]["windows_per_s"] > 0 and result["environment"]["dry_run"] is True
    assert "| zero3_bf16_mb4 | 4 |" in proc.stdout
