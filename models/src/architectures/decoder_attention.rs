//! The decoder's attention with candle ops, where the fused CPU kernel
//! (`autolabel_kernels::attention_cpu`) does not run (CUDA, Metal, other dtypes): one pass with a
//! shared prefix read once for every row, or, for a long causal prefill, blocks of queries
//! against only the keys they can see.

use candle_core::{DType, Result, Tensor};

/// Attention of queries `[b, h, t, hd]` over keys and values `[b, kvh, k, hd]` under `mask`
/// (`[b, t, keys]`), where the keys are the batch-1 `prefix` (keys, values `[1, kvh, P, hd]`),
/// if any, then `k`. Grouped-query attention without repeating K/V: the query group is folded
/// into rows, and the prefix is shared by all rows through one matmul over their stacked
/// queries. Returns `[b, h, t, hd]`.
pub(super) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    prefix: Option<&(Tensor, Tensor)>,
    scale: f32,
) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    let kvh = k.dim(1)?;
    let group = h / kvh;
    let k_len = mask.dim(2)?;
    let qg = q.reshape((b, kvh, group * t, hd))?;
    let own = qg.matmul(&k.t()?)?;
    // Every row's queries stacked as [kvh, b*group*t, hd] against the one prefix cache
    // [kvh, P, hd].
    let shared = match prefix {
        Some((pk, pv)) => {
            let stacked = qg
                .transpose(0, 1)?
                .contiguous()?
                .reshape((kvh, b * group * t, hd))?;
            Some((pk.squeeze(0)?, pv.squeeze(0)?, stacked))
        }
        None => None,
    };
    let scores = match &shared {
        Some((pk, _, stacked)) => {
            let plen = pk.dim(1)?;
            let ps = stacked
                .matmul(&pk.t()?)?
                .reshape((kvh, b, group * t, plen))?
                .transpose(0, 1)?;
            Tensor::cat(&[&ps, &own], 3)?
        }
        None => own,
    };
    // Scale, mask (shared by every head) and softmax in one fused pass.
    let probs = autolabel_kernels::masked_softmax(&scores.reshape((b, h, t, k_len))?, mask, scale)?
        .reshape((b, kvh, group * t, k_len))?;
    let attn = match &shared {
        Some((_, pv, _)) => {
            let plen = pv.dim(1)?;
            let pp = probs
                .narrow(3, 0, plen)?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((kvh, b * group * t, plen))?;
            let from_prefix = pp
                .matmul(pv)?
                .reshape((kvh, b, group * t, hd))?
                .transpose(0, 1)?;
            let own_probs = probs.narrow(3, plen, k_len - plen)?.contiguous()?;
            (from_prefix + own_probs.matmul(v)?)?
        }
        None => probs.matmul(v)?,
    };
    attn.reshape((b, h, t, hd))
}

/// Query block size of [`chunked_attention`].
pub(super) const ATTENTION_CHUNK: usize = 128;

/// For a long run of queries (`t >= 2 * chunk`) whose mask hides later keys from earlier queries
/// (a causal prefill), the blocks of `chunk` queries as `(first query, queries, keys it can
/// see)`; `None` when every block would see every key. Read from the mask itself, so any mask
/// is handled exactly: the keys past a block's limit are masked for all of its queries.
pub(super) fn attention_chunks(
    mask: &Tensor,
    chunk: usize,
) -> Result<Option<Vec<(usize, usize, usize)>>> {
    let (b, t, k) = mask.dims3()?;
    // Measured on CPU only; a GPU keeps one attention matmul (and no mask copy to the host).
    if t < 2 * chunk || k == 0 || !mask.device().is_cpu() {
        return Ok(None);
    }
    let m = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let mut limit = vec![1usize; t];
    for bi in 0..b {
        for (qi, l) in limit.iter_mut().enumerate() {
            let row = &m[(bi * t + qi) * k..(bi * t + qi + 1) * k];
            if let Some(last) = row.iter().rposition(|&v| v != f32::NEG_INFINITY) {
                *l = (*l).max(last + 1);
            }
        }
    }
    let blocks: Vec<(usize, usize, usize)> = (0..t)
        .step_by(chunk)
        .map(|q0| {
            let ql = chunk.min(t - q0);
            (q0, ql, *limit[q0..q0 + ql].iter().max().unwrap())
        })
        .collect();
    Ok(blocks.iter().any(|&(_, _, kl)| kl < k).then_some(blocks))
}

/// Attention of queries `[b, h, t, hd]` over keys and values `[b, kvh, k, hd]` under `mask`
/// (`[b, t, k]`), one block of queries at a time against only the keys the block can see (about
/// 5/8 of the work of a 512-token causal prefill). Returns `[b, h, t, hd]`.
pub(super) fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    chunks: &[(usize, usize, usize)],
    scale: f32,
) -> Result<Tensor> {
    let (b, h, _, hd) = q.dims4()?;
    let kvh = k.dim(1)?;
    let group = h / kvh;
    let mut out = Vec::with_capacity(chunks.len());
    for &(q0, ql, kl) in chunks {
        let qc = q
            .narrow(2, q0, ql)?
            .contiguous()?
            .reshape((b, kvh, group * ql, hd))?;
        let kc = k.narrow(2, 0, kl)?;
        let scores = qc.matmul(&kc.t()?)?.reshape((b, h, ql, kl))?;
        let m = mask.narrow(1, q0, ql)?.narrow(2, 0, kl)?;
        let probs = autolabel_kernels::masked_softmax(&scores, &m, scale)?.reshape((
            b,
            kvh,
            group * ql,
            kl,
        ))?;
        let vc = v.narrow(2, 0, kl)?;
        out.push(probs.matmul(&vc)?.reshape((b, h, ql, hd))?);
    }
    Tensor::cat(&out, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::architectures::decoder::build_mask;
    use candle_core::Device;

    /// Plain attention with K/V repeated per query head: the reference for the chunked path.
    fn reference_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        scale: f32,
    ) -> Result<Tensor> {
        let (b, h, t, _) = q.dims4()?;
        let group = h / k.dim(1)?;
        let rep = |x: &Tensor| -> Result<Tensor> {
            let (b, kvh, n, d) = x.dims4()?;
            x.unsqueeze(2)?
                .broadcast_as((b, kvh, group, n, d))?
                .reshape((b, kvh * group, n, d))
        };
        let (k, v) = (rep(k)?, rep(v)?);
        let scores = ((q.matmul(&k.t()?.contiguous()?)? * scale as f64)?
            .broadcast_add(&mask.reshape((b, 1, t, mask.dim(2)?))?))?;
        candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v.contiguous()?)
    }

    #[test]
    fn chunked_attention_matches_plain_attention_on_a_causal_prefill_after_a_cache() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, kvh, hd, cached, t) = (2, 6, 2, 8, 20, 300);
        let q = Tensor::randn(0f32, 1.0, (b, h, t, hd), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, kvh, cached + t, hd), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, kvh, cached + t, hd), &dev)?;
        // Row 1 is padded: its last 50 queries are padding that attends to itself only.
        let mask = build_mask(b, t, cached + t, &dev, |bi, qi, ki| {
            if bi == 1 && qi >= 250 {
                ki == cached + qi
            } else {
                ki <= cached + qi
            }
        })?;
        let chunks = attention_chunks(&mask, 128)?.expect("a causal prefill is chunked");
        assert_eq!(
            chunks,
            vec![
                (0, 128, cached + 128),
                (128, 128, cached + 256),
                (256, 44, cached + 300)
            ]
        );
        let got = chunked_attention(&q, &k, &v, &mask, &chunks, 0.3)?;
        let want = reference_attention(&q, &k, &v, &mask, 0.3)?;
        let d = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "max difference {d}");
        Ok(())
    }

    #[test]
    fn masks_where_every_block_sees_every_key_are_not_chunked() -> Result<()> {
        let dev = Device::Cpu;
        // Short runs, and long runs in which every block has a query that sees the last key.
        let short = build_mask(1, 200, 200, &dev, |_, q, k| k <= q)?;
        assert!(attention_chunks(&short, 128)?.is_none());
        let open = build_mask(1, 300, 310, &dev, |_, q, k| {
            k < 10 || k == q + 10 || k == 309
        })?;
        assert!(attention_chunks(&open, 128)?.is_none());
        Ok(())
    }
}
