"""The launch scripts, run with stand-ins for `deepspeed` and `qa-scale` that record what they are asked."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for both commands: records its arguments with start/end times, then creates the file
# that the script checks for (model/config.json, store.json, submission.csv).
STUB = r'''#!/usr/bin/env python3
import json, os, sys, time
from pathlib import Path
args = sys.argv[1:]
start = time.time()
time.sleep(float(os.environ.get("STUB_SLEEP", "0")))
cmd = args[args.index(next(a for a in args if a.endswith("qa-scale"))) + 1:] if any(a.endswith("qa-scale") for a in args) else args
if cmd and cmd[0] == "train":
    out = next(a.split("=", 1)[1] for a in cmd if a.startswith("run.output_dir="))
    Path(out, "model").mkdir(parents=True, exist_ok=True)
    Path(out, "model", "config.json").write_text("{}")
elif cmd and cmd[0] in ("predict", "ensemble"):
    out = Path(cmd[cmd.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    (out / ("store.json" if cmd[0] == "predict" else "submission.csv")).write_text("x")
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps({"prog": Path(sys.argv[0]).name, "args": args, "start": start, "end": time.time()}) + "\n")
'''


@pytest.fixture
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("deepspeed", "qa-scale"):
        path = bin_dir / name
        path.write_text(STUB)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log), "STUB_SLEEP": "0.3",
           "OUT": str(tmp_path / "boss"), "DATA": str(tmp_path / "data"), "RECIPE_OUT": str(tmp_path / "boss.yaml")}
    return env, log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_boss_ensemble_trains_one_member_per_gpu_in_parallel(stubs, tmp_path):
    env, log = stubs
    subprocess.run(["bash", str(ROOT / "launch" / "boss_ensemble.sh"), "3", "optim.epochs=1"], cwd=ROOT, env=env,
                   check=True, capture_output=True, text=True, timeout=120)
    runs = [c for c in calls(log) if c["prog"] == "deepspeed"]
    trains = [c for c in runs if "train" in c["args"]]
    assert len(trains) == 6 and len([c for c in runs if "predict" in c["args"]]) == 12
    gpus = [c["args"][c["args"].index("--include") + 1] for c in runs]
    assert set(gpus) == {"localhost:0", "localhost:1", "localhost:2"} and "--num_gpus" not in str(runs)
    assert all("optim.epochs=1" in c["args"] for c in trains)
    # members overlap in time, but never more of them than GPUs
    events = sorted([(c["start"], 1) for c in trains] + [(c["end"], -1) for c in trains])
    running, most = 0, 0
    for _, delta in events:
        running += delta
        most = max(most, running)
    assert 2 <= most <= 3
    ensembles = [c["args"] for c in calls(log) if c["prog"] == "qa-scale"]
    assert "--search-weights" in ensembles[0] and "--recipe" in ensembles[1]
    assert (tmp_path / "boss" / "submission.csv").exists()


def test_boss_ensemble_data_parallel_runs_members_one_after_another(stubs):
    env, log = stubs
    env = {**env, "LAYOUT": "data_parallel", "SEEDS": "1", "STUB_SLEEP": "0"}
    subprocess.run(["bash", str(ROOT / "launch" / "boss_ensemble.sh"), "8"], cwd=ROOT, env=env, check=True,
                   capture_output=True, text=True, timeout=120)
    runs = [c for c in calls(log) if c["prog"] == "deepspeed"]
    assert len(runs) == 9 and all(c["args"][:2] == ["--num_gpus", "8"] for c in runs)
    assert all(a["end"] <= b["start"] for a, b in zip(runs, runs[1:]))


def test_a_failed_member_fails_the_script(stubs, tmp_path):
    env, log = stubs
    broken = tmp_path / "bin" / "deepspeed"
    broken.write_text("#!/bin/sh\nexit 3\n")
    proc = subprocess.run(["bash", str(ROOT / "launch" / "boss_ensemble.sh"), "2"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "a member failed" in proc.stderr
    assert not (tmp_path / "boss" / "submission.csv").exists()


def test_workflow_launches_get_their_own_rendezvous_port():
    """The demo and `compare` launch `deepspeed` themselves; on the launcher's default port (29500) two such
    jobs on one host collided (EADDRINUSE), so every launch names a port that was free."""
    from qa_scale.runtime.processes import command

    cmd = command(["train", "x.yaml"], ranks=2)
    assert cmd[1:3] == ["--num_gpus", "2"] and cmd[3] == "--master_port" and int(cmd[4]) != 29500
    assert cmd[-2:] == ["train", "x.yaml"] and "--master_port" not in command(["train"], ranks=1)


# Records what `deepspeed` was given, and the env file it would read before the script removes it.
MULTINODE_STUB = r'''#!/usr/bin/env python3
import json, os, sys
env_file = os.environ.get("DS_ENV_FILE", "")
lines = open(env_file).read().splitlines() if os.path.isabs(env_file) else None
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps({"args": sys.argv[1:], "env_lines": lines}) + "\n")
'''


def run_multinode(tmp_path, hostfile_text: str, extra_env: dict | None = None) -> dict:
    bin_dir, home, tmp = tmp_path / "bin", tmp_path / "home", tmp_path / "tmp"
    for folder in (bin_dir, home, tmp):
        folder.mkdir(exist_ok=True)
    for name, text in (("deepspeed", MULTINODE_STUB), ("qa-scale", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "hostfile").write_text(hostfile_text)
    log = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NCCL_", "MASTER_", "DS_ENV"))}
    env.update({"PATH": f"{bin_dir}:{env['PATH']}", "STUB_LOG": str(log), "HOME": str(home), "TMPDIR": str(tmp),
                **(extra_env or {})})
    subprocess.run(["bash", str(ROOT / "launch" / "train_multinode.sh"), str(tmp_path / "hostfile"), "r.yaml",
                    "optim.epochs=1"], cwd=tmp_path, env=env, check=True, capture_output=True, text=True, timeout=60)
    [call] = [json.loads(line) for line in log.read_text().splitlines()]
    return call


def test_multinode_master_is_the_first_host_after_comments_and_blank_lines(tmp_path):
    hostfile = "# two nodes, 8 GPUs each\n\n   \n  # node-a is down\nnode-b slots=8\nnode-c slots=8\n"
    call = run_multinode(tmp_path, hostfile)
    args = call["args"]
    assert args[args.index("--master_addr") + 1] == "node-b"
    assert args[args.index("--hostfile") + 1] == str(tmp_path / "hostfile")
    assert args[-3:] == ["train", "r.yaml", "optim.epochs=1"] and "--launcher" not in args


def test_multinode_sends_hf_and_nccl_variables_to_every_node(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".deepspeed_env").write_text("# mine\nOMP_NUM_THREADS=4\n\n")
    call = run_multinode(tmp_path, "node-a slots=8\n", {
        "HF_HOME": "/shared/hf cache", "HF_HUB_OFFLINE": "1", "NCCL_SOCKET_IFNAME": "eth0", "HF_TOKEN": "secret",
        "MASTER_ADDR": "10.0.0.5"})
    args = call["args"]
    assert args[args.index("--master_addr") + 1] == "10.0.0.5"
    assert sorted(call["env_lines"]) == ["HF_HOME=/shared/hf cache", "HF_HUB_OFFLINE=1", "NCCL_SOCKET_IFNAME=eth0",
                                         "OMP_NUM_THREADS=4"]
    assert call["env_lines"] is not None and not list((tmp_path / "tmp").iterdir()), "the env file is removed"
