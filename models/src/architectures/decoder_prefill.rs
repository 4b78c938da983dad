//! The decoder's batched prompt prefill, shared by exact scoring and generation: right-padded
//! prompts after the shared instruction prefix (whose KV cache is computed once per run and
//! reused by every batch that starts with it), run in chunks of [`PREFILL_CHUNK`] positions so
//! a long row's activations never exceed a chunk's.

use super::decoder::{build_mask, gather_rows, Decoder, Keep, KvCache};
use candle_core::{Result, Tensor};

/// Prompt positions per forward pass of a prefill (llama.cpp's micro-batch is 512). Each chunk
/// attends to the earlier chunks' caches where they lie; the activations held at once are a
/// chunk's, not the whole row's (SmolLM2 on a 730-token review: ~27 MB for the whole row at
/// once).
pub const PREFILL_CHUNK: usize = 256;

/// The state after a batch's prompts were run.
pub struct Prefill {
    /// Hidden states `[b, hidden]` of each row's last prompt position.
    pub last: Tensor,
    /// Each row's own cache: its padded prompt after the prefix.
    pub cache: KvCache,
    /// The prefix's batch-1 cache that every row attends to without a copy.
    pub shared: Option<KvCache>,
    /// Tokens covered by the prefix cache (0 without one).
    pub prefix_len: usize,
    /// Keys before anything fed after the prompts: prefix + the longest remaining prompt.
    pub keys: usize,
    /// Each row's prompt length (the real keys of row `i` are `0..lens[i]`).
    pub lens: Vec<usize>,
}

impl Decoder {
    /// Computes and keeps the cache of `prefix` (batch 1); an empty prefix clears it.
    pub fn set_prefix(&self, prefix: &[u32]) -> Result<()> {
        {
            let mut slot = self.prefix.lock().expect("prefix lock");
            if slot.as_ref().is_some_and(|(t, _)| t == prefix) {
                return Ok(());
            }
            *slot = None;
        }
        if prefix.is_empty() {
            return Ok(());
        }
        // Prefilled in chunks like any prompt (no prefix is set while it runs).
        let cache = self.prefill(&[prefix])?.cache;
        *self.prefix.lock().expect("prefix lock") = Some((prefix.to_vec(), cache));
        Ok(())
    }

    /// Runs the prompts (none empty). Right padding keeps real positions at `p..len`, so a
    /// causal mask is exact for real tokens; padded slots must be masked out of everything fed
    /// later (key `k` of row `i` is real when `k < lens[i]` or `k >= keys`).
    pub fn prefill(&self, prompts: &[&[u32]]) -> Result<Prefill> {
        let dev = self.device().clone();
        let b = prompts.len();
        let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        // The shared prefix's cache, when every prompt starts with it and goes beyond it.
        let prefix: Option<KvCache> = {
            let slot = self.prefix.lock().expect("prefix lock");
            match slot.as_ref() {
                Some((tokens, cache))
                    if prompts
                        .iter()
                        .all(|r| r.len() > tokens.len() && r.starts_with(tokens)) =>
                {
                    Some(cache.clone())
                }
                _ => None,
            }
        };
        let p = prefix.as_ref().map_or(0, |c| c.len());
        let lp = *lens.iter().max().expect("at least one prompt") - p;
        let mut toks = Vec::with_capacity(b * lp);
        let mut pos = Vec::with_capacity(b * lp);
        for r in prompts {
            for t in 0..lp {
                toks.push(*r.get(p + t).unwrap_or(&0));
                pos.push((p + t) as u32);
            }
        }
        // Every row attends to the prefix's cache in place, never copied into its own: the
        // fused CPU attention reads it as a separate run of keys (copying SmolLM2's 112-token
        // prefix into each row's cache cost 5 MB and a copy per layer). Prompts that fit in one
        // chunk keep its keys as their cache; longer ones have every chunk write its keys into
        // one cache of the whole length (in the cache's dtype), allocated before the first,
        // which later chunks attend to up to where they start.
        let cfg = &self.config;
        // A chunk is PREFILL_CHUNK positions of work across the batch's rows (at least 16 per
        // row): a batch of short rows holds one chunk's activations like one long row does.
        let chunk = (PREFILL_CHUNK / b).max(16);
        let whole = if lp > chunk {
            let shape = (b, cfg.n_kv_heads, lp, cfg.head_dim);
            let z = || Tensor::zeros(shape, self.kv_dtype, &dev);
            let layers = (0..cfg.n_layers)
                .map(|_| Ok((z()?, z()?)))
                .collect::<Result<_>>()?;
            Some(KvCache { layers })
        } else {
            None
        };
        let mut cache: Option<KvCache> = None;
        let mut last = Vec::with_capacity(b);
        for c0 in (0..lp).step_by(chunk) {
            let cl = chunk.min(lp - c0);
            let slice = |v: &[u32]| -> Vec<u32> {
                (0..b)
                    .flat_map(|r| v[r * lp + c0..r * lp + c0 + cl].to_vec())
                    .collect()
            };
            let ct = Tensor::from_vec(slice(&toks), (b, cl), &dev)?;
            let cp = Tensor::from_vec(slice(&pos), (b, cl), &dev)?;
            let mask = build_mask(b, cl, p + c0 + cl, &dev, |_, q, k| k < p || k - p <= c0 + q)?;
            let hidden = match &whole {
                None => {
                    let (hidden, own) =
                        self.run_layers(&ct, &cp, &mask, prefix.as_ref(), &[], Keep::Own)?;
                    cache = own;
                    hidden
                }
                Some(whole) => {
                    let earlier = whole.narrow(c0)?;
                    let earlier: Vec<&KvCache> = if c0 > 0 { vec![&earlier] } else { vec![] };
                    let keep = Keep::Into(whole, c0);
                    self.run_layers(&ct, &cp, &mask, prefix.as_ref(), &earlier, keep)?
                        .0
                }
            };
            // The rows whose last prompt position is in this chunk.
            let rows: Vec<(usize, usize)> = lens
                .iter()
                .enumerate()
                .filter(|(_, &l)| (c0..c0 + cl).contains(&(l - 1 - p)))
                .map(|(bi, &l)| (bi, l - 1 - p - c0))
                .collect();
            if !rows.is_empty() {
                last.push((
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                    gather_rows(&hidden, &rows)?,
                ));
            }
        }
        // Each row's last hidden state, in row order.
        let mut order = vec![0u32; b];
        let mut n = 0;
        for (rows, _) in &last {
            for &r in rows {
                order[r] = n;
                n += 1;
            }
        }
        let gathered: Vec<&Tensor> = last.iter().map(|(_, t)| t).collect();
        let last =
            Tensor::cat(&gathered, 0)?.index_select(&Tensor::from_vec(order, b, &dev)?, 0)?;
        Ok(Prefill {
            last,
            cache: whole.or(cache).expect("at least one chunk"),
            shared: prefix,
            prefix_len: p,
            keys: p + lp,
            lens,
        })
    }
}
