"""A LoRA run's `adapter/` directory: saved with peft's QUESTION_ANS task type (so peft's
AutoPeftModelForQuestionAnswering loads it) and answering exactly as the merged `model/` does."""

from __future__ import annotations

import json

import pytest
import torch
from cli_runs import qa_scale
from reader_runs import tiny_backbone

from qa_scale import data
from qa_scale.serving.answering import Query, answer
from qa_scale.inference.options import ReaderOptions
from qa_scale.serving.readers import load_panel


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny backbone and a LoRA reader trained on it for a few steps by `qa-scale train` (one process)."""
    root = tmp_path_factory.mktemp("adapter")
    paths = tiny_backbone(root, train_paragraphs=6, dev_paragraphs=3)
    values = {"mode": "lora", "model.name_or_path": root / "backbone", "lora.r": 4, "lora.dropout": 0.0,
              "data.train_file": paths["squad_train"], "data.dev_file": "null", "data.windows.max_seq_len": 64,
              "data.windows.max_question_len": 24, "data.windows.doc_overlap": 16, "optim.lr": 5e-3,
              "optim.max_steps": 6, "optim.micro_batch_size": 4, "optim.global_batch_size": 4,
              "run.output_dir": root / "run", "run.precision": "fp32", "run.save_every": 100, "run.eval_every": 100,
              "run.export": "true", "run.tensorboard": "false"}
    qa_scale(["train", *(f"{k}={v}" for k, v in values.items())], None, root)
    return {"root": root, "run": root / "run", "dev": data.load(paths["squad_dev"], "lenient").examples}


@pytest.mark.slow
def test_adapter_is_saved_for_peft_question_answering(lora_run):
    from peft import AutoPeftModelForQuestionAnswering
    from transformers import AutoModelForQuestionAnswering

    adapter = lora_run["run"] / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["task_type"] == "QUESTION_ANS"
    auto = AutoPeftModelForQuestionAnswering.from_pretrained(adapter)  # failed before: no task type saved
    merged = auto.merge_and_unload().state_dict()
    exported = AutoModelForQuestionAnswering.from_pretrained(lora_run["run"] / "model").state_dict()
    assert merged.keys() == exported.keys()
    for key in exported:
        torch.testing.assert_close(merged[key], exported[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_adapter_directory_answers_as_the_merged_model(lora_run):
    queries = [Query(ex.context, ex.question) for ex in lora_run["dev"]]
    via_adapter = load_panel([lora_run["run"] / "adapter"], ReaderOptions(device="cpu"))
    via_model = load_panel([lora_run["run"] / "model"], ReaderOptions(device="cpu"))
    assert via_adapter.readers[0].adapter and not via_model.readers[0].adapter
    assert via_adapter.windows == via_model.windows and via_adapter.decoding == via_model.decoding
    assert answer(via_adapter, queries) == answer(via_model, queries)  # texts, spans, scores, n-best: exactly
    model = via_adapter.readers[0].model
    assert type(model).__name__ == "BertForQuestionAnswering"  # merged: token_type_ids reach the encoder
    ids = torch.tensor([[2, 10, 11, 3, 12, 13, 3]])
    a = model(input_ids=ids, token_type_ids=torch.tensor([[0, 0, 0, 0, 1, 1, 1]])).start_logits
    b = model(input_ids=ids, token_type_ids=torch.zeros_like(ids)).start_logits
    assert not torch.equal(a, b)


def test_predict_reads_an_adapter_directory_as_the_merged_model(lora_run, tmp_path):
    """One loader for every command: predict takes a LoRA run's adapter/ as answer and serve do."""
    from qa_scale.inference import logits_store
    from qa_scale.inference.predict import StoreOptions, predict_to_store
    from qa_scale.inference.reader import load_reader, reader_settings

    stores = {}
    for name in ("adapter", "model"):
        settings = reader_settings(lora_run["run"] / name, ReaderOptions(device="cpu"))
        assert settings.adapter == (name == "adapter") and settings.name == "run"
        reader = load_reader(settings, "cpu")
        predict_to_store(reader, lora_run["dev"], tmp_path / name, StoreOptions(progress=False))
        stores[name] = logits_store.open_store(tmp_path / name)
    assert stores["adapter"].fingerprint == stores["model"].fingerprint
    for a, b in zip(stores["adapter"].logits(), stores["model"].logits()):
        torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(b), rtol=1e-5, atol=1e-5)
    assert stores["adapter"].predictions() == stores["model"].predictions()
