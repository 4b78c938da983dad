//! `--label-orders K` on real SMS rows with SmolLM2 (and a tiny random model for refusals): each row's label probabilities
//! are the average over the label list shown in K orders (checked against runs whose config
//! lists the labels in those orders); resumed and sharded runs give the same bytes; the cases
//! where there is no order to change are refused by name.

mod common;

use common::{read_csv, shared, text, Fixture};
use std::collections::HashMap;
use std::path::PathBuf;

fn sms(f: &Fixture, n: usize) -> PathBuf {
    let raw = std::fs::read_to_string(shared("sms_spam/SMSSpamCollection.tsv")).unwrap();
    let path = f.dir.path().join("sms.csv");
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(["Label", "SMS"]).unwrap();
    for l in raw.lines().skip(1).take(n) {
        w.write_record(l.splitn(2, '\t')).unwrap();
    }
    w.flush().unwrap();
    path
}

fn config(f: &Fixture, name: &str, labels: &[&str], extra: serde_json::Value) -> PathBuf {
    let mut c = serde_json::json!({
        "task_name": "Spam", "task_type": "classification",
        "dataset": {"label_column": "Label", "delimiter": ","},
        "prompt": {
            "task_guidelines": "Classify the SMS message as one of:\n{labels}",
            "labels": labels,
            "example_template": "Message: {SMS}\nLabel: {Label}"}});
    for (k, v) in extra.as_object().unwrap() {
        c["prompt"][k] = v.clone();
    }
    f.file(name, &c.to_string())
}

/// Each row's label log-probabilities as written.
fn logprobs(out: &std::path::Path) -> Vec<HashMap<String, f64>> {
    read_csv(out)
        .iter()
        .map(|r| serde_json::from_str(&r["Spam_task_label_logprobs"]).unwrap())
        .collect()
}

fn softmax(lp: &HashMap<String, f64>) -> HashMap<String, f64> {
    let max = lp.values().cloned().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = lp.values().map(|v| (v - max).exp()).sum();
    lp.iter()
        .map(|(k, v)| (k.clone(), (v - max).exp() / total))
        .collect()
}

#[test]
fn label_probabilities_are_averaged_over_the_orders() {
    // SmolLM2, whose spam/ham answer moves with the order of the list (a tiny random model's
    // label probabilities are 1 and 1e-27 whatever the order).
    let f = Fixture::smollm2();
    let data = sms(&f, 12);
    let ham_first = config(&f, "a.json", &["ham", "spam"], serde_json::json!({}));
    let spam_first = config(&f, "b.json", &["spam", "ham"], serde_json::json!({}));
    let run = |config: &PathBuf, out: &str, extra: &[&str]| {
        let out = f.dir.path().join(out);
        let o = f.run(config, &data, &out, extra);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        out
    };
    let a = logprobs(&run(&ham_first, "a.csv", &[]));
    let b = logprobs(&run(&spam_first, "b.csv", &[]));
    let both_out = run(&ham_first, "both.csv", &["--label-orders", "2"]);
    let both = logprobs(&both_out);
    let mut moved = 0.0f64;
    for ((a, b), c) in a.iter().zip(&b).zip(&both) {
        let (pa, pb) = (softmax(a), softmax(b));
        for label in ["ham", "spam"] {
            let expected = (pa[label] + pb[label]) / 2.0;
            let got = c[label].exp();
            assert!(
                (expected - got).abs() < 1e-4 && (expected.ln() - c[label]).abs() < 1e-3,
                "{label}: {expected} vs {got}"
            );
        }
        // The orders give the tiny model different log-odds.
        moved = moved.max(((a["ham"] - a["spam"]) - (b["ham"] - b["spam"])).abs());
    }
    assert!(
        moved > 0.1,
        "the order changes the model's log-odds: {moved}"
    );
    let rows = read_csv(&both_out);
    for r in &rows {
        let lp: HashMap<String, f64> =
            serde_json::from_str(&r["Spam_task_label_logprobs"]).unwrap();
        let best = if lp["ham"] >= lp["spam"] {
            "ham"
        } else {
            "spam"
        };
        assert_eq!(r["Spam_task_label"], best);
    }

    // A resumed run and two shards give the same bytes.
    let before = std::fs::read(&both_out).unwrap();
    let o = f.run(&ham_first, &data, &both_out, &["--label-orders", "2"]);
    assert!(
        text(&o).contains("12 rows came from the journal"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&both_out).unwrap(), before);
    let sharded = f.dir.path().join("sharded.csv");
    for i in 0..2 {
        let shard = format!("{i}/2");
        let o = f.run(
            &ham_first,
            &data,
            &sharded,
            &[
                "--label-orders",
                "2",
                "--batch-size",
                "3",
                "--shard",
                &shard,
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
        .args(["merge", "--out", sharded.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let unsharded = f.dir.path().join("unsharded.csv");
    let o = f.run(
        &ham_first,
        &data,
        &unsharded,
        &["--label-orders", "2", "--batch-size", "3"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        std::fs::read(&sharded).unwrap() == std::fs::read(&unsharded).unwrap(),
        "the merged shards differ from the unsharded run"
    );
}

#[test]
fn orders_that_cannot_differ_are_refused() {
    let f = Fixture::new();
    let data = sms(&f, 3);
    let plain = config(&f, "a.json", &["ham", "spam"], serde_json::json!({}));
    let out = f.dir.path().join("out.csv");
    let refused = |config: &PathBuf, k: &str, expected: &str| {
        let o = f.run(config, &data, &out, &["--label-orders", k]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(expected), "{}", text(&o));
    };
    refused(&plain, "3", "there are only 2 labels");
    refused(&plain, "0", "--label-orders must be at least 1");
    let unlisted = config(
        &f,
        "b.json",
        &["ham", "spam"],
        serde_json::json!({"task_guidelines": "Is this SMS spam?"}),
    );
    refused(&unlisted, "2", "do not list the labels");
    let cot = config(
        &f,
        "c.json",
        &["ham", "spam"],
        serde_json::json!({"chain_of_thought": true}),
    );
    refused(&cot, "2", "with prompt.chain_of_thought is not supported");
}
