"""Tests for qa_scale.synthetic: determinism, offsets, both file formats, difficulty."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from qa_scale import synthetic
from qa_scale.common.outputs import MARKER
from qa_scale.synthetic import SampleConfig, generate, write_all, write_hw7, write_squad

SMALL = dict(train_paragraphs=40, dev_paragraphs=12, test_paragraphs=12)


@pytest.fixture(scope="module")
def default_splits() -> dict[str, list[dict]]:
    return generate(SampleConfig())


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, list[dict]], dict[str, Path]]:
    out = tmp_path_factory.mktemp("sample")
    config = SampleConfig(seed=3, **SMALL)
    return generate(config), write_all(config, out)


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _all_qas(splits):
    for split, records in splits.items():
        for record in records:
            for qa in record["qas"]:
                yield split, record, qa


# ---------------------------------------------------------------------------- templates


def test_templates_are_consistent() -> None:
    synthetic.templates.check_templates()
    assert len(synthetic.FACT_TYPES) >= 20
    assert all(len(qs) >= 2 for qs in synthetic.templates.QUESTIONS.values())


# ---------------------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    config = SampleConfig(seed=11, **SMALL)
    a = write_all(config, tmp_path / "a")
    b = write_all(SampleConfig(seed=11, **SMALL), tmp_path / "b")
    assert set(a) == {
        "hw7_train", "hw7_dev", "hw7_test", "hw7_test_answers",
        "squad_train", "squad_dev", "squad_test", "corpus",
    }
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key
    c = write_all(SampleConfig(seed=12, **SMALL), tmp_path / "c")
    for key in a:
        assert a[key].read_bytes() != c[key].read_bytes(), key
    # no temporary files are left behind by the atomic writes; the marker says whose folder it is
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([MARKER, *(p.name for p in a.values())])


def test_generate_is_deterministic_in_memory() -> None:
    assert generate(SampleConfig(seed=5, **SMALL)) == generate(SampleConfig(seed=5, **SMALL))


def test_split_does_not_depend_on_other_split_sizes() -> None:
    a = generate(SampleConfig(seed=2, train_paragraphs=5, dev_paragraphs=4, test_paragraphs=3))
    b = generate(SampleConfig(seed=2, train_paragraphs=9, dev_paragraphs=4, test_paragraphs=3))
    assert a["dev"] == b["dev"] and a["test"] == b["test"]
    assert a["train"] == b["train"][:5]


# ---------------------------------------------------------------------------- in-memory form


def test_split_sizes_and_ids(default_splits) -> None:
    assert list(default_splits) == ["train", "dev", "test"]
    assert [len(v) for v in default_splits.values()] == [300, 60, 60]
    pids = [r["id"] for rs in default_splits.values() for r in rs]
    qids = [qa["id"] for _, _, qa in _all_qas(default_splits)]
    assert len(set(pids)) == len(pids)
    assert len(set(qids)) == len(qids)


def test_splits_do_not_share_paragraphs(default_splits) -> None:
    contexts = [r["context"] for rs in default_splits.values() for r in rs]
    assert len(set(contexts)) == len(contexts)


def test_answers_are_at_their_start(default_splits) -> None:
    for split, record, qa in _all_qas(default_splits):
        ctx = record["context"]
        assert qa["answers"], qa
        for a in qa["answers"]:
            assert a["text"], qa
            assert ctx[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"], qa
        if split == "train":
            assert len(qa["answers"]) == 1
        else:
            assert 1 <= len(qa["answers"]) <= 3
            first = qa["answers"][0]
            for a in qa["answers"][1:]:  # variants overlap the primary answer
                assert a["answer_start"] < first["answer_start"] + len(first["text"])
                assert first["answer_start"] < a["answer_start"] + len(a["text"])


def test_some_dev_questions_have_several_references(default_splits) -> None:
    counts = Counter(len(qa["answers"]) for s, _, qa in _all_qas(default_splits) if s != "train")
    assert counts[1] and counts[2] and counts[3]


def test_paragraph_lengths_and_question_counts(default_splits) -> None:
    lengths = []
    for records in default_splits.values():
        for r in records:
            assert 250 <= len(r["context"]) <= 900
            assert 3 <= len(r["qas"]) <= 6
            assert "\n" not in r["context"]
            lengths.append(len(r["context"]))
    assert min(lengths) < 350 and max(lengths) > 800  # the whole range is used


def test_custom_ranges_are_respected() -> None:
    config = SampleConfig(seed=1, train_paragraphs=30, dev_paragraphs=5, test_paragraphs=5,
                          questions_per_paragraph=(2, 2), paragraph_chars=(400, 450))
    for records in generate(config).values():
        for r in records:
            assert 400 <= len(r["context"]) <= 450
            assert len(r["qas"]) == 2


def test_questions_are_unique_within_a_paragraph(default_splits) -> None:
    for records in default_splits.values():
        for r in records:
            questions = [qa["question"] for qa in r["qas"]]
            assert len(set(questions)) == len(questions)
            assert all(q.endswith("？") for q in questions)


def test_template_variety(default_splits) -> None:
    qas = [qa for _, _, qa in _all_qas(default_splits)]
    fact_types = Counter(qa["fact_type"] for qa in qas)
    templates = Counter(qa["question_template"] for qa in qas)
    categories = Counter(qa["category"] for qa in qas)
    assert len(fact_types) >= 30
    assert len(templates) >= 60
    assert len(categories) >= 15
    assert set(categories) <= set(synthetic.CATEGORIES)
    # no fact type dominates the data
    assert max(fact_types.values()) < 0.1 * len(qas)


def test_entities_are_recorded_at_their_offsets(default_splits) -> None:
    for records in default_splits.values():
        for r in records:
            for e in r["entities"]:
                assert r["context"][e["start"]:e["start"] + len(e["text"])] == e["text"]
                assert e["category"] in synthetic.CATEGORIES
            for qa in r["qas"]:  # each answer is one of the recorded mentions
                first = qa["answers"][0]
                assert {"text": first["text"], "category": qa["category"],
                        "start": first["answer_start"]} in r["entities"]


def test_type_guessing_is_not_enough(default_splits) -> None:
    total = with_rival = first_hit = 0
    for _, record, qa in _all_qas(default_splits):
        total += 1
        same = [e for e in record["entities"] if e["category"] == qa["category"]]
        if len({e["text"] for e in same} - {qa["answers"][0]["text"]}) >= 1:
            with_rival += 1
        if same and same[0]["start"] == qa["answers"][0]["answer_start"]:
            first_hit += 1
    assert with_rival >= 0.8 * total
    # "take the first entity of the right category" is far from solving the task
    assert first_hit < 0.5 * total


def test_every_paragraph_has_several_entities_of_one_type(default_splits) -> None:
    for records in default_splits.values():
        for r in records:
            per_cat = defaultdict(set)
            for e in r["entities"]:
                per_cat[e["category"]].add(e["text"])
            assert len(per_cat["person"]) >= 2 or len(per_cat["city"]) >= 2 or len(per_cat["org"]) >= 2


def test_question_names_an_entity_of_the_paragraph(default_splits) -> None:
    for _, record, qa in _all_qas(default_splits):
        names = {e["text"] for e in record["entities"]} - {a["text"] for a in qa["answers"]}
        assert any(n in qa["question"] for n in names), qa["question"]


def test_punctuation_and_ascii_mix(default_splits) -> None:
    contexts = "".join(r["context"] for rs in default_splits.values() for r in rs)
    for ch in "，。「」《》（）":
        assert ch in contexts, ch
    assert re.search(r"[A-Z]{2,}", contexts)
    assert re.search(r"\d+\.\d", contexts)
    answers = [qa["answers"][0]["text"] for _, _, qa in _all_qas(default_splits)]
    assert any(a.startswith("《") and a.endswith("》") for a in answers)
    assert any(re.search(r"[A-Za-z]", a) for a in answers)
    assert any(re.search(r"\d\.\d", a) for a in answers)


def test_chars_are_in_bert_vocab(default_splits, shared_data: Path) -> None:
    vocab = {line.rstrip("\n") for line in
             (shared_data / "bert-base-chinese-vocab.txt").open(encoding="utf-8")}
    text = "".join(r["context"] + "".join(qa["question"] for qa in r["qas"])
                   for rs in default_splits.values() for r in rs)
    missing = sorted({c for c in text if not c.isspace() and c not in vocab and c.lower() not in vocab})
    assert not missing


# ---------------------------------------------------------------------------- HW7 files


def test_hw7_files(written) -> None:
    splits, paths = written
    for split in ("train", "dev"):
        data = _load(paths[f"hw7_{split}"])
        assert set(data) == {"questions", "paragraphs"}
        assert data["paragraphs"] == [r["context"] for r in splits[split]]
        assert [q["id"] for q in data["questions"]] == list(range(len(data["questions"])))
        expected = [qa for r in splits[split] for qa in r["qas"]]
        assert len(data["questions"]) == len(expected)
        for q, qa in zip(data["questions"], expected):
            assert set(q) == {"id", "paragraph_id", "question_text", "answer_text",
                              "answer_start", "answer_end"}
            para = data["paragraphs"][q["paragraph_id"]]
            assert para[q["answer_start"]:q["answer_end"] + 1] == q["answer_text"]  # inclusive end
            assert q["answer_end"] - q["answer_start"] + 1 == len(q["answer_text"])
            assert q["question_text"] == qa["question"]
            assert q["answer_text"] == qa["answers"][0]["text"]
            assert q["answer_start"] == qa["answers"][0]["answer_start"]


def test_hw7_test_file_has_no_answers(written) -> None:
    splits, paths = written
    data = _load(paths["hw7_test"])
    assert [q["id"] for q in data["questions"]] == list(range(len(data["questions"])))
    for q in data["questions"]:
        assert set(q) == {"id", "paragraph_id", "question_text"}
        assert 0 <= q["paragraph_id"] < len(data["paragraphs"])
    answers = _load(paths["hw7_test_answers"])
    expected = [qa["answers"][0]["text"] for r in splits["test"] for qa in r["qas"]]
    assert answers == {str(i): a for i, a in enumerate(expected)}
    for q in data["questions"]:
        assert answers[str(q["id"])] in data["paragraphs"][q["paragraph_id"]]


def test_write_hw7_returns_paths(tmp_path: Path) -> None:
    splits = generate(SampleConfig(seed=4, train_paragraphs=3, dev_paragraphs=2, test_paragraphs=2))
    paths = write_hw7(splits, tmp_path / "nested" / "dir")
    assert set(paths) == {"train", "dev", "test", "test_answers"}
    assert all(p.exists() for p in paths.values())
    raw = paths["train"].read_text(encoding="utf-8")
    assert "\\u" not in raw and splits["train"][0]["context"][:10] in raw  # ensure_ascii=False


# ---------------------------------------------------------------------------- SQuAD files


def test_squad_files(written) -> None:
    splits, paths = written
    for split in ("train", "dev", "test"):
        data = _load(paths[f"squad_{split}"])
        assert data["version"] == "qa-scale-sample"
        assert len(data["data"]) == len(splits[split])
        for article, record in zip(data["data"], splits[split]):
            assert set(article) == {"title", "id", "paragraphs"}
            assert article["title"] == record["title"] and article["id"] == record["id"]
            (para,) = article["paragraphs"]
            assert set(para) == {"id", "context", "qas"}
            assert para["context"] == record["context"]
            for qa, mem in zip(para["qas"], record["qas"], strict=True):
                assert set(qa) == {"id", "question", "answers"}
                assert qa["id"] == mem["id"] and qa["question"] == mem["question"]
                assert qa["answers"] == mem["answers"]
                for a in qa["answers"]:
                    assert set(a) == {"text", "answer_start"}
                    assert para["context"][a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
                if split == "train":
                    assert len(qa["answers"]) == 1


def test_write_squad_returns_paths(tmp_path: Path) -> None:
    splits = generate(SampleConfig(seed=4, train_paragraphs=3, dev_paragraphs=2, test_paragraphs=2))
    paths = write_squad(splits, tmp_path)
    assert {k: p.name for k, p in paths.items()} == {
        "train": "squad_train.json", "dev": "squad_dev.json", "test": "squad_test.json"}


def test_corpus(written) -> None:
    splits, paths = written
    lines = paths["corpus"].read_text(encoding="utf-8").splitlines()
    assert lines == [r["context"] for rs in splits.values() for r in rs]


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train_paragraphs=0), "train_paragraphs"),
        (dict(dev_paragraphs=-1), "dev_paragraphs"),
        (dict(test_paragraphs=2.5), "test_paragraphs"),
        (dict(train_paragraphs=True), "train_paragraphs"),
        (dict(seed="x"), "seed"),
        (dict(questions_per_paragraph=(5, 3)), "min must be <= max"),
        (dict(questions_per_paragraph=(0, 3)), "questions_per_paragraph"),
        (dict(questions_per_paragraph=(3, 40)), "questions_per_paragraph"),
        (dict(questions_per_paragraph=(3,)), "questions_per_paragraph"),
        (dict(paragraph_chars=(900, 250)), "min must be <= max"),
        (dict(paragraph_chars=(50, 400)), "paragraph_chars"),
        (dict(paragraph_chars=(300, 310)), "paragraph_chars"),
        (dict(paragraph_chars=(300.0, 600)), "paragraph_chars"),
    ],
)
def test_config_validation(kwargs, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SampleConfig(**kwargs)


def test_config_accepts_lists_and_reports_sizes() -> None:
    config = SampleConfig(questions_per_paragraph=[2, 4], paragraph_chars=[300, 700])
    assert config.questions_per_paragraph == (2, 4)
    assert config.paragraph_chars == (300, 700)
    assert config.split_sizes() == {"train": 300, "dev": 60, "test": 60}


def test_unsatisfiable_configuration_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    # every attempt failing (as for a length range too short for the questions) must end
    # in a clear ValueError rather than an endless loop
    monkeypatch.setattr(synthetic.paragraphs.ParagraphBuilder, "_attempt", lambda self, pid: None)
    with pytest.raises(ValueError, match="could not generate a paragraph"):
        generate(SampleConfig(train_paragraphs=1, dev_paragraphs=1, test_paragraphs=1))


def test_dense_configuration_still_works() -> None:
    config = SampleConfig(train_paragraphs=5, dev_paragraphs=2, test_paragraphs=2,
                          questions_per_paragraph=(8, 8), paragraph_chars=(200, 260))
    for records in generate(config).values():
        for r in records:
            assert len(r["qas"]) == 8 and 200 <= len(r["context"]) <= 260
