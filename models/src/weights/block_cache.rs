//! The repacked block weights of a GGUF file (`--dtype q` on x86-64) kept on disk under the
//! cache root, one file per tensor, and mapped: later runs skip reading and repacking those
//! tensors, and processes on one machine (`run --shard` workers) share one copy through the
//! page cache instead of each holding its own. `AUTOLABEL_LOCAL_BLOCK_CACHE=off` keeps the
//! weights in each process's memory instead (nothing written).

use anyhow::Result;
use autolabel_kernels::BlockMatrix;
use candle_core::quantized::GgmlDType;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Where one model file's repacked tensors go (`None`: not kept on disk).
pub struct BlockCache {
    dir: Option<PathBuf>,
}

impl BlockCache {
    /// The cache for the model file at `path`: `<cache root>/blocks/<file stem>-<key>`, the key
    /// from the file's full path, size and modification time (a changed file gets a new
    /// directory).
    pub fn for_model(path: &Path) -> Self {
        Self::under(&crate::sources::fetch::cache_root().join("blocks"), path)
    }

    /// The same under another root (tests).
    pub fn under(root: &Path, path: &Path) -> Self {
        if std::env::var("AUTOLABEL_LOCAL_BLOCK_CACHE").is_ok_and(|v| v == "off") {
            return BlockCache { dir: None };
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return BlockCache { dir: None };
        };
        let full = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let mut h = Sha256::new();
        h.update(full.to_string_lossy().as_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
        let key: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let stem = path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        BlockCache {
            dir: Some(root.join(format!("{stem}-{key}"))),
        }
    }

    /// Off: every tensor built in memory.
    pub fn off() -> Self {
        BlockCache { dir: None }
    }

    /// Tensor `name` (`[n, k]`, `dtype`) mapped from its file, else built by `build`, saved and
    /// mapped; when the file cannot be written (read-only cache, full disk) the built store is
    /// used from memory, as without a cache.
    pub fn load(
        &self,
        name: &str,
        dtype: GgmlDType,
        (n, k): (usize, usize),
        build: impl FnOnce() -> Result<BlockMatrix>,
    ) -> Result<BlockMatrix> {
        let Some(dir) = &self.dir else {
            return build();
        };
        let path = dir.join(format!("{name}.blocks"));
        if let Ok(m) = BlockMatrix::open(&path, dtype, n, k) {
            return Ok(m);
        }
        let built = build()?;
        if built.save(&path).is_ok() {
            if let Ok(m) = BlockMatrix::open(&path, dtype, n, k) {
                return Ok(m);
            }
        }
        Ok(built)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    #[test]
    fn saved_stores_are_mapped_next_time_and_bad_files_rebuilt() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let model = tmp.path().join("m.gguf");
        std::fs::write(&model, b"stand-in")?;
        let cache = BlockCache::under(&tmp.path().join("blocks"), &model);
        let w = Tensor::randn(0f32, 1.0, (20, 64), &Device::Cpu)?;
        let x = Tensor::randn(0f32, 1.0, (3, 64), &Device::Cpu)?;
        let qt = QTensor::quantize(&w, GgmlDType::Q4_1)?;
        let want = BlockMatrix::from_qtensor(&qt)?.matmul_t(&x)?;
        let mut builds = 0;
        let load = |builds: &mut usize| {
            cache.load("blk.0.ffn_up.weight", GgmlDType::Q4_1, (20, 64), || {
                *builds += 1;
                Ok(BlockMatrix::from_qtensor(&qt)?)
            })
        };
        let first = load(&mut builds)?;
        let second = load(&mut builds)?;
        assert_eq!(builds, 1, "the second load maps the first one's file");
        for m in [&first, &second] {
            assert!(m.is_mapped());
            let got = m.matmul_t(&x)?;
            assert_eq!((got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        }
        // A truncated file, or one for another shape, is rebuilt.
        let file = std::fs::read_dir(tmp.path().join("blocks"))?
            .next()
            .unwrap()?
            .path()
            .join("blk.0.ffn_up.weight.blocks");
        let bytes = std::fs::read(&file)?;
        std::fs::write(&file, &bytes[..bytes.len() / 2])?;
        assert!(BlockMatrix::open(&file, GgmlDType::Q4_1, 20, 64).is_err());
        assert!(BlockMatrix::open(&file, GgmlDType::Q4_1, 24, 64).is_err());
        let third = load(&mut builds)?;
        assert_eq!(builds, 2);
        assert_eq!(
            (third.matmul_t(&x)? - &want)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?,
            0.0
        );
        // Off: built every time, nothing written.
        let off = BlockCache::off().load("t", GgmlDType::Q4_1, (20, 64), || {
            Ok(BlockMatrix::from_qtensor(&qt)?)
        })?;
        assert!(!off.is_mapped());
        Ok(())
    }
}
