//! The byte view of a vocabulary that llguidance needs (one byte string per token id, special
//! tokens marked), built from the model's `tokenizers::Tokenizer`, with the model's answer-end
//! tokens as the constraint's end-of-sequence.

use anyhow::{bail, Context, Result};
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use std::sync::Arc;
use tokenizers::Tokenizer;

/// A tokenizer seen as bytes: what llguidance computes token masks over.
pub struct TokenBytesEnv {
    trie: TokTrie,
    tokenizer: Tokenizer,
}

impl TokenizerEnv for TokenBytesEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            self.tokenizer
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        })
    }
}

/// Builds the token environment for `tokenizer` over a model vocabulary of `vocab_size` ids
/// (ids the tokenizer does not know become unreachable special tokens) whose answers end with
/// one of `end_tokens`.
pub fn token_env(tokenizer: &Tokenizer, vocab_size: usize, end_tokens: &[u32]) -> Result<TokEnv> {
    let Some(&first_end) = end_tokens.first() else {
        bail!("constrained generation needs the token that ends an answer")
    };
    let mut bytes = token_bytes(tokenizer)?;
    if bytes.len() > vocab_size {
        bail!(
            "the tokenizer has {} tokens but the model's vocabulary has {vocab_size}",
            bytes.len()
        )
    }
    while bytes.len() < vocab_size {
        let mut name = format!(".<[{}]>", bytes.len()).into_bytes();
        name[0] = TokTrie::SPECIAL_TOKEN_MARKER;
        bytes.push(name);
    }
    for &t in end_tokens {
        if t as usize >= vocab_size {
            bail!("end token {t} is outside the vocabulary ({vocab_size})")
        }
    }
    let info = TokRxInfo::new(vocab_size as u32, first_end);
    let mut trie = TokTrie::from(&info, &bytes);
    if end_tokens.len() > 1 {
        trie = trie.with_eos_tokens(end_tokens);
    }
    Ok(Arc::new(TokenBytesEnv {
        trie,
        tokenizer: tokenizer.clone(),
    }))
}

/// Every token's bytes: byte-level BPE and byte-fallback vocabularies through llguidance's own
/// reading of tokenizer.json; SentencePiece vocabularies without byte fallback (T5) by mapping
/// '▁' to a space.
pub fn token_bytes(tokenizer: &Tokenizer) -> Result<Vec<Vec<u8>>> {
    let json: serde_json::Value = serde_json::from_str(
        &tokenizer
            .to_string(false)
            .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?,
    )
    .context("the tokenizer's JSON")?;
    match llguidance::token_bytes_from_tokenizer_json(&json) {
        Ok(bytes) => Ok(bytes),
        Err(_) if json["decoder"]["type"].as_str() == Some("Metaspace") => {
            metaspace_bytes(tokenizer)
        }
        Err(e) => Err(e).context("the tokenizer's vocabulary cannot be read as bytes"),
    }
}

fn metaspace_bytes(tokenizer: &Tokenizer) -> Result<Vec<Vec<u8>>> {
    let n = tokenizer.get_vocab_size(true);
    let added = tokenizer.get_added_tokens_decoder();
    let mut out = Vec::with_capacity(n);
    for id in 0..n as u32 {
        let bytes = match (added.get(&id), tokenizer.id_to_token(id)) {
            (Some(a), _) if a.special => {
                let mut b = a.content.clone().into_bytes();
                b.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
                b
            }
            (Some(a), _) => a.content.clone().into_bytes(),
            (None, Some(piece)) => piece.replace('\u{2581}', " ").into_bytes(),
            (None, None) => {
                let mut b = format!(".<[{id}]>").into_bytes();
                b[0] = TokTrie::SPECIAL_TOKEN_MARKER;
                b
            }
        };
        out.push(bytes);
    }
    Ok(out)
}
