//! Tiny random-weight models written as real GGUF files, for tests and benches that must not
//! depend on downloads. The weights come from a seeded generator, so a given spec always writes
//! the same file; the tokenizer is a byte-level BPE with a few merges and ChatML control tokens.

pub mod mock_hub;

use anyhow::Result;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::Path;

#[derive(Debug, Clone)]
pub struct TinySpec {
    /// "llama" or "qwen2".
    pub architecture: &'static str,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub ffn: usize,
    pub context: usize,
    /// Storage type of the matmul weights (F32 for exact maths, Q8_0 / Q4_0 to exercise quantized kernels).
    pub dtype: GgmlDType,
    pub seed: u64,
    /// Write a ChatML chat template into the metadata.
    pub chat_template: bool,
}

impl TinySpec {
    pub fn llama() -> Self {
        TinySpec {
            architecture: "llama",
            n_layers: 2,
            hidden: 64,
            n_heads: 4,
            n_kv_heads: 2,
            ffn: 96,
            context: 512,
            dtype: GgmlDType::F32,
            seed: 7,
            chat_template: true,
        }
    }
    pub fn qwen2() -> Self {
        TinySpec {
            architecture: "qwen2",
            seed: 11,
            ..Self::llama()
        }
    }
}

pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Deterministic values in [-scale, scale).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn tensor(&mut self, dims: &[usize], scale: f32) -> Result<Tensor> {
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next() * scale).collect();
        Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
    }
}

/// The 256 byte-level symbols (GPT-2's byte-to-unicode map), in byte order.
fn byte_level_alphabet() -> Vec<String> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut pairs: Vec<(u32, u32)> = bs.into_iter().zip(cs).collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(_, c)| char::from_u32(c).unwrap().to_string())
        .collect()
}

/// Writes a tiny model to `path`.
pub fn write_tiny_gguf(path: &Path, spec: &TinySpec) -> Result<()> {
    let mut rng = Lcg(spec.seed);
    let mut tokens = byte_level_alphabet();
    let merges = ["Ġ t", "Ġ a", "e r", "o n", "Ġt h", "i n", "Ġth e", "a t"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1i32; tokens.len()];
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.to_string());
        types.push(3);
    }
    let vocab = tokens.len();
    let head_dim = spec.hidden / spec.n_heads;
    let kv_dim = head_dim * spec.n_kv_heads;
    let arch = spec.architecture;

    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut add = |name: String, t: Tensor, dtype: GgmlDType| -> Result<()> {
        tensors.push((name, QTensor::quantize(&t, dtype)?));
        Ok(())
    };
    let w = 1.0 / (spec.hidden as f32).sqrt();
    add(
        "token_embd.weight".into(),
        rng.tensor(&[vocab, spec.hidden], 1.0)?,
        GgmlDType::F32,
    )?;
    for i in 0..spec.n_layers {
        let p = format!("blk.{i}");
        let norm =
            |rng: &mut Lcg| -> Result<Tensor> { Ok((rng.tensor(&[spec.hidden], 0.2)? + 1.0)?) };
        add(
            format!("{p}.attn_norm.weight"),
            norm(&mut rng)?,
            GgmlDType::F32,
        )?;
        add(
            format!("{p}.ffn_norm.weight"),
            norm(&mut rng)?,
            GgmlDType::F32,
        )?;
        add(
            format!("{p}.attn_q.weight"),
            rng.tensor(&[spec.hidden, spec.hidden], w)?,
            spec.dtype,
        )?;
        add(
            format!("{p}.attn_k.weight"),
            rng.tensor(&[kv_dim, spec.hidden], w)?,
            spec.dtype,
        )?;
        add(
            format!("{p}.attn_v.weight"),
            rng.tensor(&[kv_dim, spec.hidden], w)?,
            spec.dtype,
        )?;
        add(
            format!("{p}.attn_output.weight"),
            rng.tensor(&[spec.hidden, spec.hidden], w)?,
            spec.dtype,
        )?;
        add(
            format!("{p}.ffn_gate.weight"),
            rng.tensor(&[spec.ffn, spec.hidden], w)?,
            spec.dtype,
        )?;
        add(
            format!("{p}.ffn_up.weight"),
            rng.tensor(&[spec.ffn, spec.hidden], w)?,
            spec.dtype,
        )?;
        add(
            format!("{p}.ffn_down.weight"),
            rng.tensor(&[spec.hidden, spec.ffn], w)?,
            spec.dtype,
        )?;
        if arch == "qwen2" {
            add(
                format!("{p}.attn_q.bias"),
                rng.tensor(&[spec.hidden], 0.1)?,
                GgmlDType::F32,
            )?;
            add(
                format!("{p}.attn_k.bias"),
                rng.tensor(&[kv_dim], 0.1)?,
                GgmlDType::F32,
            )?;
            add(
                format!("{p}.attn_v.bias"),
                rng.tensor(&[kv_dim], 0.1)?,
                GgmlDType::F32,
            )?;
        }
    }
    add(
        "output_norm.weight".into(),
        (rng.tensor(&[spec.hidden], 0.2)? + 1.0)?,
        GgmlDType::F32,
    )?;
    if arch == "qwen2" {
        add(
            "output.weight".into(),
            rng.tensor(&[vocab, spec.hidden], w * 4.0)?,
            GgmlDType::F32,
        )?;
    }

    use gguf_file::Value;
    let s = |x: &str| Value::String(x.to_string());
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), s(arch)),
        (
            format!("{arch}.block_count"),
            Value::U32(spec.n_layers as u32),
        ),
        (
            format!("{arch}.context_length"),
            Value::U32(spec.context as u32),
        ),
        (
            format!("{arch}.embedding_length"),
            Value::U32(spec.hidden as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(spec.ffn as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(spec.n_heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(spec.n_kv_heads as u32),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(10_000.0)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        ("tokenizer.ggml.model".into(), s("gpt2")),
        (
            "tokenizer.ggml.pre".into(),
            s(if arch == "qwen2" { "qwen2" } else { "smollm" }),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.iter().map(|m| s(m)).collect()),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32((vocab - 2) as u32),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32((vocab - 1) as u32),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    if spec.chat_template {
        meta.push(("tokenizer.chat_template".into(), s(CHATML_TEMPLATE)));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    Ok(())
}
