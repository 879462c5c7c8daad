"""DeepSpeed checkpoints → Hugging Face directories: a real engine, in this process, on CPU.

One gloo process group (world size 1) serves every test; ZeRO stages 0-3 and bf16 engines
are built one after another in the same process.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CORPUS

from qa_scale.data import Answer, Example
from qa_scale.data.tokenization import load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.evaluation.decode import decode
from qa_scale.modeling.model import build_mlm_model, load_qa_model, tiny_bert_config
from qa_scale.training.export import (
    ExportError,
    consolidated_state_dict,
    export_checkpoint,
    export_state_dict,
)

# Two contexts, so that a few steps teach the tiny model both answers.
EXAMPLES = [
    Example("capital", "中国的首都是哪个城市？", CORPUS[0], (Answer("北京", 0),)),
    Example("born", "张伟出生在哪个城市？", CORPUS[1], (Answer("杭州", CORPUS[1].index("杭州")),)),
]
WINDOWS = WindowConfig(max_seq_len=64, max_question_len=16, doc_overlap=16)
TAG = "step_final"


@pytest.fixture(scope="session")
def ds_dist():
    """A one-process gloo group for DeepSpeed, created once per test session."""
    import deepspeed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    # deepspeed.initialize asserts LOCAL_RANK is set, so the variables stay for the session
    # (not just for init_distributed) and are restored after it.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo")
    yield deepspeed
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def batch(tok):
    windows = build_windows(EXAMPLES, tok, WINDOWS)
    assert len(windows) == 2  # one window per question: the batch is the data set

    def as_long(a):
        return torch.as_tensor(np.asarray(a), dtype=torch.long)

    inputs = {"input_ids": as_long(windows.input_ids), "token_type_ids": as_long(windows.token_type_ids),
              "attention_mask": as_long(windows.attention_mask())}
    labels = {"start_positions": as_long(windows.start_positions), "end_positions": as_long(windows.end_positions)}
    return windows, inputs, labels


def ds_config(stage: int) -> dict:
    zero = {"stage": stage}
    if stage == 3:
        # Parameters below the threshold (100k elements by default: all of a tiny model's)
        # are never partitioned; 0 makes ZeRO-3 shard and gather every one of them.
        zero["stage3_param_persistence_threshold"] = 0
    return {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "zero_optimization": zero}


def train(deepspeed, model, stage, tok, precision="fp32", steps=30):
    """A few optimizer steps on the two examples (enough for the tiny model to learn them)."""
    config = ds_config(stage)
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    _, inputs, labels = batch(tok)
    engine.train()
    for _ in range(steps):
        loss = engine(**inputs, **labels).loss
        engine.backward(loss)
        engine.step()
    return engine


def vocab_size(tok) -> int:
    return max(tok.get_vocab().values()) + 1


def tiny_qa(tok):
    return load_qa_model(None, vocab_size=vocab_size(tok), tiny={"hidden_dropout_prob": 0.0,
                         "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 64}, seed=0)


@pytest.fixture(scope="module")
def runs(ds_dist, char_tokenizer, tmp_path_factory):
    """Trained engines and their checkpoints, one per (stage, precision), built on first use."""
    cache = {}

    def get(stage: int, precision: str = "fp32"):
        if (stage, precision) not in cache:
            model = tiny_qa(char_tokenizer)
            engine = train(ds_dist, model, stage, char_tokenizer, precision)
            ckpt = tmp_path_factory.mktemp(f"ckpt_zero{stage}_{precision}")
            engine.save_checkpoint(str(ckpt), tag=TAG)
            cache[stage, precision] = engine, ckpt, model.config
        return cache[stage, precision]

    return get


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_export_gives_the_engine_model(stage, runs, char_tokenizer, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    engine, ckpt, config = runs(stage)
    out = export_checkpoint(ckpt, TAG, config, tmp_path / "model", tokenizer=char_tokenizer)
    assert out == tmp_path / "model"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no temporary folder is left behind"

    exported = AutoModelForQuestionAnswering.from_pretrained(out).eval()
    reference = load_qa_model(None, vocab_size=config.vocab_size, tiny={"max_position_embeddings": 64})
    for name, tensor in exported.state_dict().items():
        assert tensor.shape == reference.state_dict()[name].shape, name
        assert tensor.dtype == torch.float32, name

    _, inputs, _ = batch(char_tokenizer)
    engine.eval()
    with torch.no_grad():
        want = engine(**inputs)  # under ZeRO-3 the engine gathers the shards for the forward
        got = exported(**inputs)
    torch.testing.assert_close(got.start_logits, want.start_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.end_logits, want.end_logits, atol=1e-5, rtol=0)


def answer(model_dir: Path, examples) -> dict[str, str]:
    """Answer questions from a model directory alone (tokenizer and model both read from it)."""
    from transformers import AutoModelForQuestionAnswering

    tok = load_tokenizer(model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    windows, inputs, _ = batch(tok)
    with torch.no_grad():
        out = model(**inputs)
    return decode(windows, out.start_logits.numpy(), out.end_logits.numpy(), examples).predictions


@pytest.mark.parametrize("stage", [2, 3])
def test_exported_directory_answers_questions(stage, runs, char_tokenizer, tmp_path):
    from transformers.pipelines import SUPPORTED_TASKS

    _, ckpt, config = runs(stage)
    out = export_checkpoint(ckpt, TAG, config, tmp_path / "model", tokenizer=char_tokenizer)
    # transformers 5 removed the question-answering pipeline; the project's own windows and
    # decoder answer from the directory instead (and the pipeline too where it still exists).
    assert answer(out, EXAMPLES) == {"capital": "北京", "born": "杭州"}
    if "question-answering" in SUPPORTED_TASKS:
        from transformers import pipeline

        qa = pipeline("question-answering", model=str(out), tokenizer=str(out))
        assert qa(question=EXAMPLES[0].question, context=EXAMPLES[0].context)["answer"] == "北京"


def test_bf16_run_exports_the_fp32_master_weights(runs, tmp_path):
    engine, ckpt, config = runs(2, "bf16")
    state = consolidated_state_dict(ckpt, TAG)
    module = engine.module.state_dict()
    assert module["qa_outputs.weight"].dtype == torch.bfloat16
    for name, tensor in state.items():
        assert tensor.dtype == torch.float32, name
        assert torch.equal(tensor.to(torch.bfloat16), module[name]), name  # the bf16 copy is its rounding
    # … and carries more precision than that copy.
    weight = state["bert.encoder.layer.0.attention.self.query.weight"]
    assert not torch.equal(weight, weight.to(torch.bfloat16).float())
    out = export_checkpoint(ckpt, None, config, tmp_path / "model")  # tag read from `latest`
    assert (out / "model.safetensors").is_file()


def test_masked_lm_export_keeps_tied_weights(ds_dist, char_tokenizer, tmp_path):
    from transformers import BertForMaskedLM

    config = tiny_bert_config(vocab_size(char_tokenizer), max_position_embeddings=64)
    model = build_mlm_model(config, seed=0)
    engine = ds_dist.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                                config=ds_config(3))[0]
    _, inputs, _ = batch(char_tokenizer)
    for _ in range(3):
        engine.backward(engine(**inputs, labels=inputs["input_ids"]).loss)
        engine.step()
    engine.save_checkpoint(str(tmp_path / "ckpt"), tag=TAG)
    out = export_checkpoint(tmp_path / "ckpt", TAG, config, tmp_path / "backbone", model_class=BertForMaskedLM)
    exported = BertForMaskedLM.from_pretrained(out)
    assert not (out / "README.md").exists(), "a backbone is no question-answering reader: no reader card"
    assert exported.cls.predictions.decoder.weight is exported.bert.embeddings.word_embeddings.weight
    engine.eval()
    with torch.no_grad():
        torch.testing.assert_close(exported.eval()(**inputs).logits, engine(**inputs).logits, atol=1e-5, rtol=0)


def test_checkpoint_that_does_not_fit_the_config_is_refused(runs, tmp_path):
    _, ckpt, config = runs(2)
    deeper = tiny_bert_config(config.vocab_size, num_hidden_layers=3, max_position_embeddings=64)
    with pytest.raises(ExportError, match=r"missing \(16\): bert\.encoder\.layer\.2\."):
        export_checkpoint(ckpt, TAG, deeper, tmp_path / "model")
    wider_vocab = tiny_bert_config(config.vocab_size + 1, max_position_embeddings=64)
    with pytest.raises(ExportError, match=r"bert\.embeddings\.word_embeddings\.weight \(\d+, 64\) vs"):
        export_checkpoint(ckpt, TAG, wider_vocab, tmp_path / "model")
    with pytest.raises(ExportError, match="not found"):
        export_checkpoint(ckpt, "no_such_tag", config, tmp_path / "model")
    with pytest.raises(ExportError, match="cannot build a Linear"):
        export_checkpoint(ckpt, TAG, config, tmp_path / "model", model_class=torch.nn.Linear)
    assert not any(tmp_path.iterdir())


def test_failed_export_never_replaces_a_good_directory(runs, char_tokenizer, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    _, ckpt, config = runs(2)
    out = export_checkpoint(ckpt, TAG, config, tmp_path / "model", tokenizer=char_tokenizer)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def half_written(self, save_directory, *args, **kwargs):
        (Path(save_directory) / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", half_written)
    with pytest.raises(OSError, match="disk full"):
        export_checkpoint(ckpt, TAG, config, out, tokenizer=char_tokenizer)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]

    monkeypatch.undo()
    export_state_dict(load_qa_model(None, vocab_size=config.vocab_size, tiny={}, seed=9), out)
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert not (out / "tokenizer.json").exists(), "the old directory is replaced, not merged into"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_zero3_module_is_saved_only_when_gathered(ds_dist, char_tokenizer, tmp_path):
    from safetensors.torch import load_file

    model = tiny_qa(char_tokenizer)
    engine = train(ds_dist, model, 3, char_tokenizer, steps=2)
    with pytest.raises(ExportError, match="ZeRO-3 partitions"):
        export_state_dict(engine.module, tmp_path / "model")
    assert not any(tmp_path.iterdir())

    engine.save_checkpoint(str(tmp_path / "ckpt"), tag=TAG)
    consolidated = export_checkpoint(tmp_path / "ckpt", TAG, model.config, tmp_path / "consolidated")
    with ds_dist.zero.GatheredParameters(list(engine.module.parameters())):
        gathered = export_state_dict(engine.module, tmp_path / "gathered")
    want, got = load_file(consolidated / "model.safetensors"), load_file(gathered / "model.safetensors")
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def front_matter(card: str) -> dict:
    import yaml

    first, meta, body = card.split("---\n", 2)
    assert first == "", "the card starts with its YAML front matter"
    return yaml.safe_load(meta)


def test_exported_model_carries_a_model_card(runs, char_tokenizer, tmp_path):
    """The card is rendered from the run folder beside the model: its recipe and the dev scores of the step."""
    from qa_scale.training.model_card import CardFacts
    from qa_scale.training.recipe import dump_recipe, load_recipe

    engine, ckpt, config = runs(2)
    run = tmp_path / "run"
    engine.save_checkpoint(str(run / "checkpoints"), tag="step-00000030")
    recipe = load_recipe(None, ["model.name_or_path=hfl/chinese-macbert-large", "data.train_file=data/hw7_train.json",
                                "data.dev_file=data/hw7_dev.json", "optim.lr=3e-3", "optim.max_steps=30",
                                "data.windows.max_seq_len=64", "data.windows.max_question_len=16",
                                "data.windows.doc_overlap=16"])
    (run / "config.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    rows = [{"step": 20, "split": "dev", "em": 40.0, "f1": 50.0}, {"step": 30, "split": "train", "loss": 0.5},
            {"step": 30, "split": "dev", "em": 75.5, "f1": 81.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    out = export_checkpoint(run / "checkpoints", "step-00000030", config, run / "model", tokenizer=char_tokenizer)
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = front_matter(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "question-answering"
    assert meta["language"] == "zh" and meta["base_model"] == "hfl/chinese-macbert-large"
    assert "qa-scale" in meta["tags"] and "lora" not in meta["tags"]
    assert "`hfl/chinese-macbert-large`" in card and "`data/hw7_train.json`" in card
    assert "EM 75.50, F1 81.25" in card and "40.00" not in card  # the exported step's, not another's
    assert "| learning rate | 0.003 " in card and "max_seq_len 64, max_question_len 16, doc_overlap 16" in card
    # the load snippet names the final folder (not the staging folder the card was written in)
    assert f'AutoModelForQuestionAnswering.from_pretrained("{out}")' in card
    assert f'AutoTokenizer.from_pretrained("{out}")' in card
    assert f"qa-scale answer {out} --context" in card and f"`{run / 'config.yaml'}`" in card

    # a random tiny base names no base model; a run without a dev file says it was not evaluated
    tiny = CardFacts(recipe=load_recipe(None, ["model.tiny={}", "model.tokenizer=tok", "data.train_file=t.json"]))
    out = export_checkpoint(ckpt, TAG, config, tmp_path / "tiny" / "model", card=tiny)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "base_model" not in front_matter(card) and "randomly initialised BERT" in card
    assert "it was not evaluated" in card and "Dev EM" not in card
    assert 'AutoTokenizer.from_pretrained("tok")' in card  # no tokenizer saved with the model: the recipe's
