#!/usr/bin/env bash
# Sourced by cuda_check.sh and gpu_bundle.sh: puts nvcc and the CUDA headers from NVIDIA's PyPI
# wheels (fetched once, sha256-pinned) on the PATH and sets what candle's and cudarc's build
# scripts read. No GPU and no CUDA install needed.
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
