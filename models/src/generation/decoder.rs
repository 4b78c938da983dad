//! Incremental decoding for the Llama / Mistral / Qwen2 decoder (GGUF and safetensors): one
//! batched prefill that reuses the shared instruction prefix, then one token per row per step
//! against each row's KV cache (the prompt's read where it lies; the generated tokens' keys and
//! values written in place into a buffer that doubles when full).

use super::{DecodeState, IncrementalDecoder};
use crate::architectures::decoder::{build_mask, Decoder, Keep, KvCache};
use candle_core::{Result, Tensor, D};

impl IncrementalDecoder for Decoder {
    fn begin<'a>(&'a self, prompts: &[&[u32]]) -> Result<Box<dyn DecodeState + 'a>> {
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                candle_core::bail!("request {i}: empty prompt")
            }
        }
        let pre = self.prefill(prompts)?;
        let logits = self.logits(&pre.last)?;
        Ok(Box::new(DecoderState {
            model: self,
            shared: pre.shared,
            prompt: pre.cache,
            tail: None,
            keys: pre.keys,
            lens: pre.lens,
            step: 0,
            logits,
        }))
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}

struct DecoderState<'a> {
    model: &'a Decoder,
    shared: Option<KvCache>,
    /// The prompts' cache: read where it lies, never copied.
    prompt: KvCache,
    /// The generated tokens' keys and values: a buffer of some positions, the first `step`
    /// written (each step's written in place by the layers; copied only when it doubles).
    tail: Option<KvCache>,
    /// Keys before the first generated token (prefix + padded prompts).
    keys: usize,
    lens: Vec<usize>,
    /// Tokens fed so far.
    step: usize,
    /// `[b, vocab]` logits of every row's next token.
    logits: Tensor,
}

impl DecoderState<'_> {
    /// A tail buffer of twice the positions (at least [`TAIL_FIRST`]), the written ones copied.
    fn grow_tail(&mut self) -> Result<()> {
        let cap = (2 * self.tail_cap()).max(TAIL_FIRST);
        let cfg = &self.model.config;
        let shape = (self.lens.len(), cfg.n_kv_heads, cap, cfg.head_dim);
        let dev = self.model.device();
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let (k, v) = (
                Tensor::zeros(shape, self.model.kv_dtype, dev)?,
                Tensor::zeros(shape, self.model.kv_dtype, dev)?,
            );
            if let Some(old) = &self.tail {
                let (ok, ov) = &old.layers[l];
                k.slice_set(&ok.narrow(2, 0, self.step)?, 2, 0)?;
                v.slice_set(&ov.narrow(2, 0, self.step)?, 2, 0)?;
            }
            layers.push((k, v));
        }
        self.tail = Some(KvCache { layers });
        Ok(())
    }

    /// Positions the tail buffer holds (0 before the first step).
    fn tail_cap(&self) -> usize {
        self.tail.as_ref().map_or(0, KvCache::len)
    }
}

/// Positions of the first tail buffer (answers of a few dozen tokens never copy it).
const TAIL_FIRST: usize = 32;

impl DecodeState for DecoderState<'_> {
    fn next_logprobs(&self) -> Result<Vec<Vec<f32>>> {
        candle_nn::ops::log_softmax(&self.logits, D::Minus1)?.to_vec2::<f32>()
    }

    fn keep(&mut self, rows: &[usize]) -> Result<()> {
        let dev = self.model.device().clone();
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &dev)?;
        for cache in std::iter::once(&mut self.prompt).chain(self.tail.iter_mut()) {
            for (k, v) in cache.layers.iter_mut() {
                *k = k.index_select(&idx, 0)?;
                *v = v.index_select(&idx, 0)?;
            }
        }
        self.lens = rows.iter().map(|&r| self.lens[r]).collect();
        self.logits = self.logits.index_select(&idx, 0)?;
        Ok(())
    }

    fn advance(&mut self, tokens: &[u32]) -> Result<()> {
        let b = self.lens.len();
        if tokens.len() != b {
            candle_core::bail!("{} tokens for {b} rows", tokens.len())
        }
        let dev = self.model.device().clone();
        let toks = Tensor::from_vec(tokens.to_vec(), (b, 1), &dev)?;
        let pos: Vec<u32> = self.lens.iter().map(|&l| (l + self.step) as u32).collect();
        let pos = Tensor::from_vec(pos, (b, 1), &dev)?;
        let (keys, lens) = (self.keys, &self.lens);
        // A row sees its own prompt (not the padding after it) and everything generated.
        let mask = build_mask(b, 1, keys + self.step + 1, &dev, |bi, _, k| {
            k < lens[bi] || k >= keys
        })?;
        if self.step == self.tail_cap() {
            self.grow_tail()?;
        }
        let tail = self.tail.as_ref().expect("a tail buffer");
        let written = (self.step > 0)
            .then(|| tail.narrow(self.step))
            .transpose()?;
        let earlier: Vec<&KvCache> = std::iter::once(&self.prompt)
            .chain(written.iter())
            .collect();
        let (hidden, _) = self.model.run_layers(
            &toks,
            &pos,
            &mask,
            self.shared.as_ref(),
            &earlier,
            Keep::Into(tail, self.step),
        )?;
        self.step += 1;
        let (_, _, h) = hidden.dims3()?;
        self.logits = self.model.logits(&hidden.reshape((b, h))?)?;
        Ok(())
    }
}
