//! Llama, Mistral and Qwen2 decoders from Hugging Face safetensors checkpoints, into the same
//! [`Decoder`] the GGUF loader builds (Hugging Face checkpoints use half-split rotary pairs).

use crate::architectures::decoder::{
    Decoder, DecoderConfig, DecoderWeights, Embedding, Layer, Linear, MatWeight, RopeScaling,
    RopeStyle,
};
use crate::weights::gguf::WeightFormat;
use crate::weights::hf_config::HfConfig;
use crate::weights::safetensors_weights::Weights;
use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::sync::Arc;

/// The decoder shape described by a Llama / Mistral / Qwen2 `config.json`.
pub fn decoder_config(cfg: &HfConfig, max_context: Option<usize>) -> Result<DecoderConfig> {
    let arch = cfg.model_type()?;
    let file = cfg.path.display();
    let hidden_size = cfg.usize("hidden_size")?;
    let n_heads = cfg.usize("num_attention_heads")?;
    let n_kv_heads = cfg.opt_usize("num_key_value_heads")?.unwrap_or(n_heads);
    let head_dim = cfg.opt_usize("head_dim")?.unwrap_or(hidden_size / n_heads);
    if !n_heads.is_multiple_of(n_kv_heads) || !head_dim.is_multiple_of(2) {
        bail!("{file}: inconsistent attention shape (num_attention_heads {n_heads}, num_key_value_heads {n_kv_heads}, head_dim {head_dim})")
    }
    if let Some(act) = cfg.opt_string("hidden_act")? {
        if act != "silu" {
            bail!("{file}: hidden_act '{act}' is not supported (only silu)")
        }
    }
    // Transformers 5 writes rope settings under `rope_parameters`; older configs use
    // `rope_theta` and `rope_scaling`.
    let params = cfg.get("rope_parameters").or(cfg.get("rope_scaling"));
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(cfg.opt_f64("rope_theta")?)
        .unwrap_or(10_000.0);
    let rope_scaling = rope_scaling(params, &file.to_string())?;
    let mut context_length = cfg.opt_usize("max_position_embeddings")?.unwrap_or(4096);
    // Mistral-style sliding windows: keep prompts within the window, where attention is exact.
    if cfg.opt_bool("use_sliding_window")? != Some(false) {
        if let Some(w) = cfg.opt_usize("sliding_window")? {
            context_length = context_length.min(w);
        }
    }
    if let Some(cap) = max_context {
        context_length = context_length.min(cap);
    }
    Ok(DecoderConfig {
        architecture: arch,
        n_layers: cfg.usize("num_hidden_layers")?,
        hidden_size,
        n_heads,
        n_kv_heads,
        head_dim,
        rope_theta: theta as f32,
        rms_norm_eps: cfg.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
        vocab_size: cfg.usize("vocab_size")?,
        context_length,
        rope_style: RopeStyle::Halves,
        rope_scaling,
    })
}

fn rope_scaling(params: Option<&Value>, file: &str) -> Result<RopeScaling> {
    let Some(p) = params else {
        return Ok(RopeScaling::None);
    };
    let kind = p
        .get("rope_type")
        .or(p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f32> {
        p.get(k)
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| anyhow::anyhow!("{file}: rope scaling '{kind}' needs a number '{k}'"))
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        },
        other => bail!(
            "{file}: rope scaling '{other}' is not supported (supported: default, linear, llama3)"
        ),
    })
}

/// Loads the decoder with matmul weights and embeddings in the weights' dtype (norms and biases
/// in f32); with [`WeightFormat::Quantized`] (`--dtype q`) the weights are read in f32 on the CPU
/// and every matrix whose rows are whole 32-value blocks is quantized to Q8_0 onto `device` as
/// it is loaded (a quarter of f32's memory, about half of bf16's; the CPU runs it through our
/// integer kernels, a GPU through candle's quantized matmul), the rest moved as f32.
pub fn load_decoder(
    cfg: &HfConfig,
    weights: &Weights,
    device: &Device,
    max_context: Option<usize>,
    format: WeightFormat,
) -> Result<Decoder> {
    let config = decoder_config(cfg, max_context)?;
    let (h, v) = (config.hidden_size, config.vocab_size);
    let q_out = config.n_heads * config.head_dim;
    let kv_out = config.n_kv_heads * config.head_dim;
    let ffn = cfg.usize("intermediate_size")?;
    let quantize = format == WeightFormat::Quantized;
    let onto =
        |t: Tensor| -> Result<Tensor> { Ok(if quantize { t.to_device(device)? } else { t }) };
    let f32w = |name: &str, shape: &[usize]| onto(weights.get_dtype(name, shape, DType::F32)?);
    // A matrix [rows, cols] as stored, or as Q8_0 blocks (with `q`, when cols fill whole blocks).
    let q8 = |t: &Tensor| -> Result<Option<Arc<QTensor>>> {
        let cols = t.dims().last().copied().unwrap_or(0);
        Ok(if quantize && cols % GgmlDType::Q8_0.block_size() == 0 {
            Some(Arc::new(QTensor::quantize_onto(
                t,
                GgmlDType::Q8_0,
                device,
            )?))
        } else {
            None
        })
    };
    let mat = |name: &str, shape: &[usize]| -> Result<MatWeight> {
        let t = weights.get(name, shape)?;
        Ok(match q8(&t)? {
            Some(q) => format.matmul(q, device)?,
            None => MatWeight::Dense(onto(t)?),
        })
    };
    let linear = |name: &str, out: usize, inp: usize| -> Result<Linear> {
        let weight = mat(&format!("{name}.weight"), &[out, inp])?;
        let bias_name = format!("{name}.bias");
        let bias = if weights.contains(&bias_name) {
            Some(f32w(&bias_name, &[out])?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    };
    let embed = weights.get("model.embed_tokens.weight", &[v, h])?;
    let tied = cfg.opt_bool("tie_word_embeddings")?.unwrap_or(false)
        || !weights.contains("lm_head.weight");
    let (embedding, lm_head) = match q8(&embed)? {
        Some(q) => {
            let head = if tied {
                format.matmul(q.clone(), device)?
            } else {
                mat("lm_head.weight", &[v, h])?
            };
            match &head {
                // A tied head held by our kernel serves the embedding lookups too (one copy).
                MatWeight::Blocks(b) if tied => (Embedding::Blocks(b.clone()), head),
                _ => (Embedding::Quantized(q), head),
            }
        }
        None => {
            let embed = onto(embed)?;
            let head = if tied {
                MatWeight::Dense(embed.clone())
            } else {
                mat("lm_head.weight", &[v, h])?
            };
            (Embedding::Dense(embed), head)
        }
    };
    let mut layers = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let p = format!("model.layers.{i}");
        layers.push(Layer::new(
            f32w(&format!("{p}.input_layernorm.weight"), &[h])?,
            linear(&format!("{p}.self_attn.q_proj"), q_out, h)?,
            linear(&format!("{p}.self_attn.k_proj"), kv_out, h)?,
            linear(&format!("{p}.self_attn.v_proj"), kv_out, h)?,
            linear(&format!("{p}.self_attn.o_proj"), h, q_out)?,
            f32w(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            linear(&format!("{p}.mlp.gate_proj"), ffn, h)?,
            linear(&format!("{p}.mlp.up_proj"), ffn, h)?,
            linear(&format!("{p}.mlp.down_proj"), h, ffn)?,
        )?);
    }
    let weights = DecoderWeights {
        embedding,
        layers,
        final_norm: f32w("model.norm.weight", &[h])?,
        lm_head,
    };
    Ok(Decoder::new(config, weights, device)?)
}
