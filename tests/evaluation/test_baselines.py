"""The baselines on hand-made examples whose answers are known."""

from __future__ import annotations

from qa_scale.data import Answer, Example
from qa_scale.evaluation import baselines

TRAIN = [Example("t1", "q", "上海浦东", (Answer("浦东", 2),)), Example("t2", "q", "一二三四", (Answer("三四", 2),)),
         Example("t3", "q", "甲乙丙", (Answer("乙丙", 1),))]  # median answer length: 2 characters
CONTEXT = "今天天气很好。北京是中国的首都，人口很多。故宫在北京市中心，李明设计了新馆。"


def test_question_terms_drop_question_words_and_particles():
    assert baselines.question_terms("中国的首都是什么？") == frozenset("中国首都")
    assert baselines.question_terms("誰設計了新館？") == frozenset("設計新館")


def test_question_word_side():
    assert baselines.question_word_side("中国的首都是什么？") == "after"
    assert baselines.question_word_side("谁设计了新馆？") == "before"
    assert baselines.question_word_side("请说明首都") == "after"  # no question word


def test_best_window_finds_the_densest_stretch():
    score, start, end = baselines.best_window(CONTEXT, frozenset("中国首都"), window=10)
    assert score == 4 and CONTEXT[start:end] == "中国的首都"
    assert baselines.best_window(CONTEXT, frozenset("火星"), window=10) == (0, 0, 0)


def test_span_next_to_stops_at_punctuation_and_width():
    i = CONTEXT.index("中国的首都")
    assert baselines.span_next_to(CONTEXT, i, i + 5, "after", 4) == "人口很多"
    assert baselines.span_next_to(CONTEXT, i, i + 5, "after", 2) == "人口"
    j = CONTEXT.index("设计了新馆")
    assert baselines.span_next_to(CONTEXT, j, j + 5, "before", 2) == "李明"
    assert baselines.span_next_to(CONTEXT, j, j + 5, "before", 10) == "李明"  # the comma stops it


def test_lexical_overlap_answers_known_questions():
    dev = [Example("d1", "谁设计了新馆？", CONTEXT), Example("d2", "故宫在北京市的哪里？", CONTEXT),
           Example("d3", "火星有多大？", CONTEXT)]
    answers = baselines.lexical_overlap(TRAIN, dev, window=12)
    assert answers["d1"] == "李明"  # question word first: the text before the matched region
    assert answers["d2"] == "中心"  # question word last: the text after it, 2 characters
    assert answers["d3"] == CONTEXT[:2]  # nothing matched: the context's first characters
    refs = {"d1": ["李明"], "d2": ["中心"], "d3": ["很远"]}
    scores = baselines.all_baselines(TRAIN, dev, refs, seeds=2)
    assert scores["lexical_overlap"]["em"] == round(200 / 3, 3)
    assert set(scores) == {"most_frequent_answer", "random_span", "lexical_overlap"}
