"""Nothing silent (issue 18): weights that do not cover the model, weights that overflow, references
that share no id with the predictions or hold no answer, settings with a typo or a negative size —
each refused, named, exit 2; never a plausible-looking result."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reader_runs import GROUP_VARIABLES, save_reader

from qa_scale import data, synthetic
from qa_scale.cli import main
from qa_scale.common.inputs import InputError
from qa_scale.data.records import DataError
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.data.windows import WindowConfig
from qa_scale.ensemble.combine import combine_arrays, ensemble, normalise, parse_weights
from qa_scale.ensemble.errors import EnsembleError
from qa_scale.ensemble.spec import load_recipe as load_ensemble_recipe
from qa_scale.evaluation import metrics
from qa_scale.inference import logits_store
from qa_scale.inference.predict import StoreOptions, predict_to_store
from qa_scale.inference.reader import Reader
from qa_scale.modeling.model import ModelLoadError, build_mlm_model, load_qa_model, tiny_bert_config
from qa_scale.training.recipe import load_recipe

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
WINDOWS = WindowConfig(max_seq_len=64, max_question_len=24, doc_overlap=16)


@pytest.fixture
def no_group_variables():
    """`qa-scale predict` in this process joins a group of one; its variables must not leak."""
    saved = {k: os.environ.get(k) for k in GROUP_VARIABLES}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Sample data, a vocabulary, one tiny reader saved as training leaves it, and two dev stores."""
    root = tmp_path_factory.mktemp("silent")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=6, test_paragraphs=2),
                                root / "data")
    tok = build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    reader = save_reader(root / "runs" / "r0", root / "tok", seed=0)
    vocab = max(tok.get_vocab().values()) + 1
    dev = data.load(paths["squad_dev"], "lenient").examples
    stores = []
    for seed in (0, 1):
        model = load_qa_model(None, tiny=TINY, vocab_size=vocab, seed=seed).eval()
        predict_to_store(Reader.of(model, tok, WINDOWS), dev, root / f"store{seed}", StoreOptions(
            batch_size=16, model_info={"path": str(root / f"m{seed}")}, progress=False))
        stores.append(logits_store.open_store(root / f"store{seed}"))
    raw = json.loads(paths["squad_dev"].read_text("utf-8"))
    for article in raw["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                qa["answers"] = []
    unanswered = root / "data" / "squad_dev_without_answers.json"  # the dev questions as a test split
    unanswered.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return {"root": root, "paths": paths, "tok": tok, "reader": reader, "stores": stores, "vocab": vocab,
            "unanswered": unanswered}


def _copy_reader(work, tmp_path, name="reader"):
    import shutil

    run = tmp_path / name
    shutil.copytree(work["reader"].parent, run)
    return run / "model"


def _predict(model_dir, data_path, out, *extra) -> int:
    return main(["predict", str(model_dir), str(data_path), "--out", str(out), "--batch-size", "16",
                 "--device", "cpu", *map(str, extra)])


# ---------------------------------------------------------------- 1. weights that do not cover the model


def test_weights_with_other_tensor_names_are_refused(work, tmp_path, capsys, no_group_variables):
    from safetensors.torch import load_file, save_file

    model_dir = _copy_reader(work, tmp_path)
    weights = model_dir / "model.safetensors"
    state = load_file(weights)
    save_file({f"encoder_v2.{k}": v for k, v in state.items()}, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as err:
        load_qa_model(str(model_dir))
    message = str(err.value)
    assert message.startswith(str(model_dir)) and "not in its weights" in message and "not in the model" in message
    assert "bert.embeddings.LayerNorm.bias" in message and f"({len(state)} in all)" in message
    assert message.count("encoder_v2.") == 5  # up to 5 named of each kind
    with pytest.raises(ModelLoadError, match="not in its weights"):  # training cannot start from it either
        load_qa_model(str(model_dir), new_head=True)
    assert _predict(model_dir, work["paths"]["squad_dev"], tmp_path / "store") == 2
    err_text = capsys.readouterr().err
    assert str(model_dir) in err_text and "not in its weights" in err_text
    assert not (tmp_path / "store").exists()


def test_a_backbone_is_refused_as_a_reader_but_trains(work, tmp_path):
    backbone = tmp_path / "backbone"
    build_mlm_model(tiny_bert_config(work["vocab"], **TINY), seed=0).save_pretrained(backbone)
    with pytest.raises(ModelLoadError, match=r"qa_outputs.bias, qa_outputs.weight.*backbone without a trained span"):
        load_qa_model(str(backbone))
    model = load_qa_model(str(backbone), new_head=True)
    assert model.qa_outputs.weight.shape == (2, 32)


def test_a_reader_with_missing_weights_is_refused_by_the_service(work, tmp_path):
    from safetensors.torch import load_file, save_file

    from qa_scale.inference.options import ReaderOptions

    from qa_scale.serving.readers import load_panel

    model_dir = _copy_reader(work, tmp_path)
    state = load_file(model_dir / "model.safetensors")
    del state["qa_outputs.weight"]
    save_file(state, model_dir / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match=r"1 tensor\(s\) of the model are not in its weights \(qa_outputs.weight\)"):
        load_panel([model_dir], ReaderOptions(device="cpu"))


def test_truncated_weights_are_refused_naming_the_file(work, tmp_path, capsys, no_group_variables):
    model_dir = _copy_reader(work, tmp_path)
    weights = model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(InputError, match=f"{weights}: truncated weights file"):
        load_qa_model(str(model_dir))
    assert _predict(model_dir, work["paths"]["squad_dev"], tmp_path / "store") == 2
    assert f"{weights}: truncated weights file" in capsys.readouterr().err


def test_max_seq_len_beyond_the_position_embeddings_is_refused(work, tmp_path, capsys, no_group_variables):
    from qa_scale.inference.options import ReaderOptions
    from qa_scale.serving.readers import load_panel

    model_dir = tmp_path / "short" / "model"
    load_qa_model(None, tiny={**TINY, "max_position_embeddings": 64}, vocab_size=work["vocab"]).save_pretrained(model_dir)
    work["tok"].save_pretrained(model_dir)
    assert _predict(model_dir, work["paths"]["squad_dev"], tmp_path / "store", "--max-seq-len", 128,
                    "--max-question-len", 24) == 2
    assert "max_seq_len 128 is longer than the model's position embeddings cover (max_position_embeddings: 64" \
        in capsys.readouterr().err
    with pytest.raises(ModelLoadError, match="max_seq_len 128 is longer"):
        load_panel([model_dir], ReaderOptions(device="cpu", windows={"max_seq_len": 128, "max_question_len": 24}))
    load_panel([model_dir], ReaderOptions(device="cpu", windows={"max_seq_len": 64, "max_question_len": 24,
                                                                "doc_overlap": 16}))  # fits: loads


def test_window_settings_that_make_no_window_name_the_config_they_came_from(work, tmp_path, no_group_variables):
    from qa_scale.inference.options import ReaderOptions
    from qa_scale.serving.readers import load_panel

    model_dir = tmp_path / "run" / "model"
    load_qa_model(None, tiny=TINY, vocab_size=work["vocab"]).save_pretrained(model_dir)
    work["tok"].save_pretrained(model_dir)
    config = tmp_path / "run" / "config.yaml"  # a training config whose question takes the whole window
    config.write_text("data:\n  windows: {max_seq_len: 64, max_question_len: 64, doc_overlap: 16}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"window settings from the command line over {config}"):
        load_panel([model_dir], ReaderOptions(device="cpu"))


# ---------------------------------------------------------------- 2. ensemble weights


def test_huge_weights_are_normalised_without_overflow(work):
    assert normalise([1e308, 1e308], 2).tolist() == [0.5, 0.5]
    assert normalise([5e-324, 5e-324], 2).tolist() == [0.5, 0.5]
    assert parse_weights("1e308,1e308", 2) == [1e308, 1e308]
    stores = work["stores"]
    huge = ensemble(stores, parse_weights("1e308,1e308", 2), nbest=False)
    ones = ensemble(stores, [1, 1], nbest=False)
    assert huge.weights == [0.5, 0.5]
    assert huge.decoded.predictions == ones.decoded.predictions
    assert len(set(huge.decoded.predictions.values())) > 1  # real answers, not one character everywhere


@pytest.mark.parametrize("text", ["nan,1", "inf,1", "1e309,1", "-1,2", "0,0", "1,x"])
def test_weights_that_make_no_mean_are_refused(text):
    with pytest.raises(EnsembleError, match="--weights"):
        parse_weights(text, 2)


def test_ensemble_command_with_huge_weights(work, tmp_path):
    stores = [str(s.path) for s in work["stores"]]
    assert main(["ensemble", *stores, "--weights", "1e308,1e308", "--out", str(tmp_path / "huge"), "--no-nbest"]) == 0
    assert main(["ensemble", *stores, "--weights", "1,1", "--out", str(tmp_path / "ones"), "--no-nbest"]) == 0
    read = lambda name: json.loads((tmp_path / name / "predictions.json").read_text(encoding="utf-8"))  # noqa: E731
    assert read("huge") == read("ones")
    assert main(["ensemble", *stores, "--weights", "nan,1", "--out", str(tmp_path / "nan")]) == 2


finite_weights = st.lists(st.floats(min_value=1e-100, max_value=1e100, allow_nan=False, allow_infinity=False),
                          min_size=1, max_size=8)


@given(weights=finite_weights)
def test_normalised_weights_sum_to_one(weights):
    w = normalise(weights, len(weights))
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    assert abs(math.fsum(w) - 1.0) <= 1e-12


@given(weights=finite_weights, factor=st.floats(min_value=1e-100, max_value=1e100))
def test_normalised_weights_do_not_depend_on_their_scale(weights, factor):
    np.testing.assert_allclose(normalise([w * factor for w in weights], len(weights)),
                               normalise(weights, len(weights)), rtol=1e-12, atol=0)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=2),
       exponent=st.integers(min_value=-300, max_value=300), mantissa=st.floats(min_value=1.0, max_value=9.99))
def test_scaling_every_weight_leaves_the_answers_unchanged(work, weights, exponent, mantissa):
    factor = mantissa * 10.0 ** exponent
    scaled = [w * factor for w in weights]
    if not all(math.isfinite(w) and w > 0 for w in scaled):
        return
    stores = work["stores"]
    assert (ensemble(stores, scaled, nbest=False).decoded.predictions
            == ensemble(stores, weights, nbest=False).decoded.predictions)


def test_combine_arrays_with_huge_weights_is_the_plain_mean():
    rng = np.random.default_rng(0)
    members = [(rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32))
               for _ in range(2)]
    for got, want in zip(combine_arrays(members, [1e308, 1e308]), combine_arrays(members, [1, 1])):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("text, message", [
    ("- {store: a, weight: 1}\n", "expected a mapping of settings at the top level, got list"),
    ("3\n", "expected a mapping of settings at the top level, got int"),
    ("members: [{store: a, weight: .inf}]\n", "not a finite number"),
    ("members: [{store: a, weight: 1}]\ncombine: [mean_logits]\n", "unknown combine rule"),
    ("members: [{store: [a], weight: 1}]\n", "store must be text"),
])
def test_bad_ensemble_recipes_name_the_recipe(tmp_path, text, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EnsembleError, match=message) as err:
        load_ensemble_recipe(path)
    assert str(err.value).startswith(str(path))


def test_a_recipe_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes("members: [{store: 北京, weight: 1}]\n".encode("gbk"))
    with pytest.raises(EnsembleError, match=f"{path}: not UTF-8"):
        load_ensemble_recipe(path)


def test_a_recipe_with_huge_weights_loads(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("members: [{store: a/x, weight: 1.0e+308}, {store: b/x, weight: 1.0e+308}]\n", encoding="utf-8")
    assert normalise(load_ensemble_recipe(path).weights, 2).tolist() == [0.5, 0.5]


# ---------------------------------------------------------------- 3. scoring that means nothing


def test_predict_with_references_of_another_file_is_refused_first(work, tmp_path, capsys, no_group_variables):
    paths = work["paths"]
    assert _predict(work["reader"], paths["squad_dev"], tmp_path / "store", "--references", paths["hw7_dev"]) == 2
    err = capsys.readouterr().err
    assert str(paths["hw7_dev"]) in err and str(paths["squad_dev"]) in err and "none of its" in err
    assert not (tmp_path / "store").exists()


def test_predict_with_references_without_answers_is_refused(work, tmp_path, capsys, no_group_variables):
    test = work["unanswered"]
    assert _predict(work["reader"], test, tmp_path / "store", "--references", test) == 2
    assert f"{test}: no question has a reference answer" in capsys.readouterr().err


def test_ensemble_with_references_of_another_file_or_a_test_file(work, tmp_path, capsys):
    stores, paths = [str(s.path) for s in work["stores"]], work["paths"]
    assert main(["ensemble", *stores, "--references", str(paths["hw7_dev"]), "--out", str(tmp_path / "a")]) == 2
    assert f"{paths['hw7_dev']}: none of its" in capsys.readouterr().err
    assert main(["ensemble", *stores, "--references", str(work["unanswered"]), "--out", str(tmp_path / "b")]) == 2
    assert "no question has a reference answer" in capsys.readouterr().err


def test_evaluate_against_a_test_file_is_refused_unless_asked(work, tmp_path, capsys):
    test = work["unanswered"]
    ids = list(data.load_references(test))
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({i: "北京" for i in ids}, ensure_ascii=False), encoding="utf-8")
    assert main(["evaluate", str(test), str(preds)]) == 2
    assert f"{test}: no question has a reference answer (a test file?)" in capsys.readouterr().err
    scores, warnings = metrics.score_file(json.loads(preds.read_text("utf-8")), data.load_references(test), preds,
                                          allow_unanswerable=True)
    assert (scores.em, scores.total, scores.no_reference) == (0.0, len(ids), len(ids))
    assert scores.to_dict()["no_reference"] == len(ids)
    assert any("have no reference answer" in w for w in warnings)


def test_empty_predictions_are_refused(work, tmp_path, capsys):
    dev = work["paths"]["squad_dev"]
    preds = tmp_path / "preds.json"
    preds.write_text("{}", encoding="utf-8")
    assert main(["evaluate", str(dev), str(preds)]) == 2
    assert str(preds) in capsys.readouterr().err
    with pytest.raises(ValueError, match="none of its 1 questions is among the 0 predicted ids"):
        metrics.evaluate({}, {"a": ["北京"]})


def _squad(answers) -> dict:
    return {"data": [{"paragraphs": [{"context": "张伟于1987年出生在杭州。", "qas": [
        {"id": "q1", "question": "张伟哪年出生？", "answers": answers}]}]}]}


def test_a_numeric_gold_answer_is_refused_naming_id_and_key(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(_squad([{"text": "1987年", "answer_start": 3}, {"text": 1987, "answer_start": 3}]),
                               ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"example q1: answers\[1\].text is 1987, not a string"):
        data.load_references(path)
    assert data.load_references(path, skip_bad=True) == {"q1": ["1987年"]}  # lenient: that answer alone is left out
    with pytest.raises(DataError, match="bad answer text: 1987 is a number"):
        data.load(path, "strict")
    hw7 = tmp_path / "hw7.json"
    hw7.write_text(json.dumps({"paragraphs": ["张伟于1987年出生在杭州。"], "questions": [
        {"id": 7, "paragraph_id": 0, "question_text": "哪年？", "answer_text": 1987, "answer_start": 3,
         "answer_end": 6}]}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match="example 7: answer_text is 1987, not a string"):
        data.load_references(hw7)


def _task(work, tmp_path, overrides):
    from qa_scale.runtime.distributed import single
    from qa_scale.training.tasks import QATask

    config = load_recipe(None, ["model.tiny={}", f"model.tokenizer={work['root'] / 'tok'}",
                                f"data.train_file={work['paths']['squad_train']}", "data.windows.max_seq_len=64",
                                "data.windows.max_question_len=24", "data.windows.doc_overlap=16", *overrides])
    return QATask(config, work["tok"], tmp_path / "cache", single())


def test_training_with_a_dev_file_without_answers_is_refused_at_setup(work, tmp_path):
    test = work["unanswered"]
    with pytest.raises(ValueError, match=f"{test}: data.dev_file has no reference answers"):
        _task(work, tmp_path, [f"data.dev_file={test}"])


def test_training_with_a_dev_file_without_a_usable_record_is_named(work, tmp_path):
    bad = tmp_path / "dev.json"
    bad.write_text(json.dumps(_squad([{"text": "上海", "answer_start": 0}]), ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=f"{bad}: no example left after lenient validation"):
        _task(work, tmp_path, [f"data.dev_file={bad}"])


# ---------------------------------------------------------------- 4. settings checked at every level


@pytest.mark.parametrize("tiny, message", [
    ("{hiden_size: 48}", "unknown key model.tiny.hiden_size; did you mean model.tiny.hidden_size?"),
    ("{hidden_size: -1}", "model.tiny.hidden_size: must be an integer ≥ 1, got -1"),
    ("{num_hidden_layers: 0}", "model.tiny.num_hidden_layers: must be an integer ≥ 1"),
    ("{intermediate_size: 1.5}", "model.tiny.intermediate_size: must be an integer ≥ 1"),
    ("{hidden_dropout_prob: 2}", r"model.tiny.hidden_dropout_prob: must be a number in \[0, 1\)"),
    ("{hidden_size: 30, num_attention_heads: 4}", "not a multiple of num_attention_heads"),
    ("{vocab_size: 10}", "the tokenizer's"),
])
def test_tiny_model_settings_are_checked_key_by_key(tiny, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(None, [f"model.tiny={tiny}", "model.tokenizer=vocab.txt"])


def test_tiny_settings_are_checked_when_building_too():
    with pytest.raises(ModelLoadError, match="tiny.hidden_size: must be an integer ≥ 1, got -1"):
        load_qa_model(None, vocab_size=50, tiny={"hidden_size": -1})
    with pytest.raises(ModelLoadError, match="did you mean tiny.hidden_size"):
        load_qa_model(None, vocab_size=50, tiny={"hiden_size": 48})


def test_recipe_files_are_read_through_the_input_layer(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_bytes("model:\n  name_or_path: 北京\n".encode("gbk"))
    with pytest.raises(ValueError, match=f"{path}: not UTF-8"):
        load_recipe(path)
    path.write_text("- model\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path}: expected a mapping of settings at the top level, got list"):
        load_recipe(path)
    path.write_text("model:\n  tiny: {hiden_size: 48}\n  tokenizer: vocab.txt\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path}: unknown key model.tiny.hiden_size"):
        load_recipe(path)


def test_deepspeed_configs_are_read_through_the_input_layer(tmp_path):
    from qa_scale.training.ds_config import DSConfigError, resolve

    config = load_recipe(None, ["model.tiny={}", "model.tokenizer=vocab.txt"])
    path = tmp_path / "ds.json"
    path.write_text('{"train_batch_size": "auto",\n "train_batch_size": 8}', encoding="utf-8")
    with pytest.raises(InputError, match=f"{path}: key 'train_batch_size' appears twice"):
        resolve(path, config, world_size=1)
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(DSConfigError, match=f"{path}: a DeepSpeed config is a JSON object"):
        resolve(path, config, world_size=1)


def test_a_hub_checkpoints_pooler_is_not_a_loss(work, tmp_path):
    """Hub BERT checkpoints carry ``bert.pooler.*``, which QA models leave out by design: they load."""
    import torch
    from safetensors.torch import load_file, save_file

    model_dir = _copy_reader(work, tmp_path)
    state = load_file(model_dir / "model.safetensors")
    state.update({"bert.pooler.dense.weight": torch.zeros(32, 32), "bert.pooler.dense.bias": torch.zeros(32)})
    save_file(state, model_dir / "model.safetensors", metadata={"format": "pt"})
    load_qa_model(str(model_dir))
    load_qa_model(str(model_dir), new_head=True)
