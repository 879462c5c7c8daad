"""Tokenizers: hub names, local directories, a bare ``vocab.txt``, or a vocabulary built here.

Windows need offsets, so only fast (Rust-backed) tokenizers are accepted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from ..common.outputs import atomic_open, staged_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded or cannot make windows."""


def _vocab_text(vocab_file: Path) -> str:
    """The text of a ``vocab.txt``, read through the input layer (errors name the file and line)."""
    from ..common.inputs import read_text

    return read_text(vocab_file, "vocabulary file")


def _from_vocab_file(vocab_file: Path) -> PreTrainedTokenizerBase:
    from transformers import BertTokenizerFast

    text = _vocab_text(vocab_file)
    # BertTokenizerFast's constructor argument for a vocabulary file differs between
    # transformers releases (and one silently ignores the other's); loading a directory that
    # holds vocab.txt is the path every release shares. The text already read (BOM dropped) is
    # written there, so the file is read once, through the input layer.
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_bytes(text.encode("utf-8"))  # output-layer: a private temporary folder
        tok = BertTokenizerFast.from_pretrained(tmp)
    expected = len(set(text.splitlines()))
    if len(tok.get_vocab()) != expected:
        raise TokenizerError(
            f"{vocab_file}: loaded {len(tok.get_vocab())} vocabulary entries, expected {expected}"
        )
    return tok


_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def _check_tokenizer_dir(path: Path) -> None:
    """Read a tokenizer folder's files through the input layer first, so that a damaged one is named
    (file, line, key) instead of failing inside ``tokenizers`` with a message that names nothing."""
    from ..common.inputs import read_json

    for name in _TOKENIZER_JSON:
        if (path / name).exists():  # a folder in its place is named too
            read_json(path / name, "tokenizer file")
    if (path / "vocab.txt").exists():
        _vocab_text(path / "vocab.txt")


def load_tokenizer(spec: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer.

    Args:
        spec: a ``vocab.txt`` file (BERT WordPiece, e.g. the Chinese BERT vocabulary), a
            directory saved with ``save_pretrained``, or a Hugging Face hub name
            (``hfl/chinese-macbert-large``), read from the local cache when offline.

    Raises:
        TokenizerError: the spec cannot be loaded, or the tokenizer is not a fast one.
    """
    from transformers import AutoTokenizer

    from ..common.inputs import InputError
    from ..common.outputs import note_input

    path = Path(spec)
    if not path.exists() and looks_local(str(spec)):  # not a hub name: no point asking the hub (and waiting)
        raise TokenizerError(f"tokenizer {str(spec)!r} not found: no such file or folder")
    if path.exists():
        note_input(path)  # a local tokenizer is an input: no output of this command may be or hold it
    try:
        if path.is_file():
            tok = _from_vocab_file(path)
        else:
            if path.is_dir():
                _check_tokenizer_dir(path)
            tok = AutoTokenizer.from_pretrained(str(spec), use_fast=True)
        # Settings are read lazily: a damaged tokenizer_config.json (a model_max_length that is not a
        # number, a special token that is not text) fails at the first encoding, so encode a pair here.
        tok("a", "b", return_token_type_ids=True, return_offsets_mapping=getattr(tok, "is_fast", False))
    except (TokenizerError, InputError):
        raise
    except Exception as err:  # noqa: BLE001 - `tokenizers` raises bare Exceptions for damaged files
        where = "the local directory" if path.is_dir() else "a local file or directory, or a hub name in the local cache"
        raise TokenizerError(
            f"cannot load tokenizer {str(spec)!r} from {where}: {err}. "
            "Without hub access, pass a vocab.txt, a directory saved with save_pretrained, "
            "or build a vocabulary with `qa-scale vocab`."
        ) from None
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"tokenizer {str(spec)!r} is not a fast tokenizer; windows need offset mappings")
    if path.is_dir() and (tok.cls_token_id is None or tok.sep_token_id is None):
        raise TokenizerError(f"{path}: the tokenizer loaded from this folder has no "
                             f"{'[CLS]' if tok.cls_token_id is None else '[SEP]'} token (is its tokenizer_config.json "
                             "or special_tokens_map.json missing or damaged?)")
    return tok


def build_char_vocab(corpus: Iterable[str], out_dir: str | os.PathLike, vocab_size: int = 8000,
                     min_frequency: int = 1, word_min_frequency: int = 0) -> PreTrainedTokenizerBase:
    """Build a character-level Chinese WordPiece vocabulary, deterministically, and save it as a tokenizer.

    The corpus goes through the BERT normaliser and pre-tokenizer (the ones the tokenizer will
    use): every CJK character becomes a word of its own, as in the Chinese BERT vocabulary, and
    every other word (Latin, digits) is spelt as its first character plus ``##`` continuations.
    Entries are ranked by frequency, ties by code point, so the same corpus always gives the same
    file — the ``tokenizers`` WordPiece trainer breaks frequency ties in hash order, which changed
    token ids (and so every initialisation) from one run to the next.

    Args:
        corpus: lines of text (e.g. the contexts of a data set).
        out_dir: where ``vocab.txt`` and the tokenizer files are written.
        vocab_size: upper bound on the vocabulary size, special tokens included.
        min_frequency: characters seen fewer times are left out (they become ``[UNK]``).
        word_min_frequency: when > 0, whole non-CJK words seen at least this often (numbers such
            as years, Latin names) become entries of their own after the characters, so that they
            are one token instead of one per character; 0 keeps the vocabulary character-level.

    Returns:
        The tokenizer, loaded back from ``out_dir``.
    """
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = BertPreTokenizer()
    chars: Counter = Counter()
    words: Counter = Counter()
    for line in corpus:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(line)):
            chars[word[0]] += 1
            chars.update("##" + c for c in word[1:])
            if len(word) > 1:
                words[word] += 1
    rank = lambda item: (-item[1], item[0])  # noqa: E731 - frequency, then code point: no ties left
    entries = [t for t, n in sorted(chars.items(), key=rank) if n >= min_frequency]
    if word_min_frequency > 0:
        entries += [w for w, n in sorted(words.items(), key=rank) if n >= word_min_frequency]
    room = vocab_size - len(SPECIAL_TOKENS)
    if room < 1:
        raise TokenizerError(f"vocab_size {vocab_size} leaves no room beside the {len(SPECIAL_TOKENS)} special tokens")
    with staged_dir(out_dir, kind="tokenizer") as tmp:  # an existing folder is replaced only if it is a vocab of ours
        with atomic_open(tmp / "vocab.txt") as fh:
            fh.writelines(t + "\n" for t in [*SPECIAL_TOKENS, *entries[:room]])
        tok = _from_vocab_file(tmp / "vocab.txt")
        tok.save_pretrained(str(tmp))
    return tok


def tokenizer_identity(tok: PreTrainedTokenizerBase) -> dict:
    """What makes two tokenizers give the same windows: vocabulary and normalisation.

    The name or path it was loaded from is left out on purpose: the same vocabulary loaded
    from two places tokenizes identically.
    """
    state = json.loads(tok.backend_tokenizer.to_str())
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return {
        "vocab_size": len(vocab),
        "vocab_sha256": hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest(),
        "normalizer": state.get("normalizer"),
        "pre_tokenizer": state.get("pre_tokenizer"),
        "special_tokens": {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)},
    }


def corpus_lines(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """The non-empty lines of text files, stripped, file after file (a corpus for a vocabulary)."""
    from ..common.inputs import read_text

    for path in paths:
        text = read_text(path, "corpus file")  # not UTF-8, a folder, missing: named with the line
        yield from (line.strip() for line in text.splitlines() if line.strip())


def looks_local(spec: str) -> bool:
    """Whether a model or tokenizer spec names a local path rather than a hub repository.

    Hub ids are ``name`` or ``owner/name``; anything with a file suffix, a leading ``.``, ``/`` or
    ``~``, more than one ``/``, or a first component that exists here is a path.
    """
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or Path(spec).suffix in (".txt", ".json", ".model"):
        return True
    head = spec.split("/", 1)[0]
    return "/" in spec and Path(head).exists()
