//! Custom candle ops used by label scoring, each with the stock-candle expression it replaces
//! (the path on devices without a fused kernel, and the reference in tests).
//!
//! - [`log_softmax_gather`]: for a handful of (row, token) pairs, `log_softmax(logits[row])[token]`
//!   from one log-sum-exp per row, without materialising a second `[rows, vocab]` tensor.
//! - [`masked_softmax`]: attention weights `softmax(scores * scale + mask)` in one pass.
//! - [`silu_mul`]: SwiGLU gating `silu(gate) * up` in one pass.
//! - [`rms_norm`]: RMS norm with rows in parallel.
//! - [`Q41Matrix`]: matmul with GGUF Q4_1 weights in 8-bit integer SIMD (candle's has none).
//!
//! The CPU kernels use a vectorizable `exp` ([`fast_exp`]) instead of libm's.

pub mod fast_exp;
mod log_softmax_gather;
mod masked_softmax;
mod q4_1_matmul;
mod rms_norm;
mod silu_mul;

pub use log_softmax_gather::{log_softmax_gather, log_softmax_gather_unfused};
pub use masked_softmax::{masked_softmax, masked_softmax_unfused};
pub use q4_1_matmul::Q41Matrix;
pub use rms_norm::{rms_norm, rms_norm_unfused};
pub use silu_mul::{silu_mul, silu_mul_unfused};
