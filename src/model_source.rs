//! Which model a run uses (`--model`, the config's model, or the default card) and on which
//! device.

use crate::config::TaskConfig;
use anyhow::{bail, Result};
use autolabel_models::sources::cards::ModelCard;
use autolabel_models::sources::{fetch, hub};
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Resolves a model spec: a local .gguf file, a directory (one .gguf, or a Hugging Face model
/// with config.json, tokenizer.json and safetensors), a model card name, a Hugging Face Hub repo
/// `org/name` (safetensors, at `revision`), or a GGUF file in a Hub repo `org/name:file.gguf`.
pub fn resolve_model_spec(spec: &str, revision: Option<&str>) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if let Some(card) = ModelCard::find(spec) {
        return fetch::resolve_card(&card, &fetch::cache_root());
    }
    if let Some((repo, file)) = spec.split_once(':') {
        if is_repo_id(repo) && file.ends_with(".gguf") {
            return fetch::hf_file(repo, file, revision);
        }
    }
    if is_repo_id(spec) {
        return hub::resolve_repo(spec, revision);
    }
    let names: Vec<String> = ModelCard::builtin().into_iter().map(|c| c.name).collect();
    bail!(
        "--model '{spec}' is not a local file or directory, not a model card ({}), not a Hugging Face repo (org/name) and not a GGUF file in one (org/name:file.gguf)",
        names.join(", ")
    )
}

/// `org/name` with the characters the Hub allows.
fn is_repo_id(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

/// The model a run uses, and a notice to print when the choice is not the one the config names.
pub fn choose_model(
    cli_model: Option<&str>,
    revision: Option<&str>,
    config: &TaskConfig,
) -> Result<(PathBuf, Option<String>)> {
    if let Some(spec) = cli_model {
        return Ok((resolve_model_spec(spec, revision)?, None));
    }
    let default = ModelCard::default_card();
    let provider = config.model.provider.as_deref().unwrap_or("");
    let name = config.model.name.as_deref();
    if config.names_api_model() {
        let notice = format!(
            "the config names the API model {provider}/{}; running the local default model {} instead (use --model to pick another)",
            name.unwrap_or("?"),
            default.name
        );
        return Ok((
            fetch::resolve_card(&default, &fetch::cache_root())?,
            Some(notice),
        ));
    }
    match name {
        Some(n) => Ok((resolve_model_spec(n, revision)?, None)),
        None => Ok((fetch::resolve_card(&default, &fetch::cache_root())?, None)),
    }
}

/// The `--dtype` a run uses and, when it was not asked for, why.
#[derive(Debug, Clone, PartialEq)]
pub struct DtypeChoice {
    pub name: String,
    pub why: Option<String>,
}

/// The `--dtype` a run uses: the one asked for; else bf16 on a GPU; else on the CPU the fastest
/// form that fits in the memory available with room for the batch (`footprint`'s room): a GGUF
/// file's own quantization (`q`) where the integer SIMD kernels run (x86-64 with AVX2, a file
/// whose weights are mostly in block types they take; they are faster than f32 there and the
/// smallest form), otherwise f32, then the smaller forms. Without
/// a reading of available memory the fastest form is taken. A model that fits in no form is an
/// error with the numbers.
pub fn choose_dtype(
    asked: Option<&str>,
    device: &str,
    model: &Path,
    available: Option<u64>,
    integer_kernels: bool,
) -> Result<DtypeChoice> {
    if let Some(d) = asked {
        return Ok(DtypeChoice {
            name: d.to_string(),
            why: None,
        });
    }
    if device != "cpu" {
        return Ok(DtypeChoice {
            name: "bf16".into(),
            why: Some("the default on a GPU".into()),
        });
    }
    use autolabel_models::weights::gguf::WeightFormat as W;
    let fp = autolabel_models::weights::footprint::Footprint::of(model)?;
    let order: &[(W, &str)] = match (
        fp.quantized.is_some(),
        integer_kernels && fp.mostly_blocks(),
    ) {
        (true, true) => &[(W::Quantized, "q"), (W::F32, "f32")],
        (true, false) => &[(W::F32, "f32"), (W::Quantized, "q")],
        (false, _) => &[(W::F32, "f32"), (W::BF16, "bf16")],
    };
    let gb = |b: u64| {
        if b >= 1_000_000_000 {
            format!("{:.2} GB", b as f64 / 1e9)
        } else {
            format!("{:.0} MB", (b as f64 / 1e6).ceil())
        }
    };
    let room = fp.room();
    let sizes: Vec<String> = order
        .iter()
        .filter_map(|(w, n)| Some(format!("{} as {n}", gb(fp.weights(*w)?))))
        .collect();
    for (i, (w, name)) in order.iter().enumerate() {
        let Some(bytes) = fp.weights(*w) else {
            continue;
        };
        let fits = available.is_none_or(|a| bytes + room <= a);
        if !fits {
            continue;
        }
        let speed = match (name, i) {
            (&"q", 0) => "the file's quantization through the integer SIMD kernels: the fastest form on this CPU and the smallest".to_string(),
            (_, 0) if fp.quantized.is_some() => "the fastest form on a CPU without the integer kernels (x86-64 with AVX2)".to_string(),
            (_, 0) => "the fastest form on a CPU".to_string(),
            _ => format!("the faster form ({}) does not fit", order[0].1),
        };
        let memory = match available {
            Some(a) => format!(
                "{} of weights + {} of room for the batch, {} available",
                gb(bytes),
                gb(room),
                gb(a)
            ),
            None => format!("{} of weights; available memory unknown", gb(bytes)),
        };
        return Ok(DtypeChoice {
            name: name.to_string(),
            why: Some(format!("{speed} ({memory}; --dtype overrides)")),
        });
    }
    bail!(
        "{} does not fit in memory in any form: its weights take {} plus {} of room for the batch, and {} is available; free memory, use a smaller or more quantized model, or force a form with --dtype",
        model.display(),
        sizes.join(" or "),
        gb(room),
        gb(available.unwrap_or(0))
    )
}

/// Memory this process can still take: the smaller of the system's `MemAvailable` and what is
/// left under its cgroup's limit (containers, Slurm jobs). `None` where neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let cgroup = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => None,
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A short name of the model at `path`: `org/name@commit` for a Hub snapshot, else the file or
/// directory name.
pub fn model_name(path: &Path) -> String {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let parent = path.parent();
    if let (Some(commit), Some(snapshots), Some(repo_dir)) = (
        name(path),
        parent.and_then(name),
        parent.and_then(Path::parent).and_then(name),
    ) {
        if snapshots == "snapshots" {
            if let Some(repo) = repo_dir.strip_prefix("models--") {
                return format!(
                    "{}@{}",
                    repo.replacen("--", "/", 1),
                    &commit[..commit.len().min(12)]
                );
            }
        }
    }
    name(path).unwrap_or_default()
}

pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if cfg!(feature = "cuda") {
                Device::new_cuda(0).map_err(|e| {
                    anyhow::anyhow!(
                        "--device cuda: no CUDA device could be opened ({e}); check that `nvidia-smi` lists a GPU and that CUDA_VISIBLE_DEVICES does not hide it, or run with --device cpu"
                    )
                })
            } else {
                bail!("this build has no CUDA support; rebuild with `cargo build --release --features cuda`")
            }
        }
        "metal" => {
            if cfg!(feature = "metal") {
                Device::new_metal(0).map_err(|e| {
                    anyhow::anyhow!(
                        "--device metal: no Metal device could be opened ({e}); run with --device cpu"
                    )
                })
            } else {
                bail!("this build has no Metal support; rebuild with `cargo build --release --features metal`")
            }
        }
        other => bail!("--device '{other}' is unknown; use cpu, cuda or metal"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_and_names() {
        assert!(is_repo_id("google/flan-t5-xxl"));
        assert!(is_repo_id("Qwen/Qwen2.5-0.5B-Instruct"));
        assert!(!is_repo_id("flan-t5"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("./x"));
        assert!(!is_repo_id("org/"));
        assert_eq!(
            model_name(Path::new(
                "/c/hub/models--google--flan-t5-xxl/snapshots/0123456789abcdef0123"
            )),
            "google/flan-t5-xxl@0123456789ab"
        );
        assert_eq!(model_name(Path::new("/m/SmolLM2.gguf")), "SmolLM2.gguf");
    }
}

#[cfg(test)]
mod dtype_tests {
    use super::*;
    use autolabel_models::testing::{write_tiny_gguf, TinySpec};
    use autolabel_models::weights::footprint::Footprint;
    use candle_core::quantized::GgmlDType;

    /// The default form follows the kernels and the memory, names its reasons, and a model
    /// that fits in no form is an error with the numbers.
    #[test]
    fn the_default_dtype_is_the_fastest_form_that_fits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tiny.gguf");
        let spec = TinySpec {
            dtype: GgmlDType::Q8_0,
            ..TinySpec::llama()
        };
        write_tiny_gguf(&file, &spec).unwrap();
        let fp = Footprint::of(&file).unwrap();
        let q = fp.quantized.unwrap();
        let f32_bytes = fp.params * 4;
        assert!(q < f32_bytes, "{fp:?}");
        let room = fp.room();
        let choose =
            |avail: Option<u64>, kernels: bool| choose_dtype(None, "cpu", &file, avail, kernels);
        let plenty = Some(f32_bytes + room + 1);
        let only_q = Some(q + room);
        let c = choose(plenty, true).unwrap();
        assert_eq!(c.name, "q");
        assert!(
            c.why.as_ref().unwrap().contains("integer SIMD kernels"),
            "{c:?}"
        );
        // A GGUF of f32 tensors is f32 whatever the CPU.
        let f32_file = dir.path().join("f32.gguf");
        write_tiny_gguf(&f32_file, &TinySpec::llama()).unwrap();
        let c = choose_dtype(None, "cpu", &f32_file, None, true).unwrap();
        assert_eq!(c.name, "f32");
        assert_eq!(choose(plenty, false).unwrap().name, "f32");
        let c = choose(only_q, false).unwrap();
        assert_eq!(c.name, "q");
        assert!(
            c.why.as_ref().unwrap().contains("(f32) does not fit"),
            "{c:?}"
        );
        assert_eq!(choose(None, false).unwrap().name, "f32");
        let err = choose(Some(q), true).unwrap_err().to_string();
        assert!(
            err.contains("does not fit in memory in any form")
                && err.contains("as q")
                && err.contains("as f32"),
            "{err}"
        );
        // Asked for, or on a GPU: no choosing.
        let c = choose_dtype(Some("f16"), "cpu", &file, Some(0), true).unwrap();
        assert_eq!((c.name.as_str(), c.why), ("f16", None));
        assert_eq!(
            choose_dtype(None, "cuda", &file, Some(0), true)
                .unwrap()
                .name,
            "bf16"
        );
    }
}
