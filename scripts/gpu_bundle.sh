#!/usr/bin/env bash
# Builds, on this machine (no GPU needed), what scripts/gpu_check.sh needs on a GPU machine that
# has no Rust toolchain and no network: the CUDA build of autolabel-local and the CUDA kernels'
# test binary, stripped and xz-compressed (about 15 MB each; 70 MB unpacked, most of it candle's
# PTX), and a few hundred rows of SMS, banking77 and movie reviews, in target/gpu-bundle/ (carry
# it with the checkout). The CUDA toolchain comes from PyPI as for
# scripts/cuda_check.sh; CUDA_COMPUTE_CAP (default 90) picks the GPU.
#
# Linking needs libcuda, libcudart, libcublas and libcurand, which no PyPI wheel ships as a
# linkable library (libcuda comes with the driver): the binary is linked against stubs, as
# CUDA's own lib64/stubs are used, that define the symbols it calls under the real libraries'
# sonames; on the GPU machine the real libraries are loaded. The symbols are found by a first
# link that only warns about them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda_env.sh
STUBS=target/gpu-bundle/stubs
rm -rf "$STUBS"
mkdir -p "$STUBS"
# name, soname version, symbol pattern
LIBS="cuda:1:^cu[A-Z] cudart:13:^(cuda|__cuda) cublas:13:^cublas[^L] cublasLt:13:^cublasLt curand:10:^curand nvrtc:13:^nvrtc"
stub() { # stub libraries defining the symbols listed in $1 (empty: none)
  for spec in $LIBS; do
    IFS=: read -r name version pattern <<<"$spec"
    { grep -E "$pattern" "$1" || true; } | sed 's/.*/void &(void) {}/' >"$STUBS/$name.c"
    cc -shared -fPIC -o "$STUBS/lib$name.so" "$STUBS/$name.c" -Wl,-soname,"lib$name.so.$version"
  done
}
BIN=target/cuda-check/release/autolabel-local
build() { # the tool, and the CUDA kernels' tests (kernels/tests/cuda_ops.rs), whose path is kept
  cargo rustc --release --features cuda --target-dir target/cuda-check --bin autolabel-local -- \
    -L "native=$PWD/$STUBS" "$@"
  cargo rustc --release --features cuda --target-dir target/cuda-check -p autolabel-kernels \
    --test cuda_ops --message-format=json-render-diagnostics -- -L "native=$PWD/$STUBS" "$@" |
    python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("executable"): print(m["executable"])' >"$STUBS/tests.txt"
}
: >"$STUBS/none.txt"
stub "$STUBS/none.txt"
build -C link-arg=-Wl,--warn-unresolved-symbols 2>/dev/null
TESTS=$(cat "$STUBS/tests.txt")
nm -u "$BIN" "$TESTS" | awk '{print $2}' | grep -E '^(cu|nvrtc|__cuda)' | sort -u >"$STUBS/symbols.txt"
stub "$STUBS/symbols.txt"
build
TESTS=$(cat "$STUBS/tests.txt")
echo "gpu_bundle: linked against stubs for $(wc -l <"$STUBS/symbols.txt") CUDA symbols; needs: $(readelf -d "$BIN" | sed -n 's/.*NEEDED.*\[\(lib\(cu\|nvrtc\)[^]]*\)\]/\1/p' | tr '\n' ' ')" >&2
strip -o target/gpu-bundle/autolabel-local "$BIN"
strip -o target/gpu-bundle/cuda-ops-tests "$TESTS"
xz -T0 -6 -f target/gpu-bundle/autolabel-local target/gpu-bundle/cuda-ops-tests
python3 - <<'PY'
import csv
src = "../shared/data/sms_spam/SMSSpamCollection.tsv"
lines = open(src, encoding="utf-8").read().splitlines()[1:301]
with open("target/gpu-bundle/sms.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["Label", "SMS"])
    for l in lines:
        w.writerow(l.split("\t", 1))
# banking77 (77 labels) for the benchmark: every 15th test row, all intents represented.
rows = list(csv.reader(open("../shared/data/banking77/test.csv", encoding="utf-8")))
with open("target/gpu-bundle/banking77.csv", "w", newline="", encoding="utf-8") as f:
    csv.writer(f).writerows([rows[0]] + rows[1::15])
PY
rm -rf "$STUBS"
du -sh target/gpu-bundle
