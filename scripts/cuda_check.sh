#!/usr/bin/env bash
# Compile-checks the CUDA build (`cargo check --release --features cuda`) on a machine with no
# GPU and no CUDA install. nvcc, its cicc (nvvm), the CUDA runtime headers, the crt headers and
# CCCL come from NVIDIA's PyPI wheels, downloaded once with pinned sha256s and unpacked under
# ~/.cache/autolabel-local/cuda-toolkit ($AUTOLABEL_CUDA_TOOLKIT puts it elsewhere).
# candle-kernels and our kernels crate compile their .cu files to PTX with that nvcc, so a broken
# kernel or broken Rust CUDA code fails the check. About 8 minutes on 2 cores the first time; target/cuda-check is
# kept for the next run.
#
# cudarc 0.19 knows CUDA up to 13.4 and refuses 13.5 by name: CUDARC_CUDA_VERSION=13040 makes it
# use the 13.4 bindings, which the 13.5 headers serve. CUDA_COMPUTE_CAP (default 90, an H100)
# picks the PTX target.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/cuda_env.sh
nvcc --version | tail -1 >&2
# --tests: also the CUDA kernels' tests (kernels/tests/cuda_ops.rs), which the GPU check runs;
# one invocation, so candle is checked once, with one feature set.
"${CARGO:-cargo}" check --release --features cuda --target-dir target/cuda-check \
  --workspace --lib --bins --tests "$@"
echo "cuda_check: the CUDA build compiles (nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute capability $CUDA_COMPUTE_CAP)" >&2
