//! One pass over a dataset: prepare every row, score them in length-sorted batches with a progress
//! bar, and hand back each row's scores or the reason it could not be scored. `run`, `calibrate`
//! and `score` all label through here. With a journal, rows it already holds are not scored
//! again, every scored batch is stored before the next starts, and a stop request ends the pass
//! after the current batch.

pub use crate::batching::{batches, Repeats, BATCH_WORK_TOKENS};
use crate::batching::{batches_of, explained_batches, OomSplitter};
use crate::confidence::LabelScores;
use crate::dataset::Dataset;
use crate::journal::{row_key, Journal, RowKey};
use crate::labeler::{Labeler, Prepared};
use crate::progress::Progress;
use crate::session::Session;
use crate::shard::Shard;
use anyhow::Result;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Rows taken from the journal instead of being scored.
    pub reused: usize,
    /// Rows scored in this pass.
    pub scored: usize,
    /// The pass stopped early on request; rows not reached hold an error.
    pub interrupted: bool,
    /// With a shard: the rows it labeled (the others hold an error).
    pub owned: Option<Vec<bool>>,
    /// With chain of thought: every row's explanation (None where it has none), and the
    /// explanation pass's figures (its time is included in `seconds`).
    pub explanations: Option<Vec<Option<String>>>,
    pub explanation_pass: Option<ExplanationFigures>,
}

/// What the chain-of-thought explanation pass did.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExplanationFigures {
    pub seconds: f64,
    /// Rows explained in this pass (the others came from the journal or have an error).
    pub generated: usize,
    pub tokens: usize,
    pub reused: usize,
}

impl ExplanationFigures {
    /// One line on what the explanations cost.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "chain of thought: {} explanations generated in {:.1} s ({:.1} tokens/s, {:.1} tokens each on average)",
            self.generated,
            self.seconds,
            self.tokens as f64 / self.seconds.max(1e-9),
            self.tokens as f64 / self.generated.max(1) as f64
        );
        if self.reused > 0 {
            line.push_str(&format!(", {} taken from the journal", self.reused));
        }
        line
    }
}

/// How a pass runs.
pub struct PassOptions<'a> {
    /// `--batch-size` (None: the device's default, see [`crate::batching::batch_rows`]).
    pub batch_size: Option<usize>,
    pub max_tokens: usize,
    /// Journal and the settings key of this model, weight format and device.
    pub journal: Option<(&'a mut Journal, RowKey, String)>,
    /// Set (e.g. by Ctrl-C) to stop after the current batch.
    pub stop: Option<&'a AtomicBool>,
    /// Label only this shard's batches (see [`crate::shard`]).
    pub shard: Option<Shard>,
}

impl PassOptions<'_> {
    pub fn new(batch_size: Option<usize>, max_tokens: usize) -> Self {
        PassOptions {
            batch_size,
            max_tokens,
            journal: None,
            stop: None,
            shard: None,
        }
    }
}

pub fn score_all(session: &Session, labeler: &Labeler, opts: PassOptions) -> Result<PassResult> {
    score_data(&session.data, labeler, opts)
}

/// [`score_all`] over any rows (e.g. content-free inputs); with chain of thought, every row's
/// explanation is generated first (journaled like the scores) and its labels scored after it.
pub fn score_data(data: &Dataset, labeler: &Labeler, opts: PassOptions) -> Result<PassResult> {
    let PassOptions {
        batch_size,
        max_tokens,
        mut journal,
        stop,
        shard,
    } = opts;
    let started = Instant::now();
    let explained = match labeler.explanation_tokens() {
        None => None,
        Some(_) => {
            let sub = PassOptions {
                batch_size,
                max_tokens,
                journal: journal
                    .as_mut()
                    .map(|(j, s, c)| (&mut **j, *s, format!("{c} (explanations)"))),
                stop,
                shard,
            };
            Some(crate::chain_of_thought::explain_rows(data, labeler, sub)?)
        }
    };
    let explanation_pass = explained.as_ref().map(|e| ExplanationFigures {
        seconds: e.pass.seconds,
        generated: e.pass.generated,
        tokens: e.pass.tokens,
        reused: e.pass.reused,
    });
    let explanations: Option<Vec<Option<String>>> = explained.as_ref().map(|e| {
        e.rows
            .iter()
            .map(|r| r.as_ref().ok().map(|x| x.text.clone()))
            .collect()
    });
    if let Some(e) = explained.as_ref().filter(|e| e.pass.interrupted) {
        return Ok(PassResult {
            rows: vec![Err("not scored: the run was interrupted".into()); data.rows.len()],
            truncated: e.pass.truncated,
            seconds: started.elapsed().as_secs_f64(),
            reused: 0,
            scored: 0,
            interrupted: true,
            owned: e.pass.owned.clone(),
            explanations,
            explanation_pass,
        });
    }
    // Each row is asked `orders` times (with --label-orders; once otherwise): item `i * orders +
    // j` is row i with its label list in order j. Items are what is prepared, batched,
    // journaled and scored; a row's items are averaged at the end.
    let orders = labeler.label_orders();
    let n_items = data.rows.len() * orders;
    let row_of = |item: usize| item / orders;
    let mut items: Vec<Result<Scored, String>> = vec![Err("not scored".to_string()); n_items];
    let mut prepared = Vec::new();
    let mut truncated = 0;
    // Rows are rendered and tokenized on every core (a shard prepares the whole file).
    let ready: Vec<Result<Prepared, String>> = {
        use rayon::prelude::*;
        (0..n_items)
            .into_par_iter()
            .map(|item| {
                let (i, order) = (row_of(item), item % orders);
                let row = &data.rows[i];
                match &explained {
                    None => labeler.prepare_order(data, row, &[], order),
                    Some(e) => match &e.rows[i] {
                        Ok(x) => labeler.prepare_with(data, row, &x.tokens),
                        Err(err) => Err(err.clone()),
                    },
                }
            })
            .collect()
    };
    for (item, ready) in ready.into_iter().enumerate() {
        match ready {
            Ok(p) => {
                // (the explanation pass already warned about the rows it cut)
                if p.truncated && explained.is_none() && item % orders == 0 {
                    truncated += 1;
                    eprintln!(
                        "warning: line {}: input cut from the middle to fit {max_tokens} tokens",
                        data.rows[row_of(item)].line
                    );
                }
                prepared.push((item, p));
            }
            Err(e) => items[item] = Err(e),
        }
    }
    // A repeated request is scored once (see [`Repeats`]).
    let (prepared, repeats) = Repeats::split(prepared, |p| {
        row_key(&RowKey::default(), &p.prompt_ids, &p.candidates)
    });

    if let Some(e) = &explained {
        truncated = e.pass.truncated;
    }
    // The instructions every prompt starts with are prefilled once for the whole pass (the
    // prefix depends only on the rows, so a resumed run uses the same one).
    // With label orders the prompts of each order share a longer prefix (up to where the
    // rotated label list starts, and again after it only within an order): each order has its
    // own, and its items are batched together.
    let prefixes: Vec<Vec<u32>> = (0..orders)
        .map(|o| {
            labeler.prefix_of(
                prepared
                    .iter()
                    .filter(|(it, _)| it % orders == o)
                    .map(|(_, p)| p.prompt_ids.as_slice()),
            )
        })
        .collect();
    let shared_prefix = prefixes[0].len();
    let (batch_size, work) = crate::batching::limits(batch_size, &labeler.model().device);
    // Batches are formed over every row, journaled or not, so a resumed run scores each row in
    // the same company as an uninterrupted one and gets the same bits; a shard takes its share
    // of the same batches.
    let all_batches = match &explained {
        None => {
            // With label orders each order's items are batched apart (they share its prefix).
            let mut all = Vec::new();
            for (o, prefix) in prefixes.iter().enumerate() {
                let subset: Vec<usize> = (0..prepared.len())
                    .filter(|&j| prepared[j].0 % orders == o)
                    .collect();
                all.extend(batches_of(
                    &prepared,
                    &subset,
                    batch_size,
                    work,
                    prefix.len(),
                ));
            }
            all
        }
        // With chain of thought the rows explained together are scored together: the same
        // batches (and so the same bits and the same shard) whatever else runs.
        Some(e) => explained_batches(&e.pass.batches, &prepared, batch_size, work, shared_prefix),
    };
    // With chain of thought the explanation pass chose the shard's rows (a row it did not
    // explain has no scoring batch here, but is another shard's).
    // With label orders a row is its order-0 item's shard's, which scores every batch that holds
    // one of its items (whole, so the bits are those of an unsharded run).
    let owned_items = match &explained {
        Some(e) => e.pass.owned.clone(),
        None => shard.map(|s| s.assign(n_items, &all_batches, |j| prepared[j].0, &repeats.copies)),
    };
    let owned: Option<Vec<bool>> = owned_items
        .as_ref()
        .map(|o| (0..data.rows.len()).map(|i| o[i * orders]).collect());
    let mine = |item: usize| owned.as_ref().is_none_or(|o| o[row_of(item)]);

    // Rows the journal already holds.
    let mut keys: Vec<Option<RowKey>> = vec![None; prepared.len()];
    let mut done = vec![false; prepared.len()];
    let mut reused = 0;
    if let Some((journal, settings, command)) = journal.as_mut() {
        let mut by_row: Vec<Option<RowKey>> = vec![None; n_items];
        for (j, (i, p)) in prepared.iter().enumerate() {
            if !mine(*i) {
                continue;
            }
            let key = row_key(settings, &p.prompt_ids, &p.candidates);
            keys[j] = Some(key);
            by_row[*i] = Some(key);
            if let Some(lp) = journal.lookup(&key)? {
                if lp.len() == p.candidates.len() {
                    items[*i] = Ok(Scored {
                        labels: p.labels.clone(),
                        scores: LabelScores::from_token_logprobs(&lp),
                    });
                    done[j] = true;
                    reused += 1;
                }
            }
        }
        for &(row, j) in &repeats.copies {
            by_row[row] = keys[j];
        }
        // A shard's journal tracks its own rows (their items).
        by_row = (0..by_row.len())
            .filter(|&r| mine(r))
            .map(|r| by_row[r])
            .collect();
        journal.begin_run(command, &by_row)?;
    }

    let reused_first = done.clone();
    let to_do = prepared.iter().filter(|(i, _)| mine(*i)).count();
    let bar = Progress::new(to_do, reused);
    let mut scored = 0;
    let mut interrupted = false;
    let mut prefix_order: Option<usize> = None;
    let mut oom = OomSplitter::default();
    for (k, batch) in all_batches.into_iter().enumerate() {
        let wanted = match shard {
            None => true,
            Some(s) if orders == 1 => s.owns_batch(k),
            Some(_) => batch.iter().any(|&j| mine(prepared[j].0)),
        };
        if batch.iter().all(|&j| done[j]) || !wanted {
            continue;
        }
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            interrupted = true;
            break;
        }
        let order = prepared[batch[0]].0 % orders;
        if prefix_order != Some(order) {
            labeler.set_prefix(&prefixes[order])?;
            prefix_order = Some(order);
        }
        let requests: Vec<&Prepared> = batch.iter().map(|&j| &prepared[j].1).collect();
        match oom.run(&requests, |r| labeler.score_tokens(r)) {
            Ok(token_logprobs) => {
                if let Some((journal, _, _)) = journal.as_mut() {
                    let record: Vec<(RowKey, &[Vec<f32>])> = batch
                        .iter()
                        .zip(&token_logprobs)
                        .filter_map(|(&j, lp)| keys[j].map(|k| (k, lp.as_slice())))
                        .collect();
                    journal.record(&record)?;
                }
                for (&j, lp) in batch.iter().zip(&token_logprobs) {
                    let (i, p) = &prepared[j];
                    items[*i] = Ok(Scored {
                        labels: p.labels.clone(),
                        scores: LabelScores::from_token_logprobs(lp),
                    });
                    if !done[j] {
                        done[j] = true;
                        if mine(*i) {
                            scored += 1;
                            bar.inc(1);
                        }
                    }
                }
            }
            Err(e) => {
                for &j in &batch {
                    let (i, _) = prepared[j];
                    items[i] = Err(format!(
                        "line {}: scoring failed: {e:#}",
                        data.rows[row_of(i)].line
                    ));
                    if !done[j] {
                        done[j] = true;
                        if mine(i) {
                            bar.inc(1);
                        }
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    if interrupted {
        for (j, (i, _)) in prepared.iter().enumerate() {
            if !done[j] {
                items[*i] = Err("not scored: the run was interrupted".into());
            }
        }
    }
    repeats.fill(&mut items, |j| prepared[j].0, |i| data.rows[row_of(i)].line);
    // Copies count where their first row does: taken from the journal, or scored now.
    for &(row, j) in &repeats.copies {
        if !mine(row) {
            continue;
        }
        if reused_first[j] {
            reused += 1;
        } else if items[prepared[j].0].is_ok() {
            scored += 1;
        }
    }
    let rows = combine_orders(items, orders);
    // Counted per row.
    let (reused, scored) = (reused / orders, scored / orders);
    Ok(PassResult {
        rows,
        truncated,
        seconds: started.elapsed().as_secs_f64(),
        reused,
        scored,
        interrupted,
        owned,
        explanations,
        explanation_pass,
    })
}

/// Each row's outcome from its items (`orders` consecutive items per row): their scores
/// averaged over the orders (see [`LabelScores::average_over_orders`]), or the first error.
fn combine_orders(
    items: Vec<Result<Scored, String>>,
    orders: usize,
) -> Vec<Result<Scored, String>> {
    if orders == 1 {
        return items;
    }
    items
        .chunks(orders)
        .map(|row| {
            let mut scores = Vec::with_capacity(orders);
            for item in row {
                match item {
                    Ok(s) => scores.push(s.scores.clone()),
                    Err(e) => return Err(e.clone()),
                }
            }
            let labels = row[0]
                .as_ref()
                .map(|s| s.labels.clone())
                .unwrap_or_default();
            Ok(Scored {
                labels,
                scores: LabelScores::average_over_orders(&scores),
            })
        })
        .collect()
}
