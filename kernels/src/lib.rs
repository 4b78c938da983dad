//! Custom candle ops used by label scoring.
//!
//! The scorer needs, for a handful of (row, token) pairs, `log_softmax(logits[row])[token]`.
//! Computing the full log-softmax materialises a second `[rows, vocab]` tensor only to read a few
//! values out of it; [`log_softmax_gather`] instead computes one log-sum-exp per row and gathers.

mod log_softmax_gather;

pub use log_softmax_gather::{log_softmax_gather, log_softmax_gather_unfused};
