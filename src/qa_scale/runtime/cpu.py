"""How a reading process's CPU threads wait and how many there are, set before torch loads.

A reader's forward pass is many small operations, each an OpenMP parallel region whose threads meet
at a barrier. OpenMP's default is to spin there for a while before sleeping. On an idle machine
that costs little; when other processes want the same cores (a training run, a test suite), a
spinning thread takes the core from the thread it waits for, and every region can cost a scheduler
time slice: answering a long paragraph was 4× slower with two busy neighbours than with sleeping
waits (``bench/bench_cpu_contention.py``). OpenMP reads ``OMP_WAIT_POLICY`` and ``OMP_NUM_THREADS``
once, when torch loads, so this module sets them before; it imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)
WAITS = ("passive", "default")


def prepare_cpu(wait: str = "passive", threads: int | str = "auto") -> dict:
    """Set this process's OpenMP wait policy and thread count, unless torch has loaded already.

    Args:
        wait: ``passive`` — threads sleep at once when they wait (``OMP_WAIT_POLICY=PASSIVE``, unless
            the environment already names a policy); ``default`` — the OpenMP runtime's own (spin,
            then sleep).
        threads: intra-op threads (``OMP_NUM_THREADS``); ``auto`` leaves torch's choice (one per
            core, or a rank's share under the launcher).

    Returns:
        The variables as they stand (``{"OMP_WAIT_POLICY": …, "OMP_NUM_THREADS": …}``, None when unset).
    """
    if wait not in WAITS:
        raise ValueError(f"wait must be one of {', '.join(WAITS)}, got {wait!r}")
    if "torch" in sys.modules:  # too late for OpenMP to read them: say so, change nothing
        log.debug("torch is loaded already: OpenMP keeps its wait policy and thread count")
    else:
        if wait == "passive":
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if threads != "auto":
            os.environ["OMP_NUM_THREADS"] = str(int(threads))
    return {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
