//! How a pass groups its work: rows of similar length in batches capped in tokens, the
//! chain-of-thought scoring batches that follow the explanation batches, and repeated requests
//! run once.

use crate::journal::RowKey;
use crate::labeler::Prepared;
use std::sync::Arc;

/// Tokens a batch may push through the model: rows x (the longest prompt beyond the shared
/// prefix + the most label-trie nodes fed per row). On CPU, bigger batches of long rows are
/// slower per row (attention and padding grow faster than the matmuls gain) and hold more
/// memory; short rows (a few dozen tokens each) still batch up to `--batch-size`. Measured on 2 cores, SmolLM2:
/// movie_reviews 1.68 rows/s one row at a time vs 0.99 in batches of 8; sms_spam 6.1 vs 12.7.
pub const BATCH_WORK_TOKENS: usize = 512;

/// Groups rows of similar length (indices into `prepared`, sorted by prompt length) so that each
/// batch stays within `--batch-size` rows and [`BATCH_WORK_TOKENS`].
pub fn batches(prepared: &[&Prepared], batch_size: usize, shared_prefix: usize) -> Vec<Vec<usize>> {
    let mut trie_len: Vec<(*const Vec<Vec<u32>>, usize)> = Vec::new();
    let mut work = |p: &Prepared| -> usize {
        let key = Arc::as_ptr(&p.candidates);
        let t = match trie_len.iter().find(|(k, _)| *k == key) {
            Some((_, n)) => *n,
            None => {
                let n = autolabel_models::scoring::trie::CandidateTrie::build(&p.candidates)
                    .fed_nodes()
                    .len();
                trie_len.push((key, n));
                n
            }
        };
        p.prompt_ids.len().saturating_sub(shared_prefix) + t
    };
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    order.sort_by_key(|&i| prepared[i].prompt_ids.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut widest = 0;
    for i in order {
        let w = work(prepared[i]);
        if !cur.is_empty()
            && (cur.len() >= batch_size.max(1)
                || (cur.len() + 1) * widest.max(w) > BATCH_WORK_TOKENS)
        {
            out.push(std::mem::take(&mut cur));
            widest = 0;
        }
        widest = widest.max(w);
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The scoring batches of explained rows: each explanation batch's rows (those that could be
/// prepared and are not repeats), in the explanation pass's order (a batch left empty keeps
/// its place, so batch numbers, and with them shards, agree); rows in no explanation batch
/// follow in batches of their own.
pub(crate) fn explained_batches(
    explained: &[Vec<usize>],
    prepared: &[(usize, Prepared)],
    batch_size: usize,
    shared_prefix: usize,
) -> Vec<Vec<usize>> {
    let by_row: std::collections::HashMap<usize, usize> = prepared
        .iter()
        .enumerate()
        .map(|(j, (i, _))| (*i, j))
        .collect();
    let mut placed = vec![false; prepared.len()];
    let mut out: Vec<Vec<usize>> = explained
        .iter()
        .map(|b| {
            b.iter()
                .filter_map(|r| by_row.get(r).copied())
                .inspect(|&j| placed[j] = true)
                .collect()
        })
        .collect();
    let rest: Vec<usize> = (0..prepared.len()).filter(|&j| !placed[j]).collect();
    out.extend(batches_of(prepared, &rest, batch_size, shared_prefix));
    out
}

/// [`batches`] over the items `subset` names (indices into `prepared`, given back as such).
pub(crate) fn batches_of(
    prepared: &[(usize, Prepared)],
    subset: &[usize],
    batch_size: usize,
    shared_prefix: usize,
) -> Vec<Vec<usize>> {
    let items: Vec<&Prepared> = subset.iter().map(|&j| &prepared[j].1).collect();
    batches(&items, batch_size, shared_prefix)
        .into_iter()
        .map(|b| b.into_iter().map(|k| subset[k]).collect())
        .collect()
}

/// Rows whose request repeats an earlier row's: (the copy's row index, the index of the first
/// such item among the distinct ones). Each distinct request is run once per pass and its result
/// copied, so a resumed run (where a copy may come from the journal) and an uninterrupted one
/// (where it would otherwise be scored in another batch, with other rounding) agree bit for bit.
pub struct Repeats {
    pub copies: Vec<(usize, usize)>,
}

impl Repeats {
    /// Keeps the first item of each key (items are `(row index, item)` in file order) and
    /// records the others as copies.
    pub fn split<T>(items: Vec<(usize, T)>, key: impl Fn(&T) -> RowKey) -> (Vec<(usize, T)>, Self) {
        let mut first: std::collections::HashMap<RowKey, usize> = Default::default();
        let mut kept = Vec::with_capacity(items.len());
        let mut copies = Vec::new();
        for (row, item) in items {
            let k = key(&item);
            match first.get(&k) {
                Some(&j) => copies.push((row, j)),
                None => {
                    first.insert(k, kept.len());
                    kept.push((row, item));
                }
            }
        }
        (kept, Repeats { copies })
    }

    /// Gives every copy its first item's outcome (an error names the copy's line and the line
    /// it repeats).
    pub fn fill<T: Clone>(
        &self,
        rows: &mut [Result<T, String>],
        first_row: impl Fn(usize) -> usize,
        line: impl Fn(usize) -> u64,
    ) {
        for &(row, j) in &self.copies {
            let src = first_row(j);
            rows[row] = match &rows[src] {
                Ok(v) => Ok(v.clone()),
                Err(e) => Err(format!(
                    "line {}: same request as line {}, which was not labeled: {e}",
                    line(row),
                    line(src)
                )),
            };
        }
    }
}
