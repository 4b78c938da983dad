//! The shared last step of every scorer: which hidden states need next-token logits when each
//! row's candidates are laid out as a [`CandidateTrie`], and turning those logits into each
//! candidate's token log-probs.
//!
//! Logit rows are laid out as the `b` roots first (row `i` predicts the first token of every
//! candidate of trie `i`: the prompt's last position, or a decoder's start token), then one row
//! per trie node that has children, in [`inner_nodes`] order.

use crate::scoring::trie::CandidateTrie;
use crate::scoring::CandidateLogprobs;
use candle_core::{Result, Tensor, D};

/// `(trie index, node)` of every node with children, in logit-row order (after the roots).
pub fn inner_nodes(tries: &[CandidateTrie]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (bi, trie) in tries.iter().enumerate() {
        out.extend(trie.fed_nodes().into_iter().map(|node| (bi, node)));
    }
    out
}

/// Where each fed node ([`CandidateTrie::fed_nodes`], per trie) sits in the scorer's candidate
/// pass, in logit-row order after the roots: `(trie, first_slot + i)` for fed node `i`.
pub fn fed_slots(fed: &[Vec<usize>], first_slot: usize) -> Vec<(usize, usize)> {
    fed.iter()
        .enumerate()
        .flat_map(|(bi, nodes)| (0..nodes.len()).map(move |i| (bi, first_slot + i)))
        .collect()
}

/// Logit rows computed at a time in [`candidate_logprobs`]: a batch's label pass can predict
/// at thousands of positions (8 rows of 77 labels: ~3000), and a logit row is the vocabulary in
/// f32 (192 KiB for SmolLM2's 49k tokens, 594 KiB for Qwen2.5's 152k), so all of them at once
/// took hundreds of MB.
pub const LOGIT_ROWS: usize = 64;

/// Token log-probs of every candidate of every trie from the hidden states where they are
/// predicted (`[b + inner, hidden]`, laid out as described above), `logits` turning hidden
/// states into logits: [`LOGIT_ROWS`] rows at a time, each through the fused log-softmax +
/// gather kernel, so only that many logit rows are held.
pub fn candidate_logprobs(
    tries: &[CandidateTrie],
    hidden: &Tensor,
    logits: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Vec<CandidateLogprobs>> {
    let b = tries.len();
    // Logit row of each node's children: its own inner row.
    let mut child_row: Vec<Vec<Option<usize>>> =
        tries.iter().map(|t| vec![None; t.len()]).collect();
    for (i, (bi, node)) in inner_nodes(tries).into_iter().enumerate() {
        child_row[bi][node] = Some(b + i);
    }
    // (logit row, token) of every node, in trie order.
    let mut pairs: Vec<(usize, u32)> = Vec::new();
    for (bi, trie) in tries.iter().enumerate() {
        for node in 0..trie.len() {
            let row = match trie.parents[node] {
                None => bi,
                Some(p) => child_row[bi][p].expect("a parent has children"),
            };
            pairs.push((row, trie.tokens[node]));
        }
    }
    let rows = hidden.dim(0)?;
    // Each chunk's pairs (their indices), by the chunk their row falls in.
    let mut by_chunk: Vec<Vec<usize>> = vec![Vec::new(); rows.div_ceil(LOGIT_ROWS)];
    for (i, &(row, _)) in pairs.iter().enumerate() {
        by_chunk[row / LOGIT_ROWS].push(i);
    }
    let mut node_lp = vec![0f32; pairs.len()];
    for (c, members) in by_chunk.iter().enumerate() {
        if members.is_empty() {
            continue;
        }
        let start = c * LOGIT_ROWS;
        let logits = logits(&hidden.narrow(0, start, LOGIT_ROWS.min(rows - start))?)?;
        // Checked here, where the pairs are built: on a GPU an out-of-range pair would read as
        // NaN.
        let vocab = logits.dim(D::Minus1)?;
        if let Some(&(_, t)) = members
            .iter()
            .map(|&i| &pairs[i])
            .find(|(_, t)| *t as usize >= vocab)
        {
            candle_core::bail!(
                "label token id {t} is outside the model's vocabulary of {vocab}: the tokenizer does not belong to this model"
            )
        }
        let flat: Vec<u32> = members
            .iter()
            .flat_map(|&i| [(pairs[i].0 - start) as u32, pairs[i].1])
            .collect();
        let chunk_pairs = Tensor::from_vec(flat, (members.len(), 2), logits.device())?;
        let lp = autolabel_kernels::log_softmax_gather(&logits, &chunk_pairs)?.to_vec1::<f32>()?;
        for (&i, v) in members.iter().zip(lp) {
            node_lp[i] = v;
        }
    }
    let mut out = Vec::with_capacity(b);
    let mut offset = 0;
    for trie in tries {
        out.push(CandidateLogprobs {
            token_logprobs: trie
                .paths
                .iter()
                .map(|path| path.iter().map(|&node| node_lp[offset + node]).collect())
                .collect(),
        });
        offset += trie.len();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn a_label_token_outside_the_vocabulary_is_an_error() -> Result<()> {
        let tries = [CandidateTrie::build(&[vec![1], vec![7]])];
        let hidden = Tensor::zeros((1, 4), DType::F32, &Device::Cpu)?;
        let same = |h: &Tensor| Ok(h.clone());
        let err = candidate_logprobs(&tries, &hidden, same)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token id 7 is outside the model's vocabulary of 4"),
            "{err}"
        );
        let ok = candidate_logprobs(&[CandidateTrie::build(&[vec![1], vec![3]])], &hidden, same)?;
        assert_eq!(ok.len(), 1);
        Ok(())
    }
}
