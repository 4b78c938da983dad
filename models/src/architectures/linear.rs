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
    /// GGUF block weights through our SIMD kernel (CPU with AVX2); shared with the embedding
    /// when the output head is tied to it.
    Blocks(std::sync::Arc<autolabel_kernels::BlockMatrix>),
}

impl MatWeight {
    /// `x` is `[n, in]` (f32); returns `[n, out]` in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            // Expanded f32 weights and a few activation rows (a generation step): one pass over
            // each weight row instead of a GEMM that repacks the whole matrix per call.
            MatWeight::Q(QMatMul::Tensor(w))
                if x.rank() == 2 && x.dim(0)? <= autolabel_kernels::SKINNY_MAX_ROWS =>
            {
                autolabel_kernels::skinny_matmul_t(x, w)
            }
            MatWeight::Q(q) => q.forward(x)?.to_dtype(DType::F32),
            MatWeight::Blocks(w) => w.matmul_t(x),
            MatWeight::Dense(w) if w.dtype() == x.dtype() => {
                autolabel_kernels::skinny_matmul_t(x, w)
            }
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

/// Several linear maps of the same input (q, k and v). Dense weights of one dtype are
/// fused into one matmul at load: one wide GEMM runs closer to the CPU's peak than three narrow
/// ones (k and v are only 192 wide in SmolLM2). Quantized weights stay separate.
pub enum Projections {
    Fused { linear: Linear, widths: Vec<usize> },
    Separate(Vec<Linear>),
}

impl Projections {
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        // Fusable: every weight held densely the same way (same variant, same dtype).
        let dense = |w: &MatWeight| match w {
            MatWeight::Dense(t) => Some((0, t.clone())),
            MatWeight::Q(QMatMul::Tensor(t)) => Some((1, t.clone())),
            MatWeight::Q(QMatMul::TensorF16(t)) => Some((2, t.clone())),
            MatWeight::Q(QMatMul::QTensor(_)) | MatWeight::Blocks(_) => None,
        };
        let Some(held) = parts
            .iter()
            .map(|p| dense(&p.weight))
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(Projections::Separate(parts));
        };
        let (variant, first) = &held[0];
        if parts.len() < 2
            || held
                .iter()
                .any(|(v, t)| v != variant || t.dtype() != first.dtype())
        {
            return Ok(Projections::Separate(parts));
        }
        let ws: Vec<Tensor> = held.iter().map(|(_, t)| t.clone()).collect();
        let widths: Vec<usize> = ws.iter().map(|w| w.dim(0)).collect::<Result<_>>()?;
        let w = Tensor::cat(&ws, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_none()) {
            None
        } else {
            let bs: Vec<Tensor> = parts
                .iter()
                .zip(&widths)
                .map(|(p, &n)| match &p.bias {
                    Some(b) => Ok(b.clone()),
                    None => Tensor::zeros(n, DType::F32, w.device()),
                })
                .collect::<Result<_>>()?;
            Some(Tensor::cat(&bs, 0)?)
        };
        let weight = match variant {
            0 => MatWeight::Dense(w),
            1 => MatWeight::Q(QMatMul::Tensor(w)),
            _ => MatWeight::Q(QMatMul::TensorF16(w)),
        };
        Ok(Projections::Fused {
            linear: Linear::new(weight, bias),
            widths,
        })
    }

    /// `x` is `[n, in]`; one `[n, out_i]` per map, in order.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Projections::Separate(parts) => forward_shared(&parts.iter().collect::<Vec<_>>(), x),
            Projections::Fused { linear, widths } => {
                let y = linear.forward(x)?;
                let mut offset = 0;
                widths
                    .iter()
                    .map(|&n| {
                        let part = y.narrow(1, offset, n);
                        offset += n;
                        part
                    })
                    .collect()
            }
        }
    }
}

/// Several linear maps of the same input `x` (`[n, in]`): block weights in one pass of our
/// kernel (activations quantized once), anything else one map at a time.
pub fn forward_shared(parts: &[&Linear], x: &Tensor) -> Result<Vec<Tensor>> {
    let blocks: Option<Vec<&autolabel_kernels::BlockMatrix>> = parts
        .iter()
        .map(|p| match &p.weight {
            MatWeight::Blocks(b) => Some(b.as_ref()),
            _ => None,
        })
        .collect();
    match blocks {
        Some(blocks) if blocks.len() > 1 => {
            let ys = autolabel_kernels::BlockMatrix::matmul_t_shared(&blocks, x)?;
            ys.into_iter()
                .zip(parts)
                .map(|(y, p)| match &p.bias {
                    Some(b) => y.broadcast_add(b),
                    None => Ok(y),
                })
                .collect()
        }
        _ => parts.iter().map(|p| p.forward(x)).collect(),
    }
}
