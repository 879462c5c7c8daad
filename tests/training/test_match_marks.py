"""`data.windows.mark_matches`: context tokens that occur in the question carry token type 2; training
gives the model that type (a copy of the context type to start with); a model without it is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import qa_scale, sample_files
from conftest import window_examples as examples

from qa_scale.data.window_store import load_windows
from qa_scale.data.windows import MATCH_TYPE, WindowConfig, build_windows
from qa_scale.inference import logits_store
from qa_scale.modeling.model import ModelLoadError, check_inputs, extend_token_types, load_qa_model
from qa_scale.serving.answering import logits_of
from qa_scale.inference.options import ReaderOptions
from qa_scale.serving.readers import load_panel
from qa_scale.training.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
CFG = {"max_seq_len": 40, "max_question_len": 12, "doc_overlap": 10}


def test_marks_are_the_context_tokens_that_occur_in_the_question(char_tokenizer):
    exs = examples()
    plain = build_windows(exs, char_tokenizer, WindowConfig(**CFG))
    marked = build_windows(exs, char_tokenizer, WindowConfig(**CFG, mark_matches=True))
    assert np.array_equal(marked.input_ids, plain.input_ids)
    assert np.array_equal(marked.start_positions, plain.start_positions)
    n_marked = 0
    for w in range(len(plain)):
        ids, types, ctx = plain.input_ids[w], plain.token_type_ids[w], plain.offsets[w, :, 0] >= 0
        question = set(ids[:plain.lengths[w]][(types[:plain.lengths[w]] == 0)].tolist())
        want = types.copy()
        want[ctx & np.isin(ids, list(question))] = MATCH_TYPE
        assert marked.token_type_ids[w].tolist() == want.tolist(), w
        n_marked += int((want == MATCH_TYPE).sum())
    assert n_marked > len(plain)  # the questions share characters with their contexts: marks were made


def test_new_token_type_starts_as_the_context_type(char_tokenizer):
    vocab = max(char_tokenizer.get_vocab().values()) + 1
    model = load_qa_model(None, tiny=TINY, vocab_size=vocab, seed=0).eval()
    with pytest.raises(ModelLoadError, match="has 2 token types"):
        check_inputs(model, char_tokenizer, WindowConfig(**CFG, mark_matches=True))
    check_inputs(model, char_tokenizer, WindowConfig(**CFG))
    ws = build_windows(examples(2), char_tokenizer, WindowConfig(**CFG, mark_matches=True))
    ids, types = torch.as_tensor(ws.input_ids).long(), torch.as_tensor(ws.token_type_ids).long()
    as_context = torch.where(types == MATCH_TYPE, 1, types)
    with torch.no_grad():
        before = model(input_ids=ids, token_type_ids=as_context).start_logits
        extend_token_types(model, MATCH_TYPE + 1, like=1)
        after = model(input_ids=ids, token_type_ids=types).start_logits
    assert model.config.type_vocab_size == 3
    assert torch.equal(before, after)
    check_inputs(model, char_tokenizer, WindowConfig(**CFG, mark_matches=True))


def test_marks_need_full_fine_tuning(tmp_path):
    with pytest.raises(ValueError, match="mark_matches needs mode: full"):
        load_recipe(None, ["model.tiny={}", f"model.tokenizer={tmp_path}", "mode=lora",
                           "data.windows.mark_matches=true"])


@pytest.mark.slow
def test_a_reader_trained_with_marks_predicts_with_them(tmp_path):
    paths = sample_files(tmp_path, train_paragraphs=4, dev_paragraphs=2)
    run = tmp_path / "run"
    qa_scale(["train", f"model.tokenizer={tmp_path / 'tok'}", "model.tiny={hidden_size: 32, num_hidden_layers: 2, "
              "num_attention_heads: 2, intermediate_size: 64}", f"data.train_file={paths['squad_train']}",
              "data.dev_file=null", "data.windows.max_seq_len=96", "data.windows.max_question_len=24",
              "data.windows.doc_overlap=24", "data.windows.mark_matches=true", "optim.max_steps=3",
              "optim.micro_batch_size=4", "optim.global_batch_size=4", f"run.output_dir={run}", "run.precision=fp32",
              f"run.deepspeed={ROOT / 'ds_configs' / 'zero2_bf16.json'}", "run.tensorboard=false"], None, tmp_path)
    assert json.loads((run / "model" / "config.json").read_text("utf-8"))["type_vocab_size"] == 3
    qa_scale(["predict", run / "model", paths["squad_dev"], "--out", tmp_path / "store", "--device", "cpu"],
             None, tmp_path)
    ws = load_windows(tmp_path / "store" / "windows")
    assert ws.config.mark_matches and (ws.token_type_ids == MATCH_TYPE).any()
    # `answer` / `serve` read the same setting from the model's training config: the same marked windows
    # and logits as the store (without the marks the trained type-2 row would not be read: other logits)
    panel = load_panel([run / "model"], ReaderOptions(device="cpu", compute="fp32"))  # the store's arithmetic
    assert panel.windows.mark_matches
    store = logits_store.open_store(tmp_path / "store")
    mine, start, end = logits_of(panel, store.examples)
    assert np.array_equal(mine.token_type_ids, ws.token_type_ids)
    assert np.allclose(start, store.logits(mmap=False)[0][:, :start.shape[1]], atol=1e-5)

    untyped = tmp_path / "untyped"  # the same weights without the third token type
    load_qa_model(None, tiny=TINY, vocab_size=3000, seed=0).save_pretrained(untyped)
    proc = qa_scale(["predict", untyped, paths["squad_dev"], "--out", tmp_path / "store2", "--device", "cpu",
                     "--tokenizer", tmp_path / "tok", "--mark-matches"], None, tmp_path, check=False)
    assert proc.returncode == 2 and "token type" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "store2").exists()
