"""The process-group module: device choice, collectives on the rank's device, rank-0-first caches."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from cli_runs import BIN, clean_env, free_port

from qa_scale.runtime import distributed
from qa_scale.runtime.distributed import DeviceError, Dist


class Recorded(Exception):
    """Stops a collective once its tensor has been seen."""


@pytest.fixture
def recording(monkeypatch):
    """Pretend a group exists; record the device of every tensor handed to a collective."""
    seen = []

    def all_reduce(tensor, op=None):
        seen.append(tensor.device)
        raise Recorded

    def broadcast_object_list(objs, src=0, device=None):
        seen.append(torch.device(device))
        raise Recorded

    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "all_reduce", all_reduce)
    monkeypatch.setattr(distributed.dist, "broadcast_object_list", broadcast_object_list)
    return seen


@pytest.mark.parametrize("call", [
    lambda d: distributed.sum_floats([1.0, 2.0], d),
    lambda d: distributed.max_float(3.0, d),
    lambda d: distributed.any_rank(torch.zeros((), device=d.device), ),
    lambda d: distributed.broadcast_object({"em": 1.0}, d),
])
def test_collectives_run_on_the_ranks_device(recording, call):
    """A tensor made on the CPU would fail the first collective of an nccl group: each helper makes
    its tensors on ``Dist.device`` (here the meta device stands in for a GPU)."""
    d = Dist(rank=0, world_size=8, local_rank=0, device=torch.device("meta"))
    with pytest.raises(Recorded):
        call(d)
    assert recording == [torch.device("meta")]


def test_gpus_without_cuda_torch_fail_fast(monkeypatch):
    monkeypatch.setattr(distributed, "gpus_visible", lambda: ["/dev/nvidia0", "/dev/nvidia1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"GPUs are visible \(/dev/nvidia0.*Install a CUDA build of torch"):
        distributed.choose_device("auto")
    assert distributed.choose_device("cpu") == "cpu"  # CPU ranks when asked for
    monkeypatch.setattr(distributed, "gpus_visible", lambda: [])
    assert distributed.choose_device("auto") == "cpu"
    with pytest.raises(DeviceError, match="device cuda was asked for"):
        distributed.choose_device("cuda")


def test_a_recipe_can_ask_for_cpu_ranks():
    from qa_scale.training.recipe import load_recipe

    assert load_recipe(None, ["model.tiny={}", "model.tokenizer=x", "run.device=cpu"]).run.device == "cpu"
    with pytest.raises(ValueError, match="run.device: must be one of"):
        load_recipe(None, ["model.tiny={}", "model.tokenizer=x", "run.device=tpu"])


RANK_SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.runtime import distributed
    from qa_scale.training.recipe import load_recipe
    from qa_scale.training.tasks import QATask

    root, cache = map(Path, [a for a in sys.argv[1:] if not a.startswith("--local_rank")])  # the launcher adds it
    d = distributed.init("cpu")
    config = load_recipe(None, ["model.tiny={}", f"model.tokenizer={root / 'tok'}",
                                f"data.train_file={root / 'data' / 'squad_train.json'}",
                                f"data.dev_file={root / 'data' / 'squad_dev.json'}",
                                "data.windows.max_seq_len=96", "data.windows.max_question_len=24",
                                "data.windows.doc_overlap=16"])
    task = QATask(config, load_tokenizer(root / "tok"), cache, d)
    prints = {"train": task.windows(0).fingerprint()["windows_sha256"],
              "dev": task.dev_windows.fingerprint()["windows_sha256"],
              "entries": sorted(p.name for p in cache.iterdir())}
    (cache.parent / f"rank{d.rank}.json").write_text(json.dumps(prints))
    distributed.leave(True)
''')


@pytest.mark.distributed
@pytest.mark.slow
def test_cold_cache_two_ranks_build_once_and_read_the_same_windows(tmp_path):
    """Rank 0 builds and saves each window cache entry, then the other rank reads it: five cold
    starts in a row, no failure, identical window fingerprints on both ranks."""
    import subprocess

    from cli_runs import sample_files

    paths = sample_files(tmp_path, train_paragraphs=20, dev_paragraphs=5)
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT, encoding="utf-8")
    seen = set()
    for attempt in range(5):
        run = tmp_path / f"cold{attempt}"
        (run / "cache").mkdir(parents=True)
        proc = subprocess.run([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()),
                               str(script), str(tmp_path), str(run / "cache")],
                              capture_output=True, text=True, timeout=300, env=clean_env())
        assert proc.returncode == 0, proc.stderr[-4000:]
        ranks = [json.loads((run / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0] == ranks[1], ranks
        assert len(ranks[0]["entries"]) == 2 and all(e.startswith("windows-") for e in ranks[0]["entries"])
        assert not list((run / "cache").glob(".*")), "no staging folder left behind"
        seen.add(json.dumps(ranks[0], sort_keys=True))
    assert len(seen) == 1  # every cold start builds the same windows


SYNC_SCRIPT = textwrap.dedent('''
    import collections, json, sys
    import torch

    counts = collections.Counter()

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            frame = sys._getframe(1)
            if "/qa_scale/" in frame.f_code.co_filename:
                counts[f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}:{name}"] += 1
            return original(self, *args, **kwargs)
        setattr(torch.Tensor, name, wrapper)

    # every way a tensor's value reaches the host (on a GPU each one waits for the device)
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        counting(name)
    from qa_scale.training.loop import Trainer
    from qa_scale.training.recipe import load_recipe

    trainer = Trainer(load_recipe(None, sys.argv[2:]))
    trainer.run()
    with open(sys.argv[1], "w") as fh:
        json.dump(dict(counts), fh)
''')


@pytest.mark.slow
def test_no_host_sync_per_micro_step(tmp_path):
    """Six optimizer steps of four micro-batches each: the loop reads the device once per step (the
    non-finite guard) and once per log row, never per micro-batch."""
    import subprocess
    import sys

    from cli_runs import sample_files

    paths = sample_files(tmp_path, train_paragraphs=12)
    script = tmp_path / "count.py"
    script.write_text(SYNC_SCRIPT, encoding="utf-8")
    overrides = [f"model.tokenizer={tmp_path / 'tok'}", "model.tiny={hidden_size: 32, num_hidden_layers: 2, "
                 "num_attention_heads: 2, intermediate_size: 64}", f"data.train_file={paths['squad_train']}",
                 "data.windows.max_seq_len=96", "data.windows.max_question_len=24", "data.windows.doc_overlap=16",
                 "optim.max_steps=6", "optim.micro_batch_size=2", "optim.global_batch_size=8",
                 f"run.output_dir={tmp_path / 'run'}", "run.precision=fp32", "run.log_every=3", "run.export=false",
                 "run.tensorboard=false", "run.save_every=1000", "run.device=cpu"]
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "counts.json"), *overrides],
                          capture_output=True, text=True, timeout=300, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = json.loads((tmp_path / "counts.json").read_text())
    per_micro = {k: v for k, v in counts.items()
                 if k.split(":")[1] in ("step", "prepare", "correct", "collate", "to_device", "arrays")}
    assert per_micro == {}, per_micro
    assert counts.get("distributed.py:any_rank:item") == 6  # the guard: once per optimizer step
    assert counts.get("loop.py:log:tolist") == 3  # steps 1, 3 and 6: once per log row
