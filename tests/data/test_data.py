"""Loaders and validation: every kind of bad input, strict and lenient, nothing else lost."""

from __future__ import annotations

import json

import pytest

from qa_scale import data
from qa_scale.data import Answer, DataError

CTX = "北京是中国的首都，上海是中国最大的城市。北京有故宫。"


def squad(*qas, context=CTX):
    return {"version": "t", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa(qid, question="首都是哪里？", answers=(("北京", 0),)):
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}


def write(tmp_path, obj, name="d.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def test_valid_squad_keeps_everything_in_order(tmp_path):
    path = write(tmp_path, squad(qa("a"), qa("b", answers=(("上海", 9), ("上海", 9))), qa("c", answers=())))
    ds = data.load(path)
    assert [ex.id for ex in ds.examples] == ["a", "b", "c"]
    assert ds.examples[1].answers == (Answer("上海", 9), Answer("上海", 9))
    assert ds.examples[2].answers == ()
    assert ds.report.issues == [] and ds.report.examples_kept == 3


def test_invalid_json_names_file_and_position(tmp_path):
    path = write(tmp_path, '{"data": [\n  {"paragraphs": ]}')
    with pytest.raises(DataError, match=r"d\.json: invalid JSON at line 2 column"):
        data.load(path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unknown format"):
        data.load(write(tmp_path, {"foo": 1}))
    with pytest.raises(DataError, match="file not found"):
        data.load(tmp_path / "nope.json")


def test_missing_key_strict_names_id_lenient_drops_only_that_example(tmp_path):
    bad = {"id": "b", "answers": []}  # no "question"
    path = write(tmp_path, squad(qa("a"), bad, qa("c")))
    with pytest.raises(DataError, match=r"d\.json: example b: missing key: 'question'"):
        data.load(path, "strict")
    ds = data.load(path, "lenient")
    assert [ex.id for ex in ds.examples] == ["a", "c"]
    assert ds.report.examples_dropped == 1 and ds.report.issues[0].example_id == "b"


def test_duplicate_ids(tmp_path):
    path = write(tmp_path, squad(qa("a"), qa("a", answers=(("上海", 9),)), qa("b")))
    with pytest.raises(DataError, match="example a: duplicate id"):
        data.load(path, "strict")
    ds = data.load(path, "lenient")
    assert [(ex.id, ex.answers[0].text) for ex in ds.examples] == [("a", "北京"), ("b", "北京")]
    assert ds.report.examples_dropped == 1 and ds.report.answers_dropped == 1


@pytest.mark.parametrize("field,value,problem", [("question", "  ", "empty question"), ("context", "", "empty context")])
def test_empty_question_or_context(tmp_path, field, value, problem):
    good = squad(qa("a"))
    bad = squad(qa("b", question=value if field == "question" else "问题？"), context=value if field == "context" else CTX)
    good["data"] += bad["data"]
    path = write(tmp_path, good)
    with pytest.raises(DataError, match=f"example b: {problem}"):
        data.load(path, "strict")
    ds = data.load(path, "lenient")
    assert [ex.id for ex in ds.examples] == ["a"] and ds.report.examples_dropped == 1


def test_answer_beyond_context_repaired_when_text_occurs(tmp_path):
    path = write(tmp_path, squad(qa("a", answers=(("故宫", 900),)), qa("b", answers=(("长城", -1), ("北京", 0)))))
    with pytest.raises(DataError, match="example a: answer beyond context"):
        data.load(path, "strict")
    ds = data.load(path, "lenient")
    assert ds.examples[0].answers == (Answer("故宫", CTX.index("故宫")),)
    assert ds.examples[1].answers == (Answer("北京", 0),)  # the unlocatable reference alone is dropped
    assert (ds.report.answers_repaired, ds.report.answers_dropped, ds.report.examples_dropped) == (1, 1, 0)


def test_misaligned_start_moves_to_nearest_occurrence(tmp_path):
    second = CTX.index("北京", 1)
    path = write(tmp_path, squad(qa("a", answers=(("北京", second - 2),)), qa("b", answers=(("北京", 3),))))
    ds = data.load(path, "lenient")
    assert ds.examples[0].answers[0].start == second
    assert ds.examples[1].answers[0].start == 0
    assert ds.report.answers_repaired == 2
    assert all(CTX[a.start:a.end] == a.text for ex in ds.examples for a in ex.answers)


def test_example_with_no_valid_answer_is_dropped_in_lenient_mode(tmp_path):
    path = write(tmp_path, squad(qa("a", answers=(("长城", 3), ("", 0))), qa("b")))
    ds = data.load(path, "lenient")
    assert [ex.id for ex in ds.examples] == ["b"]
    assert ds.report.examples_dropped == 1 and ds.report.answers_dropped == 2
    problems = [i.problem for i in ds.report.issues]
    assert any("does not occur" in p for p in problems) and any("empty answer" in p for p in problems)


def hw7(questions, paragraphs=(CTX,)):
    return {"questions": questions, "paragraphs": list(paragraphs)}


def test_hw7_inclusive_end_and_test_split(tmp_path):
    train = hw7([{"id": 0, "paragraph_id": 0, "question_text": "首都？", "answer_text": "北京", "answer_start": 0, "answer_end": 1}])
    ds = data.load(write(tmp_path, train))
    assert ds.report.format == "hw7" and ds.examples[0].answers == (Answer("北京", 0),) and ds.examples[0].id == "0"
    test = hw7([{"id": 7, "paragraph_id": 0, "question_text": "首都？"}])
    ds = data.load(write(tmp_path, test, "t.json"))
    assert ds.examples[0].answers == () and not ds.has_answers


def test_hw7_bad_end_and_bad_paragraph(tmp_path):
    q = {"id": 0, "paragraph_id": 0, "question_text": "首都？", "answer_text": "上海", "answer_start": 9, "answer_end": 11}
    bad_pid = {"id": 1, "paragraph_id": 5, "question_text": "？"}
    path = write(tmp_path, hw7([q, bad_pid]))
    with pytest.raises(DataError) as err:
        data.load(path, "strict")
    assert "example 0: misaligned answer: answer_end 11" in str(err.value)
    assert "example 1: bad paragraph_id: 5" in str(err.value)
    ds = data.load(path, "lenient")
    assert [ex.id for ex in ds.examples] == ["0"] and ds.examples[0].answers == (Answer("上海", 9),)


def test_references_keep_unlocatable_texts(tmp_path):
    path = write(tmp_path, squad(qa("a", answers=(("长城", -1), ("北京", 0)))))
    assert data.load_references(path) == {"a": ["长城", "北京"]}


def test_real_cmrc_dev_bad_answers_counted(shared_data):
    path = shared_data / "cmrc2018_dev.json"
    with pytest.raises(DataError, match=r"cmrc2018_dev\.json: \d+ problem"):
        data.load(path, "strict")
    ds = data.load(path, "lenient")
    r = ds.report
    assert r.questions_read == r.examples_kept == 3219  # no question lost
    assert r.answers_read == 9657 and r.answers_repaired + r.answers_dropped == len(r.issues)
    assert 150 <= r.answers_dropped + r.answers_repaired <= 250
    assert all(ex.context[a.start:a.end] == a.text for ex in ds.examples for a in ex.answers)
    refs = data.load_references(path)
    assert sum(map(len, refs.values())) == 9657 and list(refs) == [ex.id for ex in ds.examples]


def test_a_new_data_format_is_one_registration(tmp_path, monkeypatch):
    """Extending qa-scale: a format registered by name is detected, read, scored and submitted by it."""
    from qa_scale.cli import build_parser
    from qa_scale.data.formats import FORMATS, DataFormat, RawQuestion

    def read(raw, path):
        for q in raw["items"]:
            yield RawQuestion(str(q["qid"]), q["q"], q["passage"], [(q["a"], q["passage"].find(q["a"]))])

    flat = DataFormat(name="flat", description="a test format, top-level 'items'",
                      detect=lambda raw: isinstance(raw, dict) and "items" in raw, read=read,
                      exact_accuracy=True, submission="csv")
    monkeypatch.setitem(FORMATS._entries, "flat", flat)
    path = tmp_path / "flat.json"
    path.write_text(json.dumps({"items": [{"qid": 7, "q": "哪里？", "passage": "他住在北京。", "a": "北京"}]},
                               ensure_ascii=False), encoding="utf-8")
    ds = data.load(path)
    assert ds.report.format == "flat" and ds.examples[0].answers[0] == Answer("北京", 3)
    refs = data.load_references(path)
    assert refs == {"7": ["北京"]} and refs.exact_accuracy and refs.format.submission == "csv"
    args = build_parser().parse_args(["check-data", str(path), "--format", "flat", "--tokenizer", "x"])
    assert args.fmt == "flat"


def test_several_training_files_mix_formats_and_keep_ids_distinct(tmp_path):
    """HW7 numbers its questions 0, 1, 2…; a SQuAD file may use the same ids: both kept, counted."""
    hw7 = tmp_path / "hw7_train.json"
    hw7.write_text(json.dumps({"paragraphs": ["他住在北京。"], "questions": [
        {"id": 0, "paragraph_id": 0, "question_text": "他住在哪？", "answer_text": "北京", "answer_start": 3,
         "answer_end": 4}]}, ensure_ascii=False), encoding="utf-8")
    squad = tmp_path / "cmrc.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "上海很大。", "qas": [
        {"id": "0", "question": "哪里大？", "answers": [{"text": "上海", "answer_start": 0}]},
        {"id": "1", "question": "什么大？", "answers": [{"text": "上海", "answer_start": 0}]}]}]}]},
        ensure_ascii=False), encoding="utf-8")
    examples, counts = data.load_many([hw7, squad])
    assert [ex.id for ex in examples] == ["0", "cmrc:0", "1"]
    assert [(c["format"], c["examples_kept"], c["ids_renamed"]) for c in counts] == [("hw7", 1, 0), ("squad", 2, 1)]
    assert examples[1].context == "上海很大。"
