"""What every benchmark result records beside its figures, and how it is written."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

from qa_scale.runtime.cpu import cpu_bf16_matmul


def header(benchmark: str, **versions: str) -> dict:
    """The benchmark's name, the date (UTC), the exact command and the machine (with ``versions``)."""
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "cpu": _cpu_model(), "bf16_matmul": cpu_bf16_matmul(), "python": platform.python_version(),
                    **versions},
    }


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux; None elsewhere): figures differ by CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        return None


def emit(result: dict, out: str | None) -> int:
    """Print the result as JSON, write it to ``out`` too; the exit status (1 unless ``passed``)."""
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n", encoding="utf-8")
    return 0 if result["passed"] else 1
