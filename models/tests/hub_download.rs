//! The real download code (hf-hub) against a local stand-in for the Hub's file endpoint, then
//! offline resolution from the cache it filled, and each Hub error as the user sees it.
//! One test function, because it sets process environment variables.

use autolabel_models::sources::hub::resolve_repo;
use autolabel_models::testing::mock_hub::{MockHub, MockRepo};
use autolabel_models::{LoadOptions, LocalModel};
use candle_core::Device;
use std::collections::HashMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";

fn err(r: anyhow::Result<PathBuf>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

#[test]
fn download_then_offline_and_every_hub_error() {
    let mut t5 = MockRepo::from_dir(&fixture("tiny-flan-t5"), C1).unwrap();
    t5.refs.insert("v1".into(), C1.into());
    let qwen = MockRepo::from_dir(&fixture("tiny-qwen2"), C2).unwrap();
    let mut gated = MockRepo::from_dir(&fixture("tiny-t5"), C1).unwrap();
    gated.token = Some("secret".into());
    let mut no_tok = MockRepo::from_dir(&fixture("tiny-t5"), C1).unwrap();
    no_tok.files.remove("tokenizer.json");
    let mut gguf_only = MockRepo::default();
    gguf_only.refs.insert("main".into(), C1.into());
    gguf_only.files.insert("m.gguf".into(), b"GGUF".to_vec());
    let hub = MockHub::start(HashMap::from([
        ("acme/tiny-flan-t5".to_string(), t5),
        ("acme/tiny-qwen2".to_string(), qwen),
        ("acme/gated".to_string(), gated),
        ("acme/no-tokenizer".to_string(), no_tok),
        ("acme/gguf-only".to_string(), gguf_only),
    ]))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_ENDPOINT", &hub.endpoint);
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("HF_TOKEN");
    let load = |p: &PathBuf| {
        LocalModel::load(p, &Device::Cpu, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e:#}"))
    };

    // Downloads into the standard cache layout, then loads.
    let snap = resolve_repo("acme/tiny-flan-t5", None).unwrap();
    let repo_dir = cache.join("models--acme--tiny-flan-t5");
    assert_eq!(snap, repo_dir.join("snapshots").join(C1));
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        C1
    );
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "tokenizer_config.json",
    ] {
        assert!(snap.join(f).exists(), "{f}");
    }
    assert_eq!(load(&snap).architecture, "t5");
    // A tag resolves to the same snapshot.
    assert_eq!(resolve_repo("acme/tiny-flan-t5", Some("v1")).unwrap(), snap);

    // Sharded weights: every shard the index names is fetched.
    let snap2 = resolve_repo("acme/tiny-qwen2", None).unwrap();
    assert_eq!(
        std::fs::read_dir(&snap2)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".safetensors"))
            .count(),
        5
    );
    assert_eq!(load(&snap2).architecture, "qwen2");

    // Offline: the cache answers, by branch, tag or commit, with no request at all.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    hub.requests.lock().unwrap().clear();
    assert_eq!(resolve_repo("acme/tiny-flan-t5", None).unwrap(), snap);
    assert_eq!(resolve_repo("acme/tiny-flan-t5", Some("v1")).unwrap(), snap);
    assert_eq!(resolve_repo("acme/tiny-flan-t5", Some(C1)).unwrap(), snap);
    let e = err(resolve_repo("acme/elsewhere", None));
    assert!(
        e.contains("HF_HUB_OFFLINE") && e.contains("acme/elsewhere/config.json"),
        "{e}"
    );
    let e = err(resolve_repo("acme/tiny-flan-t5", Some("v9")));
    assert!(e.contains("revision v9"), "{e}");
    assert!(
        hub.requests.lock().unwrap().is_empty(),
        "offline mode made requests"
    );
    std::env::remove_var("HF_HUB_OFFLINE");

    // Errors, each saying what to do.
    let e = err(resolve_repo("acme/missing", None));
    assert!(
        e.contains("repository acme/missing does not exist") && e.contains("HF_TOKEN"),
        "{e}"
    );
    let e = err(resolve_repo("acme/tiny-qwen2", Some("nope")));
    assert!(
        e.contains("revision 'nope' does not exist") && e.contains("--revision"),
        "{e}"
    );
    let e = err(resolve_repo("acme/gated", None));
    assert!(e.contains("gated") && e.contains("HF_TOKEN"), "{e}");
    let e = err(resolve_repo("acme/no-tokenizer", None));
    assert!(e.contains("no tokenizer.json or spiece.model"), "{e}");
    let e = err(resolve_repo("acme/gguf-only", None));
    assert!(
        e.contains("not a Transformers model repo") && e.contains("acme/gguf-only:FILE.gguf"),
        "{e}"
    );
    // With the token, the gated repo downloads.
    std::env::set_var("HF_TOKEN", "secret");
    let snap3 = resolve_repo("acme/gated", None).unwrap();
    assert_eq!(load(&snap3).architecture, "t5");
}
