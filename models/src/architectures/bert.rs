//! BERT-style encoders (BERT, MiniLM, the sentence-transformers family) from safetensors: token
//! embeddings, post-norm self-attention layers with a padding mask, the last hidden states out.
//! Used for sentence embeddings (few-shot and label selection), not for labeling.

use crate::architectures::t5::Activation;
use crate::weights::hf_config::HfConfig;
use anyhow::{bail, Context};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};

#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    pub pad_token_id: u32,
}

impl BertConfig {
    /// Reads a `config.json` of `model_type` "bert"; any other model type is refused with a
    /// message saying an embedding model must be a BERT-style encoder.
    pub fn from_hf(cfg: &HfConfig) -> anyhow::Result<Self> {
        let model_type = cfg.string("model_type").unwrap_or_default();
        if model_type != "bert" {
            bail!(
                "{}: model_type '{model_type}' is not a BERT encoder; an embedding model must be a BERT-style sentence-transformers model (model_type 'bert', e.g. sentence-transformers/all-MiniLM-L6-v2)",
                cfg.path.display()
            )
        }
        let act = cfg
            .opt_string("hidden_act")?
            .unwrap_or_else(|| "gelu".into());
        let activation = Activation::parse(&act).with_context(|| {
            format!(
                "{}: hidden_act '{act}' is not supported (gelu, gelu_new, relu, silu)",
                cfg.path.display()
            )
        })?;
        if let Some(kind) = cfg.opt_string("position_embedding_type")? {
            if kind != "absolute" {
                bail!(
                    "{}: position_embedding_type '{kind}' is not supported (absolute only)",
                    cfg.path.display()
                )
            }
        }
        let c = BertConfig {
            vocab_size: cfg.usize("vocab_size")?,
            hidden_size: cfg.usize("hidden_size")?,
            num_hidden_layers: cfg.usize("num_hidden_layers")?,
            num_attention_heads: cfg.usize("num_attention_heads")?,
            intermediate_size: cfg.usize("intermediate_size")?,
            max_position_embeddings: cfg.usize("max_position_embeddings")?,
            type_vocab_size: cfg.opt_usize("type_vocab_size")?.unwrap_or(2),
            layer_norm_eps: cfg.opt_f64("layer_norm_eps")?.unwrap_or(1e-12),
            activation,
            pad_token_id: cfg.opt_token_id("pad_token_id")?.unwrap_or(0),
        };
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            bail!(
                "{}: hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.path.display(),
                c.hidden_size,
                c.num_attention_heads
            )
        }
        Ok(c)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

pub struct BertModel {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    activation: Activation,
    pub config: BertConfig,
}

impl BertModel {
    /// Weights under `vb` (either at the root, as sentence-transformers saves them, or under
    /// `bert.`).
    pub fn new(cfg: &BertConfig, vb: VarBuilder) -> Result<Self> {
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: linear(h, h, a.pp("self.query"))?,
                key: linear(h, h, a.pp("self.key"))?,
                value: linear(h, h, a.pp("self.value"))?,
                attn_out: linear(h, h, a.pp("output.dense"))?,
                attn_norm: layer_norm(h, cfg.layer_norm_eps, a.pp("output.LayerNorm"))?,
                intermediate: linear(h, cfg.intermediate_size, l.pp("intermediate.dense"))?,
                output: linear(cfg.intermediate_size, h, l.pp("output.dense"))?,
                out_norm: layer_norm(h, cfg.layer_norm_eps, l.pp("output.LayerNorm"))?,
            });
        }
        Ok(BertModel {
            word: embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?,
            position: embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?,
            token_type: embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?,
            norm: layer_norm(h, cfg.layer_norm_eps, e.pp("LayerNorm"))?,
            layers,
            heads: cfg.num_attention_heads,
            activation: cfg.activation,
            config: cfg.clone(),
        })
    }

    /// Last hidden states `[batch, seq, hidden]` for token ids `[batch, seq]` (u32) and a mask
    /// `[batch, seq]` (f32, 1 for real tokens, 0 for padding). Token type ids are all 0.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let positions = Tensor::arange(0u32, t as u32, ids.device())?;
        let types = Tensor::zeros((b, t), DType::U32, ids.device())?;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.norm.forward(&x)?;
        // Padding keys get a large negative score: (1 - mask) * -1e9, shaped [b, 1, 1, t].
        let bias = ((mask.ones_like()? - mask)? * -1e9)?.reshape((b, 1, 1, t))?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &bias)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let d = h / self.heads;
        let split = |y: Tensor| -> Result<Tensor> {
            y.reshape((b, t, self.heads, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(l.query.forward(x)?)?;
        let k = split(l.key.forward(x)?)?;
        let v = split(l.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, h))?;
        let x = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let inner = self.activation.apply(&l.intermediate.forward(&x)?)?;
        l.out_norm.forward(&(l.output.forward(&inner)? + x)?)
    }
}

/// Mean of the hidden states over real tokens: `[batch, seq, hidden]`, mask `[batch, seq]` →
/// `[batch, hidden]`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.unsqueeze(D::Minus1)?;
    let sum = hidden.broadcast_mul(&m)?.sum(1)?;
    let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
    sum.broadcast_div(&count)
}
