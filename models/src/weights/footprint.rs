//! How much memory a model's weights take in each form `--dtype` can hold them, read from the
//! file headers without loading a tensor: what the default `--dtype` is chosen from.

use crate::weights::gguf::{GgufFile, WeightFormat};
use crate::weights::hf_config::HfConfig;
use anyhow::{Context, Result};
use candle_core::quantized::GgmlDType;
use std::path::Path;

/// Tokens of KV cache (at f32; `q`'s CPU cache is f16, half of it: the room stays
/// conservative) counted as room for the batch beside the weights.
pub const ROOM_TOKENS: u64 = 4096;
/// Activations, tokenizer and the rest, counted as room beside the KV cache.
pub const ROOM_FIXED: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Footprint {
    /// Weights as the file stores them (GGUF only): what `q` holds, in our kernels' layout.
    pub quantized: Option<u64>,
    /// Parameters (the f32 / f16 forms hold 4 / 2 bytes each).
    pub params: u64,
    /// Parameters stored in block types the integer kernels run (GGUF only).
    pub block_params: u64,
    /// KV cache bytes per token in f32 (2 x layers x kv heads x head dim x 4).
    pub kv_per_token: u64,
}

impl Footprint {
    /// Bytes of the weights held as `format`, if the model can be held that way.
    pub fn weights(&self, format: WeightFormat) -> Option<u64> {
        match format {
            WeightFormat::Quantized => self.quantized,
            WeightFormat::F32 => Some(self.params * 4),
            WeightFormat::F16 | WeightFormat::BF16 => Some(self.params * 2),
        }
    }

    /// Whether most weights are in block types the integer kernels run (a GGUF file of f32 or
    /// f16 tensors is not).
    pub fn mostly_blocks(&self) -> bool {
        2 * self.block_params > self.params
    }

    /// Room for the batch: the KV cache of [`ROOM_TOKENS`] tokens plus [`ROOM_FIXED`].
    pub fn room(&self) -> u64 {
        self.kv_per_token * ROOM_TOKENS + ROOM_FIXED
    }

    /// Of a GGUF file or a safetensors checkpoint directory (as [`crate::LocalModel::load`]).
    pub fn of(path: &Path) -> Result<Self> {
        if path.is_dir() && path.join("config.json").exists() {
            if let Ok(fp) = Self::of_safetensors(path) {
                return Ok(fp);
            }
        }
        Self::of_gguf(&crate::local_model::resolve_weights_file(path)?)
    }

    fn of_gguf(file: &Path) -> Result<Self> {
        let gguf = GgufFile::open(file)?;
        let (mut quantized, mut params, mut block_params) = (0u64, 0u64, 0u64);
        for (dtype, elems) in gguf.tensor_sizes() {
            params += elems;
            if autolabel_kernels::BlockMatrix::supports(dtype) {
                block_params += elems;
            }
            let file_bytes = elems / dtype.block_size() as u64 * dtype.type_size() as u64;
            // Our k-quant store keeps each 32 values' scale and min in f32 (see the kernels).
            let ratio = match dtype {
                GgmlDType::Q4K => 1.34,
                GgmlDType::Q5K => 1.28,
                GgmlDType::Q6K => 1.23,
                _ => 1.0,
            };
            quantized += (file_bytes as f64 * ratio) as u64;
        }
        let c = gguf.decoder_config()?;
        Ok(Footprint {
            quantized: Some(quantized),
            params,
            block_params,
            kv_per_token: (2 * c.n_layers * c.n_kv_heads * c.head_dim * 4) as u64,
        })
    }

    fn of_safetensors(dir: &Path) -> Result<Self> {
        let mut params = 0u64;
        for file in crate::weights::safetensors_weights::weight_files(dir)? {
            params += safetensors_params(&file).with_context(|| {
                format!("{} is not a readable safetensors file", file.display())
            })?;
        }
        let config = HfConfig::read(&dir.join("config.json"))?;
        let layers = config
            .opt_usize("num_hidden_layers")?
            .or(config.opt_usize("num_layers")?);
        let heads = config
            .opt_usize("num_attention_heads")?
            .or(config.opt_usize("num_heads")?);
        let kv_heads = config.opt_usize("num_key_value_heads")?.or(heads);
        let hidden = config
            .opt_usize("hidden_size")?
            .or(config.opt_usize("d_model")?);
        let head_dim = config
            .opt_usize("head_dim")?
            .or(config.opt_usize("d_kv")?)
            .or_else(|| Some(hidden? / heads?));
        let kv_per_token = match (layers, kv_heads, head_dim) {
            (Some(l), Some(h), Some(d)) => (2 * l * h * d * 4) as u64,
            _ => 0,
        };
        Ok(Footprint {
            quantized: None,
            params,
            block_params: 0,
            kv_per_token,
        })
    }
}

/// Parameters in a safetensors file, from its header (8 bytes of length, then JSON).
fn safetensors_params(file: &Path) -> Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(file)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    anyhow::ensure!(len < 100 << 20, "a header of {len} bytes");
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)?;
    Ok(header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t.get("shape")?.as_array().cloned())
        .map(|shape| shape.iter().filter_map(|d| d.as_u64()).product::<u64>())
        .sum())
}
