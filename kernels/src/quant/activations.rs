//! Activations quantized for the block kernels: per block of 32 to 8 bits, with the scale
//! and the sums each block type's min term needs.

use super::repack::{Kind, BLOCK};
#[cfg(target_arch = "x86_64")]
use super::x86;
use crate::TaskPtr;

/// Activations quantized per block of 32: `x ~ d * q` (d rounded to f16 as llama.cpp stores
/// it) and `d * sum(q)` per weight sub-block.
pub(super) struct Q8Rows {
    pub d: Vec<f32>,
    pub s: Vec<f32>,
    pub q: Vec<i8>,
}

/// What decides how activations are quantized for a block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QuantKey {
    f16_scale: bool,
    subs: usize,
    sum_in_f16: bool,
}

impl QuantKey {
    pub(super) fn of(kind: Kind) -> Self {
        QuantKey {
            f16_scale: kind.f16_scales(),
            subs: kind.subs(),
            sum_in_f16: kind.sum_in_f16(),
        }
    }
}

/// One block of 32 activations to 8 bits (see `x86::quantize_block`).
pub(super) fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, [i32; 2]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { x86::quantize_block(x, q) };
    }
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (qi, &v) in q.iter_mut().zip(x) {
        // Half away from zero, as llama.cpp's reference quantizer and candle's round;
        // |v * id| <= 127, so the cast is exact.
        *qi = (v * id).round() as i8;
    }
    let half = |h: &[i8]| h.iter().map(|&v| v as i32).sum::<i32>();
    (scale, [half(&q[..16]), half(&q[16..])])
}

/// Quantizes rows of activations per block of 32, with sums per weight sub-block.
pub(super) fn quantize_rows(xs: &[f32], rows: usize, k: usize, kind: Kind) -> Q8Rows {
    let blocks = rows * k / BLOCK;
    let subs = kind.subs();
    let mut out = Q8Rows {
        d: vec![0.0; blocks],
        s: vec![0.0; blocks * subs],
        q: vec![0; rows * k],
    };
    // Blocks 64 a task, each writing its own blocks' values, scales and sums.
    const PER_TASK: usize = 64;
    let (dp, sp) = (TaskPtr(out.d.as_mut_ptr()), TaskPtr(out.s.as_mut_ptr()));
    crate::team::for_each_chunk(&mut out.q, PER_TASK * BLOCK, |t, qs| {
        for (j, q) in qs.chunks_mut(BLOCK).enumerate() {
            let blk = t * PER_TASK + j;
            let (scale, halves) = quantize_block(&xs[blk * BLOCK..(blk + 1) * BLOCK], q);
            // The scale rounded to f16 as llama.cpp's Q8_0 / Q8_1 store it (its Q8_K, the
            // k-quants' partner, keeps f32).
            let d = if kind.f16_scales() {
                half::f16::from_f32(scale).to_f32()
            } else {
                scale
            };
            let sums = if subs == 2 {
                halves
            } else {
                [halves[0] + halves[1], 0]
            };
            // SAFETY: block `blk` is this task's; `d` and `s` hold a value and `subs` sums per
            // block.
            unsafe {
                *dp.get().add(blk) = d;
                for (i, &sum) in sums.iter().take(subs).enumerate() {
                    *sp.get().add(blk * subs + i) = if kind.sum_in_f16() {
                        // llama.cpp's Q8_1 stores the block sum (from the unrounded scale) in
                        // f16.
                        half::f16::from_f32(scale * sum as f32).to_f32()
                    } else {
                        d * sum as f32
                    };
                }
            }
        }
    });
    out
}
