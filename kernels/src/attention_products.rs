//! The two products of the fused CPU attention in one fixed order of operations: every score is
//! one FMA chain over the head dimension (`d = 0, 1, ...`), every output value one FMA chain
//! over the keys in key order, across the segments they lie in. No sum depends on how many
//! queries or keys a call has, how a row is padded or chunked, or which SIMD width runs it, so
//! a row's attention is the same bit for bit whatever it is batched with. (gemm picks its
//! kernels by shape: between batch 4 and batch 1 the last bits moved, and `--dtype q`'s 8-bit
//! activations turned them into roundings that moved SmolLM2 label log-probs by up to 0.37
//! nats.) With masked keys at probability 0, `fma(0, v, acc) = acc` keeps padding out too.
//!
//! The scores' lanes are keys: each segment's keys are packed once per call as panels of `L`
//! keys transposed (`[d][L]`), shared by every head of the group and every query block. The
//! outputs' lanes are head dimensions, read straight from the values.

/// SIMD lanes of the scores (keys per panel): 16 with AVX-512, 8 with AVX2, 1 without.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Width {
    pub(crate) fn detect() -> Width {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                return Width::Avx512;
            }
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return Width::Avx2;
            }
        }
        Width::Scalar
    }

    pub(crate) fn lanes(self) -> usize {
        match self {
            Width::Scalar => 1,
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => 8,
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => 16,
        }
    }
}

/// One segment's share of a query block: its packed keys (this row's, this key head's), its
/// values (`v + j * vj + d`, the head dimension contiguous), where its keys start among the
/// block's and how many of them the block sees.
pub(crate) struct Part {
    /// Keys transposed: dimension `d` of key `j` at `packed[d * ldk + j]`.
    pub packed: *const f32,
    pub ldk: usize,
    /// Values: f32, or f16 (read converted, exactly) where `v16` is set.
    pub v: *const f32,
    pub v16: *const half::f16,
    pub vj: isize,
    pub first: usize,
    pub seen: usize,
}

use crate::lanes::{Lanes, One};

/// `scores[i * ld + part.first + j] = q_i · key_j` for the queries (`q` contiguous, `hd` per
/// query) and every part's keys that query `i` sees (its first `sees[i]` keys; a tile of
/// queries computes up to the furthest of its own, the rest of a row is left as is).
///
/// SAFETY: every part's pointers are readable for its `seen` keys; `scores` holds `sees.len()`
/// rows of `ld` values, `ld >= first + seen` for every part.
pub(crate) unsafe fn scores(
    width: Width,
    q: &[f32],
    sees: &[usize],
    hd: usize,
    parts: &[Part],
    scores: &mut [f32],
    ld: usize,
) {
    match width {
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => scores_avx512(q, sees, hd, parts, scores, ld),
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => scores_avx2(q, sees, hd, parts, scores, ld),
        Width::Scalar => scores_impl::<One>(q, sees, hd, parts, scores, ld),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn scores_avx512(
    q: &[f32],
    sees: &[usize],
    hd: usize,
    p: &[Part],
    s: &mut [f32],
    ld: usize,
) {
    scores_impl::<std::arch::x86_64::__m512>(q, sees, hd, p, s, ld)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(q: &[f32], sees: &[usize], hd: usize, p: &[Part], s: &mut [f32], ld: usize) {
    scores_impl::<std::arch::x86_64::__m256>(q, sees, hd, p, s, ld)
}

#[inline(always)]
unsafe fn scores_impl<V: Lanes>(
    q: &[f32],
    sees: &[usize],
    hd: usize,
    parts: &[Part],
    s: &mut [f32],
    ld: usize,
) {
    let ql = sees.len();
    let mut i = 0;
    // Sixteen chains in flight for a full tile (8 queries x 2 panels), eight for the rest.
    while i < ql {
        let t = match ql - i {
            8.. => 8,
            4..=7 => 4,
            2..=3 => 2,
            _ => 1,
        };
        let upto = sees[i..i + t].iter().copied().max().unwrap_or(0);
        for part in parts {
            let n = part.seen.min(upto.saturating_sub(part.first));
            if n == 0 {
                continue;
            }
            match t {
                8 => tile::<V, 8, 2>(q, i, hd, part, n, s, ld),
                4 => tile::<V, 4, 2>(q, i, hd, part, n, s, ld),
                2 => tile::<V, 2, 4>(q, i, hd, part, n, s, ld),
                _ => tile::<V, 1, 8>(q, i, hd, part, n, s, ld),
            }
        }
        i += t;
    }
}

/// Queries `i0..i0 + T` against every panel of `part`: `P` panels at a time, then fewer.
#[inline(always)]
unsafe fn tile<V: Lanes, const T: usize, const P: usize>(
    q: &[f32],
    i0: usize,
    hd: usize,
    part: &Part,
    n: usize,
    s: &mut [f32],
    ld: usize,
) {
    let panels = n.div_ceil(V::N);
    let mut p0 = 0;
    while p0 + P <= panels {
        panels_of::<V, T, P>(q, i0, hd, part, n, p0, s, ld);
        p0 += P;
    }
    // The rest in fewer panels at a time, so a single query keeps several chains in flight.
    if P > 4 && p0 + 4 <= panels {
        panels_of::<V, T, 4>(q, i0, hd, part, n, p0, s, ld);
        p0 += 4;
    }
    if P > 2 && p0 + 2 <= panels {
        panels_of::<V, T, 2>(q, i0, hd, part, n, p0, s, ld);
        p0 += 2;
    }
    while p0 < panels {
        panels_of::<V, T, 1>(q, i0, hd, part, n, p0, s, ld);
        p0 += 1;
    }
}

/// Queries `i0..i0 + T` against panels `p0..p0 + P` (of the part's first `n` keys).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn panels_of<V: Lanes, const T: usize, const P: usize>(
    q: &[f32],
    i0: usize,
    hd: usize,
    part: &Part,
    n: usize,
    p0: usize,
    s: &mut [f32],
    ld: usize,
) {
    let mut acc = [[V::zero(); P]; T];
    let qp = q.as_ptr().add(i0 * hd);
    for d in 0..hd {
        let base = part.packed.add(d * part.ldk + p0 * V::N);
        let mut kv = [V::zero(); P];
        for (pp, kv) in kv.iter_mut().enumerate() {
            *kv = V::load(base.add(pp * V::N));
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let x = V::splat(*qp.add(t * hd + d));
            for (acc, kv) in acc.iter_mut().zip(&kv) {
                *acc = V::fma(x, *kv, *acc);
            }
        }
    }
    let sp = s.as_mut_ptr();
    for (t, acc) in acc.iter().enumerate() {
        let row = sp.add((i0 + t) * ld + part.first);
        for (pp, acc) in acc.iter().enumerate() {
            let j0 = (p0 + pp) * V::N;
            let m = V::N.min(n - j0);
            if m == V::N {
                acc.store(row.add(j0));
            } else {
                acc.store_first(row.add(j0), m);
            }
        }
    }
}

/// `out[i * ldo + d] = sum_j probs[i * ld + j] * v_j[d]` for the queries, over every part's
/// keys in order (part `j` is key `part.first + j` of `probs`' rows) up to the furthest key a
/// tile's queries see (`sees`, as for [`scores`]; the probabilities past a query's own are 0).
///
/// SAFETY: as [`scores`]; `out` is writable for `sees.len()` rows of `hd` values where
/// [`Out::row`] puts them.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn weighted_values(
    width: Width,
    probs: &[f32],
    ld: usize,
    sees: &[usize],
    hd: usize,
    parts: &[Part],
    out: Out,
) {
    match width {
        #[cfg(target_arch = "x86_64")]
        Width::Avx512 => values_avx512(probs, ld, sees, hd, parts, out),
        #[cfg(target_arch = "x86_64")]
        Width::Avx2 => values_avx2(probs, ld, sees, hd, parts, out),
        Width::Scalar => values_impl::<One, 4, 4>(probs, ld, sees, hd, parts, out),
    }
}

/// Where [`weighted_values`] writes its rows: in runs of `per` rows `hd` apart (the heads of
/// one query that share a key head), the runs `ld` apart (one query to the next).
#[derive(Clone, Copy)]
pub(crate) struct Out {
    pub ptr: *mut f32,
    pub per: usize,
    pub ld: usize,
}

impl Out {
    #[inline(always)]
    unsafe fn row(self, r: usize, hd: usize) -> *mut f32 {
        self.ptr.add(r / self.per * self.ld + r % self.per * hd)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn values_avx512(
    probs: &[f32],
    ld: usize,
    sees: &[usize],
    hd: usize,
    parts: &[Part],
    out: Out,
) {
    // 6 queries x 4 vectors (64 dimensions): 24 of the 32 registers.
    values_impl::<std::arch::x86_64::__m512, 6, 4>(probs, ld, sees, hd, parts, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn values_avx2(
    probs: &[f32],
    ld: usize,
    sees: &[usize],
    hd: usize,
    parts: &[Part],
    out: Out,
) {
    // 3 queries x 4 vectors (32 dimensions): 12 of the 16 registers.
    values_impl::<std::arch::x86_64::__m256, 3, 4>(probs, ld, sees, hd, parts, out)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn values_impl<V: Lanes, const T: usize, const DV: usize>(
    probs: &[f32],
    ld: usize,
    sees: &[usize],
    hd: usize,
    parts: &[Part],
    out: Out,
) {
    // Tiles of T queries x DV vectors of dimensions, then what is left one query, one vector
    // or one dimension at a time (the same chain per value).
    let ql = sees.len();
    let mut i0 = 0;
    while i0 < ql {
        let full = ql - i0 >= T;
        let t = if full { T } else { 1 };
        let upto = sees[i0..i0 + t].iter().copied().max().unwrap_or(0);
        let mut d0 = 0;
        while d0 < hd {
            let args = (probs, ld, i0, d0, upto, parts, out, hd);
            d0 += if hd - d0 >= DV * V::N {
                match full {
                    true => values_tile::<V, T, DV>(args),
                    false => values_tile::<V, 1, DV>(args),
                }
                DV * V::N
            } else if hd - d0 >= V::N {
                match full {
                    true => values_tile::<V, T, 1>(args),
                    false => values_tile::<V, 1, 1>(args),
                }
                V::N
            } else {
                values_tile::<One, 1, 1>(args);
                if full {
                    for t in 1..T {
                        let a = (probs, ld, i0 + t, d0, upto, parts, out, hd);
                        values_tile::<One, 1, 1>(a);
                    }
                }
                1
            };
        }
        i0 += t;
    }
}

type ValuesArgs<'a> = (
    &'a [f32],
    usize,
    usize,
    usize,
    usize,
    &'a [Part],
    Out,
    usize,
);

/// Queries `i0..i0 + T`, dimensions `d0..d0 + DV * V::N`, keys up to `upto`.
#[inline(always)]
unsafe fn values_tile<V: Lanes, const T: usize, const DV: usize>(
    (probs, ld, i0, d0, upto, parts, out, hd): ValuesArgs,
) {
    let mut acc = [[V::zero(); DV]; T];
    for part in parts {
        let pp = probs.as_ptr().add(i0 * ld + part.first);
        let n = part.seen.min(upto.saturating_sub(part.first));
        if part.v16.is_null() {
            values_run::<V, T, DV, false>(&mut acc, pp, ld, n, part, d0);
        } else {
            values_run::<V, T, DV, true>(&mut acc, pp, ld, n, part, d0);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        let row = out.row(i0 + t, hd);
        for (c, acc) in acc.iter().enumerate() {
            acc.store(row.add(d0 + c * V::N));
        }
    }
}

/// Keys `0..n` of one part into the accumulators (`probs` the tile's first row at this
/// part's first key; its values from dimension `d0` on, f16 when `F16`).
#[inline(always)]
unsafe fn values_run<V: Lanes, const T: usize, const DV: usize, const F16: bool>(
    acc: &mut [[V; DV]; T],
    probs: *const f32,
    ld: usize,
    n: usize,
    part: &Part,
    d0: usize,
) {
    for j in 0..n {
        let mut v = [V::zero(); DV];
        let row = j as isize * part.vj;
        for (c, v) in v.iter_mut().enumerate() {
            *v = if F16 {
                V::load_f16(part.v16.offset(row).add(d0 + c * V::N))
            } else {
                V::load(part.v.offset(row).add(d0 + c * V::N))
            };
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            let p = V::splat(*probs.add(t * ld + j));
            for (acc, v) in acc.iter_mut().zip(&v) {
                *acc = V::fma(p, *v, *acc);
            }
        }
    }
}

#[cfg(test)]
#[path = "attention_products_tests.rs"]
mod tests;
