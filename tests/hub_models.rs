//! `--model org/name` end to end: the command line downloads a Hugging Face model through hf-hub
//! (from a local stand-in for the Hub; the real one is unreachable from CI) into the standard
//! cache, labels real SMS data with it, then labels again offline from the cache alone.
//! The models are tiny random-weight FLAN-T5-style and Qwen2 checkpoints whose log-probs are
//! checked against transformers in models/tests/hf_reference.rs.

use autolabel_models::testing::mock_hub::{MockHub, MockRepo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models/tests/fixtures/hf")
        .join(name)
}

fn cli(args: &[&str], env: &[(&str, &Path)], offline: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_autolabel-local"));
    c.args(args)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        c.env(k, v);
    }
    if offline {
        c.env("HF_HUB_OFFLINE", "1");
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn hub_models_download_label_and_work_offline() {
    let hub = MockHub::start(HashMap::from([
        (
            "acme/tiny-flan-t5".to_string(),
            MockRepo::from_dir(&fixture("tiny-flan-t5"), COMMIT).unwrap(),
        ),
        (
            "acme/tiny-qwen2".to_string(),
            MockRepo::from_dir(&fixture("tiny-qwen2"), COMMIT).unwrap(),
        ),
    ]))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hf");
    let endpoint = PathBuf::from(&hub.endpoint);
    let env = [
        ("HF_HOME", cache.as_path()),
        ("HF_ENDPOINT", endpoint.as_path()),
    ];

    // 40 real SMS messages (the first lines of the shared dataset).
    let sms =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sms_spam/SMSSpamCollection.tsv");
    let text = std::fs::read_to_string(&sms).expect("../shared/data/sms_spam is needed");
    let data = dir.path().join("sms.tsv");
    let rows: Vec<&str> = text.lines().take(41).collect();
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sms_spam/config.json");
    let out = dir.path().join("out.tsv");
    let run = |model: &str, offline: bool, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--model",
            model,
            "--fresh",
        ];
        args.extend_from_slice(extra);
        cli(&args, &env, offline)
    };

    let o = run("acme/tiny-flan-t5", false, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 41);
    for l in &lines[1..] {
        let cols: Vec<&str> = l.split('\t').collect();
        assert!(["ham", "spam"].contains(&cols[2]), "{l}");
        let conf: f64 = cols[3].parse().unwrap();
        assert!((0.5..=1.0).contains(&conf), "{l}");
    }
    // The files landed in the standard layout under HF_HOME/hub.
    let snap = cache
        .join("hub/models--acme--tiny-flan-t5/snapshots")
        .join(COMMIT);
    assert!(snap.join("model.safetensors").exists());

    // Offline, with the Hub gone: the same labels from the cache, and no request.
    hub.requests.lock().unwrap().clear();
    let o = run("acme/tiny-flan-t5", true, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    assert!(hub.requests.lock().unwrap().is_empty());
    // Autolabel's own way to name a Hub model in the config, with no --model.
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["model"] =
        serde_json::json!({"provider": "huggingface_pipeline", "name": "acme/tiny-flan-t5"});
    let hf_config = dir.path().join("hf_config.json");
    std::fs::write(&hf_config, cfg.to_string()).unwrap();
    let o = cli(
        &[
            "run",
            "--config",
            hf_config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--fresh",
        ],
        &env,
        true,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
    // Offline and not cached: a clear error naming repo and file.
    let o = run("acme/tiny-qwen2", true, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("HF_HUB_OFFLINE") && stderr(&o).contains("acme/tiny-qwen2/config.json"),
        "{}",
        stderr(&o)
    );
    // A revision that does not exist.
    let o = run("acme/tiny-flan-t5", false, &["--revision", "v7"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("revision 'v7' does not exist"),
        "{}",
        stderr(&o)
    );
    // A repo that does not exist.
    let o = run("acme/nothing-here", false, &[]);
    assert!(
        stderr(&o).contains("repository acme/nothing-here does not exist"),
        "{}",
        stderr(&o)
    );

    // A decoder with a chat template, sharded, by commit: plan shows the templated prompt.
    let o = cli(
        &[
            "plan",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--model",
            "acme/tiny-qwen2",
            "--revision",
            COMMIT,
        ],
        &env,
        false,
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout.contains("(qwen2)") && stdout.contains("<|im_start|>user"),
        "{stdout}"
    );

    // `models` lists what the cache holds.
    let o = cli(&["models"], &env, true);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("acme/tiny-flan-t5") && stdout.contains("safetensors model"),
        "{stdout}"
    );
    assert!(stdout.contains("main -> 89abcdef0123"), "{stdout}");
}
