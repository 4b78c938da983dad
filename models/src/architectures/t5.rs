//! T5-family encoder-decoders (T5, t5-v1_1 / FLAN-T5, umT5) from safetensors, written for exact
//! label scoring: the encoder runs once per row (rows batched with padding masks), then every
//! label of every row is scored in one teacher-forced decoder pass. A row's labels are laid out as
//! a token trie after the decoder start token; a tree mask and per-token relative positions make
//! each label see exactly the tokens before it, and all of them attend to their row's encoder
//! output through cross-attention, which is computed once per row and never copied per label.

use crate::architectures::decoder::{build_mask, gather_rows};
use crate::architectures::linear::{Linear, MatWeight};
use crate::scoring::trie::CandidateTrie;
use crate::scoring::trie_logprobs::{candidate_logprobs, fed_slots};
use crate::scoring::{CandidateLogprobs, ContinuationScorer, ScoreRequest};
use crate::weights::hf_config::HfConfig;
use crate::weights::safetensors_weights::Weights;
use anyhow::bail;
use candle_core::{DType, Device, Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Relu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// The exact erf form (`gelu`).
    GeluErf,
    Silu,
}

impl Activation {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Activation::Relu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            "silu" | "swish" => Activation::Silu,
            _ => return None,
        })
    }

    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::GeluTanh => x.gelu(),
            Activation::GeluErf => x.gelu_erf(),
            Activation::Silu => candle_nn::ops::silu(x),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    pub model_type: String,
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_heads: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub num_buckets: usize,
    pub max_distance: usize,
    pub eps: f64,
    pub gated: bool,
    pub activation: Activation,
    /// Multiply the decoder output by d_model^-0.5 before the head (original T5, tied weights).
    pub scale_decoder_output: bool,
    /// Use `lm_head.weight` rather than the shared embedding as the output head.
    pub separate_head: bool,
    /// umT5: every layer has its own relative position bias (T5: only the first layer).
    pub bias_per_layer: bool,
    pub eos_token_id: u32,
    pub decoder_start_token_id: u32,
    /// Longest encoder input accepted (relative positions have no hard limit; this bounds memory).
    pub context_length: usize,
}

/// Encoder inputs are capped here unless `--max-context` says otherwise.
pub const DEFAULT_T5_CONTEXT: usize = 2048;

impl T5Config {
    pub fn from_hf(cfg: &HfConfig, max_context: Option<usize>) -> anyhow::Result<Self> {
        let model_type = cfg.model_type()?;
        if model_type != "t5" && model_type != "umt5" {
            bail!("{}: not a T5-family config", cfg.path.display())
        }
        let ffp = cfg
            .opt_string("feed_forward_proj")?
            .unwrap_or_else(|| "relu".into());
        let parts: Vec<&str> = ffp.split('-').collect();
        let (gated, act_name) = match parts.as_slice() {
            [act] => (false, act.to_string()),
            ["gated", act] => (
                true,
                if *act == "gelu" { "gelu_new" } else { act }.to_string(),
            ),
            _ => bail!(
                "{}: feed_forward_proj '{ffp}' is not of the form ACT or gated-ACT",
                cfg.path.display()
            ),
        };
        // Like transformers, the activation follows feed_forward_proj (a saved dense_act_fn is
        // derived from it, not read).
        let activation = Activation::parse(&act_name).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: activation '{act_name}' is not supported (relu, gelu, gelu_new, silu)",
                cfg.path.display()
            )
        })?;
        let tied = cfg.opt_bool("tie_word_embeddings")?.unwrap_or(true);
        let num_layers = cfg.usize("num_layers")?;
        let num_heads = cfg.usize("num_heads")?;
        let context_length = max_context.unwrap_or(DEFAULT_T5_CONTEXT);
        Ok(T5Config {
            vocab_size: cfg.usize("vocab_size")?,
            d_model: cfg.usize("d_model")?,
            d_kv: cfg.usize("d_kv")?,
            d_ff: cfg.usize("d_ff")?,
            num_heads,
            num_layers,
            num_decoder_layers: cfg.opt_usize("num_decoder_layers")?.unwrap_or(num_layers),
            num_buckets: cfg
                .opt_usize("relative_attention_num_buckets")?
                .unwrap_or(32),
            max_distance: cfg
                .opt_usize("relative_attention_max_distance")?
                .unwrap_or(128),
            eps: cfg.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-6),
            gated,
            activation,
            // Transformers 5 records the scaling separately (it always ties T5 weights);
            // earlier configs signal it through tie_word_embeddings.
            scale_decoder_output: cfg.opt_bool("scale_decoder_outputs")?.unwrap_or(tied),
            separate_head: !tied,
            bias_per_layer: model_type == "umt5",
            eos_token_id: cfg.opt_token_id("eos_token_id")?.unwrap_or(1),
            decoder_start_token_id: cfg
                .opt_token_id("decoder_start_token_id")?
                .or(cfg.opt_token_id("pad_token_id")?)
                .unwrap_or(0),
            context_length,
            model_type,
        })
    }
}

/// T5's relative position bucket (as in the Mesh TensorFlow and Hugging Face implementations):
/// exact buckets for short distances, logarithmic ones up to `max_distance`.
pub fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut nb = num_buckets as i64;
    let mut bucket = 0i64;
    let mut rp = relative_position;
    if bidirectional {
        nb /= 2;
        if rp > 0 {
            bucket += nb;
        }
        rp = rp.abs();
    } else {
        rp = -rp.min(0);
    }
    let max_exact = nb / 2;
    if rp < max_exact {
        bucket += rp;
    } else {
        let ratio = (rp as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (nb - max_exact) as f32;
        bucket += (max_exact + ratio as i64).min(nb - 1);
    }
    bucket as u32
}

pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// `[num_buckets, heads]` where this layer carries a relative position bias.
    pub(crate) relative_bias: Option<Tensor>,
}

pub(crate) enum FeedForward {
    Plain {
        wi: Linear,
        wo: Linear,
    },
    Gated {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
    },
}

struct EncoderLayer {
    attn_norm: Tensor,
    attn: Attention,
    ff_norm: Tensor,
    ff: FeedForward,
}

pub(crate) struct DecoderLayer {
    pub(crate) self_norm: Tensor,
    pub(crate) self_attn: Attention,
    pub(crate) cross_norm: Tensor,
    pub(crate) cross_attn: Attention,
    pub(crate) ff_norm: Tensor,
    pub(crate) ff: FeedForward,
}

pub struct T5Model {
    pub config: T5Config,
    shared: Tensor,
    encoder: Vec<EncoderLayer>,
    encoder_norm: Tensor,
    pub(crate) decoder: Vec<DecoderLayer>,
    pub(crate) decoder_norm: Tensor,
    pub(crate) lm_head: MatWeight,
    pub(crate) device: Device,
}

fn linear(w: &Weights, name: &str, out: usize, inp: usize) -> anyhow::Result<Linear> {
    Ok(Linear::new(
        MatWeight::Dense(w.get(&format!("{name}.weight"), &[out, inp])?),
        None,
    ))
}

impl T5Model {
    pub fn load(cfg: &HfConfig, w: &Weights, device: &Device) -> anyhow::Result<Self> {
        Self::load_with(T5Config::from_hf(cfg, None)?, w, device)
    }

    pub fn load_with(config: T5Config, w: &Weights, device: &Device) -> anyhow::Result<Self> {
        let c = &config;
        let (d, inner) = (c.d_model, c.num_heads * c.d_kv);
        let norm = |name: &str| w.get_dtype(name, &[d], DType::F32);
        let attention = |p: &str, with_bias: bool| -> anyhow::Result<Attention> {
            Ok(Attention {
                q: linear(w, &format!("{p}.q"), inner, d)?,
                k: linear(w, &format!("{p}.k"), inner, d)?,
                v: linear(w, &format!("{p}.v"), inner, d)?,
                o: linear(w, &format!("{p}.o"), d, inner)?,
                relative_bias: if with_bias {
                    Some(w.get_dtype(
                        &format!("{p}.relative_attention_bias.weight"),
                        &[c.num_buckets, c.num_heads],
                        DType::F32,
                    )?)
                } else {
                    None
                },
            })
        };
        let ff = |p: &str| -> anyhow::Result<FeedForward> {
            Ok(if c.gated {
                FeedForward::Gated {
                    wi_0: linear(w, &format!("{p}.wi_0"), c.d_ff, d)?,
                    wi_1: linear(w, &format!("{p}.wi_1"), c.d_ff, d)?,
                    wo: linear(w, &format!("{p}.wo"), d, c.d_ff)?,
                }
            } else {
                FeedForward::Plain {
                    wi: linear(w, &format!("{p}.wi"), c.d_ff, d)?,
                    wo: linear(w, &format!("{p}.wo"), d, c.d_ff)?,
                }
            })
        };
        let mut encoder = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = format!("encoder.block.{i}.layer");
            encoder.push(EncoderLayer {
                attn_norm: norm(&format!("{p}.0.layer_norm.weight"))?,
                attn: attention(&format!("{p}.0.SelfAttention"), i == 0 || c.bias_per_layer)?,
                ff_norm: norm(&format!("{p}.1.layer_norm.weight"))?,
                ff: ff(&format!("{p}.1.DenseReluDense"))?,
            });
        }
        let mut decoder = Vec::with_capacity(c.num_decoder_layers);
        for i in 0..c.num_decoder_layers {
            let p = format!("decoder.block.{i}.layer");
            decoder.push(DecoderLayer {
                self_norm: norm(&format!("{p}.0.layer_norm.weight"))?,
                self_attn: attention(&format!("{p}.0.SelfAttention"), i == 0 || c.bias_per_layer)?,
                cross_norm: norm(&format!("{p}.1.layer_norm.weight"))?,
                cross_attn: attention(&format!("{p}.1.EncDecAttention"), false)?,
                ff_norm: norm(&format!("{p}.2.layer_norm.weight"))?,
                ff: ff(&format!("{p}.2.DenseReluDense"))?,
            });
        }
        let shared = w.get("shared.weight", &[c.vocab_size, d])?;
        let lm_head = if c.separate_head {
            if !w.contains("lm_head.weight") {
                bail!(
                    "{}: config.json says tie_word_embeddings=false but the weights have no lm_head.weight",
                    w.dir.display()
                )
            }
            MatWeight::Dense(w.get("lm_head.weight", &[c.vocab_size, d])?)
        } else {
            MatWeight::Dense(shared.clone())
        };
        Ok(T5Model {
            encoder_norm: norm("encoder.final_layer_norm.weight")?,
            decoder_norm: norm("decoder.final_layer_norm.weight")?,
            config,
            shared,
            encoder,
            decoder,
            lm_head,
            device: device.clone(),
        })
    }

    pub(crate) fn rms(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, w, self.config.eps as f32)
    }

    pub(crate) fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let flat = ids.flatten_all()?;
        self.shared.index_select(&flat, 0)?.to_dtype(DType::F32)
    }

    /// Relative position bias `[b, heads, q, k]` from bucket ids `[b, q, k]`.
    pub(crate) fn position_bias(&self, table: &Tensor, buckets: &Tensor) -> Result<Tensor> {
        let (b, q, k) = buckets.dims3()?;
        table
            .index_select(&buckets.flatten_all()?, 0)?
            .reshape((b, q, k, self.config.num_heads))?
            .permute((0, 3, 1, 2))?
            .contiguous()
    }

    /// Multi-head attention without score scaling (T5 folds it into the weights). `x` is
    /// `[b*tq, d]`, `kv` is `[b*tk, d]`, `bias` broadcasts to `[b, heads, tq, tk]`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        a: &Attention,
        x: &Tensor,
        kv: &Tensor,
        b: usize,
        tq: usize,
        tk: usize,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let (k, v) = self.keys_values(a, kv, b, tk)?;
        self.attend_kv(a, x, &k, &v, b, tq, bias)
    }

    /// `[b*t, d]` as heads `[b, heads, t, d_kv]`.
    fn heads(&self, t: Tensor, b: usize, len: usize) -> Result<Tensor> {
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        t.reshape((b, len, h, dk))?.transpose(1, 2)?.contiguous()
    }

    /// An attention's keys and values `[b, heads, tk, d_kv]` of `kv` (`[b*tk, d]`), for
    /// [`Self::attend_kv`] (kept across steps by incremental decoding).
    pub(crate) fn keys_values(
        &self,
        a: &Attention,
        kv: &Tensor,
        b: usize,
        tk: usize,
    ) -> Result<(Tensor, Tensor)> {
        Ok((
            self.heads(a.k.forward(kv)?, b, tk)?,
            self.heads(a.v.forward(kv)?, b, tk)?,
        ))
    }

    /// [`Self::attend`] with the keys and values given (`[b, heads, tk, d_kv]`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend_kv(
        &self,
        a: &Attention,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        b: usize,
        tq: usize,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let (h, dk) = (self.config.num_heads, self.config.d_kv);
        let q = self.heads(a.q.forward(x)?, b, tq)?;
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(v)?
            .transpose(1, 2)?
            .reshape((b * tq, h * dk))?;
        a.o.forward(&out)
    }

    pub(crate) fn feed_forward(&self, ff: &FeedForward, x: &Tensor) -> Result<Tensor> {
        let act = self.config.activation;
        match ff {
            FeedForward::Plain { wi, wo } => wo.forward(&act.apply(&wi.forward(x)?)?),
            FeedForward::Gated { wi_0, wi_1, wo } => {
                wo.forward(&(act.apply(&wi_0.forward(x)?)? * wi_1.forward(x)?)?)
            }
        }
    }

    /// Encodes right-padded `ids` (`[b, s]`) whose real lengths are `lens`; returns `[b*s, d]`.
    pub fn encode(&self, ids: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let c = &self.config;
        let mut buckets = Vec::with_capacity(s * s);
        for q in 0..s {
            for k in 0..s {
                buckets.push(relative_position_bucket(
                    k as i64 - q as i64,
                    true,
                    c.num_buckets,
                    c.max_distance,
                ));
            }
        }
        let buckets = Tensor::from_vec(buckets, (1, s, s), &self.device)?;
        let key_mask =
            build_mask(b, 1, s, &self.device, |bi, _, k| k < lens[bi])?.reshape((b, 1, 1, s))?;
        let mut x = self.embed(ids)?;
        let mut bias: Option<Tensor> = None;
        for layer in &self.encoder {
            if let Some(table) = &layer.attn.relative_bias {
                bias = Some(
                    self.position_bias(table, &buckets)?
                        .broadcast_add(&key_mask)?,
                );
            }
            let bias = bias.as_ref().expect("the first layer has a position bias");
            let xn = self.rms(&x, &layer.attn_norm)?;
            x = (&x + self.attend(&layer.attn, &xn, &xn, b, s, s, bias)?)?;
            let xn = self.rms(&x, &layer.ff_norm)?;
            x = (&x + self.feed_forward(&layer.ff, &xn)?)?;
        }
        self.rms(&x, &self.encoder_norm)
    }

    /// Decoder hidden states `[b*n, d]` (after the final norm and output scaling) for `tokens`
    /// `[b, n]` whose self-attention is limited by `self_mask` (`[b, 1, n, n]`) and whose
    /// relative positions come from `buckets` (`[b, n, n]`).
    pub(crate) fn decode(
        &self,
        tokens: &Tensor,
        buckets: &Tensor,
        self_mask: &Tensor,
        encoded: &Tensor,
        enc_mask: &Tensor,
        s: usize,
    ) -> Result<Tensor> {
        let (b, n) = tokens.dims2()?;
        let mut x = self.embed(tokens)?;
        let mut bias: Option<Tensor> = None;
        for layer in &self.decoder {
            if let Some(table) = &layer.self_attn.relative_bias {
                bias = Some(
                    self.position_bias(table, buckets)?
                        .broadcast_add(self_mask)?,
                );
            }
            let bias = bias.as_ref().expect("the first layer has a position bias");
            let xn = self.rms(&x, &layer.self_norm)?;
            x = (&x + self.attend(&layer.self_attn, &xn, &xn, b, n, n, bias)?)?;
            let xn = self.rms(&x, &layer.cross_norm)?;
            x = (&x + self.attend(&layer.cross_attn, &xn, encoded, b, n, s, enc_mask)?)?;
            let xn = self.rms(&x, &layer.ff_norm)?;
            x = (&x + self.feed_forward(&layer.ff, &xn)?)?;
        }
        let x = self.rms(&x, &self.decoder_norm)?;
        if self.config.scale_decoder_output {
            x * (self.config.d_model as f64).powf(-0.5)
        } else {
            Ok(x)
        }
    }
}

impl ContinuationScorer for T5Model {
    fn context_length(&self) -> usize {
        self.config.context_length
    }

    fn score_batch(&self, requests: &[ScoreRequest]) -> Result<Vec<CandidateLogprobs>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let dev = &self.device;
        let b = requests.len();
        for (i, r) in requests.iter().enumerate() {
            r.check(i)?;
            if r.prompt.len() > self.config.context_length {
                candle_core::bail!(
                    "request {i}: the prompt has {} tokens; the limit is {}",
                    r.prompt.len(),
                    self.config.context_length
                )
            }
        }
        // 1. Encoder, rows right-padded (pad id 0 is masked out of every key set).
        let lens: Vec<usize> = requests.iter().map(|r| r.prompt.len()).collect();
        let s = *lens.iter().max().unwrap();
        let mut ids = Vec::with_capacity(b * s);
        for r in requests {
            ids.extend((0..s).map(|t| *r.prompt.get(t).unwrap_or(&0)));
        }
        let ids = Tensor::from_vec(ids, (b, s), dev)?;
        let encoded = self.encode(&ids, &lens)?;
        let enc_mask = build_mask(b, 1, s, dev, |bi, _, k| k < lens[bi])?.reshape((b, 1, 1, s))?;

        // 2. Decoder: the start token, then each row's label trie (node j at position depth+1),
        //    padded to the largest trie; padding attends to itself only.
        let tries: Vec<CandidateTrie> = requests
            .iter()
            .map(|r| CandidateTrie::build(&r.candidates))
            .collect();
        // Only nodes with children are fed (a candidate's last token predicts nothing).
        let fed: Vec<Vec<usize>> = tries.iter().map(CandidateTrie::fed_nodes).collect();
        let n = 1 + fed.iter().map(|f| f.len()).max().unwrap();
        let start = self.config.decoder_start_token_id;
        let mut toks = Vec::with_capacity(b * n);
        let mut positions: Vec<Vec<i64>> = Vec::with_capacity(b);
        for (trie, nodes) in tries.iter().zip(&fed) {
            toks.push(start);
            let mut pos = vec![0i64];
            for i in 0..n - 1 {
                let node = nodes.get(i);
                toks.push(node.map_or(0, |&j| trie.tokens[j]));
                pos.push(node.map_or(0, |&j| trie.depths[j] as i64 + 1));
            }
            positions.push(pos);
        }
        let toks = Tensor::from_vec(toks, (b, n), dev)?;
        // Fed node i sits at sequence slot i + 1; slot 0 is the start token, an ancestor of all.
        let mask = build_mask(b, n, n, dev, |bi, q, k| {
            let nodes = &fed[bi];
            if q > nodes.len() {
                return k == q;
            }
            k == 0
                || (q > 0
                    && k <= nodes.len()
                    && tries[bi].is_ancestor_or_self(nodes[k - 1], nodes[q - 1]))
        })?
        .reshape((b, 1, n, n))?;
        let mut buckets = Vec::with_capacity(b * n * n);
        for pos in &positions {
            for q in 0..n {
                for k in 0..n {
                    buckets.push(relative_position_bucket(
                        pos[k] - pos[q],
                        false,
                        self.config.num_buckets,
                        self.config.max_distance,
                    ));
                }
            }
        }
        let buckets = Tensor::from_vec(buckets, (b, n, n), dev)?;
        let hidden = self
            .decode(&toks, &buckets, &mask, &encoded, &enc_mask, s)?
            .reshape((b, n, self.config.d_model))?;

        // 3. Logits where a label token is predicted: the start token and every fed node (in
        //    `inner_nodes` order), fed node i at decoder slot i + 1.
        let rows: Vec<(usize, usize)> =
            (0..b).map(|bi| (bi, 0)).chain(fed_slots(&fed, 1)).collect();
        candidate_logprobs(&tries, &gather_rows(&hidden, &rows)?, |h| {
            self.lm_head.forward(h)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_the_reference_definition() {
        // Values computed with transformers' T5Attention._relative_position_bucket
        // (num_buckets=32, max_distance=128).
        let bi = |r| relative_position_bucket(r, true, 32, 128);
        assert_eq!(
            [-200, -64, -20, -8, -7, -1, 0, 1, 7, 8, 20, 64, 200].map(bi),
            [15, 14, 10, 8, 7, 1, 0, 17, 23, 24, 26, 30, 31]
        );
        let uni = |r| relative_position_bucket(r, false, 32, 128);
        assert_eq!(
            [-200, -64, -20, -16, -15, -1, 0, 5].map(uni),
            [31, 26, 17, 16, 15, 1, 0, 0]
        );
    }
}
