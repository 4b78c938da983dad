//! `x · wᵀ` for a few activation rows (`x`: `[m, k]` with m <= [`MAX_ROWS`], `w`: `[n, k]` as the
//! weights are stored): the shape of every step of generation. A general GEMM packs the whole
//! weight matrix for each call and runs at 14-24 GFLOP/s here for m = 8 (`mm_bench` example: 40-62 with this kernel); this kernel streams each
//! weight row once from memory and multiplies it with every activation row while it is in L1,
//! weight rows in parallel.

use crate::contiguous_slice;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Most activation rows the kernel takes (more rows are a GEMM's job).
pub const MAX_ROWS: usize = 12;
/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 32;
/// Activation rows multiplied per pass over a weight row (accumulators held in registers).
const GROUP: usize = 4;

/// `out[j * m + r] = dot(w_row_j, x_row_r)` for weight rows `j` of one task.
#[inline(always)]
fn rows_impl(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
    let full = k / 8 * 8;
    for (wr, o) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        let mut r0 = 0;
        while r0 < m {
            let g = (m - r0).min(GROUP);
            let mut acc = [[0f32; 8]; GROUP];
            let mut i = 0;
            while i < full {
                let wv = &wr[i..i + 8];
                for (r, a) in acc.iter_mut().enumerate().take(g) {
                    let xv = &x[(r0 + r) * k + i..(r0 + r) * k + i + 8];
                    for l in 0..8 {
                        a[l] += wv[l] * xv[l];
                    }
                }
                i += 8;
            }
            for r in 0..g {
                let xr = &x[(r0 + r) * k..(r0 + r + 1) * k];
                let mut s: f32 = acc[r].iter().sum();
                for t in full..k {
                    s += wr[t] * xr[t];
                }
                o[r0 + r] = s;
            }
            r0 += g;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_hadd_ps(s, s);
        let s = _mm_hadd_ps(s, s);
        _mm_cvtss_f32(s)
    }
    let full = k / 8 * 8;
    let xp = x.as_ptr();
    for (wr, o) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        let wp = wr.as_ptr();
        let mut r0 = 0;
        while r0 < m {
            let g = (m - r0).min(GROUP);
            let x0 = xp.add(r0 * k);
            let x1 = xp.add((r0 + 1.min(g - 1)) * k);
            let x2 = xp.add((r0 + 2.min(g - 1)) * k);
            let x3 = xp.add((r0 + 3.min(g - 1)) * k);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut i = 0;
            while i < full {
                let wv = _mm256_loadu_ps(wp.add(i));
                a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0.add(i)), a0);
                a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1.add(i)), a1);
                a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2.add(i)), a2);
                a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3.add(i)), a3);
                i += 8;
            }
            let sums = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
            for r in 0..g {
                let xr = &x[(r0 + r) * k..(r0 + r + 1) * k];
                let mut s = sums[r];
                for t in full..k {
                    s += wr[t] * xr[t];
                }
                o[r0 + r] = s;
            }
            r0 += g;
        }
    }
}

fn rows(x: &[f32], m: usize, k: usize, w: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { rows_avx2(x, m, k, w, out) };
    }
    rows_impl(x, m, k, w, out)
}

struct SkinnyMatmul;

impl CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (n, k2) = w_layout.shape().dims2()?;
        if k != k2 || m > MAX_ROWS {
            candle_core::bail!(
                "skinny_matmul: x {:?} and w {:?} do not fit",
                x_layout.shape(),
                w_layout.shape()
            )
        }
        let x = contiguous_slice::<f32>(x, x_layout, "skinny_matmul")?;
        let w = contiguous_slice::<f32>(w, w_layout, "skinny_matmul")?;
        // Weight rows in parallel, each task writing its `[rows, m]` block; transposed at the end.
        let mut out_t = vec![0f32; n * m];
        out_t
            .par_chunks_mut(ROWS_PER_TASK * m)
            .zip(w.par_chunks(ROWS_PER_TASK * k))
            .for_each(|(o, wc)| rows(x, m, k, wc, o));
        let mut out = vec![0f32; m * n];
        for j in 0..n {
            for r in 0..m {
                out[r * n + j] = out_t[j * m + r];
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

/// `x · wᵀ` for `x` `[m, k]` and `w` `[n, k]` (f32); the kernel on CPU when m <= [`MAX_ROWS`],
/// candle's matmul otherwise.
pub fn skinny_matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let m = x.dim(0)?;
    if x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && m <= MAX_ROWS
        && x.rank() == 2
    {
        x.contiguous()?
            .apply_op2_no_bwd(&w.contiguous()?, &SkinnyMatmul)
    } else {
        x.matmul(&w.t()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_matmul_for_every_row_count_and_ragged_widths() -> Result<()> {
        let dev = Device::Cpu;
        for (m, k, n) in [
            (1, 576, 100),
            (3, 37, 65),
            (8, 64, 33),
            (12, 1001, 7),
            (5, 8, 1),
        ] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
            let a = skinny_matmul_t(&x, &w)?.flatten_all()?.to_vec1::<f32>()?;
            let b = x.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                    "m={m} k={k} n={n}: {p} vs {q}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn portable_rows_match_the_simd_rows() {
        let (m, k, n) = (7, 75, 9);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0)
            .collect();
        let (mut a, mut b) = (vec![0f32; n * m], vec![0f32; n * m]);
        rows_impl(&x, m, k, &w, &mut a);
        rows(&x, m, k, &w, &mut b);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }
}
