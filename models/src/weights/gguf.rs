//! Reading GGUF files: metadata with errors that name the file and key, and decoder weights.

use super::block_cache::BlockCache;
use crate::architectures::decoder::{
    Decoder, DecoderConfig, DecoderWeights, Embedding, Layer, Linear, MatWeight, RopeScaling,
    RopeStyle,
};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::Device;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How matmul weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the file (smallest; quantized kernels).
    Quantized,
    /// Expanded to f32 (about 8x the memory of 4-bit weights; fastest prompt processing on CPU).
    #[default]
    F32,
    /// Expanded to f16.
    F16,
    /// Expanded to bf16.
    BF16,
}

impl WeightFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "q" | "quantized" => Ok(WeightFormat::Quantized),
            "f32" => Ok(WeightFormat::F32),
            "f16" => Ok(WeightFormat::F16),
            "bf16" => Ok(WeightFormat::BF16),
            other => bail!(
                "--dtype '{other}' is unknown; use q (quantized: a GGUF file's blocks, or Q8_0 for safetensors), f32, f16 or bf16"
            ),
        }
    }

    /// Whether a block tensor of `dtype` is held by our integer kernel in this format on `device`.
    fn takes_blocks(self, dtype: GgmlDType, device: &Device) -> bool {
        self == WeightFormat::Quantized
            && device.is_cpu()
            && autolabel_kernels::BlockMatrix::supports(dtype)
            && autolabel_kernels::BlockMatrix::simd_available()
    }

    /// A block tensor as a matmul weight held in this format on `device` (on an x86-64 CPU with
    /// `q`: our integer kernels; elsewhere candle's quantized matmul).
    pub(crate) fn matmul(self, q: Arc<QTensor>, device: &Device) -> Result<MatWeight> {
        Ok(match self {
            _ if self.takes_blocks(q.dtype(), device) => {
                MatWeight::Blocks(Arc::new(autolabel_kernels::BlockMatrix::from_qtensor(&q)?))
            }
            WeightFormat::Quantized => MatWeight::Q(QMatMul::from_arc(q)?),
            WeightFormat::F32 => MatWeight::Q(QMatMul::Tensor(q.dequantize(device)?)),
            WeightFormat::F16 => MatWeight::Q(QMatMul::TensorF16(q.dequantize_f16(device)?)),
            WeightFormat::BF16 => {
                MatWeight::Dense(q.dequantize(device)?.to_dtype(candle_core::DType::BF16)?)
            }
        })
    }
}

/// Architectures whose GGUF weights this crate can run.
pub const SUPPORTED_GGUF_ARCHITECTURES: &[&str] = &["llama", "qwen2"];

pub struct Metadata {
    pub source: String,
    pub values: HashMap<String, gguf_file::Value>,
}

impl Metadata {
    fn get(&self, key: &str) -> Result<&gguf_file::Value> {
        self.values
            .get(key)
            .with_context(|| format!("{}: GGUF metadata key '{key}' is missing", self.source))
    }
    pub fn string(&self, key: &str) -> Result<String> {
        Ok(self
            .get(key)?
            .to_string()
            .map_err(|e| self.bad(key, e))?
            .clone())
    }
    pub fn u32(&self, key: &str) -> Result<u32> {
        let v = self.get(key)?;
        v.to_u32()
            .or_else(|_| v.to_u64().map(|x| x as u32))
            .or_else(|_| v.to_i32().map(|x| x as u32))
            .map_err(|e| self.bad(key, e))
    }
    pub fn f32(&self, key: &str) -> Result<f32> {
        let v = self.get(key)?;
        v.to_f32()
            .or_else(|_| v.to_f64().map(|x| x as f32))
            .map_err(|e| self.bad(key, e))
    }
    pub fn bool(&self, key: &str) -> Result<bool> {
        self.get(key)?.to_bool().map_err(|e| self.bad(key, e))
    }
    /// Element `index` of a string array.
    pub fn string_at(&self, key: &str, index: usize) -> Result<String> {
        let arr = self.get(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        let v = arr.get(index).with_context(|| {
            format!(
                "{}: GGUF metadata key '{key}' has {} entries, not {}",
                self.source,
                arr.len(),
                index + 1
            )
        })?;
        Ok(v.to_string().map_err(|e| self.bad(key, e))?.clone())
    }
    /// Removes the tokenizer's arrays (tokens, merges, types: megabytes for a large
    /// vocabulary) once the tokenizer is built.
    pub fn drop_tokenizer_arrays(&mut self) {
        self.values.retain(|k, _| {
            !matches!(
                k.as_str(),
                "tokenizer.ggml.tokens"
                    | "tokenizer.ggml.merges"
                    | "tokenizer.ggml.token_type"
                    | "tokenizer.ggml.scores"
            )
        });
        self.values.shrink_to_fit();
    }
    pub fn string_array(&self, key: &str) -> Result<Vec<String>> {
        let arr = self.get(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        arr.iter()
            .map(|v| v.to_string().cloned().map_err(|e| self.bad(key, e)))
            .collect()
    }
    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>> {
        let arr = self.get(key)?.to_vec().map_err(|e| self.bad(key, e))?;
        arr.iter()
            .map(|v| {
                v.to_i32()
                    .or_else(|_| v.to_u32().map(|x| x as i32))
                    .map_err(|e| self.bad(key, e))
            })
            .collect()
    }
    fn bad(&self, key: &str, e: candle_core::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: GGUF metadata key '{key}' has an unexpected type: {e}",
            self.source
        )
    }
}

/// An opened GGUF file: parsed header and a reader for tensor data.
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: Metadata,
    content: gguf_file::Content,
    reader: BufReader<File>,
    file_len: u64,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("cannot open model file {}", path.display()))?;
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let mut content = gguf_file::Content::read(&mut reader).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a readable GGUF file ({e}); the file may be truncated or corrupted: delete it and fetch it again",
                path.display()
            )
        })?;
        let metadata = Metadata {
            source: path.display().to_string(),
            // Taken, not copied: a vocabulary's token and merge arrays are megabytes.
            values: std::mem::take(&mut content.metadata),
        };
        let gguf = GgufFile {
            path: path.to_path_buf(),
            metadata,
            content,
            reader,
            file_len,
        };
        gguf.check_tensor_extents()?;
        Ok(gguf)
    }

    /// A truncated download still parses its header; catch it before reading tensors.
    fn check_tensor_extents(&self) -> Result<()> {
        for (name, info) in &self.content.tensor_infos {
            let elems: usize = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let end = self.content.tensor_data_offset + info.offset + bytes as u64;
            if end > self.file_len {
                bail!(
                    "{}: tensor '{name}' ends at byte {end} but the file has {} bytes; the file is truncated: delete it and fetch it again",
                    self.path.display(),
                    self.file_len
                )
            }
        }
        Ok(())
    }

    /// Every tensor's block type and element count.
    pub fn tensor_sizes(
        &self,
    ) -> impl Iterator<Item = (candle_core::quantized::GgmlDType, u64)> + '_ {
        self.content
            .tensor_infos
            .values()
            .map(|info| (info.ggml_dtype, info.shape.elem_count() as u64))
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has_tensor(name) {
            bail!("{}: tensor '{name}' is missing", self.path.display())
        }
        self.reader.rewind()?;
        self.content
            .tensor(&mut self.reader, name, device)
            .with_context(|| format!("{}: cannot read tensor '{name}'", self.path.display()))
    }

    /// Whether tensor `name` is held by our block kernel under `format` on `device`.
    fn takes_blocks(&self, name: &str, format: WeightFormat, device: &Device) -> bool {
        self.content
            .tensor_infos
            .get(name)
            .is_some_and(|i| format.takes_blocks(i.ggml_dtype, device))
    }

    /// Tensor `name` for our block kernel, mapped from `cache` when it holds it.
    fn blocks(
        &mut self,
        name: &str,
        device: &Device,
        cache: &BlockCache,
    ) -> Result<Arc<autolabel_kernels::BlockMatrix>> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            bail!("{}: tensor '{name}' is missing", self.path.display())
        };
        let dtype = info.ggml_dtype;
        let Ok(shape) = info.shape.dims2() else {
            bail!(
                "{}: tensor '{name}' has shape {:?}, expected a matrix",
                self.path.display(),
                info.shape
            )
        };
        let m = cache.load(name, dtype, shape, || {
            let q = self.tensor(name, device)?;
            Ok(autolabel_kernels::BlockMatrix::from_qtensor(&q)?)
        })?;
        Ok(Arc::new(m))
    }

    /// A matmul weight in `format`: block tensors through [`Self::blocks`], others as before.
    fn matmul_weight(
        &mut self,
        name: &str,
        format: WeightFormat,
        device: &Device,
        cache: &BlockCache,
    ) -> Result<MatWeight> {
        if self.takes_blocks(name, format, device) {
            return Ok(MatWeight::Blocks(self.blocks(name, device, cache)?));
        }
        format.matmul(Arc::new(self.tensor(name, device)?), device)
    }

    pub fn architecture(&self) -> Result<String> {
        self.metadata.string("general.architecture")
    }

    pub fn decoder_config(&self) -> Result<DecoderConfig> {
        let arch = self.architecture()?;
        let rope_style = match arch.as_str() {
            "llama" => RopeStyle::Interleaved,
            "qwen2" => RopeStyle::Halves,
            other => bail!(
                "{}: architecture '{other}' is not supported for GGUF; supported: {}",
                self.path.display(),
                SUPPORTED_GGUF_ARCHITECTURES.join(", ")
            ),
        };
        let m = &self.metadata;
        let key = |k: &str| format!("{arch}.{k}");
        let hidden_size = m.u32(&key("embedding_length"))? as usize;
        let n_heads = m.u32(&key("attention.head_count"))? as usize;
        let n_kv_heads = m
            .u32(&key("attention.head_count_kv"))
            .unwrap_or(n_heads as u32) as usize;
        let head_dim = m
            .u32(&key("attention.key_length"))
            .map(|x| x as usize)
            .unwrap_or(hidden_size / n_heads.max(1));
        if n_heads == 0
            || n_kv_heads == 0
            || !n_heads.is_multiple_of(n_kv_heads)
            || !head_dim.is_multiple_of(2)
        {
            bail!(
                "{}: inconsistent attention shape (heads {n_heads}, kv heads {n_kv_heads}, head dim {head_dim})",
                self.path.display()
            )
        }
        let vocab_size = match m.u32(&key("vocab_size")) {
            Ok(v) => v as usize,
            // Else the embedding table's rows (the tokenizer's arrays are dropped once read).
            Err(_) => match self.content.tensor_infos.get("token_embd.weight") {
                Some(info) => info.shape.dims()[0],
                None => bail!(
                    "{}: tensor 'token_embd.weight' is missing",
                    self.path.display()
                ),
            },
        };
        Ok(DecoderConfig {
            n_layers: m.u32(&key("block_count"))? as usize,
            hidden_size,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_theta: m.f32(&key("rope.freq_base")).unwrap_or(10_000.0),
            rms_norm_eps: m.f32(&key("attention.layer_norm_rms_epsilon"))? as f64,
            vocab_size,
            context_length: m.u32(&key("context_length"))? as usize,
            rope_style,
            rope_scaling: RopeScaling::None,
            architecture: arch,
        })
    }

    /// Loads the whole decoder. `max_context` caps the rotary tables (and so the longest prompt);
    /// `format` decides whether matmul weights stay quantized or are expanded for speed.
    pub fn load_decoder(
        &mut self,
        device: &Device,
        max_context: Option<usize>,
        format: WeightFormat,
    ) -> Result<Decoder> {
        let mut config = self.decoder_config()?;
        if let Some(cap) = max_context {
            config.context_length = config.context_length.min(cap);
        }
        let cache = if self.takes_blocks("token_embd.weight", format, device)
            || self.takes_blocks("blk.0.ffn_up.weight", format, device)
        {
            BlockCache::for_model(&self.path)
        } else {
            BlockCache::off()
        };
        let tied = !self.has_tensor("output.weight");
        let (lm_head, embedding) = if tied && self.takes_blocks("token_embd.weight", format, device)
        {
            // A tied output head held by our kernel serves the embedding lookups too (one copy).
            let head = self.blocks("token_embd.weight", device, &cache)?;
            (MatWeight::Blocks(head.clone()), Embedding::Blocks(head))
        } else {
            let embd = Arc::new(self.tensor("token_embd.weight", device)?);
            let head = if tied {
                format.matmul(embd.clone(), device)?
            } else {
                self.matmul_weight("output.weight", format, device, &cache)?
            };
            (head, Embedding::Quantized(embd))
        };
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let p = format!("blk.{i}");
            let mut linear = |name: &str| -> Result<Linear> {
                let weight =
                    self.matmul_weight(&format!("{p}.{name}.weight"), format, device, &cache)?;
                let bias_name = format!("{p}.{name}.bias");
                let bias = if self.has_tensor(&bias_name) {
                    Some(self.tensor(&bias_name, device)?.dequantize(device)?)
                } else {
                    None
                };
                Ok(Linear { weight, bias })
            };
            let q = linear("attn_q")?;
            let k = linear("attn_k")?;
            let v = linear("attn_v")?;
            let o = linear("attn_output")?;
            let gate = linear("ffn_gate")?;
            let up = linear("ffn_up")?;
            let down = linear("ffn_down")?;
            layers.push(Layer::new(
                self.tensor(&format!("{p}.attn_norm.weight"), device)?
                    .dequantize(device)?,
                q,
                k,
                v,
                o,
                self.tensor(&format!("{p}.ffn_norm.weight"), device)?
                    .dequantize(device)?,
                gate,
                up,
                down,
            )?);
        }
        let final_norm = self
            .tensor("output_norm.weight", device)?
            .dequantize(device)?;
        let weights = DecoderWeights {
            embedding,
            layers,
            final_norm,
            lm_head,
        };
        Ok(Decoder::new(config, weights, device)?)
    }
}
