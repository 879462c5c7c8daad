"""The largest shape on CPU, for real: a MacBERT-large-shaped reader (24 layers, hidden 1024, 16 heads,
4096 FFN, the real 21,128-entry vocabulary, random weights) trained by 2 CPU ranks under ZeRO-3,
exported and reloaded with from_pretrained, which must give the engine's logits; and the same shape in
LoRA mode. Peak memory of both modes is printed (README table). Stopping and resuming under ZeRO-3 is
tested at small shapes (tests/training/test_train.py, tests/modeling/test_lora.py): the same code, a
fraction of the time."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from cli_runs import BIN, clean_env, free_port
from conftest import SHARED_DATA, require_shared

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
LARGE = ("{hidden_size: 1024, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 4096, "
         "hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}")

# Trains through the library's Trainer (what `qa-scale train` runs), then has every rank take part
# in the forward passes of the engine on a few dev windows; rank 0 saves those logits.
SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from qa_scale import data
    from qa_scale.data.windows import build_windows
    from qa_scale.inference.forward import predict_logits
    from qa_scale.runtime import distributed
    from qa_scale.training.loop import Trainer
    from qa_scale.training.recipe import load_recipe

    out, *overrides = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the launcher adds it
    trainer = Trainer(load_recipe(None, overrides))
    summary = trainer.run()
    config = trainer.config
    dev = data.load(config.data.dev_file, "lenient").examples[:4]
    ws = build_windows(dev, trainer.tok, config.data.windows, labels=False)
    trainer.engine.eval()
    logits = predict_logits(trainer.engine, ws, 4, trainer.d)
    if trainer.d.main:
        np.save(f"{out}/engine_start.npy", logits[0])
        json.dump(summary, open(f"{out}/script_summary.json", "w"))
    distributed.leave(True)
''')


def overrides(out: Path, mode: str, **extra) -> list[str]:
    values = {
        "mode": mode, "model.tokenizer": SHARED_DATA / "bert-base-chinese-vocab.txt", "model.tiny": LARGE,
        "data.train_file": SHARED_DATA / "cmrc2018_trial.json", "data.dev_file": SHARED_DATA / "cmrc2018_trial.json",
        "data.strategy": "random_answer", "data.max_train_examples": 16, "data.max_dev_examples": 4,
        "data.windows.max_seq_len": 64, "data.windows.max_question_len": 16, "data.windows.doc_overlap": 16,
        "optim.lr": 1e-4, "optim.micro_batch_size": 1, "optim.global_batch_size": 2, "optim.warmup_ratio": 0.0,
        "run.output_dir": out, "run.precision": "fp32", "run.device": "cpu",
        "run.deepspeed": ROOT / "ds_configs" / "zero3_bf16.json", "run.log_every": 1, "run.save_every": 100,
        "run.eval_every": 100, "run.tensorboard": "false", "run.eval_batch_size": 4,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def launch(script: Path, out: Path, args: list[str]) -> None:
    proc = subprocess.run([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(free_port()), str(script),
                           str(out), *args], capture_output=True, text=True, timeout=1500, env=clean_env())
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-6000:]


def exported_logits(out: Path) -> np.ndarray:
    import torch
    from transformers import AutoModelForQuestionAnswering

    from qa_scale import data
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.data.windows import WindowConfig, build_windows
    from qa_scale.inference.forward import predict_logits

    model = AutoModelForQuestionAnswering.from_pretrained(out / "model").eval()
    tok = load_tokenizer(out / "model")
    dev = data.load(SHARED_DATA / "cmrc2018_trial.json", "lenient").examples[:4]
    ws = build_windows(dev, tok, WindowConfig(max_seq_len=64, max_question_len=16, doc_overlap=16), labels=False)
    with torch.no_grad():
        return predict_logits(model, ws, 4)[0]


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt")
    path = tmp_path_factory.mktemp("large") / "train_and_logits.py"
    path.write_text(SCRIPT, encoding="utf-8")
    return path


def test_macbert_large_shape_zero3_trains_exports_and_reloads(script, tmp_path):
    out = tmp_path / "full"
    launch(script, out, overrides(out, "full", **{"optim.max_steps": 2}))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 2 and summary["parameters"]["total"] > 320_000_000
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]
    np.testing.assert_allclose(exported_logits(out), np.load(out / "engine_start.npy"), atol=1e-4, rtol=0)
    print(json.dumps({"mode": "full", "peak_memory": summary["peak_memory"], "parameters": summary["parameters"],
                      "train_seconds": summary["train_seconds"]}))


def test_macbert_large_shape_in_lora_mode(script, tmp_path):
    out = tmp_path / "lora"
    launch(script, out, overrides(out, "lora", **{"optim.max_steps": 2, "optim.lr": 1e-3}))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["parameters"]["trainable_percent"] < 2
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    np.testing.assert_allclose(exported_logits(out), np.load(out / "engine_start.npy"), atol=1e-4, rtol=0)
    print(json.dumps({"mode": "lora", "peak_memory": summary["peak_memory"], "parameters": summary["parameters"],
                      "train_seconds": summary["train_seconds"]}))
