#!/usr/bin/env bash
# The HW7 "boss" ensemble: train K members, predict dev and test with each, search the member
# weights on dev, average the test logits and write the Kaggle CSV.
#   bash launch/boss_ensemble.sh NUM_GPUS [section.key=value ...]       # overrides go to every member
#   bash launch/boss_ensemble.sh 8
#   SEEDS="1 2 3" DATA=data/hw7 OUT=runs/boss bash launch/boss_ensemble.sh 8 optim.epochs=3
#   TRAIN_ON_DEV=1 OUT=runs/boss_traindev bash launch/boss_ensemble.sh 8   # members also learn dev; uniform weights
#
# Members: every recipe in RECIPES (default: MacBERT-large, RoBERTa-wwm-ext-large and luhua MRC
# MacBERT-large, launch/recipes/*_hw7.yaml) × every seed in SEEDS (default "1 2"): K = 6.
# Each member lands in OUT/<recipe>_s<seed>/ (model/, dev_store/, test_store/); finished steps are
# skipped when the script is run again. The searched weights are saved as RECIPE_OUT (default
# ensemble/hw7_boss.yaml, see ensemble/README.md); the submission is OUT/submission.csv.
# With TRAIN_ON_DEV=1 the members train on train+dev (OUT/hw7_train_dev.json), so dev can no
# longer choose weights: the test logits are averaged uniformly, or with WEIGHTS="w1,w2,...".
#
# Expected GPU time — an ESTIMATE from the recipe sizes, not a measurement: a member trains
# 2 epochs × ~30k HW7 questions × 1 window of 512 tokens (random_answer) ≈ 31M tokens through a
# ~330M-parameter encoder ≈ 6.5e16 FLOPs ≈ 9 min of one A100 at 40% bf16 MFU; dev evaluations,
# dev/test prediction, checkpoints and loading add ~4 min. K = 6 members ≈ 1.3 A100-hours
# (≈ 0.7 H100-hours), about 15–25 min of wall time on one 8-GPU server. Ensembling is seconds on CPU.
set -euo pipefail
gpus=${1:?usage: launch/boss_ensemble.sh NUM_GPUS [section.key=value ...]}
shift
data=${DATA:-data/hw7}
out=${OUT:-runs/boss}
seeds=${SEEDS:-1 2}
recipes=${RECIPES:-launch/recipes/macbert_large_hw7.yaml launch/recipes/roberta_wwm_large_hw7.yaml launch/recipes/luhua_mrc_macbert_large_hw7.yaml}
recipe_out=${RECIPE_OUT:-ensemble/hw7_boss.yaml}
qa=$(command -v qa-scale)
mkdir -p "$out"

train_file=$data/hw7_train.json
if [ "${TRAIN_ON_DEV:-0}" = 1 ]; then  # dev ids are prefixed: HW7 numbers each file's questions from 0
  train_file=$out/hw7_train_dev.json
  python - "$data/hw7_train.json" "$data/hw7_dev.json" "$train_file" <<'EOF'
import json, sys
train, dev = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
shift = len(train["paragraphs"])
dev_q = [{**q, "id": f"dev-{q['id']}", "paragraph_id": q["paragraph_id"] + shift} for q in dev["questions"]]
with open(sys.argv[3], "w", encoding="utf-8") as fh:
    json.dump({"questions": train["questions"] + dev_q, "paragraphs": train["paragraphs"] + dev["paragraphs"]}, fh, ensure_ascii=False)
EOF
fi

dev_stores=() test_stores=()
for recipe in $recipes; do
  for seed in $seeds; do
    name=$(basename "$recipe" .yaml)
    run=$out/${name%_hw7}_s$seed
    [ -f "$run/model/config.json" ] || deepspeed --num_gpus "$gpus" "$qa" train "$recipe" run.seed="$seed" \
      run.output_dir="$run" data.train_file="$train_file" data.dev_file="$data/hw7_dev.json" "$@"
    # windows and decoding default to the member's training config (run/config.yaml)
    [ -f "$run/dev_store/store.json" ] || deepspeed --num_gpus "$gpus" "$qa" predict "$run/model" \
      "$data/hw7_dev.json" --out "$run/dev_store" --references "$data/hw7_dev.json" --compute bf16 --batch-size 64
    [ -f "$run/test_store/store.json" ] || deepspeed --num_gpus "$gpus" "$qa" predict "$run/model" \
      "$data/hw7_test.json" --out "$run/test_store" --compute bf16 --batch-size 64
    dev_stores+=("$run/dev_store") test_stores+=("$run/test_store")
  done
done

if [ "${TRAIN_ON_DEV:-0}" = 1 ]; then
  qa-scale ensemble "${test_stores[@]}" ${WEIGHTS:+--weights "$WEIGHTS"} --out "$out/test_ensemble"
else
  qa-scale ensemble "${dev_stores[@]}" --search-weights --references "$data/hw7_dev.json" \
    --out "$out/dev_ensemble" --recipe-out "$recipe_out"      # members' and ensemble's dev EM/F1
  qa-scale ensemble --recipe "$recipe_out" "${test_stores[@]}" --out "$out/test_ensemble"
fi
cp "$out/test_ensemble/submission.csv" "$out/submission.csv"
echo "submission: $out/submission.csv"
