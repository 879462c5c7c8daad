"""The ensembler: exact reproduction of a member, weighted-mean math, fingerprint refusals, weight
search on the simplex with a held-out check, recipes that `ensemble --recipe` takes back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax

from qa_scale import data, synthetic
from qa_scale.cli import main
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.data.windows import WindowConfig, build_windows
from qa_scale.ensemble.combine import (
    EnsembleError,
    check_compatible,
    ensemble,
    mean_logits,
    normalise,
    parse_weights,
)
from qa_scale.ensemble.spec import load_recipe, resolve
from qa_scale.ensemble.weight_search import SearchSettings, search_weights, split_ids
from qa_scale.evaluation.decode import decode
from qa_scale.inference import logits_store
from qa_scale.inference.predict import StoreOptions, predict_to_store
from qa_scale.inference.reader import Reader
from qa_scale.modeling.model import load_qa_model

ROOT = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
WINDOWS = WindowConfig(max_seq_len=128, max_question_len=32, doc_overlap=32)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two tiny models' stores on dev, and stores that differ in one thing each."""
    root = tmp_path_factory.mktemp("ensemble")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=2, dev_paragraphs=10, test_paragraphs=2),
                                  root / "data")
    lines = paths["corpus"].read_text("utf-8").splitlines()
    tok = build_char_vocab(lines, root / "tok", vocab_size=3000)
    other_tok = build_char_vocab(lines, root / "tok_small", vocab_size=400)  # another vocabulary
    vocab = max(tok.get_vocab().values()) + 1
    models = [load_qa_model(None, tiny=TINY, vocab_size=vocab, seed=s).eval() for s in (0, 1)]
    dev = data.load(paths["squad_dev"], "lenient").examples
    test = data.load(paths["squad_test"], "lenient").examples
    first = dev[0]  # same ids, same lengths, one other question character: other data
    asked = [data.Example(first.id, ("谁" if first.question[0] != "谁" else "哪") + first.question[1:], first.context,
                          first.answers), *dev[1:]]

    def store(name, model=0, examples=dev, windows=WINDOWS, tokenizer=tok, precision="fp32"):
        predict_to_store(Reader.of(models[model], tokenizer, windows), examples, root / name, StoreOptions(
            batch_size=16, precision=precision, model_info={"path": str(root / f"m{model}" / "model")}, progress=False))
        return logits_store.open_store(root / name)

    stores = {"a": store("a"), "b": store("b", model=1), "a16": store("a16", precision="fp16"),
              "stride": store("stride", windows=WindowConfig(max_seq_len=128, max_question_len=32, doc_step=40)),
              "max_len": store("max_len", windows=WindowConfig(max_seq_len=96, max_question_len=32, doc_overlap=32)),
              "tokenizer": store("tokenizer", tokenizer=other_tok), "data": store("other_data", examples=test),
              "questions": store("questions", examples=asked)}
    return {"root": root, "paths": paths, "tok": tok, "dev": dev, "stores": stores}


@pytest.mark.parametrize("name", ["a", "a16"])
def test_one_store_reproduces_its_own_predictions(work, name):
    s = work["stores"][name]
    result = ensemble([s])
    assert result.decoded.predictions == s.predictions()
    assert json.loads(json.dumps(result.decoded.nbest)) == s.nbest()


def test_a_store_with_itself_is_that_store(work):
    s = work["stores"]["a"]
    start, end = mean_logits([s, s, s, s])  # weights 1/4: exact in binary
    np.testing.assert_array_equal(start, s.logits()[0])
    np.testing.assert_array_equal(end, s.logits()[1])
    assert ensemble([s, s]).decoded.predictions == s.predictions()


def test_weighted_mean_streams_the_exact_math(work):
    a, b = work["stores"]["a"], work["stores"]["b"]
    (sa, ea), (sb, eb) = a.logits(), b.logits()
    start, end = mean_logits([a, b], [1, 3], chunk_rows=7)  # blocks that do not divide the rows
    finite = np.isfinite(sa)
    np.testing.assert_allclose(start[finite], (0.25 * sa + 0.75 * sb)[finite], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(end[finite], (0.25 * ea + 0.75 * eb)[finite], rtol=1e-6, atol=1e-6)
    assert np.isneginf(start[~finite]).all()  # padding stays −inf
    ls, _ = mean_logits([a, b], rule="mean_log_softmax", chunk_rows=5)
    want = 0.5 * log_softmax(np.asarray(sa), axis=1) + 0.5 * log_softmax(np.asarray(sb), axis=1)
    np.testing.assert_allclose(ls[finite], want[finite], rtol=1e-5, atol=1e-5)
    only_b, _ = mean_logits([a, b], [0, 2])  # a zero weight leaves the member out
    np.testing.assert_array_equal(only_b, sb)
    fp16 = work["stores"]["a16"]
    mixed, _ = mean_logits([fp16, a], [1, 1])  # fp16 and fp32 members average in float32
    np.testing.assert_allclose(mixed[finite], (0.5 * fp16.logits()[0].astype(np.float32) + 0.5 * sa)[finite],
                               rtol=1e-6, atol=1e-6)


def test_weights_are_checked():
    assert normalise([2, 6], 2).tolist() == [0.25, 0.75]
    assert parse_weights("0.2,0.8", 2) == [0.2, 0.8]
    for bad in ([1, -1], [0, 0], [1, float("nan")]):
        with pytest.raises(EnsembleError, match="weights must be"):
            normalise(bad, 2)
    with pytest.raises(EnsembleError, match="3 weights for 2 stores"):
        parse_weights("1,2,3", 2)


@pytest.mark.parametrize("other, named", [
    ("stride", "doc_stride differs"), ("max_len", "max_seq_len differs: 128 vs 96"),
    ("tokenizer", "tokenizer differs in vocab_s"), ("data", "num_examples differs"),
    ("questions", "window input ids differ first at position 0"),
])
def test_different_windows_are_refused_naming_the_difference(work, other, named, tmp_path, capsys):
    a, b = work["stores"]["a"], work["stores"][other]
    with pytest.raises(EnsembleError, match=named):
        check_compatible([a, b])
    assert main(["ensemble", str(a.path), str(b.path), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"qa-scale ensemble: error: {b.path} cannot be averaged with {a.path}") and named in err
    assert "Traceback" not in err and not (tmp_path / "e").exists()


def test_ensemble_command_writes_predictions_submission_metrics(work, tmp_path, capsys):
    a, b = work["stores"]["a"], work["stores"]["b"]
    dev = work["paths"]["squad_dev"]
    assert main(["ensemble", str(a.path), str(b.path), "--weights", "1,3", "--references", str(dev),
                 "--out", str(tmp_path / "e"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == json.loads((tmp_path / "e" / "ensemble.json").read_text("utf-8"))
    assert summary["weights"] == [0.25, 0.75] and [m["name"] for m in summary["members"]] == ["m0", "m1"]
    preds = json.loads((tmp_path / "e" / "predictions.json").read_text("utf-8"))
    assert list(preds) == [ex.id for ex in work["dev"]]
    assert preds == ensemble([a, b], [1, 3]).decoded.predictions
    assert summary["metrics"]["total"] == len(data.load_references(dev))
    assert "submission" not in summary["files"]  # SQuAD-style data: predictions.json is the submission


@pytest.fixture(scope="module")
def signal(work):
    """Stores with something to find: two members that each know half of the examples well (gold
    bumps of 3 vs 1 over N(0, 1) noise, halves swapped), and a third that is pure N(0, 4) noise."""
    root = work["root"]
    paths = synthetic.write_all(synthetic.SampleConfig(seed=1, train_paragraphs=1, dev_paragraphs=50,
                                                           test_paragraphs=1), root / "signal_data")
    dev = data.load(paths["squad_dev"], "lenient").examples
    ws = build_windows(dev, work["tok"], WINDOWS)
    rng = np.random.default_rng(0)
    rows, has, even = np.arange(len(ws)), ws.start_positions != ws.cls_index, ws.example_index % 2 == 0
    out = {}
    for name, bump, scale in (("left", np.where(even, 3.0, 1.0), 1.0), ("right", np.where(even, 1.0, 3.0), 1.0),
                              ("noise", np.zeros(len(ws)), 2.0)):
        start, end = (scale * rng.standard_normal(ws.input_ids.shape).astype(np.float32) for _ in range(2))
        start[rows[has], ws.start_positions[has]] += bump[has]
        end[rows[has], ws.end_positions[has]] += bump[has]
        pad = np.arange(ws.input_ids.shape[1])[None, :] >= ws.lengths[:, None]
        start[pad] = end[pad] = -np.inf
        decoded = decode(ws, start, end, dev, nbest=True)
        out[name] = logits_store.write_store(root / f"{name}_dev", logits_store.StoreContent(
            ws, dev, start, end, decoded, model={"path": str(root / name / "model")}))
    out["references"] = paths["squad_dev"]
    return out


def test_split_is_deterministic_and_disjoint():
    ids = [str(i) for i in range(100)]
    search, held = split_ids(ids, 0.3)
    assert len(held) == 30 and not set(search) & set(held) and sorted(search + held, key=int) == ids
    assert split_ids(list(reversed(ids)), 0.3)[1] == list(reversed(held))  # by id, not by order


def test_weight_search_returns_a_simplex_point_that_beats_uniform(signal):
    stores = [signal[name] for name in ("left", "right", "noise")]
    found = search_weights(stores, data.load_references(signal["references"]), SearchSettings(holdout=0.3, metric="f1"))
    w = np.array(found.weights)
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert found.chosen == "searched" and min(w[0], w[1]) > 0.3 and w[2] < 0.1  # the halves, not the noise
    search, held = found.scores["search"], found.scores["holdout"]
    assert search["searched"]["f1"] >= search["uniform"]["f1"]
    assert held["searched"]["f1"] >= held["uniform"]["f1"]
    assert search["examples"] + held["examples"] == len(stores[0].examples)
    assert found.found_by["surrogate"]["searched"] <= found.found_by["surrogate"]["uniform"]


def test_search_writes_a_recipe_that_ensemble_takes_back(work, signal, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(work["root"])  # recipes record paths relative to the working directory
    dev = signal["references"]
    stores = [str(signal[name].path) for name in ("left", "right", "noise")]
    assert main(["ensemble", *stores, "--search-weights", "--references", str(dev), "--out", str(tmp_path / "s"),
                 "--recipe-out", str(tmp_path / "r.yaml"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    recipe = load_recipe(tmp_path / "r.yaml")
    assert [m.name for m in recipe.members] == ["left", "right", "noise"]
    assert recipe.members[0].store == "left_dev" and recipe.members[0].model == "left/model"
    assert recipe.weights == pytest.approx(summary["weights"], abs=1e-6)
    assert recipe.scores["holdout"]["searched"]["f1"] >= recipe.scores["holdout"]["uniform"]["f1"]
    assert summary["metrics"]["em"] > max(m["metrics"]["em"] for m in summary["members"])  # better than any one
    assert main(["ensemble", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "predictions.json").read_text("utf-8"))
    assert again == json.loads((tmp_path / "s" / "predictions.json").read_text("utf-8"))
    # other stores of the same members (the test split, in practice) are matched by model path
    shuffled = [signal["noise"], signal["right"], signal["left"]]
    matched, weights = resolve(recipe, shuffled)
    assert [s.path.name for s in matched] == ["left_dev", "right_dev", "noise_dev"] and weights == recipe.weights
    with pytest.raises(EnsembleError, match="no store given for recipe member.s. right"):
        resolve(recipe, [signal["left"]])
    with pytest.raises(EnsembleError, match="matches no recipe member"):
        resolve(recipe, [work["stores"]["a"]])


def test_bad_recipes_are_refused(tmp_path):
    cases = {"members: []": "non-empty list", "members: [{store: x, weight: -1}]": "weight must be a number",
             "members: [{stor: x, weight: 1}]": "did you mean store", "members: [{weight: 1}]": "give its store",
             "members: [{store: x, weight: 1}]\ncombien: mean_logits": "did you mean combine"}
    for text, message in cases.items():
        (tmp_path / "r.yaml").write_text(text, encoding="utf-8")
        with pytest.raises(EnsembleError, match=message):
            load_recipe(tmp_path / "r.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "ensemble").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.members and sum(recipe.weights) > 0 and all(m.model for m in recipe.members)


def test_a_new_combination_rule_is_one_registration(work, monkeypatch, tmp_path):
    """Extending qa-scale: a rule registered by name is usable by the API and by ensemble recipes."""
    from qa_scale.ensemble import rules

    rule = rules.CombineRule("half_logits", "half of each member's logits (a test rule)", lambda block: block * 0.5)
    monkeypatch.setitem(rules.RULES._entries, rule.name, rule)
    a, b = work["stores"]["a"], work["stores"]["b"]
    start, _ = mean_logits([a, b], rule="half_logits")
    plain, _ = mean_logits([a, b])
    finite = np.isfinite(plain)
    np.testing.assert_allclose(start[finite], 0.5 * plain[finite], rtol=1e-6)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"members: [{{store: {a.path}, weight: 1}}, {{store: {b.path}, weight: 1}}]\n"
                      "combine: half_logits\n", encoding="utf-8")
    assert load_recipe(recipe).combine == "half_logits"
    with pytest.raises(ValueError, match="registered: mean_logits, mean_log_softmax"):
        rules.get("no_such_rule")
