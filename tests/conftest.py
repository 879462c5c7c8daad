"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests never reach a model hub: hub names must fail fast from the local cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Our venv first on PATH in this process too, as in the child runs (cli_runs.clean_env): DeepSpeed
# builds its CPU all-reduce op with the first `ninja` on PATH, and a ninja of another version (the
# system's) sees other build commands and rebuilds the op, so in-process and child runs alternating
# between two ninjas rebuilt it again and again (30-90 s each; a run killed mid-build leaves a lock
# that every later build waits on forever).
if not os.environ.get("PATH", "").startswith(f"{Path(sys.executable).parent}{os.pathsep}"):
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

# ../shared/data next to the project root: real public data, never copied into the repo.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def require_shared(path: Path) -> Path:
    """Return ``path`` if it exists; otherwise skip, or fail when CI demands the data.

    ``QA_SCALE_REQUIRE_SHARED=1`` (set by CI) turns the skip into a failure so that a
    missing data folder cannot silently hide the real-data tests.
    """
    if path.exists():
        return path
    reason = f"shared data not found: {path}"
    if os.environ.get("QA_SCALE_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason} (QA_SCALE_REQUIRE_SHARED=1)")
    pytest.skip(reason)


# The files that take most of the suite's time (`--durations` of a full run), heaviest first. The README's
# test command runs two workers, one file each at a time (`-n 2 --dist loadfile`: a module's fixtures,
# such as a trained run, are made once, not once per worker); starting with the longest files lets the
# short ones fill in at the end, so both workers finish together. The one-GPU check's dry run third: it
# copies DeepSpeed's built CPU ops from the user's cache when it starts (bench/gpu_check_common.Runner), and
# by then the first two files' runs have built them there; first or second, it built its own copy as well.
HEAVY_FIRST = ("training/test_train.py", "modeling/test_large_shape.py", "bench/test_gpu_check.py",
               "workflows/test_demo.py", "training/test_learning.py", "modeling/test_lora.py",
               "training/test_speed_levers.py", "bench/test_real_text_bench.py", "training/test_resume_and_seeds.py")


def pytest_collection_modifyitems(config, items):
    """The heaviest files first (order kept within a file and among the others); ``@pytest.mark.gpu`` tests
    are skipped, saying why, where torch sees no CUDA device."""
    import torch

    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    tests = Path(__file__).resolve().parent
    items.sort(key=lambda item: rank.get(os.path.relpath(item.path, tests).replace(os.sep, "/"), len(rank)))
    if torch.cuda.device_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.device_count() == 0)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    """Path of the shared data folder (skips or fails when it is absent)."""
    return require_shared(SHARED_DATA)


# A small mixed Chinese/Latin corpus: enough for a character vocabulary that covers the
# hand-written examples of the tests (each CJK character becomes its own token).
CORPUS = [
    "北京是中国的首都，上海是中国最大的城市。北京有故宫和长城。",
    "张伟于1987年出生在杭州，2010年毕业于浙江大学，后来加入ABC科技公司担任工程师。",
    "《红楼梦》是曹雪芹的作品，「石头记」是它的另一个名字。New York Times 报道了这件事。",
    "李娜在2014年赢得了澳大利亚网球公开赛（Australian Open）的冠军，奖金为265万澳元。",
    "问题是什么？哪一年？哪个城市？谁？多少？为什么？",
]


def window_examples(n=6):
    """Long mixed contexts (Latin words, numbers, marks) from CORPUS with answers at several places."""
    from qa_scale.data import Answer, Example

    out = []
    for i in range(n):
        ctx = "".join(CORPUS[(i + j) % len(CORPUS)] for j in range(4))
        for text in ("ABC科技公司", "New York Times", "1987", "「石头记」"):
            if text in ctx:
                out.append(Example(f"q{i}-{len(out)}", f"第{i}个问题是什么？哪一年？" * (1 + i % 3), ctx,
                                   (Answer(text, ctx.index(text)),)))
    return out


@pytest.fixture(scope="session")
def char_tokenizer(tmp_path_factory):
    """A character-level WordPiece tokenizer built from CORPUS (no shared data needed)."""
    from qa_scale.data.tokenization import build_char_vocab

    return build_char_vocab(CORPUS * 3, tmp_path_factory.mktemp("vocab"), vocab_size=600)


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The real Chinese BERT tokenizer (MacBERT / RoBERTa-wwm vocabulary) from ../shared/data."""
    from qa_scale.data.tokenization import load_tokenizer

    return load_tokenizer(require_shared(SHARED_DATA / "bert-base-chinese-vocab.txt"))
