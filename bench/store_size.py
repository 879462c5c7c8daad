"""What a distillation teacher costs on disk: logits-store bytes per 10,000 training questions.

A teacher of the training file is one logits store per member (``qa-scale predict MEMBER/model
TRAIN_FILE``) plus the combined teacher that ``qa-scale distill`` writes once into the run's cache
(float32) and reads memory-mapped. Their size is windows × max_seq_len × 2 arrays × bytes per value,
so it follows from the number of windows per question, measured here by cutting the real CMRC 2018
and DRCD dev files into the CMRC recipes' windows (384 tokens, 128 of overlap, 64 question tokens)
with the real Chinese BERT vocabulary. The windows are counted, not estimated; the bytes are
computed from them (the ``.npy`` headers, 128 bytes each, are left out).

Usage: ``python bench/store_size.py [--data ../shared/data] [--out bench/results/store_size.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from record import emit, header

from qa_scale import data
from qa_scale.data.tokenization import load_tokenizer
from qa_scale.data.windows import WindowConfig, build_windows

QUESTIONS = 10_000
FILES = ("cmrc2018_dev.json", "drcd_dev.json")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    shared = Path(args.data)
    tok = load_tokenizer(shared / "bert-base-chinese-vocab.txt")
    config = WindowConfig(max_seq_len=384, max_question_len=64, doc_overlap=128)
    result = {**header("store_size"), "windows": {"max_seq_len": 384, "doc_overlap": 128, "max_question_len": 64},
              "per": f"{QUESTIONS} questions", "files": {}}
    for name in FILES:
        examples = data.load(shared / name, "lenient").examples
        ws = build_windows(examples, tok, config)
        windows = len(ws) / len(examples) * QUESTIONS
        per_array = windows * config.max_seq_len
        result["files"][name] = {
            "questions": len(examples), "windows": len(ws), "windows_per_question": round(len(ws) / len(examples), 3),
            "windows_per_10k_questions": round(windows),
            "member_store_logits_mb": {"fp32": round(2 * per_array * 4 / 1e6, 1), "fp16": round(2 * per_array * 2 / 1e6, 1)},
            "teacher_cache_mb_fp32": round(2 * per_array * 4 / 1e6, 1),
        }
    result["passed"] = all(f["windows"] > 0 for f in result["files"].values())
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
