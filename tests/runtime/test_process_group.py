"""The process group's own settings, on CPU ranks (gloo): the collective timeout reaches the group and
is named when it ends a wait; a run folder that some rank cannot see fails on every rank; a plain
process joins a group of one without building or loading any DeepSpeed op."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_runs import clean_env, free_port

from qa_scale.runtime import distributed


def run_ranks(script: str, args: list, tmp_path: Path, ranks: int = 2, timeout: int = 120) -> list[tuple]:
    """``python script ARGS`` as ``ranks`` ranks of one group, with the variables the deepspeed launcher
    sets; each rank's (exit status, stdout, stderr)."""
    path = tmp_path / "ranks.py"
    path.write_text(textwrap.dedent(script), encoding="utf-8")
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(path), *map(str, args)], text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=tmp_path,
                              env=clean_env({"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(ranks),
                                             "LOCAL_SIZE": str(ranks), "MASTER_ADDR": "127.0.0.1",
                                             "MASTER_PORT": port, "OMP_NUM_THREADS": "1"}))
             for r in range(ranks)]
    try:
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


SLOW_RANK_0 = '''
    import sys, time
    from qa_scale.runtime import distributed

    minutes, sleep = float(sys.argv[1]), float(sys.argv[2])
    d = distributed.init("cpu", timeout_minutes=minutes)
    if d.main:
        time.sleep(sleep)  # rank 0 alone: an export, a cache build on slow storage
    try:
        distributed.barrier()
    except distributed.CollectiveTimeout as err:
        print(f"TIMEOUT {err}", file=sys.stderr)
        distributed.leave(False)
        sys.exit(3)
    distributed.leave(True)
    print("PASSED")
'''


@pytest.mark.distributed
@pytest.mark.parametrize("seconds,passes", [(2, False), (40, True)])
def test_the_collective_timeout_reaches_the_group(tmp_path, seconds, passes):
    """Rank 0 works alone for 5 s while rank 1 waits in a barrier: a 2 s timeout ends the wait with
    an error that names ``run.timeout_minutes``; a 40 s one lets it finish."""
    results = run_ranks(SLOW_RANK_0, [seconds / 60, 5], tmp_path)
    if passes:
        assert all(code == 0 and "PASSED" in out for code, out, _ in results), results
    else:
        code, _, err = results[1]
        assert code == 3, results
        assert "TIMEOUT rank 1 waited longer than the process-group timeout (run.timeout_minutes = 0.0333" in err
        assert results[0][0] != 0  # rank 0 finds its peer gone: it fails too, it does not hang


NOT_SHARED = '''
    import sys
    from pathlib import Path
    from qa_scale.runtime import distributed

    root = Path(sys.argv[1])
    d = distributed.init("cpu")
    node = root / f"node{d.rank}"  # as if each rank were on its own node with a local disk
    node.mkdir(exist_ok=True)
    distributed.check_shared({"run.output_dir": root / "shared", "data.cache_dir": None}, d)
    print("SHARED OK", flush=True)
    try:
        distributed.check_shared({"run.output_dir": root / "shared", "data.cache_dir": node}, d)
    except distributed.SharedStorageError as err:
        print(f"NOT SHARED {err}", file=sys.stderr)
        distributed.leave(True)
        sys.exit(3)
    distributed.leave(True)
'''


@pytest.mark.distributed
def test_a_folder_some_rank_cannot_see_fails_on_every_rank(tmp_path):
    """Rank 0's token is seen by both ranks in a shared folder; in a folder that differs per rank
    (node-local storage) both ranks fail with the same message, naming the rank, host and setting."""
    (tmp_path / "shared").mkdir()
    results = run_ranks(NOT_SHARED, [tmp_path], tmp_path, timeout=90)
    host = socket.gethostname()
    for code, out, err in results:
        assert code == 3 and "SHARED OK" in out, results
        assert (f"NOT SHARED data.cache_dir {tmp_path / 'node1'} is not on storage shared by all nodes: rank 1 "
                f"(host {host}) cannot see .shared-check-") in err, err
        assert "put run.output_dir and data.cache_dir on storage that every node mounts" in err
    left = [p.name for d in ("shared", "node0", "node1") for p in (tmp_path / d).iterdir()]
    assert left == [], left  # the tokens are removed, whatever the outcome


ALONE = '''
    import sys
    from deepspeed.ops.op_builder.builder import OpBuilder

    def refuse(self, *args, **kwargs):
        raise SystemExit(f"DeepSpeed op {self.name} built or loaded by a world of one")

    OpBuilder.load = OpBuilder.jit_load = refuse
    import torch
    from qa_scale.runtime import distributed

    d = distributed.init("cpu")
    assert torch.distributed.is_initialized() and d.world_size == 1 and d.rank == 0
    assert distributed.sum_floats([1.0, 2.0], d) == [1.0, 2.0] and distributed.broadcast_object("x", d) == "x"
    assert distributed.gather_objects("y", d) == ["y"] and distributed.max_float(4.0, d) == 4.0
    distributed.check_shared({"run.output_dir": sys.argv[1]}, d)
    distributed.leave(True)
    print("ALONE OK")
'''


@pytest.mark.parametrize("launched", [False, True], ids=["plain", "launcher-of-one"])
def test_a_world_of_one_builds_no_deepspeed_op(tmp_path, launched):
    """A plain ``predict`` (or ``deepspeed --num_gpus 1``) joins a group of one through torch alone:
    DeepSpeed's communication backend would build its shared-memory op, a minute on a busy CPU."""
    script = tmp_path / "alone.py"
    script.write_text(textwrap.dedent(ALONE), encoding="utf-8")
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())} if launched else {}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=clean_env(env))
    assert proc.returncode == 0 and "ALONE OK" in proc.stdout, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["alone.py"]  # the token of check_shared is gone


def test_the_recipe_timeout_defaults_to_the_groups():
    from qa_scale.training.recipe import load_recipe

    base = ["model.tiny={}", "model.tokenizer=x"]
    assert load_recipe(None, base).run.timeout_minutes == distributed.DEFAULT_TIMEOUT_MINUTES == 60
    assert load_recipe(None, [*base, "run.timeout_minutes=180"]).run.timeout_minutes == 180
    with pytest.raises(ValueError, match="run.timeout_minutes: must be ≥ 1"):
        load_recipe(None, [*base, "run.timeout_minutes=0.5"])
