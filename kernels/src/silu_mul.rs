//! Fused SwiGLU gating: `silu(gate) * up` in one pass (candle makes two, each allocating a tensor
//! of the feed-forward width, and calls libm's `exp` per element).

use crate::contiguous_slice;
use crate::simd::silu_mul as silu_mul_slice;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

/// Elements per parallel task.
const CHUNK: usize = 4096;

struct SiluMul;

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gate_layout: &Layout,
        up: &CpuStorage,
        up_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if gate_layout.shape() != up_layout.shape() {
            candle_core::bail!(
                "silu_mul: shapes differ: {:?} and {:?}",
                gate_layout.shape(),
                up_layout.shape()
            )
        }
        let gate = contiguous_slice::<f32>(gate, gate_layout, "silu_mul")?;
        let up = contiguous_slice::<f32>(up, up_layout, "silu_mul")?;
        let mut out = vec![0f32; gate.len()];
        crate::team::for_each_chunk(&mut out, CHUNK, |i, o| {
            let at = i * CHUNK..i * CHUNK + o.len();
            silu_mul_slice(&gate[at.clone()], &up[at], o)
        });
        Ok((CpuStorage::F32(out), gate_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gate: &candle_core::CudaStorage,
        gate_layout: &Layout,
        up: &candle_core::CudaStorage,
        up_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::silu_mul(gate, gate_layout, up, up_layout)
    }
}

/// `silu(gate) * up`; the fused kernel on CPU for f32 and on CUDA for f32, f16 and bf16 (one
/// rounding to the storage type, where stock ops round twice), stock candle ops elsewhere.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let cpu = gate.device().is_cpu() && gate.dtype() == DType::F32 && up.dtype() == DType::F32;
    if cpu || crate::fused_on_cuda(gate, &[up]) {
        gate.contiguous()?
            .apply_op2_no_bwd(&up.contiguous()?, &SiluMul)
    } else {
        silu_mul_unfused(gate, up)
    }
}

/// The same from stock candle ops.
pub fn silu_mul_unfused(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    candle_nn::ops::silu(gate)? * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_matches_unfused() -> Result<()> {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 4.0, (37, 1001), &dev)?;
        let u = Tensor::randn(0f32, 1.0, (37, 1001), &dev)?;
        let a = silu_mul(&g, &u)?.flatten_all()?.to_vec1::<f32>()?;
        let b = silu_mul_unfused(&g, &u)?.flatten_all()?.to_vec1::<f32>()?;
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + y.abs()), "{x} vs {y}");
        }
        Ok(())
    }

    #[test]
    fn strided_inputs_and_shape_errors() -> Result<()> {
        let dev = Device::Cpu;
        let g = Tensor::randn(0f32, 1.0, (8, 6), &dev)?;
        let u = Tensor::randn(0f32, 1.0, (6, 8), &dev)?;
        let a = silu_mul(&g.t()?, &u)?;
        let b = silu_mul_unfused(&g.t()?, &u)?;
        let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{d}");
        let err = silu_mul(&g, &u).unwrap_err().to_string();
        assert!(err.contains("shapes differ"), "{err}");
        Ok(())
    }
}
