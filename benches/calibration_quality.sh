#!/usr/bin/env bash
# Calibration quality on the shared datasets with the real models: for each dataset and model,
# `calibrate --holdout 0.5` on a seeded random sample, fitting temperature and per-label bias.
# Prints each calibrate report; the README's "Confidence" table is taken from these.
# Usage: benches/calibration_quality.sh [rows per dataset, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
BIN=target/release/autolabel-local
cargo build --release --quiet
OUT=${OUT:-target/calibration-quality}
mkdir -p "$OUT"
D=../shared/data
run() { # name config data model extra...
  local name=$1 config=$2 data=$3 model=$4; shift 4
  echo "=== $name / $model / $N rows ==="
  "$BIN" calibrate --config "$config" --data "$data" --model "$model" --max-items "$N" \
    --sample-seed 7 --holdout 0.5 --fit bias --calibration "$OUT/$name-$model.json" "$@" 2>&1 \
    | grep -v '^warning: line'
}
for model in smollm2-135m-instruct qwen2.5-coder-0.5b-instruct; do
  run sms_spam examples/sms_spam/config.json "$D/sms_spam/SMSSpamCollection.tsv" "$model"
  run movie_reviews examples/movie_reviews/config.json "$D/autolabel_movie_reviews/movie_reviews.csv" "$model"
  run banking77 examples/banking77/config.json "$D/banking77/test.csv" "$model"
done
