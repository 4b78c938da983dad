//! Fused log-softmax + gather: `out[e] = logits[r_e, c_e] - logsumexp(logits[r_e, :])`.

use crate::contiguous_slice;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

struct LogSoftmaxGather;

impl CustomOp2 for LogSoftmaxGather {
    fn name(&self) -> &'static str {
        "log-softmax-gather"
    }

    fn cpu_fwd(
        &self,
        logits: &CpuStorage,
        logits_layout: &Layout,
        pairs: &CpuStorage,
        pairs_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = logits_layout.shape().dims2()?;
        let (n_pairs, two) = pairs_layout.shape().dims2()?;
        if two != 2 {
            candle_core::bail!(
                "log_softmax_gather: pairs must be [n, 2], got {:?}",
                pairs_layout.shape()
            )
        }
        let logits = contiguous_slice::<f32>(logits, logits_layout, "log_softmax_gather")?;
        let pairs = contiguous_slice::<u32>(pairs, pairs_layout, "log_softmax_gather")?;
        for pair in pairs.chunks_exact(2) {
            if pair[0] as usize >= rows || pair[1] as usize >= vocab {
                candle_core::bail!(
                    "log_softmax_gather: pair ({}, {}) out of range for logits [{rows}, {vocab}]",
                    pair[0],
                    pair[1]
                )
            }
        }
        let lse: Vec<f32> = logits
            .par_chunks_exact(vocab)
            .map(|row| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
                max + sum.ln()
            })
            .collect();
        let out: Vec<f32> = pairs
            .chunks_exact(2)
            .map(|p| {
                let (r, c) = (p[0] as usize, p[1] as usize);
                logits[r * vocab + c] - lse[r]
            })
            .collect();
        debug_assert_eq!(out.len(), n_pairs);
        Ok((CpuStorage::F32(out), Shape::from(n_pairs)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        logits: &candle_core::CudaStorage,
        logits_layout: &Layout,
        pairs: &candle_core::CudaStorage,
        pairs_layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::log_softmax_gather(logits, logits_layout, pairs, pairs_layout)
    }
}

/// For logits `[rows, vocab]` (f32) and pairs `[n, 2]` (u32: row, token) returns `[n]` log
/// probabilities. Runs the fused op on CPU (a pair out of range is an error) and on CUDA (where
/// it gives NaN: check pairs where they are built); Metal uses the unfused expression.
pub fn log_softmax_gather(logits: &Tensor, pairs: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let pairs = pairs.to_dtype(DType::U32)?.contiguous()?;
    if logits.device().is_cpu() || (crate::fused_on_cuda(&logits, &[]) && pairs.elem_count() > 0) {
        logits.apply_op2_no_bwd(&pairs, &LogSoftmaxGather)
    } else {
        log_softmax_gather_unfused(&logits, &pairs)
    }
}

/// The same result from stock candle ops (full log-softmax, then gather). Reference for tests and
/// the path for devices without a fused kernel.
pub fn log_softmax_gather_unfused(logits: &Tensor, pairs: &Tensor) -> Result<Tensor> {
    let logits = logits.to_dtype(DType::F32)?;
    let log_probs = log_softmax(&logits)?;
    let rows = pairs.narrow(1, 0, 1)?.squeeze(1)?.contiguous()?;
    let cols = pairs.narrow(1, 1, 1)?.contiguous()?;
    log_probs
        .index_select(&rows, 0)?
        .gather(&cols, 1)?
        .squeeze(1)
}

fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fused_matches_unfused() -> Result<()> {
        let dev = Device::Cpu;
        let logits = (Tensor::randn(0f32, 3.0, (7, 1000), &dev)? + 50.0)?;
        let pairs: Vec<u32> = vec![0, 5, 3, 999, 6, 0, 0, 5, 2, 123, 6, 999];
        let pairs = Tensor::from_vec(pairs, (6, 2), &dev)?;
        let fused = log_softmax_gather(&logits, &pairs)?.to_vec1::<f32>()?;
        let unfused = log_softmax_gather_unfused(&logits, &pairs)?.to_vec1::<f32>()?;
        assert_eq!(fused.len(), 6);
        for (a, b) in fused.iter().zip(&unfused) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            assert!(*a <= 0.0);
        }
        assert_eq!(fused[0], fused[3], "same pair, same value");
        Ok(())
    }

    #[test]
    fn probabilities_of_a_row_sum_to_one() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::randn(0f32, 5.0, (2, 50), &dev)?;
        let pairs: Vec<u32> = (0..50u32).flat_map(|c| [1, c]).collect();
        let pairs = Tensor::from_vec(pairs, (50, 2), &dev)?;
        let lp = log_softmax_gather(&logits, &pairs)?.to_vec1::<f32>()?;
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        Ok(())
    }

    #[test]
    fn out_of_range_pair_is_an_error() -> Result<()> {
        let dev = Device::Cpu;
        let logits = Tensor::zeros((2, 4), DType::F32, &dev)?;
        let pairs = Tensor::from_vec(vec![2u32, 0], (1, 2), &dev)?;
        let err = log_softmax_gather(&logits, &pairs).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
        Ok(())
    }
}
