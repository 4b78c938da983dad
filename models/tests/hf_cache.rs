//! Model resolution against a Hugging Face cache layout built here (the Hub itself is not
//! reachable from CI): offline lookups, card sources, sha256 verification and caching.
//! One test function, because it sets process environment variables.

use autolabel_models::sources::cards::ModelCard;
use autolabel_models::sources::fetch::{hf_file, resolve_card, sha256_file};
use std::fs;

#[test]
fn resolution_through_a_local_hub_cache() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let repo_dir = hub.join("models--acme--tiny-gguf");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fs::create_dir_all(repo_dir.join("refs")).unwrap();
    fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let snap = repo_dir.join("snapshots").join(commit);
    fs::create_dir_all(&snap).unwrap();
    fs::write(snap.join("tiny.gguf"), b"pretend weights").unwrap();
    std::env::set_var("HF_HUB_CACHE", &hub);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    // Offline: found in the cache; a missing file is an error naming repo and file, with no
    // network call.
    assert_eq!(
        hf_file("acme/tiny-gguf", "tiny.gguf", None).unwrap(),
        snap.join("tiny.gguf")
    );
    let err = hf_file("acme/tiny-gguf", "other.gguf", None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("HF_HUB_OFFLINE") && err.contains("acme/tiny-gguf/other.gguf"),
        "{err}"
    );
    let err = hf_file("acme/tiny-gguf", "tiny.gguf", Some("v2"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("revision v2"), "{err}");

    // A card whose first source fails (missing file) and whose second delivers the right bytes.
    let sha = sha256_file(&snap.join("tiny.gguf")).unwrap();
    let card_text = format!(
        r#"name = "tiny"
display_name = "Tiny"
architecture = "llama"
file_name = "tiny.gguf"
size = 15
sha256 = "{sha}"
license = "none"
[[sources]]
kind = "hf"
repo = "acme/tiny-gguf"
file = "missing.gguf"
[[sources]]
kind = "hf"
repo = "acme/tiny-gguf"
file = "tiny.gguf"
"#
    );
    let card = ModelCard::parse(&card_text, "tiny.toml").unwrap();
    let cache = dir.path().join("cache");
    let path = resolve_card(&card, &cache).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"pretend weights");
    // Verified once: later resolutions use the cached file even if the hub copy disappears.
    fs::remove_file(snap.join("tiny.gguf")).unwrap();
    assert_eq!(resolve_card(&card, &cache).unwrap(), path);

    // A card whose sha does not match what the sources deliver: a clear error, nothing cached.
    fs::write(snap.join("tiny.gguf"), b"pretend weights").unwrap();
    let wrong = ModelCard::parse(
        &card_text
            .replace("name = \"tiny\"", "name = \"wrong\"")
            .replace(&sha, &"0".repeat(64)),
        "w.toml",
    )
    .unwrap();
    let err = format!("{:#}", resolve_card(&wrong, &cache).unwrap_err());
    assert!(
        err.contains("sha256 mismatch") && err.contains("could not fetch model 'wrong'"),
        "{err}"
    );
    assert!(!cache.join("models/wrong/tiny.gguf").exists());
}
