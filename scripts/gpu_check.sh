#!/usr/bin/env bash
# The GPU check, on a machine with a GPU, torch and transformers (no Rust, no network needed):
# the CUDA build from scripts/gpu_bundle.sh labels 200 SMS rows with random-weight checkpoints
# of real shapes (Qwen2.5-0.5B, a Llama-3.2-1B shape, FLAN-T5-large; add llama-7b with
# --shapes) and its label log-probabilities are compared with transformers' on the same GPU:
# f32 within 1e-3, bf16 as close to f32 as transformers' own bf16, batch 8 equal to batch 1.
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
timeout "${GPU_CHECK_TIMEOUT:-450}" python3 scripts/gpu_check.py --bin "$BIN" \
  --data "$BUNDLE/sms.csv" --device cuda --out "$OUT" "$@"
