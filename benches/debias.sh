#!/usr/bin/env bash
# Label-free debiasing (run --debias content-free) against no debiasing, zero-shot, on the same
# seeded random rows of five shared datasets with both built-in models. Each dataset is labeled
# once; the debiased labels come from the same journal (the prior is divided out of the stored
# log-probabilities), so both columns of the table score identical model calls.
# Prints one table: accuracy and macro-F1 per dataset, model and lever, and the share of rows
# given the most frequent label (how dominated by one label the answers are).
# Usage: benches/debias.sh [rows per dataset, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
BIN=${BIN:-target/release/autolabel-local}
[ -x "$BIN" ] || cargo build --release --quiet
OUT=${OUT:-target/debias-bench}
mkdir -p "$OUT"
D=../shared/data

# Zero-shot configs: the examples' and Autolabel's, without few-shot keys; tweeteval written here.
python3 - "$OUT" "$D" <<'PY'
import json, sys
out, d = sys.argv[1], sys.argv[2]
def zero_shot(src, dst):
    c = json.load(open(src))
    for k in ["few_shot_examples", "few_shot_selection", "few_shot_num"]:
        c["prompt"].pop(k, None)
    c["model"] = {"provider": "local", "name": "smollm2-135m-instruct"}
    json.dump(c, open(f"{out}/{dst}.json", "w"), indent=1)
zero_shot("examples/sms_spam/config.json", "sms_spam")
zero_shot("examples/movie_reviews/config.json", "movie_reviews")
zero_shot("examples/banking77/config.json", "banking77")
zero_shot(f"{d}/autolabel_configs/benchmark_configs_HEAD/walmart_amazon.json", "walmart_amazon")
json.dump({
    "task_name": "TweetSentiment", "task_type": "classification",
    "dataset": {"label_column": "label", "delimiter": ","},
    "model": {"provider": "local", "name": "smollm2-135m-instruct"},
    "prompt": {
        "task_guidelines": "Classify the sentiment of the tweet as one of the following labels:\n{labels}",
        "output_guidelines": "You will answer with just the correct label and nothing else.",
        "labels": ["negative", "neutral", "positive"],
        "example_template": "Tweet: {example}\nSentiment: {label}"}},
    open(f"{out}/tweeteval_sentiment.json", "w"), indent=1)
PY

data() {
  case $1 in
    sms_spam) echo "$D/sms_spam/SMSSpamCollection.tsv" ;;
    movie_reviews) echo "$D/autolabel_movie_reviews/movie_reviews.csv" ;;
    banking77) echo "$D/banking77/test.csv" ;;
    tweeteval_sentiment) echo "$D/tweeteval_sentiment/test.csv" ;;
    walmart_amazon) echo "$D/autolabel_walmart_amazon/test.csv" ;;
  esac
}
for model in smollm2-135m-instruct qwen2.5-coder-0.5b-instruct; do
  for name in sms_spam movie_reviews banking77 tweeteval_sentiment walmart_amazon; do
    out="$OUT/$name-$model.csv"
    args=(run --config "$OUT/$name.json" --data "$(data $name)" --model "$model" --max-items "$N" --sample-seed 7 --out "$out")
    s=$(date +%s.%N)
    "$BIN" "${args[@]}" >/dev/null 2>"$OUT/$name-$model.log" || [ $? = 2 ]
    echo "$name $model: labeled in $(echo "$(date +%s.%N) - $s" | bc) s" >&2
    cp "$out" "$OUT/$name-$model.none.csv"
    "$BIN" "${args[@]}" --debias content-free >/dev/null 2>>"$OUT/$name-$model.log" || [ $? = 2 ]
    grep -h "content-free label prior" "$OUT/$name-$model.log" >&2 || true
    cp "$out" "$OUT/$name-$model.debiased.csv"
  done
done

python3 - "$OUT" <<'PY'
import csv, json, sys, collections
out = sys.argv[1]
print("| dataset | model | lever | accuracy | macro-F1 | most frequent label's share |")
print("|---|---|---:|---:|---:|---:|")
for model in ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"]:
    for name in ["sms_spam", "movie_reviews", "banking77", "tweeteval_sentiment", "walmart_amazon"]:
        c = json.load(open(f"{out}/{name}.json"))
        truth_col, task = c["dataset"]["label_column"], c["task_name"]
        for lever in ["none", "debiased"]:
            rows = list(csv.DictReader(open(f"{out}/{name}-{model}.{lever}.csv", newline="")))
            pairs = [(r[truth_col], r[f"{task}_task_label"]) for r in rows]
            acc = sum(t == p for t, p in pairs) / len(pairs)
            labels = sorted({t for t, _ in pairs} | {p for _, p in pairs if p})
            f1s = []
            for l in labels:
                tp = sum(t == l and p == l for t, p in pairs)
                fp = sum(t != l and p == l for t, p in pairs)
                fn = sum(t == l and p != l for t, p in pairs)
                f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
            top = collections.Counter(p for _, p in pairs).most_common(1)[0][1] / len(pairs)
            print(f"| {name} | {model.split('-')[0]} | {lever} | {acc:.3f} | {sum(f1s)/len(f1s):.3f} | {top:.2f} |")
PY
