"""Tiny readers saved the way `qa-scale train` exports them, with their dev stores and ensemble: what
`qa-scale answer` / `serve` tests ask (`make_readers` builds them once per test module)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from qa_scale import synthetic
from qa_scale.cli import main
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.modeling.model import load_qa_model
from qa_scale.training.recipe import dump_recipe, load_recipe

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
WINDOWS = ["data.windows.max_seq_len=64", "data.windows.max_question_len=24", "data.windows.doc_overlap=16",
           "decode.max_answer_len=20"]
GROUP_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def group_env_restored():
    """Run in-process commands that join a group of one; its variables do not leak into other tests."""
    saved = {k: os.environ.get(k) for k in GROUP_VARIABLES}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def save_reader(run: Path, tok_dir: Path, seed: int, windows: list[str] = WINDOWS) -> Path:
    """``run/model`` (weights + tokenizer) and ``run/config.yaml``, as a training run leaves them."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    model = load_qa_model(None, tiny=TINY, vocab_size=max(tok.get_vocab().values()) + 1, seed=seed).eval()
    model.save_pretrained(run / "model")
    tok.save_pretrained(run / "model")
    config = load_recipe(None, ["model.tiny={}", f"model.tokenizer={tok_dir}", *windows])
    (run / "config.yaml").write_text(dump_recipe(config), encoding="utf-8")
    return run / "model"


def refused(capsys, args: list, *needles) -> str:
    """Run ``qa-scale ARGS`` in process: exit status 2, no traceback, every needle in the message."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def store_world(root: Path) -> dict:
    """Sample data, a tokenizer, a tiny reader folder as `train` exports it, and two dev stores of it:
    what the bad-input and contract tests run every command on."""
    from qa_scale import data
    from qa_scale.data.windows import WindowConfig
    from qa_scale.inference.predict import StoreOptions, predict_to_store
    from qa_scale.inference.reader import Reader

    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=4, test_paragraphs=2),
                                root / "data")
    tok = build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=2000)
    model = load_qa_model(str(save_reader(root / "run", root / "tok", seed=0, windows=[
        "data.windows.max_seq_len=64", "data.windows.max_question_len=16", "data.windows.doc_overlap=16"])))
    dev = data.load(paths["squad_dev"], "lenient").examples
    window = WindowConfig(max_seq_len=64, max_question_len=16, doc_overlap=16)
    for name in ("s1", "s2"):
        predict_to_store(Reader.of(model.eval(), tok, window), dev, root / name,
                         StoreOptions(model_info={"path": str(root / name / "m")}, progress=False))
    return {"root": root, "paths": paths, "tok": root / "tok", "model": root / "run" / "model",
            "stores": [root / "s1", root / "s2"], "dev": dev}


def make_readers(root: Path, seeds=(0, 1, 2)) -> dict:
    """Sample data, three tiny readers, their dev stores (`qa-scale predict`) and ensemble (`qa-scale ensemble`)."""
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=8, test_paragraphs=2),
                                root / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    models = [save_reader(root / "runs" / f"m{s}", root / "tok", s) for s in seeds]
    with group_env_restored():
        for m in models:
            assert main(["predict", str(m), str(paths["squad_dev"]), "--out", str(m.parent / "dev_store"),
                         "--batch-size", "16", "--device", "cpu"]) == 0
    assert main(["ensemble", *(str(m.parent / "dev_store") for m in models), "--out", str(root / "ens")]) == 0
    return {"root": root, "paths": paths, "models": models,
            "ensemble": json.loads((root / "ens" / "predictions.json").read_text(encoding="utf-8"))}


def tiny_backbone(root: Path, train_paragraphs: int, dev_paragraphs: int) -> dict:
    """Sample data, a character vocabulary, and a tiny masked-LM backbone saved like `qa-scale backbone`'s
    (``root/backbone``, tokenizer included); returns the sample data's paths."""
    from qa_scale.modeling.model import build_mlm_model, tiny_bert_config

    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=train_paragraphs,
                                                       dev_paragraphs=dev_paragraphs, test_paragraphs=1),
                                root / "data")
    tok = build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    config = tiny_bert_config(max(tok.get_vocab().values()) + 1, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0)
    build_mlm_model(config, seed=3).save_pretrained(root / "backbone")
    tok.save_pretrained(root / "backbone")
    return paths
