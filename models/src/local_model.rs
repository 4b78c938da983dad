//! A model ready to score: weights behind the scoring trait, its tokenizer and its chat template.

use crate::generation::IncrementalDecoder;
use crate::tokenization::gguf_tokenizer::tokenizer_from_gguf;
use crate::weights::gguf::{GgufFile, WeightFormat};
use anyhow::{bail, Context, Result};
use candle_core::Device;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// How a model turns a prompt into label probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Decoder-only: labels continue the prompt (Llama, Mistral, Qwen2).
    Decoder,
    /// Encoder-decoder: the prompt is encoded, labels are decoded from scratch and end with the
    /// end-of-sequence token (T5, FLAN-T5, umT5).
    EncoderDecoder,
}

pub struct LocalModel {
    /// Where the weights came from.
    pub path: PathBuf,
    pub architecture: String,
    /// Scores candidates exactly and generates (one object, both interfaces).
    pub scorer: Box<dyn IncrementalDecoder>,
    pub tokenizer: Tokenizer,
    /// Jinja chat template shipped with the model, if any.
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Prepend the BOS token id to every prompt (from `tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    pub bos_token_id: Option<u32>,
    pub kind: ModelKind,
    /// End-of-sequence token id (ends every prompt and label of an encoder-decoder).
    pub eos_token_id: Option<u32>,
    /// Where the weights live and the model runs.
    pub device: Device,
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Cap on the context length (rotary tables and prompt budget).
    pub max_context: Option<usize>,
    /// How matmul weights are held (quantized as stored, or expanded).
    pub weights: WeightFormat,
}

impl LocalModel {
    /// Loads a .gguf file, a directory holding exactly one .gguf file, or a Hugging Face model
    /// directory (config.json, tokenizer.json and safetensors weights).
    pub fn load(path: &Path, device: &Device, opts: &LoadOptions) -> Result<Self> {
        // Some GGUF repos ship a config.json too: a directory is a safetensors model when it has
        // config.json and either safetensors weights or no .gguf file.
        if path.is_dir() && path.join("config.json").exists() {
            let has = |ext: &str| {
                std::fs::read_dir(path).is_ok_and(|rd| {
                    rd.flatten()
                        .any(|e| e.path().extension().is_some_and(|x| x == ext))
                })
            };
            if has("safetensors")
                || path
                    .join(crate::weights::safetensors_weights::INDEX_FILE)
                    .exists()
                || !has("gguf")
            {
                return Self::load_safetensors(path, device, opts);
            }
        }
        Self::load_gguf(path, device, opts)
    }

    /// A .gguf file (or a directory with one). A `tokenizer.json` next to the weights replaces
    /// the tokenizer built from GGUF metadata.
    pub fn load_gguf(path: &Path, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let file = resolve_weights_file(path)?;
        let mut gguf = GgufFile::open(&file)?;
        let architecture = gguf.architecture()?;
        let tokenizer_json = file.with_file_name("tokenizer.json");
        let tokenizer = if tokenizer_json.exists() {
            Tokenizer::from_file(&tokenizer_json)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", tokenizer_json.display()))?
        } else {
            tokenizer_from_gguf(&gguf.metadata)?
        };
        let meta = &gguf.metadata;
        let token_of = |key: &str| -> Option<(u32, String)> {
            let id = meta.u32(key).ok()?;
            Some((
                id,
                meta.string_at("tokenizer.ggml.tokens", id as usize).ok()?,
            ))
        };
        let bos = token_of("tokenizer.ggml.bos_token_id");
        let eos = token_of("tokenizer.ggml.eos_token_id");
        let add_bos = meta.bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
        let chat_template = meta.string("tokenizer.chat_template").ok();
        gguf.metadata.drop_tokenizer_arrays();
        let decoder = gguf.load_decoder(device, opts.max_context, opts.weights)?;
        if tokenizer.get_vocab_size(true) > decoder.config.vocab_size {
            bail!(
                "{}: the tokenizer has {} tokens but the model's vocabulary has {}; the tokenizer does not belong to this model",
                file.display(),
                tokenizer.get_vocab_size(true),
                decoder.config.vocab_size
            )
        }
        Ok(LocalModel {
            device: device.clone(),
            path: file,
            architecture,
            scorer: Box::new(decoder),
            tokenizer,
            chat_template,
            bos_token_id: bos.as_ref().map(|b| b.0),
            eos_token_id: eos.as_ref().map(|e| e.0),
            bos_token: bos.map(|b| b.1),
            eos_token: eos.map(|e| e.1),
            add_bos,
            kind: ModelKind::Decoder,
        })
    }

    pub fn context_length(&self) -> usize {
        self.scorer.context_length()
    }

    /// Token ids of `text` (special tokens written in the text, like `<|im_start|>`, map to their
    /// ids; nothing is added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| anyhow::anyhow!("tokenizer failed: {e}"))
    }
}

pub(crate) fn resolve_weights_file(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        bail!("model path {} does not exist", path.display())
    }
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list model directory {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "model directory {} holds no .gguf file and no config.json; pass a .gguf file or a Hugging Face model directory (config.json, tokenizer.json, safetensors)",
            path.display()
        ),
        many => bail!(
            "model directory {} holds {} .gguf files; pass the one to use with --model",
            path.display(),
            many.len()
        ),
    }
}
