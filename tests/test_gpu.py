"""On a CUDA device (skipped elsewhere by the ``gpu`` marker, see conftest): a bf16 training run through
`qa-scale train` on the GPU, and the bf16 predict forward of its model against fp32."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import qa_scale

from qa_scale import data, synthetic
from qa_scale.data.tokenization import build_char_vocab, load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows

pytestmark = [pytest.mark.gpu]
ROOT = Path(__file__).resolve().parents[1]
WINDOWS = {"max_seq_len": 128, "max_question_len": 32, "doc_overlap": 32}


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=12, dev_paragraphs=3, test_paragraphs=1),
                                root / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    overrides = {
        "model.tokenizer": root / "tok",
        "model.tiny": "{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}",
        "data.train_file": paths["squad_train"], "data.dev_file": paths["squad_dev"],
        **{f"data.windows.{k}": v for k, v in WINDOWS.items()},
        "optim.lr": 1e-3, "optim.max_steps": 4, "optim.micro_batch_size": 8, "optim.global_batch_size": 16,
        "run.output_dir": root / "run", "run.device": "cuda", "run.precision": "bf16",
        "run.deepspeed": ROOT / "ds_configs" / "zero2_bf16.json", "run.log_every": 1, "run.tensorboard": "false",
    }
    qa_scale(["train", *(f"{k}={v}" for k, v in overrides.items())], None, root)
    return root, paths


def test_bf16_training_runs_on_the_gpu(gpu_run):
    root, _ = gpu_run
    summary = json.loads((root / "run" / "summary.json").read_text())
    assert summary["finished"] and summary["precision"] == "bf16" and summary["world_size"] == 1
    assert summary["peak_memory"]["kind"] == "cuda_max_allocated" and summary["peak_memory"]["bytes"] > 0
    rows = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in train)
    assert (root / "run" / "model" / "model.safetensors").is_file()


def test_bf16_predict_forward_on_the_gpu_is_close_to_fp32(gpu_run):
    from transformers import AutoModelForQuestionAnswering

    from qa_scale.inference.forward import predict_logits
    from qa_scale.runtime.distributed import single

    root, paths = gpu_run
    model_dir = root / "run" / "model"
    ws = build_windows(data.load(paths["squad_dev"]).examples, load_tokenizer(model_dir), WindowConfig(**WINDOWS),
                       labels=False)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval().cuda()
    with torch.no_grad():
        fp32 = predict_logits(model, ws, 16, single("cuda"))
        bf16 = predict_logits(model.to(torch.bfloat16), ws, 16, single("cuda"))
    for want, got in zip(fp32, bf16):
        finite = np.isfinite(want)
        assert (np.isfinite(got) == finite).all() and got.dtype == np.float32
        np.testing.assert_allclose(got[finite], want[finite], atol=0.1, rtol=0.05)
