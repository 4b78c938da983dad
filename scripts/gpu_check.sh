#!/usr/bin/env bash
# The GPU check, on a machine with a GPU, torch and transformers (no Rust, no network needed):
# first the CUDA kernels' tests (our fused kernels against the CPU ones, f32/f16/bf16); then the
# CUDA build from scripts/gpu_bundle.sh labels 200 SMS rows with random-weight checkpoints
# of real shapes (Qwen2.5-0.5B, a Llama-3.2-1B shape, FLAN-T5-large; add llama-7b with
# --shapes) and its label log-probabilities are compared with transformers' on the same GPU:
# f32 within 1e-3, bf16 as close to f32 as transformers' own bf16, batch 8 equal to batch 1;
# and rows/s on SMS, banking77 and movie reviews, f32 and bf16, batch 1/16/64, next to
# transformers (scripts/gpu_check.py says how).
# Results (results.md, results.json, log.txt) go to $OUT (default gpu-check-results).
# Meant to take under 8 minutes on one H100 with the default shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=target/gpu-bundle
OUT=${OUT:-gpu-check-results}
BIN=${BIN:-/tmp/autolabel-local-cuda}
[ -x "$BIN" ] || xz -dc "$BUNDLE/autolabel-local.xz" >"$BIN"
chmod +x "$BIN"
# The CUDA libraries the binary links (cudart, cublas, curand; libcuda comes with the driver):
# the system toolkit's, else the ones torch's NVIDIA wheels installed.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c 'import glob, os, nvidia; print(" ".join(sorted({os.path.dirname(p) for b in nvidia.__path__ for p in glob.glob(b + "/**/lib*.so*", recursive=True)})))' 2>/dev/null); do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done
export LD_LIBRARY_PATH
nvidia-smi -L || true
missing=$(ldd "$BIN" | grep "not found" || true)
if [ -n "$missing" ]; then
  echo "gpu_check: the CUDA libraries are not found:" >&2
  echo "$missing" >&2
  exit 1
fi
"$BIN" --version
mkdir -p "$OUT"
# The CUDA kernels against the CPU kernels (kernels/tests/cuda_ops.rs), failing without a GPU.
TESTS=${TESTS:-/tmp/autolabel-cuda-ops-tests}
[ -x "$TESTS" ] || xz -dc "$BUNDLE/cuda-ops-tests.xz" >"$TESTS"
chmod +x "$TESTS"
kernels=0
AUTOLABEL_REQUIRE_GPU=1 timeout 120 "$TESTS" --test-threads 1 2>&1 | tee "$OUT/cuda-ops-tests.txt" || kernels=1
rc=0
timeout "${GPU_CHECK_TIMEOUT:-420}" python3 scripts/gpu_check.py --bin "$BIN" \
  --data "$BUNDLE/sms.csv" --device cuda --out "$OUT" "$@" || rc=$?
[ "$kernels" = 0 ] || echo "gpu_check: the CUDA kernels' tests failed ($OUT/cuda-ops-tests.txt)" >&2
exit $((rc | kernels))
