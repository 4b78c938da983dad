//! Model code for labeling: exact scoring of candidate answers and constrained generation.
//!
//! Grouped by concern:
//! - [`architectures`]: forward passes (Llama/Mistral/Qwen2 decoders, T5 / FLAN-T5 / umT5, BERT);
//! - [`weights`]: reading weights (GGUF, Hugging Face safetensors and config.json);
//! - [`tokenization`]: tokenizers built from GGUF metadata or SentencePiece models, and the
//!   token-byte view constraints need;
//! - [`sources`]: where models come from (model cards, verified downloads, the Hugging Face Hub);
//! - [`scoring`]: the scoring interface and exact candidate scoring over a label trie;
//! - [`generation`]: incremental decoding under a constraint (llguidance);
//! - [`embedding`]: sentence embeddings (BERT encoders) for choosing examples and labels;
//! - [`local_model`]: everything a labeling run needs from one model;
//! - `testing` (feature `testing`): tiny random models and a stand-in Hub for tests.

pub mod architectures;
pub mod embedding;
pub mod generation;
pub mod local_model;
pub mod scoring;
pub mod sources;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tokenization;
pub mod weights;

pub use local_model::{LoadOptions, LocalModel};
pub use scoring::{CandidateLogprobs, ContinuationScorer, ScoreRequest};
