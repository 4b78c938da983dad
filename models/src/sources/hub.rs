//! Hugging Face Hub repositories as local model directories: files come from the standard Hugging
//! Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`) when present
//! and are downloaded into it through hf-hub otherwise (with `HF_TOKEN` for gated repos).
//! With `HF_HUB_OFFLINE=1` nothing touches the network: a file missing from the cache is an
//! error that names the repo, revision and file.

use crate::sources::fetch::{hf_hub_cache, hf_offline};
use crate::weights::safetensors_weights::{shards_in_index, INDEX_FILE, SINGLE_FILE};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Why a file could not be had.
#[derive(Debug)]
pub enum HubError {
    /// The repo and revision exist but this file is not in them (optional files are skipped).
    NoSuchFile(String),
    Other(anyhow::Error),
}

impl From<HubError> for anyhow::Error {
    fn from(e: HubError) -> Self {
        match e {
            HubError::NoSuchFile(msg) => anyhow::anyhow!(msg),
            HubError::Other(e) => e,
        }
    }
}

/// The cache folder of a model repo (`models--org--name`).
pub fn repo_cache_dir(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

fn is_commit_hash(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A file of `repo` at `revision` (branch, tag or commit) if the cache holds it.
pub fn cached_file(cache: &Path, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let dir = repo_cache_dir(cache, repo);
    let commit = match fs::read_to_string(dir.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if is_commit_hash(revision) => revision.to_string(),
        Err(_) => return None,
    };
    let path = dir.join("snapshots").join(commit).join(file);
    path.exists().then_some(path)
}

/// One file of a repo: from the cache, else (unless offline) downloaded into it.
pub fn hub_file(repo: &str, revision: &str, file: &str) -> Result<PathBuf, HubError> {
    let cache = hf_hub_cache();
    if let Some(p) = cached_file(&cache, repo, revision, file) {
        return Ok(p);
    }
    if hf_offline() {
        return Err(HubError::NoSuchFile(format!(
            "HF_HUB_OFFLINE is set and {repo}/{file} (revision {revision}) is not in the Hugging Face cache at {}; run once without HF_HUB_OFFLINE to download it",
            cache.display()
        )));
    }
    let mut builder =
        hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache)).with_progress(true);
    if let Ok(token) = std::env::var("HF_TOKEN") {
        builder = builder.with_token(Some(token));
    }
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder.build().map_err(|e| {
        HubError::Other(anyhow::anyhow!(
            "cannot set up the Hugging Face client: {e}"
        ))
    })?;
    let hub_repo = hf_hub::Repo::with_revision(
        repo.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    );
    api.repo(hub_repo)
        .get(file)
        .map_err(|e| classify(repo, revision, file, e))
}

/// Turns the Hub's answer into a message that says what to do.
fn classify(repo: &str, revision: &str, file: &str, e: hf_hub::api::sync::ApiError) -> HubError {
    use hf_hub::api::sync::ApiError;
    let what = format!("{repo}/{file} (revision {revision})");
    if let ApiError::RequestError(boxed) = &e {
        if let ureq::Error::Status(code, response) = boxed.as_ref() {
            let kind = response.header("x-error-code").unwrap_or("").to_string();
            return match (*code, kind.as_str()) {
                (404, "EntryNotFound") => {
                    HubError::NoSuchFile(format!("{what}: the repo has no such file"))
                }
                (_, "RevisionNotFound") => HubError::Other(anyhow::anyhow!(
                    "{what}: revision '{revision}' does not exist in {repo}; pass an existing branch, tag or commit with --revision"
                )),
                (_, "GatedRepo") | (403, _) => HubError::Other(anyhow::anyhow!(
                    "{what}: {repo} is gated; accept its license on huggingface.co and set HF_TOKEN to a token with access"
                )),
                (401, _) | (_, "RepoNotFound") => HubError::Other(anyhow::anyhow!(
                    "{what}: repository {repo} does not exist, or it is private or gated and HF_TOKEN is {}; check the name (org/name) or set HF_TOKEN",
                    if std::env::var("HF_TOKEN").is_ok() { "not allowed to read it" } else { "not set" }
                )),
                (404, _) => HubError::NoSuchFile(format!("{what}: not found (HTTP 404)")),
                (code, _) => HubError::Other(anyhow::anyhow!(
                    "{what}: the Hub answered HTTP {code}; try again later"
                )),
            };
        }
    }
    HubError::Other(anyhow::anyhow!(
        "cannot download {what}: {e}. Check the network (or set HF_HUB_OFFLINE=1 to use only the cache)"
    ))
}

fn optional(r: Result<PathBuf, HubError>) -> Result<Option<PathBuf>> {
    match r {
        Ok(p) => Ok(Some(p)),
        Err(HubError::NoSuchFile(_)) => Ok(None),
        Err(HubError::Other(e)) => Err(e),
    }
}

/// Files a safetensors model directory needs besides its weights (optional ones may be absent).
const OPTIONAL_FILES: &[&str] = &[
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Resolves `repo` at `revision` (default `main`) to a local snapshot directory holding
/// config.json, the tokenizer and every safetensors shard, downloading what is missing.
pub fn resolve_repo(repo: &str, revision: Option<&str>) -> Result<PathBuf> {
    let rev = revision.unwrap_or("main");
    let config = hub_file(repo, rev, "config.json").map_err(|e| match e {
        HubError::NoSuchFile(m) => anyhow::anyhow!(
            "{m}. {repo} is not a Transformers model repo (no config.json); for a GGUF repo name the file: {repo}:FILE.gguf"
        ),
        HubError::Other(e) => e,
    })?;
    let dir = config
        .parent()
        .context("a cached file lies in a snapshot directory")?
        .to_path_buf();
    match optional(hub_file(repo, rev, INDEX_FILE))? {
        Some(index) => {
            for shard in shards_in_index(&index)? {
                hub_file(repo, rev, &shard)?;
            }
        }
        None => {
            optional(hub_file(repo, rev, SINGLE_FILE))?.with_context(|| {
                format!(
                    "{repo} (revision {rev}) has neither {SINGLE_FILE} nor {INDEX_FILE}{}",
                    if hf_offline() {
                        " in the Hugging Face cache (HF_HUB_OFFLINE is set)"
                    } else {
                        "; only safetensors checkpoints are supported (not pytorch_model.bin)"
                    }
                )
            })?;
        }
    }
    if optional(hub_file(repo, rev, "tokenizer.json"))?.is_none()
        && optional(hub_file(repo, rev, "spiece.model"))?.is_none()
    {
        bail!(
            "{repo} (revision {rev}) has no tokenizer.json or spiece.model{}",
            if hf_offline() {
                " in the Hugging Face cache (HF_HUB_OFFLINE is set)"
            } else {
                ""
            }
        )
    }
    for f in OPTIONAL_FILES {
        optional(hub_file(repo, rev, f))?;
    }
    Ok(dir)
}

/// A model repo found in the local Hugging Face cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRepo {
    pub repo: String,
    /// Branch or tag name -> snapshot, as `refs/` records them.
    pub refs: Vec<(String, String)>,
    /// Snapshot directories and what each holds (safetensors model, GGUF files).
    pub snapshots: Vec<(PathBuf, String)>,
    pub bytes: u64,
}

/// Model repos in the Hugging Face cache, sorted by name.
pub fn list_cache(cache: &Path) -> Vec<CachedRepo> {
    let Ok(entries) = fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("models--") else {
            continue;
        };
        let repo = rest.replacen("--", "/", 1);
        let dir = entry.path();
        let mut refs = Vec::new();
        if let Ok(rs) = fs::read_dir(dir.join("refs")) {
            for r in rs.flatten() {
                if let Ok(c) = fs::read_to_string(r.path()) {
                    refs.push((
                        r.file_name().to_string_lossy().to_string(),
                        c.trim().to_string(),
                    ));
                }
            }
        }
        refs.sort();
        let mut snapshots = Vec::new();
        if let Ok(ss) = fs::read_dir(dir.join("snapshots")) {
            for s in ss.flatten() {
                let files: Vec<String> = fs::read_dir(s.path())
                    .map(|fs| {
                        fs.flatten()
                            .map(|f| f.file_name().to_string_lossy().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let ggufs = files.iter().filter(|f| f.ends_with(".gguf")).count();
                let has_weights = files.iter().any(|f| f == SINGLE_FILE || f == INDEX_FILE);
                let what = match (files.iter().any(|f| f == "config.json"), has_weights, ggufs) {
                    (true, true, _) => "safetensors model".to_string(),
                    (_, _, n) if n > 0 => format!("{n} GGUF file(s)"),
                    _ => "incomplete".to_string(),
                };
                snapshots.push((s.path(), what));
            }
        }
        snapshots.sort();
        out.push(CachedRepo {
            repo,
            refs,
            snapshots,
            bytes: dir_size(&dir.join("blobs")),
        });
    }
    out.sort_by(|a, b| a.repo.cmp(&b.repo));
    out
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|es| {
            es.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
