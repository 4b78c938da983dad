//! Helpers shared by the test binaries for generated-answer tasks: a tiny random-weight model
//! in a temporary directory, the shared data, and running the CLI.
#![allow(dead_code)]

use autolabel_models::testing::{write_tiny_gguf, TinySpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub model: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with_seed(None)
    }

    /// A fixture that runs a real model (a path to its file) instead of the tiny one.
    pub fn with_model(model: PathBuf) -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            model,
        }
    }

    /// A fixture running the default model (SmolLM2), fetched through its card.
    pub fn smollm2() -> Self {
        let card = autolabel_models::sources::cards::ModelCard::find("smollm2-135m-instruct")
            .expect("built-in card");
        let root = autolabel_models::sources::fetch::cache_root();
        Self::with_model(
            autolabel_models::sources::fetch::resolve_card(&card, &root)
                .expect("model fetched through its card"),
        )
    }

    /// A fixture whose tiny model's weights come from `seed` (None: the default weights).
    pub fn with_seed(seed: Option<u64>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny.gguf");
        // Byte-level prompts with few-shot examples run to a few thousand tokens.
        let mut spec = TinySpec {
            context: 8192,
            ..TinySpec::llama()
        };
        if let Some(seed) = seed {
            spec.seed = seed;
        }
        write_tiny_gguf(&model, &spec).unwrap();
        Fixture { dir, model }
    }
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
    /// Autolabel's conll2003 attribute-extraction config, its seed file pointed at the shared
    /// copy and `few_shot_num` set, written into the fixture as `name`.
    pub fn conll_config(&self, name: &str, few_shot_num: usize) -> PathBuf {
        let config = shared("autolabel_configs/benchmark_configs_HEAD/conll2003.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
        // The config's seed file path is relative to Autolabel's repository; point it at the copy.
        c["prompt"]["few_shot_examples"] = shared("autolabel_conll2003/seed.csv")
            .to_str()
            .unwrap()
            .into();
        c["prompt"]["few_shot_num"] = few_shot_num.into();
        self.file(name, &c.to_string())
    }
    /// The first `n` rows of a shared CSV (header kept).
    pub fn head(&self, rel: &str, n: usize, name: &str) -> PathBuf {
        let mut r = csv::Reader::from_path(shared(rel)).unwrap();
        let mut w = csv::Writer::from_path(self.dir.path().join(name)).unwrap();
        w.write_record(r.headers().unwrap()).unwrap();
        for rec in r.records().take(n) {
            w.write_record(&rec.unwrap()).unwrap();
        }
        w.flush().unwrap();
        self.dir.path().join(name)
    }
    /// Points the fixture's cache at the embedding model in the user's cache (fetched once there
    /// through its card), so that configs with few-shot selection run without a fetch each.
    pub fn link_embedding_model(&self) {
        let link = self.dir.path().join("cache/embeddings/all-minilm-l6-v2");
        if link.exists() {
            return;
        }
        let card = autolabel_models::embedding::source::EmbeddingCard::builtin();
        let real = autolabel_models::embedding::source::resolve_card(
            &card,
            &autolabel_models::sources::fetch::cache_root(),
        )
        .expect("embedding model fetched through its card");
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(real, link).unwrap();
    }

    pub fn run(&self, config: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
        self.link_embedding_model();
        Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
            .args([
                "run",
                "--config",
                config.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
            ])
            .args([
                "--out",
                out.to_str().unwrap(),
                "--model",
                self.model.to_str().unwrap(),
            ])
            .args(["--max-tokens", "8192"])
            .args(extra)
            .env("AUTOLABEL_LOCAL_CACHE", self.dir.path().join("cache"))
            .output()
            .unwrap()
    }
}

impl Fixture {
    /// `autolabel-local ARGS --model <the tiny model>` with the fixture's cache.
    pub fn command(&self, args: &[&str]) -> Output {
        self.link_embedding_model();
        Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
            .args(args)
            .args([
                "--model",
                self.model.to_str().unwrap(),
                "--max-tokens",
                "8192",
            ])
            .env("AUTOLABEL_LOCAL_CACHE", self.dir.path().join("cache"))
            .output()
            .unwrap()
    }
}

impl Fixture {
    /// `autolabel-local score --config C --data D --label-column COL --out OUT EXTRA` with the
    /// fixture's model and cache.
    pub fn score(
        &self,
        config: &Path,
        data: &Path,
        column: &str,
        out: &Path,
        extra: &[&str],
    ) -> Output {
        let mut args = vec![
            "score",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--label-column",
            column,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        self.command(&args)
    }

    /// `autolabel-local plan --config C --data D --dump-requests FILE EXTRA` (must succeed):
    /// plan's printed text and every row's request as the run prepares it.
    pub fn plan_requests(
        &self,
        config: &Path,
        data: &Path,
        extra: &[&str],
    ) -> (String, Vec<serde_json::Value>) {
        let dump = self.dir.path().join("requests.jsonl");
        let mut args = vec![
            "plan",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--dump-requests",
            dump.to_str().unwrap(),
        ];
        args.extend(extra);
        let o = self.command(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let requests = std::fs::read_to_string(&dump)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (text(&o), requests)
    }

    /// `autolabel-local calibrate --config C --data D --calibration CAL --no-plots EXTRA` with
    /// the fixture's model and cache.
    pub fn calibrate(&self, config: &Path, data: &Path, cal: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "calibrate",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--calibration",
            cal.to_str().unwrap(),
            "--no-plots",
        ];
        args.extend(extra);
        self.command(&args)
    }
}

pub fn read_csv(p: &Path) -> Vec<std::collections::HashMap<String, String>> {
    csv::Reader::from_path(p)
        .unwrap()
        .deserialize()
        .map(|r| r.unwrap())
        .collect()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A JSON list of token ids (a dumped request's `prompt_ids`, a candidate's ids).
pub fn token_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
