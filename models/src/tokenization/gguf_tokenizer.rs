//! A `tokenizers::Tokenizer` built from a GGUF file's own `tokenizer.ggml.*` metadata, so that one
//! .gguf file is a complete model.

use crate::weights::gguf::Metadata;
use anyhow::{bail, Context, Result};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Pre-tokenizer names (`tokenizer.ggml.pre`) this module reproduces exactly.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] =
    &["smollm", "qwen2", "gpt2", "default", "llama-bpe", "llama3"];

/// Builds the tokenizer of a byte-level BPE GGUF (`tokenizer.ggml.model` = `gpt2`).
pub fn tokenizer_from_gguf(meta: &Metadata) -> Result<Tokenizer> {
    let model = meta.string("tokenizer.ggml.model")?;
    if model != "gpt2" {
        bail!(
            "{}: tokenizer.ggml.model is '{model}'; only byte-level BPE ('gpt2') tokenizers can be built from GGUF metadata. Put the model's tokenizer.json next to the .gguf file to use it instead",
            meta.source
        )
    }
    let tokens = meta.string_array("tokenizer.ggml.tokens")?;
    let merges = meta.string_array("tokenizer.ggml.merges")?;
    let types = meta
        .i32_array("tokenizer.ggml.token_type")
        .unwrap_or_default();
    let pre = meta
        .string("tokenizer.ggml.pre")
        .unwrap_or_else(|_| "default".to_string());

    // Control and user-defined tokens are matched whole (taken before the vocabulary
    // consumes the token strings).
    let specials: Vec<AddedToken> = types
        .iter()
        .enumerate()
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .filter_map(|(i, &t)| {
            tokens
                .get(i)
                .map(|s| AddedToken::from(s.clone(), t == TOKEN_TYPE_CONTROL))
        })
        .collect();
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .with_context(|| {
                    format!(
                        "{}: malformed merge '{m}' in tokenizer.ggml.merges",
                        meta.source
                    )
                })
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| anyhow::anyhow!("{}: cannot build BPE tokenizer: {e}", meta.source))?;

    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, false, true);
    let no_regex_byte_level = ByteLevel::new(false, false, false);
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow::anyhow!("bad split regex: {e}"))?
        .into())
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "qwen2" => {
            tokenizer.with_normalizer(Some(NFC)).map_err(|e| anyhow::anyhow!("{e}"))?;
            Sequence::new(vec![split(QWEN2_SPLIT)?, no_regex_byte_level.into()]).into()
        }
        "llama-bpe" | "llama3" => Sequence::new(vec![split(LLAMA3_SPLIT)?, no_regex_byte_level.into()]).into(),
        "gpt2" | "default" => byte_level.into(),
        other => bail!(
            "{}: pre-tokenizer '{other}' (tokenizer.ggml.pre) is not supported; supported: {}. Put the model's tokenizer.json next to the .gguf file to use it instead",
            meta.source,
            SUPPORTED_PRE_TOKENIZERS.join(", ")
        ),
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));

    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| anyhow::anyhow!("cannot add special tokens: {e}"))?;
    Ok(tokenizer)
}
