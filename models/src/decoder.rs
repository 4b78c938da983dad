//! Decoder-only transformer (Llama / Qwen2 family) written for scoring rather than generation.
//!
//! Differences from candle-transformers' models, all needed by exact label scoring:
//! - every token carries its own position (rows of a batch have different prompt lengths, and
//!   label tokens laid out as a trie sit at `prompt_len + depth`);
//! - attention takes an explicit additive mask `[batch, q_len, k_len]` (padding, causality and
//!   tree structure are all expressed there);
//! - the KV cache of one call can be passed to the next without copying it per label;
//! - the forward pass returns hidden states, and logits are computed only for chosen rows.

pub use crate::linear::{Linear, MatWeight, Projections};
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
}

impl Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Embedding::Quantized(q) => q.embedding(ids),
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

/// Keys and values of every layer for a batch: `[batch, kv_heads, len, head_dim]` each.
#[derive(Clone)]
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .map(|(k, _)| k.dim(2).unwrap_or(0))
            .unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Decoder {
    pub config: DecoderConfig,
    weights: DecoderWeights,
    /// `[max_positions, head_dim / 2]`
    cos: Tensor,
    sin: Tensor,
    device: Device,
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
        Ok(Self {
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
        self.forward_with_prefix(tokens, positions, mask, None, cache)
    }

    /// [`Self::forward`] with a batch-1 `prefix` cache that every row attends to before its own
    /// `cache` (keys in the mask: prefix, then cache, then these tokens). The prefix is shared
    /// by all rows through one matmul over the rows' queries stacked together, never repeated
    /// per row; the returned cache holds only `cache` + these tokens.
    pub fn forward_with_prefix(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        prefix: Option<&KvCache>,
        cache: Option<&KvCache>,
    ) -> Result<(Tensor, KvCache)> {
        let (b, t) = tokens.dims2()?;
        let cfg = &self.config;
        let (h, kvh, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let group = h / kvh;
        let flat_pos = positions.flatten_all()?;
        let cos = self
            .cos
            .index_select(&flat_pos, 0)?
            .reshape((b, t, hd / 2))?;
        let sin = self
            .sin
            .index_select(&flat_pos, 0)?
            .reshape((b, t, hd / 2))?;
        let k_len = mask.dim(2)?;
        let scale = 1.0 / (hd as f32).sqrt();

        let mut x = self
            .weights
            .embedding
            .forward(tokens)?
            .reshape((b * t, cfg.hidden_size))?;
        let mut new_cache = Vec::with_capacity(self.weights.layers.len());
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let residual = &x;
            let xn = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_norm_eps as f32)?;
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
            let (k_all, v_all) = match cache {
                Some(c) => {
                    let (ck, cv) = &c.layers[i];
                    (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?)
                }
                None => (k, v),
            };
            // Grouped-query attention without repeating K/V: fold the query group into rows.
            let qg = q.reshape((b, kvh, group * t, hd))?;
            let own = qg.matmul(&k_all.t()?)?;
            // The shared prefix: every row's queries stacked as [kvh, b*group*t, hd] against the
            // one prefix cache [kvh, P, hd].
            // (prefix keys [kvh, P, hd], prefix values, every row's queries stacked as
            // [kvh, b*group*t, hd]) for one matmul against the one prefix cache.
            let shared = match prefix {
                Some(p) => {
                    let (pk, pv) = &p.layers[i];
                    let stacked =
                        qg.transpose(0, 1)?
                            .contiguous()?
                            .reshape((kvh, b * group * t, hd))?;
                    Some((pk.squeeze(0)?, pv.squeeze(0)?, stacked))
                }
                None => None,
            };
            let scores = match &shared {
                Some((pk, _, stacked)) => {
                    let plen = pk.dim(1)?;
                    let ps = stacked
                        .matmul(&pk.t()?)?
                        .reshape((kvh, b, group * t, plen))?
                        .transpose(0, 1)?;
                    Tensor::cat(&[&ps, &own], 3)?
                }
                None => own,
            };
            // Scale, mask (shared by every head) and softmax in one fused pass.
            let scores = scores.reshape((b, h, t, k_len))?;
            let probs = autolabel_kernels::masked_softmax(&scores, mask, scale)?.reshape((
                b,
                kvh,
                group * t,
                k_len,
            ))?;
            let attn = match &shared {
                Some((_, pv, _)) => {
                    let plen = pv.dim(1)?;
                    let pp = probs
                        .narrow(3, 0, plen)?
                        .transpose(0, 1)?
                        .contiguous()?
                        .reshape((kvh, b * group * t, plen))?;
                    let from_prefix = pp
                        .matmul(pv)?
                        .reshape((kvh, b, group * t, hd))?
                        .transpose(0, 1)?;
                    let own_probs = probs.narrow(3, plen, k_len - plen)?.contiguous()?;
                    (from_prefix + own_probs.matmul(&v_all)?)?
                }
                None => probs.matmul(&v_all)?, // [b, kvh, group*t, hd]
            };
            let attn = attn
                .reshape((b, h, t, hd))?
                .transpose(1, 2)?
                .reshape((b * t, h * hd))?;
            let x1 = (residual + layer.o.forward(&attn)?)?;
            let xn = candle_nn::ops::rms_norm(&x1, &layer.ffn_norm, cfg.rms_norm_eps as f32)?;
            let ff =
                autolabel_kernels::silu_mul(&layer.gate.forward(&xn)?, &layer.up.forward(&xn)?)?;
            x = (&x1 + layer.down.forward(&ff)?)?;
            new_cache.push((k_all, v_all));
        }
        Ok((
            x.reshape((b, t, cfg.hidden_size))?,
            KvCache { layers: new_cache },
        ))
    }

    /// Logits `[n, vocab]` for hidden states `[n, hidden]` (final norm, then the output head).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let xn = candle_nn::ops::rms_norm(
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
