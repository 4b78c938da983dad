//! Tokenizers the model files do not ship as tokenizer.json (GGUF metadata, SentencePiece), and
//! the byte view of a vocabulary that constrained generation needs.

pub mod gguf_tokenizer;
pub mod sentencepiece;
pub mod token_env;
