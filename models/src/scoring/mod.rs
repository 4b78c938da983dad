//! The scoring interface every architecture implements: a prompt and a set of candidate
//! continuations in, the log-probability of every token of every candidate out.

pub mod decoder_scorer;
pub mod trie;
pub mod trie_logprobs;

use candle_core::Result;

/// One row to score: the prompt's token ids and the candidates' token ids (each candidate already
/// includes its end-of-answer token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRequest {
    pub prompt: Vec<u32>,
    pub candidates: Vec<Vec<u32>>,
}

/// `token_logprobs[c][i]` = log P(candidate c's token i | prompt, candidate c's tokens before i).
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateLogprobs {
    pub token_logprobs: Vec<Vec<f32>>,
}

impl ScoreRequest {
    /// The checks every scorer makes: a prompt, and at least one candidate, none empty.
    /// `i` is the request's index in its batch (for the message).
    pub fn check(&self, i: usize) -> Result<()> {
        if self.prompt.is_empty() {
            candle_core::bail!("request {i}: empty prompt")
        }
        if self.candidates.is_empty() || self.candidates.iter().any(|c| c.is_empty()) {
            candle_core::bail!("request {i}: every request needs at least one non-empty candidate")
        }
        Ok(())
    }
}

impl CandidateLogprobs {
    /// log P(candidate | prompt) for every candidate.
    pub fn totals(&self) -> Vec<f32> {
        self.token_logprobs.iter().map(|t| t.iter().sum()).collect()
    }
}

/// Anything that can compute candidate log-probabilities for a batch of rows.
pub trait ContinuationScorer: Send + Sync {
    /// Scores every request; the output has one entry per request, in order.
    fn score_batch(&self, requests: &[ScoreRequest]) -> Result<Vec<CandidateLogprobs>>;

    /// The longest prompt + candidate the model accepts, in tokens.
    fn context_length(&self) -> usize;

    /// Declares a token prefix that most prompts of the coming batches start with (the task's
    /// instructions and few-shot examples). A scorer may compute its state once and reuse it for
    /// every request that starts with it and is longer; an empty prefix clears it. The results
    /// must not change beyond floating-point rounding.
    fn set_shared_prefix(&self, _prefix: &[u32]) -> Result<()> {
        Ok(())
    }
}
