"""`qa-scale answer`: the ensemble's and each store's answers for dev questions, recipes, refusals
that name the difference, the three input modes and their errors."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from cli_runs import qa_scale
from reader_runs import WINDOWS, make_readers, save_reader

from qa_scale import data, synthetic
from qa_scale.cli import main
from qa_scale.common.inputs import InputError
from qa_scale.data.batches import pad_width
from qa_scale.data.tokenization import build_char_vocab
from qa_scale.inference.forward import length_batches
from qa_scale.inference.logits_store import open_store
from qa_scale.serving import ask
from qa_scale.serving.answering import Query, answer, logits_of
from qa_scale.inference.options import ReaderOptions
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


@pytest.fixture(scope="module")
def one_reader(tmp_path_factory):
    """One tiny reader, no dev store: for tests of the input and output handling only."""
    root = tmp_path_factory.mktemp("one_reader")
    paths = synthetic.write_all(synthetic.SampleConfig(train_paragraphs=1, dev_paragraphs=1, test_paragraphs=1),
                                root / "data")
    build_char_vocab(paths["corpus"].read_text("utf-8").splitlines(), root / "tok", vocab_size=3000)
    return save_reader(root / "runs" / "m0", root / "tok", 0)


def answers_of(out_file) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, out_file.read_text(encoding="utf-8").splitlines())}


def test_three_readers_answer_as_the_ensemble_wrote(work, tmp_path):
    out = tmp_path / "answers.jsonl"
    models = [str(m) for m in work["models"]]
    assert main(["answer", *models, "--input", str(work["root"] / "sample.jsonl"), "--output", str(out),
                 "--device", "cpu", "--compute", "fp32"]) == 0  # fp32: the stores' own arithmetic
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
                 "--device", "cpu", "--nbest", "--compute", "fp32"]) == 0
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
    panel = load_panel([work["models"][0]], ReaderOptions(device="cpu", compute="fp32"))
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
        assert main(["answer", *how, "--input", str(work["root"] / "sample.jsonl"), "--output", str(out),
                     "--compute", "fp32"]) == 0
        got = answers_of(out)
        assert {k: v["answer"] for k, v in got.items()} == {ex.id: want[ex.id] for ex in work["sample"]}
    panel = load_panel([], recipe=recipe)
    assert panel.weights == pytest.approx(weights) and panel.rule == "mean_log_softmax"


@pytest.mark.parametrize("amx", [True, False])
def test_auto_compute_answers_in_bf16_on_a_cpu_with_bf16_units_and_predict_stays_fp32(work, monkeypatch, amx):
    import torch

    from qa_scale.inference.reader import resolve_compute
    from qa_scale.runtime import cpu

    monkeypatch.setattr(cpu, "cpu_bf16_matmul", lambda: "amx_bf16" if amx else None)
    want = "bf16" if amx else "fp32"
    assert resolve_compute("auto", "cpu", record=False) == want
    assert resolve_compute("auto", "cpu", record=True) == "fp32"  # a store is the same on any machine
    assert resolve_compute("fp16", "cpu", record=True) == "fp16"  # what is asked for is kept
    panel = load_panel(work["models"], ReaderOptions(device="cpu"))  # the default: auto
    assert panel.info()["compute"] == want
    assert {p.dtype for r in panel.readers for p in r.model.parameters()} == {getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[want])}
    queries = [Query(ex.context, ex.question) for ex in work["sample"]]
    got = answer(panel, queries)
    for q, a in zip(queries, got):
        assert a["answer"] == "" or q.context[a["start"]:a["end"]] == a["answer"]
    if not amx:  # fp32: the ensemble's own answers
        assert [a["answer"] for a in got] == [work["ensemble"][ex.id] for ex in work["sample"]]
    store = open_store(work["models"][0].parent / "dev_store")  # written by predict with the default
    assert store.meta["model"]["compute"] == "fp32"


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


def test_a_recipe_member_without_its_model_is_named_by_the_recipe_and_key(work, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"members:\n- {{name: a, weight: 1, model: {work['models'][0]}}}\n- {{name: b, weight: 1, model: nowhere/model}}\n",
                      encoding="utf-8")
    assert main(["answer", "--recipe", str(recipe), "--context", "北京是首都。", "--question", "首都？"]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}: member 2 (b): model directory not found: nowhere/model" in err, err


def test_questions_json_and_interactive_modes(work, capsys):
    panel = load_panel(work["models"][:2])
    ex = work["dev"][0]
    want = answer(panel, [Query(ex.context, ex.question), Query(ex.context, "谁？")], nbest=True)
    assert ask.run(panel, ask.Asked(ex.context, [ex.question, "谁？"], nbest=True, as_json=True)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["answers"] == json.loads(json.dumps(want)) and len(shown["readers"]) == 2
    out = io.StringIO()
    assert ask.run(panel, ask.Asked(ex.context, as_json=True), stdin=io.StringIO(f"{ex.question}\n\n谁？\n"),
                   stdout=out) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["answer"] for x in lines] == [w["answer"] for w in want] and "nbest" not in lines[0]
    assert ask.run(panel, ask.Asked(ex.context, [ex.question], nbest=True)) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{ex.question}\n  → {want[0]['answer']}  [{want[0]['start']}, {want[0]['end']})")
    assert "     1. " in text


@pytest.mark.parametrize("line, message", [
    ('{"id": "x1", "context": "北京。"}', "line 2 (id x1): missing key 'question'"),
    ('{"id": "x2", "context": " ", "question": "哪？"}', "line 2 (id x2): the context is empty"),
    ('{"context": "北京。", "question": "哪？", "answer": 1}', "line 2: unknown key 'answer'"),
    ("{not json", "line 2: invalid JSON at line 1 column 2"),
    ('{"context": "北京。", "question": "\\ud800"}', "line 2: question: invalid text: a lone surrogate U+D800"),
    ('{"context": 5, "question": "哪？"}', "line 2: the context must be a string, not int"),
    ('{"context": "北京。", "question": "哪？", "id": ' + "9" * 5000 + "}", "line 2: a number of 5000 characters"),
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
             (["--context", "   ", "--question", "谁？"], "argument --context: the paragraph is empty"),
             (["--weights", "1,2", "--context", "北京。", "--question", "谁？"], "2 weights for 1 stores")]
    for flags, message in cases:
        assert main(["answer", model, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (flags, err)


def jsonl(n: int, bad: dict[int, str] | None = None) -> str:
    lines = [json.dumps({"id": f"q{k}", "context": "北京是中国的首都。", "question": "中国的首都是哪里？"},
                        ensure_ascii=False) for k in range(1, n + 1)]
    for k, line in (bad or {}).items():
        lines[k - 1] = line
    return "\n".join(lines) + "\n"


def test_an_output_that_is_an_input_is_refused_before_any_work(one_reader, tmp_path, capsys, monkeypatch):
    def no_loading(*_a, **_k):
        raise AssertionError("the models were loaded before the outputs were checked")

    monkeypatch.setattr("qa_scale.serving.readers.load_panel", no_loading)
    questions = tmp_path / "q.jsonl"
    questions.write_text(jsonl(3), encoding="utf-8")
    assert main(["answer", str(one_reader), "--input", str(questions), "--output", str(questions)]) == 2
    assert "is also an input of this command" in capsys.readouterr().err
    assert questions.read_text(encoding="utf-8") == jsonl(3)
    inside = one_reader / "answers.jsonl"
    assert main(["answer", str(one_reader), "--input", str(questions), "--output", str(inside)]) == 2
    assert "lies inside" in capsys.readouterr().err and not inside.exists()


def test_an_old_output_stays_until_every_line_is_answered(one_reader, tmp_path, capsys, monkeypatch):
    out, questions = tmp_path / "answers.jsonl", tmp_path / "q.jsonl"
    out.write_text("old answers\n", encoding="utf-8")
    args = ["answer", str(one_reader), "--input", str(questions), "--output", str(out)]
    questions.write_text(jsonl(300, {3: '{"context": "北京。", "question": 7}'}), encoding="utf-8")
    assert main(args) == 2
    assert f"{questions} line 3 (id" not in capsys.readouterr().err  # no id on that line
    assert out.read_text(encoding="utf-8") == "old answers\n"
    questions.write_text(jsonl(300), encoding="utf-8")
    real, calls = ask.answer, []

    def stopped_after_one_chunk(*a, **k):  # SIGTERM while answering: main's handler raises SystemExit
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit(143)
        return real(*a, **k)

    monkeypatch.setattr(ask, "answer", stopped_after_one_chunk)
    with pytest.raises(SystemExit):
        main(args)
    assert len(calls) == 2 and out.read_text(encoding="utf-8") == "old answers\n"
    monkeypatch.setattr(ask, "answer", real)
    assert main(args) == 0
    assert len(answers_of(out)) == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl", "q.jsonl"]  # no staging left behind


def test_a_bom_is_accepted_and_surrogates_never_reach_the_tokenizer(one_reader, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_bytes(b"\xef\xbb\xbf" + jsonl(2).encode("utf-8"))
    assert main(["answer", str(one_reader), "--input", str(questions)]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == ["q1", "q2"]
    panel = load_panel([one_reader], ReaderOptions(device="cpu"))
    with pytest.raises(InputError, match=r"argument --question 2: invalid text: a lone surrogate U\+DC00"):
        ask.prepare("北京。", ["哪？", "\udc00"], None)
    with pytest.raises(InputError, match=r"query 1: the question: invalid text"):
        answer(panel, [Query("北京。", "哪\ud800")])
    with pytest.raises(InputError, match="<stdin> line 2: invalid text"):
        ask.run(panel, ask.Asked("北京。"), stdin=io.StringIO("哪？\n\ud800\n"), stdout=io.StringIO())


def test_stdin_that_is_not_utf8_is_named_by_its_line(one_reader, capsys, monkeypatch):
    raw = "哪里？\n".encode("utf-8") + "首都在哪里？\n".encode("gbk")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))
    assert main(["answer", str(one_reader), "--context", "北京是中国的首都。"]) == 2
    captured = capsys.readouterr()
    assert "<stdin> line 2: not UTF-8 text" in captured.err and "Traceback" not in captured.err
    assert captured.out.startswith("哪里？\n  → ")  # line 1 was answered before line 2 was read


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_fp32_answers_as_on_the_cpu_and_bf16_fp16_run(work):
    queries = [Query(ex.context, ex.question) for ex in work["sample"]]
    cpu = answer(load_panel(work["models"], ReaderOptions(device="cpu")), queries)
    gpu = answer(load_panel(work["models"], ReaderOptions(device="cuda")), queries)
    assert [a["answer"] for a in gpu] == [a["answer"] for a in cpu]
    for compute in ("bf16", "fp16"):
        half = answer(load_panel(work["models"], ReaderOptions(device="cuda", compute=compute)), queries)
        for q, a in zip(queries, half):
            assert a["answer"] == "" or q.context[a["start"]:a["end"]] == a["answer"]


def test_the_command_sets_its_cpu_threads_before_torch_loads(work, tmp_path):
    """--threads and --cpu-wait reach the forward pass (answer --json reports what ran)."""
    ex = work["dev"][0]
    base = ["answer", work["models"][0], "--context", ex.context, "--question", ex.question, "--json", "--device", "cpu"]
    shown = json.loads(qa_scale([*base, "--threads", "1"], None, tmp_path).stdout)
    assert (shown["threads"], shown["omp"]["GOMP_SPINCOUNT"], shown["omp"]["OMP_WAIT_POLICY"]) == (1, "10000", None)
    shown = json.loads(qa_scale([*base, "--cpu-wait", "passive"], None, tmp_path).stdout)
    assert (shown["omp"]["OMP_WAIT_POLICY"], shown["omp"]["GOMP_SPINCOUNT"]) == ("PASSIVE", None)
    shown = json.loads(qa_scale([*base, "--cpu-wait", "default"], None, tmp_path).stdout)
    assert shown["omp"]["OMP_WAIT_POLICY"] is None and shown["answers"][0]["answer"] == answer(
        load_panel([work["models"][0]], ReaderOptions(device="cpu")), [Query(ex.context, ex.question)])[0]["answer"]
