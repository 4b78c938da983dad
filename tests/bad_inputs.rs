//! Every malformed input gets a message that names the file, line or config key and says what to
//! do — never a panic, never a silently dropped row. Table-driven: each case builds its files,
//! runs the command line on a tiny random-weight model and checks the exit code and message.

use autolabel_models::testing::{write_tiny_gguf, TinySpec};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = r#"{
  "task_name": "Sentiment",
  "task_type": "classification",
  "dataset": {"label_column": "label", "delimiter": ","},
  "model": {"provider": "local", "name": "tiny"},
  "prompt": {
    "task_guidelines": "Classify the review as one of:\n{labels}",
    "labels": ["positive", "negative"],
    "example_template": "Input: {example}\nOutput: {label}"
  }
}"#;

const DATA: &str = "example,label\ngood film,positive\nbad film,negative\n";

/// What a case writes and runs.
struct Case {
    name: &'static str,
    /// Config text (None: the good one); "@missing" for no file.
    config: Option<String>,
    /// Data file name and bytes (None: the good CSV).
    data: Option<(&'static str, Vec<u8>)>,
    /// Extra arguments; the command defaults to `run`. `{dir}` is replaced by the work directory.
    args: Vec<String>,
    /// Expected exit code: 1 failure, 2 rows with errors.
    code: i32,
    /// Every one of these must appear in stderr (or in the output file's error column for 2).
    needles: Vec<&'static str>,
}

fn case(name: &'static str, code: i32, needles: &[&'static str]) -> Case {
    Case {
        name,
        config: None,
        data: None,
        args: Vec::new(),
        code,
        needles: needles.to_vec(),
    }
}

impl Case {
    fn config(mut self, text: impl Into<String>) -> Self {
        self.config = Some(text.into());
        self
    }
    fn config_edit(self, from: &str, to: &str) -> Self {
        assert!(CONFIG.contains(from), "{from}");
        let c = CONFIG.replace(from, to);
        self.config(c)
    }
    fn data(mut self, file: &'static str, bytes: impl Into<Vec<u8>>) -> Self {
        self.data = Some((file, bytes.into()));
        self
    }
    fn args(mut self, a: &[&str]) -> Self {
        self.args = a.iter().map(|s| s.to_string()).collect();
        self
    }
}

fn cases() -> Vec<Case> {
    let giant = format!("example,label\n\"{}\",positive\n", "word ".repeat(200_000));
    vec![
        // --- data files ---
        case("missing data file", 1, &["nothere.csv", "does not exist"])
            .args(&["--data", "{dir}/nothere.csv"]),
        case("empty data file", 1, &["data.csv", "is empty"]).data("data.csv", ""),
        case("whitespace-only data file", 1, &["data.csv", "is empty"])
            .data("data.csv", "\n\n  \n"),
        case("header only", 1, &["data.csv", "no rows"]).data("data.csv", "example,label\n"),
        case(
            "not UTF-8",
            1,
            &["data.csv", "not UTF-8", "offset 17", "line 2", "--lossy"],
        )
        .data(
            "data.csv",
            b"example,label\ncaf\xe9 \xff,positive\n".to_vec(),
        ),
        case(
            "wrong delimiter",
            1,
            &["data.csv", "{example}", "example;label"],
        )
        .data("data.csv", "example;label\ngood;positive\n"),
        case("input column missing", 1, &["{example}", "review, label"])
            .data("data.csv", "review,label\ngood,positive\n"),
        case(
            "short row kept with its error",
            2,
            &["line 3", "expected 2 fields, found 1"],
        )
        .data("data.csv", "example,label\ngood,positive\nlonely\n"),
        case(
            "long row kept with its error",
            2,
            &["line 2", "expected 2 fields, found 3"],
        )
        .data(
            "data.csv",
            "example,label\ngood,positive,extra\nfine,negative\n",
        ),
        case("unclosed quote", 2, &["line 2"])
            .data("data.csv", "example,label\n\"never closed,positive\n"),
        case("empty input value", 2, &["line 2", "empty input"])
            .data("data.csv", "example,label\n,positive\nok,negative\n"),
        case(
            "giant row is cut, not dropped",
            0,
            &["line 2: input cut from the middle"],
        )
        .data("data.csv", giant),
        case(
            "prompt that cannot be cut",
            2,
            &["line 2", "cannot be cut", "--max-tokens"],
        )
        .args(&["--max-tokens", "12"]),
        case(
            "JSONL line that is not JSON",
            2,
            &["line 2: not a JSON object"],
        )
        .data(
            "data.jsonl",
            "{\"example\": \"good\", \"label\": \"positive\"}\n{broken\n",
        ),
        case("JSONL line that is not an object", 2, &["line 2"]).data(
            "data.jsonl",
            "{\"example\": \"good\", \"label\": \"positive\"}\n[1, 2]\n",
        ),
        case("JSONL empty", 1, &["data.jsonl", "is empty"]).data("data.jsonl", "\n"),
        case("blank header", 1, &["data.csv", "header"]).data("data.csv", ",\na,b\n"),
        // --- config ---
        case("config missing", 1, &["nope.json"]).args(&["--config", "{dir}/nope.json"]),
        case("config empty", 1, &["task.json", "not valid JSON"]).config(""),
        case(
            "config broken JSON",
            1,
            &["task.json", "not valid JSON at line 1"],
        )
        .config("{ \"task_name\": "),
        case("config is an array", 1, &["task.json"]).config("[1, 2]"),
        case(
            "unknown key with a suggestion",
            1,
            &["task.json", "prompt.lables", "labels"],
        )
        .config_edit("\"labels\"", "\"lables\""),
        case("unknown top-level key", 1, &["task.json", "modle"])
            .config_edit("\"model\"", "\"modle\""),
        case(
            "labels of the wrong type",
            1,
            &["task.json", "prompt.labels"],
        )
        .config_edit(r#"["positive", "negative"]"#, "5"),
        case(
            "task_name of the wrong type",
            1,
            &["task.json", "task_name"],
        )
        .config_edit("\"Sentiment\"", "42"),
        case("empty task name", 1, &["task_name", "empty"]).config_edit("\"Sentiment\"", "\"\""),
        case("no labels", 1, &["prompt.labels", "empty"])
            .config_edit(r#"["positive", "negative"]"#, "[]"),
        case("duplicate labels", 1, &["prompt.labels", "twice"])
            .config_edit(r#"["positive", "negative"]"#, r#"["a", "a"]"#),
        case("empty label", 1, &["prompt.labels", "empty label"])
            .config_edit(r#"["positive", "negative"]"#, r#"["a", " "]"#),
        case(
            "unsupported task type",
            1,
            &["task_type", "summarization", "supported:"],
        )
        .config_edit("\"classification\"", "\"summarization\""),
        case(
            "NER without the column entities come from",
            1,
            &["dataset.text_column", "missing"],
        )
        .config_edit("\"classification\"", "\"named_entity_recognition\""),
        case("template names a missing column", 1, &["{text}"]).config_edit("{example}", "{text}"),
        case(
            "few-shot file missing",
            1,
            &["prompt.few_shot_examples", "seeds.csv"],
        )
        .config_edit(
            "\"labels\":",
            "\"few_shot_examples\": \"seeds.csv\", \"labels\":",
        ),
        case(
            "few_shot_num of the wrong type",
            1,
            &["prompt.few_shot_num"],
        )
        .config_edit("\"labels\":", "\"few_shot_num\": \"three\", \"labels\":"),
        case("multi-character delimiter", 1, &["dataset.delimiter"]).config_edit("\",\"", "\";;\""),
        // --- model ---
        case("model file missing", 1, &["{dir}/gone.gguf", "--model"])
            .args(&["--model", "{dir}/gone.gguf"]),
        case(
            "unknown model card",
            1,
            &["no-such-model", "smollm2-135m-instruct"],
        )
        .args(&["--model", "no-such-model"]),
        case(
            "not a GGUF",
            1,
            &["not-a-model.gguf", "not a readable GGUF"],
        )
        .args(&["--model", "{dir}/not-a-model.gguf"]),
        case("truncated GGUF", 1, &["truncated.gguf"]).args(&["--model", "{dir}/truncated.gguf"]),
        case(
            "cached model with the wrong sha256",
            1,
            &["has sha256", "could not fetch model"],
        )
        .args(&["--model", "smollm2-135m-instruct"]),
        // --- options ---
        case("unknown device", 1, &["--device", "tpu"]).args(&["--device", "tpu"]),
        case("cuda without the feature", 1, &["--features cuda"]).args(&["--device", "cuda"]),
        case("bad dtype", 1, &["--dtype", "int3"]).args(&["--dtype", "int3"]),
        case("few-shot examples file missing", 1, &["seeds-missing.csv"])
            .args(&["--few-shot-examples", "{dir}/seeds-missing.csv"]),
        case(
            "output directory missing",
            1,
            &["{dir}/no/such/dir", "output directory"],
        )
        .args(&["--out", "{dir}/no/such/dir/out.csv"]),
        case("output path is a directory", 1, &["{dir}/outdir"]).args(&["--out", "{dir}/outdir"]),
        case(
            "calibration file missing",
            1,
            &["cal.json", "cannot read calibration file"],
        )
        .args(&["--calibration", "{dir}/cal.json"]),
        case(
            "calibration file not one",
            1,
            &["task.json", "not a calibration file"],
        )
        .args(&["--calibration", "{dir}/task.json"]),
        case(
            "target accuracy out of range",
            1,
            &["--target-accuracy 1.5"],
        )
        .args(&[
            "--calibration",
            "{dir}/task.json",
            "--target-accuracy",
            "1.5",
        ]),
        case(
            "unknown confidence method",
            1,
            &["--confidence 'vibes'", "label_prob"],
        )
        .args(&["--confidence", "vibes"]),
        case(
            "score without the label column",
            1,
            &["data.csv", "'gpt4'", "example, label"],
        )
        .args(&["score", "--label-column", "gpt4"]),
        case(
            "calibrate without labels",
            1,
            &["data.csv", "label column 'label'"],
        )
        .args(&["calibrate"])
        .data("data.csv", "example\ngood\nbad\n"),
        case("calibrate holdout of 1", 1, &["--holdout 1"]).args(&["calibrate", "--holdout", "1"]),
        case("status without a run", 1, &["no run journal"]).args(&[
            "status",
            "--out",
            "{dir}/never.csv",
        ]),
        case("corrupt journal", 1, &["journal", "--fresh"]).args(&["--out", "{dir}/corrupt.csv"]),
    ]
}

fn run_case(c: &Case, dir: &Path, model: &Path) -> (Option<i32>, String, PathBuf) {
    let sub = |s: &str| s.replace("{dir}", dir.to_str().unwrap());
    let config = dir.join("task.json");
    std::fs::write(&config, c.config.as_deref().unwrap_or(CONFIG)).unwrap();
    let (name, bytes) = c
        .data
        .clone()
        .unwrap_or(("data.csv", DATA.as_bytes().to_vec()));
    let data = dir.join(name);
    std::fs::write(&data, bytes).unwrap();
    let out = dir.join("out.csv");
    let mut args: Vec<String> = c.args.iter().map(|a| sub(a)).collect();
    let command = match args.first().map(String::as_str) {
        Some("score" | "calibrate" | "status" | "plan") => args.remove(0),
        _ => "run".to_string(),
    };
    let mut full = vec![command.clone()];
    if command != "status" {
        let has = |flag: &str| args.iter().any(|a| a == flag);
        for (flag, value) in [
            ("--config", config.to_str().unwrap()),
            ("--data", data.to_str().unwrap()),
            ("--model", model.to_str().unwrap()),
        ] {
            if !has(flag) {
                full.extend([flag.to_string(), value.to_string()]);
            }
        }
        if command != "calibrate" && !has("--out") {
            full.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
        }
    }
    full.extend(args);
    let o = Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
        .args(&full)
        .env("AUTOLABEL_LOCAL_CACHE", dir.join("cache"))
        .env("AUTOLABEL_LOCAL_PIP", "false")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        out,
    )
}

#[test]
fn every_malformed_input_gets_a_clear_message() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let model = dir.join("tiny.gguf");
        write_tiny_gguf(&model, &TinySpec::llama()).unwrap();
        std::fs::write(dir.join("not-a-model.gguf"), "this is not a model").unwrap();
        let bytes = std::fs::read(&model).unwrap();
        std::fs::write(dir.join("truncated.gguf"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::create_dir(dir.join("outdir")).unwrap();
        std::fs::write(
            dir.join("corrupt.csv.journal"),
            "not a database, just text ".repeat(200),
        )
        .unwrap();
        let cached = dir.join("cache/models/smollm2-135m-instruct");
        std::fs::create_dir_all(&cached).unwrap();
        std::fs::write(
            cached.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
            "corrupted download",
        )
        .unwrap();

        let (code, stderr, out) = run_case(c, dir, &model);
        let mut text = stderr.clone();
        if c.code == 2 {
            // Row errors live in the output's error column too.
            text.push_str(&std::fs::read_to_string(&out).unwrap_or_default());
        }
        let dir_s = dir.to_str().unwrap();
        let missing: Vec<String> = c
            .needles
            .iter()
            .map(|n| n.replace("{dir}", dir_s))
            .filter(|n| !text.contains(n.as_str()))
            .collect();
        if code != Some(c.code) || !missing.is_empty() || stderr.contains("panicked") {
            failures.push(format!(
                "{}: exit {code:?} (want {}), missing {missing:?}\n{stderr}",
                c.name, c.code
            ));
        }
        if c.code == 2 {
            let rows = csv::Reader::from_path(&out).unwrap().records().count();
            let input_rows = std::fs::read_to_string(dir.join("data.csv"))
                .or_else(|_| std::fs::read_to_string(dir.join("data.jsonl")))
                .unwrap();
            assert!(rows >= 1, "{}: no row dropped ({input_rows:.60})", c.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
