//! Label-free debiasing (`--debias content-free`) from the command line on real rows: with a tiny
//! random model (the prior is computed, divided out and recorded by calibrate; it is refused
//! where there is no label set) and with SmolLM2, whose spam/ham answers are dominated by its
//! label prior.

mod common;
use common::{read_csv, shared, text, Fixture};
use std::path::PathBuf;

fn sms(f: &Fixture, rows: usize) -> PathBuf {
    // The SMS file is a TSV without quoting; a CSV copy of its first rows with a header.
    let raw = std::fs::read_to_string(shared("sms_spam/SMSSpamCollection.tsv")).unwrap();
    let mut w = csv::Writer::from_path(f.dir.path().join("sms.csv")).unwrap();
    let mut lines = raw.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    w.write_record(&header).unwrap();
    for l in lines.take(rows) {
        w.write_record(l.splitn(2, '\t')).unwrap();
    }
    w.flush().unwrap();
    f.dir.path().join("sms.csv")
}

fn config(f: &Fixture) -> PathBuf {
    let mut c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/sms_spam/config.json"
        ))
        .unwrap(),
    )
    .unwrap();
    c["dataset"] = serde_json::json!({"label_column": "Label"});
    f.file("sms.json", &c.to_string())
}

fn accuracy(rows: &[std::collections::HashMap<String, String>]) -> f64 {
    rows.iter()
        .filter(|r| r["Label"] == r["SmsSpam_task_label"])
        .count() as f64
        / rows.len() as f64
}

#[test]
fn the_content_free_prior_is_divided_out_recorded_and_refused_without_a_label_set() {
    let f = Fixture::new();
    let data = sms(&f, 40);
    let config = config(&f);
    let plain = f.dir.path().join("plain.csv");
    let o = f.run(&config, &data, &plain, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let debiased = f.dir.path().join("debiased.csv");
    let o = f.run(&config, &data, &debiased, &["--debias", "content-free"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("content-free label prior (divided out of every row): "),
        "{t}"
    );
    assert!(
        t.contains("content-free prior divided out, uncalibrated"),
        "{t}"
    );
    // The prior's two probabilities, as printed, sum to one.
    let line = t.lines().find(|l| l.contains("label prior")).unwrap();
    let probs: Vec<f64> = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|p| p.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(probs.len(), 2);
    assert!((probs.iter().sum::<f64>() - 1.0).abs() < 2e-3, "{line}");
    // Dividing the prior out moves every row's log-odds of spam by the same constant: the
    // debiased log-odds (from the confidence) minus the model's (from the raw log-prob column).
    let (a, b) = (read_csv(&plain), read_csv(&debiased));
    let shifts: Vec<f64> = b
        .iter()
        .filter_map(|r| {
            let p: f64 = r["SmsSpam_task_confidence"].parse().unwrap();
            let p_spam = if r["SmsSpam_task_label"] == "spam" {
                p
            } else {
                1.0 - p
            };
            let raw: serde_json::Value =
                serde_json::from_str(&r["SmsSpam_task_label_logprobs"]).unwrap();
            let raw = raw["spam"].as_f64()? - raw["ham"].as_f64()?;
            (p < 0.99).then(|| (p_spam / (1.0 - p_spam)).ln() - raw)
        })
        .collect();
    assert!(shifts.len() >= 10, "{shifts:?}");
    let (lo, hi) = shifts
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &s| (l.min(s), h.max(s)));
    assert!(hi - lo < 1e-3, "the shift is not one constant: {lo}..{hi}");
    let (ham, spam) = (probs_for(line, "ham"), probs_for(line, "spam"));
    assert_eq!(
        lo < 0.0,
        spam > ham,
        "the favoured label is pushed down: {lo}, {line}"
    );
    if ham.min(spam) > 0.01 {
        let expected = (ham / spam).ln();
        assert!(
            (lo - expected).abs() < 0.05 * expected.abs().max(0.1),
            "shift {lo} vs ln(P(ham)/P(spam)) {expected}: {line}"
        );
    }
    // The raw log-prob columns are the model's, untouched.
    assert_eq!(
        a[0]["SmsSpam_task_label_logprobs"],
        b[0]["SmsSpam_task_label_logprobs"]
    );

    // calibrate --debias records the prior; run --calibration applies it without --debias.
    let cal = f.dir.path().join("cal.json");
    let o = f.command(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--calibration",
        cal.to_str().unwrap(),
        "--debias",
        "content-free",
        "--no-plots",
        "--target-accuracy",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("inputs scored: \"N/A\""), "{}", text(&o));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    assert_eq!(
        c["adjustment"]["debias"].as_array().unwrap().len(),
        2,
        "{c}"
    );
    let o = f.run(
        &config,
        &data,
        &f.dir.path().join("cal.csv"),
        &["--calibration", cal.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("content-free prior divided out, temperature"),
        "{}",
        text(&o)
    );

    // Refused: a calibration fitted without it, an unknown method, tasks without a label set.
    let plain_cal = f.dir.path().join("plain_cal.json");
    let o = f.command(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--calibration",
        plain_cal.to_str().unwrap(),
        "--no-plots",
        "--target-accuracy",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = f.run(
        &config,
        &data,
        &f.dir.path().join("x.csv"),
        &[
            "--calibration",
            plain_cal.to_str().unwrap(),
            "--debias",
            "content-free",
        ],
    );
    assert!(
        text(&o).contains("was fitted without debiasing"),
        "{}",
        text(&o)
    );
    let o = f.run(
        &config,
        &data,
        &f.dir.path().join("x.csv"),
        &["--debias", "contextual"],
    );
    assert!(
        text(&o).contains("--debias 'contextual' is not a method; the one there is: content-free"),
        "{}",
        text(&o)
    );
    let sciq = zero_shot(
        &f,
        "autolabel_configs/examples_configs_HEAD/config_sciq.json",
        "sciq.json",
    );
    let sciq_data = f.head("autolabel_sciq/test.csv", 3, "sciq.csv");
    let o = f.run(
        &sciq,
        &sciq_data,
        &f.dir.path().join("x.csv"),
        &["--debias", "content-free"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("--debias needs a fixed label set"),
        "{}",
        text(&o)
    );
    let conll = zero_shot(
        &f,
        "autolabel_configs/benchmark_configs_HEAD/conll2003.json",
        "conll.json",
    );
    let conll_data = f.head("autolabel_conll2003/test_head_small.csv", 2, "conll.csv");
    let o = f.run(
        &conll,
        &conll_data,
        &f.dir.path().join("x.csv"),
        &["--debias", "content-free"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("there is none to divide out"),
        "{}",
        text(&o)
    );
}

/// A shared Autolabel config without its few-shot keys, written into the fixture.
fn zero_shot(f: &Fixture, rel: &str, name: &str) -> PathBuf {
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared(rel)).unwrap()).unwrap();
    for k in ["few_shot_examples", "few_shot_num", "few_shot_selection"] {
        c["prompt"].as_object_mut().unwrap().remove(k);
    }
    f.file(name, &c.to_string())
}

fn probs_for(line: &str, label: &str) -> f64 {
    line.split(": ")
        .nth(1)
        .unwrap()
        .split(", ")
        .find(|p| p.starts_with(&format!("{label} ")))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// SmolLM2 answers "spam" for most ordinary SMS (its label prior); dividing the content-free
/// prior out must raise its accuracy on 150 real rows, with no labeled data (0.173 -> 0.327).
/// Run in f32: with `--dtype q` SmolLM2's Q4_1 label log-probs carry ~0.15 nats of
/// quantization noise that any change of float order re-draws (two builds whose attention sums
/// differ in the last bits: 0.18 nats apart on these rows, each as far from f32), and the
/// debiased accuracy with it (0.347 and 0.253, plain 0.173 in both); f32 builds agree to 3e-5.
#[test]
fn debiasing_lifts_smollm2_on_real_sms() {
    let f = Fixture::smollm2();
    let data = sms(&f, 150);
    let config = config(&f);
    let plain = f.dir.path().join("plain.csv");
    let o = f.run(&config, &data, &plain, &["--dtype", "f32"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let debiased = f.dir.path().join("debiased.csv");
    let o = f.run(
        &config,
        &data,
        &debiased,
        &["--debias", "content-free", "--dtype", "f32"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (a, b) = (accuracy(&read_csv(&plain)), accuracy(&read_csv(&debiased)));
    eprintln!(
        "SmolLM2 on 150 SMS: accuracy {a:.3} plain, {b:.3} debiased; {}",
        text(&o)
    );
    assert!(b >= a + 0.1, "debiased {b:.3} vs plain {a:.3}");
}

/// `calibrate` (default `--fit auto`) says which fit it chose and why; a target accuracy no
/// subset of the seed rows reached labels every row, marked not confidently labeled, instead of
/// failing the run.
#[test]
fn fit_auto_explains_its_choice_and_an_unreachable_target_marks_every_row() {
    let f = Fixture::new();
    let data = sms(&f, 40);
    let config = config(&f);
    let cal = f.dir.path().join("cal.json");
    let o = f.command(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--calibration",
        cal.to_str().unwrap(),
        "--no-plots",
        "--target-accuracy",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("--fit auto chose ") && t.contains("lowest cross-validated NLL"),
        "{t}"
    );
    let o = f.command(&[
        "calibrate",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--fit",
        "platt",
    ]);
    assert!(
        text(&o).contains("must be auto, temperature or bias"),
        "{}",
        text(&o)
    );

    // A calibration whose seed rows never reached more than 0.6 accuracy at any threshold.
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    for curve in c["curves"].as_object_mut().unwrap().values_mut() {
        for p in curve.as_array_mut().unwrap() {
            let a = p["accuracy"].as_f64().unwrap().min(0.6);
            p["accuracy"] = a.into();
        }
    }
    std::fs::write(&cal, c.to_string()).unwrap();
    let out = f.dir.path().join("out.csv");
    let o = f.run(
        &config,
        &data,
        &out,
        &[
            "--calibration",
            cal.to_str().unwrap(),
            "--target-accuracy",
            "0.9",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("every row is labeled with confidently_labeled = False"),
        "{}",
        text(&o)
    );
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 40);
    assert!(rows
        .iter()
        .all(|r| r["SmsSpam_task_confidently_labeled"] == "False"
            && !r["SmsSpam_task_label"].is_empty()));
}
