#!/usr/bin/env bash
# Accuracy and speed of autolabel-local on the shared datasets with both built-in models.
# Prints one markdown table (the README's "Accuracy and speed" section comes from it).
#   benches/bench_real.sh [MOVIE_ROWS] [SMS_ROWS] [QWEN_MOVIE_ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
MOVIE_ROWS=${1:-200}
SMS_ROWS=${2:-500}
QWEN_MOVIE_ROWS=${3:-100}
DATA=../shared/data
cargo build --release -q
BIN=target/release/autolabel-local
tmp=$(mktemp -d)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| model | dtype | dataset | rows | accuracy | rows/s | peak RSS MB |"
echo "|---|---|---|---:|---:|---:|---:|"
run() { # model dtype dataset-name config data rows
  local out="$tmp/out.csv" log="$tmp/log"
  /usr/bin/time -f "%M" -o "$tmp/rss" "$BIN" run --model "$1" --dtype "$2" --config "$4" --data "$5" \
    --max-items "$6" --out "$out" > "$log" 2>&1 || true
  local acc rps rss
  acc=$(grep -m1 '|   *[0-9]* |      0.00 |' "$log" | awk -F'|' '{gsub(/ /,"",$4); print $4}')
  rps=$(grep -o '([0-9.]* rows/s)' "$log" | tr -d '(' | awk '{print $1}')
  rss=$(awk '{printf "%.0f", $1/1024}' "$tmp/rss")
  echo "| $1 | $2 | $3 | $6 | $acc | $rps | $rss |"
}
MOVIE=(examples/movie_reviews/config.json $DATA/autolabel_movie_reviews/movie_reviews.csv)
SMS=(examples/sms_spam/config.json $DATA/sms_spam/SMSSpamCollection.tsv)
run smollm2-135m-instruct f32 movie_reviews "${MOVIE[@]}" "$MOVIE_ROWS"
run smollm2-135m-instruct f32 sms_spam "${SMS[@]}" "$SMS_ROWS"
run smollm2-135m-instruct q sms_spam "${SMS[@]}" 100
run qwen2.5-coder-0.5b-instruct f32 movie_reviews "${MOVIE[@]}" "$QWEN_MOVIE_ROWS"
run qwen2.5-coder-0.5b-instruct f32 sms_spam "${SMS[@]}" "$SMS_ROWS"
run qwen2.5-coder-0.5b-instruct q sms_spam "${SMS[@]}" 100
rm -rf "$tmp"
