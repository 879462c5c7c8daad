"""The DeepSpeed engine for real: 2 CPU ranks (gloo) against one plain process, ZeRO-2 and ZeRO-3,
exact resume, a crash while saving, fp16 overflow and non-finite losses, every shipped config."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_runs import BIN, clean_env, qa_scale

from qa_scale import synthetic

ROOT = Path(__file__).resolve().parents[1]
LOSS_RTOL = 1e-4  # 2 ranks vs 1 process: same global batches, fp32; only the reduction order differs
pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=12, dev_paragraphs=3, test_paragraphs=1),
                                  root / "data")
    from qa_scale.data.tokenization import build_char_vocab
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    return root


def base_overrides(root: Path, out: str, **extra) -> list[str]:
    values = {
        "model.tokenizer": root / "tok",
        "model.tiny": "{hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64, "
                      "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
        "data.train_file": root / "data" / "squad_train.json",
        "data.dev_file": "null",
        "data.windows.max_seq_len": 128, "data.windows.max_question_len": 32, "data.windows.doc_overlap": 32,
        "optim.lr": 1e-3, "optim.max_steps": 20, "optim.micro_batch_size": 2, "optim.global_batch_size": 8,
        "optim.warmup_ratio": 0.1,
        "run.output_dir": root / out, "run.precision": "fp32", "run.deepspeed": ROOT / "ds_configs" / "zero2_bf16.json",
        "run.log_every": 1, "run.save_every": 100, "run.eval_every": 100, "run.export": "false",
        "run.tensorboard": "false",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train(root: Path, out: str, ranks: int | None, env: dict | None = None, check: bool = True, **extra):
    """Run `qa-scale train` plainly (ranks=None) or under `deepspeed --num_gpus ranks`."""
    return qa_scale(["train", *base_overrides(root, out, **extra)], ranks, root, env, check)


def losses(root: Path, out: str) -> dict[int, float]:
    rows = [json.loads(x) for x in (root / out / "metrics.jsonl").read_text("utf-8").splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def reference(workdir):
    """One plain process, no launcher: the global batches of every step, by accumulation."""
    train(workdir, "single", None)
    return losses(workdir, "single")


SHM_LEFT = {}


def shm_buffers() -> set:
    return set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))


@pytest.fixture(scope="module")
def zero2(workdir):
    before = shm_buffers()
    train(workdir, "zero2", 2)
    SHM_LEFT["zero2"] = shm_buffers() - before
    return losses(workdir, "zero2")


@pytest.fixture(scope="module")
def zero3(workdir):
    train(workdir, "zero3", 2, **{"run.deepspeed": ROOT / "ds_configs" / "zero3_bf16.json", "run.export": "true",
                                  "data.dev_file": workdir / "data" / "squad_dev.json"})
    return losses(workdir, "zero3")


def test_two_ranks_match_one_process(reference, zero2, zero3):
    assert sorted(reference) == list(range(1, 21))
    ref = np.array([reference[s] for s in range(1, 21)])
    assert ref[-1] < ref[0]  # it learns
    for run in (zero2, zero3):
        np.testing.assert_allclose([run[s] for s in range(1, 21)], ref, rtol=LOSS_RTOL)


def test_cpu_ranks_leave_no_shared_memory_buffers_behind(zero2):
    # DeepSpeed's CPU all-reduce leaves a 69 MB /dev/shm buffer per rank, named after the port;
    # a later run on the same port would race on it. train.init_distributed removes the names.
    assert SHM_LEFT["zero2"] == set()


def test_stopped_mid_epoch_and_resumed_gives_the_same_losses(workdir, zero2):
    train(workdir, "resumed", 2, **{"run.stop_after": 8, "run.save_every": 4})
    summary = json.loads((workdir / "resumed" / "summary.json").read_text())
    assert summary["steps"] == 8 and not summary["finished"]
    train(workdir, "resumed", 2, **{"run.resume": "auto", "run.save_every": 4})
    got = losses(workdir, "resumed")
    assert sorted(got) == list(range(1, 21))  # the log has every step once
    assert [got[s] for s in range(1, 21)] == pytest.approx([zero2[s] for s in range(1, 21)], rel=1e-6)


def test_crash_while_saving_keeps_the_previous_checkpoint(workdir, zero3):
    zero3_cfg = {"run.deepspeed": ROOT / "ds_configs" / "zero3_bf16.json", "run.save_every": 4}
    crashed = train(workdir, "crashed", 2, env={"QA_SCALE_FAULT": "crash-before-commit:8"}, check=False, **zero3_cfg)
    assert crashed.returncode != 0
    ckpts = workdir / "crashed" / "checkpoints"
    assert (ckpts / "step-00000008").exists() and not (ckpts / "step-00000008" / "COMMITTED.json").exists()
    assert (ckpts / "step-00000004" / "COMMITTED.json").exists()
    train(workdir, "crashed", 2, **{**zero3_cfg, "run.resume": "auto"})
    got = losses(workdir, "crashed")
    assert [got[s] for s in range(1, 21)] == pytest.approx([zero3[s] for s in range(1, 21)], rel=1e-6)
    assert (ckpts / "step-00000020" / "COMMITTED.json").exists()


def test_resume_with_another_world_size_is_refused(workdir, zero2):
    proc = train(workdir, "zero2", None, check=False, **{"run.resume": "auto", "optim.max_steps": 30})
    assert proc.returncode != 0 and "written by 2 ranks and this run has 1" in proc.stderr


def test_zero3_export_predicts_what_the_engine_scored(workdir, zero3):
    """The exported model, loaded with from_pretrained, gives the dev EM/F1 the engine measured."""
    from transformers import AutoModelForQuestionAnswering

    from qa_scale import data
    from qa_scale.data import tokenization, windows
    from qa_scale.evaluation import decode, metrics
    from qa_scale.inference import forward
    summary = json.loads((workdir / "zero3" / "summary.json").read_text())
    model = AutoModelForQuestionAnswering.from_pretrained(workdir / "zero3" / "model").eval()
    tok = tokenization.load_tokenizer(workdir / "zero3" / "model")
    dev = data.load(workdir / "data" / "squad_dev.json", "lenient")
    ws = windows.build_windows(dev.examples, tok, windows.WindowConfig(max_seq_len=128, max_question_len=32,
                                                                       doc_overlap=32), labels=False)
    answers = decode.decode(ws, *forward.predict_logits(model, ws), dev.examples).predictions
    scores = metrics.evaluate(answers, data.load_references(workdir / "data" / "squad_dev.json"))
    assert summary["best_checkpoint"] == "step-00000020"  # the last step is the only dev evaluation
    assert (scores.em, scores.f1) == pytest.approx((summary["last_dev"]["em"], summary["last_dev"]["f1"]), abs=1e-9)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "ds_configs").glob("*.json")))
def test_every_shipped_ds_config_trains_in_its_precision(workdir, config):
    precision = "fp16" if "fp16" in config else "bf16"
    out = f"cfg-{config}"
    train(workdir, out, 2, env={"QA_SCALE_CPU_FP16": "1"},
          **{"run.deepspeed": ROOT / "ds_configs" / config, "run.precision": precision, "optim.max_steps": 3})
    run = losses(workdir, out)
    assert sorted(run) == [1, 2, 3] and all(np.isfinite(list(run.values())))
    ds = json.loads((workdir / out / "ds_config.json").read_text())
    assert ds[precision]["enabled"] is True and ds["gradient_accumulation_steps"] == 2


HOOKED = textwrap.dedent("""
    import json, sys, torch
    from qa_scale.training.recipe import load_recipe
    from qa_scale.training.loop import run, TrainingDiverged
    bad = set(json.loads(sys.argv[1]))
    hook = lambda step, loss: loss * float("inf") if step in bad else loss
    try:
        print(json.dumps(run(load_recipe(None, sys.argv[2:]), loss_hook=hook)))
    except TrainingDiverged as err:
        print("DIVERGED", err)
""")


def hooked(root: Path, out: str, bad_steps, **extra):
    proc = subprocess.run([sys.executable, "-c", HOOKED, json.dumps(list(bad_steps)), *base_overrides(root, out, **extra)],
                          cwd=root, capture_output=True, text=True, timeout=600, env=clean_env({"QA_SCALE_CPU_FP16": "1"}))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip().splitlines()[-1]


def test_fp16_overflow_steps_are_skipped_counted_and_logged(workdir):
    fp16 = {"run.precision": "fp16", "run.deepspeed": ROOT / "ds_configs" / "zero2_fp16.json", "optim.max_steps": 8}
    summary = json.loads(hooked(workdir, "fp16-skip", [3, 4], **fp16))
    rows = [json.loads(x) for x in (workdir / "fp16-skip" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["skipped_steps"] for r in rows]
    # the initial 2^16 loss scale may overflow by itself in the first steps; 3 and 4 must be skipped
    assert skipped[2] - skipped[1] == 1 and skipped[3] - skipped[2] == 1 and skipped[4:] == [skipped[3]] * 4
    assert rows[2]["loss"] is None and rows[3]["loss"] is None  # non-finite losses are logged as null
    assert rows[3]["loss_scale"] < rows[1]["loss_scale"]  # the dynamic loss scale backed off
    assert summary["finished"] and summary["skipped_steps"] == skipped[-1]


def test_repeated_fp16_overflow_stops_without_a_corrupt_checkpoint(workdir):
    fp16 = {"run.precision": "fp16", "run.deepspeed": ROOT / "ds_configs" / "zero2_fp16.json", "optim.max_steps": 20,
            "run.save_every": 2, "run.max_nonfinite_steps": 3, "run.keep_checkpoints": 10}
    line = hooked(workdir, "fp16-stop", range(5, 100), **fp16)
    assert line.startswith("DIVERGED 3 consecutive fp16 overflow steps up to step 7")
    ckpts = sorted(p.name for p in (workdir / "fp16-stop" / "checkpoints").glob("step-*"))
    assert ckpts == ["step-00000002", "step-00000004", "step-00000006"]  # nothing after the stop
    from qa_scale.training.export import consolidated_state_dict
    state = consolidated_state_dict(workdir / "fp16-stop" / "checkpoints", "step-00000006")  # saved after a skip
    assert all(np.isfinite(t.detach().float().numpy()).all() for t in state.values())


def test_non_finite_loss_in_fp32_stops_before_the_update(workdir):
    line = hooked(workdir, "fp32-nan", [5], **{"run.save_every": 2, "optim.max_steps": 20})
    assert line.startswith("DIVERGED non-finite loss at step 5 in fp32")
    ckpts = sorted(p.name for p in (workdir / "fp32-nan" / "checkpoints").glob("step-*"))
    assert ckpts[-1] == "step-00000004"


def test_backbone_pretrains_and_loads_as_a_qa_model(workdir):
    from transformers import AutoModelForMaskedLM

    from qa_scale.modeling.model import load_qa_model
    proc = subprocess.run([str(BIN / "qa-scale"), "backbone", str(workdir / "data" / "corpus.txt"), "--out",
                           str(workdir / "bb"), "--steps", "6", "--hidden-size", "32", "--layers", "2", "--heads", "2",
                           "--seq-len", "64", "--batch-size", "8", "--vocab-size", "3000"],
                          cwd=workdir, capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(x) for x in (workdir / "bb" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6 and 0 <= rows[-1]["acc"] <= 1
    mlm = AutoModelForMaskedLM.from_pretrained(workdir / "bb" / "model")
    qa = load_qa_model(str(workdir / "bb" / "model"))
    assert (qa.bert.embeddings.word_embeddings.weight == mlm.bert.embeddings.word_embeddings.weight).all()
    from qa_scale.data.tokenization import (
        load_tokenizer,  # the tokenizer travels with the backbone
    )
    tok = load_tokenizer(workdir / "bb" / "model")
    assert max(tok.get_vocab().values()) + 1 == mlm.config.vocab_size
