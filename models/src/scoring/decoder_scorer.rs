//! Exact candidate scoring for decoder-only models: one prefill of the (right-padded) prompts, then
//! every candidate of every row in one pass laid out as a token trie that attends to the prompt's
//! KV cache through a tree mask. The prompt cache is shared by all candidates, never copied per
//! candidate, and logits are computed only at positions that predict a candidate token. A shared
//! prefix (the task's instructions) is prefilled once per run and its cache reused by every
//! batch whose prompts all start with it, so each row's prefill covers only its own tokens.

use crate::architectures::decoder::{build_mask, gather_rows, Decoder, Keep};
use crate::scoring::trie::CandidateTrie;
use crate::scoring::trie_logprobs::{candidate_logprobs, fed_slots};
use crate::scoring::{CandidateLogprobs, ContinuationScorer, ScoreRequest};
use candle_core::{bail, Result, Tensor};

impl ContinuationScorer for Decoder {
    fn context_length(&self) -> usize {
        self.config.context_length
    }

    fn set_shared_prefix(&self, prefix: &[u32]) -> Result<()> {
        self.set_prefix(prefix)
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

        // 1. Prefill (of what follows the shared prefix, whose cache is reused).
        let prompts: Vec<&[u32]> = requests.iter().map(|r| r.prompt.as_slice()).collect();
        let pre = self.prefill(&prompts)?;
        let (lp, separate, cache) = (pre.keys, pre.shared.as_ref(), &pre.cache);

        // 2. Candidate pass over the trie nodes that have children: a node without children
        //    (every candidate's last token) predicts nothing, so it is never fed. All tries,
        //    padded to the largest, with a tree mask; parents come before children, so the fed
        //    nodes keep that order.
        let fed: Vec<Vec<usize>> = tries.iter().map(CandidateTrie::fed_nodes).collect();
        let n = fed.iter().map(|f| f.len()).max().unwrap();
        // 3. Logits only where a candidate token is predicted: each prompt's last position and
        //    every fed node (in `inner_nodes` order).
        let mut hidden = vec![pre.last.clone()];
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
            // Nothing is fed after the candidates: their keys are not kept, and the row's cache is
            // read where it lies.
            let (hidden_cand, _) =
                self.run_layers(&toks, &pos, &mask, separate, &[cache], Keep::Nothing)?;
            hidden.push(gather_rows(&hidden_cand, &fed_slots(&fed, 0))?);
        }
        candidate_logprobs(&tries, &Tensor::cat(&hidden, 0)?, |h| self.logits(h))
    }
}
