//! Multiple-choice QA (Autolabel's sciq config: `question_answering` with an `options` column)
//! from the command line on a tiny random-weight model over real sciq rows: every answer is one
//! of its row's options, accuracy is reported, a row with unreadable options is reported by line,
//! `calibrate` fits a temperature over per-row options, and `score` gives the probability of an
//! answer given elsewhere.

mod common;

use common::{read_csv, shared, text, Fixture};
use std::path::PathBuf;

const TASK: &str = "ScienceQuestionAnswering";

fn sciq_config(f: &Fixture) -> PathBuf {
    let config = shared("autolabel_configs/examples_configs_HEAD/config_sciq.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
    // The seed path is relative to Autolabel's repository; point it at the shared copy.
    c["prompt"]["few_shot_examples"] = shared("autolabel_sciq/seed.csv").to_str().unwrap().into();
    c["prompt"]["few_shot_num"] = 2.into();
    f.file("sciq.json", &c.to_string())
}

#[test]
fn every_answer_is_one_of_its_rows_options() {
    let f = Fixture::new();
    let config = sciq_config(&f);
    let data = f.head("autolabel_sciq/test.csv", 12, "sciq.csv");
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &[]);
    let t = text(&o);
    assert!(o.status.code().is_some_and(|c| c == 0 || c == 2), "{t}");
    assert!(t.contains("completion_rate"), "{t}");
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 12);
    for r in &rows {
        assert_eq!(
            r[&format!("{TASK}_task_successfully_labeled")],
            "True",
            "{r:?}"
        );
        let options =
            autolabel_local::tasks::multiple_choice::parse_options(&r["options"]).unwrap();
        let label = &r[&format!("{TASK}_task_label")];
        assert!(options.contains(label), "{label:?} not among {options:?}");
        let c: f64 = r[&format!("{TASK}_task_confidence")].parse().unwrap();
        assert!(
            (0.0..=1.0).contains(&c) && c >= 1.0 / options.len() as f64 - 1e-6,
            "{c}"
        );
    }
}

#[test]
fn unreadable_options_are_reported_by_line_and_calibration_fits_a_temperature() {
    let f = Fixture::new();
    let config = sciq_config(&f);
    let data = f.file(
        "bad.csv",
        "question,answer,options\n\
         What do plants make sugar from?,carbon dioxide,\"['carbon dioxide', 'nitrogen', 'salt']\"\n\
         Which is a gas?,oxygen,oxygen or iron\n\
         What is water made of?,hydrogen and oxygen,[]\n",
    );
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &[]);
    let t = text(&o);
    assert!(
        t.contains("line 3: column 'options': not a list of options"),
        "{t}"
    );
    assert!(
        t.contains("line 4: column 'options': the option list is empty"),
        "{t}"
    );
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 3, "rows that cannot be labeled are kept");
    assert_eq!(
        rows[0][&format!("{TASK}_task_successfully_labeled")],
        "True"
    );
    assert_eq!(
        rows[1][&format!("{TASK}_task_successfully_labeled")],
        "False"
    );

    let seed = f.head("autolabel_sciq/seed.csv", 24, "seed.csv");
    let cal = f.dir.path().join("sciq.calibration.json");
    let calibrate = |extra: &[&str]| f.calibrate(&config, &seed, &cal, extra);
    let o = calibrate(&["--fit", "bias"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--fit bias needs a fixed label set"),
        "{}",
        text(&o)
    );
    let o = calibrate(&["--target-accuracy", "0.0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("temperature:"), "{}", text(&o));
    let test = f.head("autolabel_sciq/test.csv", 6, "sciq.csv");
    let o = f.run(
        &config,
        &test,
        &out,
        &["--calibration", cal.to_str().unwrap()],
    );
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&o)
    );
    assert!(read_csv(&out)[0].contains_key(&format!("{TASK}_task_confidently_labeled")));

    // `score`: the probability of an answer given elsewhere, among that row's options.
    let scored = f.dir.path().join("scored.csv");
    let o = f.command(&[
        "score",
        "--config",
        config.to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--label-column",
        "answer",
        "--out",
        scored.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for r in read_csv(&scored) {
        let p: f64 = r[&format!("{TASK}_task_given_label_prob")].parse().unwrap();
        assert!((0.0..=1.0).contains(&p), "{r:?}");
    }
}
