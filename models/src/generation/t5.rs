//! Incremental decoding for T5 / FLAN-T5 / umT5: the prompts are encoded once, then each step
//! runs the decoder over the start token and the tokens generated so far (no self-attention
//! cache yet: a step costs the whole answer so far, which stays short for labeling answers).

use super::{DecodeState, IncrementalDecoder};
use crate::architectures::decoder::{build_mask, gather_rows};
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
        let mut state = T5State {
            model: self,
            encoded,
            enc_mask,
            s,
            sequences: vec![vec![self.config.decoder_start_token_id]; b],
            logits: Tensor::zeros((b, 1), candle_core::DType::F32, dev)?,
        };
        state.run()?;
        Ok(Box::new(state))
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
}

struct T5State<'a> {
    model: &'a T5Model,
    encoded: Tensor,
    enc_mask: Tensor,
    s: usize,
    /// Each row's decoder input: the start token, then what it generated.
    sequences: Vec<Vec<u32>>,
    logits: Tensor,
}

impl T5State<'_> {
    /// The decoder over every row's sequence (all the same length), logits of the last slot.
    fn run(&mut self) -> Result<()> {
        let m = self.model;
        let dev = &m.device;
        let b = self.sequences.len();
        let n = self.sequences[0].len();
        let toks: Vec<u32> = self.sequences.iter().flatten().copied().collect();
        let toks = Tensor::from_vec(toks, (b, n), dev)?;
        let mask = build_mask(b, n, n, dev, |_, q, k| k <= q)?.reshape((b, 1, n, n))?;
        let mut buckets = Vec::with_capacity(b * n * n);
        for _ in 0..b {
            for q in 0..n {
                for k in 0..n {
                    buckets.push(relative_position_bucket(
                        k as i64 - q as i64,
                        false,
                        m.config.num_buckets,
                        m.config.max_distance,
                    ));
                }
            }
        }
        let buckets = Tensor::from_vec(buckets, (b, n, n), dev)?;
        let hidden = m
            .decode(
                &toks,
                &buckets,
                &mask,
                &self.encoded,
                &self.enc_mask,
                self.s,
            )?
            .reshape((b, n, m.config.d_model))?;
        let rows: Vec<(usize, usize)> = (0..b).map(|bi| (bi, n - 1)).collect();
        self.logits = m.lm_head.forward(&gather_rows(&hidden, &rows)?)?;
        Ok(())
    }
}

impl DecodeState for T5State<'_> {
    fn next_logprobs(&self) -> Result<Vec<Vec<f32>>> {
        candle_nn::ops::log_softmax(&self.logits, D::Minus1)?.to_vec2::<f32>()
    }

    fn keep(&mut self, rows: &[usize]) -> Result<()> {
        let b = self.sequences.len();
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let idx = Tensor::from_vec(idx, rows.len(), &self.model.device)?;
        let d = self.encoded.dim(1)?;
        self.encoded = self
            .encoded
            .reshape((b, self.s, d))?
            .index_select(&idx, 0)?
            .reshape((rows.len() * self.s, d))?;
        self.enc_mask = self.enc_mask.index_select(&idx, 0)?;
        self.sequences = rows.iter().map(|&r| self.sequences[r].clone()).collect();
        self.logits = self.logits.index_select(&idx, 0)?;
        Ok(())
    }

    fn advance(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.len() != self.sequences.len() {
            candle_core::bail!("{} tokens for {} rows", tokens.len(), self.sequences.len())
        }
        for (seq, &t) in self.sequences.iter_mut().zip(tokens) {
            seq.push(t);
        }
        self.run()
    }
}
