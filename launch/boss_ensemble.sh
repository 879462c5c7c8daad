#!/usr/bin/env bash
# The HW7 "boss" ensemble: train K members, predict dev and test with each, search the member
# weights on dev, average the test logits and write the Kaggle CSV.
#   bash launch/boss_ensemble.sh NUM_GPUS [section.key=value ...]       # overrides go to every member
#   bash launch/boss_ensemble.sh 8
#   LAYOUT=data_parallel bash launch/boss_ensemble.sh 8                  # one member at a time on all GPUs
#   SEEDS="1 2 3" DATA=data/hw7 OUT=runs/boss bash launch/boss_ensemble.sh 8 optim.epochs=3
#   TRAIN_ON_DEV=1 OUT=runs/boss_traindev bash launch/boss_ensemble.sh 8   # members also learn dev; uniform weights
#
# Members: every recipe in RECIPES (default: MacBERT-large, RoBERTa-wwm-ext-large and luhua MRC
# MacBERT-large, launch/recipes/*_hw7.yaml) × every seed in SEEDS (default "1 2"): K = 6.
# Each member lands in OUT/<recipe>_s<seed>/ (model/, dev_store/, test_store/, logs); finished steps
# are skipped when the script is run again. The searched weights are saved as RECIPE_OUT (default
# ensemble/hw7_boss.yaml, see ensemble/README.md); the submission is OUT/submission.csv.
# With TRAIN_ON_DEV=1 the members train on train+dev (OUT/hw7_train_dev.json), so dev can no
# longer choose weights: the test logits are averaged uniformly, or with WEIGHTS="w1,w2,...".
#
# Layouts (LAYOUT):
#   member_per_gpu (default): up to NUM_GPUS members train at once, one GPU each. The recipes'
#     `micro_batch_size: auto` then gives each GPU the whole global batch of 32 windows in one
#     forward pass, and no gradient crosses a GPU boundary.
#   data_parallel: one member after another on all NUM_GPUS GPUs (ZeRO-2): 4 windows per GPU per
#     forward pass and an all-reduce of ~330M gradients (0.65 GB in bf16) every step.
# member_per_gpu should be the faster of the two for K ≥ NUM_GPUS / 2: the same FLOPs run as
# 8× larger matmuls with no gradient traffic, and the 3 launches of each member (train, predict
# dev, predict test) overlap with other members' work instead of idling 8 GPUs. This is reasoned
# from the layouts, not yet measured on a GPU server (bench/gpu_check.py measures micro-batch 4 vs
# 32 on one GPU). data_parallel finishes the FIRST member sooner, and is the layout when one member
# does not fit one GPU. Checkpoints are cleaned after each member's export (recipes:
# run.clean_checkpoints: keep_best), so disk holds ~K × 6 GB instead of ~K × 14 GB.
#
# Expected GPU time — an ESTIMATE from the recipe sizes, not a measurement: a member trains
# 2 epochs × ~30k HW7 questions × 1 window of 512 tokens (random_answer) ≈ 31M tokens through a
# ~330M-parameter encoder ≈ 6.5e16 FLOPs ≈ 9 min of one A100 at 40% bf16 MFU; dev evaluations,
# dev/test prediction, checkpoints and loading add ~4 min. K = 6 members ≈ 1.3 A100-hours
# (≈ 0.7 H100-hours): about 13 min of wall time on one 8-GPU server member_per_gpu (6 GPUs busy).
set -euo pipefail
gpus=${1:?usage: launch/boss_ensemble.sh NUM_GPUS [section.key=value ...]}
shift
data=${DATA:-data/hw7}
out=${OUT:-runs/boss}
seeds=${SEEDS:-1 2}
layout=${LAYOUT:-member_per_gpu}
recipes=${RECIPES:-launch/recipes/macbert_large_hw7.yaml launch/recipes/roberta_wwm_large_hw7.yaml launch/recipes/luhua_mrc_macbert_large_hw7.yaml}
recipe_out=${RECIPE_OUT:-ensemble/hw7_boss.yaml}
qa=$(command -v qa-scale)
mkdir -p "$out"

train_file=$data/hw7_train.json
if [ "${TRAIN_ON_DEV:-0}" = 1 ]; then  # dev ids are prefixed: HW7 numbers each file's questions from 0
  train_file=$out/hw7_train_dev.json
  python - "$data/hw7_train.json" "$data/hw7_dev.json" "$train_file" <<'PY'
import json, sys
train, dev = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
shift = len(train["paragraphs"])
dev_q = [{**q, "id": f"dev-{q['id']}", "paragraph_id": q["paragraph_id"] + shift} for q in dev["questions"]]
with open(sys.argv[3], "w", encoding="utf-8") as fh:
    json.dump({"questions": train["questions"] + dev_q, "paragraphs": train["paragraphs"] + dev["paragraphs"]}, fh, ensure_ascii=False)
PY
fi

member() {  # member RUN RECIPE SEED LAUNCHER_ARGS... -- OVERRIDES...: train, then predict dev and test
  local run=$1 recipe=$2 seed=$3; shift 3
  local launch=()
  while [ "$1" != "--" ]; do launch+=("$1"); shift; done
  shift
  [ -f "$run/model/config.json" ] || deepspeed "${launch[@]}" "$qa" train "$recipe" run.seed="$seed" \
    run.output_dir="$run" data.train_file="$train_file" data.dev_file="$data/hw7_dev.json" "$@"
  # windows and decoding default to the member's training config (run/config.yaml)
  [ -f "$run/dev_store/store.json" ] || deepspeed "${launch[@]}" "$qa" predict "$run/model" \
    "$data/hw7_dev.json" --out "$run/dev_store" --references "$data/hw7_dev.json" --compute bf16 --batch-size 64
  [ -f "$run/test_store/store.json" ] || deepspeed "${launch[@]}" "$qa" predict "$run/model" \
    "$data/hw7_test.json" --out "$run/test_store" --compute bf16 --batch-size 64
}

dev_stores=() test_stores=() i=0 failed=0
for recipe in $recipes; do
  for seed in $seeds; do
    name=$(basename "$recipe" .yaml)
    run=$out/${name%_hw7}_s$seed
    dev_stores+=("$run/dev_store") test_stores+=("$run/test_store")
    if [ "$layout" = data_parallel ]; then
      member "$run" "$recipe" "$seed" --num_gpus "$gpus" -- "$@"
    else
      if [ "$i" -ge "$gpus" ]; then wait -n || failed=1; fi  # a GPU frees up
      mkdir -p "$run"
      member "$run" "$recipe" "$seed" --include "localhost:$((i % gpus))" --master_port $((29500 + i)) -- "$@" \
        > "$run/member.log" 2>&1 &
      echo "member $run on GPU $((i % gpus)) (log: $run/member.log)"
    fi
    i=$((i + 1))
  done
done
while [ "$layout" != data_parallel ] && [ -n "$(jobs -p)" ]; do wait -n || failed=1; done
[ "$failed" = 0 ] || { echo "a member failed: see OUT/*/member.log" >&2; exit 1; }

if [ "${TRAIN_ON_DEV:-0}" = 1 ]; then
  qa-scale ensemble "${test_stores[@]}" ${WEIGHTS:+--weights "$WEIGHTS"} --out "$out/test_ensemble"
else
  qa-scale ensemble "${dev_stores[@]}" --search-weights --references "$data/hw7_dev.json" \
    --out "$out/dev_ensemble" --recipe-out "$recipe_out"      # members' and ensemble's dev EM/F1
  qa-scale ensemble --recipe "$recipe_out" "${test_stores[@]}" --out "$out/test_ensemble"
fi
cp "$out/test_ensemble/submission.csv" "$out/submission.csv"
echo "submission: $out/submission.csv"
