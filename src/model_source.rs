//! Which model a run uses (`--model`, the config's model, or the default card) and on which
//! device.

use crate::config::TaskConfig;
use anyhow::{bail, Result};
use autolabel_models::cards::ModelCard;
use autolabel_models::fetch;
use candle_core::Device;
use std::path::{Path, PathBuf};

/// Resolves a model spec: a local .gguf file or directory, a model card name, or
/// `org/repo:file.gguf` on the Hugging Face Hub (through the HF cache).
pub fn resolve_model_spec(spec: &str) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if let Some(card) = ModelCard::find(spec) {
        return fetch::resolve_card(&card, &fetch::cache_root());
    }
    if let Some((repo, file)) = spec.split_once(':') {
        if repo.contains('/') && file.ends_with(".gguf") {
            return fetch::hf_file(repo, file, None);
        }
    }
    let names: Vec<String> = ModelCard::builtin().into_iter().map(|c| c.name).collect();
    bail!(
        "--model '{spec}' is not a local file or directory, not a model card ({}), and not a Hugging Face GGUF file written as org/repo:file.gguf",
        names.join(", ")
    )
}

/// The model a run uses, and a notice to print when the choice is not the one the config names.
pub fn choose_model(
    cli_model: Option<&str>,
    config: &TaskConfig,
) -> Result<(PathBuf, Option<String>)> {
    if let Some(spec) = cli_model {
        return Ok((resolve_model_spec(spec)?, None));
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
        Some(n) => Ok((resolve_model_spec(n)?, None)),
        None => Ok((fetch::resolve_card(&default, &fetch::cache_root())?, None)),
    }
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
