//! A vectorizable `exp` for f32 and the SIMD row loops of the kernels (softmax, SiLU gating,
//! RMS norm), each with an AVX2 build picked at run time, and the CPU-feature checks.
//!
//! `f32::exp` is a libm call per element, which the compiler cannot vectorize; in a prefill it
//! was 5-6% of the time (softmax and SiLU). This one is Cephes' `expf` (range reduction by ln 2,
//! a degree-6 polynomial, relative error below 2e-7) written without branches, so the loops
//! below compile to SIMD. On x86-64 each loop also has an AVX2 build picked at run time; both
//! builds do the same IEEE operations in the same order (no FMA contraction, fixed-width
//! accumulators), so results are bit-identical with and without AVX2.

/// Lanes of the accumulators in reductions: a fixed order, whatever the SIMD width.
const LANES: usize = 16;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this, `exp` is 0 (e^-87.3 is the smallest normal f32); also catches -inf.
const MIN_ARG: f32 = -87.336_54;
const MAX_ARG: f32 = 88.0;
const ROUNDER: f32 = 12_582_912.0;

/// `e^x`. Exactly 0 for `x < -87.34` (including -inf), `+inf` above 88 (e^88 = 1.7e38, near
/// f32's largest), NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // max/min (unlike clamp) turn NaN into a bound, so `n` below is always in range.
    let xc = x.max(MIN_ARG).min(MAX_ARG);
    // Round to nearest by adding and removing 1.5 * 2^23 (`f32::round` is a libm call that
    // would stop the loop from vectorizing).
    let n = (xc * LOG2E + ROUNDER) - ROUNDER;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let e = p * r * r + r + 1.0;
    // 2^n for n in [-126, 127] by building the exponent bits.
    // SAFETY: n is an integer in [-126, 128] (xc is never NaN), so the conversion is exact;
    // `as i32` would saturate and keep the loop scalar.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    let scale = f32::from_bits(((n + 127) << 23) as u32);
    let y = e * scale;
    let y = if x < MIN_ARG { 0.0 } else { y };
    let y = if x > MAX_ARG { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = tail.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for a in acc {
        m = m.max(a);
    }
    m
}

/// Values in `[0, 1]` are summed as multiples of 2^-40 in integers, rounded to nearest (even):
/// the same sum whatever the order, the lanes or the zeros around them, so a softmax row's sum
/// does not depend on how long the row is padded or where its tail falls (the rounding is
/// 1e-12 of the largest value; f32 keeps 6e-8). At most 2^23 values; outside `[0, 1]` (NaN)
/// the result is meaningless. The callers' values are `exp(x - max)`.
const UNIT: f64 = (1u64 << 40) as f64;

/// The portable build: adding 2^52 rounds to an integer, which then sits in the low mantissa
/// bits.
#[inline(always)]
fn sum_of_unit(xs: &[f32]) -> f32 {
    const MAGIC: f64 = (1u64 << 52) as f64;
    let total = xs.iter().fold(0u64, |acc, &x| {
        let v = x as f64 * UNIT + MAGIC;
        acc.wrapping_add(v.to_bits().wrapping_sub(MAGIC.to_bits()))
    });
    (total as f64 / UNIT) as f32
}

/// `out = softmax(x * scale + mask)` over one row. A row with every entry masked (-inf) comes
/// out as zeros rather than NaN.
#[inline(always)]
fn masked_softmax_row_impl(x: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
    masked_softmax_row_with(x, mask, scale, out, sum_of_unit)
}

/// [`masked_softmax_row_impl`] with the sum of `[0, 1]` values given (every build's is exact).
#[inline(always)]
fn masked_softmax_row_with(
    x: &[f32],
    mask: &[f32],
    scale: f32,
    out: &mut [f32],
    sum_of_unit: impl Fn(&[f32]) -> f32,
) {
    for ((o, &v), &m) in out.iter_mut().zip(x).zip(mask) {
        *o = v * scale + m;
    }
    let max = max_of(out);
    if max == f32::NEG_INFINITY {
        out.fill(0.0);
        return;
    }
    for o in out.iter_mut() {
        *o = exp(*o - max);
    }
    let inv = 1.0 / sum_of_unit(out);
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// `out = silu(a) * b = a / (1 + e^-a) * b`.
#[inline(always)]
fn silu_mul_impl(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x / (1.0 + exp(-x)) * y;
    }
}

/// `out = x / sqrt(mean(x^2) + eps) * w`.
#[inline(always)]
fn rms_norm_row_impl(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += c[i] * c[i];
        }
    }
    let mut ss = 0f32;
    for a in acc {
        ss += a;
    }
    for t in tail {
        ss += t * t;
    }
    let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * inv * g;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2")]
    pub unsafe fn masked_softmax_row(x: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
        super::masked_softmax_row_impl(x, mask, scale, out)
    }

    /// The same loop with 512-bit registers (the sum's 64-bit integer lanes halve the work).
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn masked_softmax_row_avx512(x: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
        super::masked_softmax_row_with(x, mask, scale, out, |xs| sum_of_unit_avx512(xs))
    }

    /// [`super::sum_of_unit`] with AVX-512 DQ's rounding conversion of f32 to 64-bit integers
    /// (`x * 2^40` is exact in f32; the same integers, so the same sum).
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn sum_of_unit_avx512(xs: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        let unit = _mm512_set1_ps(super::UNIT as f32);
        let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let chunks = xs.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            let v = _mm512_mul_ps(_mm512_loadu_ps(c.as_ptr()), unit);
            let (a, b) = (
                _mm512_castps512_ps256(v),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
            );
            lo = _mm512_add_epi64(lo, _mm512_cvtps_epi64(a));
            hi = _mm512_add_epi64(hi, _mm512_cvtps_epi64(b));
        }
        let mut total = _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi)) as u64;
        for &t in tail {
            total = total.wrapping_add((t * super::UNIT as f32).round_ties_even() as u64);
        }
        (total as f64 / super::UNIT) as f32
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        super::rms_norm_row_impl(x, w, eps, out)
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
        super::silu_mul_impl(a, b, out)
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512
        .get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512dq"))
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
}

/// AVX2 and FMA both present (the integer kernels' requirement).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    static AVX2_FMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2_FMA.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `out = softmax(x * scale + mask)` for one row (all slices the same length).
pub fn masked_softmax_row(x: &[f32], mask: &[f32], scale: f32, out: &mut [f32]) {
    assert!(x.len() == mask.len() && x.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512 F and DQ are present (checked at run time).
        return unsafe { avx2::masked_softmax_row_avx512(x, mask, scale, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is present (checked at run time).
        return unsafe { avx2::masked_softmax_row(x, mask, scale, out) };
    }
    masked_softmax_row_impl(x, mask, scale, out)
}

/// `out = x / sqrt(mean(x^2) + eps) * w` for one row (all slices the same length).
pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert!(x.len() == w.len() && x.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is present (checked at run time).
        return unsafe { avx2::rms_norm_row(x, w, eps, out) };
    }
    rms_norm_row_impl(x, w, eps, out)
}

/// `out = silu(a) * b` elementwise (all slices the same length).
pub fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    assert!(a.len() == b.len() && a.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 is present (checked at run time).
        return unsafe { avx2::silu_mul(a, b, out) };
    }
    silu_mul_impl(a, b, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_libm_within_2e7_relative() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn exp_edge_cases() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn simd_and_scalar_builds_agree_bit_for_bit() {
        let x: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0)
            .collect();
        let mask: Vec<f32> = (0..1000)
            .map(|i| if i % 5 == 0 { f32::NEG_INFINITY } else { 0.0 })
            .collect();
        let mut a = vec![0f32; 1000];
        let mut b = vec![0f32; 1000];
        masked_softmax_row(&x, &mask, 0.3, &mut a);
        masked_softmax_row_impl(&x, &mask, 0.3, &mut b);
        assert_eq!(a, b);
        let y: Vec<f32> = x.iter().map(|v| v * 0.5 - 1.0).collect();
        silu_mul(&x, &y, &mut a);
        silu_mul_impl(&x, &y, &mut b);
        assert_eq!(a, b);
        rms_norm_row(&x, &y, 1e-5, &mut a);
        rms_norm_row_impl(&x, &y, 1e-5, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn fully_masked_row_is_zeros() {
        let mut out = [1f32; 3];
        masked_softmax_row(&[1.0, 2.0, 3.0], &[f32::NEG_INFINITY; 3], 1.0, &mut out);
        assert_eq!(out, [0.0; 3]);
    }
}
