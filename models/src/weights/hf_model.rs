//! Loading a Hugging Face model directory (config.json, tokenizer files, safetensors) into a
//! [`LocalModel`]: decoders through [`crate::weights::safetensors_decoder`], encoder-decoders through
//! [`crate::architectures::t5`], special tokens and the chat template from tokenizer_config.json.

use crate::architectures::t5::{T5Config, T5Model};
use crate::generation::IncrementalDecoder;
use crate::local_model::{LoadOptions, LocalModel, ModelKind};
use crate::weights::gguf::WeightFormat;
use crate::weights::hf_config::HfConfig;
use crate::weights::safetensors_weights::Weights;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

impl LocalModel {
    /// A Hugging Face model directory: config.json, tokenizer.json (tokenizer_config.json for
    /// special tokens and the chat template) and safetensors weights, single or sharded.
    pub fn load_safetensors(dir: &Path, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let cfg = HfConfig::read(&dir.join("config.json"))?;
        let model_type = cfg.model_type()?;
        let t5 = model_type == "t5" || model_type == "umt5";
        let dtype = match opts.weights {
            WeightFormat::F32 => DType::F32,
            WeightFormat::F16 => DType::F16,
            WeightFormat::BF16 => DType::BF16,
            // Read as f32 on the CPU and quantized to Q8_0 as each matrix is loaded.
            WeightFormat::Quantized if !t5 => DType::F32,
            WeightFormat::Quantized => bail!(
                "--dtype q: {} is a {model_type} model, which this tool does not quantize; use f32, f16 or bf16",
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
        let read_on = match opts.weights {
            WeightFormat::Quantized => Device::Cpu,
            _ => device.clone(),
        };
        let weights = Weights::open(dir, dtype, &read_on)?;
        let (scorer, kind, bos, eos): (Box<dyn IncrementalDecoder>, _, _, _) = if t5 {
            let config = T5Config::from_hf(&cfg, opts.max_context)?;
            let eos_id = config.eos_token_id;
            let eos = token(tc.eos_token.clone())
                .filter(|(id, _)| *id == eos_id)
                .or_else(|| tokenizer.id_to_token(eos_id).map(|t| (eos_id, t)));
            let model = T5Model::load_with(config, &weights, device)?;
            (Box::new(model), ModelKind::EncoderDecoder, None, eos)
        } else {
            let decoder = crate::weights::safetensors_decoder::load_decoder(
                &cfg,
                &weights,
                device,
                opts.max_context,
                opts.weights,
            )?;
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
            device: device.clone(),
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
}

/// `tokenizer.json` of a model directory.
fn read_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        if dir.join("spiece.model").exists() {
            return crate::tokenization::sentencepiece::tokenizer_from_spiece(
                &dir.join("spiece.model"),
            );
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
