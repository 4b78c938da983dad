//! The decoder's batched prompt prefill, shared by exact scoring and generation: right-padded
//! prompts after the shared instruction prefix (whose KV cache is computed once per run and
//! reused by every batch that starts with it).

use super::decoder::{build_mask, Decoder, KvCache};
use candle_core::{Result, Tensor};

/// The state after a batch's prompts were run.
pub struct Prefill {
    /// Hidden states `[b, padded, hidden]` of the prompt positions after the prefix.
    pub hidden: Tensor,
    /// Each row's own cache: the prefix (when it is not `shared`), then its padded prompt.
    pub cache: KvCache,
    /// The prefix's batch-1 cache that every row attends to without a copy (batches of two or
    /// more rows; one row keeps it inside `cache`, measured faster).
    pub shared: Option<KvCache>,
    /// Tokens covered by the prefix cache (0 without one).
    pub prefix_len: usize,
    /// Keys before anything fed after the prompts: prefix + the longest remaining prompt.
    pub keys: usize,
    /// Each row's prompt length (the real keys of row `i` are `0..lens[i]`).
    pub lens: Vec<usize>,
}

impl Prefill {
    /// `(row, position in hidden)` of each row's last prompt token.
    pub fn last_rows(&self) -> Vec<(usize, usize)> {
        self.lens
            .iter()
            .enumerate()
            .map(|(bi, &l)| (bi, l - 1 - self.prefix_len))
            .collect()
    }
}

impl Decoder {
    /// Computes and keeps the cache of `prefix` (batch 1); an empty prefix clears it.
    pub fn set_prefix(&self, prefix: &[u32]) -> Result<()> {
        let mut slot = self.prefix.lock().expect("prefix lock");
        if prefix.is_empty() {
            *slot = None;
            return Ok(());
        }
        if slot.as_ref().is_some_and(|(t, _)| t == prefix) {
            return Ok(());
        }
        let dev = self.device().clone();
        let n = prefix.len();
        let toks = Tensor::from_vec(prefix.to_vec(), (1, n), &dev)?;
        let pos = Tensor::arange(0u32, n as u32, &dev)?.reshape((1, n))?;
        let mask = build_mask(1, n, n, &dev, |_, q, k| k <= q)?;
        let (_, cache) = self.forward(&toks, &pos, &mask, None)?;
        *slot = Some((prefix.to_vec(), cache));
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
        let toks = Tensor::from_vec(toks, (b, lp), &dev)?;
        let pos = Tensor::from_vec(pos, (b, lp), &dev)?;
        let mask = build_mask(b, lp, p + lp, &dev, |_, q, k| k < p || k - p <= q)?;
        // One row attends to the prefix cache as its own (measured faster: no stacking copies);
        // several rows share it without a copy per row (less memory: ~30 MB per row for
        // SmolLM2's 640-token prefix).
        let (shared, own) = if b == 1 {
            (None, prefix.as_ref())
        } else {
            (prefix.as_ref(), None)
        };
        let (hidden, cache) = self.forward_with_prefix(&toks, &pos, &mask, shared, own)?;
        Ok(Prefill {
            hidden,
            cache,
            shared: shared.cloned(),
            prefix_len: p,
            keys: p + lp,
            lens,
        })
    }
}
