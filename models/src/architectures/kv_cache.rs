//! A decoder's KV cache (keys and values of every layer for a batch of rows) and what a forward
//! pass keeps of the keys it computes.

use candle_core::{Result, Tensor};

/// Keys and values of every layer for a batch: `[batch, kv_heads, len, head_dim]` each.
#[derive(Clone)]
pub struct KvCache {
    pub layers: Vec<(Tensor, Tensor)>,
}

/// The keys and values of the fed tokens [`super::decoder::Decoder::run_layers`] keeps.
#[derive(Clone, Copy)]
pub(crate) enum Keep<'a> {
    /// None (tokens nothing is fed after).
    Nothing,
    /// The fed tokens' only, returned.
    Own,
    /// The earlier caches' followed by the fed tokens', returned.
    Joined,
    /// Written into this cache from this position on (along the tokens), nothing returned.
    Into(&'a KvCache, usize),
}

impl KvCache {
    /// The first `len` tokens of every layer (views, no copy).
    pub fn narrow(&self, len: usize) -> Result<KvCache> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.narrow(2, 0, len)?, v.narrow(2, 0, len)?)))
            .collect::<Result<_>>()?;
        Ok(KvCache { layers })
    }

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
