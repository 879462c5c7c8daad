"""The character vocabulary builder: deterministic, frequency then code point, optional whole words."""

from __future__ import annotations

from qa_scale.data.tokenization import SPECIAL_TOKENS, build_char_vocab

CORPUS = ["北京北京上海 1987年 abc", "上海南京 1987 ab", "京"]


def test_the_same_corpus_gives_the_same_file(tmp_path):
    build_char_vocab(CORPUS * 5, tmp_path / "a", vocab_size=100)
    build_char_vocab(list(reversed(CORPUS * 5)), tmp_path / "b", vocab_size=100)  # line order does not matter
    assert (tmp_path / "a" / "vocab.txt").read_bytes() == (tmp_path / "b" / "vocab.txt").read_bytes()


def test_entries_rank_by_frequency_then_code_point(tmp_path):
    tok = build_char_vocab(CORPUS, tmp_path / "v", vocab_size=100)
    entries = (tmp_path / "v" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert entries[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    # 京 ×4 first; then everything seen twice, in code-point order (# < 1 < a < 上 < 北 < 海)
    assert entries[5:15] == ["京", "##7", "##8", "##9", "##b", "1", "a", "上", "北", "海"]
    assert tok.tokenize("1987") == ["1", "##9", "##8", "##7"]


def test_frequent_words_become_one_token_and_the_size_bound_holds(tmp_path):
    tok = build_char_vocab(CORPUS, tmp_path / "w", vocab_size=100, word_min_frequency=2)
    assert tok.tokenize("1987年") == ["1987", "年"] and tok.tokenize("abc") == ["a", "##b", "##c"]
    small = build_char_vocab(CORPUS, tmp_path / "s", vocab_size=8)
    assert len(small.get_vocab()) == 8
