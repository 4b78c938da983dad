//! Matmul with GGUF Q4_1 weights, the llama.cpp way: activations are quantized per block of 32 to
//! 8 bits (Q8_1: a scale and the block's sum), and each weight block (a scale `d`, a minimum `m`
//! and 32 4-bit values) meets them in integer multiply-adds:
//! `sum_i (d_w w_i + m_w) * d_x q_i = d_w d_x sum_i w_i q_i + m_w d_x sum_i q_i`.
//! candle 0.11 has no SIMD path for Q4_1 (its generic loop ran at 9.7 GFLOP/s here, 25x below
//! the f32 GEMM); the AVX2 one below multiplies 32 pairs per `maddubs` + `madd`.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

const BLOCK: usize = 32;
/// Bytes of one Q4_1 block in a GGUF file: f16 d, f16 m, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

/// A `[n, k]` Q4_1 weight matrix in the file's own 20 bytes per block, split into arrays.
pub struct Q41Matrix {
    n: usize,
    k: usize,
    /// `[n, k / 32]` block scales and minimums (f16).
    d: Vec<half::f16>,
    m: Vec<half::f16>,
    /// `[n, k / 32, 16]`: byte j of a block holds value j (low nibble) and j + 16 (high).
    qs: Vec<u8>,
}

/// Activations quantized per block of 32: `x ~ d * q`, with `s = d * sum(q)` (both rounded to f16,
/// as in llama.cpp's Q8_1).
struct Q8Rows {
    d: Vec<f32>,
    s: Vec<f32>,
    q: Vec<i8>,
}

impl Q41Matrix {
    /// From a Q4_1 `QTensor` of shape `[n, k]` (`k` a multiple of 32).
    pub fn from_qtensor(t: &QTensor) -> Result<Self> {
        if t.dtype() != GgmlDType::Q4_1 {
            candle_core::bail!("Q41Matrix: expected Q4_1 weights, got {:?}", t.dtype())
        }
        let (n, k) = t.shape().dims2()?;
        if k % BLOCK != 0 {
            candle_core::bail!("Q41Matrix: row length {k} is not a multiple of {BLOCK}")
        }
        let data = t.data()?;
        let kb = k / BLOCK;
        if data.len() != n * kb * BLOCK_BYTES {
            candle_core::bail!(
                "Q41Matrix: {} bytes for [{n}, {k}] Q4_1 weights (expected {})",
                data.len(),
                n * kb * BLOCK_BYTES
            )
        }
        let mut out = Q41Matrix {
            n,
            k,
            d: Vec::with_capacity(n * kb),
            m: Vec::with_capacity(n * kb),
            qs: Vec::with_capacity(n * kb * 16),
        };
        for b in data.chunks_exact(BLOCK_BYTES) {
            out.d.push(half::f16::from_le_bytes([b[0], b[1]]));
            out.m.push(half::f16::from_le_bytes([b[2], b[3]]));
            out.qs.extend_from_slice(&b[4..20]);
        }
        Ok(out)
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Whether this CPU runs the SIMD kernel (x86-64 with AVX2 and FMA); elsewhere candle's own
    /// quantized matmul is as fast as the scalar fallback here.
    pub fn simd_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::fast_exp::has_avx2_fma();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// `x @ W^T` for `x` `[rows, k]` (f32, CPU): `[rows, n]`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("Q41Matrix: input has {k} columns, weights {}", self.k)
        }
        let xs = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let xs = xs.flatten_all()?.to_vec1::<f32>()?;
        let q = quantize_rows(&xs, rows, k);
        let kb = k / BLOCK;
        let n = self.n;
        // Each task: a run of weight rows against every activation row (the activations, a few
        // hundred KB at most, stay in cache while the weights stream once).
        const ROWS_PER_TASK: usize = 16;
        let mut out_t = vec![0f32; n * rows]; // [n, rows], transposed at the end
        out_t
            .par_chunks_mut(ROWS_PER_TASK * rows)
            .enumerate()
            .for_each(|(task, chunk)| {
                let r0 = task * ROWS_PER_TASK;
                // The weight row's nibbles unpacked to one byte per value and its scales to
                // f32, once per weight row rather than once per activation row.
                let mut w = vec![0u8; k];
                let (mut wd, mut wm) = (vec![0f32; kb], vec![0f32; kb]);
                for (i, out_row) in chunk.chunks_mut(rows).enumerate() {
                    let r = r0 + i;
                    for b in 0..kb {
                        wd[b] = self.d[r * kb + b].to_f32();
                        wm[b] = self.m[r * kb + b].to_f32();
                    }
                    let (wd, wm) = (&wd[..], &wm[..]);
                    unpack(&self.qs[r * kb * 16..(r + 1) * kb * 16], &mut w);
                    // Four activation rows at a time share each weight load and keep four
                    // independent accumulator chains in flight.
                    let quads = rows / 4 * 4;
                    for j in (0..quads).step_by(4) {
                        let xd = |t: usize| &q.d[(j + t) * kb..(j + t + 1) * kb];
                        let xs = |t: usize| &q.s[(j + t) * kb..(j + t + 1) * kb];
                        let xq = |t: usize| &q.q[(j + t) * k..(j + t + 1) * k];
                        let four = dot4(
                            wd,
                            wm,
                            &w,
                            [xd(0), xd(1), xd(2), xd(3)],
                            [xs(0), xs(1), xs(2), xs(3)],
                            [xq(0), xq(1), xq(2), xq(3)],
                        );
                        out_row[j..j + 4].copy_from_slice(&four);
                    }
                    for (j, o) in out_row.iter_mut().enumerate().skip(quads) {
                        *o = dot(
                            wd,
                            wm,
                            &w,
                            &q.d[j * kb..(j + 1) * kb],
                            &q.s[j * kb..(j + 1) * kb],
                            &q.q[j * k..(j + 1) * k],
                        );
                    }
                }
            });
        Tensor::from_vec(out_t, (n, rows), &Device::Cpu)?
            .t()?
            .contiguous()
    }
}

fn quantize_rows(xs: &[f32], rows: usize, k: usize) -> Q8Rows {
    let blocks = rows * k / BLOCK;
    let mut out = Q8Rows {
        d: vec![0.0; blocks],
        s: vec![0.0; blocks],
        q: vec![0; rows * k],
    };
    out.q
        .par_chunks_mut(BLOCK)
        .zip(out.d.par_iter_mut().zip(out.s.par_iter_mut()))
        .zip(xs.par_chunks(BLOCK))
        .with_min_len(64)
        .for_each(|((q, (d, s)), x)| {
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            *d = amax / 127.0;
            let id = if *d > 0.0 { 1.0 / *d } else { 0.0 };
            let mut sum = 0i32;
            for (qi, &v) in q.iter_mut().zip(x) {
                // Half away from zero, as llama.cpp's reference quantizer and candle's round;
                // |v * id| <= 127, so the cast is exact.
                *qi = (v * id).round() as i8;
                sum += *qi as i32;
            }
            // Scale and sum rounded to f16 as llama.cpp's Q8_1 stores them, so that `--dtype q`
            // computes what llama.cpp computes from the same file.
            *s = half::f16::from_f32(*d * sum as f32).to_f32();
            *d = half::f16::from_f32(*d).to_f32();
        });
    out
}

/// Nibbles (16 bytes per block) to values 0..=15 (32 bytes per block, in order).
fn unpack(qs: &[u8], out: &mut [u8]) {
    for (src, dst) in qs.chunks_exact(16).zip(out.chunks_exact_mut(BLOCK)) {
        for j in 0..16 {
            dst[j] = src[j] & 0x0F;
            dst[j + 16] = src[j] >> 4;
        }
    }
}

/// One unpacked weight row (`w`: values 0..=15) against one activation row.
fn dot(wd: &[f32], wm: &[f32], w: &[u8], xd: &[f32], xs: &[f32], xq: &[i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::fast_exp::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { avx2::dot(wd, wm, w, xd, xs, xq) };
    }
    dot_scalar(wd, wm, w, xd, xs, xq)
}

/// One unpacked weight row against four activation rows.
fn dot4(
    wd: &[f32],
    wm: &[f32],
    w: &[u8],
    xd: [&[f32]; 4],
    xs: [&[f32]; 4],
    xq: [&[i8]; 4],
) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if crate::fast_exp::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { avx2::dot4(wd, wm, w, xd, xs, xq) };
    }
    std::array::from_fn(|t| dot_scalar(wd, wm, w, xd[t], xs[t], xq[t]))
}

fn dot_scalar(wd: &[f32], wm: &[f32], w: &[u8], xd: &[f32], xs: &[f32], xq: &[i8]) -> f32 {
    let mut acc = 0f32;
    for b in 0..wd.len() {
        let w = &w[b * BLOCK..b * BLOCK + BLOCK];
        let q = &xq[b * BLOCK..b * BLOCK + BLOCK];
        let sum: i32 = w.iter().zip(q).map(|(&a, &b)| a as i32 * b as i32).sum();
        acc += wd[b] * xd[b] * sum as f32 + wm[b] * xs[b];
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(wd: &[f32], wm: &[f32], w: &[u8], xd: &[f32], xs: &[f32], xq: &[i8]) -> f32 {
        let nb = wd.len();
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        for b in 0..nb {
            let w = _mm256_loadu_si256(w.as_ptr().add(b * 32) as *const __m256i);
            let q = _mm256_loadu_si256(xq.as_ptr().add(b * 32) as *const __m256i);
            // u8 x i8 pairs -> i16 (at most 2 * 15 * 127, no saturation) -> i32.
            let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(w, q), ones);
            let scale = _mm256_set1_ps(wd[b] * xd[b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
            mins += wm[b] * xs[b];
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(
        wd: &[f32],
        wm: &[f32],
        w: &[u8],
        xd: [&[f32]; 4],
        xs: [&[f32]; 4],
        xq: [&[i8]; 4],
    ) -> [f32; 4] {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut mins = [0f32; 4];
        for b in 0..wd.len() {
            let wv = _mm256_loadu_si256(w.as_ptr().add(b * 32) as *const __m256i);
            for t in 0..4 {
                let q = _mm256_loadu_si256(xq[t].as_ptr().add(b * 32) as *const __m256i);
                let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, q), ones);
                let scale = _mm256_set1_ps(wd[b] * xd[t][b]);
                acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[t]);
                mins[t] += wm[b] * xs[t][b];
            }
        }
        std::array::from_fn(|t| hsum(acc[t]) + mins[t])
    }

    #[inline(always)]
    unsafe fn hsum(acc: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(acc, 1);
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::Module;

    #[test]
    fn as_close_to_the_exact_product_as_candles_q4_1_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (70, 96), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (5, 96), &dev)?;
        let qt = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        // The exact product with the quantized weights; both kernels also quantize x to 8 bits
        // with the block's scale and sum in f16.
        let exact = x.matmul(&qt.dequantize(&dev)?.t()?)?;
        let ours = Q41Matrix::from_qtensor(&qt)?.matmul_t(&x)?;
        let candle = QMatMul::from_qtensor(qt)?.forward(&x)?;
        let err =
            |t: &Tensor| -> Result<f32> { (t - &exact)?.abs()?.max_all()?.to_scalar::<f32>() };
        let (ours_err, candle_err) = (err(&ours)?, err(&candle)?);
        let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            ours_err <= candle_err * 1.05,
            "ours {ours_err} vs candle {candle_err}"
        );
        assert!(ours_err < 0.01 * scale, "error {ours_err} at scale {scale}");
        Ok(())
    }

    #[test]
    fn simd_and_scalar_dots_agree() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (3, 128), &dev)?;
        let qt = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        let m = Q41Matrix::from_qtensor(&qt)?;
        let x: Vec<f32> = (0..128)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let q = quantize_rows(&x, 1, 128);
        let mut w = vec![0u8; 128];
        for r in 0..3 {
            unpack(&m.qs[r * 64..r * 64 + 64], &mut w);
            let wd: Vec<f32> = m.d[r * 4..r * 4 + 4].iter().map(|v| v.to_f32()).collect();
            let wm: Vec<f32> = m.m[r * 4..r * 4 + 4].iter().map(|v| v.to_f32()).collect();
            let (wd, wm) = (&wd[..], &wm[..]);
            let a = dot(wd, wm, &w, &q.d, &q.s, &q.q);
            let b = dot_scalar(wd, wm, &w, &q.d, &q.s, &q.q);
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn other_types_and_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (4, 64), &dev)?;
        let qt = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        assert!(Q41Matrix::from_qtensor(&qt).is_err());
        let m = Q41Matrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_1)?)?;
        let x = Tensor::zeros((2, 32), candle_core::DType::F32, &dev)?;
        let err = m.matmul_t(&x).unwrap_err().to_string();
        assert!(err.contains("columns"), "{err}");
        Ok(())
    }
}
