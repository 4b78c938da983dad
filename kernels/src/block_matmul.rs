//! Matmul with GGUF's 4- and 5-bit block weights (Q4_0, Q4_1, Q5_0, Q5_1), the llama.cpp way:
//! activations are quantized per block of 32 to 8 bits (a scale `d_x` and the block's sum), and
//! each weight block (a scale `d`, an offset `m` and 32 unsigned 4- or 5-bit values `u`; Q4_0 and
//! Q5_0 store signed values, i.e. `m = -8d` or `-16d`) meets them in integer multiply-adds:
//! `sum_i (d u_i + m) * d_x q_i = d d_x sum_i u_i q_i + m d_x sum_i q_i`.
//! candle 0.11 has no SIMD path for these types (Q4_1 ran at 9.7 GFLOP/s here, 25x below the f32
//! GEMM; Qwen2.5's Q4_K_M file stores most of its weights as Q5_0, because 896-wide rows do not
//! fit k-quants' 256-value blocks); the AVX2 kernel below multiplies 32 pairs per `maddubs` +
//! `madd`. Weights stay in the file's own bytes.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

const BLOCK: usize = 32;

/// The block types this kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// f16 d, 16 bytes of nibbles; value = nibble - 8.
    Q4_0,
    /// f16 d, f16 m, 16 bytes of nibbles.
    Q4_1,
    /// f16 d, 4 bytes of fifth bits, 16 bytes of nibbles; value = 5-bit - 16.
    Q5_0,
    /// f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of nibbles.
    Q5_1,
}

impl Kind {
    fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Kind::Q4_0,
            GgmlDType::Q4_1 => Kind::Q4_1,
            GgmlDType::Q5_0 => Kind::Q5_0,
            GgmlDType::Q5_1 => Kind::Q5_1,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4_1 => 20,
            Kind::Q5_0 => 22,
            Kind::Q5_1 => 24,
        }
    }

    /// Block `b` (its bytes) as `(d, m)` and the 32 unsigned values written to `u`.
    fn unpack(self, b: &[u8], u: &mut [u8]) -> (f32, f32) {
        let f16 = |i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        let d = f16(0);
        let (m, qh, qs) = match self {
            Kind::Q4_0 => (-8.0 * d, None, &b[2..18]),
            Kind::Q4_1 => (f16(2), None, &b[4..20]),
            Kind::Q5_0 => (-16.0 * d, Some(&b[2..6]), &b[6..22]),
            Kind::Q5_1 => (f16(2), Some(&b[4..8]), &b[8..24]),
        };
        for j in 0..16 {
            u[j] = qs[j] & 0x0F;
            u[j + 16] = qs[j] >> 4;
        }
        if let Some(qh) = qh {
            let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
            for (j, v) in u.iter_mut().enumerate().take(BLOCK) {
                *v |= (((qh >> j) & 1) as u8) << 4;
            }
        }
        (d, m)
    }

    /// Whether llama.cpp pairs this type with Q8_1 activations (whose block sum is stored in f16)
    /// rather than Q8_0 (no sum; the offset term is exact integer arithmetic).
    fn sum_in_f16(self) -> bool {
        matches!(self, Kind::Q4_1 | Kind::Q5_1)
    }
}

/// A `[n, k]` matrix of 4- or 5-bit GGUF blocks, in the file's own bytes.
pub struct BlockMatrix {
    kind: Kind,
    n: usize,
    k: usize,
    raw: Vec<u8>,
}

/// Activations quantized per block of 32: `x ~ d * q` (d rounded to f16, as llama.cpp stores
/// it), with `s = d * sum(q)` in f32 and `s16` rounded to f16 (llama.cpp's Q8_1).
struct Q8Rows {
    d: Vec<f32>,
    s: Vec<f32>,
    s16: Vec<f32>,
    q: Vec<i8>,
}

impl BlockMatrix {
    /// Whether `dtype` is one this kernel runs.
    pub fn supports(dtype: GgmlDType) -> bool {
        Kind::of(dtype).is_some()
    }

    /// From a Q4_0 / Q4_1 / Q5_0 / Q5_1 `QTensor` of shape `[n, k]` (`k` a multiple of 32).
    pub fn from_qtensor(t: &QTensor) -> Result<Self> {
        let Some(kind) = Kind::of(t.dtype()) else {
            candle_core::bail!(
                "BlockMatrix: expected Q4_0, Q4_1, Q5_0 or Q5_1 weights, got {:?}",
                t.dtype()
            )
        };
        let (n, k) = t.shape().dims2()?;
        if k % BLOCK != 0 {
            candle_core::bail!("BlockMatrix: row length {k} is not a multiple of {BLOCK}")
        }
        let data = t.data()?;
        let expected = n * (k / BLOCK) * kind.bytes();
        if data.len() != expected {
            candle_core::bail!(
                "BlockMatrix: {} bytes for [{n}, {k}] {kind:?} weights (expected {expected})",
                data.len()
            )
        }
        Ok(BlockMatrix {
            kind,
            n,
            k,
            raw: data.into_owned(),
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Whether this CPU runs the SIMD kernel (x86-64 with AVX2 and FMA); elsewhere candle's own
    /// quantized matmul is as fast as the scalar fallback here.
    pub fn simd_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::simd::has_avx2_fma();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// `x @ W^T` for `x` `[rows, k]` (f32, CPU): `[rows, n]`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, k) = x.dims2()?;
        if k != self.k {
            candle_core::bail!("BlockMatrix: input has {k} columns, weights {}", self.k)
        }
        let xs = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let xs = xs.flatten_all()?.to_vec1::<f32>()?;
        let q = quantize_rows(&xs, rows, k);
        let sums = if self.kind.sum_in_f16() { &q.s16 } else { &q.s };
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
                // Each weight row unpacked to one byte per value and f32 scales once, rather
                // than once per activation row.
                let bb = self.kind.bytes();
                let mut w = vec![0u8; k];
                let (mut wd, mut wm) = (vec![0f32; kb], vec![0f32; kb]);
                for (i, out_row) in chunk.chunks_mut(rows).enumerate() {
                    let r = r0 + i;
                    let row = &self.raw[r * kb * bb..(r + 1) * kb * bb];
                    for b in 0..kb {
                        (wd[b], wm[b]) = self.kind.unpack(
                            &row[b * bb..(b + 1) * bb],
                            &mut w[b * BLOCK..(b + 1) * BLOCK],
                        );
                    }
                    let (wd, wm) = (&wd[..], &wm[..]);
                    // Four activation rows at a time share each weight load and keep four
                    // independent accumulator chains in flight (a last group of fewer rows
                    // repeats its last row and keeps only the rows it has).
                    for j in (0..rows).step_by(4) {
                        let row = |t: usize| (j + t).min(rows - 1);
                        let xd = |t: usize| &q.d[row(t) * kb..(row(t) + 1) * kb];
                        let xs = |t: usize| &sums[row(t) * kb..(row(t) + 1) * kb];
                        let xq = |t: usize| &q.q[row(t) * k..(row(t) + 1) * k];
                        let four = dot4(
                            wd,
                            wm,
                            &w,
                            [xd(0), xd(1), xd(2), xd(3)],
                            [xs(0), xs(1), xs(2), xs(3)],
                            [xq(0), xq(1), xq(2), xq(3)],
                        );
                        let have = (rows - j).min(4);
                        out_row[j..j + have].copy_from_slice(&four[..have]);
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
        s16: vec![0.0; blocks],
        q: vec![0; rows * k],
    };
    out.q
        .par_chunks_mut(BLOCK)
        .zip(
            out.d
                .par_iter_mut()
                .zip(out.s.par_iter_mut().zip(out.s16.par_iter_mut())),
        )
        .zip(xs.par_chunks(BLOCK))
        .with_min_len(64)
        .for_each(|((q, (d, (s, s16))), x)| {
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
            // Rounded to f16 as llama.cpp stores them, so that `--dtype q` computes what
            // llama.cpp computes from the same file.
            *s16 = half::f16::from_f32(*d * sum as f32).to_f32();
            *d = half::f16::from_f32(*d).to_f32();
            *s = *d * sum as f32;
        });
    out
}

/// One unpacked weight row (`w`: values 0..=31) against four activation rows.
fn dot4(
    wd: &[f32],
    wm: &[f32],
    w: &[u8],
    xd: [&[f32]; 4],
    xs: [&[f32]; 4],
    xq: [&[i8]; 4],
) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
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
                // u8 x i8 pairs -> i16 (at most 2 * 31 * 127, no saturation) -> i32.
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

    /// Deterministic values in [-scale, scale).
    fn seeded(shape: (usize, usize), scale: f32, seed: u64, dev: &Device) -> Result<Tensor> {
        let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let data: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(data, shape, dev)
    }

    #[test]
    fn as_close_to_the_exact_product_as_candles_matmul_for_every_type() -> Result<()> {
        let dev = Device::Cpu;
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
        ] {
            // Fixed pseudo-random data: with fresh draws each run, the error comparison with
            // candle's kernel came out either way now and then.
            let w = seeded((70, 96), 0.1, 1, &dev)?;
            let x = seeded((5, 96), 1.0, 2, &dev)?;
            let qt = QTensor::quantize(&w, dtype)?;
            // The exact product with the quantized weights; both kernels also quantize x to
            // 8 bits per block.
            let exact = x.matmul(&qt.dequantize(&dev)?.t()?)?;
            let ours = BlockMatrix::from_qtensor(&qt)?.matmul_t(&x)?;
            let candle = QMatMul::from_qtensor(qt)?.forward(&x)?;
            let err =
                |t: &Tensor| -> Result<f32> { (t - &exact)?.abs()?.max_all()?.to_scalar::<f32>() };
            let (ours_err, candle_err) = (err(&ours)?, err(&candle)?);
            let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                ours_err <= candle_err * 1.05 + 1e-6,
                "{dtype:?}: ours {ours_err} vs candle {candle_err}"
            );
            assert!(
                ours_err < 0.01 * scale,
                "{dtype:?}: error {ours_err} at scale {scale}"
            );
        }
        Ok(())
    }

    #[test]
    fn simd_and_scalar_dots_agree() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (3, 128), &dev)?;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q5_0] {
            let m = BlockMatrix::from_qtensor(&QTensor::quantize(&w, dtype)?)?;
            let x: Vec<f32> = (0..128)
                .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let q = quantize_rows(&x, 1, 128);
            let bb = m.kind.bytes();
            let mut u = vec![0u8; 128];
            for r in 0..3 {
                let (mut wd, mut wm) = (vec![0f32; 4], vec![0f32; 4]);
                for b in 0..4 {
                    let block = &m.raw[(r * 4 + b) * bb..(r * 4 + b + 1) * bb];
                    (wd[b], wm[b]) = m.kind.unpack(block, &mut u[b * 32..b * 32 + 32]);
                }
                assert!(u.iter().all(|&v| v < 32));
                let a = dot4(&wd, &wm, &u, [&q.d; 4], [&q.s; 4], [&q.q; 4])[3];
                let b = dot_scalar(&wd, &wm, &u, &q.d, &q.s, &q.q);
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
        Ok(())
    }

    #[test]
    fn other_types_and_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 0.1, (4, 64), &dev)?;
        let qt = QTensor::quantize(&w, GgmlDType::Q8_0)?;
        assert!(BlockMatrix::from_qtensor(&qt).is_err());
        let m = BlockMatrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_1)?)?;
        let x = Tensor::zeros((2, 32), candle_core::DType::F32, &dev)?;
        let err = m.matmul_t(&x).unwrap_err().to_string();
        assert!(err.contains("columns"), "{err}");
        Ok(())
    }
}
