//! Fused attention softmax: `softmax(scores * scale + mask)` over the last dimension in one pass,
//! with the mask broadcast over heads. Unfused, candle makes three passes over the scores
//! (scale, mask add, softmax), each allocating a tensor of the scores' size; at 512 tokens those
//! were 16% of a prefill.

use crate::contiguous_slice;
use crate::simd::masked_softmax_row;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, heads, q, k) = scores_layout.shape().dims4()?;
        let mask_dims = mask_layout.shape().dims3()?;
        if mask_dims != (b, q, k) {
            candle_core::bail!(
                "masked_softmax: mask {:?} does not fit scores {:?} (want [{b}, {q}, {k}])",
                mask_layout.shape(),
                scores_layout.shape()
            )
        }
        let scores = contiguous_slice::<f32>(scores, scores_layout, "masked_softmax")?;
        let mask = contiguous_slice::<f32>(mask, mask_layout, "masked_softmax")?;
        let mut out = vec![0f32; scores.len()];
        if k > 0 {
            // Row r of the scores is (batch, head, query) = (r / (heads*q), _, r % q).
            out.par_chunks_mut(k)
                .zip(scores.par_chunks(k))
                .enumerate()
                .with_min_len(16)
                .for_each(|(r, (o, s))| {
                    let (bi, qi) = (r / (heads * q), r % q);
                    let m = &mask[(bi * q + qi) * k..(bi * q + qi + 1) * k];
                    masked_softmax_row(s, m, self.scale, o);
                });
        }
        Ok((CpuStorage::F32(out), scores_layout.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        scores: &candle_core::CudaStorage,
        scores_layout: &Layout,
        mask: &candle_core::CudaStorage,
        mask_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::masked_softmax(scores, scores_layout, mask, mask_layout, self.scale)
    }
}

/// `softmax(scores * scale + mask)` over the last dimension, for scores `[b, heads, q, k]` and an
/// additive mask `[b, q, k]` (0 or -inf) shared by every head. A row whose keys are all masked
/// gives zeros. The fused kernel runs on CPU for f32 and on CUDA for f32, f16 and bf16 scores
/// (the mask in f32, the sums in f32); other devices and dtypes use the unfused expression.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f32) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 && mask.dtype() == DType::F32 {
        scores
            .contiguous()?
            .apply_op2_no_bwd(&mask.contiguous()?, &MaskedSoftmax { scale })
    } else if crate::fused_on_cuda(scores, &[]) {
        scores.contiguous()?.apply_op2_no_bwd(
            &mask.to_dtype(DType::F32)?.contiguous()?,
            &MaskedSoftmax { scale },
        )
    } else {
        masked_softmax_unfused(scores, mask, scale)
    }
}

/// The same from stock candle ops (fully masked rows give NaN here): the reference in tests and
/// the path on Metal.
pub fn masked_softmax_unfused(scores: &Tensor, mask: &Tensor, scale: f32) -> Result<Tensor> {
    let (b, _, q, k) = scores.dims4()?;
    let mask = mask.reshape((b, 1, q, k))?.to_dtype(scores.dtype())?;
    let x = (scores * scale as f64)?.broadcast_add(&mask)?;
    candle_nn::ops::softmax_last_dim(&x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn causal_mask(b: usize, q: usize, k: usize) -> Result<Tensor> {
        let data: Vec<f32> = (0..b * q * k)
            .map(|i| {
                let (qi, ki) = ((i / k) % q, i % k);
                if ki <= qi + (k - q) {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        Tensor::from_vec(data, (b, q, k), &Device::Cpu)
    }

    #[test]
    fn fused_matches_unfused() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, q, k) = (2, 3, 17, 40);
        let scores = Tensor::randn(0f32, 8.0, (b, h, q, k), &dev)?;
        let mask = causal_mask(b, q, k)?;
        let a = masked_softmax(&scores, &mask, 0.125)?;
        let e = masked_softmax_unfused(&scores, &mask, 0.125)?;
        let d = (&a - e)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "max difference {d}");
        let sums = a.sum_keepdim(3)?.flatten_all()?.to_vec1::<f32>()?;
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        // Keys past the causal limit get exactly zero weight.
        let first = a.i((1, 2, 0))?.to_vec1::<f32>()?;
        assert!(first[k - q + 1..].iter().all(|&v| v == 0.0));
        Ok(())
    }

    #[test]
    fn masked_keys_get_exactly_zero_and_empty_rows_zeros() -> Result<()> {
        let dev = Device::Cpu;
        let scores = Tensor::new(&[[[[3f32, 1.0, 2.0], [1.0, 1.0, 1.0]]]], &dev)?;
        let ninf = f32::NEG_INFINITY;
        let mask = Tensor::new(&[[[0f32, ninf, 0.0], [ninf, ninf, ninf]]], &dev)?;
        let p = masked_softmax(&scores, &mask, 1.0)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(p[1], 0.0);
        assert!((p[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
        assert_eq!(&p[3..], &[0.0, 0.0, 0.0]);
        Ok(())
    }

    #[test]
    fn mask_shape_is_checked() {
        let dev = Device::Cpu;
        let scores = Tensor::zeros((1, 2, 3, 4), DType::F32, &dev).unwrap();
        let mask = Tensor::zeros((1, 4, 3), DType::F32, &dev).unwrap();
        let err = masked_softmax(&scores, &mask, 1.0).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
