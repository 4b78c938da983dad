//! Incremental decoding for T5 / FLAN-T5 / umT5: the prompts are encoded once and every decoder
//! layer's cross-attention keys and values computed once from them; then each step feeds one
//! token per row, its self-attention against the keys and values of the tokens before it (kept
//! per layer, per row), with the relative position bias of the new position.

use super::{DecodeState, IncrementalDecoder};
use crate::architectures::decoder::build_mask;
use crate::architectures::t5::{relative_position_bucket, T5Model};
use candle_core::{Result, Tensor, D};

impl IncrementalDecoder for T5Model {
    fn begin<'a>(&'a self, prompts: &[&[u32]]) -> Result<Box<dyn DecodeState + 'a>> {
        let dev = &self.device;
        let b = prompts.len();
        let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
        if lens.contains(&0) {
            candle_core::bail!("empty prompt")
        }
        let s = *lens.iter().max().expect("at least one prompt");
        let mut ids = Vec::with_capacity(b * s);
        for p in prompts {
            ids.extend((0..s).map(|t| *p.get(t).unwrap_or(&0)));
        }
        let ids = Tensor::from_vec(ids, (b, s), dev)?;
        let encoded = self.encode(&ids, &lens)?;
        let enc_mask = build_mask(b, 1, s, dev, |bi, _, k| k < lens[bi])?.reshape((b, 1, 1, s))?;
        let cross = self
            .decoder
            .iter()
            .map(|l| self.keys_values(&l.cross_attn, &encoded, b, s))
            .collect::<Result<Vec<_>>>()?;
        let mut state = T5State {
            model: self,
            enc_mask,
            cross,
            past: Vec::new(),
            fed: 0,
            rows: b,
            logits: Tensor::zeros((b, 1), candle_core::DType::F32, dev)?,
        };
        state.step(&vec![self.config.decoder_start_token_id; b])?;
        Ok(Box::new(state))
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}

struct T5State<'a> {
    model: &'a T5Model,
    enc_mask: Tensor,
    /// Per decoder layer: cross-attention keys and values of the encoded prompts
    /// (`[rows, heads, s, d_kv]`).
    cross: Vec<(Tensor, Tensor)>,
    /// Per decoder layer: self-attention keys and values of the tokens fed so far
    /// (`[rows, heads, fed, d_kv]`; empty before the first step).
    past: Vec<(Tensor, Tensor)>,
    fed: usize,
    rows: usize,
    logits: Tensor,
}

impl T5State<'_> {
    /// Feeds one token per row at position `fed`; keeps the next-token logits.
    fn step(&mut self, tokens: &[u32]) -> Result<()> {
        let m = self.model;
        let c = &m.config;
        let dev = &m.device;
        let b = self.rows;
        let toks = Tensor::from_vec(tokens.to_vec(), (b, 1), dev)?;
        // The new query (position `fed`) against keys 0..=fed: every one visible.
        let buckets: Vec<u32> = (0..=self.fed)
            .map(|k| {
                relative_position_bucket(
                    k as i64 - self.fed as i64,
                    false,
                    c.num_buckets,
                    c.max_distance,
                )
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, (1, 1, self.fed + 1), dev)?;
        let mut x = m.embed(&toks)?;
        let mut bias: Option<Tensor> = None;
        let mut past = Vec::with_capacity(m.decoder.len());
        for (i, layer) in m.decoder.iter().enumerate() {
            if let Some(table) = &layer.self_attn.relative_bias {
                bias = Some(m.position_bias(table, &buckets)?);
            }
            let bias = bias.as_ref().expect("the first layer has a position bias");
            let xn = m.rms(&x, &layer.self_norm)?;
            let (k, v) = m.keys_values(&layer.self_attn, &xn, b, 1)?;
            let (k, v) = match self.past.get(i) {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            x = (&x + m.attend_kv(&layer.self_attn, &xn, &k, &v, b, 1, bias)?)?;
            past.push((k, v));
            let xn = m.rms(&x, &layer.cross_norm)?;
            let (ck, cv) = &self.cross[i];
            x = (&x + m.attend_kv(&layer.cross_attn, &xn, ck, cv, b, 1, &self.enc_mask)?)?;
            let xn = m.rms(&x, &layer.ff_norm)?;
            x = (&x + m.feed_forward(&layer.ff, &xn)?)?;
        }
        let x = m.rms(&x, &m.decoder_norm)?;
        let x = if c.scale_decoder_output {
            (x * (c.d_model as f64).powf(-0.5))?
        } else {
            x
        };
        self.past = past;
        self.fed += 1;
        self.logits = m.lm_head.forward(&x)?;
        Ok(())
    }
}

impl DecodeState for T5State<'_> {
    fn next_logprobs(&self) -> Result<Vec<Vec<f32>>> {
        candle_nn::ops::log_softmax(&self.logits, D::Minus1)?.to_vec2::<f32>()
    }

    fn keep(&mut self, rows: &[usize]) -> Result<()> {
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &self.model.device)?;
        let pick = |t: &Tensor| t.index_select(&idx, 0);
        self.enc_mask = pick(&self.enc_mask)?;
        for (k, v) in self.cross.iter_mut().chain(self.past.iter_mut()) {
            *k = pick(k)?;
            *v = pick(v)?;
        }
        self.logits = pick(&self.logits)?;
        self.rows = rows.len();
        Ok(())
    }

    fn advance(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.len() != self.rows {
            candle_core::bail!("{} tokens for {} rows", tokens.len(), self.rows)
        }
        self.step(tokens)
    }
}
