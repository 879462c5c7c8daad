"""What the stages of ``bench/gpu_check.py`` share: shapes, the data they train on, child processes
run under a timeout, and the stage budget those timeouts are cut from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DS = ROOT / "ds_configs"
SHARED_VOCAB = ROOT.parent / "shared" / "data" / "bert-base-chinese-vocab.txt"
LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
SMALL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
MIN_START_S = 3.0  # a child is not started with less of its stage's budget left


class Budget:
    """The seconds a stage may still spend; each child's timeout is cut from them."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)

    def timeout(self, cap: float) -> float:
        return max(0.0, min(cap, self.left()))


@dataclass
class Child:
    """One finished (or killed) child process: exit status, seconds, where its output went."""

    name: str
    cmd: list[str]
    rc: int | None
    seconds: float
    timeout_s: float
    stdout: Path
    log: Path
    timed_out: bool = False
    not_started: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and self.not_started is None

    def text(self) -> str:
        return self.stdout.read_text(encoding="utf-8", errors="replace") if self.stdout.exists() else ""

    def json(self) -> dict:
        """What it printed as JSON: all of stdout, else from its last line that starts an object."""
        text = self.text().strip()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return json.loads(text[text.rfind("\n{") + 1:])

    def error(self) -> str:
        """One line on what went wrong, then the end of its output."""
        if self.not_started:
            return f"{self.name}: not started: {self.not_started}"
        what = f"timed out after {self.timeout_s:.0f} s" if self.timed_out else f"exit status {self.rc}"
        tail = ""
        for path in (self.log, self.stdout):
            if path.exists():
                tail += path.read_text(encoding="utf-8", errors="replace")[-1500:]
        return f"{self.name}: {what} ({' '.join(self.cmd[:4])} …)\n{tail}"


class Runner:
    """Runs children one at a time, each in its own process group (killed whole on timeout), with
    stdout and stderr in ``logs/``, in an environment without this process's process-group variables.

    The children build and load DeepSpeed's JIT ops (on the CPU: its shared-memory all-reduce) in a
    folder of this run, seeded with what the user's cache holds: a child killed while building leaves
    a lock there that every later build would wait on forever, and this run removes it; the shared
    cache is never left locked, nor rebuilt by other build commands while this run uses it.
    """

    def __init__(self, logs: Path, extensions: Path, env: dict | None = None):
        self.logs, self.extensions, self.env = logs, extensions, dict(env or {})
        shared = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
        if shared.is_dir() and not extensions.exists():
            shutil.copytree(shared, extensions, ignore=shutil.ignore_patterns("lock"), symlinks=True)
        extensions.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, cmd: list, budget: Budget, cap: float, env: dict | None = None,
            cwd: Path | None = None) -> Child:
        from qa_scale.runtime.processes import child_env

        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = [str(c) for c in cmd]
        out, log = self.logs / f"{name}.out", self.logs / f"{name}.log"
        timeout = budget.timeout(cap)
        if timeout < MIN_START_S:
            return Child(name, cmd, None, 0.0, timeout, out, log,
                         not_started=f"its stage's budget is spent ({budget.left():.0f} s left)")
        # this python's folder first on PATH, as tests/cli_runs.py does: DeepSpeed builds its CPU ops with the
        # first ninja there, and another ninja (the system's) rebuilds them each time (30-90 s)
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        full_env = child_env({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": path,
                              "TORCH_EXTENSIONS_DIR": str(self.extensions), **self.env, **(env or {})})
        t0 = time.perf_counter()
        with open(out, "wb") as fo, open(log, "wb") as fe:
            proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=full_env, cwd=cwd or ROOT, start_new_session=True)
            try:
                rc, timed_out = proc.wait(timeout=timeout), False
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher's or pytest's own children too
                rc, timed_out = proc.wait(), True
                for lock in self.extensions.rglob("lock"):  # a build it left half done: the next child redoes it
                    lock.unlink(missing_ok=True)
        return Child(name, cmd, rc, round(time.perf_counter() - t0, 1), round(timeout, 1), out, log, timed_out)

    def qa_scale(self, name: str, args: list, budget: Budget, cap: float, env: dict | None = None) -> Child:
        """``qa-scale ARGS`` as a user runs it (``python -m qa_scale`` = the console script)."""
        return self.run(name, [sys.executable, "-m", "qa_scale", *args], budget, cap, env)


def overrides(values: dict) -> list[str]:
    """``key=value`` recipe overrides (dicts as inline YAML)."""
    return [f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in values.items()]


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def metric_rows(run_dir: Path, split: str) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [r for r in rows if r.get("split") == split]


@dataclass
class Data:
    """The files every stage reads: small data for the path, long paragraphs for speed, a tokenizer."""

    path_train: Path
    path_dev: Path
    speed_train: Path
    vocab: Path


def make_data(work: Path, vocab: Path | None, dry: bool) -> Data:
    """Sample data (the project's generator, seed 0). Speed windows are full: 700–900-character
    paragraphs, and enough questions (≈ 1,000 on the GPU) that 30 steps of 32 stay in one epoch."""
    from qa_scale import synthetic
    from qa_scale.data.tokenization import build_char_vocab

    small = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=12, dev_paragraphs=4, test_paragraphs=1),
                                work / "data_path")
    speed = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=40 if dry else 230, dev_paragraphs=1,
                                                       test_paragraphs=1, paragraph_chars=(700, 900)),
                                work / "data_speed")
    if vocab is None or not vocab.exists():
        corpus = small["corpus"].read_text(encoding="utf-8").splitlines()
        corpus += speed["corpus"].read_text(encoding="utf-8").splitlines()
        build_char_vocab(corpus, work / "tok", vocab_size=3000)
        vocab = work / "tok"
    return Data(small["squad_train"], small["squad_dev"], speed["squad_train"], vocab)


@dataclass
class Context:
    """What every stage gets: dry run or not, the work folder, the data, the runner, the time table."""

    dry: bool
    work: Path
    data: Data | None
    runner: Runner
    caps: dict[str, float]  # child name → its timeout cap (this run's column of the time table)

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"

    @property
    def half(self) -> str:
        """The precision of the "bf16" runs: fp32 on the CPU dry run (DeepSpeed's bf16 is a GPU matter)."""
        return "fp32" if self.dry else "bf16"


class Steps:
    """A stage's sub-steps, each with its status (passed, failed, not run), seconds and figures; the
    first line of each failure, for the stage's ``errors``."""

    def __init__(self):
        self.record: dict[str, dict] = {}
        self.errors: list[str] = []

    def ok(self, name: str) -> bool:
        return self.record.get(name, {}).get("status") == "passed"

    def check(self, name: str, child: Child, check) -> bool:
        """Record ``child``; when it succeeded, ``check(child)`` gives (figures, problems)."""
        entry: dict = {"seconds": child.seconds, "timeout_s": child.timeout_s}
        problems: list[str] = []
        if not child.ok:
            entry["error"] = child.error()[-2500:]
            problems = [entry["error"].splitlines()[0]]
        else:
            try:
                figures, problems = check(child)
                entry.update(figures)
            except Exception as exc:  # noqa: BLE001 - a check that cannot read its figures failed
                problems = [f"{type(exc).__name__}: {exc}"]
                entry["error"] = child.error()[-1500:]
        entry["status"] = "failed" if problems else "passed"
        if problems:
            entry["problems"] = problems
            self.errors.append(f"{name}: {'; '.join(problems)}")
        self.record[name] = entry
        return not problems

    def skip(self, name: str, needs: str) -> None:
        self.record[name] = {"status": "not run", "needs": needs}
        self.errors.append(f"{name}: not run ({needs} failed)")
