//! The CUDA kernels (src/cuda/ops.cu) against the CPU kernels on the same inputs, in f32, f16
//! and bf16, with the shapes that exercise their edges: rows shorter than a warp, rows longer
//! than a block, fully masked rows, a vocabulary-sized log-sum-exp, a pair out of range.
//! Built with `--features cuda`; needs a GPU. Without one each test says so and passes, unless
//! AUTOLABEL_REQUIRE_GPU is set (scripts/gpu_check.sh sets it), where it fails.
#![cfg(feature = "cuda")]

use autolabel_kernels::{log_softmax_gather, masked_softmax, masked_softmax_unfused, silu_mul};
use candle_core::{DType, Device, Result, Tensor};

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) if std::env::var_os("AUTOLABEL_REQUIRE_GPU").is_some() => {
            panic!("AUTOLABEL_REQUIRE_GPU is set but no CUDA device opens: {e}")
        }
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// Largest |a - b| / (atol + rtol |b|) over the elements: <= 1 passes.
fn worst(a: &Tensor, b: &Tensor, atol: f32, rtol: f32) -> Result<f32> {
    let a = a.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let b = b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a.len(), b.len());
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| {
            assert!(x.is_finite() == y.is_finite(), "{x} vs {y}");
            if x.is_finite() {
                (x - y).abs() / (atol + rtol * y.abs())
            } else {
                0.0
            }
        })
        .fold(0.0, f32::max))
}

/// Tolerances per storage dtype: the kernels compute in f32 and round once.
fn tol(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F32 => (1e-6, 1e-5),
        DType::F16 => (1e-4, 2e-3),
        _ => (1e-3, 1.6e-2),
    }
}

/// `x` rounded to `dtype` on the GPU, and the same values in f32 on the CPU.
fn pair(x: &Tensor, dtype: DType, dev: &Device) -> Result<(Tensor, Tensor)> {
    let on_gpu = x.to_device(dev)?.to_dtype(dtype)?;
    let on_cpu = on_gpu.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    Ok((on_gpu, on_cpu))
}

#[test]
fn silu_mul_matches_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for shape in [(1usize, 7usize), (37, 4864), (3, 100_003)] {
            let g = Tensor::randn(0f32, 4.0, shape, &Device::Cpu)?;
            let u = Tensor::randn(0f32, 1.0, shape, &Device::Cpu)?;
            let ((g_d, g_c), (u_d, u_c)) = (pair(&g, dtype, &dev)?, pair(&u, dtype, &dev)?);
            let got = silu_mul(&g_d, &u_d)?;
            assert_eq!(got.dtype(), dtype);
            let want = silu_mul(&g_c, &u_c)?;
            let (atol, rtol) = tol(dtype);
            let w = worst(&got.to_device(&Device::Cpu)?, &want, atol, rtol)?;
            assert!(w <= 1.0, "silu_mul {dtype:?} {shape:?}: {w} x tolerance");
        }
    }
    Ok(())
}

fn causal_mask(b: usize, q: usize, k: usize, empty_row: bool) -> Result<Tensor> {
    let data: Vec<f32> = (0..b * q * k)
        .map(|i| {
            let (qi, ki) = ((i / k) % q, i % k);
            let masked = ki > qi + (k - q) || (empty_row && qi == 0);
            if masked {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(data, (b, q, k), &Device::Cpu)
}

#[test]
fn masked_softmax_matches_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        // (batch, heads, queries, keys): a generation step, a short prefill, keys past a block.
        for (b, h, q, k, empty) in [
            (8, 14, 1, 5, false),
            (2, 3, 17, 40, true),
            (1, 2, 9, 2500, false),
        ] {
            let scores = Tensor::randn(0f32, 8.0, (b, h, q, k), &Device::Cpu)?;
            let mask = causal_mask(b, q, k, empty)?;
            let (s_d, s_c) = pair(&scores, dtype, &dev)?;
            let got = masked_softmax(&s_d, &mask.to_device(&dev)?, 0.125)?;
            assert_eq!(got.dtype(), dtype);
            let want = masked_softmax(&s_c, &mask, 0.125)?;
            let (atol, rtol) = tol(dtype);
            let got = got.to_device(&Device::Cpu)?;
            let w = worst(&got, &want, atol, rtol)?;
            assert!(
                w <= 1.0,
                "masked_softmax {dtype:?} {:?}: {w} x tolerance",
                (b, h, q, k)
            );
            if empty {
                let first = got
                    .to_dtype(DType::F32)?
                    .narrow(2, 0, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                assert!(
                    first.iter().all(|&v| v == 0.0),
                    "a fully masked row gives zeros"
                );
            }
        }
    }
    // The mask may come in the scores' dtype; stock ops on the GPU agree.
    let scores = Tensor::randn(0f32, 3.0, (2, 4, 6, 30), &dev)?;
    let mask = causal_mask(2, 6, 30, false)?.to_device(&dev)?;
    let a = masked_softmax(&scores, &mask.to_dtype(DType::BF16)?, 0.5)?;
    let b = masked_softmax_unfused(&scores, &mask, 0.5)?;
    let w = worst(
        &a.to_device(&Device::Cpu)?,
        &b.to_device(&Device::Cpu)?,
        1e-6,
        1e-5,
    )?;
    assert!(w <= 1.0, "fused vs stock ops on the GPU: {w} x tolerance");
    Ok(())
}

#[test]
fn log_softmax_gather_matches_cpu() -> Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let (rows, vocab) = (6, 151_936);
    let logits = (Tensor::randn(0f32, 3.0, (rows, vocab), &Device::Cpu)? + 20.0)?;
    let mut pairs: Vec<u32> = Vec::new();
    for (i, r) in [0u32, 5, 3, 0, 2, 5].iter().enumerate() {
        pairs.extend([*r, (i as u32 * 40_503) % vocab as u32]);
    }
    pairs.extend([5, vocab as u32 - 1]);
    let n = pairs.len() / 2;
    let pairs_c = Tensor::from_vec(pairs.clone(), (n, 2), &Device::Cpu)?;
    let want = log_softmax_gather(&logits, &pairs_c)?;
    for dtype in [DType::F32, DType::BF16] {
        // Logits of any dtype are read as f32.
        let (l_d, l_c) = pair(&logits, dtype, &dev)?;
        let want = if dtype == DType::F32 {
            want.clone()
        } else {
            log_softmax_gather(&l_c, &pairs_c)?
        };
        let got = log_softmax_gather(&l_d, &pairs_c.to_device(&dev)?)?.to_device(&Device::Cpu)?;
        let w = worst(&got, &want, 1e-4, 1e-5)?;
        assert!(w <= 1.0, "log_softmax_gather {dtype:?}: {w} x tolerance");
    }
    // Out of range: NaN on the GPU (the CPU op refuses; callers check where pairs are built).
    let bad = Tensor::from_vec(vec![0u32, vocab as u32], (1, 2), &dev)?;
    let got = log_softmax_gather(&logits.to_device(&dev)?, &bad)?.to_vec1::<f32>()?;
    assert!(got[0].is_nan(), "{got:?}");
    Ok(())
}
