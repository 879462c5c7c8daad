"""Resuming from an earlier checkpoint moves the later ones aside; every rank draws its own dropout
masks from one global data order; half-precision checkpoints load as fp32 master weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import sample_workdir, train_script
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa_scale.training import checkpoint
from qa_scale.training.checkpoint import tag_of
from qa_scale.training.export import consolidated_state_dict
from qa_scale.training.loop import seed_rank

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- fast: no engine


def test_ranks_draw_apart_and_rank_zero_draws_what_the_seed_gives():
    seed_rank(7, 0)
    zero = torch.rand(8)
    seed_rank(7, 1)
    one = torch.rand(8)
    torch.manual_seed(7)
    assert torch.equal(zero, torch.rand(8))  # one process: unchanged by the per-rank seeding
    assert not torch.equal(zero, one)


def fake_commit(ckpts: Path, step: int, committed: bool = True) -> Path:
    folder = ckpts / tag_of(step)
    folder.mkdir(parents=True)
    (folder / "shard.pt").write_bytes(b"x")
    if committed:
        (folder / "COMMITTED.json").write_text(json.dumps({"step": step, "world_size": 1}))
    return folder


def test_resuming_from_an_earlier_step_moves_the_later_checkpoints_aside(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        fake_commit(ckpts, step)
    fake_commit(ckpts, 16, committed=False)  # torn: nothing picks it, save replaces it
    assert checkpoint.abandon_later(ckpts, 4) == [tag_of(8), tag_of(12)]
    assert [tag for _, tag in checkpoint.committed(ckpts)] == [tag_of(4)]
    assert checkpoint.find(ckpts, "auto") == tag_of(4)
    (aside,) = ckpts.glob("abandoned-after-step-00000004-*")
    assert sorted(p.name for p in aside.iterdir()) == [tag_of(8), tag_of(12)]  # moved whole, not deleted
    assert (aside / tag_of(12) / "COMMITTED.json").exists() and (aside / tag_of(12) / "shard.pt").exists()
    assert (ckpts / tag_of(16)).exists()
    assert checkpoint.abandon_later(ckpts, 4) == []  # nothing later any more
    fake_commit(ckpts, 8)  # the redone step, committed, then another resume from 4 within the same second
    assert checkpoint.abandon_later(ckpts, 4) == [tag_of(8)]
    assert len(list(ckpts.glob("abandoned-after-step-00000004-*"))) == 2
    checkpoint.prune(ckpts, keep=1, protect=set())  # pruning never reaches into the folders aside
    assert (aside / tag_of(8) / "shard.pt").exists()


def fake_results(out: Path, steps, names=("model", "summary.json")) -> None:
    """What a run's end writes beside its checkpoints; the summary says the step (``None``: no summary)."""
    for name in names:
        if name == "summary.json":
            if steps is not None:
                (out / name).write_text(steps if isinstance(steps, str) else json.dumps({"steps": steps}))
        else:
            (out / name).mkdir()
            (out / name / "weights.bin").write_bytes(name.encode())


def test_a_fresh_start_moves_the_export_and_summary_of_another_run_aside(tmp_path):
    ckpts = tmp_path / "checkpoints"
    fake_commit(ckpts, 4)
    fake_results(tmp_path, 4, ("model", "adapter", "summary.json"))
    assert checkpoint.abandon_later(ckpts, 0) == [tag_of(4), "model", "adapter", "summary.json"]
    assert not any((tmp_path / name).exists() for name in ("model", "adapter", "summary.json"))
    (aside,) = ckpts.glob("abandoned-after-step-00000000-*")
    assert (aside / "model" / "weights.bin").read_bytes() == b"model"  # moved, not deleted
    assert json.loads((aside / "summary.json").read_text()) == {"steps": 4}


def test_the_results_of_the_step_resumed_from_or_an_earlier_one_stay(tmp_path):
    ckpts = tmp_path / "checkpoints"
    fake_commit(ckpts, 8)
    fake_results(tmp_path, 8)  # a finished run resumed with --resume auto: nothing to redo, nothing moved
    assert checkpoint.abandon_later(ckpts, 8) == []
    (tmp_path / "summary.json").write_text(json.dumps({"steps": 4, "finished": False}))  # stopped at 4
    assert checkpoint.abandon_later(ckpts, 8) == [] and (tmp_path / "model").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.sets(st.sampled_from([4, 8, 12, 16]), max_size=4), torn=st.sets(st.sampled_from([4, 8, 12, 16])),
       summary=st.one_of(st.none(), st.sampled_from([0, 4, 8, 12, 16]), st.sampled_from(["{", "[]", '{"steps": "x"}'])),
       names=st.sets(st.sampled_from(["model", "adapter"])), start=st.sampled_from([0, 4, 8, 12, 16]))
def test_after_moving_aside_nothing_later_than_the_start_is_left_and_nothing_is_lost(
        tmp_path_factory, steps, torn, summary, names, start):
    """Any folder of checkpoints (committed or torn), export and summary (readable or not), any start step:
    what stays belongs to the start step or an earlier one, and every file is still somewhere."""
    out = tmp_path_factory.mktemp("run")
    ckpts = out / "checkpoints"
    for step in sorted(steps | torn):
        fake_commit(ckpts, step, committed=step in steps)
    fake_results(out, summary, (*sorted(names), "summary.json"))
    files = lambda: sorted(p.name for p in out.rglob("*") if p.is_file())  # noqa: E731
    before = files()
    checkpoint.abandon_later(ckpts, start)
    assert files() == before
    assert all(s <= start for s, _ in checkpoint.committed(ckpts))
    left = [name for name in ("model", "adapter", "summary.json") if (out / name).exists()]
    if left:  # a readable summary of an earlier (or this) step vouches for what is left
        assert json.loads((out / "summary.json").read_text())["steps"] <= start


def test_resuming_from_the_newest_moves_nothing(tmp_path):
    ckpts = tmp_path / "checkpoints"
    for step in (4, 8):
        fake_commit(ckpts, step)
    assert checkpoint.abandon_later(ckpts, 8) == []
    assert not list(ckpts.glob("abandoned-*"))


def test_a_half_precision_checkpoint_loads_as_fp32_master_weights(tmp_path):
    from transformers import BertForQuestionAnswering

    from qa_scale.modeling.model import load_qa_model, tiny_bert_config

    for dtype in (torch.bfloat16, torch.float16):
        folder = tmp_path / str(dtype)
        model = BertForQuestionAnswering(tiny_bert_config(100, hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=2, intermediate_size=64))
        model.to(dtype).save_pretrained(folder)
        assert json.loads((folder / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
        loaded = load_qa_model(str(folder))
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        want = model.state_dict()
        assert all(torch.equal(t, want[k].float()) for k, t in loaded.state_dict().items())  # exact upcast


# ---------------------------------------------------------------- 2 CPU ranks (gloo)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return sample_workdir(tmp_path_factory.mktemp("resume"))


def overrides(root: Path, out: str, **extra) -> list[str]:
    values = {
        "model.tokenizer": root / "tok",
        "model.tiny": "{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
                      "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
        "data.train_file": root / "data" / "squad_train.json", "data.dev_file": "null",
        "data.windows.max_seq_len": 64, "data.windows.max_question_len": 32, "data.windows.doc_overlap": 16,
        "optim.lr": 1e-3, "optim.max_steps": 12, "optim.micro_batch_size": 2, "optim.global_batch_size": 4,
        "run.output_dir": root / out, "run.precision": "fp32", "run.deepspeed": ROOT / "ds_configs" / "zero2_bf16.json",
        "run.log_every": 1, "run.save_every": 4, "run.keep_checkpoints": 5, "run.eval_every": 100,
        "run.export": "false", "run.tensorboard": "false",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def abandoned(workdir):
    """2 ranks train 12 steps that unlearn after step 4 (commits 4, 8, 12), then resume from step 4 without
    the ascent for 4 steps (a new step 8)."""
    ckpts = workdir / "run" / "checkpoints"
    train_script({"ascend_after": 4}, overrides(workdir, "run"), 2, workdir, timeout=300)
    before = sorted(p.parent.name for p in ckpts.glob("step-*/COMMITTED.json"))
    rng = {rank: torch.load(ckpts / tag_of(4) / f"rng-rank-{rank:03d}.pt", weights_only=False) for rank in (0, 1)}
    proc = train_script({}, overrides(workdir, "run", **{"run.resume": ckpts / tag_of(4), "run.stop_after": 4}),
                        2, workdir, timeout=300)
    return ckpts, before, rng, proc


@pytest.mark.distributed
def test_each_rank_draws_its_own_dropout_masks_from_one_data_order(abandoned):
    _, _, rng, _ = abandoned
    assert not torch.equal(rng[0]["torch"], rng[1]["torch"])  # dropout (any torch draw): per rank
    assert rng[0]["python"] == rng[1]["python"]
    for a, b in zip(rng[0]["numpy"], rng[1]["numpy"]):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b


@pytest.mark.distributed
def test_a_resume_from_an_earlier_step_saves_the_redone_steps_and_nothing_picks_the_abandoned(abandoned):
    ckpts, before, _, proc = abandoned
    assert before == [tag_of(4), tag_of(8), tag_of(12)]
    assert sorted(p.parent.name for p in ckpts.glob("step-*/COMMITTED.json")) == [tag_of(4), tag_of(8)]
    assert checkpoint.find(ckpts, "auto") == tag_of(8)  # not the abandoned step 12
    (aside,) = ckpts.glob("abandoned-after-step-00000004-*")
    assert sorted(p.name for p in aside.glob("step-*")) == [tag_of(8), tag_of(12)]
    assert "abandoned" in proc.stderr + proc.stdout  # said, with where they went
    redone, old = consolidated_state_dict(ckpts, tag_of(8)), consolidated_state_dict(aside, tag_of(8))
    assert old.keys() == redone.keys() and not all(torch.equal(redone[k], old[k]) for k in old)
    summary = json.loads((ckpts.parent / "summary.json").read_text())
    assert summary["steps"] == 8
    steps = [json.loads(x)["step"] for x in (ckpts.parent / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_a_fresh_run_in_a_folder_of_another_run_saves_and_logs_its_own_steps(workdir):
    """``run.resume`` unset over a finished run: its committed checkpoints are moved aside, so the new run's
    saves are not skipped (the export would take the old weights) and its log holds only the new steps."""
    run = workdir / "again"
    first = {"run.export": "true", "run.clean_checkpoints": "none"}  # the first run leaves a model/ behind
    for seed, extra in ((1, first), (2, {})):
        train_script({}, overrides(workdir, "again", **{"optim.max_steps": 4, "run.seed": seed, **extra}), None, workdir)
    train_script({}, overrides(workdir, "clean2", **{"optim.max_steps": 4, "run.seed": 2}), None, workdir)
    (aside,) = (run / "checkpoints").glob("abandoned-after-step-00000000-*")
    assert sorted(p.name for p in aside.glob("step-*")) == [tag_of(4)]
    # the second run exports nothing: the first run's model/ must not pass for its result
    assert not (run / "model").exists() and (aside / "model" / "config.json").exists()
    new, clean = (consolidated_state_dict(r / "checkpoints", tag_of(4)) for r in (run, workdir / "clean2"))
    old = consolidated_state_dict(aside, tag_of(4))
    assert all(torch.equal(new[k], clean[k]) for k in clean) and not all(torch.equal(new[k], old[k]) for k in old)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
