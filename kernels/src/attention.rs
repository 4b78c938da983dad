//! Attention on the CPU in one parallel pass: for each (row, head, block of queries), the
//! scores against a shared prefix's keys and the row's own keys written side by side (no
//! concatenation), the mask and softmax applied only up to the last key the block can see (a
//! causal prefill skips the hidden half), and the weighted values summed by gemm straight from
//! the strided inputs: no copies of the queries, keys, values or probabilities, and one
//! dispatch to the thread pool instead of a dozen.

use crate::simd::masked_softmax_row;
use crate::TaskPtr;
use candle_core::{DType, Device, Result, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

/// Queries per task: enough rows for gemm to be efficient, few enough for every core to get
/// work on short inputs.
const QUERY_BLOCK: usize = 64;

/// A CPU f32 tensor's data (its storage guard held by the caller) with its element strides.
struct View {
    ptr: *const f32,
    strides: Vec<isize>,
}

// SAFETY: the data is only read, while the caller holds the storage's read guard.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    fn of(storage: &Storage, layout: &candle_core::Layout) -> Result<Option<Self>> {
        let Storage::Cpu(cpu) = storage else {
            return Ok(None);
        };
        if !matches!(cpu, candle_core::CpuStorage::F32(_)) {
            return Ok(None);
        }
        let data = cpu.as_slice::<f32>()?;
        // SAFETY: the layout's offset lies inside its storage.
        let ptr = unsafe { data.as_ptr().add(layout.start_offset()) };
        let strides = layout.stride().iter().map(|&s| s as isize).collect();
        Ok(Some(View { ptr, strides }))
    }

    /// Element `idx`'s address (`idx` one index per dimension).
    fn at(&self, idx: &[usize]) -> *const f32 {
        let off: isize = idx
            .iter()
            .zip(&self.strides)
            .map(|(&i, &s)| i as isize * s)
            .sum();
        // SAFETY: callers index inside the tensor's shape.
        unsafe { self.ptr.offset(off) }
    }
}

/// `softmax(scale * q·kᵀ + mask) · v` for queries `q` `[b, h, t, hd]` over the keys and values
/// of the segments in `before`, in order, then `k`, `v` (`[b, kvh, n, hd]`), under `mask`
/// `[b, t, keys]` (0 or -inf, or any additive bias; `keys` the segments' lengths + `n`), `h` a
/// multiple of `kvh` (grouped-query attention). A segment is a pair of keys and values
/// `[1, kvh, len, hd]` (one run every row attends to: a shared prefix) or `[b, kvh, len, hd]`
/// (each row's own cache): none is copied or concatenated. Returns `[b, t, h, hd]` (the layout
/// the output projection takes), or `None` off the CPU or for other dtypes, where the caller's
/// candle ops run. Queries whose every key is masked get zeros, as [`crate::masked_softmax`]
/// gives.
pub fn attention_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    before: &[(&Tensor, &Tensor)],
    scale: f32,
) -> Result<Option<Tensor>> {
    let (b, h, t, hd) = q.dims4()?;
    let (kb, kvh, n, khd) = k.dims4()?;
    if v.dims4()? != (kb, kvh, n, khd) || kb != b || khd != hd || kvh == 0 || h % kvh != 0 {
        candle_core::bail!(
            "attention: queries {:?}, keys {:?}, values {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    // Every segment, the queries' own keys last: (keys, values, shared by all rows, length).
    let mut segments = Vec::with_capacity(before.len() + 1);
    for &(pk, pv) in before {
        let (sb, skvh, len, shd) = pk.dims4()?;
        if (sb != 1 && sb != b) || skvh != kvh || shd != hd || pv.dims4()? != (sb, kvh, len, hd) {
            candle_core::bail!(
                "attention: earlier keys {:?}, values {:?} for {b} rows of {kvh} x {hd}",
                pk.dims(),
                pv.dims()
            )
        }
        segments.push((pk, pv, sb == 1, len));
    }
    segments.push((k, v, false, n));
    let keys: usize = segments.iter().map(|s| s.3).sum();
    if mask.dims3()? != (b, t, keys) {
        candle_core::bail!(
            "attention: mask {:?} for {b} x {t} queries, {keys} keys",
            mask.dims()
        )
    }
    if mask.dtype() != DType::F32 {
        return Ok(None);
    }
    let mask = mask.contiguous()?;
    let guards: Vec<_> = [q, &mask]
        .into_iter()
        .chain(segments.iter().flat_map(|s| [s.0, s.1]))
        .map(|t| t.storage_and_layout())
        .collect();
    let mut views = Vec::with_capacity(guards.len());
    for (storage, layout) in &guards {
        match View::of(storage, layout)? {
            Some(view) => views.push(view),
            None => return Ok(None),
        }
    }
    let (qv, mv) = (&views[0], &views[1]);
    // (keys, values, shared, length) of each segment, as views.
    let segs: Vec<(&View, &View, bool, usize)> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| (&views[2 + 2 * i], &views[3 + 2 * i], s.2, s.3))
        .collect();
    let group = h / kvh;
    let blocks = t.div_ceil(QUERY_BLOCK);
    let mut out = vec![0f32; b * t * h * hd];
    let out_ptr = TaskPtr(out.as_mut_ptr());
    let m_ptr = TaskPtr(mv.ptr as *mut f32);
    (0..b * h * blocks).into_par_iter().for_each(|task| {
        let (bi, rest) = (task / (h * blocks), task % (h * blocks));
        let (hh, blk) = (rest / blocks, rest % blocks);
        let g = hh / group;
        let q0 = blk * QUERY_BLOCK;
        let ql = QUERY_BLOCK.min(t - q0);
        // SAFETY: `mask` is contiguous `[b, t, keys]`.
        let mask_row = |i: usize| unsafe {
            std::slice::from_raw_parts(m_ptr.get().add((bi * t + i) * keys), keys)
        };
        // The keys this block can see: up to the last one any of its queries may attend to.
        let limit = (q0..q0 + ql)
            .filter_map(|i| mask_row(i).iter().rposition(|&m| m != f32::NEG_INFINITY))
            .max()
            .map_or(0, |last| last + 1);
        let out_row = |i: usize| out_ptr.get().wrapping_add(((bi * t + i) * h + hh) * hd);
        if limit == 0 {
            return; // every key masked: zeros, as allocated
        }
        // Each segment's first key, row and visible length.
        let mut parts = Vec::with_capacity(segs.len());
        let mut first = 0;
        for &(sk, sv, shared, len) in &segs {
            let seen = len.min(limit.saturating_sub(first));
            if seen > 0 {
                parts.push((sk, sv, if shared { 0 } else { bi }, first, seen));
            }
            first += len;
        }
        let mut scores = vec![0f32; ql * limit];
        let (qs_t, qs_d) = (qv.strides[2], qv.strides[3]);
        let qp = qv.at(&[bi, hh, q0, 0]);
        // SAFETY (the products): every pointer and stride comes from a tensor's layout, the
        // index ranges lie inside its shape, and `scores` / the output rows are this task's.
        let sp = scores.as_mut_ptr();
        let srow = limit as isize;
        for &(sk, _, row, first, seen) in &parts {
            let keys = Mat(sk.at(&[row, g, 0, 0]), sk.strides[3], sk.strides[2]);
            unsafe {
                product(
                    (ql, seen, hd),
                    Mat(sp.add(first), srow, 1),
                    Mat(qp, qs_t, qs_d),
                    keys,
                    false,
                );
            }
        }
        let mut probs = vec![0f32; ql * limit];
        for (r, (s, pr)) in scores
            .chunks(limit)
            .zip(probs.chunks_mut(limit))
            .enumerate()
        {
            masked_softmax_row(s, &mask_row(q0 + r)[..limit], scale, pr);
        }
        let out = Mat(out_row(q0), (h * hd) as isize, 1);
        let pp = probs.as_ptr();
        for (i, &(_, sv, row, first, seen)) in parts.iter().enumerate() {
            let vals = Mat(sv.at(&[row, g, 0, 0]), sv.strides[2], sv.strides[3]);
            unsafe {
                product(
                    (ql, hd, seen),
                    out,
                    Mat(pp.add(first), srow, 1),
                    vals,
                    i > 0,
                )
            };
        }
    });
    drop(segs);
    drop(views);
    drop(guards);
    Ok(Some(Tensor::from_vec(out, (b, t, h, hd), &Device::Cpu)?))
}

/// A matrix in memory: its first element, then the distance between rows and between columns.
#[derive(Clone, Copy)]
struct Mat(*const f32, isize, isize);

/// `dst (+)= lhs · rhs` for `(m, n, k)`: `dst` `m x n`, `lhs` `m x k`, `rhs` `k x n`, added to
/// `dst` when `accumulate`, one thread.
///
/// SAFETY: every matrix lies in memory the caller may read (and write, for `dst`).
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: Mat,
    lhs: Mat,
    rhs: Mat,
    accumulate: bool,
) {
    let alpha = if accumulate { 1.0 } else { 0.0 };
    gemm::gemm(
        m,
        n,
        k,
        dst.0 as *mut f32,
        dst.2,
        dst.1,
        accumulate,
        lhs.0,
        lhs.2,
        lhs.1,
        rhs.0,
        rhs.2,
        rhs.1,
        alpha,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The candle-ops reference: prefix keys repeated per row, concatenated, per-head softmax.
    fn reference(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        prefix: Option<(&Tensor, &Tensor)>,
        scale: f32,
    ) -> Result<Tensor> {
        let (b, h, t, hd) = q.dims4()?;
        let kvh = k.dim(1)?;
        let (k, v) = match prefix {
            Some((pk, pv)) => (
                Tensor::cat(&[&pk.repeat((b, 1, 1, 1))?, k], 2)?,
                Tensor::cat(&[&pv.repeat((b, 1, 1, 1))?, v], 2)?,
            ),
            None => (k.clone(), v.clone()),
        };
        let keys = k.dim(2)?;
        let rep = |x: &Tensor| -> Result<Tensor> {
            x.unsqueeze(2)?
                .repeat((1, 1, h / kvh, 1, 1))?
                .reshape((b, h, keys, hd))
        };
        let (k, v) = (rep(&k)?, rep(&v)?);
        let scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
        let probs = crate::masked_softmax(&scores, mask, scale)?;
        probs
            .matmul(&v.contiguous()?)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h, hd))
    }

    fn mask(b: usize, t: usize, p: usize, n: usize, pad: &[usize]) -> Result<Tensor> {
        // Causal over the own keys (the last `t` of `n`), all of the prefix visible; row `bi`'s
        // last `pad[bi]` own keys are padding nobody sees, and those queries see nothing.
        let keys = p + n;
        let mut m = vec![f32::NEG_INFINITY; b * t * keys];
        for bi in 0..b {
            for i in 0..t {
                if i >= t - pad[bi] {
                    continue;
                }
                for j in 0..keys {
                    let own = j as isize - p as isize;
                    if own < 0 || (own as usize) <= i + (n - t) {
                        m[(bi * t + i) * keys + j] = 0.0;
                    }
                }
            }
        }
        Tensor::from_vec(m, (b, t, keys), &Device::Cpu)
    }

    #[test]
    fn equals_the_candle_ops_with_and_without_a_prefix() -> Result<()> {
        let dev = Device::Cpu;
        // 150 queries: blocks of 64, 64 and 22; 6 heads over 2 key heads; a padded row.
        for (p, t, cached) in [(0, 150, 0), (37, 150, 0), (37, 5, 12), (0, 1, 20)] {
            let (b, h, kvh, hd) = (2, 6, 2, 16);
            let n = t + cached;
            let q = Tensor::randn(0f32, 1.0, (b, t, h, hd), &dev)?.transpose(1, 2)?;
            let k = Tensor::randn(0f32, 1.0, (b, kvh, n, hd), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (b, kvh, n, hd), &dev)?;
            let pk = Tensor::randn(0f32, 1.0, (1, kvh, p, hd), &dev)?;
            let pv = Tensor::randn(0f32, 1.0, (1, kvh, p, hd), &dev)?;
            let prefix = (p > 0).then_some((&pk, &pv));
            let m = mask(b, t, p, n, &[0, t / 3])?;
            let want = reference(&q, &k, &v, &m, prefix, 0.25)?;
            // The row's cached keys as their own segment (no concatenation) and inside `k`.
            let (ck, cv) = (k.narrow(2, 0, cached)?, v.narrow(2, 0, cached)?);
            let (nk, nv) = (k.narrow(2, cached, t)?, v.narrow(2, cached, t)?);
            let mut split: Vec<(&Tensor, &Tensor)> = prefix.into_iter().collect();
            let whole = split.clone();
            split.push((&ck, &cv));
            for (segments, k, v) in [(&whole, &k, &v), (&split, &nk, &nv)] {
                let got = attention_cpu(&q, k, v, &m, segments, 0.25)?.expect("CPU f32");
                let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    diff < 1e-5,
                    "prefix {p}, {t} queries, {cached} cached, {} segments: {diff}",
                    segments.len()
                );
            }
            let got = attention_cpu(&q, &nk, &nv, &m, &split, 0.25)?.expect("CPU f32");
            // The padding queries see no key: zeros.
            if t > 1 {
                let last = got.narrow(0, 1, 1)?.narrow(1, t - 1, 1)?;
                assert_eq!(last.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
            }
        }
        Ok(())
    }

    #[test]
    fn shapes_that_do_not_match_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 4, 3, 8), DType::F32, &dev)?;
        let k = Tensor::zeros((1, 3, 3, 8), DType::F32, &dev)?;
        let m = Tensor::zeros((1, 3, 3), DType::F32, &dev)?;
        let err = attention_cpu(&q, &k, &k, &m, &[], 1.0).unwrap_err();
        assert!(err.to_string().contains("attention: queries"), "{err}");
        let k = Tensor::zeros((1, 2, 3, 8), DType::F32, &dev)?;
        let bad_mask = Tensor::zeros((1, 3, 4), DType::F32, &dev)?;
        assert!(attention_cpu(&q, &k, &k, &bad_mask, &[], 1.0).is_err());
        assert!(attention_cpu(&q, &k, &k, &m, &[], 1.0)?.is_some());
        Ok(())
    }
}
