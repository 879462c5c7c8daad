"""`qa-scale distill`: the teacher is the ensemble's combination of the training stores, the student
learns it through the training engine, and stores of other windows are refused before any step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_scale.cli import main
from qa_scale.ensemble.combine import ensemble, mean_logits, normalise
from qa_scale.ensemble.distill import span_kl, teacher_logits, teacher_members
from qa_scale.evaluation.decode import decode
from qa_scale.inference.logits_store import open_store
from qa_scale.runtime.distributed import single
from qa_scale.training.recipe import DistillSection, load_recipe
from cli_runs import qa_scale, sample_files
from reader_runs import TINY, group_env_restored, make_readers, refused, save_reader

WINDOWS = ["--max-seq-len", "64", "--max-question-len", "24", "--doc-overlap", "16"]
RECIPE_WINDOWS = ["data.windows.max_seq_len=64", "data.windows.max_question_len=24", "data.windows.doc_overlap=16"]


@pytest.fixture(scope="module")
def readers(tmp_path_factory):
    return make_readers(tmp_path_factory.mktemp("distill_readers"))


@pytest.fixture
def clean_group_env():
    with group_env_restored():
        yield


# ---------------------------------------------------------------- the teacher is the ensemble


@pytest.mark.parametrize("rule", ["mean_logits", "mean_log_softmax"])
def test_the_teacher_is_the_ensemblers_combination_of_the_same_stores(readers, tmp_path, rule):
    paths = [m.parent / "dev_store" for m in readers["models"]]
    stores = [open_store(p) for p in paths]
    weights = normalise([0.5, 0.3, 0.2], 3)
    start, end = teacher_logits(stores, weights, rule, tmp_path / "cache", single())
    assert isinstance(start, np.memmap) and start.dtype == np.float32  # read row by row, never whole
    want = mean_logits(stores, weights, rule)
    assert np.array_equal(start, want[0]) and np.array_equal(end, want[1])  # bit for bit, padding −inf included
    # decoded, the teacher answers exactly what `qa-scale ensemble` answers with these weights and rule
    ens = ensemble(stores, weights, rule, nbest=False)
    got = decode(stores[0].windows, np.asarray(start), np.asarray(end), stores[0].examples, ens.decode_config,
                 nbest=False)
    assert got.predictions == ens.decoded.predictions
    again = teacher_logits(stores, weights, rule, tmp_path / "cache", single())  # reused, not recomputed
    assert Path(again[0].filename) == Path(start.filename)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_teacher_recipe_gives_its_weights_and_rule(readers, tmp_path):
    models = readers["models"]
    recipe = tmp_path / "teacher.yaml"
    recipe.write_text("members:\n" + "".join(f"- {{name: m{n}, weight: {w}, model: {m}}}\n"
                                             for n, (w, m) in enumerate(zip([3, 1, 0], models)))
                      + "combine: mean_log_softmax\n", encoding="utf-8")
    # given in another order than the recipe's: matched by model path
    section = DistillSection(stores=[str(m.parent / "dev_store") for m in reversed(models)], teacher=str(recipe))
    stores, weights, rule = teacher_members(section)
    assert [s.model_path for s in stores] == [str(m.resolve()) for m in models]
    assert weights.tolist() == [0.75, 0.25, 0.0] and rule == "mean_log_softmax"


# ---------------------------------------------------------------- the KL term


LOGITS = st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=2, max_size=12)


@settings(max_examples=60, deadline=None)
@given(student=LOGITS, teacher=LOGITS, pad=st.integers(0, 6), t=st.sampled_from([0.5, 1.0, 2.0, 4.0]))
def test_span_kl_is_a_kl_over_the_real_tokens_only(student, teacher, pad, t):
    n = min(len(student), len(teacher))
    s = torch.tensor([student[:n] + [0.0] * pad], requires_grad=True)
    teach = torch.tensor([teacher[:n] + [float("-inf")] * pad])
    kl = span_kl(s, teach, t)
    log_p = torch.log_softmax(teach[0, :n].double() / t, -1)
    log_q = torch.log_softmax(s[0, :n].detach().double() / t, -1)
    want = float((log_p.exp() * (log_p - log_q)).sum())
    assert kl.item() >= -1e-6 and kl.item() == pytest.approx(want, rel=1e-3, abs=1e-5)
    kl.backward()
    assert torch.isfinite(s.grad).all() and (s.grad[0, n:] == 0).all()  # padding: no signal, no NaN
    # student logits on padding change nothing
    other = s.detach().clone()
    other[0, n:] = 1e4
    assert span_kl(other, teach, t).item() == pytest.approx(kl.item(), abs=1e-6)
    # the teacher itself is at distance 0
    assert span_kl(teach.masked_fill(torch.isinf(teach), 0.0), teach, t).item() == pytest.approx(0.0, abs=1e-5)


# ---------------------------------------------------------------- recipe and command line


def test_distillation_needs_all_windows_and_stores():
    base = ["model.tiny={}", "model.tokenizer=x"]
    with pytest.raises(ValueError, match="data.strategy: all"):
        load_recipe(None, [*base, "distill.stores=[s]", "data.strategy=random_answer"])
    with pytest.raises(ValueError, match="distill.teacher needs distill.stores"):
        load_recipe(None, [*base, "distill.teacher=t.yaml"])
    with pytest.raises(ValueError, match="distill.kl_weight"):
        load_recipe(None, [*base, "distill.stores=[s]", "distill.kl_weight=1.5"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Sample data, a vocabulary, a teacher reader and its store of the *training* file."""
    root = tmp_path_factory.mktemp("distill_world")
    paths = sample_files(root, train_paragraphs=3, dev_paragraphs=2)
    teacher = save_reader(root / "teacher", root / "tok", seed=5, windows=RECIPE_WINDOWS)
    other = save_reader(root / "other", root / "tok", seed=6, windows=RECIPE_WINDOWS)
    with group_env_restored():
        for model, store in ((teacher, "teacher_train"), (other, "other_train")):
            assert main(["predict", str(model), str(paths["squad_train"]), "--out", str(root / store),
                         "--device", "cpu"]) == 0
        assert main(["predict", str(teacher), str(paths["squad_train"]), "--out", str(root / "wide_train"),
                     "--device", "cpu", "--max-seq-len", "96"]) == 0
    return {"root": root, "paths": paths, "teacher": teacher}


def student_args(world, out: Path, *extra) -> list[str]:
    tiny = json.dumps({**TINY, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    return ["distill", f"model.tiny={tiny}", f"model.tokenizer={world['root'] / 'tok'}",
            f"data.train_file={world['paths']['squad_train']}", *RECIPE_WINDOWS, "data.strategy=all",
            f"run.output_dir={out}", "run.device=cpu", "run.precision=fp32", "run.seed=11",
            f"run.deepspeed={Path(__file__).resolve().parents[2] / 'ds_configs' / 'zero2_bf16.json'}",
            "run.tensorboard=false", "optim.micro_batch_size=8", "optim.global_batch_size=8", *extra]


def test_stores_of_other_windows_are_refused_before_any_step(world, tmp_path, capsys, clean_group_env):
    out = tmp_path / "student"
    refused(capsys, student_args(world, out, "optim.max_steps=2", "--store", world["root"] / "wide_train"),
            world["root"] / "wide_train", "does not hold this run's training windows", "max_seq_len differs: 64 vs 96")
    assert not (out / "checkpoints").exists()
    refused(capsys, ["distill", *student_args(world, out, "optim.max_steps=2")[1:]], "--store")  # no teacher at all
    refused(capsys, student_args(world, out, "optim.max_steps=2", "--store", tmp_path / "nowhere"),
            tmp_path / "nowhere")


def mean_kl(teacher_dir: Path, student_dir: Path) -> float:
    """Mean over windows and start/end of KL(teacher ‖ student) on the windows' real tokens (numpy, T = 1)."""
    a, b = open_store(teacher_dir), open_store(student_dir)
    lengths, total = a.windows.lengths, 0.0
    for x, y in zip(a.logits(mmap=False), b.logits(mmap=False)):
        for w in range(len(lengths)):
            p = np.exp(x[w, :lengths[w]] - np.logaddexp.reduce(x[w, :lengths[w]]))
            log_q = y[w, :lengths[w]] - np.logaddexp.reduce(y[w, :lengths[w]])
            total += float(np.sum(p * (np.log(p) - log_q)))
    return total / (2 * len(lengths))


def test_a_student_with_kl_weight_1_converges_to_its_one_member_teacher(world, tmp_path, clean_group_env):
    root, out = world["root"], tmp_path / "student"
    # In a process of its own, as every training test: a DeepSpeed engine leaves global state behind
    # (its groups) that a later in-process ZeRO-3 engine of the test session would trip over.
    qa_scale(student_args(world, out, "optim.max_steps=150", "optim.lr=3e-3", "optim.warmup_ratio=0.0",
                          "optim.scheduler=constant_with_warmup", "run.save_every=150", "run.log_every=10",
                          "distill.kl_weight=1.0", "distill.temperature=1.0", "--store", root / "teacher_train"),
             None, tmp_path)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["distill"]["stores"] == [str(root / "teacher_train")] and summary["distill"]["kl_weight"] == 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < 0.1 * losses[0], losses  # the trained loss is the KL alone
    assert main(["predict", str(out / "model"), str(world["paths"]["squad_train"]), "--out", str(tmp_path / "s"),
                 "--device", "cpu"]) == 0
    # measured apart from the loop, on every training window: far closer to the teacher than another reader is
    learned, baseline = mean_kl(root / "teacher_train", tmp_path / "s"), mean_kl(root / "teacher_train",
                                                                                  root / "other_train")
    assert learned < 0.1 * baseline, (learned, baseline)


def test_the_epochs_windows_hold_every_answer_window_and_one_negative_per_question(readers):
    from qa_scale.ensemble.distill import chosen_rows

    ws = open_store(readers["models"][0].parent / "dev_store").windows
    positive = ws.start_positions != ws.cls_index
    assert np.array_equal(chosen_rows(ws, "answer", 0, 0), np.flatnonzero(positive))
    draws = []
    for epoch in range(4):
        rows = chosen_rows(ws, "answer_and_negative", 3, epoch)
        assert np.array_equal(rows, chosen_rows(ws, "answer_and_negative", 3, epoch))  # same on every rank
        assert set(np.flatnonzero(positive)) <= set(rows.tolist())
        negatives = rows[~positive[rows]]
        with_negatives = np.unique(ws.example_index[~positive])
        assert sorted(ws.example_index[negatives].tolist()) == with_negatives.tolist()  # one per question
        draws.append(tuple(negatives))
    assert len(set(draws)) > 1  # drawn anew each epoch
