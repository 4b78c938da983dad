//! Decoder-only transformer (Llama / Qwen2 family) written for scoring rather than generation.
//!
//! Differences from candle-transformers' models, all needed by exact label scoring:
//! - every token carries its own position (rows of a batch have different prompt lengths, and
//!   label tokens laid out as a trie sit at `prompt_len + depth`);
//! - attention takes an explicit additive mask `[batch, q_len, k_len]` (padding, causality and
//!   tree structure are all expressed there);
//! - the KV cache of one call can be passed to the next without copying it per label;
//! - the forward pass returns hidden states, and logits are computed only for chosen rows.

use crate::architectures::decoder_attention::{
    attention, attention_chunks, chunked_attention, ATTENTION_CHUNK,
};
pub(crate) use crate::architectures::kv_cache::Keep;
pub use crate::architectures::kv_cache::KvCache;
pub use crate::architectures::linear::{Linear, MatWeight, Projections};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Arc;

/// How rotary embeddings pair up dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (llama.cpp's "normal" rope; GGUF llama weights are permuted for it).
    Interleaved,
    /// First half with second half (GPT-NeoX style; Qwen2 and Hugging Face Llama checkpoints).
    Halves,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    pub architecture: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_style: RopeStyle,
    pub rope_scaling: RopeScaling,
}

/// Rotary frequency scaling for contexts beyond the training length.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor` (every frequency divided by it).
    Linear { factor: f32 },
    /// Llama 3.x: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    fn apply(self, inv_freq: f32) -> f32 {
        match self {
            RopeScaling::None => inv_freq,
            RopeScaling::Linear { factor } => inv_freq / factor,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f32;
                let low_freq_wavelen = old / low_freq_factor;
                let high_freq_wavelen = old / high_freq_factor;
                let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
                if wavelen < high_freq_wavelen {
                    inv_freq
                } else if wavelen > low_freq_wavelen {
                    inv_freq / factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
                }
            }
        }
    }
}

/// Token embedding table: quantized tables are looked up row by row without dequantizing the
/// whole table.
pub enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
    /// The rows of a tied output head's block weights.
    Blocks(Arc<autolabel_kernels::BlockMatrix>),
}

impl Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Quantized(q) => q.embedding(ids),
            Embedding::Blocks(b) => {
                let flat = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut dims = ids.dims().to_vec();
                dims.push(b.dims().1);
                Tensor::from_vec(b.rows(&flat)?, dims, ids.device())
            }
            Embedding::Dense(t) => {
                let flat = ids.flatten_all()?;
                let mut dims = ids.dims().to_vec();
                dims.push(t.dim(1)?);
                t.index_select(&flat, 0)?
                    .to_dtype(DType::F32)?
                    .reshape(dims)
            }
        }
    }
}

pub struct Layer {
    pub attn_norm: Tensor,
    /// q, k and v.
    pub qkv: Projections,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        attn_norm: Tensor,
        q: Linear,
        k: Linear,
        v: Linear,
        o: Linear,
        ffn_norm: Tensor,
        gate: Linear,
        up: Linear,
        down: Linear,
    ) -> Result<Self> {
        Ok(Layer {
            attn_norm,
            // Fusing q/k/v measured 18% faster prefill at 128 tokens (k and v alone are narrow
            // GEMMs); fusing gate/up measured slower at 512 tokens (strided activations), so
            // they stay apart (`cargo bench -p autolabel-models --bench scorer -- prefill`).
            qkv: Projections::new(vec![q, k, v])?,
            o,
            ffn_norm,
            gate,
            up,
            down,
        })
    }
}

pub struct DecoderWeights {
    pub embedding: Embedding,
    pub layers: Vec<Layer>,
    pub final_norm: Tensor,
    pub lm_head: MatWeight,
}

pub struct Decoder {
    pub config: DecoderConfig,
    weights: DecoderWeights,
    /// `[max_positions, head_dim / 2]`
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// The KV cache's dtype: f16 for quantized weights on the CPU (`--dtype q`, as llama.cpp's
    /// cache), else f32.
    pub(crate) kv_dtype: DType,
    /// The shared prompt prefix and its KV cache (batch 1), if one was declared.
    pub(crate) prefix: std::sync::Mutex<Option<(Vec<u32>, KvCache)>>,
}

impl Decoder {
    pub fn new(config: DecoderConfig, weights: DecoderWeights, device: &Device) -> Result<Self> {
        let half = config.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                config.rope_scaling.apply(
                    1.0 / config
                        .rope_theta
                        .powf(2.0 * i as f32 / config.head_dim as f32),
                )
            })
            .collect();
        let max_pos = config.context_length.max(1);
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.broadcast_mul(&inv_freq)?;
        let quantized = weights.layers.first().is_some_and(|l| {
            matches!(
                l.down.weight,
                MatWeight::Blocks(_) | MatWeight::Q(candle_core::quantized::QMatMul::QTensor(_))
            )
        });
        let kv_dtype = if device.is_cpu() && quantized {
            DType::F16
        } else {
            DType::F32
        };
        Ok(Self {
            kv_dtype,
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            config,
            weights,
            device: device.clone(),
            prefix: std::sync::Mutex::new(None),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `tokens` (`[b, t]`, u32) at `positions` (`[b, t]`, u32) attending to `cache` (if any)
    /// and to themselves under `mask` (`[b, t, cache_len + t]`, f32, 0 or -inf). Returns hidden
    /// states `[b, t, hidden]` before the final norm and the KV cache extended by these tokens.
    pub fn forward(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: Option<&KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let earlier: Vec<&KvCache> = cache.into_iter().collect();
        let (hidden, kept) =
            self.run_layers(tokens, positions, mask, None, &earlier, Keep::Joined)?;
        Ok((hidden, kept.expect("kept cache")))
    }

    /// The layers over `tokens`, attending to the batch-1 `prefix`, then to each of `earlier`
    /// (`[b, kvh, len, hd]` caches, in order), then to themselves under `mask`. Returns the
    /// hidden states and the keys and values `keep` asks for. On the CPU no cache is copied to
    /// attend to it: the fused kernel reads every segment where it lies.
    pub(crate) fn run_layers(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        prefix: Option<&KvCache>,
        earlier: &[&KvCache],
        keep: Keep<'_>,
    ) -> Result<(Tensor, Option<KvCache>)> {
        let (b, t) = tokens.dims2()?;
        let cfg = &self.config;
        let (h, kvh, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let flat_pos = positions.flatten_all()?;
        let cos = self
            .cos
            .index_select(&flat_pos, 0)?
            .reshape((b, t, hd / 2))?;
        let sin = self
            .sin
            .index_select(&flat_pos, 0)?
            .reshape((b, t, hd / 2))?;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut x = self
            .weights
            .embedding
            .forward(tokens)?
            .reshape((b * t, cfg.hidden_size))?;
        // Blocks for the candle-ops path only (the fused CPU kernel finds its own).
        let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32 && mask.dtype() == DType::F32;
        let chunks = if cpu_f32 {
            None
        } else {
            attention_chunks(mask, ATTENTION_CHUNK)?
        };
        let mut new_cache = Vec::with_capacity(self.weights.layers.len());
        for (i, layer) in self.weights.layers.iter().enumerate() {
            // The attention half in a block of its own, so its temporaries (norm, projections,
            // heads, rotated copies, attention output, the layer's input) are freed before the
            // feed-forward's larger ones are made (SmolLM2: ~17 KiB a position).
            let residual = x;
            let x1 = {
                let xn = autolabel_kernels::rms_norm(
                    &residual,
                    &layer.attn_norm,
                    cfg.rms_norm_eps as f32,
                )?;
                let qkv = layer.qkv.forward(&xn)?;
                let heads = |x: &Tensor, n: usize| -> Result<Tensor> {
                    x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
                };
                let (q, k, v) = (
                    heads(&qkv[0], h)?,
                    heads(&qkv[1], kvh)?,
                    heads(&qkv[2], kvh)?,
                );
                let (q, k) = match cfg.rope_style {
                    RopeStyle::Interleaved => (
                        candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                        candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                    ),
                    RopeStyle::Halves => (
                        candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                        candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                    ),
                };
                // An f16 cache holds every key and value rounded alike, cached or not.
                let (k, v) = match self.kv_dtype {
                    DType::F16 => (
                        autolabel_kernels::to_f16(&k)?,
                        autolabel_kernels::to_f16(&v)?,
                    ),
                    _ => (k, v),
                };
                let prefix_kv = prefix.map(|p| &p.layers[i]);
                // The earlier caches with these tokens' keys appended (a copy), made only when needed.
                let joined = || -> Result<(Tensor, Tensor)> {
                    if earlier.is_empty() {
                        return Ok((k.clone(), v.clone()));
                    }
                    let ks: Vec<&Tensor> =
                        earlier.iter().map(|c| &c.layers[i].0).chain([&k]).collect();
                    let vs: Vec<&Tensor> =
                        earlier.iter().map(|c| &c.layers[i].1).chain([&v]).collect();
                    Ok((Tensor::cat(&ks, 2)?, Tensor::cat(&vs, 2)?))
                };
                // On the CPU one fused pass over the prefix, the caches and these keys where they
                // lie (no copies, causal blocks); on other devices candle's ops.
                let before: Vec<(&Tensor, &Tensor)> = prefix_kv
                    .into_iter()
                    .chain(earlier.iter().map(|c| &c.layers[i]))
                    .map(|(k, v)| (k, v))
                    .collect();
                let (attn, all) =
                    match autolabel_kernels::attention_cpu(&q, &k, &v, mask, &before, scale)? {
                        Some(out) => (out, None),
                        None => {
                            let (k_all, v_all) = joined()?;
                            let out = match (&chunks, prefix_kv) {
                                // A long causal prefill: each block of queries against the keys
                                // it can see.
                                (Some(chunks), None) => {
                                    chunked_attention(&q, &k_all, &v_all, mask, chunks, scale)?
                                }
                                _ => attention(&q, &k_all, &v_all, mask, prefix_kv, scale)?,
                            };
                            (out.transpose(1, 2)?, Some((k_all, v_all)))
                        }
                    };
                match keep {
                    Keep::Nothing => {}
                    Keep::Into(dst, at) => {
                        dst.layers[i].0.slice_set(&k, 2, at)?;
                        dst.layers[i].1.slice_set(&v, 2, at)?;
                    }
                    Keep::Own => new_cache.push((k, v)),
                    Keep::Joined => new_cache.push(match all {
                        Some(all) => all,
                        None => joined()?,
                    }),
                }
                let attn = attn.reshape((b * t, h * hd))?;
                (residual + layer.o.forward(&attn)?)?
            };
            x = self.feed_forward(layer, &x1)?;
        }
        Ok((
            x.reshape((b, t, cfg.hidden_size))?,
            matches!(keep, Keep::Own | Keep::Joined).then_some(KvCache { layers: new_cache }),
        ))
    }

    /// The norm, SwiGLU feed-forward and residual of one layer.
    fn feed_forward(&self, layer: &Layer, x1: &Tensor) -> Result<Tensor> {
        let xn = autolabel_kernels::rms_norm(x1, &layer.ffn_norm, self.config.rms_norm_eps as f32)?;
        let gate_up = crate::architectures::linear::forward_shared(&[&layer.gate, &layer.up], &xn)?;
        drop(xn);
        let ff = autolabel_kernels::silu_mul(&gate_up[0], &gate_up[1])?;
        drop(gate_up); // freed before the down projection's output is made
        x1 + layer.down.forward(&ff)?
    }

    /// Logits `[n, vocab]` for hidden states `[n, hidden]` (final norm, then the output head).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let xn = autolabel_kernels::rms_norm(
            hidden,
            &self.weights.final_norm,
            self.config.rms_norm_eps as f32,
        )?;
        self.weights.lm_head.forward(&xn)
    }
}

/// Builds a `[b, q, k]` f32 additive mask from a predicate.
pub fn build_mask(
    b: usize,
    q: usize,
    k: usize,
    device: &Device,
    allowed: impl Fn(usize, usize, usize) -> bool,
) -> Result<Tensor> {
    let mut data = Vec::with_capacity(b * q * k);
    for bi in 0..b {
        for qi in 0..q {
            for ki in 0..k {
                data.push(if allowed(bi, qi, ki) {
                    0f32
                } else {
                    f32::NEG_INFINITY
                });
            }
        }
    }
    Tensor::from_vec(data, (b, q, k), device)
}

/// Gathers rows `(batch, position)` of hidden states `[b, t, h]` into `[n, h]`.
pub fn gather_rows(hidden: &Tensor, rows: &[(usize, usize)]) -> Result<Tensor> {
    let (b, t, h) = hidden.dims3()?;
    let flat = hidden.reshape((b * t, h))?;
    let idx: Vec<u32> = rows.iter().map(|&(bi, ti)| (bi * t + ti) as u32).collect();
    let idx = Tensor::from_vec(idx, rows.len(), hidden.device())?;
    flat.index_select(&idx, 0)
}
