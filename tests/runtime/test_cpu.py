"""A reading process's CPU threads: set before torch loads (OpenMP reads its environment once)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qa_scale.runtime.cpu import cpu_bf16_matmul, prepare_cpu

PROBE = ("import os, sys\n"
         "from qa_scale.runtime.cpu import cpu_bf16_matmul, prepare_cpu\n"
         "prepare_cpu(sys.argv[1], sys.argv[2])\n"
         "import torch\n"
         "print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads(), os.environ.get('GOMP_SPINCOUNT'))\n")


def probe(wait: str, threads: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", PROBE, wait, threads], capture_output=True, text=True, check=True,
                         env={**clean, **env}).stdout
    return out.split()


def test_passive_waits_and_a_thread_count_reach_torch():
    assert probe("passive", "1") == ["PASSIVE", "1", "None"]
    assert probe("short", "1") == ["None", "1", "10000"]  # spin briefly, then sleep
    assert probe("default", "auto")[::2] == ["None", "None"]  # the OpenMP runtime's own policy, untouched
    assert probe("passive", "auto")[1] == str(len(os.sched_getaffinity(0)))  # torch's choice: a thread per core


def test_the_environment_wins():
    assert probe("passive", "auto", OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"
    assert probe("short", "auto", GOMP_SPINCOUNT="5")[2] == "5"
    assert probe("short", "auto", OMP_WAIT_POLICY="PASSIVE")[::2] == ["PASSIVE", "None"]


def test_too_late_changes_nothing_and_a_bad_policy_is_refused(monkeypatch):
    import torch  # noqa: F401 - loaded: OpenMP has read its environment

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert prepare_cpu("passive", 3)["OMP_WAIT_POLICY"] is None
    with pytest.raises(ValueError, match="wait must be one of"):
        prepare_cpu("sleepy")


def test_bf16_units_are_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile avx512_vnni\n", encoding="utf-8")
    assert cpu_bf16_matmul(str(info)) is None  # no bf16 instructions: amx_tile or VNNI alone do not count
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n", encoding="utf-8")
    assert cpu_bf16_matmul(str(info)) == "avx512_bf16"  # Cooper Lake, AMD Zen 4
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n", encoding="utf-8")
    assert cpu_bf16_matmul(str(info)) == "amx_bf16"
    assert cpu_bf16_matmul(str(tmp_path / "none")) is None  # no such file (not Linux): fp32
