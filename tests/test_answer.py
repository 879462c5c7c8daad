"""`qa-scale answer`: the ensemble's and each store's answers for dev questions, recipes, refusals
that name the difference, the three input modes and their errors."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from reader_runs import WINDOWS, make_readers, save_reader

from qa_scale import data
from qa_scale.cli import main
from qa_scale.data.batches import pad_width
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.inference.forward import length_batches
from qa_scale.inference.logits_store import open_store
from qa_scale.serving import ask
from qa_scale.serving.answering import Query, answer, logits_of
from qa_scale.serving.readers import load_panel


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = make_readers(tmp_path_factory.mktemp("answer"))
    dev = data.load(work["paths"]["squad_dev"], "lenient").examples
    work["dev"] = dev
    work["sample"] = random.Random(0).sample(dev, 24)
    lines = [json.dumps({"id": ex.id, "context": ex.context, "question": ex.question}, ensure_ascii=False)
             for ex in work["sample"]]
    (work["root"] / "sample.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return work


def answers_of(out_file) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, out_file.read_text(encoding="utf-8").splitlines())}


def test_three_readers_answer_as_the_ensemble_wrote(work, tmp_path):
    out = tmp_path / "answers.jsonl"
    models = [str(m) for m in work["models"]]
    assert main(["answer", *models, "--input", str(work["root"] / "sample.jsonl"), "--output", str(out),
                 "--device", "cpu"]) == 0
    got = answers_of(out)
    assert len(got) == len(work["sample"])
    for ex in work["sample"]:
        assert got[ex.id]["answer"] == work["ensemble"][ex.id], ex.id
        a = got[ex.id]
        if a["answer"]:
            assert ex.context[a["start"]:a["end"]] == a["answer"] and 0 < a["probability"] <= 1


def test_one_reader_answers_as_its_store_predicted(work, tmp_path):
    out = tmp_path / "one.jsonl"
    model = work["models"][1]
    assert main(["answer", str(model), "--input", str(work["root"] / "sample.jsonl"), "--output", str(out),
                 "--device", "cpu", "--nbest"]) == 0
    store = open_store(model.parent / "dev_store")
    got, predictions, nbest = answers_of(out), store.predictions(), store.nbest()
    for ex in work["sample"]:
        assert got[ex.id]["answer"] == predictions[ex.id]
        assert [c["text"] for c in got[ex.id]["nbest"]] == [c["text"] for c in nbest[ex.id]]


def test_same_fp32_logits_path_as_predict(work):
    """Logits equal the store's bit for bit wherever a window was padded to the same batch width.

    `predict` pads each batch to its longest window (rounded up to 8); a short window batched with
    other neighbours gets another width, and attention over a different number of masked key
    positions sums in another order: those rows differ in the last bits (here ≤ 1e-6), nothing else.
    """
    panel = load_panel([work["models"][0]], device="cpu")
    store = open_store(work["models"][0].parent / "dev_store")
    first = work["dev"][:20]  # the store's first windows are these examples' windows, in order
    ws, start, _ = logits_of(panel, first)
    stored = np.asarray(store.logits()[0][: len(ws)])
    assert np.array_equal(ws.input_ids, store.windows.input_ids[: len(ws)])
    width_here, width_there = np.zeros(len(ws), int), np.zeros(len(store.windows), int)
    for idx in length_batches(ws, panel.batch_size):
        width_here[idx] = pad_width(ws.lengths[idx], cap=ws.input_ids.shape[1])
    for idx in length_batches(store.windows, store.meta["predict"]["batch_size"]):
        width_there[idx] = pad_width(store.windows.lengths[idx], cap=ws.input_ids.shape[1])
    same = width_here == width_there[: len(ws)]
    assert same.sum() > len(ws) // 2
    for w in range(len(ws)):
        real = slice(0, ws.lengths[w])
        if same[w]:
            assert np.array_equal(start[w, real], stored[w, real]), w
        else:
            np.testing.assert_allclose(start[w, real], stored[w, real], rtol=0, atol=1e-6)


def test_a_recipe_stands_for_its_models_and_weights(work, tmp_path):
    weights = [0.5, 0.3, 0.2]
    assert main(["ensemble", *(str(m.parent / "dev_store") for m in work["models"]), "--weights",
                 ",".join(map(str, weights)), "--combine", "mean_log_softmax", "--out", str(tmp_path / "ens")]) == 0
    want = json.loads((tmp_path / "ens" / "predictions.json").read_text(encoding="utf-8"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("members:\n" + "".join(f"- {{name: m{n}, weight: {w}, model: {m}}}\n" for n, (w, m) in
                                             enumerate(zip(weights, work["models"])))
                      + "combine: mean_log_softmax\n", encoding="utf-8")
    for how in (["--recipe", str(recipe)], [str(recipe)]):
        out = tmp_path / "r.jsonl"
        assert main(["answer", *how, "--input", str(work["root"] / "sample.jsonl"), "--output", str(out)]) == 0
        got = answers_of(out)
        assert {k: v["answer"] for k, v in got.items()} == {ex.id: want[ex.id] for ex in work["sample"]}
    panel = load_panel([], recipe)
    assert panel.weights == pytest.approx(weights) and panel.rule == "mean_log_softmax"


def test_readers_with_other_tokenizers_or_windows_are_refused(work, tmp_path, capsys):
    root = work["root"]
    lines = work["paths"]["corpus"].read_text("utf-8").splitlines()
    build_char_vocab(lines, tmp_path / "tok_small", vocab_size=400)
    other_tok = save_reader(tmp_path / "small", tmp_path / "tok_small", 0)
    other_windows = save_reader(tmp_path / "wide", root / "tok", 0, [w.replace("=64", "=96") for w in WINDOWS])
    args = ["answer", str(work["models"][0]), "--context", "北京是首都。", "--question", "首都？"]
    assert main([*args[:2], str(other_tok), *args[2:]]) == 2
    err = capsys.readouterr().err
    assert f"{other_tok} cannot answer with {work['models'][0]}: tokenizer differs in vocab_s" in err
    assert main([*args[:2], str(other_windows), *args[2:]]) == 2
    assert "window settings differ (max_seq_len 64 vs 96)" in capsys.readouterr().err
    assert main([*args[:2], str(other_windows), *args[2:], "--max-seq-len", "64"]) == 0  # one setting for all
    assert main(["answer", str(tmp_path / "nowhere"), *args[2:]]) == 2
    assert "model directory not found" in capsys.readouterr().err


def test_questions_json_and_interactive_modes(work, capsys):
    panel = load_panel(work["models"][:2])
    ex = work["dev"][0]
    want = answer(panel, [Query(ex.context, ex.question), Query(ex.context, "谁？")], nbest=True)
    assert ask.run(panel, context=ex.context, questions=[ex.question, "谁？"], nbest=True, as_json=True) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["answers"] == json.loads(json.dumps(want)) and len(shown["readers"]) == 2
    out = io.StringIO()
    assert ask.run(panel, context=ex.context, questions=[], stdin=io.StringIO(f"{ex.question}\n\n谁？\n"),
                   stdout=out, as_json=True) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["answer"] for x in lines] == [w["answer"] for w in want] and "nbest" not in lines[0]
    assert ask.run(panel, context=ex.context, questions=[ex.question], nbest=True) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{ex.question}\n  → {want[0]['answer']}  [{want[0]['start']}, {want[0]['end']})")
    assert "     1. " in text


@pytest.mark.parametrize("line, message", [
    ('{"id": "x1", "context": "北京。"}', "line 2 (id x1): missing key 'question'"),
    ('{"id": "x2", "context": " ", "question": "哪？"}', "line 2 (id x2): the context is empty"),
    ('{"context": "北京。", "question": "哪？", "answer": 1}', "line 2: unknown key 'answer'"),
    ("{not json", "line 2: not JSON"),
    ('["a list"]', "line 2: expected an object"),
])
def test_bad_jsonl_names_the_file_line_and_id(work, tmp_path, capsys, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "北京是首都。", "question": "哪？"}\n' + line + "\n", encoding="utf-8")
    assert main(["answer", str(work["models"][0]), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad} {message}" in err and "Traceback" not in err


def test_bad_context_and_flags_are_named(work, tmp_path, capsys):
    model = str(work["models"][0])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    cases = [(["--context-file", str(latin1), "--question", "?"], f"{latin1}: not UTF-8 text"),
             (["--context-file", str(tmp_path / "none.txt"), "--question", "?"], "context file not found"),
             (["--question", "谁？"], "give the paragraph with --context"),
             (["--context", "北京。", "--question", " "], "--question 1: the question is empty"),
             (["--context", "   ", "--question", "谁？"], "--question 1: the context is empty"),
             (["--weights", "1,2", "--context", "北京。", "--question", "谁？"], "2 weights for 1 stores")]
    for flags, message in cases:
        assert main(["answer", model, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_fp32_answers_as_on_the_cpu_and_bf16_fp16_run(work):
    queries = [Query(ex.context, ex.question) for ex in work["sample"]]
    cpu = answer(load_panel(work["models"], device="cpu"), queries)
    gpu = answer(load_panel(work["models"], device="cuda"), queries)
    assert [a["answer"] for a in gpu] == [a["answer"] for a in cpu]
    for compute in ("bf16", "fp16"):
        half = answer(load_panel(work["models"], device="cuda", compute=compute), queries)
        for q, a in zip(queries, half):
            assert a["answer"] == "" or q.context[a["start"]:a["end"]] == a["answer"]
