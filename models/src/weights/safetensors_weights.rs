//! Safetensors weights of a model directory: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`, memory-mapped and read by name with errors naming the tensor.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "model.safetensors.index.json";
pub const SINGLE_FILE: &str = "model.safetensors";

/// The shard file names an index lists (sorted, each once).
pub fn shards_in_index(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no 'weight_map' object", index.display()))?;
    let mut files = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().with_context(|| {
            format!(
                "{}: weight_map entry '{tensor}' is not a file name",
                index.display()
            )
        })?;
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!(
                "{}: weight_map names '{file}', which is not a file beside the index",
                index.display()
            )
        }
        files.insert(file.to_string());
    }
    if files.is_empty() {
        bail!("{}: 'weight_map' is empty", index.display())
    }
    Ok(files.into_iter().collect())
}

/// The safetensors files of a model directory, checked to exist.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    let files: Vec<PathBuf> = if index.exists() {
        shards_in_index(&index)?
            .into_iter()
            .map(|f| dir.join(f))
            .collect()
    } else if dir.join(SINGLE_FILE).exists() {
        vec![dir.join(SINGLE_FILE)]
    } else {
        bail!(
            "{} holds neither {SINGLE_FILE} nor {INDEX_FILE}; a safetensors model directory needs its weights",
            dir.display()
        )
    };
    for f in &files {
        if !f.exists() {
            bail!(
                "{} lists the shard {} but it is missing; download the whole model again",
                index.display(),
                f.display()
            )
        }
    }
    Ok(files)
}

/// Named tensors of a model directory, converted to `dtype` when read.
pub struct Weights {
    pub dir: PathBuf,
    vb: VarBuilder<'static>,
}

impl Weights {
    pub fn open(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let files = weight_files(dir)?;
        // SAFETY: the files are memory-mapped read-only; like every safetensors reader, this
        // assumes nobody truncates them while the model is loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
            .map_err(|e| {
                let e = e.to_string();
                anyhow::anyhow!(
                    "cannot read the safetensors weights in {} ({}); a file may be truncated: download it again",
                    dir.display(),
                    e.lines().next().unwrap_or_default()
                )
            })?;
        Ok(Weights {
            dir: dir.to_path_buf(),
            vb,
        })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vb.contains_tensor(name)
    }

    /// The tensor `name` in the builder's dtype, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_dtype(name, shape, self.vb.dtype())
    }

    /// The tensor `name` in `dtype` (norm gains and biases stay f32), checked against `shape`.
    pub fn get_dtype(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if !self.contains(name) {
            bail!(
                "{}: tensor '{name}' is missing from the safetensors weights; the weights do not match config.json",
                self.dir.display()
            )
        }
        self.vb
            .get_with_hints_dtype(shape, name, Default::default(), dtype)
            .map_err(|e| {
                // candle appends a backtrace when RUST_BACKTRACE is set; the first line says it.
                let e = e.to_string();
                anyhow::anyhow!(
                    "{}: tensor '{name}': {}; the weights do not match config.json",
                    self.dir.display(),
                    e.lines().next().unwrap_or_default()
                )
            })
    }
}
