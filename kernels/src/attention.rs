//! Attention on the CPU in one parallel pass: for each (row, key head, block of queries, with
//! every query head that shares the key head), the scores against a shared prefix's keys and
//! the row's own keys written side by side (no concatenation of caches), the mask and softmax
//! applied only up to the last key each query can see (a causal prefill skips the hidden
//! half), and the weighted values summed straight from the strided values. The products
//! ([`crate::attention_products`]) run every sum in one fixed order, so a row's result does
//! not depend on its batch, padding or chunks. The keys are packed once per call (transposed,
//! per row and key head) for the scores' SIMD lanes.

use crate::attention_pack::{Packed, Segment, View};
use crate::attention_products::{self as products, Out, Width};
use crate::simd::masked_softmax_row;
use crate::TaskPtr;
use candle_core::{DType, Device, Result, Tensor};

/// Query rows per task (queries x the heads that share a key head): enough rows to reuse the
/// packed keys and values, few enough for every core to get work on short inputs.
const QUERY_BLOCK: usize = 64;

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
    // Values are read a head dimension at a time: any with another layout is copied.
    let copies: Vec<Option<Tensor>> = before
        .iter()
        .map(|s| s.1)
        .chain([v])
        .map(|v| match v.stride().last() {
            Some(1) => Ok(None),
            _ => v.contiguous().map(Some),
        })
        .collect::<Result<_>>()?;
    let mut segments = Vec::with_capacity(before.len() + 1);
    for (i, &(pk, pv)) in before.iter().enumerate() {
        let (sb, skvh, len, shd) = pk.dims4()?;
        if (sb != 1 && sb != b) || skvh != kvh || shd != hd || pv.dims4()? != (sb, kvh, len, hd) {
            candle_core::bail!(
                "attention: earlier keys {:?}, values {:?} for {b} rows of {kvh} x {hd}",
                pk.dims(),
                pv.dims()
            )
        }
        segments.push((pk, copies[i].as_ref().unwrap_or(pv), sb == 1, len));
    }
    segments.push((k, copies[before.len()].as_ref().unwrap_or(v), false, n));
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
    for (i, (storage, layout)) in guards.iter().enumerate() {
        // Queries and mask in f32; keys and values in f32 or f16 (a `--dtype q` CPU cache).
        match View::of(storage, layout, i >= 2)? {
            Some(view) => views.push(view),
            None => return Ok(None),
        }
    }
    let (qv, mv) = (&views[0], &views[1]);
    let segs: Vec<Segment> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| Segment {
            k: &views[2 + 2 * i],
            v: &views[3 + 2 * i],
            shared: s.2,
            len: s.3,
        })
        .collect();
    let width = Width::detect();
    // Every segment's keys packed once, per row (once for a shared one) and key head, as
    // panels of SIMD lanes; f16 values converted.
    let packed = Packed::new(&segs, b, kvh, hd, width);
    // A task is one row's key head over a block of queries, all the heads that share that key
    // head at once (rows query-major: row `r` is query `q0 + r / group`, head
    // `g * group + r % group`), so a generation step's or a label pass's few queries still
    // fill the products' tiles and read each key and value once for the whole group.
    let group = h / kvh;
    let qb = (QUERY_BLOCK / group).max(1);
    let blocks = t.div_ceil(qb);
    let mut out = vec![0f32; b * t * h * hd];
    let out_ptr = TaskPtr(out.as_mut_ptr());
    let m_ptr = TaskPtr(mv.at(&[0, 0, 0]) as *mut f32);
    crate::team::for_each(b * kvh * blocks, |task| {
        let (bi, rest) = (task / (kvh * blocks), task % (kvh * blocks));
        let (g, blk) = (rest / blocks, rest % blocks);
        let q0 = blk * qb;
        let ql = qb.min(t - q0);
        let rows = ql * group;
        // SAFETY: `mask` is contiguous `[b, t, keys]`.
        let mask_row = |i: usize| unsafe {
            std::slice::from_raw_parts(m_ptr.get().add((bi * t + i) * keys), keys)
        };
        // The keys each query may see (up to its last unmasked one), per row, and the block's
        // furthest.
        let sees: Vec<usize> = (q0..q0 + ql)
            .flat_map(|i| {
                let n = mask_row(i)
                    .iter()
                    .rposition(|&m| m != f32::NEG_INFINITY)
                    .map_or(0, |last| last + 1);
                std::iter::repeat_n(n, group)
            })
            .collect();
        let limit = sees.iter().copied().max().unwrap_or(0);
        if limit == 0 {
            return; // every key masked: zeros, as allocated
        }
        // Each segment's packed keys, values, first key and visible length.
        let mut parts = Vec::with_capacity(segs.len());
        let mut first = 0;
        for (si, sg) in segs.iter().enumerate() {
            let seen = sg.len.min(limit.saturating_sub(first));
            if seen > 0 {
                let row = if sg.shared { 0 } else { bi };
                parts.push(packed.part(&segs, si, (row, g), first, seen));
            }
            first += sg.len;
        }
        // The block's query rows, contiguous.
        let mut qs = Vec::with_capacity(rows * hd);
        let (qs_h, qs_t, qs_d) = (qv.strides[1], qv.strides[2], qv.strides[3]);
        let qp = qv.at(&[bi, g * group, q0, 0]);
        for r in 0..rows {
            let (i, hh) = ((r / group) as isize, (r % group) as isize);
            // SAFETY: inside the queries' shape.
            unsafe {
                let row = qp.offset(i * qs_t + hh * qs_h);
                if qs_d == 1 {
                    qs.extend_from_slice(std::slice::from_raw_parts(row, hd));
                } else {
                    qs.extend((0..hd as isize).map(|d| *row.offset(d * qs_d)));
                }
            }
        }
        let mut scores = vec![0f32; rows * limit];
        // SAFETY: the parts lie inside their tensors and cover keys `..limit` of the rows.
        unsafe { products::scores(width, &qs, &sees, hd, &parts, &mut scores, limit) };
        // Each row's softmax over the keys it sees; past them its probabilities stay 0.
        let mut probs = vec![0f32; rows * limit];
        for (r, (s, pr)) in scores
            .chunks(limit)
            .zip(probs.chunks_mut(limit))
            .enumerate()
        {
            let n = sees[r];
            masked_softmax_row(&s[..n], &mask_row(q0 + r / group)[..n], scale, &mut pr[..n]);
        }
        let dest = Out {
            ptr: out_ptr
                .get()
                .wrapping_add(((bi * t + q0) * h + g * group) * hd),
            per: group,
            ld: h * hd,
        };
        // SAFETY: as above; the output rows of these queries and heads are this task's.
        unsafe { products::weighted_values(width, &probs, limit, &sees, hd, &parts, dest) };
    });
    drop(packed);
    drop(segs);
    drop(views);
    drop(guards);
    Ok(Some(Tensor::from_vec(out, (b, t, h, hd), &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention_products::Part;

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

    /// A row's attention is the same bit for bit alone, padded in a batch beside a longer row,
    /// and with its keys split into an earlier segment (a chunked prefill): every sum runs in
    /// one order whatever the shapes, on every SIMD width.
    #[test]
    fn a_rows_result_does_not_depend_on_batch_padding_or_chunks() -> Result<()> {
        let dev = Device::Cpu;
        let (h, kvh, hd, p) = (6, 2, 64, 21);
        let (short, long) = (37, 90);
        let pk = Tensor::randn(0f32, 1.0, (1, kvh, p, hd), &dev)?;
        let pv = Tensor::randn(0f32, 1.0, (1, kvh, p, hd), &dev)?;
        let q = Tensor::randn(0f32, 1.0, (2, h, long, hd), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (2, kvh, long, hd), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (2, kvh, long, hd), &dev)?;
        let row = |x: &Tensor, n: usize| x.narrow(0, 1, 1).and_then(|x| x.narrow(2, 0, n));
        // Row 1 alone (its own length), and in a batch padded to row 0's length.
        let (q1, k1, v1) = (
            row(&q, short)?.contiguous()?,
            row(&k, short)?,
            row(&v, short)?,
        );
        let alone = attention_cpu(
            &q1,
            &k1,
            &v1,
            &mask(1, short, p, short, &[0])?,
            &[(&pk, &pv)],
            0.125,
        )?
        .expect("CPU f32");
        let m = mask(2, long, p, long, &[0, long - short])?;
        let batch = attention_cpu(&q, &k, &v, &m, &[(&pk, &pv)], 0.125)?.expect("CPU f32");
        let got = batch.narrow(0, 1, 1)?.narrow(1, 0, short)?;
        // Row 1 in two chunks: positions ..20 as an earlier segment, then 20..short.
        let c = 20;
        let m2 = mask(1, short - c, p, short, &[0])?;
        let (ek, ev) = (k1.narrow(2, 0, c)?, v1.narrow(2, 0, c)?);
        let second = attention_cpu(
            &q1.narrow(2, c, short - c)?.contiguous()?,
            &k1.narrow(2, c, short - c)?,
            &v1.narrow(2, c, short - c)?,
            &m2,
            &[(&pk, &pv), (&ek, &ev)],
            0.125,
        )?
        .expect("CPU f32");
        let alone_v = alone.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(
            alone_v,
            got.flatten_all()?.to_vec1::<f32>()?,
            "padded in a batch"
        );
        let tail = alone
            .narrow(1, c, short - c)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(tail, second.flatten_all()?.to_vec1::<f32>()?, "chunked");
        // Every SIMD width gives the same values.
        for width in [Width::Scalar, Width::detect()] {
            let probs = [0.25f32, 0.0, 0.5, 0.25, 0.0];
            let vals: Vec<f32> = (0..5 * 20).map(|i| (i as f32 * 0.37).sin()).collect();
            let part = Part {
                packed: std::ptr::null(),
                ldk: 0,
                v: vals.as_ptr(),
                v16: std::ptr::null(),
                vj: 20,
                first: 0,
                seen: 5,
            };
            let mut out = vec![0f32; 20];
            unsafe {
                let dest = Out {
                    ptr: out.as_mut_ptr(),
                    per: 1,
                    ld: 20,
                };
                products::weighted_values(width, &probs, 5, &[5], 20, &[part], dest)
            };
            let want: Vec<f32> = (0..20)
                .map(|d| (0..5).fold(0f32, |acc, j| probs[j].mul_add(vals[j * 20 + d], acc)))
                .collect();
            assert_eq!(out, want, "{width:?}");
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
