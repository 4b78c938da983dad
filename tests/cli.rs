//! The command line end to end on a tiny random-weight model (no download): output columns, row
//! errors kept in the output, and clear messages for bad input.

use autolabel_models::testing::{write_tiny_gguf, TinySpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
}

const CONFIG: &str = r#"{
  "task_name": "Sentiment",
  "task_type": "classification",
  "dataset": {"label_column": "label", "delimiter": ","},
  "model": {"provider": "openai", "name": "gpt-3.5-turbo"},
  "prompt": {
    "task_guidelines": "Classify the review as one of:\n{labels}",
    "labels": ["positive", "negative", "not sure"],
    "example_template": "Input: {example}\nOutput: {label}"
  }
}"#;

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny.gguf");
        write_tiny_gguf(&model, &TinySpec::llama()).unwrap();
        Fixture { dir, model }
    }
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
            .args(args)
            .env("AUTOLABEL_LOCAL_CACHE", self.dir.path().join("cache"))
            .output()
            .unwrap()
    }
    fn label(&self, config: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "run",
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if !extra.contains(&"--model") {
            args.extend(["--model", self.model.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn labels_every_row_and_keeps_bad_rows_with_their_error() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let data = f.file(
        "data.csv",
        "example,label\n\"A fine, warm film\",positive\nshort row\nDull and too long,negative\n\"\",negative\n",
    );
    let out = f.dir.path().join("out.csv");
    let o = f.label(&config, &data, &out, &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "partial success exit code; stderr: {}",
        stderr(&o)
    );
    let mut rd = csv::Reader::from_path(&out).unwrap();
    let headers: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        vec![
            "example",
            "label",
            "Sentiment_task_label",
            "Sentiment_task_confidence",
            "Sentiment_task_successfully_labeled",
            "Sentiment_task_error",
            "Sentiment_task_label_logprobs",
            "Sentiment_task_label_mean_token_logprobs"
        ]
    );
    let rows: Vec<Vec<String>> = rd
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 4, "no row is dropped");
    for i in [0, 2] {
        assert!(
            ["positive", "negative", "not sure"].contains(&rows[i][2].as_str()),
            "{:?}",
            rows[i]
        );
        let c: f32 = rows[i][3].parse().unwrap();
        assert!(
            c > 1.0 / 3.0 - 1e-6 && c <= 1.0,
            "confidence {c} is the best of three probabilities"
        );
        assert_eq!(rows[i][4], "True");
        assert_eq!(rows[i][5], "");
        // Every label's log-probability, in the config's order; normalised over the labels they
        // give the confidence of the chosen label.
        let lp: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&rows[i][6]).unwrap();
        let keys: Vec<&str> = lp.keys().map(String::as_str).collect();
        assert_eq!(keys, ["positive", "negative", "not sure"]);
        let z: f64 = lp.values().map(|v| v.as_f64().unwrap().exp()).sum();
        let p = lp[&rows[i][2]].as_f64().unwrap().exp() / z;
        assert!((p - c as f64).abs() < 1e-5, "{p} vs {c}");
        let mean: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&rows[i][7]).unwrap();
        assert_eq!(mean.len(), 3);
    }
    assert_eq!(rows[1][0], "short row");
    assert_eq!(rows[1][4], "False");
    assert_eq!(rows[1][6], "", "no scores for a row that was not scored");
    assert!(
        rows[1][5].contains("line 3") && rows[1][5].contains("expected 2 fields, found 1"),
        "{:?}",
        rows[1]
    );
    assert!(rows[3][5].contains("empty input"), "{:?}", rows[3]);
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("| support | threshold | accuracy | completion_rate |"));
}

#[test]
fn same_input_same_output_and_batching_does_not_change_labels() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let rows: String = (0..9)
        .map(|i| format!("review number {i} {},positive\n", "word ".repeat(i * 3)))
        .collect();
    let data = f.file("data.csv", &format!("example,label\n{rows}"));
    let a = f.dir.path().join("a.csv");
    let b = f.dir.path().join("b.csv");
    assert!(f
        .label(&config, &data, &a, &["--batch-size", "4"])
        .status
        .success());
    assert!(f
        .label(&config, &data, &b, &["--batch-size", "1"])
        .status
        .success());
    let read = |p: &Path| -> Vec<(String, f32)> {
        csv::Reader::from_path(p)
            .unwrap()
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r[2].to_string(), r[3].parse().unwrap())
            })
            .collect()
    };
    let (ra, rb) = (read(&a), read(&b));
    assert_eq!(ra.len(), 9);
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.0, y.0);
        assert!((x.1 - y.1).abs() < 1e-4);
    }
}

#[test]
fn jsonl_in_and_out() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let data = f.file(
        "data.jsonl",
        "{\"example\": \"good\", \"label\": \"positive\"}\n{\"example\": \"bad\"}\n",
    );
    let out = f.dir.path().join("out.jsonl");
    let o = f.label(&config, &data, &out, &["--no-chat-template"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["Sentiment_task_successfully_labeled"], "True");
}

#[test]
fn bad_inputs_get_messages_that_name_the_problem() {
    let f = Fixture::new();
    let good_config = f.file("task.json", CONFIG);
    let data = f.file("data.csv", "example,label\nok,positive\n");
    let out = f.dir.path().join("o.csv");
    let cases: Vec<(PathBuf, PathBuf, Vec<&str>, &str)> = vec![
        (
            f.file("c1.json", &CONFIG.replace("\"labels\"", "\"lables\"")),
            data.clone(),
            vec![],
            "prompt.lables",
        ),
        (
            f.file("c2.json", &CONFIG.replace("{example}", "{text}")),
            data.clone(),
            vec![],
            "{text}",
        ),
        (
            f.file("c3.json", "{ not json"),
            data.clone(),
            vec![],
            "not valid JSON",
        ),
        (
            f.file(
                "c4.json",
                &CONFIG.replace(r#"["positive", "negative", "not sure"]"#, r#"["a", "a"]"#),
            ),
            data.clone(),
            vec![],
            "twice",
        ),
        (
            f.file(
                "c5.json",
                &CONFIG.replace("classification", "summarization"),
            ),
            data.clone(),
            vec![],
            "task_type",
        ),
        (
            good_config.clone(),
            f.dir.path().join("missing.csv"),
            vec![],
            "missing.csv",
        ),
        (
            good_config.clone(),
            f.file("empty.csv", ""),
            vec![],
            "is empty",
        ),
        (
            good_config.clone(),
            data.clone(),
            vec!["--device", "cuda"],
            "--features cuda",
        ),
        (
            good_config.clone(),
            data.clone(),
            vec!["--dtype", "int3"],
            "--dtype",
        ),
        (
            good_config.clone(),
            data.clone(),
            vec!["--model", "no-such-model"],
            "not a local file",
        ),
    ];
    for (config, data_path, extra, needle) in cases {
        let o = f.label(&config, &data_path, &out, &extra);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A corrupted model file.
    let bad_model = f.file("bad.gguf", "GGUF but not really");
    let o = f.run(&[
        "run",
        "--config",
        good_config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--model",
        bad_model.to_str().unwrap(),
    ]);
    assert!(stderr(&o).contains("not a readable GGUF"), "{}", stderr(&o));
}

#[test]
fn over_long_inputs_are_cut_from_the_middle_with_a_warning() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let long = format!("START {} END", "blah ".repeat(400));
    let data = f.file(
        "data.csv",
        &format!("example,label\n{long},positive\nshort,negative\n"),
    );
    let out = f.dir.path().join("o.csv");
    let o = f.label(&config, &data, &out, &["--max-tokens", "400"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("line 2: input cut from the middle"), "{err}");
    assert!(err.contains("1 rows had their input cut"), "{err}");
}

#[test]
fn plan_shows_prompt_counts_and_estimate() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let data = f.file(
        "data.csv",
        "example,label\nthe first review,positive\nanother one,negative\n",
    );
    let o = f.run(&[
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--model",
        f.model.to_str().unwrap(),
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains(
            "<|im_start|>user\nClassify the review as one of:\npositive\nnegative\nnot sure"
        ),
        "{out}"
    );
    assert!(
        out.contains("Input: the first review\nOutput:<|im_end|>"),
        "{out}"
    );
    assert!(out.contains("prompt tokens: mean"), "{out}");
    assert!(out.contains("label continuations: 3 labels"), "{out}");
    assert!(out.contains("estimated run time on cpu"), "{out}");
}

#[test]
fn every_autolabel_config_parses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/autolabel_configs");
    let mut n = 0;
    for sub in [
        "benchmark_configs_HEAD",
        "examples_configs_HEAD",
        "examples_configs_2023-06-26",
    ] {
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                autolabel_local::config::TaskConfig::load(&path)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
    }
    assert_eq!(
        n, 49,
        "the three folders of Autolabel's configs hold 49, and all parse"
    );
}

fn read_csv(p: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(p).unwrap();
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|x| x.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

/// 40 labeled rows for the tiny model (its labels are noise, which is all calibration needs).
fn seed_rows() -> String {
    let labels = ["positive", "negative", "not sure"];
    let rows: String = (0..40)
        .map(|i| format!("review {i} {},{}\n", "so ".repeat(i % 7), labels[i % 3]))
        .collect();
    format!("example,label\n{rows}")
}

#[test]
fn calibrate_then_run_with_a_target_accuracy() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let data = f.file("seed.csv", &seed_rows());
    let model = f.model.to_str().unwrap();
    let o = f.run(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--model",
        model,
        "--target-accuracy",
        "0.3",
        "--holdout",
        "0.25",
        "--fit",
        "bias",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = String::from_utf8_lossy(&o.stdout);
    for want in [
        "temperature:",
        "held out, uncalibrated",
        "held out, calibrated",
        "AUROC",
        "threshold for accuracy 0.3",
    ] {
        assert!(report.contains(want), "missing '{want}' in:\n{report}");
    }
    // Written beside the config by default, with its charts.
    let cal_path = f.dir.path().join("task.calibration.json");
    let cal: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal_path).unwrap()).unwrap();
    assert_eq!(cal["labels"].as_array().unwrap().len(), 3);
    assert_eq!(cal["model"], "tiny.gguf");
    assert_eq!(cal["adjustment"]["bias"].as_array().unwrap().len(), 3);
    let threshold = cal["threshold"].as_f64().unwrap() as f32;
    // Charts need a TrueType font; on a machine without one calibrate says so and goes on.
    if stderr(&o).contains("charts not written") {
        assert!(
            stderr(&o).contains("AUTOLABEL_LOCAL_FONT"),
            "{}",
            stderr(&o)
        );
    } else {
        for chart in [
            "task.calibration.reliability.svg",
            "task.calibration.coverage.svg",
        ] {
            let svg = std::fs::read_to_string(f.dir.path().join(chart)).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("<text"), "{chart}");
        }
    }

    // The run applies it: the confidence column is the calibrated probability and rows under
    // the threshold are marked, not dropped.
    let out = f.dir.path().join("out.csv");
    let o = f.label(
        &config,
        &data,
        &out,
        &[
            "--calibration",
            cal_path.to_str().unwrap(),
            "--all-confidence-columns",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("confidently labeled"), "{}", stderr(&o));
    let (header, rows) = read_csv(&out);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (conf, sure, prob) = (
        col("Sentiment_task_confidence"),
        col("Sentiment_task_confidently_labeled"),
        col("Sentiment_task_confidence_label_prob"),
    );
    assert!(header.contains(&"Sentiment_task_confidence_entropy".to_string()));
    assert_eq!(rows.len(), 40);
    let mut kept = 0;
    for r in &rows {
        let c: f32 = r[conf].parse().unwrap();
        assert_eq!(r[conf], r[prob]);
        if (c - threshold).abs() > 1e-5 {
            // (the column is rounded to 6 decimals)
            assert_eq!(r[sure], if c >= threshold { "True" } else { "False" });
        }
        kept += (r[sure] == "True") as usize;
    }
    assert!(kept > 0);

    // A stricter target moves the threshold from the stored seed curve.
    let strict = f.dir.path().join("strict.csv");
    let o = f.label(
        &config,
        &data,
        &strict,
        &[
            "--calibration",
            cal_path.to_str().unwrap(),
            "--target-accuracy",
            "1.0",
        ],
    );
    if o.status.success() {
        let (_, rows) = read_csv(&strict);
        let strict_kept = rows.iter().filter(|r| r[sure] == "True").count();
        assert!(strict_kept <= kept);
    } else {
        assert!(
            stderr(&o).contains("no label_prob threshold reached accuracy 1"),
            "{}",
            stderr(&o)
        );
    }

    // A calibration for other labels or without a calibration file is refused with a reason.
    let other = f.file("other.json", &CONFIG.replace("\"not sure\"", "\"unsure\""));
    let o = f.label(
        &other,
        &data,
        &out,
        &["--calibration", cal_path.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("was fitted for the labels"),
        "{}",
        stderr(&o)
    );
    let o = f.label(&config, &data, &out, &["--target-accuracy", "0.9"]);
    assert!(
        stderr(&o).contains("--target-accuracy needs --calibration"),
        "{}",
        stderr(&o)
    );
    let o = f.label(&config, &data, &out, &["--confidence", "vibes"]);
    assert!(
        stderr(&o).contains("label_prob, mean_logprob"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn score_agrees_with_run_on_the_models_own_labels() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let data = f.file("data.csv", &seed_rows());
    let labeled = f.dir.path().join("labeled.csv");
    assert!(f.label(&config, &data, &labeled, &[]).status.success());
    // Score the run's own labels, plus one label outside the set and one missing.
    let (header, mut rows) = read_csv(&labeled);
    rows[1][2] = "sarcastic".into();
    rows[2][2] = String::new();
    let mut w = csv::Writer::from_path(f.dir.path().join("given.csv")).unwrap();
    w.write_record(&header).unwrap();
    for r in &rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    let scored = f.dir.path().join("scored.csv");
    let o = f.run(&[
        "score",
        "--config",
        config.to_str().unwrap(),
        "--data",
        f.dir.path().join("given.csv").to_str().unwrap(),
        "--model",
        f.model.to_str().unwrap(),
        "--label-column",
        "Sentiment_task_label",
        "--out",
        scored.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "two rows have no scorable label: {}",
        stderr(&o)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("AUROC of P(given label)"));
    let (h, out) = read_csv(&scored);
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    for (i, r) in out.iter().enumerate() {
        match i {
            1 => assert!(
                r[col("Sentiment_task_error")].contains("'sarcastic' is not one of the 3 labels"),
                "{r:?}"
            ),
            2 => assert!(r[col("Sentiment_task_error")].contains("no label to score")),
            _ => {
                assert_eq!(r[col("Sentiment_task_agrees")], "True");
                assert_eq!(r[col("Sentiment_task_local_label")], rows[i][2]);
                let given: f32 = r[col("Sentiment_task_given_label_prob")].parse().unwrap();
                let run_conf: f32 = rows[i][3].parse().unwrap();
                assert!(
                    (given - run_conf).abs() < 1e-5,
                    "row {i}: {given} vs {run_conf}"
                );
            }
        }
    }
    let o = f.run(&[
        "score",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--model",
        f.model.to_str().unwrap(),
        "--label-column",
        "gpt4_label",
    ]);
    assert!(
        stderr(&o)
            .contains("no column 'gpt4_label' (--label-column); the columns are example, label"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_rerun_reuses_the_journal_and_changes_rescore_only_what_they_affect() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let rows: String = (0..12)
        .map(|i| format!("review {i} {},positive\n", "ok ".repeat(i)))
        .collect();
    let data = f.file("data.csv", &format!("example,label\n{rows}"));
    let out = f.dir.path().join("out.csv");
    let first = f.label(&config, &data, &out, &["--batch-size", "4"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(f.dir.path().join("out.csv.journal").exists());
    let bytes = std::fs::read(&out).unwrap();

    std::fs::remove_file(&out).unwrap();
    let again = f.label(&config, &data, &out, &["--batch-size", "4"]);
    assert!(
        stderr(&again).contains("12 rows came from the journal"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        bytes,
        "same bytes from the journal"
    );

    // One changed row is the only one scored again; the others keep their stored scores.
    let changed = format!(
        "example,label\n{}",
        rows.replacen("review 3 ", "review three ", 1)
    );
    let data2 = f.file("data.csv", &changed);
    let third = f.label(&config, &data2, &out, &["--batch-size", "4"]);
    assert!(
        stderr(&third).contains("11 rows came from the journal"),
        "{}",
        stderr(&third)
    );

    let fresh = f.label(&config, &data2, &out, &["--batch-size", "4", "--fresh"]);
    assert!(
        !stderr(&fresh).contains("came from the journal"),
        "{}",
        stderr(&fresh)
    );

    let status = f.run(&["status", "--out", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("finished") && text.contains("12 of 12 rows done"),
        "{text}"
    );
    let none = f.run(&[
        "status",
        "--out",
        f.dir.path().join("nope.csv").to_str().unwrap(),
    ]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("no run journal for"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn repeated_rows_are_scored_once_and_a_resumed_run_writes_the_same_bytes() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    // Rows 1, 6 and 12 are the same review; rows of other lengths put them in other batches.
    let rows: Vec<String> = (0..12)
        .map(|i| match i {
            0 | 5 | 11 => "the same short review,positive\n".to_string(),
            _ => format!("review {i} {},negative\n", "long ".repeat(i)),
        })
        .collect();
    let data = f.file("data.csv", &format!("example,label\n{}", rows.concat()));
    let reference = f.dir.path().join("reference.csv");
    let o = f.label(&config, &data, &reference, &["--batch-size", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (_, out) = read_csv(&reference);
    assert_eq!(
        out[0][2..],
        out[5][2..],
        "copies get the first row's scores"
    );
    assert_eq!(out[0][2..], out[11][2..]);

    // A journal that holds some rows (as after a kill): the first four rows, which include one
    // copy of the repeated review. The resumed run over all rows writes the reference's bytes.
    let head = f.file(
        "head.csv",
        &format!("example,label\n{}", rows[..4].concat()),
    );
    let resumed = f.dir.path().join("resumed.csv");
    let o = f.label(&config, &head, &resumed, &["--batch-size", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = f.label(&config, &data, &resumed, &["--batch-size", "2"]);
    assert!(
        stderr(&o).contains("6 rows came from the journal"),
        "the four journaled rows and the two copies of the journaled review: {}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(&resumed).unwrap(),
        std::fs::read(&reference).unwrap()
    );
}

#[test]
fn options_without_a_command_run_and_plain_progress_lines_reach_logs() {
    let f = Fixture::new();
    let config = f.file("task.json", CONFIG);
    let rows: String = (0..6).map(|i| format!("review {i},positive\n")).collect();
    let data = f.file("data.csv", &format!("example,label\n{rows}"));
    let out = f.dir.path().join("out.csv");
    // stderr is a pipe here, as in CI or under nohup: progress comes as plain lines.
    let o = Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args([
            "--out",
            out.to_str().unwrap(),
            "--model",
            f.model.to_str().unwrap(),
        ])
        .args(["--batch-size", "2"])
        .env("AUTOLABEL_LOCAL_CACHE", f.dir.path().join("cache"))
        .env("AUTOLABEL_LOCAL_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_csv(&out).1.len(), 6);
    let e = stderr(&o);
    assert!(e.contains("progress: 2/6 rows, "), "{e}");
    assert!(
        e.contains("progress: 6/6 rows, ") && e.contains("rows/s, ETA 0m"),
        "{e}"
    );
}

#[test]
fn described_labels_keep_their_order_and_unused_autolabel_keys_are_named() {
    let f = Fixture::new();
    let mut c: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    c["prompt"]["labels"] = serde_json::json!({
        "positive": "the reviewer liked it",
        "negative": "the reviewer did not",
        "not sure": "mixed or unclear"
    });
    c["chunking"] = serde_json::json!({"confidence_chunk_size": 100});
    c["dataset_generation"] = serde_json::json!({"num_rows": 5});
    let config = f.file("task.json", &c.to_string());
    let data = f.file("data.csv", "example,label\ngreat,positive\n");
    let o = f.run(&[
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--model",
        f.model.to_str().unwrap(),
        "--sample",
        "1",
    ]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("positive : the reviewer liked it\nnegative : the reviewer did not\nnot sure : mixed or unclear\n"),
        "labels with descriptions, in the config's order: {text}"
    );
    assert!(
        text.contains(
            "config keys chunking, dataset_generation are Autolabel's but change nothing here"
        ),
        "{text}"
    );
}
