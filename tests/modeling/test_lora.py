"""LoRA mode on the real engine: 2 CPU ranks against one process, a complete and resumable ZeRO-3
checkpoint, merged logits equal to adapter logits, the trainable share of a MacBERT-large shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import qa_scale
from reader_runs import tiny_backbone

from qa_scale.modeling.lora import LoraSection, apply_lora, parameter_counts

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12
LOSS_RTOL = 1e-4  # as for full fine-tuning: fp32, same global batches, only the reduction order differs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Sample data, a character vocabulary, and a tiny masked-LM backbone saved like `qa-scale backbone`'s."""
    root = tmp_path_factory.mktemp("lora")
    tiny_backbone(root, train_paragraphs=12, dev_paragraphs=3)
    return root


def lora_train(root: Path, out: str, ranks: int | None, env: dict | None = None, **extra):
    values = {
        "mode": "lora", "model.name_or_path": root / "backbone", "lora.r": 4, "lora.dropout": 0.0,
        "data.train_file": root / "data" / "squad_train.json", "data.dev_file": "null",
        "data.windows.max_seq_len": 128, "data.windows.max_question_len": 32, "data.windows.doc_overlap": 32,
        "optim.lr": 5e-3, "optim.max_steps": STEPS, "optim.micro_batch_size": 2, "optim.global_batch_size": 8,
        "run.output_dir": root / out, "run.precision": "fp32", "run.deepspeed": ROOT / "ds_configs" / "zero3_bf16.json",
        "run.log_every": 1, "run.save_every": 100, "run.eval_every": 100, "run.export": "false",
        "run.tensorboard": "false", **extra,
    }
    qa_scale(["train", *(f"{k}={v}" for k, v in values.items())], ranks, root, env)
    rows = [json.loads(x) for x in (root / out / "metrics.jsonl").read_text("utf-8").splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


@pytest.fixture(scope="module")
def single(workdir):
    return lora_train(workdir, "single", None, **{"run.deepspeed": ROOT / "ds_configs" / "zero2_bf16.json"})


@pytest.fixture(scope="module")
def zero3(workdir):
    return lora_train(workdir, "zero3", 2, **{"run.export": "true", "data.dev_file": workdir / "data" / "squad_dev.json",
                                              "run.eval_every": STEPS})


def fresh_lora_model(workdir: Path):
    from qa_scale.modeling.model import load_qa_model
    return apply_lora(load_qa_model(str(workdir / "backbone"), seed=0, new_head=True), LoraSection(r=4, dropout=0.0))


@pytest.mark.distributed
@pytest.mark.slow
def test_lora_on_two_zero3_ranks_matches_one_process(single, zero3):
    assert sorted(single) == list(range(1, STEPS + 1))
    ref = np.array([single[s] for s in range(1, STEPS + 1)])
    assert ref[-1] < ref[0]  # it learns with the backbone frozen
    np.testing.assert_allclose([zero3[s] for s in range(1, STEPS + 1)], ref, rtol=LOSS_RTOL)


@pytest.mark.distributed
@pytest.mark.slow
def test_zero3_lora_checkpoint_holds_every_adapter_and_head_tensor(workdir, zero3):
    from safetensors.torch import load_file

    from qa_scale.training.export import consolidated_state_dict

    state = consolidated_state_dict(workdir / "zero3" / "checkpoints", f"step-{STEPS:08d}")
    model = fresh_lora_model(workdir)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(".lora_A." in n for n in trainable) and any("qa_outputs.modules_to_save" in n for n in trainable)
    for name, param in trainable.items():
        assert name in state, name
        assert state[name].shape == param.shape and state[name].numel() > 0, name
    # the frozen backbone came through training unchanged, the adapters did not stay at their init
    backbone = load_file(workdir / "backbone" / "model.safetensors")
    query = "bert.encoder.layer.1.attention.self.query"
    torch.testing.assert_close(state[f"base_model.model.{query}.base_layer.weight"], backbone[f"{query}.weight"])
    lora_b = state["base_model.model.bert.encoder.layer.1.attention.self.query.lora_B.default.weight"]
    assert lora_b.abs().sum() > 0  # peft initialises B to zero
    # the exported adapter holds the same tensors, under peft's saved names
    adapter = load_file(workdir / "zero3" / "adapter" / "adapter_model.safetensors")
    assert len(adapter) == len(trainable)
    assert all(t.numel() > 0 for t in adapter.values())


@pytest.mark.distributed
@pytest.mark.slow
def test_zero3_lora_resumes_exactly(workdir, zero3):
    stopped = lora_train(workdir, "resumed", 2, **{"run.stop_after": 5, "run.save_every": 5})
    assert max(stopped) == 5
    resumed = lora_train(workdir, "resumed", 2, **{"run.resume": "auto"})
    assert sorted(resumed) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([resumed[s] for s in range(1, STEPS + 1)],
                               [zero3[s] for s in range(1, STEPS + 1)], rtol=1e-6)


@pytest.mark.distributed
@pytest.mark.slow
def test_merged_model_gives_the_adapter_models_logits(workdir, zero3):
    from transformers import AutoModelForQuestionAnswering

    from qa_scale.data import load
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.data.windows import WindowConfig, build_windows
    from qa_scale.modeling.lora import load_adapter_model
    from qa_scale.modeling.model import load_qa_model

    merged = AutoModelForQuestionAnswering.from_pretrained(workdir / "zero3" / "model").eval()
    adapter = load_adapter_model(load_qa_model(str(workdir / "backbone"), seed=1, new_head=True), workdir / "zero3" / "adapter").eval()
    tok = load_tokenizer(str(workdir / "zero3" / "model"))
    ws = build_windows(load(workdir / "data" / "squad_dev.json").examples[:6], tok,
                       WindowConfig(max_seq_len=128, max_question_len=32, doc_overlap=32))
    batch = {"input_ids": torch.as_tensor(ws.input_ids, dtype=torch.long),
             "token_type_ids": torch.as_tensor(ws.token_type_ids, dtype=torch.long),
             "attention_mask": torch.as_tensor(ws.attention_mask(), dtype=torch.long)}
    with torch.no_grad():
        a, b = merged(**batch), adapter(**batch)
    torch.testing.assert_close(a.start_logits, b.start_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.end_logits, b.end_logits, rtol=1e-5, atol=1e-5)
    summary = json.loads((workdir / "zero3" / "summary.json").read_text())
    assert summary["mode"] == "lora" and summary["adapter"].endswith("adapter")
    # a base from a folder is named as the recipe gave it, not copied; the cards name it too
    saved = json.loads((workdir / "zero3" / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(workdir / "backbone")
    assert not (workdir / "zero3" / "adapter" / "base").exists()
    for folder in ("adapter", "model"):
        card = (workdir / "zero3" / folder / "README.md").read_text(encoding="utf-8")
        assert f"base_model: {workdir / 'backbone'}\n" in card and f"`{workdir / 'backbone'}`" in card
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"]


@pytest.mark.distributed
@pytest.mark.slow
def test_lora_in_fp16_on_zero2(workdir):
    losses = lora_train(workdir, "fp16", 2, env={"QA_SCALE_CPU_FP16": "1"},
                        **{"optim.max_steps": 3, "run.precision": "fp16",
                           "run.deepspeed": ROOT / "ds_configs" / "zero2_fp16.json"})
    assert sorted(losses) == [1, 2, 3]
    assert all(np.isfinite(v) for v in losses.values() if v is not None)


def test_macbert_large_shape_trains_under_two_percent_with_lora_defaults():
    from transformers import BertForQuestionAnswering

    from qa_scale.modeling.model import tiny_bert_config

    config = tiny_bert_config(21128, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                              intermediate_size=4096)
    with torch.device("meta"):  # shapes only: no 1.3 GB of weights
        model = apply_lora(BertForQuestionAnswering(config), LoraSection())
    total, trainable = parameter_counts(model)
    assert 320e6 < total < 330e6  # MacBERT-large: about 325 M
    # r=8 on q, k, v, attention output (4 × 2·1024·8) and both FFN layers (2 × 8·(1024+4096)) in 24
    # layers, plus the 2 × 1024 + 2 head
    assert trainable == 24 * (4 * 2 * 1024 * 8 + 2 * 8 * (1024 + 4096)) + 2 * 1024 + 2
    assert trainable / total < 0.02


def test_unknown_target_module_is_refused_with_the_names_there_are():
    from qa_scale.modeling.model import load_qa_model

    model = load_qa_model(None, vocab_size=50, tiny={}, seed=0)
    with pytest.raises(ValueError, match=r"q_proj.*query"):
        apply_lora(model, LoraSection(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="r: must be ≥ 1"):
        LoraSection(r=0)


def test_recipe_takes_lora_settings_and_refuses_unknown_ones():
    from qa_scale.training.recipe import load_recipe

    config = load_recipe(None, ["mode=lora", "model.tiny={}", "model.tokenizer=x", "lora.r=16",
                                "lora.target_modules=[query, value]"])
    assert config.mode == "lora" and config.lora.r == 16 and config.lora.target_modules == ["query", "value"]
    with pytest.raises(ValueError, match="did you mean lora.alpha"):
        load_recipe(None, ["model.tiny={}", "model.tokenizer=x", "lora.alpah=3"])


def test_lora_passes_segment_ids_through():
    """peft's QUESTION_ANS wrapper drops token_type_ids; ours must not (at init LoRA B = 0, so the
    wrapped model computes exactly what the bare model does, segment embeddings included)."""
    from qa_scale.modeling.model import load_qa_model

    bare = load_qa_model(None, vocab_size=50, tiny={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
                         seed=0).eval()
    ids, segments = torch.randint(5, 50, (2, 12)), torch.tensor([[0] * 6 + [1] * 6] * 2)
    with torch.no_grad():
        expected = bare(input_ids=ids, token_type_ids=segments).start_logits
        assert not torch.allclose(expected, bare(input_ids=ids).start_logits)  # the segments matter
        wrapped = apply_lora(bare, LoraSection(dropout=0.0)).eval()
        torch.testing.assert_close(wrapped(input_ids=ids, token_type_ids=segments).start_logits, expected)


@pytest.mark.distributed
@pytest.mark.slow
def test_compare_runs_both_modes_and_writes_table_json_and_chart(workdir):
    out = workdir / "compare"
    common = [f"model.name_or_path={workdir / 'backbone'}", f"data.train_file={workdir / 'data' / 'squad_train.json'}",
              f"data.dev_file={workdir / 'data' / 'squad_dev.json'}", "data.windows.max_seq_len=128",
              "data.windows.max_question_len=32", "data.windows.doc_overlap=32", "optim.max_steps=8",
              "optim.micro_batch_size=4", "optim.global_batch_size=8", "optim.lr=2e-3", "run.precision=fp32",
              f"run.deepspeed={ROOT / 'ds_configs' / 'zero2_bf16.json'}", "run.eval_every=4", "run.tensorboard=false"]
    proc = qa_scale(["compare", *common, "--out", out, "--lora-set", "optim.lr=5e-3", "--bootstrap", "500", "--json"],
                    None, workdir)
    result = json.loads(proc.stdout)
    for mode in ("full", "lora"):
        run, summary = result["runs"][mode], json.loads((out / mode / "summary.json").read_text())
        assert summary["mode"] == mode and summary["finished"]
        assert run["dev_em"] == pytest.approx(summary["best_dev_em"])  # rescored from the best model's answers
        for key in ("dev_em", "dev_f1"):
            lo, hi = run[f"{key}_ci"]
            assert lo <= run[key] <= hi
        assert run["peak_memory_bytes"] > 0 and run["samples_per_s"] > 0
    full, lora = result["runs"]["full"], result["runs"]["lora"]
    assert full["trainable_parameters"] == full["total_parameters"]
    assert 0 < lora["trainable_parameters"] < full["trainable_parameters"] / 5
    table = (out / "comparison.md").read_text()
    assert "| trainable parameters |" in table and "dev EM [95% CI]" in table
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    # collecting the same two runs again gives the same figures; runs with other settings are refused
    again = qa_scale(["compare", "--collect", out / "full", out / "lora", "--out", workdir / "compare2",
                      "--bootstrap", "500", "--json"], None, workdir)
    assert json.loads(again.stdout)["runs"]["lora"]["dev_em"] == lora["dev_em"]
    bad = qa_scale(["compare", "--collect", out / "full", out / "full", "--out", workdir / "compare3"], None, workdir,
                   check=False)
    assert bad.returncode == 2 and "expected a full and a LoRA run" in bad.stderr


TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tiny_lora(tmp_path_factory):
    """A LoRA run on a random tiny BERT (model.tiny, no name_or_path): 2 steps, one process, with a dev file."""
    from qa_scale import synthetic
    from qa_scale.data.tokenization import build_char_vocab

    root = tmp_path_factory.mktemp("tiny_lora")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=2, test_paragraphs=1),
                                root / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=2000)
    values = {"mode": "lora", "model.tiny": json.dumps(TINY), "model.tokenizer": root / "tok", "lora.r": 4,
              "lora.dropout": 0.0, "data.train_file": paths["squad_train"], "data.dev_file": paths["squad_dev"],
              "data.windows.max_seq_len": 64, "data.windows.max_question_len": 24, "data.windows.doc_overlap": 16,
              "optim.lr": 5e-3, "optim.max_steps": 2, "optim.micro_batch_size": 4, "optim.global_batch_size": 4,
              "run.output_dir": root / "run", "run.precision": "fp32", "run.seed": 7,
              "run.deepspeed": ROOT / "ds_configs" / "zero2_bf16.json", "run.tensorboard": "false"}
    qa_scale(["train", *(f"{k}={v}" for k, v in values.items())], None, root, env={"HF_HUB_OFFLINE": "1"})
    return {"root": root, "run": root / "run", "tok": root / "tok"}


@pytest.mark.slow
def test_adapter_of_a_random_base_carries_its_base_and_loads_offline(tiny_lora, monkeypatch):
    """A base built from a config exists in no folder: the adapter saves it and names it, so peft needs no hub."""
    from peft import AutoPeftModelForQuestionAnswering
    from safetensors.torch import load_file
    from transformers import AutoModelForQuestionAnswering

    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.inference.options import ReaderOptions
    from qa_scale.modeling.model import load_qa_model
    from qa_scale.serving.answering import Query, answer
    from qa_scale.serving.readers import load_panel

    run, adapter = tiny_lora["run"], tiny_lora["run"] / "adapter"
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(adapter / "base")  # was null: peft then asked the hub for "None"
    # the base is the model training started from: the run's seed builds the same random model
    tok = load_tokenizer(str(tiny_lora["tok"]))
    initial = load_qa_model(None, vocab_size=max(tok.get_vocab().values()) + 1, tiny=TINY, seed=7).state_dict()
    base = load_file(adapter / "base" / "model.safetensors")
    assert base.keys() == initial.keys()
    for key in initial:
        torch.testing.assert_close(base[key], initial[key], rtol=0, atol=0, msg=key)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    merged = AutoPeftModelForQuestionAnswering.from_pretrained(adapter).merge_and_unload().state_dict()
    exported = AutoModelForQuestionAnswering.from_pretrained(run / "model").state_dict()
    assert merged.keys() == exported.keys()
    for key in exported:
        torch.testing.assert_close(merged[key], exported[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(merged["qa_outputs.weight"], initial["qa_outputs.weight"])  # the trained head, merged

    # `qa-scale answer runs/x/adapter` still finds the base, and answers as model/ does
    queries = [Query("北京是中国的首都，上海是中国最大的城市。", "中国的首都是哪个城市？")]
    via_adapter = load_panel([adapter], ReaderOptions(device="cpu"))
    assert via_adapter.readers[0].adapter
    assert answer(via_adapter, queries) == answer(load_panel([run / "model"], ReaderOptions(device="cpu")), queries)


@pytest.mark.slow
def test_lora_run_writes_model_cards_for_adapter_and_merged_model(tiny_lora):
    import yaml

    run = tiny_lora["run"]
    summary = json.loads((run / "summary.json").read_text())
    dev = summary["last_dev"]
    assert summary["best_checkpoint"] == "step-00000002"  # so the last evaluation is the exported checkpoint's
    for folder, library in (("adapter", "peft"), ("model", "transformers")):
        card = (run / folder / "README.md").read_text(encoding="utf-8")
        _, meta, _ = card.split("---\n", 2)
        meta = yaml.safe_load(meta)
        assert meta["library_name"] == library and meta["pipeline_tag"] == "question-answering"
        assert "base_model" not in meta and "lora" in meta["tags"]  # a random base names no base model
        assert f"Dev EM {dev['em']:.2f}, F1 {dev['f1']:.2f}" in card
        assert "randomly initialised BERT" in card and "squad_train.json" in card
    adapter_card = (run / "adapter" / "README.md").read_text(encoding="utf-8")
    assert f'AutoModelForQuestionAnswering.from_pretrained("{run / "adapter" / "base"}")' in adapter_card
    assert f'PeftModel.from_pretrained(base, "{run / "adapter"}").merge_and_unload()' in adapter_card
    assert "drops `token_type_ids`" in adapter_card and f"qa-scale answer {run / 'adapter'} --context" in adapter_card
    model_card = (run / "model" / "README.md").read_text(encoding="utf-8")
    assert f'AutoModelForQuestionAnswering.from_pretrained("{run / "model"}")' in model_card
    assert "LoRA adapters merged into the base weights" in model_card
