//! Forward passes, one file per architecture family, written for scoring and generation (logits at
//! chosen positions, arbitrary attention masks, KV caches shared across rows).

pub mod bert;
pub mod decoder;
mod decoder_attention;
pub mod decoder_prefill;
pub mod kv_cache;
pub mod linear;
pub mod t5;
