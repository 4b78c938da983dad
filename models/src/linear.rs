//! Matmul weights as any architecture holds them: quantized (GGUF blocks) or dense in f32, f16 or
//! bf16. Activations stay f32 between layers; a dense weight in a narrower type gets its input
//! cast for the matmul and its output cast back, so norms and softmax always run in f32.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Module, Result, Tensor};

pub enum MatWeight {
    /// GGUF weights as candle's quantized matmul holds them (quantized, or expanded to f32/f16).
    Q(QMatMul),
    /// `[out, in]` in the weight's own dtype.
    Dense(Tensor),
}

impl MatWeight {
    /// `x` is `[n, in]` (f32); returns `[n, out]` in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            MatWeight::Q(q) => q.forward(x)?.to_dtype(DType::F32),
            MatWeight::Dense(w) if w.dtype() == x.dtype() => x.matmul(&w.t()?),
            MatWeight::Dense(w) => x.to_dtype(w.dtype())?.matmul(&w.t()?)?.to_dtype(DType::F32),
        }
    }
}

/// A linear layer with an optional bias (kept in f32).
pub struct Linear {
    pub weight: MatWeight,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: MatWeight, bias: Option<Tensor>) -> Self {
        Linear { weight, bias }
    }

    /// `x` is `[n, in]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}
