"""`data.train_file` as a list: HW7 and SQuAD-style files mixed in one run, ids kept distinct, counts reported."""

from __future__ import annotations

import json

import pytest
from cli_runs import qa_scale, sample_files



@pytest.mark.slow
def test_a_run_trains_on_two_formats_at_once(tmp_path):
    paths = sample_files(tmp_path, train_paragraphs=8, dev_paragraphs=2)
    clash = json.loads(paths["squad_dev"].read_text("utf-8"))
    clash["data"][0]["paragraphs"][0]["qas"][0]["id"] = "0"  # HW7 numbers its questions from 0 too
    (tmp_path / "extra.json").write_text(json.dumps(clash, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "run"
    proc = qa_scale(["train", f"model.tokenizer={tmp_path / 'tok'}", "model.tiny={hidden_size: 32, "
                     "num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}",
                     f"data.train_file=[{paths['hw7_train']}, {tmp_path / 'extra.json'}]",
                     "data.windows.max_seq_len=96", "data.windows.max_question_len=24", "data.windows.doc_overlap=16",
                     "optim.max_steps=3", "optim.micro_batch_size=4", "optim.global_batch_size=4", "run.precision=fp32",
                     f"run.output_dir={out}", "run.export=false", "run.tensorboard=false"], None, tmp_path)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    hw7, extra = summary["train_files"]
    assert (hw7["format"], extra["format"]) == ("hw7", "squad")
    assert hw7["examples_kept"] > 0 and extra["examples_kept"] > 0
    assert hw7["ids_renamed"] == 0 and extra["ids_renamed"] == 1
    assert summary["finished"] and summary["steps"] == 3
