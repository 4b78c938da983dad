// CUDA kernels of the fused ops (kernels/src/*.rs hold the CPU versions and the stock-candle
// expressions they replace). Compiled to PTX by kernels/build.rs with `--features cuda`;
// launched from kernels/src/cuda.rs. Every kernel computes in f32 whatever the storage type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Block-wide reduction with `op` (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `buf` is 32 floats of shared memory, free again when the function returns.
template <typename Op>
__device__ float block_reduce(float v, float identity, float *buf, Op op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  v = lane < warps ? buf[lane] : identity;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  return v;
}

__device__ float block_max(float v, float *buf) { return block_reduce(v, -INFINITY, buf, Max()); }
__device__ float block_sum(float v, float *buf) { return block_reduce(v, 0.0f, buf, Sum()); }

// softmax(scores * scale + mask) over rows of k keys. scores and out: [b, heads, q, k]; mask:
// [b, q, k] f32 (0 or -inf), shared by the heads. One block per row. A row whose keys are all
// masked gives zeros (as the CPU kernel).
template <typename T>
__device__ void masked_softmax(const T *scores, const float *mask, T *out, int heads, int q,
                               int k, float scale) {
  __shared__ float buf[32];
  const size_t row = blockIdx.x;
  const size_t bi = row / ((size_t)heads * q), qi = row % q;
  const T *s = scores + row * k;
  const float *m = mask + (bi * q + qi) * k;
  T *o = out + row * k;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < k; j += blockDim.x) mx = fmaxf(mx, to_f32(s[j]) * scale + m[j]);
  mx = block_max(mx, buf);
  if (mx == -INFINITY) {  // the same value in every thread: a uniform branch
    for (int j = threadIdx.x; j < k; j += blockDim.x) o[j] = from_f32<T>(0.0f);
    return;
  }
  float sum = 0.0f;
  for (int j = threadIdx.x; j < k; j += blockDim.x) sum += expf(to_f32(s[j]) * scale + m[j] - mx);
  const float inv = 1.0f / block_sum(sum, buf);
  for (int j = threadIdx.x; j < k; j += blockDim.x)
    o[j] = from_f32<T>(expf(to_f32(s[j]) * scale + m[j] - mx) * inv);
}

// silu(gate) * up, element-wise over n values (grid-stride loop).
template <typename T>
__device__ void silu_mul(const T *gate, const T *up, T *out, size_t n) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)blockDim.x * gridDim.x) {
    const float g = to_f32(gate[i]);
    out[i] = from_f32<T>(g / (1.0f + expf(-g)) * to_f32(up[i]));
  }
}

#define INSTANCES(T, NAME)                                                                    \
  extern "C" __global__ void masked_softmax_##NAME(const T *scores, const float *mask, T *out, \
                                                   int heads, int q, int k, float scale) {     \
    masked_softmax<T>(scores, mask, out, heads, q, k, scale);                                 \
  }                                                                                           \
  extern "C" __global__ void silu_mul_##NAME(const T *gate, const T *up, T *out, size_t n) {  \
    silu_mul<T>(gate, up, out, n);                                                            \
  }

INSTANCES(float, f32)
INSTANCES(__half, f16)
INSTANCES(__nv_bfloat16, bf16)

// log-sum-exp of each row of logits [rows, vocab] into lse[rows]. One block per row.
extern "C" __global__ void row_logsumexp_f32(const float *logits, float *lse, int vocab) {
  __shared__ float buf[32];
  const float *x = logits + (size_t)blockIdx.x * vocab;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, x[j]);
  mx = block_max(mx, buf);
  float sum = 0.0f;
  for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(x[j] - mx);
  sum = block_sum(sum, buf);
  if (threadIdx.x == 0) lse[blockIdx.x] = mx + logf(sum);
}

// out[e] = logits[r, c] - lse[r] for pairs[e] = (r, c); a pair out of range gives NaN.
extern "C" __global__ void gather_logprobs_f32(const float *logits, const float *lse,
                                               const uint32_t *pairs, float *out, int n,
                                               int rows, int vocab) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n) return;
  const uint32_t r = pairs[2 * e], c = pairs[2 * e + 1];
  out[e] = (r < (uint32_t)rows && c < (uint32_t)vocab) ? logits[(size_t)r * vocab + c] - lse[r]
                                                       : __int_as_float(0x7fc00000);
}
