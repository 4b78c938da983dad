//! Sentence embeddings from a local sentence-transformers model (a BERT encoder, mean or CLS
//! pooling, L2-normalised), for choosing few-shot examples and labels by similarity.

pub mod source;

use crate::architectures::bert::{mean_pool, BertConfig, BertModel};
use crate::sources::fetch::sha256_file;
use crate::weights::hf_config::HfConfig;
use crate::weights::safetensors_weights::SINGLE_FILE;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Texts embedded in one forward pass (after sorting by length, so padding stays small).
const BATCH: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
}

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    /// Longest input in tokens (longer texts are truncated, as sentence-transformers does).
    pub max_tokens: usize,
    /// sha256 of the weights file: with the text, the key of the embedding cache.
    pub weights_sha256: String,
    pub dim: usize,
    device: Device,
}

impl Embedder {
    /// Loads a sentence-transformers model directory: `config.json` (a BERT encoder),
    /// `model.safetensors`, `tokenizer.json`, and when present `sentence_bert_config.json`
    /// (`max_seq_length`) and `1_Pooling/config.json` (CLS or mean pooling; mean by default).
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg = HfConfig::read(&dir.join("config.json"))?;
        let config = BertConfig::from_hf(&cfg)?;
        let weights = dir.join(SINGLE_FILE);
        if !weights.exists() {
            bail!(
                "{} has no {SINGLE_FILE}; an embedding model needs its weights as safetensors",
                dir.display()
            )
        }
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only and not modified while the model lives.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
        let model = BertModel::new(&config, vb)
            .with_context(|| format!("{} does not hold a BERT encoder", weights.display()))?;
        let max_tokens = read_json(&dir.join("sentence_bert_config.json"))?
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map(|m| m as usize)
            .unwrap_or(512)
            .min(config.max_position_embeddings);
        let pooling = match read_json(&dir.join("1_Pooling").join("config.json"))? {
            Some(p) if p.get("pooling_mode_cls_token") == Some(&serde_json::Value::Bool(true)) => {
                Pooling::Cls
            }
            Some(p) if p.get("pooling_mode_max_tokens") == Some(&serde_json::Value::Bool(true)) => {
                bail!(
                    "{}: max pooling is not supported (mean or CLS)",
                    dir.join("1_Pooling/config.json").display()
                )
            }
            _ => Pooling::Mean,
        };
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", tok_path.display()))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?;
        Ok(Embedder {
            dim: config.hidden_size,
            model,
            tokenizer,
            pooling,
            max_tokens,
            weights_sha256: weights_sha256(&weights)?,
            device,
        })
    }

    /// Normalised embeddings of `texts`, in their order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("cannot tokenize a text for embedding: {e}"))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            let t = chunk
                .iter()
                .map(|&i| encodings[i].get_ids().len())
                .max()
                .unwrap_or(0)
                .max(1);
            let mut ids = Vec::with_capacity(chunk.len() * t);
            let mut mask = Vec::with_capacity(chunk.len() * t);
            for &i in chunk {
                let row = encodings[i].get_ids();
                ids.extend_from_slice(row);
                ids.extend(std::iter::repeat_n(
                    self.model.config.pad_token_id,
                    t - row.len(),
                ));
                mask.extend(std::iter::repeat_n(1f32, row.len()));
                mask.extend(std::iter::repeat_n(0f32, t - row.len()));
            }
            let ids = Tensor::from_vec(ids, (chunk.len(), t), &self.device)?;
            let mask = Tensor::from_vec(mask, (chunk.len(), t), &self.device)?;
            let hidden = self.model.forward(&ids, &mask)?;
            let pooled = match self.pooling {
                Pooling::Mean => mean_pool(&hidden, &mask)?,
                Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            };
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            let rows = pooled.broadcast_div(&norm)?.to_vec2::<f32>()?;
            for (&i, v) in chunk.iter().zip(rows) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not valid JSON", path.display())
            })?))
        }
        Err(_) => Ok(None),
    }
}

/// The weights' sha256: a Hugging Face cache blob is named by it (no hashing needed), any other
/// file is hashed.
fn weights_sha256(path: &Path) -> Result<String> {
    if let Ok(real) = std::fs::canonicalize(path) {
        if let Some(name) = real.file_name().and_then(|n| n.to_str()) {
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(name.to_string());
            }
        }
    }
    sha256_file(path)
}

/// Cosine similarity of two normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
