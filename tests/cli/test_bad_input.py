"""Bad input, tried as a careless user or a hostile file would: nothing is lost, nothing is silently
wrong, and every refusal is exit status 2 with a message that names the file (and id or key) —
never a traceback."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from qa_scale.cli import main
from reader_runs import refused, store_world

WINDOWS = ["--max-seq-len", "64", "--max-question-len", "16", "--doc-overlap", "16"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Sample data, a tokenizer, a tiny model folder as `train` exports it, and two dev stores."""
    return store_world(tmp_path_factory.mktemp("bad"))


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def squad(qas) -> dict:
    return {"data": [{"paragraphs": [{"context": "北京是中国的首都。", "qas": qas}]}]}


GOOD_QA = {"id": "q1", "question": "首都是哪里？", "answers": [{"text": "北京", "answer_start": 0}]}


# ---------------------------------------------------------------- data losses


def test_windows_never_replaces_an_unrelated_folder(work, capsys, tmp_path):
    target = tmp_path / "proj"
    target.mkdir()
    write(target / "notes.txt", "keep")
    refused(capsys, ["windows", work["paths"]["squad_dev"], "--tokenizer", work["tok"], *WINDOWS, "--out", target],
            target, "refusing to write into it")
    assert (target / "notes.txt").read_text() == "keep"
    out = tmp_path / "win"
    assert main(["windows", str(work["paths"]["squad_dev"]), "--tokenizer", str(work["tok"]), *WINDOWS,
                 "--out", str(out)]) == 0
    assert main(["windows", str(work["paths"]["squad_dev"]), "--tokenizer", str(work["tok"]), *WINDOWS,
                 "--out", str(out)]) == 0  # our own folder is replaced
    assert oct(out.stat().st_mode & 0o777) == "0o755" and (out / "windows.json").exists()


def test_predict_never_replaces_an_unrelated_folder(work, capsys, tmp_path):
    target = tmp_path / "proj"
    target.mkdir()
    write(target / "notes.txt", "keep")
    refused(capsys, ["predict", work["model"], work["paths"]["squad_dev"], "--out", target], target, "refusing")
    assert (target / "notes.txt").read_text() == "keep"


def test_a_failed_ensemble_leaves_the_previous_output_whole(work, capsys, tmp_path):
    out = tmp_path / "ens"
    assert main(["ensemble", *map(str, work["stores"]), "--references", str(work["paths"]["squad_dev"]),
                 "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write(tmp_path / "refs.json", "{not json")
    refused(capsys, ["ensemble", *work["stores"], "--weights", "1,3", "--references", bad, "--out", out], bad)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    write(stranger / "notes.txt", "keep")
    refused(capsys, ["ensemble", *work["stores"], "--out", stranger], stranger, "refusing")
    assert (stranger / "notes.txt").exists()


# ---------------------------------------------------------------- silent wrong results


@pytest.mark.parametrize("command", ["submit", "evaluate"])
def test_a_test_file_with_a_bad_record_or_a_repeated_id_is_refused(work, capsys, tmp_path, command):
    preds = write(tmp_path / "p.json", {"q1": "北京", "q2": "北京"})
    broken = write(tmp_path / "broken.json", squad([GOOD_QA, {"id": "q2", "answers": []}]))  # no question
    args = ["--out", tmp_path / "s.csv"] if command == "submit" else []
    refused(capsys, [command, broken, preds, *args], broken, "example q2", "missing key: 'question'")
    twice = write(tmp_path / "twice.json", squad([GOOD_QA, GOOD_QA]))
    refused(capsys, [command, twice, preds, *args], twice, "example q1", "duplicate id")
    assert not (tmp_path / "s.csv").exists()


def test_evaluate_refuses_predictions_of_another_file_and_warns_on_strays(work, capsys, tmp_path):
    data = write(tmp_path / "d.json", squad([GOOD_QA, {**GOOD_QA, "id": "q2"}]))
    other = write(tmp_path / "other.json", {"x1": "北京", "x2": "上海"})
    refused(capsys, ["evaluate", data, other], other, "none of its 2 ids", data)
    some = write(tmp_path / "some.json", {"q1": "北京", "x9": "上海"})
    assert main(["evaluate", str(data), str(some), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"] == 2 and json.loads(captured.out)["answered"] == 1
    assert "1 id(s) are not questions" in captured.err and "1 of 2 questions have no prediction" in captured.err


@pytest.mark.parametrize("content,needles", [
    ("ID,Answer\nq1,北京\nq1,上海\n", ["line 3", "'q1' appears twice"]),
    ("ID,Answer\nq1\n", ["line 2", "expected 2 columns"]),
])
def test_bad_csv_rows_are_refused(capsys, tmp_path, content, needles):
    data = write(tmp_path / "d.json", squad([GOOD_QA]))
    csv = write(tmp_path / "p.csv", content)
    refused(capsys, ["evaluate", data, csv], csv, *needles)


def test_a_csv_with_a_trailing_blank_line_and_a_bom_file_are_fine(capsys, tmp_path):
    data = tmp_path / "d.json"
    data.write_bytes("\ufeff".encode() + json.dumps(squad([GOOD_QA]), ensure_ascii=False).encode())
    csv = write(tmp_path / "p.csv", "ID,Answer\r\nq1,北京\r\n\r\n")
    assert main(["evaluate", str(data), str(csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["em"] == 100.0
    bom = tmp_path / "p.json"
    bom.write_bytes("\ufeff".encode() + json.dumps({"q1": "北京"}, ensure_ascii=False).encode())
    assert main(["evaluate", str(data), str(bom)]) == 0


def test_non_finite_logits_are_refused_naming_the_store_and_member(work, capsys, tmp_path):
    import shutil

    bad = tmp_path / "nan_store"
    shutil.copytree(work["stores"][1], bad)
    start = np.load(bad / "start_logits.npy")
    start[2, 1] = np.nan
    np.save(bad / "start_logits.npy", start)
    for extra in (["--no-nbest"], []):
        refused(capsys, ["ensemble", work["stores"][0], bad, *extra, "--out", tmp_path / "ens"],
                bad, "member 2", "non-finite start_logits", "1 of")
    assert not (tmp_path / "ens").exists()


def test_predict_of_a_diverged_model_writes_nothing(work, tmp_path):
    import shutil

    import torch
    from cli_runs import qa_scale
    from transformers import AutoModelForQuestionAnswering

    model_dir = tmp_path / "run" / "model"
    shutil.copytree(work["model"].parent, tmp_path / "run")
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir)
    with torch.no_grad():
        model.qa_outputs.weight.fill_(float("nan"))
    model.save_pretrained(model_dir)
    proc = qa_scale(["predict", model_dir, work["paths"]["squad_dev"], "--out", tmp_path / "store"], None, tmp_path,
                    check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "non-finite logits" in proc.stderr and str(model_dir) in proc.stderr
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------- clear errors instead of tracebacks


@pytest.mark.parametrize("name,content,needles", [
    ("empty_squad", {"data": []}, ["holds no questions"]),
    ("empty_hw7", {"questions": [], "paragraphs": []}, ["holds no questions"]),
    ("answers_null", squad([{**GOOD_QA, "answers": None}]), ["example q1", "bad answers"]),
    ("qas_null", {"data": [{"paragraphs": [{"context": "北京。", "qas": None}]}]}, ["article #0 paragraph #0", "qas"]),
    ("paragraphs_null", {"data": [{"paragraphs": None}]}, ["article #0", "paragraphs"]),
    ("surrogate", squad([{**GOOD_QA, "question": "首都\ud800是？"}]), ["example q1", "lone surrogate U+D800"]),
    ("not_a_format", {"rows": []}, ["unknown format"]),
])
def test_bad_data_files_are_named(work, capsys, tmp_path, name, content, needles):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(content, ensure_ascii=True), encoding="utf-8")  # \ud800 stays an escape
    refused(capsys, ["check-data", path, "--mode", "strict", "--tokenizer", work["tok"], *WINDOWS], path, *needles)


def test_a_surrogate_is_dropped_in_lenient_mode_not_crashed_on(work, capsys, tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(squad([GOOD_QA, {**GOOD_QA, "id": "q2", "question": "哪\ud800里？"}]),
                               ensure_ascii=True), encoding="utf-8")
    assert main(["windows", str(path), "--tokenizer", str(work["tok"]), *WINDOWS, "--out", str(tmp_path / "w")]) == 0
    assert main(["check-data", str(path), "--tokenizer", str(work["tok"]), *WINDOWS, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["data"]["examples_dropped"] == 1


def test_wrong_format_flag_a_folder_and_deep_json(work, capsys, tmp_path):
    refused(capsys, ["check-data", work["paths"]["squad_dev"], "--format", "hw7", "--tokenizer", work["tok"]],
            work["paths"]["squad_dev"], "not a hw7 file")
    refused(capsys, ["check-data", work["paths"]["hw7_dev"], "--format", "squad", "--tokenizer", work["tok"]],
            work["paths"]["hw7_dev"], "not a squad file")
    (tmp_path / "folder").mkdir()
    refused(capsys, ["windows", tmp_path / "folder", "--tokenizer", work["tok"], "--out", tmp_path / "w"],
            tmp_path / "folder", "is a folder")
    deep = write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000)
    refused(capsys, ["check-data", deep, "--tokenizer", work["tok"]], deep, "nested deeper than 100 levels")
    refused(capsys, ["evaluate", work["paths"]["squad_dev"], deep], deep, "nested deeper than 100 levels")
    empty = write(tmp_path / "empty.json", {"data": [{"paragraphs": [{"context": " ", "qas": [GOOD_QA]}]}]})
    refused(capsys, ["windows", empty, "--tokenizer", work["tok"], "--out", tmp_path / "w2"], empty, "no example left")


def test_predictions_that_are_not_utf8_json_are_named(work, capsys, tmp_path):
    gbk = tmp_path / "gbk.json"
    gbk.write_bytes(json.dumps({"q1": "北京"}, ensure_ascii=False).encode("gbk"))
    refused(capsys, ["evaluate", work["paths"]["squad_dev"], gbk], gbk, "not UTF-8")
    broken = write(tmp_path / "broken.json", '{"q1": ')
    refused(capsys, ["evaluate", work["paths"]["squad_dev"], broken], broken, "invalid JSON")
    listed = write(tmp_path / "list.json", ["北京"])
    refused(capsys, ["evaluate", work["paths"]["squad_dev"], listed], listed, "expected a JSON object")


@pytest.mark.parametrize("command", ["check-data", "evaluate", "submit", "windows", "ensemble", "train"])
@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_outputs_that_cannot_be_written_are_named(work, capsys, tmp_path, command, where):
    blocker = write(tmp_path / "file.txt", "x")
    target = blocker / "out" if where == "under_a_file" else tmp_path
    if where == "a_folder" and command in ("windows", "ensemble", "train"):
        target = blocker  # folder outputs: a file in the way
    dev, preds = work["paths"]["squad_dev"], tmp_path / "p.json"
    from qa_scale import data
    write(preds, {k: "x" for k in data.load_references(dev)})
    args = {
        "check-data": ["check-data", dev, "--tokenizer", work["tok"], *WINDOWS, "--out", target],
        "evaluate": ["evaluate", dev, preds, "--out", target],
        "submit": ["submit", dev, preds, "--out", target],
        "windows": ["windows", dev, "--tokenizer", work["tok"], *WINDOWS, "--out", target],
        "ensemble": ["ensemble", *work["stores"], "--out", target],
        "train": ["train", "model.tiny={}", f"model.tokenizer={work['tok']}", f"data.train_file={dev}",
                  f"run.output_dir={target}"],
    }[command]
    refused(capsys, args, target if where == "a_folder" else blocker)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("damage,needles", [
    (lambda s: s.write_text(json.dumps({k: v for k, v in json.loads(s.read_text()).items() if k != "fingerprint"})),
     ["store.json", "'fingerprint'"]),
    (lambda s: s.write_text(s.read_text()[:200]), ["store.json", "unreadable"]),
])
def test_damaged_stores_are_named(work, capsys, tmp_path, damage, needles):
    import shutil

    bad = tmp_path / "damaged"
    shutil.copytree(work["stores"][1], bad)
    damage(bad / "store.json")
    refused(capsys, ["ensemble", work["stores"][0], bad, "--out", tmp_path / "e"], bad, *needles)


def test_a_corrupt_npy_header_is_named(work, capsys, tmp_path):
    import shutil

    bad = tmp_path / "npy"
    shutil.copytree(work["stores"][1], bad)
    (bad / "end_logits.npy").write_bytes(b"\x93NUMPY garbage")
    refused(capsys, ["ensemble", work["stores"][0], bad, "--out", tmp_path / "e"], bad / "end_logits.npy")


def test_a_missing_local_tokenizer_fails_at_once(capsys, tmp_path):
    data = write(tmp_path / "d.json", squad([GOOD_QA]))
    t0 = time.perf_counter()
    refused(capsys, ["check-data", data, "--tokenizer", "nope/vocab.txt"], "nope/vocab.txt", "not found")
    assert time.perf_counter() - t0 < 10  # no hub retries (they took 46 s)


@pytest.mark.parametrize("override,needles", [
    ("model.tiny=5", ["model.tiny: expected a mapping"]),
    ("run.output_dir=", ["run.output_dir is empty"]),
    ("optim.lr=.nan", ["optim.lr: must be a finite number"]),
])
def test_train_refuses_bad_recipe_values(work, capsys, override, needles):
    refused(capsys, ["train", "model.tiny={}", f"model.tokenizer={work['tok']}",
                     f"data.train_file={work['paths']['squad_train']}", override], *needles)


def test_no_environment_leaks_from_these_tests():
    assert "RANK" not in os.environ or os.environ.get("WORLD_SIZE") == "1"
