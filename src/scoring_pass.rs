//! One pass over a dataset: prepare every row, score them in length-sorted batches with a progress
//! bar, and hand back each row's scores or the reason it could not be scored. `run`, `calibrate`
//! and `score` all label through here.

use crate::confidence::LabelScores;
use crate::labeler::{Labeler, Prepared};
use crate::session::Session;
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::time::Instant;

/// A scored row: its label set and the scores of every label.
#[derive(Debug, Clone)]
pub struct Scored {
    pub labels: Arc<Vec<String>>,
    pub scores: LabelScores,
}

impl Scored {
    pub fn index_of(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }
}

/// Every row's outcome, in file order, and what the pass measured.
pub struct PassResult {
    pub rows: Vec<Result<Scored, String>>,
    pub truncated: usize,
    pub seconds: f64,
}

/// Prompt tokens allowed in one batch (rows x longest prompt), bounding attention memory.
const BATCH_TOKEN_BUDGET: usize = 8192;

/// Groups rows of similar length (indices into `prepared`, sorted by prompt length).
pub fn batches(prepared: &[(usize, Prepared)], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    order.sort_by_key(|&i| prepared[i].1.prompt_ids.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    for i in order {
        let len = prepared[i].1.prompt_ids.len();
        if !cur.is_empty()
            && (cur.len() >= batch_size.max(1) || (cur.len() + 1) * len > BATCH_TOKEN_BUDGET)
        {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn score_all(
    session: &Session,
    labeler: &Labeler,
    batch_size: usize,
    max_tokens: usize,
) -> PassResult {
    let data = &session.data;
    let mut rows: Vec<Result<Scored, String>> =
        vec![Err("not scored".to_string()); data.rows.len()];
    let mut prepared = Vec::new();
    let mut truncated = 0;
    for (i, row) in data.rows.iter().enumerate() {
        match labeler.prepare(data, row) {
            Ok(p) => {
                if p.truncated {
                    truncated += 1;
                    eprintln!(
                        "warning: line {}: input cut from the middle to fit {max_tokens} tokens",
                        row.line
                    );
                }
                prepared.push((i, p));
            }
            Err(e) => rows[i] = Err(e),
        }
    }

    let started = Instant::now();
    let bar = ProgressBar::new(prepared.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}")
            .expect("valid progress template"),
    );
    for batch in batches(&prepared, batch_size) {
        let items: Vec<&Prepared> = batch.iter().map(|&j| &prepared[j].1).collect();
        match labeler.score(&items) {
            Ok(scores) => {
                for (&j, scores) in batch.iter().zip(scores) {
                    let (i, p) = &prepared[j];
                    rows[*i] = Ok(Scored {
                        labels: p.labels.clone(),
                        scores,
                    });
                }
            }
            Err(e) => {
                for &j in &batch {
                    let (i, _) = prepared[j];
                    rows[i] = Err(format!("line {}: scoring failed: {e:#}", data.rows[i].line));
                }
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    PassResult {
        rows,
        truncated,
        seconds: started.elapsed().as_secs_f64(),
    }
}
