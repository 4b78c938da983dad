#!/usr/bin/env bash
# The long kill test: label N rows (default 2000) of sms_spam with the default model, kill -9 the
# run at K (default 20) random moments, rerun it each time, and compare the final output with an
# uninterrupted run byte for byte.
# Usage: scripts/kill_test.sh [rows] [kills]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
K=${2:-20}
cargo build --release --quiet
BIN=${BIN:-target/release/autolabel-local}  # BIN=... tests another build (e.g. a copy, while target/ is rebuilt)
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
ARGS=(run --config examples/sms_spam/config.json --data ../shared/data/sms_spam/SMSSpamCollection.tsv --max-items "$N")
start=$(date +%s.%N)
"$BIN" "${ARGS[@]}" --out "$DIR/reference.csv" >/dev/null 2>&1
full=$(echo "$(date +%s.%N) - $start" | bc)
echo "uninterrupted run: $full s"
journaled=0
for i in $(seq 1 "$K"); do
  "$BIN" "${ARGS[@]}" --out "$DIR/killed.csv" >/dev/null 2>&1 &
  pid=$!
  # A random moment within the time the remaining rows would take (at least 1 s).
  wait_s=$(python3 -c "import random; print(round(1 + random.random() * $full / $K * 2, 2))")
  sleep "$wait_s"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  done_rows=$("$BIN" status --out "$DIR/killed.csv" 2>/dev/null | sed -n 's/ *\([0-9]*\) of.*/\1/p' | head -1)
  echo "kill $i after $wait_s s: $done_rows rows in the journal"
  [ "${done_rows:-0}" -gt 0 ] && journaled=1
  [ -f "$DIR/killed.csv" ] && break
done
"$BIN" "${ARGS[@]}" --out "$DIR/killed.csv" >/dev/null 2>&1 || true
if [ "$journaled" = 0 ] && [ "$i" -gt 1 ]; then
  echo "FAIL: no kill found rows in the journal: the resumed runs did not use it"; exit 1
fi
if cmp -s "$DIR/reference.csv" "$DIR/killed.csv"; then
  echo "PASS: the output after $i interruptions equals the uninterrupted output ($(($(wc -l < "$DIR/reference.csv") - 1)) rows)"
else
  echo "FAIL: outputs differ"; diff <(head -c 2000 "$DIR/reference.csv") <(head -c 2000 "$DIR/killed.csv") || true; exit 1
fi
