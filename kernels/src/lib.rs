//! Custom candle ops used by label scoring, each with the stock-candle expression it replaces
//! (the path on devices without a fused kernel, and the reference in tests). The attention
//! softmax, SwiGLU and log-softmax + gather also have CUDA kernels (`src/cuda/ops.cu`, built
//! to PTX with `--features cuda`); RMS norm on a GPU is candle-nn's fused kernel.
//!
//! - [`log_softmax_gather`]: for a handful of (row, token) pairs, `log_softmax(logits[row])[token]`
//!   from one log-sum-exp per row, without materialising a second `[rows, vocab]` tensor.
//! - [`masked_softmax`]: attention weights `softmax(scores * scale + mask)` in one pass.
//! - [`attention_cpu`]: the whole attention (shared prefix, causal blocks, grouped heads) in
//!   one parallel pass with no copies.
//! - [`silu_mul`]: SwiGLU gating `silu(gate) * up` in one pass.
//! - [`rms_norm`]: RMS norm with rows in parallel.
//! - [`skinny_matmul_t`]: `x · wᵀ` for the few activation rows of a generation step.
//! - [`BlockMatrix`]: matmul with GGUF block weights (Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q4_K/Q5_K/Q6_K)
//!   in 8-bit integer SIMD, AVX-512 VNNI, AVX-VNNI or AVX2 picked at run time.
//!
//! The CPU kernels use a vectorizable `exp` and SIMD row loops ([`simd`]) instead of libm and
//! scalar loops.

mod attention;
mod attention_pack;
mod attention_products;
#[cfg(feature = "cuda")]
mod cuda;
mod lanes;
mod log_softmax_gather;
mod masked_softmax;
mod quant;
mod rms_norm;
mod silu_mul;
pub mod simd;
mod skinny_matmul;
mod team;

pub use attention::attention_cpu;
pub use attention_pack::to_f16;
pub use log_softmax_gather::{log_softmax_gather, log_softmax_gather_unfused};
pub use masked_softmax::{masked_softmax, masked_softmax_unfused};
pub use quant::BlockMatrix;
pub use rms_norm::{rms_norm, rms_norm_unfused};
pub use silu_mul::{silu_mul, silu_mul_unfused};
pub use skinny_matmul::{skinny_matmul_t, MAX_ROWS as SKINNY_MAX_ROWS};

/// Whether the fused CUDA kernel takes `x` (and `others`, which must share its dtype): a
/// build with `--features cuda`, a CUDA tensor of f32, f16 or bf16, not empty.
pub(crate) fn fused_on_cuda(x: &candle_core::Tensor, others: &[&candle_core::Tensor]) -> bool {
    use candle_core::DType;
    cfg!(feature = "cuda")
        && x.device().is_cuda()
        && matches!(x.dtype(), DType::F32 | DType::F16 | DType::BF16)
        && x.elem_count() > 0
        && others.iter().all(|o| o.dtype() == x.dtype())
}

/// A buffer's address handed to parallel tasks that write disjoint parts of it (or only read
/// it); whoever builds one guarantees that and that the buffer outlives the tasks.
#[derive(Clone, Copy)]
pub(crate) struct TaskPtr(pub(crate) *mut f32);
// SAFETY: see the type's contract: disjoint writes, a buffer that outlives the tasks.
unsafe impl Send for TaskPtr {}
unsafe impl Sync for TaskPtr {}

impl TaskPtr {
    /// The address (a method, so that closures capture the whole `Send` value).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// The data of a contiguous CPU tensor as a slice, or an error naming the op.
pub(crate) fn contiguous_slice<'a, T: candle_core::WithDType>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: inputs must be contiguous")
    };
    Ok(&storage.as_slice::<T>()?[start..end])
}
