"""The demo's student against its ensemble: answer time through the serving path, in one process.

``python bench/student_latency.py DEMO_DIR [--out FILE]`` loads ``DEMO_DIR/ensemble_recipe.yaml``
(the ensemble's readers) and ``DEMO_DIR/student/model`` and times both on the same held-out dev
questions with the demo's own measurement (:func:`qa_scale.workflows.demo_student.answer_latency`):
one question per call and all of them in one call, ensemble and student alternating, the faster
of two rounds each, after a warm-up. What a demo run reports under ``student.latency``, for demo
folders made before that measurement had its one-call figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from record import emit, header

from qa_scale.common.inputs import read_json
from qa_scale.workflows.demo_config import DemoConfig, DemoFiles
from qa_scale.workflows.demo_student import answer_latency


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo", type=Path)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    saved = read_json(args.demo / "demo.json")["config"]
    cfg = DemoConfig(**{k: tuple(v) if k == "paragraph_chars" else v for k, v in saved.items()
                        if k in DemoConfig.__dataclass_fields__})
    data = args.demo / "data"
    files = DemoFiles(data / "corpus.txt", data / "squad_train.json", data / "squad_dev.json",
                      data / "squad_dev_search.json", data / "hw7_test.json", data / "hw7_test_answers.json",
                      args.demo / "tokenizer")
    latency = answer_latency(cfg, args.demo, files, args.demo / "student" / "model")
    result = {**header("student_latency"), "demo": str(args.demo), "seed": cfg.seed, **latency}
    result["passed"] = all(s > 0 for s in latency["seconds_per_question"].values())  # a measurement, no target
    return emit(result, args.out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
