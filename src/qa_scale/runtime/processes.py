"""Child ``qa-scale`` processes: the command line (plain or under the launcher) and a clean environment.

Workflows (the demo, ``compare``) run training as real commands, exactly as a user would on a
GPU server, so the launcher, process groups and checkpoints are the ones users get.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path

DIST_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(extra: dict | None = None) -> dict:
    """This environment without its process-group variables: a child starts its own group."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return {**env, **(extra or {})}


def script() -> str:
    """The ``qa-scale`` console script of this environment (the launcher needs a script path)."""
    path = Path(sys.executable).parent / "qa-scale"
    return str(path) if path.exists() else "qa-scale"


def free_port() -> int:
    """A TCP port free on this host now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(args: list, launcher: str = "", ranks: int | None = None) -> list[str]:
    """``qa-scale ARGS`` as a command: plainly, under ``launcher`` (e.g. ``"deepspeed --num_gpus 8"``),
    or under ``deepspeed --num_gpus RANKS`` of this environment.

    The launcher we build gets a free ``--master_port``: its default (29500) is shared by every
    launch on the host, so two jobs at once (two demos, a demo beside a training run) collided.
    """
    args = [str(a) for a in args]
    if ranks is not None and ranks > 1:
        deepspeed = Path(sys.executable).parent / "deepspeed"
        launcher = (f"{shlex.quote(str(deepspeed) if deepspeed.exists() else 'deepspeed')} --num_gpus {ranks} "
                    f"--master_port {free_port()}")
    if not launcher.strip():
        return [script(), *args]
    return [*shlex.split(launcher), script(), *args]
