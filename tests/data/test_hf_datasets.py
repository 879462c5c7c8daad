"""Hugging Face ``datasets`` data (a ``save_to_disk`` folder, ``hf:NAME``) read like its SQuAD JSON twin."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED_DATA, require_shared
from qa_scale import data
from qa_scale.cli import main
from qa_scale.data import DataError
from qa_scale.data.hf_datasets import source

QUESTIONS = 200
TINY = "model.tiny={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}"


def squad_subset(raw: dict, n: int) -> dict:
    """The first ``n`` questions of a SQuAD-style document, its structure kept."""
    out, left = [], n
    for article in raw["data"]:
        paragraphs = []
        for para in article["paragraphs"]:
            if left == 0:
                break
            paragraphs.append({**para, "qas": para["qas"][:left]})
            left -= len(paragraphs[-1]["qas"])
        if paragraphs:
            out.append({**article, "paragraphs": paragraphs})
    return {"version": raw.get("version", ""), "data": out}


def rows_of(doc: dict) -> list[dict]:
    """SQuAD JSON → the hub's row layout (``answers`` as a struct of lists)."""
    return [{"id": qa["id"], "title": article.get("title", ""), "context": para["context"], "question": qa["question"],
             "answers": {"text": [a["text"] for a in qa["answers"]],
                         "answer_start": [a["answer_start"] for a in qa["answers"]]}}
            for article in doc["data"] for para in article["paragraphs"] for qa in para["qas"]]


def save(rows: list[dict], folder, **splits) -> None:
    import datasets

    if splits:
        datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(str(folder))
    else:
        datasets.Dataset.from_list(rows).save_to_disk(str(folder))


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """(JSON file, saved Dataset folder, saved DatasetDict folder) of the first 200 CMRC 2018 dev questions."""
    raw = json.loads(require_shared(SHARED_DATA / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    doc = squad_subset(raw, QUESTIONS)
    root = tmp_path_factory.mktemp("hf")
    (root / "dev.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    rows = rows_of(doc)
    assert len(rows) == QUESTIONS
    save(rows, root / "ds")
    save(None, root / "dd", train=rows[:50], validation=rows)
    return root / "dev.json", root / "ds", root / "dd"


def test_folder_gives_the_examples_and_report_of_the_json_twin(twins):
    js, folder, _ = twins
    for mode in ("lenient", "strict"):
        if mode == "strict":  # CMRC dev has misaligned answers: strict refuses both alike
            with pytest.raises(DataError, match="problem") as a:
                data.load(js, mode)
            with pytest.raises(DataError, match="problem") as b:
                data.load(folder, mode)
            assert str(a.value).replace(str(js), "X") == str(b.value).replace(str(folder), "X")
            continue
        want, got = data.load(js, mode), data.load(folder, mode)
        assert got.examples == want.examples and len(got.examples) == QUESTIONS
        assert sum(len(ex.answers) for ex in got.examples) > QUESTIONS
        w, g = want.report.to_dict(1000), got.report.to_dict(1000)
        assert g.pop("path") == str(folder) and w.pop("path") == str(js)
        assert g == w and g["answers_dropped"] > 0  # real bad answers, counted alike


def test_references_and_windows_equal(twins):
    from qa_scale.data.tokenization import load_tokenizer
    from qa_scale.data.windows import WindowConfig, build_windows

    js, folder, dd = twins
    refs = data.load_references(folder)
    assert refs == data.load_references(js) and refs.format.name == "squad"
    assert data.load_references(f"{dd}@validation") == refs
    tok = load_tokenizer(require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt"))
    config = WindowConfig(max_seq_len=256, doc_overlap=64)
    a = build_windows(data.load(js, "lenient").examples, tok, config)
    b = build_windows(data.load(folder, "lenient").examples, tok, config)
    assert a.example_ids == b.example_ids and a.fingerprint() == b.fingerprint()
    for name in ("example_index", "input_ids", "token_type_ids", "offsets", "start_positions", "end_positions"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_check_data_and_evaluate_on_a_folder(twins, tmp_path, capsys):
    js, folder, dd = twins
    vocab = str(require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt"))
    reports = []
    for where in (js, folder, f"{dd}@validation"):
        assert main(["check-data", str(where), "--tokenizer", vocab, "--max-seq-len", "256", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["data"].pop("path") == str(where)
        reports.append(report)
    assert reports[0] == reports[1] == reports[2] and reports[0]["oracle"]["examples"] == QUESTIONS

    refs = data.load_references(js)
    preds = {qid: answers[0] for qid, answers in refs.items()}
    preds[next(iter(preds))] = "错"
    (tmp_path / "p.json").write_text(json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    scores = []
    for where in (js, folder):
        assert main(["evaluate", str(where), str(tmp_path / "p.json"), "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0] == scores[1] and scores[0]["em"] == pytest.approx(100 * (QUESTIONS - 1) / QUESTIONS)


def test_dataset_dict_needs_a_split(twins, capsys):
    _, _, dd = twins
    assert [ex.id for ex in data.load(f"{dd}@train", "lenient").examples] == \
        [ex.id for ex in data.load(f"{dd}@validation", "lenient").examples][:50]
    with pytest.raises(DataError, match=r"splits train, validation: choose one with .*dd@SPLIT"):
        data.load(dd, "lenient")
    with pytest.raises(DataError, match=r"no split 'test'; the splits are train, validation"):
        data.load(f"{dd}@test", "lenient")
    assert main(["evaluate", str(dd), str(dd / "dataset_dict.json")]) == 2
    assert "choose one with" in capsys.readouterr().err


def test_only_split_is_taken_and_hub_needs_the_prefix(tmp_path, monkeypatch):
    rows = [{"id": "q1", "context": "北京是中国的首都。", "question": "中国的首都是哪里？",
             "answers": {"text": ["北京"], "answer_start": [0]}}]
    save(None, tmp_path / "one", validation=rows)
    assert [ex.id for ex in data.load(tmp_path / "one").examples] == ["q1"]
    assert source(tmp_path / "missing.json") is None  # a mistyped file stays a file: no hub request
    with pytest.raises(DataError, match="missing.json: JSON file not found"):
        data.load(tmp_path / "missing.json")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="^squad: JSON file not found"):  # a bare name is a path, not a hub name
        data.load("squad")
    hub = source("hf:hfl/cmrc2018:default@validation")
    assert (hub.name, hub.config, hub.split, hub.folder) == ("hfl/cmrc2018", "default", "validation", None)
    with pytest.raises(DataError, match="expected hf:NAME"):
        source("hf:")


def test_answers_as_a_list_of_structs_and_uneven_answers(tmp_path):
    ctx = "北京是中国的首都。"
    save([{"id": 1, "context": ctx, "question": "首都？", "answers": [{"text": "北京", "answer_start": 1}]}],
         tmp_path / "list")
    ds = data.load(tmp_path / "list", "lenient")  # ids become strings; the misaligned start is repaired
    assert ds.examples[0].id == "1" and ds.examples[0].answers == (data.Answer("北京", 0),)
    assert ds.report.answers_repaired == 1
    save([{"id": "a", "context": ctx, "question": "首都？", "answers": {"text": ["北京"], "answer_start": [0]}},
          {"id": "b", "context": ctx, "question": "哪国？", "answers": {"text": ["中国", "中"], "answer_start": [3]}}],
         tmp_path / "uneven")
    ds = data.load(tmp_path / "uneven", "lenient")
    assert [ex.id for ex in ds.examples] == ["a"] and ds.report.examples_dropped == 1
    with pytest.raises(DataError, match=r"example b: bad answers: 2 text\(s\) but 1 answer_start"):
        data.load(tmp_path / "uneven", "strict")


def test_hub_offline_is_a_clear_error(tmp_path):
    # A child process: HF_DATASETS_OFFLINE is read when `datasets` is imported.
    from cli_runs import clean_env

    proc = subprocess.run([sys.executable, "-m", "qa_scale", "evaluate", "hf:no-such-org/no-such-set@validation",
                           "p.json"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env=clean_env({"HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "hf:no-such-org/no-such-set@validation: cannot load dataset 'no-such-org/no-such-set'" in proc.stderr
    assert "Hugging Face Hub is unreachable" in proc.stderr and "HF_DATASETS_OFFLINE" in proc.stderr


def test_missing_columns_and_damaged_folders(twins, tmp_path, capsys):
    _, folder, dd = twins
    save([{"id": "q", "context": "c", "question": "q"}], tmp_path / "noans")
    with pytest.raises(DataError, match=r"noans: missing column 'answers'"):
        data.load(tmp_path / "noans")
    save([{"id": "q", "context": "c", "question": "q", "answers": {"text": ["c"]}}], tmp_path / "nostart")
    with pytest.raises(DataError, match=r"nostart: missing column answers.answer_start"):
        data.load_references(tmp_path / "nostart")
    with pytest.raises(DataError, match=r"does not apply"):
        data.load(folder, fmt="hw7")

    for victim in ("state.json", "dataset_info.json", "data-00000-of-00001.arrow", "dataset_dict.json"):
        broken = tmp_path / f"broken-{victim}"
        shutil.copytree(dd if victim == "dataset_dict.json" else folder, broken)
        (broken / victim).unlink()
        with pytest.raises(DataError, match=rf"broken-{victim}/{victim}"):
            data.load(broken)
        assert main(["evaluate", str(broken), str(tmp_path / "none.json")]) == 2
        err = capsys.readouterr().err
        assert f"broken-{victim}/{victim}" in err and "Traceback" not in err
    arrow = tmp_path / "cut" / "data-00000-of-00001.arrow"
    shutil.copytree(folder, tmp_path / "cut")
    arrow.write_bytes(arrow.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"cut: damaged datasets folder"):
        data.load(tmp_path / "cut")


def test_no_output_inside_a_dataset_folder(twins, tmp_path, capsys):
    from qa_scale.common.outputs import OutputError
    from qa_scale.common.transaction import transaction

    _, folder, dd = twins
    copy = tmp_path / "dd"
    shutil.copytree(dd, copy)
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    vocab = str(require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt"))
    for given, out in ((copy, copy / "w"), (f"{copy}@validation", copy / "validation" / "w")):
        assert main(["windows", str(given), "--tokenizer", vocab, "--out", str(out)]) == 2
        assert "lies inside" in capsys.readouterr().err
    with pytest.raises(OutputError, match="lies inside"):  # library use: data.load notes the folder itself
        with transaction("test") as tx:
            tx.folder(copy / "train" / "out", "windows")
            data.load(f"{copy}@train", "lenient")
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before


@pytest.mark.slow
def test_a_folder_trains_predicts_and_scores_like_its_json_twin(twins, tmp_path):
    """The same recipe on the JSON file and on its saved twin: the same training, model, store and scores."""
    from cli_runs import qa_scale

    from qa_scale.inference.logits_store import open_store

    dev_json, folder, dd = twins
    vocab = require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt")
    runs = {}
    for name, train, dev in (("json", dev_json, dev_json), ("folder", folder, f"{dd}@validation")):
        out = tmp_path / name
        qa_scale(["train", f"model.tokenizer={vocab}", TINY, f"data.train_file={train}", f"data.dev_file={dev}",
                  "data.max_train_examples=8", "data.max_dev_examples=16", "data.windows.max_seq_len=128",
                  "data.windows.doc_overlap=32", "optim.max_steps=2", "optim.micro_batch_size=2",
                  "optim.global_batch_size=2", "run.precision=fp32", "run.eval_every=2", f"run.output_dir={out}",
                  "run.tensorboard=false"], None, tmp_path, timeout=300)
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        assert summary["finished"] and summary["train_files"][0]["path"] == str(train)
        qa_scale(["predict", out / "model", dev, "--references", dev, "--out", out / "store", "--device", "cpu"],
                 None, tmp_path, timeout=300)
        runs[name] = (out, open_store(out / "store"))
    (json_run, json_store), (folder_run, folder_store) = runs["json"], runs["folder"]
    metrics = [json.loads(line) for line in (json_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    twin = [json.loads(line) for line in (folder_run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if "second" not in k and "per_s" not in k and k != "time"}  # noqa: E731
                          for r in rows]
    assert strip(metrics) == strip(twin)  # the same losses and dev scores, step by step
    assert json_store.fingerprint == folder_store.fingerprint
    for a, b in zip(json_store.logits(), folder_store.logits()):
        np.testing.assert_array_equal(a, b)
    assert json_store.meta["metrics"] == folder_store.meta["metrics"]


@pytest.mark.slow
def test_train_reads_dataset_folders(twins, tmp_path):
    from cli_runs import qa_scale

    _, folder, dd = twins
    vocab = require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt")
    qa_scale(["train", f"model.tokenizer={vocab}", TINY, f"data.train_file={folder}",
              f"data.dev_file={dd}@train", "data.max_train_examples=8", "data.windows.max_seq_len=128", "data.windows.doc_overlap=32",
              "optim.max_steps=1", "optim.micro_batch_size=2", "optim.global_batch_size=2", "run.precision=fp32",
              f"run.output_dir={tmp_path / 'run'}", "run.export=false", "run.tensorboard=false"], None, tmp_path,
             timeout=300)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["finished"]
    assert summary["train_files"][0]["path"] == str(folder)
    assert summary["train_files"][0]["questions_read"] == QUESTIONS
