"""Windows: identical to the fast tokenizer's overflow mode, labels, strategies, fingerprints."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CORPUS
from conftest import window_examples as examples
from tokenizers import Tokenizer, processors
from transformers import PreTrainedTokenizerFast

from qa_scale.data import Answer, Example
from qa_scale.data.window_store import cached_windows, load_windows, save_windows
from qa_scale.data.windows import WindowConfig, build_windows, fingerprint_difference


def hf_overflow(tok, exs, cfg):
    return tok([e.question for e in exs], [e.context for e in exs], truncation="only_second",
               max_length=cfg.max_seq_len, stride=cfg.doc_overlap, return_overflowing_tokens=True,
               return_offsets_mapping=True, return_token_type_ids=True)


@pytest.mark.parametrize("overlap", [0, 8, 20])
def test_same_windows_as_fast_tokenizer_overflow(char_tokenizer, overlap):
    exs = examples()
    cfg = WindowConfig(max_seq_len=48, max_question_len=16, doc_overlap=overlap)
    ws = build_windows(exs, char_tokenizer, cfg)
    truncated = [Example(e.id, char_tokenizer.decode(char_tokenizer(e.question, add_special_tokens=False,
                 truncation=True, max_length=16)["input_ids"]).replace(" ", ""), e.context) for e in exs]
    ref = hf_overflow(char_tokenizer, truncated, cfg)
    assert len(ws) == len(ref["input_ids"]) > len(exs)
    assert ws.example_index.tolist() == list(ref["overflow_to_sample_mapping"])
    for w in range(len(ws)):
        n = ws.lengths[w]
        assert ws.input_ids[w, :n].tolist() == ref["input_ids"][w]
        assert ws.token_type_ids[w, :n].tolist() == ref["token_type_ids"][w]
        seq = ref.sequence_ids(w)
        ctx = [tuple(o) for o, s in zip(ref["offset_mapping"][w], seq) if s == 1]
        assert [tuple(o) for o in ws.offsets[w, :n] if o[0] >= 0] == ctx
    assert (ws.input_ids[np.arange(48)[None, :] >= ws.lengths[:, None]] == char_tokenizer.pad_token_id).all()


def test_same_windows_as_overflow_on_real_vocabulary(bert_tokenizer, shared_data):
    from qa_scale import data
    exs = data.load(shared_data / "cmrc2018_dev.json", "lenient").examples[:300]
    cfg = WindowConfig(max_seq_len=256, max_question_len=64, doc_overlap=64)
    ws = build_windows(exs, bert_tokenizer, cfg)
    ref = hf_overflow(bert_tokenizer, exs, cfg)
    assert [ws.input_ids[w, :ws.lengths[w]].tolist() for w in range(len(ws))] == ref["input_ids"]


def test_labels_point_at_the_answer_or_at_cls(char_tokenizer):
    exs = examples()
    ws = build_windows(exs, char_tokenizer, WindowConfig(max_seq_len=40, max_question_len=12, doc_overlap=10))
    found = set()
    for w in range(len(ws)):
        ex = exs[ws.example_index[w]]
        s, e = ws.start_positions[w], ws.end_positions[w]
        if s == ws.cls_index[w]:
            assert e == ws.cls_index[w]
            continue
        assert ex.context[ws.offsets[w, s, 0]:ws.offsets[w, e, 1]].lower() == ex.answers[0].text.lower()
        found.add(ex.id)
    assert found == {ex.id for ex in exs}


def test_stride_meanings_and_paragraph_windows(char_tokenizer):
    exs = examples(3)
    step = build_windows(exs, char_tokenizer, WindowConfig(max_seq_len=64, max_question_len=10,
                                                           doc_step=7, max_context_len=20), labels=False)
    first_token = {}
    for w in range(len(step)):
        ctx_pos = np.flatnonzero(step.offsets[w, :, 0] >= 0)
        assert len(ctx_pos) <= 20
        first_token.setdefault(step.example_index[w], []).append(step.offsets[w, ctx_pos[0], 0])
    enc = char_tokenizer([e.context for e in exs], add_special_tokens=False, return_offsets_mapping=True)
    for e, starts in first_token.items():
        char_of_token = [o[0] for o in enc["offset_mapping"][e]]
        assert starts == [char_of_token[k] for k in range(0, 7 * len(starts), 7)]
    overlap = build_windows(exs[:1], char_tokenizer, WindowConfig(max_seq_len=40, max_question_len=10, doc_overlap=5))
    a, b = (set(map(tuple, overlap.offsets[w][overlap.offsets[w, :, 0] >= 0])) for w in (0, 1))
    assert len(a & b) == 5


def test_question_truncated(char_tokenizer):
    ex = Example("q", "问题" * 40, CORPUS[0], (Answer("北京", 0),))
    ws = build_windows([ex], char_tokenizer, WindowConfig(max_seq_len=64, max_question_len=9, doc_overlap=8))
    assert (ws.token_type_ids[0, : ws.lengths[0]] == 0).sum() == 1 + 9 + 1  # CLS, question, SEP


def test_random_answer_strategy(char_tokenizer):
    exs = examples()
    cfg = WindowConfig(max_seq_len=40, max_question_len=12, doc_overlap=10)
    a = build_windows(exs, char_tokenizer, cfg, strategy="random_answer", seed=1)
    b = build_windows(exs, char_tokenizer, cfg, strategy="random_answer", seed=1)
    c = build_windows(exs, char_tokenizer, cfg, strategy="random_answer", seed=2)
    assert len(a) == len(exs) and a.example_index.tolist() == list(range(len(exs)))
    assert (a.start_positions != a.cls_index).all()  # the answer is always inside
    assert np.array_equal(a.input_ids, b.input_ids) and not np.array_equal(a.input_ids, c.input_ids)
    with pytest.raises(ValueError, match="needs examples with answers"):
        build_windows([Example("t", "q", "ctx")], char_tokenizer, cfg, strategy="random_answer")


def test_answer_and_negative_strategy_adds_one_window_without_the_answer(char_tokenizer):
    exs = examples()
    cfg = WindowConfig(max_seq_len=40, max_question_len=12, doc_overlap=10)
    ws = build_windows(exs, char_tokenizer, cfg, strategy="answer_and_negative", seed=1)
    every = build_windows(exs, char_tokenizer, cfg)  # which contexts have room for a window without the answer
    room = {e for e in range(len(exs)) if (every.start_positions[every.example_index == e] == every.cls_index[0]).any()}
    assert room and ws.example_index.tolist() == sorted([*range(len(exs)), *room])
    first = np.r_[True, ws.example_index[1:] != ws.example_index[:-1]]
    assert (ws.start_positions[first] != ws.cls_index[first]).all()  # the answer window, as random_answer's
    assert (ws.start_positions[~first] == ws.cls_index[~first]).all() and (~first).sum() == len(room)
    for w in np.flatnonzero(~first):  # the negative window really lacks the whole answer
        ex, ctx = exs[ws.example_index[w]], ws.offsets[w][ws.context_mask[w]]
        a = ex.answers[0]
        assert not (ctx[0, 0] <= a.start and a.start + len(a.text) <= ctx[-1, 1])
    again = build_windows(exs, char_tokenizer, cfg, strategy="answer_and_negative", seed=1)
    assert np.array_equal(ws.input_ids, again.input_ids)


def test_cls_index_is_found_not_assumed(char_tokenizer, tmp_path):
    backend = Tokenizer.from_str(char_tokenizer.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="[MASK] [CLS] $A [SEP]", pair="[MASK] [CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(t, char_tokenizer.convert_tokens_to_ids(t)) for t in ("[MASK]", "[CLS]", "[SEP]")])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, cls_token="[CLS]", sep_token="[SEP]",
                                  pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]")
    ex = Example("q", "谁？", CORPUS[0] * 3, (Answer("故宫", CORPUS[0].index("故宫") + 2 * len(CORPUS[0])),))
    ws = build_windows([ex], tok, WindowConfig(max_seq_len=24, max_question_len=4, doc_overlap=4))
    assert (ws.cls_index == 1).all() and (ws.input_ids[:, 1] == tok.cls_token_id).all()
    assert (ws.start_positions == 1).any() and (ws.start_positions != 1).any()


@pytest.mark.parametrize("kwargs,message", [
    (dict(doc_overlap=4, doc_step=4), "not both"),
    (dict(max_seq_len=40, max_question_len=10, doc_overlap=27), "doc_overlap 27 must be smaller"),
    (dict(max_seq_len=40, max_question_len=10, doc_step=28), "doc_step 28 exceeds"),
    (dict(max_seq_len=12, max_question_len=10), "no room for context"),
    (dict(doc_step=0), "doc_step: must be ≥ 1"),
    (dict(max_question_len=0), "max_question_len: must be ≥ 1"),
])
def test_bad_settings_are_refused(char_tokenizer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_windows(examples(1), char_tokenizer, WindowConfig(**kwargs))


def test_fingerprint_names_first_difference(char_tokenizer, bert_tokenizer):
    exs = examples()
    cfg = WindowConfig(max_seq_len=48, max_question_len=16, doc_overlap=8)
    base = build_windows(exs, char_tokenizer, cfg).fingerprint()
    assert fingerprint_difference(base, build_windows(exs, char_tokenizer, cfg).fingerprint()) is None
    other = build_windows(exs, char_tokenizer, WindowConfig(max_seq_len=48, max_question_len=16, doc_step=8))
    assert fingerprint_difference(base, other.fingerprint()).startswith("doc_stride differs")
    longer = build_windows(exs, char_tokenizer, WindowConfig(max_seq_len=64, max_question_len=16, doc_overlap=8))
    assert fingerprint_difference(base, longer.fingerprint()).startswith("max_seq_len differs: 48 vs 64")
    assert "tokenizer differs in" in fingerprint_difference(base, build_windows(exs, bert_tokenizer, cfg).fingerprint())
    fewer = build_windows(exs[1:], char_tokenizer, cfg).fingerprint()
    assert fingerprint_difference(base, fewer).startswith("num_examples differs")
    edited = [Example(exs[0].id, exs[0].question + "吗", exs[0].context)] + exs[1:]
    diff = fingerprint_difference(base, build_windows(edited, char_tokenizer, cfg, labels=False).fingerprint())
    assert diff.startswith("window input ids differ first at position 0")


def test_store_round_trip_and_cache(char_tokenizer, tmp_path):
    exs = examples()
    cfg = WindowConfig(max_seq_len=48, max_question_len=16, doc_overlap=8)
    ws = build_windows(exs, char_tokenizer, cfg)
    back = load_windows(save_windows(ws, tmp_path / "w"))
    for name in ("input_ids", "token_type_ids", "offsets", "lengths", "example_index", "window_index",
                 "cls_index", "start_positions", "end_positions"):
        assert np.array_equal(getattr(ws, name), getattr(back, name)), name
    assert back.fingerprint() == ws.fingerprint() and back.config == cfg
    first = cached_windows(exs, char_tokenizer, cfg, tmp_path / "cache")
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = cached_windows(exs, char_tokenizer, cfg, tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == entries and len(entries) == 1
    assert again.fingerprint() == first.fingerprint()
    cached_windows(exs, char_tokenizer, WindowConfig(max_seq_len=48, max_question_len=16, doc_overlap=9), tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2
