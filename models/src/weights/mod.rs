//! Reading weights into the architectures: GGUF files and Hugging Face safetensors checkpoints
//! with their config.json.

pub mod block_cache;
pub mod footprint;
pub mod gguf;
pub mod hf_config;
pub mod hf_model;
pub mod safetensors_decoder;
pub mod safetensors_weights;
