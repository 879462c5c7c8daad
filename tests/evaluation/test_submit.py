"""Leaderboard files: HW7 CSV and CMRC/DRCD JSON."""

from __future__ import annotations

import csv
import json

import pytest

from qa_scale.evaluation.submit import (
    SubmissionError,
    read_hw7_csv,
    write_hw7_csv,
    write_prediction_json,
)


def test_hw7_csv_order_commas_and_quoting(tmp_path):
    preds = {"2": "北京,上海", "0": '他说"好"', "1": "第一行\n第二行", "3": ""}
    path = write_hw7_csv(preds, ["0", "1", "2", "3"], tmp_path / "sub.csv")
    raw = path.read_bytes().decode("utf-8")
    assert raw.startswith("ID,Answer\r\n0,")
    assert '"他说""好"""' in raw  # RFC 4180: quotes doubled inside a quoted field
    rows = list(csv.reader(raw.splitlines(keepends=True)))
    assert [r[0] for r in rows] == ["ID", "0", "1", "2", "3"]
    assert read_hw7_csv(path) == {"0": '他说"好"', "1": "第一行\n第二行", "2": "北京上海", "3": ""}


def test_missing_or_extra_ids_refused_and_old_file_kept(tmp_path):
    path = tmp_path / "sub.csv"
    write_hw7_csv({"0": "a"}, ["0"], path)
    before = path.read_bytes()
    with pytest.raises(SubmissionError, match=r"1 test id\(s\) have no prediction, first: \['1'\]"):
        write_hw7_csv({"0": "a"}, ["0", "1"], path)
    with pytest.raises(SubmissionError, match="not in the test set"):
        write_hw7_csv({"0": "a", "9": "b"}, ["0"], path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_interrupted_write_leaves_previous_file(tmp_path):
    class Exploding(dict):
        def __getitem__(self, key):
            if key == "2":
                raise RuntimeError("disk gone")
            return super().__getitem__(key)

    path = tmp_path / "sub.csv"
    write_hw7_csv({"0": "x"}, ["0"], path)
    with pytest.raises(RuntimeError):
        write_hw7_csv(Exploding({"0": "a", "1": "b", "2": "c"}), ["0", "1", "2"], path)
    assert read_hw7_csv(path) == {"0": "x"} and len(list(tmp_path.iterdir())) == 1


def test_prediction_json_in_test_order(tmp_path):
    path = write_prediction_json({"b": "二", "a": "一"}, ["a", "b"], tmp_path / "p.json")
    assert list(json.loads(path.read_text(encoding="utf-8")).items()) == [("a", "一"), ("b", "二")]
    assert "一" in path.read_text(encoding="utf-8")  # readable Chinese, not \u escapes
