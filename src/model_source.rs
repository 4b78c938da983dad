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

/// The `--dtype` a run uses: the one asked for, else f32 on the CPU and bf16 on a GPU.
pub fn dtype_for(asked: Option<&str>, device: &str) -> String {
    match asked {
        Some(d) => d.to_string(),
        None if device == "cpu" => "f32".into(),
        None => "bf16".into(),
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
                Ok(Device::new_cuda(0)?)
            } else {
                bail!("this build has no CUDA support; rebuild with `cargo build --release --features cuda`")
            }
        }
        "metal" => {
            if cfg!(feature = "metal") {
                Ok(Device::new_metal(0)?)
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
        assert_eq!(dtype_for(None, "cuda"), "bf16");
        assert_eq!(dtype_for(None, "cpu"), "f32");
        assert_eq!(dtype_for(Some("f16"), "cpu"), "f16");
    }
}
