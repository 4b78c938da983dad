//! How a pass groups its work: rows of similar length in batches capped in tokens, the
//! chain-of-thought scoring batches that follow the explanation batches, and repeated requests
//! run once.

use crate::journal::RowKey;
use crate::labeler::Prepared;
use candle_core::Device;
use std::sync::Arc;

/// Tokens a batch may push through the model: rows x (the longest prompt beyond the shared
/// prefix + the most label-trie nodes fed per row). On CPU, bigger batches of long rows are
/// slower per row (attention and padding grow faster than the matmuls gain) and hold more
/// memory; short rows (a few dozen tokens each) still batch up to `--batch-size`. Measured on 2 cores, SmolLM2:
/// movie_reviews 1.68 rows/s one row at a time vs 0.99 in batches of 8; sms_spam 6.1 vs 12.7.
pub const BATCH_WORK_TOKENS: usize = 512;

/// Bytes one token of batch work may take on a GPU: the feed-forward activations, attention
/// scores over a few thousand keys, its share of the KV cache and of the logits at the label
/// trie's nodes; about 1.5 MiB for a Llama-2-7B shape, rounded up.
const GPU_BYTES_PER_WORK_TOKEN: u64 = 2 << 20;

/// Most rows a GPU batch holds by default (a CPU's default is 8).
pub const GPU_BATCH_ROWS: usize = 64;

/// Rows per batch: `--batch-size` when given, else 8 on a CPU (bigger batches of long rows are
/// slower there, see [`BATCH_WORK_TOKENS`]) and [`GPU_BATCH_ROWS`] on a GPU, whose matmuls want
/// many rows.
pub fn batch_rows(given: Option<usize>, on_cpu: bool) -> usize {
    given.unwrap_or(if on_cpu { 8 } else { GPU_BATCH_ROWS })
}

/// A pass's batch limits on `device`: rows ([`batch_rows`]) and tokens of work ([`work_tokens`]).
pub fn limits(given_rows: Option<usize>, device: &Device) -> (usize, usize) {
    (batch_rows(given_rows, device.is_cpu()), work_tokens(device))
}

/// Tokens a batch may push through the model on `device`: [`BATCH_WORK_TOKENS`] on a CPU; on a
/// GPU a quarter of its memory at [`GPU_BYTES_PER_WORK_TOKEN`] a token, between that and 64k
/// (an 80 GB card: 10k tokens, e.g. 64 rows of 150). From the total, not the free memory, so a
/// resumed run forms the same batches; a batch that still does not fit is split (see
/// [`OomSplitter`]).
pub fn work_tokens(device: &Device) -> usize {
    match device {
        Device::Cpu => BATCH_WORK_TOKENS,
        _ => match device_memory(device) {
            Some(total) => {
                ((total / 4 / GPU_BYTES_PER_WORK_TOKEN) as usize).clamp(BATCH_WORK_TOKENS, 1 << 16)
            }
            None => 8 * BATCH_WORK_TOKENS,
        },
    }
}

/// Total memory of a CUDA device in bytes (None on other devices or when the driver cannot say).
fn device_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d.cuda_stream().context().total_mem().ok().map(|m| m as u64);
    }
    let _ = device;
    None
}

/// Groups rows of similar length (indices into `prepared`, sorted by prompt length) so that each
/// batch stays within `batch_size` rows and `work_tokens` (see [`work_tokens`]).
pub fn batches(
    prepared: &[&Prepared],
    batch_size: usize,
    work_tokens: usize,
    shared_prefix: usize,
) -> Vec<Vec<usize>> {
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
            && (cur.len() >= batch_size.max(1) || (cur.len() + 1) * widest.max(w) > work_tokens)
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
    work_tokens: usize,
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
    out.extend(batches_of(
        prepared,
        &rest,
        batch_size,
        work_tokens,
        shared_prefix,
    ));
    out
}

/// [`batches`] over the items `subset` names (indices into `prepared`, given back as such).
pub(crate) fn batches_of(
    prepared: &[(usize, Prepared)],
    subset: &[usize],
    batch_size: usize,
    work_tokens: usize,
    shared_prefix: usize,
) -> Vec<Vec<usize>> {
    let items: Vec<&Prepared> = subset.iter().map(|&j| &prepared[j].1).collect();
    batches(&items, batch_size, work_tokens, shared_prefix)
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

/// Whether an error says the device ran out of memory (CUDA's driver, cuBLAS, Metal).
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("out_of_memory") || m.contains("out of memory") || m.contains("alloc_failed")
}

/// Runs batches so that one too big for the device is labeled in smaller pieces, never lost:
/// when a batch fails with the device out of memory, it is run again in pieces of half the
/// size (down to single rows), and later batches are cut to the size that last fitted. Results
/// come back in the batch's order; any other error is returned as it is.
#[derive(Debug)]
pub struct OomSplitter {
    /// The most rows a batch has run with since the last out-of-memory error (unbounded at first).
    cap: usize,
}

impl Default for OomSplitter {
    fn default() -> Self {
        Self { cap: usize::MAX }
    }
}

impl OomSplitter {
    /// `work` on `items`, in pieces of at most the cap, which halves on out-of-memory.
    pub fn run<T, R, E: std::fmt::Display>(
        &mut self,
        items: &[T],
        mut work: impl FnMut(&[T]) -> Result<Vec<R>, E>,
    ) -> Result<Vec<R>, E> {
        let mut out = Vec::with_capacity(items.len());
        let mut at = 0;
        while at < items.len() {
            let n = self.cap.min(items.len() - at);
            match work(&items[at..at + n]) {
                Ok(r) => {
                    out.extend(r);
                    at += n;
                }
                Err(e) if n > 1 && is_out_of_memory(&e.to_string()) => {
                    self.cap = n.div_ceil(2);
                    eprintln!(
                        "warning: the device ran out of memory on a batch of {n} rows; running batches of at most {} rows from now on (--batch-size sets the most)",
                        self.cap
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod oom_tests {
    use super::*;

    /// A device that fits `fits` rows: bigger batches fail as CUDA reports it.
    fn device(
        fits: usize,
        calls: &mut Vec<usize>,
    ) -> impl FnMut(&[u32]) -> Result<Vec<u32>, String> + '_ {
        move |rows: &[u32]| {
            calls.push(rows.len());
            if rows.len() > fits {
                Err("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into())
            } else {
                Ok(rows.iter().map(|r| r * 10).collect())
            }
        }
    }

    #[test]
    fn a_batch_too_big_is_split_and_later_batches_cut() {
        let mut calls = Vec::new();
        let mut s = OomSplitter::default();
        let rows: Vec<u32> = (0..10).collect();
        let out = s.run(&rows, device(3, &mut calls)).unwrap();
        assert_eq!(
            out,
            (0..10).map(|r| r * 10).collect::<Vec<_>>(),
            "every row, in order"
        );
        assert_eq!(calls, [10, 5, 3, 3, 3, 1]);
        assert_eq!(s.cap, 3);
        // The next batch starts at the size that fitted: no failed attempt at 10.
        let mut calls = Vec::new();
        let out = s.run(&rows, device(3, &mut calls)).unwrap();
        assert_eq!(out.len(), 10);
        assert_eq!(calls, [3, 3, 3, 1]);
    }

    #[test]
    fn other_errors_and_single_rows_are_not_retried() {
        let mut s = OomSplitter::default();
        let mut calls = 0;
        let err = s
            .run(&[1u32, 2, 3], |_: &[u32]| -> Result<Vec<u32>, String> {
                calls += 1;
                Err("shape mismatch".into())
            })
            .unwrap_err();
        assert_eq!((err.as_str(), calls), ("shape mismatch", 1));
        let mut calls = Vec::new();
        let err = s.run(&[7u32], device(0, &mut calls)).unwrap_err();
        assert!(is_out_of_memory(&err) && calls == [1]);
    }
}
