"""``bench/store_size.py``: windows counted on the real files, bytes derived from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import SHARED_DATA, require_shared

ROOT = Path(__file__).resolve().parents[2]


def test_store_size_counts_windows_and_derives_bytes(tmp_path):
    require_shared(SHARED_DATA / "cmrc2018_dev.json")
    out = tmp_path / "size.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "store_size.py"), "--data", str(SHARED_DATA),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmrc = json.loads(out.read_text(encoding="utf-8"))["files"]["cmrc2018_dev.json"]
    assert cmrc["questions"] == 3219 and cmrc["windows"] == 6327  # the oracle table's count at 384/128
    per10k = cmrc["windows"] / cmrc["questions"] * 10_000
    assert cmrc["member_store_logits_mb"]["fp32"] == round(per10k * 384 * 2 * 4 / 1e6, 1)
    assert cmrc["member_store_logits_mb"]["fp16"] * 2 == cmrc["member_store_logits_mb"]["fp32"]
