//! Batched greedy generation under a constraint, with the log-probability of every chosen token.
//!
//! An architecture provides incremental decoding ([`IncrementalDecoder`]: prefill a batch of
//! prompts, then one token per row per step); [`generate`] drives it: each step it takes every
//! row's next-token distribution, restricts it to what the row's constraint allows (llguidance
//! masks, computed for the whole batch with rayon while the model runs the step), picks the most
//! likely allowed token, and records its log-probability twice: under the model's full
//! distribution (the confidence) and renormalised over the allowed tokens.

pub mod constraint;
pub mod decoder;
pub mod t5;

pub use constraint::{ConstraintCompiler, Grammar};

use anyhow::{bail, Result};
use llguidance::toktrie::SimpleVob;
use llguidance::Matcher;
use rayon::prelude::*;
use std::time::Instant;

/// One row to generate for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    /// Most tokens to generate, the end token included.
    pub max_new_tokens: usize,
}

/// Why a row stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// It chose an end token (the last of `tokens`): the answer is complete.
    End,
    /// It reached `max_new_tokens` without ending: the answer is cut off.
    Length,
    /// The constraint failed (no token allowed, or llguidance reported an error).
    ConstraintError(String),
}

/// What a row generated.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The chosen tokens, ending with the end token when `finish` is [`Finish::End`].
    pub tokens: Vec<u32>,
    /// log P(token | prompt, tokens before) under the model's full distribution.
    pub logprobs: Vec<f32>,
    /// The same, renormalised over the tokens the constraint allowed at that step (0 where the
    /// constraint forced the token; equal to `logprobs` for an unconstrained row).
    pub constrained_logprobs: Vec<f32>,
    pub finish: Finish,
}

impl Generated {
    /// log P(all generated tokens | prompt) under the model.
    pub fn total_logprob(&self) -> f32 {
        self.logprobs.iter().sum()
    }

    /// The answer's tokens without the end token.
    pub fn answer_tokens(&self) -> &[u32] {
        match self.finish {
            Finish::End => &self.tokens[..self.tokens.len() - 1],
            _ => &self.tokens,
        }
    }
}

/// Incremental decoding for a batch of rows. Every architecture that generates also scores
/// (the scorer's `context_length` bounds prompt + generated tokens).
pub trait IncrementalDecoder: crate::ContinuationScorer {
    /// Runs the prompts (none empty) and returns the state positioned after them.
    fn begin<'a>(&'a self, prompts: &[&[u32]]) -> candle_core::Result<Box<dyn DecodeState + 'a>>;
    /// Number of token ids the model gives a probability to (the width of its logits).
    fn vocab_size(&self) -> usize;
}

/// A batch in the middle of decoding.
pub trait DecodeState: Send {
    /// Log-probabilities of every row's next token, `[rows][vocab]`.
    fn next_logprobs(&self) -> candle_core::Result<Vec<Vec<f32>>>;
    /// Feeds one token per row.
    fn advance(&mut self, tokens: &[u32]) -> candle_core::Result<()>;
    /// Keeps only these rows (indices into the current rows, in order): finished rows leave the
    /// batch instead of costing a forward pass each step.
    fn keep(&mut self, rows: &[usize]) -> candle_core::Result<()>;
}

/// Where a [`generate_timed`] call spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GenerationTimes {
    /// Wall time of the whole call.
    pub seconds: f64,
    /// Time the model was idle waiting for the constraint: the first masks, masks that took
    /// longer than the model's step they overlapped, and choosing tokens under the masks and
    /// advancing the constraints (sequential, after each step).
    pub constraint_seconds: f64,
}

impl GenerationTimes {
    pub fn add(&mut self, other: GenerationTimes) {
        self.seconds += other.seconds;
        self.constraint_seconds += other.constraint_seconds;
    }
}

/// Greedy generation for `requests`, row `i` under `constraints[i]` (None: unconstrained, ends
/// at one of `end_tokens` or at its token limit). Constrained rows end when their constraint
/// accepts one of its end tokens.
pub fn generate(
    model: &dyn IncrementalDecoder,
    requests: &[GenerationRequest],
    constraints: Vec<Option<Matcher>>,
    end_tokens: &[u32],
) -> Result<Vec<Generated>> {
    generate_timed(model, requests, constraints, end_tokens).map(|(g, _)| g)
}

/// [`generate`], also saying how much of its time the constraints cost.
pub fn generate_timed(
    model: &dyn IncrementalDecoder,
    requests: &[GenerationRequest],
    mut constraints: Vec<Option<Matcher>>,
    end_tokens: &[u32],
) -> Result<(Vec<Generated>, GenerationTimes)> {
    let started = Instant::now();
    let mut waited = 0f64;
    if constraints.len() != requests.len() {
        bail!(
            "{} constraints for {} requests",
            constraints.len(),
            requests.len()
        )
    }
    if requests.is_empty() {
        return Ok((Vec::new(), GenerationTimes::default()));
    }
    for (i, r) in requests.iter().enumerate() {
        if r.prompt.is_empty() {
            bail!("request {i}: empty prompt")
        }
        if r.prompt.len() + r.max_new_tokens > model.context_length() {
            bail!(
                "request {i}: prompt ({}) + up to {} generated tokens exceed the context length {}",
                r.prompt.len(),
                r.max_new_tokens,
                model.context_length()
            )
        }
    }
    let mut out: Vec<Generated> = requests
        .iter()
        .map(|_| Generated {
            tokens: Vec::new(),
            logprobs: Vec::new(),
            constrained_logprobs: Vec::new(),
            finish: Finish::Length,
        })
        .collect();
    let mut active: Vec<bool> = requests.iter().map(|r| r.max_new_tokens > 0).collect();
    let prompts: Vec<&[u32]> = requests.iter().map(|r| r.prompt.as_slice()).collect();
    let mut state = model.begin(&prompts)?;
    // `live[j]`: the request that row j of the model's state belongs to.
    let mut live: Vec<usize> = (0..requests.len()).collect();
    let t = Instant::now();
    let mut masks = compute_masks(&mut constraints, &active);
    waited += t.elapsed().as_secs_f64();
    loop {
        let logprobs = state.next_logprobs()?;
        let picking = Instant::now();
        for (j, &i) in live.iter().enumerate() {
            if !active[i] {
                continue;
            }
            let lp = &logprobs[j];
            let chosen = match &masks[i] {
                Some(Err(e)) => Err(e.clone()),
                Some(Ok(mask)) => pick_allowed(lp, mask),
                None => Ok(pick_any(lp)),
            };
            let (tok, constrained) = match chosen {
                Ok(c) => c,
                Err(e) => {
                    out[i].finish = Finish::ConstraintError(e);
                    active[i] = false;
                    continue;
                }
            };
            let g = &mut out[i];
            g.tokens.push(tok);
            g.logprobs.push(lp[tok as usize]);
            g.constrained_logprobs.push(constrained);
            let ended = match &mut constraints[i] {
                Some(m) => {
                    let end = end_tokens.contains(&tok) || is_constraint_end(m, tok);
                    // A constraint that stopped by itself (nothing can extend the answer) only
                    // allowed an end token, which it does not consume.
                    let consumed = if m.is_stopped() {
                        Ok(())
                    } else {
                        m.consume_token(tok)
                    };
                    if let Err(e) = consumed {
                        g.finish = Finish::ConstraintError(e.to_string());
                        active[i] = false;
                        continue;
                    }
                    end
                }
                None => end_tokens.contains(&tok),
            };
            if ended {
                g.finish = Finish::End;
                active[i] = false;
            } else if g.tokens.len() >= requests[i].max_new_tokens {
                active[i] = false;
            }
        }
        waited += picking.elapsed().as_secs_f64();
        if !active.iter().any(|&a| a) {
            break;
        }
        if live.iter().any(|&i| !active[i]) {
            let rows: Vec<usize> = (0..live.len()).filter(|&j| active[live[j]]).collect();
            state.keep(&rows)?;
            live = rows.iter().map(|&j| live[j]).collect();
        }
        let next: Vec<u32> = live
            .iter()
            .map(|&i| *out[i].tokens.last().expect("an active row chose a token"))
            .collect();
        // The next step's masks depend only on the tokens just chosen: compute them while the
        // model runs the step.
        let t = Instant::now();
        let ((stepped, step_seconds), new_masks) = rayon::join(
            || {
                let t = Instant::now();
                (state.advance(&next), t.elapsed().as_secs_f64())
            },
            || compute_masks(&mut constraints, &active),
        );
        waited += (t.elapsed().as_secs_f64() - step_seconds).max(0.0);
        stepped?;
        masks = new_masks;
    }
    let times = GenerationTimes {
        seconds: started.elapsed().as_secs_f64(),
        constraint_seconds: waited,
    };
    Ok((out, times))
}

/// Whether `tok` is one of the constraint's end tokens.
fn is_constraint_end(m: &Matcher, tok: u32) -> bool {
    m.tok_env()
        .map(|e| e.tok_trie().eos_tokens().contains(&tok))
        .unwrap_or(false)
}

type Mask = Option<std::result::Result<SimpleVob, String>>;

/// The allowed-token masks of active constrained rows (a stopped constraint allows only its end
/// tokens), in parallel.
fn compute_masks(constraints: &mut [Option<Matcher>], active: &[bool]) -> Vec<Mask> {
    constraints
        .par_iter_mut()
        .zip(active.par_iter())
        .map(|(c, &a)| match c {
            Some(m) if a => Some(m.compute_mask_or_eos().map_err(|e| e.to_string())),
            _ => None,
        })
        .collect()
}

/// The most likely token.
fn pick_any(lp: &[f32]) -> (u32, f32) {
    let mut best = 0;
    for (t, &v) in lp.iter().enumerate() {
        if v > lp[best] {
            best = t;
        }
    }
    (best as u32, lp[best])
}

/// The most likely allowed token and its log-probability renormalised over the allowed tokens.
fn pick_allowed(lp: &[f32], mask: &SimpleVob) -> std::result::Result<(u32, f32), String> {
    let mut best: Option<usize> = None;
    let mut max = f32::NEG_INFINITY;
    mask.iter_set_entries(|t| {
        if t < lp.len() && (best.is_none() || lp[t] > max) {
            best = Some(t);
            max = lp[t];
        }
    });
    let Some(best) = best else {
        return Err("the constraint allows no token here".into());
    };
    if max == f32::NEG_INFINITY {
        return Ok((best as u32, 0.0));
    }
    let mut sum = 0f64;
    mask.iter_set_entries(|t| {
        if t < lp.len() {
            sum += ((lp[t] - max) as f64).exp();
        }
    });
    Ok((best as u32, -(sum.ln() as f32)))
}
