"""Running `qa-scale` (or the test training script) as a child process, plainly or under
`deepspeed --num_gpus N` (CPU ranks, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qa_scale.runtime.processes import child_env, free_port  # noqa: F401 - free_port: used by the tests

BIN = Path(sys.executable).parent
TRAIN_SCRIPT = Path(__file__).with_name("train_script.py")


def clean_env(extra: dict | None = None) -> dict:
    """The environment for a child run: no process-group variables inherited from this process
    (in-process DeepSpeed tests set them), our venv first on PATH."""
    return child_env({"PATH": f"{BIN}:{os.environ['PATH']}", **(extra or {})})




def launch(program: Path, args: list, ranks: int | None, cwd: Path, env: dict | None = None, check: bool = True,
           timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `program ARGS` plainly (ranks=None) or under `deepspeed --num_gpus ranks`.

    A rank that dies makes the launcher end the others; ``timeout`` bounds a run that hangs anyway.
    """
    args = [str(a) for a in args]
    plain = [sys.executable, str(program)] if program.suffix == ".py" else [str(program)]
    for _ in range(2):  # a port taken between choosing and binding it is the one retried failure
        cmd = [*plain, *args] if ranks is None else \
            [str(BIN / "deepspeed"), "--num_gpus", str(ranks), "--master_port", str(free_port()), str(program), *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=clean_env(env))
        if "address already in use" not in proc.stderr.lower():
            break
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def qa_scale(args: list, ranks: int | None, cwd: Path, env: dict | None = None, check: bool = True,
             timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `qa-scale ARGS` plainly (ranks=None) or under `deepspeed --num_gpus ranks`."""
    return launch(BIN / "qa-scale", args, ranks, cwd, env, check, timeout)


def train_script(hooks: dict, overrides: list, ranks: int | None, cwd: Path, env: dict | None = None,
                 check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Train through `train_script.py` (a loss hook, the engine's dev logits; see there)."""
    return launch(TRAIN_SCRIPT, [json.dumps(hooks), *overrides], ranks, cwd, env, check, timeout)


def sample_files(root: Path, train_paragraphs: int = 6, dev_paragraphs: int = 1, seed: int = 0) -> dict:
    """Sample data in ``root/data`` (one test paragraph) and a character vocabulary of its corpus in
    ``root/tok``: the files of :func:`qa_scale.synthetic.write_all` by key, and ``"tok"``."""
    from qa_scale import synthetic
    from qa_scale.data.tokenization import build_char_vocab

    paths = synthetic.write_all(synthetic.SampleConfig(seed=seed, train_paragraphs=train_paragraphs,
                                                       dev_paragraphs=dev_paragraphs, test_paragraphs=1), root / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    return {**paths, "tok": root / "tok"}


def sample_workdir(root: Path, train_paragraphs: int = 6) -> Path:
    """``root`` with :func:`sample_files` (one dev paragraph): what the small training runs of the tests read."""
    sample_files(root, train_paragraphs)
    return root
