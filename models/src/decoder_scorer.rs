//! Exact candidate scoring for decoder-only models: one prefill of the (right-padded) prompts, then
//! every candidate of every row in one pass laid out as a token trie that attends to the prompt's
//! KV cache through a tree mask. The prompt cache is shared by all candidates, never copied per
//! candidate, and logits are computed only at positions that predict a candidate token. A shared
//! prefix (the task's instructions) is prefilled once per run and its cache reused by every
//! batch whose prompts all start with it, so each row's prefill covers only its own tokens.

use crate::decoder::{build_mask, gather_rows, Decoder, KvCache};
use crate::scoring::{CandidateLogprobs, ContinuationScorer, ScoreRequest};
use crate::trie::CandidateTrie;
use crate::trie_logprobs::{candidate_logprobs, fed_slots};
use candle_core::{bail, Result, Tensor};

impl ContinuationScorer for Decoder {
    fn context_length(&self) -> usize {
        self.config.context_length
    }

    fn set_shared_prefix(&self, prefix: &[u32]) -> Result<()> {
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

    fn score_batch(&self, requests: &[ScoreRequest]) -> Result<Vec<CandidateLogprobs>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let dev = self.device().clone();
        let b = requests.len();
        let tries: Vec<CandidateTrie> = requests
            .iter()
            .map(|r| CandidateTrie::build(&r.candidates))
            .collect();
        let lens: Vec<usize> = requests.iter().map(|r| r.prompt.len()).collect();
        for (i, r) in requests.iter().enumerate() {
            r.check(i)?;
            let deepest = r.candidates.iter().map(|c| c.len()).max().unwrap_or(0);
            if r.prompt.len() + deepest > self.config.context_length {
                bail!(
                    "request {i}: prompt ({}) + candidate ({deepest}) tokens exceed the context length {}",
                    r.prompt.len(),
                    self.config.context_length
                )
            }
        }

        // 0. The shared prefix's cache (batch 1), when every prompt starts with it and goes
        //    beyond it; every row attends to it without a copy, and the prefill below covers
        //    only what follows it.
        let shared: Option<KvCache> = {
            let slot = self.prefix.lock().expect("prefix lock");
            match slot.as_ref() {
                Some((tokens, cache))
                    if requests
                        .iter()
                        .all(|r| r.prompt.len() > tokens.len() && r.prompt.starts_with(tokens)) =>
                {
                    Some(cache.clone())
                }
                _ => None,
            }
        };
        let p = shared.as_ref().map_or(0, |c| c.len());

        // 1. Prefill (of what follows the prefix): right padding keeps real positions at
        //    p..len, so a causal mask is exact for real tokens; padded slots are masked out of
        //    everything that follows.
        let lp = *lens.iter().max().unwrap() - p;
        let mut toks = Vec::with_capacity(b * lp);
        let mut pos = Vec::with_capacity(b * lp);
        for r in requests {
            for t in 0..lp {
                toks.push(*r.prompt.get(p + t).unwrap_or(&0));
                pos.push((p + t) as u32);
            }
        }
        let toks = Tensor::from_vec(toks, (b, lp), &dev)?;
        let pos = Tensor::from_vec(pos, (b, lp), &dev)?;
        let mask = build_mask(b, lp, p + lp, &dev, |_, q, k| k < p || k - p <= q)?;
        // One row attends to the prefix cache as its own (measured faster: no stacking copies);
        // several rows share it without a copy per row (less memory: ~30 MB per row for
        // SmolLM2's 640-token prefix).
        let (separate, own) = if b == 1 {
            (None, shared.as_ref())
        } else {
            (shared.as_ref(), None)
        };
        let (hidden_prompt, cache) = self.forward_with_prefix(&toks, &pos, &mask, separate, own)?;
        let lp = p + lp; // cache length from here on

        // 2. Candidate pass over the trie nodes that have children: a node without children
        //    (every candidate's last token) predicts nothing, so it is never fed. All tries,
        //    padded to the largest, with a tree mask; parents come before children, so the fed
        //    nodes keep that order.
        let fed: Vec<Vec<usize>> = tries.iter().map(CandidateTrie::fed_nodes).collect();
        let n = fed.iter().map(|f| f.len()).max().unwrap();
        // 3. Logits only where a candidate token is predicted: each prompt's last position and
        //    every fed node (in `inner_nodes` order).
        let root_rows: Vec<(usize, usize)> = lens
            .iter()
            .enumerate()
            .map(|(bi, &l)| (bi, l - 1 - p))
            .collect();
        let mut hidden = vec![gather_rows(&hidden_prompt, &root_rows)?];
        if n > 0 {
            let mut toks = Vec::with_capacity(b * n);
            let mut pos = Vec::with_capacity(b * n);
            for ((trie, nodes), &len) in tries.iter().zip(&fed).zip(&lens) {
                for i in 0..n {
                    let node = nodes.get(i);
                    toks.push(node.map_or(0, |&j| trie.tokens[j]));
                    pos.push((len + node.map_or(0, |&j| trie.depths[j])) as u32);
                }
            }
            let toks = Tensor::from_vec(toks, (b, n), &dev)?;
            let pos = Tensor::from_vec(pos, (b, n), &dev)?;
            let mask = build_mask(b, n, lp + n, &dev, |bi, q, k| {
                let nodes = &fed[bi];
                if q >= nodes.len() {
                    return k == lp + q; // padding attends to itself only (keeps softmax finite)
                }
                if k < lp {
                    k < lens[bi]
                } else {
                    let j = k - lp;
                    j < nodes.len() && tries[bi].is_ancestor_or_self(nodes[j], nodes[q])
                }
            })?;
            let (hidden_cand, _) =
                self.forward_with_prefix(&toks, &pos, &mask, separate, Some(&cache))?;
            hidden.push(gather_rows(&hidden_cand, &fed_slots(&fed, 0))?);
        }
        let logits = self.logits(&Tensor::cat(&hidden, 0)?)?;
        candidate_logprobs(&tries, &logits)
    }
}
