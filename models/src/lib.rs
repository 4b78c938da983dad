//! Model code for exact label scoring.
//!
//! - [`scoring`]: the interface (a prompt and candidate continuations in, token log-probs out);
//! - [`decoder`] + [`decoder_scorer`]: Llama/Qwen2 decoders with prefix KV reuse and tree masks;
//! - [`gguf`] + [`gguf_tokenizer`]: GGUF weights and tokenizers from GGUF metadata;
//! - [`cards`] + [`fetch`]: model cards and verified, cached resolution of model files;
//! - [`hf_model`] with [`hf_config`], [`safetensors_weights`], [`safetensors_decoder`], [`t5`]: Hugging Face
//!   checkpoints (Llama, Mistral, Qwen2, T5, FLAN-T5, umT5) in safetensors;
//! - [`hub`]: Hub repositories resolved to local snapshots (download, cache, offline);
//! - [`local_model`]: everything a labeling run needs from one model.

pub mod cards;
pub mod decoder;
pub mod decoder_scorer;
pub mod fetch;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod hf_config;
pub mod hf_model;
pub mod hub;
pub mod linear;
pub mod local_model;
pub mod mock_hub;
pub mod safetensors_decoder;
pub mod safetensors_weights;
pub mod scoring;
pub mod sentencepiece;
pub mod t5;
pub mod testing;
pub mod trie;
pub mod trie_logprobs;

pub use local_model::{LoadOptions, LocalModel};
pub use scoring::{CandidateLogprobs, ContinuationScorer, ScoreRequest};
