"""How a reading process's CPU threads wait and how many there are, set before torch loads.

A reader's forward pass is many small operations, each an OpenMP parallel region whose threads meet
at a barrier. OpenMP's default is to spin there for a while before sleeping. On an idle machine
that costs little; when other processes want the same cores (a training run, a test suite), a
spinning thread takes the core from the thread it waits for, and every region can cost a scheduler
time slice. Measured (``bench/bench_cpu_contention.py``, two busy neighbours, fp32, 2 cores):
spinning briefly, then sleeping (``short``: 10,000 spins, libgomp's ``GOMP_SPINCOUNT``; torch's
Linux wheels use libgomp) answered 1.9–2.2× faster than OpenMP's default and no slower idle;
sleeping at once (``passive``) faster still when busy, but 6–17% slower on an idle machine (up to
1.45× on an older Intel machine). OpenMP reads its environment once, when torch loads, so this
module sets it before; it imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
WAITS = ("short", "passive", "default")
SHORT_SPINS = "10000"  # GOMP_SPINCOUNT of "short" (libgomp's default spins 300,000 times before sleeping)


def prepare_cpu(wait: str = "short", threads: int | str = "auto") -> dict:
    """Set this process's OpenMP wait policy and thread count, unless torch has loaded already.

    Args:
        wait: ``short`` — spin briefly, then sleep (``GOMP_SPINCOUNT=10000``); ``passive`` — sleep at
            once (``OMP_WAIT_POLICY=PASSIVE``); ``default`` — the OpenMP runtime's own (a long spin,
            then sleep). A policy or spin count already in the environment wins.
        threads: intra-op threads (``OMP_NUM_THREADS``); ``auto`` leaves torch's choice (one per
            core, or a rank's share under the launcher).

    Returns:
        The variables as they stand (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, ``OMP_NUM_THREADS``; None when unset).
    """
    if wait not in WAITS:
        raise ValueError(f"wait must be one of {', '.join(WAITS)}, got {wait!r}")
    if "torch" in sys.modules:  # too late for OpenMP to read them: say so, change nothing
        log.debug("torch is loaded already: OpenMP keeps its wait policy and thread count")
    else:
        user_set = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & os.environ.keys()
        if wait == "passive" and not user_set:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        elif wait == "short" and not user_set:
            os.environ["GOMP_SPINCOUNT"] = SHORT_SPINS
        if threads != "auto":
            os.environ["OMP_NUM_THREADS"] = str(int(threads))
    return omp_environment()


def omp_environment() -> dict:
    """The OpenMP variables of this process (None when unset)."""
    return {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of bf16 matrix instructions, best first


def cpu_bf16_matmul(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The flag of this CPU's bf16 matrix instructions (``amx_bf16`` or ``avx512_bf16``), None without.

    oneDNN runs bf16 matrix products on either: Intel AMX tiles (Sapphire Rapids on), or AVX-512 BF16
    dot products (Cooper Lake, AMD Zen 4 on). Measured on this project's 2-core machines, a demo
    reader's forward pass runs 2.2–2.6× faster in bf16 than fp32 with AMX, and 2.2–2.7× with AVX-512
    BF16 (an AMD EPYC, 1 and 2 threads, batches of 32 and 128; 4 layers of bert-base width at 384 tokens 2.3×). Without
    either, bf16 is emulated and no faster, so ``auto`` stays fp32 there. Read from
    ``/proc/cpuinfo`` (Linux); elsewhere: None. Torch exposes this only through private functions,
    hence the file.
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return next((f for f in BF16_FLAGS if f in flags), None)
    except OSError:
        pass
    return None
