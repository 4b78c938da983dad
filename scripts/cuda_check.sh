#!/usr/bin/env bash
# Compile-checks the CUDA build (`cargo check --release --features cuda`) on a machine with no
# GPU and no CUDA install. nvcc, its cicc (nvvm), the CUDA runtime headers, the crt headers and
# CCCL come from NVIDIA's PyPI wheels, downloaded once with pinned sha256s and unpacked under
# ~/.cache/autolabel-local/cuda-toolkit ($AUTOLABEL_CUDA_TOOLKIT puts it elsewhere).
# candle-kernels compiles its .cu files to PTX with that nvcc, so a broken kernel or broken Rust
# CUDA code fails the check. About 8 minutes on 2 cores the first time; target/cuda-check is
# kept for the next run.
#
# cudarc 0.19 knows CUDA up to 13.4 and refuses 13.5 by name: CUDARC_CUDA_VERSION=13040 makes it
# use the 13.4 bindings, which the 13.5 headers serve. CUDA_COMPUTE_CAP (default 90, an H100)
# picks the PTX target.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${AUTOLABEL_LOCAL_CACHE:-$HOME/.cache/autolabel-local}
DIR=${AUTOLABEL_CUDA_TOOLKIT:-$CACHE/cuda-toolkit}
CUDA="$DIR/nvidia/cu13"

if [ ! -x "$CUDA/bin/nvcc" ] || [ ! -f "$DIR/.complete" ]; then
  echo "cuda_check: fetching nvcc and the CUDA headers from PyPI into $DIR" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cat > "$tmp/requirements.txt" <<'EOF'
nvidia-cuda-nvcc==13.5.37 --hash=sha256:f5c4f7ead5d964fb4af42bbf1e6d3ec3c1e6e9d83b53749f691d387e7fcaa3a7
nvidia-nvvm==13.5.37 --hash=sha256:c41bfa362e407405163f103c2229f0765f8cc2ed7d148b754dc77f228bf7e070
nvidia-cuda-runtime==13.5.37 --hash=sha256:df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d
nvidia-cuda-crt==13.5.37 --hash=sha256:e898b7f73d3035fa89915a3f7bf3b54a73e90249746111aed295822c4729bb29
nvidia-cuda-cccl==13.3.5.0.6 --hash=sha256:d5230098fa2df5021e1a00c0c4eee41797671a91119d31e892463e5ccf3ee326
EOF
  python3 -m pip download --no-deps --disable-pip-version-check -q --require-hashes \
    -r "$tmp/requirements.txt" -d "$tmp/wheels"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  for w in "$tmp"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$DIR"
  done
  # zip keeps no file modes: the tools must be executable.
  chmod +x "$CUDA"/bin/* "$CUDA"/nvvm/bin/* 2>/dev/null || true
  touch "$DIR/.complete"
fi

export CUDA_ROOT="$CUDA"
export CUDA_PATH="$CUDA"
export PATH="$CUDA/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13040}
nvcc --version | tail -1 >&2
"${CARGO:-cargo}" check --release --features cuda --target-dir target/cuda-check "$@"
echo "cuda_check: the CUDA build compiles (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP)" >&2
