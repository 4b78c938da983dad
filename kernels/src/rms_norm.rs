//! RMS norm `x / sqrt(mean(x^2) + eps) * weight` over the last dimension, rows in parallel and
//! each row in SIMD (candle's CPU op runs rows one after another on one thread: 0.7 ms per norm
//! of 512 x 576 here, two per layer).

use crate::contiguous_slice;
use crate::simd::rms_norm_row;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = x_layout.shape().dims().last().copied().unwrap_or(0);
        if w_layout.shape().dims() != [d] {
            candle_core::bail!(
                "rms_norm: weight {:?} does not fit rows of {d}",
                w_layout.shape()
            )
        }
        let x = contiguous_slice::<f32>(x, x_layout, "rms_norm")?;
        let w = contiguous_slice::<f32>(w, w_layout, "rms_norm")?;
        let mut out = vec![0f32; x.len()];
        if d > 0 {
            // Eight rows a task.
            crate::team::for_each_chunk(&mut out, 8 * d, |i, o| {
                for (o, row) in o.chunks_mut(d).zip(x[i * 8 * d..].chunks(d)) {
                    rms_norm_row(row, w, self.eps, o)
                }
            });
        }
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }
}

/// RMS norm of `x` (`[.., d]`) with `weight` (`[d]`): our fused kernel on CPU for f32; on a GPU
/// candle-nn's fused one (one CUDA / Metal kernel, the same maths: the tests compare it with
/// ours on CPU); stock candle ops for other CPU dtypes.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32 {
        x.contiguous()?
            .apply_op2_no_bwd(&weight.contiguous()?, &RmsNorm { eps })
    } else if !x.device().is_cpu() {
        candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &weight.to_dtype(x.dtype())?.contiguous()?,
            eps,
        )
    } else {
        rms_norm_unfused(x, weight, eps)
    }
}

/// The same from stock candle ops.
pub fn rms_norm_unfused(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps as f64)?.sqrt()?)?
        .broadcast_mul(weight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_matches_unfused_and_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 37, 577), &dev)?;
        let w = Tensor::randn(1f32, 0.2, 577, &dev)?;
        let a = rms_norm(&x, &w, 1e-5)?;
        for b in [
            rms_norm_unfused(&x, &w, 1e-5)?,
            candle_nn::ops::rms_norm(&x, &w, 1e-5)?,
        ] {
            let d = (&a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-5, "max difference {d}");
        }
        Ok(())
    }

    #[test]
    fn weight_shape_is_checked() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros(5, DType::F32, &dev).unwrap();
        let err = rms_norm(&x, &w, 1e-5).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
