"""Speed levers and the outputs they must leave unchanged: a micro-batch without padding runs without an
attention mask (always on), ZeRO off with a multi-tensor AdamW (``ds_configs/zero0_bf16.json``), and
``run.compile``. Each is checked on CPU against the run without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import sample_workdir, train_script

from qa_scale.data.batches import collate, drop_full_mask
from qa_scale.modeling.model import tiny_bert_config
from qa_scale.training.checkpoint import tag_of
from qa_scale.training.export import consolidated_state_dict
from qa_scale.training.optimizer import build_optimizer
from qa_scale.training.recipe import OptimSection, load_recipe

ROOT = Path(__file__).resolve().parents[2]
ZERO0 = ROOT / "ds_configs" / "zero0_bf16.json"
LOSS_RTOL = 1e-4  # compiled vs eager, fp32: only the order of float operations differs


# ---------------------------------------------------------------- fast: no engine


def tiny_reader(attn: str = "sdpa"):
    from transformers import BertForQuestionAnswering

    torch.manual_seed(0)
    config = tiny_bert_config(100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, max_position_embeddings=64)
    config._attn_implementation = attn
    return BertForQuestionAnswering(config)


LENGTHS = np.array([24, 24, 24, 21, 23])  # windows 0-2 fill a width of 24; 3 and 4 need padding


def windows() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"input_ids": rng.integers(5, 100, (5, 32)), "token_type_ids": (np.arange(32)[None, :] >= 8).repeat(5, 0),
            "start_positions": np.array([9, 10, 11, 12, 13]), "end_positions": np.array([12, 14, 11, 15, 20])}


def test_only_a_micro_batch_without_padding_loses_its_mask():
    arrays = windows()
    for idx in ([0, 1, 2], [0, 1]):  # every window fills the width
        full = collate(arrays, LENGTHS, np.array(idx))
        assert full["attention_mask"].shape[1] == 24 and bool(full["attention_mask"].all())
        dropped = drop_full_mask(full, LENGTHS[idx])
        assert "attention_mask" not in dropped and dropped.keys() == full.keys() - {"attention_mask"}
        assert all(dropped[k] is full[k] for k in dropped)
    for idx in ([0, 3], [4], [3, 4]):  # padding: to the longest window, or the longest rounded up to 8
        padded = collate(arrays, LENGTHS, np.array(idx))
        assert drop_full_mask(padded, LENGTHS[idx]) is padded


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_no_mask_gives_the_logits_loss_and_gradients_of_the_all_ones_mask(attn):
    model = tiny_reader(attn)
    full = collate(windows(), LENGTHS, np.array([0, 1, 2]))
    results = []
    for batch in (full, drop_full_mask(full, LENGTHS[:3])):
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        results.append((out.start_logits, out.end_logits, out.loss, [p.grad.clone() for p in model.parameters()]))
    (s1, e1, l1, g1), (s2, e2, l2, g2) = results
    assert torch.equal(s1, s2) and torch.equal(e1, e2) and torch.equal(l1, l2)  # bit for bit
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_without_the_mask_transformers_does_not_read_it_on_the_host(monkeypatch):
    """The reason for the lever: with an all-ones mask, transformers decides each forward, from the mask's
    values, whether SDPA may go without it (on a GPU, a read that waits for the device)."""
    reads = []
    original = torch.Tensor.__bool__

    def counting(self):
        import sys

        if sys._getframe(1).f_code.co_filename.endswith("masking_utils.py"):
            reads.append(1)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counting)
    model = tiny_reader("sdpa").eval()
    full = collate(windows(), LENGTHS, np.array([0, 1, 2]))
    with torch.no_grad():
        model(**full)
        assert len(reads) == 1
        model(**drop_full_mask(full, LENGTHS[:3]))
    assert len(reads) == 1


def test_zero0_gets_a_multi_tensor_adamw_with_names_and_other_stages_the_plain_one():
    model, optim = tiny_reader(), OptimSection()
    names = {n for n, p in model.named_parameters()}
    plain = build_optimizer(model, optim, cpu_offload=False, zero_stage=2)
    assert not plain.defaults["foreach"] and not plain.defaults["fused"]
    assert all("param_names" not in g for g in plain.param_groups)  # ZeRO flattens: names would not fit
    cpu = build_optimizer(model, optim, cpu_offload=False, zero_stage=0, device="cpu")
    assert cpu.defaults["foreach"] is True and not cpu.defaults["fused"]
    assert sorted(n for g in cpu.param_groups for n in g["param_names"]) == sorted(names)
    for group in cpu.param_groups:
        named = dict(model.named_parameters())
        assert all(named[n] is p for n, p in zip(group["param_names"], group["params"], strict=True))
    cuda = build_optimizer(model, optim, cpu_offload=False, zero_stage=0, device=torch.device("cuda"))
    assert cuda.defaults["fused"] is True and not cuda.defaults["foreach"]


def test_the_zero0_template_resolves_to_stage_0():
    from qa_scale.training import ds_config

    config = load_recipe(None, ["model.tiny={hidden_size: 32}", "model.tokenizer=tok", "run.output_dir=x"])
    ds = ds_config.resolve(ZERO0, config, world_size=2, hidden_size=32)
    assert ds_config.zero_stage(ds) == 0 and ds["bf16"]["enabled"] is True
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (8, 2)
    assert ds_config.zero_stage(ds_config.resolve(ROOT / "ds_configs" / "zero2_bf16.json", config, 2, 32)) == 2
    assert ds_config.zero_stage({}) == 0  # DeepSpeed's default when a template has no ZeRO block


# ---------------------------------------------------------------- real runs: 1 process and 2 CPU ranks


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return sample_workdir(tmp_path_factory.mktemp("levers"))


def overrides(root: Path, out: str, **extra) -> list[str]:
    values = {
        "model.tokenizer": root / "tok",
        "model.tiny": "{hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64, "
                      "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
        "data.train_file": root / "data" / "squad_train.json", "data.dev_file": "null",
        # 192 tokens: the sample paragraphs then end in shorter windows, so that steps 1-4 hold windows of the
        # full width only (no mask) and step 5 two narrower padded micro-batches (a new width, with a mask)
        "data.windows.max_seq_len": 192, "data.windows.max_question_len": 32, "data.windows.doc_overlap": 32,
        "optim.lr": 1e-3, "optim.max_steps": 8, "optim.micro_batch_size": 2, "optim.global_batch_size": 4,
        "run.output_dir": root / out, "run.precision": "fp32", "run.deepspeed": ZERO0,
        "run.log_every": 1, "run.save_every": 4, "run.keep_checkpoints": 5, "run.eval_every": 100,
        "run.export": "true", "run.tensorboard": "false",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def rows(run: Path) -> list[dict]:
    """metrics.jsonl as written, without the wall-clock rates."""
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text("utf-8").splitlines()]
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "tokens_per_s", "mfu")} for r in records]


def whole_and_resumed(root: Path, name: str, ranks: int | None, **extra) -> tuple[Path, Path]:
    """A run of 8 steps, and the same stopped after 4 and resumed; both export."""
    whole, broken = f"{name}-whole", f"{name}-broken"
    train_script({"report": True}, overrides(root, whole, **extra), ranks, root, timeout=300)
    train_script({}, overrides(root, broken, **extra, **{"run.stop_after": 4}), ranks, root, timeout=300)
    train_script({}, overrides(root, broken, **extra, **{"run.resume": "auto"}), ranks, root, timeout=300)
    return root / whole, root / broken


def assert_resumed_exactly(whole: Path, broken: Path) -> None:
    got, want = rows(broken), rows(whole)
    assert [r["step"] for r in got] == list(range(1, 9))
    assert got == want  # losses, accuracy, lr: exactly
    a, b = (consolidated_state_dict(run / "checkpoints", tag_of(8)) for run in (broken, whole))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def exported(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run / "model" / "model.safetensors")


@pytest.fixture(scope="module")
def one_process(workdir):
    return whole_and_resumed(workdir, "one", None)


@pytest.fixture(scope="module")
def two_ranks(workdir):
    short = {"data.windows.max_seq_len": 64, "data.windows.doc_overlap": 16}  # bf16 matmuls are slow on a CPU
    return whole_and_resumed(workdir, "two", 2, **{"run.precision": "bf16", **short})


@pytest.mark.slow
def test_zero0_in_one_process_steps_a_foreach_adamw_resumes_exactly_and_exports(one_process):
    whole, broken = one_process
    report = json.loads((whole / "report.json").read_text())
    assert report["optimizer"] == {"class": "AdamW", "fused": None, "foreach": True, "wrapper": "AdamW"}  # fp32: bare
    assert json.loads((whole / "ds_config.json").read_text())["zero_optimization"]["stage"] == 0
    summary = json.loads((whole / "summary.json").read_text())
    assert (summary["zero_stage"], summary["compiled"]) == (0, False)  # the run says what it ran
    assert_resumed_exactly(whole, broken)
    weights, final = exported(broken), consolidated_state_dict(broken / "checkpoints", tag_of(8))
    assert all(torch.equal(weights[k], final[k]) for k in final)


@pytest.mark.slow
def test_training_micro_batches_without_padding_get_no_mask(one_process):
    masks = json.loads((one_process[0] / "report.json").read_text())["masks"]
    assert masks["all_ones"] == 0 and masks["none"] > 0 and masks["padded"] > 0, masks
    assert sum(masks.values()) == 8 * 2  # 8 steps of 2 micro-batches


@pytest.mark.slow
@pytest.mark.distributed
def test_zero0_on_two_ranks_in_bf16_resumes_exactly_and_exports_the_fp32_masters(two_ranks):
    whole, broken = two_ranks
    report = json.loads((whole / "report.json").read_text())
    assert report["optimizer"] == {"class": "AdamW", "fused": None, "foreach": True,
                                   "wrapper": "FP16_UnfusedOptimizer"}  # DeepSpeed's bf16 wrapper of stage 0
    assert_resumed_exactly(whole, broken)
    module = torch.load(broken / "checkpoints" / tag_of(8) / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    weights = exported(broken)
    assert weights.keys() == module.keys()
    for name, tensor in weights.items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor.to(torch.bfloat16), module[name]), name
    assert sum(not torch.equal(t, t.to(torch.bfloat16).float()) for t in weights.values()) > len(weights) // 2


@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses(workdir, one_process):
    """Eight steps of two micro-batches: the full width without a mask first (one graph), then narrower
    padded micro-batches (a new width and a mask: more graphs)."""
    out = workdir / "compiled"
    train_script({"report": True}, overrides(workdir, "compiled", **{"run.compile": "true", "run.export": "false"}),
                 None, workdir, timeout=300)
    report = json.loads((out / "report.json").read_text())
    assert report["compiled"] and report["graphs"] >= 2 and report["masks"]["padded"] > 0, report
    assert json.loads((out / "summary.json").read_text())["compiled"] is True
    got, want = rows(out), rows(one_process[0])
    assert [r["step"] for r in got] == list(range(1, 9))
    np.testing.assert_allclose([r["loss"] for r in got], [r["loss"] for r in want], rtol=LOSS_RTOL)
    assert [(r["acc"], r["lr"]) for r in got] == [(r["acc"], r["lr"]) for r in want]
