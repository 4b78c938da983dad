//! A model ready to score: weights behind the scoring trait, its tokenizer and its chat template.

use crate::gguf::{GgufFile, WeightFormat};
use crate::gguf_tokenizer::tokenizer_from_gguf;
use crate::hf_config::HfConfig;
use crate::safetensors_weights::Weights;
use crate::scoring::ContinuationScorer;
use crate::t5::{T5Config, T5Model};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;
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
    pub scorer: Box<dyn ContinuationScorer>,
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
                || path.join(crate::safetensors_weights::INDEX_FILE).exists()
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
        let tokens = meta
            .string_array("tokenizer.ggml.tokens")
            .unwrap_or_default();
        let token_of = |key: &str| -> Option<(u32, String)> {
            let id = meta.u32(key).ok()?;
            Some((id, tokens.get(id as usize)?.clone()))
        };
        let bos = token_of("tokenizer.ggml.bos_token_id");
        let eos = token_of("tokenizer.ggml.eos_token_id");
        let add_bos = meta.bool("tokenizer.ggml.add_bos_token").unwrap_or(false);
        let chat_template = meta.string("tokenizer.chat_template").ok();
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

    /// A Hugging Face model directory: config.json, tokenizer.json (tokenizer_config.json for
    /// special tokens and the chat template) and safetensors weights, single or sharded.
    pub fn load_safetensors(dir: &Path, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let cfg = HfConfig::read(&dir.join("config.json"))?;
        let model_type = cfg.model_type()?;
        let dtype = match opts.weights {
            WeightFormat::F32 => DType::F32,
            WeightFormat::F16 => DType::F16,
            WeightFormat::BF16 => DType::BF16,
            WeightFormat::Quantized => bail!(
                "--dtype q keeps a GGUF file's quantization; {} holds safetensors weights: use f32, f16 or bf16",
                dir.display()
            ),
        };
        let tokenizer = read_tokenizer(dir)?;
        let tc = TokenizerConfig::read(dir)?;
        let token = |name: Option<String>| -> Option<(u32, String)> {
            let name = name?;
            Some((tokenizer.token_to_id(&name)?, name))
        };
        let vocab_size = cfg.usize("vocab_size")?;
        if tokenizer.get_vocab_size(true) > vocab_size {
            bail!(
                "{}: the tokenizer has {} tokens but config.json's vocab_size is {vocab_size}; the tokenizer does not belong to this model",
                dir.display(),
                tokenizer.get_vocab_size(true)
            )
        }
        let weights = Weights::open(dir, dtype, device)?;
        let (scorer, kind, bos, eos): (Box<dyn ContinuationScorer>, _, _, _) = if model_type == "t5"
            || model_type == "umt5"
        {
            let config = T5Config::from_hf(&cfg, opts.max_context)?;
            let eos_id = config.eos_token_id;
            let eos = token(tc.eos_token.clone())
                .filter(|(id, _)| *id == eos_id)
                .or_else(|| tokenizer.id_to_token(eos_id).map(|t| (eos_id, t)));
            let model = T5Model::load_with(config, &weights, device)?;
            (Box::new(model), ModelKind::EncoderDecoder, None, eos)
        } else {
            let decoder =
                crate::safetensors_decoder::load_decoder(&cfg, &weights, device, opts.max_context)?;
            let id_of = |key: &str| cfg.opt_token_id(key).ok().flatten();
            let bos = token(tc.bos_token.clone()).or_else(|| {
                let id = id_of("bos_token_id")?;
                Some((id, tokenizer.id_to_token(id)?))
            });
            let eos = token(tc.eos_token.clone()).or_else(|| {
                let id = id_of("eos_token_id")?;
                Some((id, tokenizer.id_to_token(id)?))
            });
            (Box::new(decoder), ModelKind::Decoder, bos, eos)
        };
        // Whether prompts start with BOS: tokenizer_config.json says so, else the tokenizer's
        // own post-processor does when it adds one.
        let add_bos = kind == ModelKind::Decoder
            && match (tc.add_bos_token, &bos) {
                (Some(v), _) => v,
                (None, Some((id, _))) => tokenizer
                    .encode("a", true)
                    .is_ok_and(|e| e.get_ids().first() == Some(id)),
                (None, None) => false,
            };
        Ok(LocalModel {
            path: dir.to_path_buf(),
            architecture: model_type,
            scorer,
            tokenizer,
            chat_template: if kind == ModelKind::Decoder {
                tc.chat_template
            } else {
                None
            },
            bos_token_id: bos.as_ref().map(|b| b.0),
            bos_token: bos.map(|b| b.1),
            eos_token_id: eos.as_ref().map(|e| e.0),
            eos_token: eos.map(|e| e.1),
            add_bos,
            kind,
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

fn resolve_weights_file(path: &Path) -> Result<PathBuf> {
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

/// `tokenizer.json` of a model directory.
fn read_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        if dir.join("spiece.model").exists() {
            return crate::sentencepiece::tokenizer_from_spiece(&dir.join("spiece.model"));
        }
        bail!(
            "{} has no tokenizer.json (and no spiece.model); the model directory needs its tokenizer",
            dir.display()
        )
    }
    Tokenizer::from_file(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// What `tokenizer_config.json` says about special tokens and the chat template.
#[derive(Debug, Default)]
struct TokenizerConfig {
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos_token: Option<bool>,
    chat_template: Option<String>,
}

impl TokenizerConfig {
    fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer_config.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(Self::default());
        };
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        // A token is a string or an AddedToken object with "content".
        let token = |key: &str| -> Option<String> {
            match v.get(key)? {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(String::from),
                _ => None,
            }
        };
        // A template is a string, or a list of {name, template} where "default" is the one.
        let chat_template = match v.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or(list.first())
                .and_then(|t| t.get("template")?.as_str().map(String::from)),
            _ => None,
        };
        // Newer checkpoints keep the template in its own file.
        let chat_template =
            chat_template.or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
        Ok(TokenizerConfig {
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
            add_bos_token: v.get("add_bos_token").and_then(Value::as_bool),
            chat_template,
        })
    }
}
