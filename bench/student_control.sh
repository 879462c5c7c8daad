#!/bin/bash
# The control for a demo's student: the same run with distill.kl_weight=0 (the gold loss alone: same
# backbone, windows, steps, seed and checkpoint choice), its held-out EM, and the student's against it
# (paired bootstrap over the held-out questions). Prints one JSON line.
#
# Usage, from the project root: bash bench/student_control.sh DEMO_DIR [PORT]
set -euo pipefail
D=$(realpath "$1"); PORT=${2:-41000}
.venv/bin/deepspeed --num_gpus 2 --master_port "$PORT" .venv/bin/qa-scale train "$D/student/config.yaml" \
    run.output_dir="$D/student_control" distill.kl_weight=0.0 run.resume=null > "$D/logs/student_control.log" 2>&1
.venv/bin/qa-scale predict "$D/student_control/model" "$D/data/squad_dev.json" --device cpu \
    --out "$D/student_control/dev_store" > /dev/null 2>&1
.venv/bin/python - "$D" <<'PY'
import json
import sys

import numpy as np

from qa_scale import data
from qa_scale.ensemble.weight_search import split_ids
from qa_scale.evaluation import metrics
from qa_scale.inference.logits_store import open_store
from qa_scale.workflows.compare import bootstrap_ci

d = sys.argv[1]
refs = data.load_references(f"{d}/data/squad_dev.json")
search, held = split_ids(list(refs), 0.5)  # the demo's split (search_fraction 0.5)
h = {i: refs[i] for i in held}
control = metrics.evaluate(open_store(f"{d}/student_control/dev_store").predictions(), h)
student = metrics.evaluate(open_store(f"{d}/student/dev_store").predictions(), h)
x = np.array([q.em for q in student.per_question]) * 100
y = np.array([q.em for q in control.per_question]) * 100
lo, hi = bootstrap_ci(x, y, resamples=2000, seed=0)
print(json.dumps({"demo": d, "control_holdout_em": round(control.em, 3), "control_holdout_f1": round(control.f1, 3),
                  "student_holdout_em": round(student.em, 3), "student_minus_control_em": round(float((x - y).mean()), 3),
                  "ci95": [round(lo, 3), round(hi, 3)],
                  "control_search_em": round(metrics.evaluate(open_store(f"{d}/student_control/dev_store").predictions(),
                                                              {i: refs[i] for i in search}).em, 3)}))
PY
