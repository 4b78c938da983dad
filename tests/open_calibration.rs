//! Calibration and thresholds per entity (named-entity recognition) and per answer (extractive
//! QA) from the command line over real CoNLL-2003 and SQuAD rows (entities with the default real
//! model, SmolLM2, fetched through its card: a tiny random model lists none; answers and refusals
//! with a tiny random-weight model):
//! `calibrate` writes a calibration for generated answers, `run --calibration` applies its
//! scaling to every entity and, with a target accuracy, leaves the entities below the threshold
//! out of the label (kept and marked in the entities column); mismatched files and options are
//! refused with messages naming them.

mod common;

use common::{read_csv, shared, text, Fixture};
use std::path::PathBuf;

fn model_file(f: &Fixture) -> String {
    f.model.file_name().unwrap().to_string_lossy().into_owned()
}

const TASK: &str = "PersonLocationOrgMiscNER";

/// Autolabel's conll2003 attribute_extraction config, zero-shot (SmolLM2 lists many entities
/// then) or with `shots` of its seed rows (fixed selection).
fn conll_config(f: &Fixture, shots: usize) -> PathBuf {
    let config = shared("autolabel_configs/benchmark_configs_HEAD/conll2003.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let prompt = c["prompt"].as_object_mut().unwrap();
    if shots == 0 {
        for k in ["few_shot_examples", "few_shot_num", "few_shot_selection"] {
            prompt.remove(k);
        }
    } else {
        prompt.insert(
            "few_shot_examples".into(),
            shared("autolabel_conll2003/seed.csv")
                .to_str()
                .unwrap()
                .into(),
        );
        prompt.insert("few_shot_num".into(), shots.into());
        prompt.insert("few_shot_selection".into(), "fixed".into());
    }
    f.file("conll.json", &c.to_string())
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[test]
fn calibrate_fits_each_entity_and_run_applies_it() {
    let f = Fixture::smollm2();
    let config = conll_config(&f, 0);
    let seed = f.head("autolabel_conll2003/test.csv", 6, "seed.csv");
    let cal = f.dir.path().join("conll.calibration.json");
    let o = f.calibrate(&config, &seed, &cal, &["--target-accuracy", "0.0"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains("calibrated entity confidence = sigmoid(") && t.contains("fit, calibrated"),
        "{t}"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    assert_eq!(file["format"], "autolabel-local-answer-calibration-1");
    assert_eq!(file["unit"], "entity");
    let (a, b) = (
        file["platt"]["a"].as_f64().unwrap(),
        file["platt"]["b"].as_f64().unwrap(),
    );
    assert!(a >= 0.0 && a.is_finite() && b.is_finite(), "{file}");
    let fitted = file["fit"]["units"].as_u64().unwrap();
    assert!(fitted >= 10, "only {fitted} entities to fit on: {t}");

    // The run applies the scaling to every entity and marks those below the file's threshold
    // (target 0: the lowest calibrated confidence of a seed entity).
    let threshold = file["threshold"].as_f64().unwrap() as f32;
    let data = f.head("autolabel_conll2003/test_head_small.csv", 4, "test.csv");
    let out = f.dir.path().join("out.csv");
    let o = f.run(
        &config,
        &data,
        &out,
        &["--calibration", cal.to_str().unwrap()],
    );
    let t = text(&o);
    assert!(o.status.code().is_some_and(|c| c == 0 || c == 2), "{t}");
    assert!(t.contains("calibrated entity probability sigmoid("), "{t}");
    let mut seen = 0;
    for r in read_csv(&out) {
        if r[&format!("{TASK}_task_successfully_labeled")] != "True" {
            continue;
        }
        let entities: Vec<serde_json::Value> =
            serde_json::from_str(&r[&format!("{TASK}_task_entities")]).unwrap();
        let mut all = true;
        for e in entities {
            let p = e["probability"].as_f64().unwrap();
            let c = e["confidence"].as_f64().unwrap();
            assert!((c - sigmoid(a * p.max(1e-12).ln() + b)).abs() < 2e-6, "{e}");
            let sure = sigmoid(a * p.max(1e-12).ln() + b) as f32 >= threshold;
            assert_eq!(e["confident"], sure, "threshold {threshold}: {e}");
            all &= sure;
            seen += 1;
        }
        let sure = if all { "True" } else { "False" };
        assert_eq!(r[&format!("{TASK}_task_confidently_labeled")], sure);
    }
    assert!(seen > 0, "no entities to check: {t}");
}

#[test]
fn entities_below_the_threshold_leave_the_label_and_stay_in_the_entities_column() {
    let f = Fixture::smollm2();
    let config = conll_config(&f, 0);
    let data = f.head("autolabel_conll2003/test_head_small.csv", 6, "test.csv");
    // A hand-made calibration: confidence = sigmoid(ln p) = p / (1 + p), and on its seed rows
    // confidence >= 0.3 reached accuracy 0.9 (so target 0.8 picks 0.3).
    let cal = f.file(
        "hand.calibration.json",
        &serde_json::json!({
            "format": "autolabel-local-answer-calibration-1",
            "task_type": "attribute_extraction", "task_name": TASK, "model": model_file(&f),
            "unit": "entity", "platt": {"a": 1.0, "b": 0.0}, "target_accuracy": 0.8, "threshold": 0.3,
            "fit": {"units": 10, "accuracy": 0.5, "ece": 0.1, "brier": 0.2},
            "fit_uncalibrated": {"units": 10, "accuracy": 0.5, "ece": 0.2, "brier": 0.3},
            "holdout": null, "holdout_uncalibrated": null,
            "curve": [{"threshold": 0.3, "accuracy": 0.9, "completion_rate": 0.5},
                      {"threshold": 0.0, "accuracy": 0.5, "completion_rate": 1.0}]
        })
        .to_string(),
    );
    let plain = f.dir.path().join("plain.csv");
    let o = f.run(&config, &data, &plain, &[]);
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&o)
    );
    let out = f.dir.path().join("out.csv");
    let o = f.run(
        &config,
        &data,
        &out,
        &[
            "--calibration",
            cal.to_str().unwrap(),
            "--target-accuracy",
            "0.8",
        ],
    );
    let t = text(&o);
    assert!(o.status.code().is_some_and(|c| c == 0 || c == 2), "{t}");
    assert!(t.contains("threshold 0.3000"), "{t}");
    let (mut kept, mut left_out) = (0, 0);
    for (r, before) in read_csv(&out).iter().zip(read_csv(&plain)) {
        if r[&format!("{TASK}_task_successfully_labeled")] != "True" {
            continue;
        }
        let label: serde_json::Value =
            serde_json::from_str(&r[&format!("{TASK}_task_label")]).unwrap();
        let entities: Vec<serde_json::Value> =
            serde_json::from_str(&r[&format!("{TASK}_task_entities")]).unwrap();
        let raw: Vec<serde_json::Value> =
            serde_json::from_str(&before[&format!("{TASK}_task_entities")]).unwrap();
        assert_eq!(entities.len(), raw.len(), "the same answer, calibrated");
        let mut in_label = 0;
        let mut all = true;
        for (e, r0) in entities.iter().zip(&raw) {
            let p = e["probability"].as_f64().unwrap();
            assert!((p - r0["confidence"].as_f64().unwrap()).abs() < 1e-9);
            let c = e["confidence"].as_f64().unwrap();
            assert!((c - p / (1.0 + p)).abs() < 2e-6, "{e}");
            let confident = e["confident"].as_bool().unwrap();
            assert_eq!(confident, c >= 0.3 - 1e-6, "{e}");
            all &= confident;
            if confident {
                kept += 1;
                in_label += 1;
                let list = label[e["type"].as_str().unwrap()].as_array().unwrap();
                assert!(
                    list.iter().any(|x| x == &e["text"]),
                    "{e} missing from {label}"
                );
            } else {
                left_out += 1;
            }
        }
        let listed: usize = label
            .as_object()
            .unwrap()
            .values()
            .map(|l| l.as_array().unwrap().len())
            .sum();
        assert_eq!(
            listed, in_label,
            "the label holds exactly the confident entities"
        );
        assert_eq!(
            r[&format!("{TASK}_task_confidently_labeled")],
            if all { "True" } else { "False" }
        );
    }
    assert!(
        kept > 0 && left_out > 0,
        "both sides of the threshold should occur: {kept} kept, {left_out} left out"
    );
    assert!(t.contains("left out of the label"), "{t}");
}

#[test]
fn extractive_answers_get_a_confidently_labeled_column() {
    let f = Fixture::new();
    let config = shared("autolabel_configs/examples_configs_HEAD/config_squad_v2.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    let prompt = c["prompt"].as_object_mut().unwrap();
    prompt.remove("few_shot_examples");
    prompt.remove("few_shot_num");
    let config = f.file("squad.json", &c.to_string());
    let seed = f.head("squad_v2_dev_half/dev_half.csv", 10, "squad.csv");
    let cal = f.dir.path().join("squad.calibration.json");
    let o = f.calibrate(&config, &seed, &cal, &["--target-accuracy", "0.0"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("calibrated answer confidence"), "{t}");
    let out = f.dir.path().join("out.csv");
    let o = f.run(
        &config,
        &seed,
        &out,
        &[
            "--calibration",
            cal.to_str().unwrap(),
            "--target-accuracy",
            "0.0",
        ],
    );
    let t = text(&o);
    assert!(o.status.code().is_some_and(|c| c == 0 || c == 2), "{t}");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    let threshold = file["threshold"].as_f64().unwrap();
    let mut rows = 0;
    for r in read_csv(&out) {
        if r["OpenbookQAWikipedia_task_successfully_labeled"] != "True" {
            continue;
        }
        rows += 1;
        let c: f64 = r["OpenbookQAWikipedia_task_confidence"].parse().unwrap();
        assert_eq!(
            r["OpenbookQAWikipedia_task_confidently_labeled"] == "True",
            c >= threshold - 1e-6,
            "{r:?}"
        );
    }
    assert!(rows > 0, "{t}");
}

#[test]
fn calibration_options_that_do_not_fit_the_task_are_refused() {
    let f = Fixture::new();
    let config = conll_config(&f, 2);
    let data = f.head("autolabel_conll2003/test_head_small.csv", 2, "test.csv");
    let out = f.dir.path().join("out.csv");
    let label_set_cal = f.file(
        "labels.calibration.json",
        r#"{"format": "autolabel-local-calibration-1", "task_name": "X"}"#,
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--target-accuracy", "0.9"],
            "--target-accuracy needs --calibration FILE",
        ),
        (
            vec!["--calibration", label_set_cal.to_str().unwrap()],
            "not 'autolabel-local-answer-calibration-1'",
        ),
        (
            vec!["--confidence", "margin"],
            "confidence is the probability of each entity's tokens",
        ),
    ];
    for (args, want) in cases {
        let o = f.run(&config, &data, &out, &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
    }
    // A model that lists no entity on the seed rows leaves nothing to fit, and says so.
    let seed = f.head("autolabel_conll2003/test.csv", 6, "seed.csv");
    let o = f.command(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        seed.to_str().unwrap(),
        "--no-plots",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the model gave only 0 entities on 6 seed rows"),
        "{}",
        text(&o)
    );
    let other = f.file(
        "other.calibration.json",
        &serde_json::json!({
            "format": "autolabel-local-answer-calibration-1", "task_type": "attribute_extraction",
            "task_name": "SomethingElse", "model": "tiny.gguf", "unit": "entity",
            "platt": {"a": 1.0, "b": 0.0}, "target_accuracy": 0.8, "threshold": null,
            "fit": {"units": 1, "accuracy": 0.0, "ece": 0.0, "brier": 0.0},
            "fit_uncalibrated": {"units": 1, "accuracy": 0.0, "ece": 0.0, "brier": 0.0},
            "holdout": null, "holdout_uncalibrated": null, "curve": []
        })
        .to_string(),
    );
    let o = f.run(
        &config,
        &data,
        &out,
        &["--calibration", other.to_str().unwrap()],
    );
    assert!(
        text(&o).contains("was made for task 'SomethingElse'"),
        "{}",
        text(&o)
    );
    let o = f.run(
        &config,
        &data,
        &out,
        &[
            "--calibration",
            other.to_str().unwrap(),
            "--target-accuracy",
            "0.5",
        ],
    );
    assert!(text(&o).contains("was made for task"), "{}", text(&o));
    let o = f.command(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--fit",
        "bias",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--fit bias applies to tasks with a label set"),
        "{}",
        text(&o)
    );
    // A calibration for generated answers given to a label-set task is named as such.
    let sms = f.file(
        "sms.tsv",
        "Label\tSMS\nham\tOk lar...\nspam\tWIN a prize now\n",
    );
    let answers = f.file(
        "a.calibration.json",
        r#"{"format": "autolabel-local-answer-calibration-1", "task_name": "SpamClassification"}"#,
    );
    let o = f.run(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/sms_spam/config.json"),
        &sms,
        &out,
        &["--calibration", answers.to_str().unwrap()],
    );
    assert!(
        text(&o).contains("is a calibration for generated answers"),
        "{}",
        text(&o)
    );
}
