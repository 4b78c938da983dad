#!/usr/bin/env bash
# Fuzz the config parser and the dataset reader for a bounded time each (default 120 s).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Usage: scripts/fuzz.sh [seconds per target]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-120}
for target in config dataset; do
  echo "=== fuzzing $target for $SECS s ==="
  # Work on a copy of the committed seed corpus so runs do not grow the repository.
  work=$(mktemp -d)
  cp corpus/$target/* "$work"/
  cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$SECS" -max_len=4096 2>&1 | tail -5
  rm -rf "$work"
done
