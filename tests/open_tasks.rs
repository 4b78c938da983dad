//! Named-entity recognition and extractive QA from the command line on a tiny random-weight
//! model over real rows (CoNLL-2003 and SQuAD 2.0 from ../shared/data): whatever the model
//! says, every answer parses, every entity and answer is copied from its input, spans point at
//! the entity, metrics are printed, a rerun comes from the journal byte for byte, and bad
//! configs and ground truth get messages naming the key, column or row.

mod common;

use common::{read_csv, shared, text, Fixture};
use std::path::Path;

const TYPES: [&str; 4] = ["Location", "Organization", "Person", "Miscellaneous"];

/// Checks every labeled NER row of `out`: the label has the types in order, every entity is in
/// the text, and each entity's span is where the text has it.
fn check_ner_rows(out: &Path, task: &str) -> usize {
    let rows = read_csv(out);
    let mut labeled = 0;
    for r in &rows {
        let text = &r["example"];
        if r[&format!("{task}_task_successfully_labeled")] != "True" {
            assert!(
                r[&format!("{task}_task_error")].contains("did not end"),
                "{r:?}"
            );
            continue;
        }
        labeled += 1;
        let label: serde_json::Value =
            serde_json::from_str(&r[&format!("{task}_task_label")]).unwrap();
        let keys: Vec<&String> = label.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4);
        for t in TYPES {
            for e in label[t].as_array().unwrap() {
                assert!(text.contains(e.as_str().unwrap()), "{e} not in {text:?}");
            }
        }
        let entities: Vec<serde_json::Value> =
            serde_json::from_str(&r[&format!("{task}_task_entities")]).unwrap();
        let chars: Vec<char> = text.chars().collect();
        for e in entities {
            let (s, end) = (
                e["start"].as_i64().unwrap() as usize,
                e["end"].as_i64().unwrap() as usize,
            );
            let span: String = chars[s..end].iter().collect();
            assert_eq!(span, e["text"].as_str().unwrap());
            assert!(TYPES.contains(&e["type"].as_str().unwrap()));
            let c = e["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&c));
        }
    }
    labeled
}

#[test]
fn attribute_extraction_conll_config_runs_unchanged_and_resumes_byte_identical() {
    let f = Fixture::new();
    let config = f.conll_config("conll.json", 2);
    let data = f.head("autolabel_conll2003/test_head_small.csv", 16, "conll.csv");
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &["--batch-size", "4"]);
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&o)
    );
    let t = text(&o);
    assert!(
        t.contains("few-shot selection 'semantic_similarity': embedding 16 rows"),
        "{t}"
    );
    for s in [
        "strict",
        "exact",
        "partial",
        "ent_type",
        "entity confidence threshold",
    ] {
        assert!(t.contains(s), "{s} missing: {t}");
    }
    let labeled = check_ner_rows(&out, "PersonLocationOrgMiscNER");
    assert!(labeled >= 8, "only {labeled} of 16 rows labeled: {t}");
    let first = std::fs::read(&out).unwrap();
    let o = f.run(&config, &data, &out, &["--batch-size", "4"]);
    assert!(
        text(&o).contains("16 rows came from the journal"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        first,
        "a rerun from the journal writes the same bytes"
    );
}

#[test]
fn named_entity_recognition_form_with_json_and_percent_ground_truth() {
    let f = Fixture::new();
    let config = f.file(
        "ner.json",
        r#"{"task_name": "Ner", "task_type": "named_entity_recognition",
            "dataset": {"label_column": "CategorizedLabels", "text_column": "example", "delimiter": ","},
            "model": {"provider": "openai", "name": "gpt-3.5-turbo"},
            "prompt": {"labels": ["Location", "Organization", "Person", "Miscellaneous"],
                       "example_template": "Example: {example}\nOutput:\n{CategorizedLabels}",
                       "few_shot_examples": [{"example": "Ann flew to Rome .", "CategorizedLabels": "{\"Person\": [\"Ann\"], \"Location\": [\"Rome\"]}"}]}}"#,
    );
    let data = f.file(
        "ner.csv",
        "example,CategorizedLabels\n\
         \"SOCCER - JAPAN GET LUCKY WIN , CHINA IN SURPRISE DEFEAT .\",\"{\"\"Location\"\": [\"\"JAPAN\"\"], \"\"Person\"\": [\"\"CHINA\"\"]}\"\n\
         Nadim Ladki,Nadim Ladki%Person\n\
         \"AL-AIN , United Arab Emirates 1996-12-06\",\"AL-AIN%Location\nUnited Arab Emirates%Location\"\n\
         Peter Blackburn,\"{\"\"Person\"\": [\"\"Peter Black\"\", \"\"Mr Nobody\"\"]}\"\n\
         BRUSSELS 1996-08-22,not a label\n",
    );
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &[]);
    let t = text(&o);
    assert!(o.status.code().is_some_and(|c| c == 0 || c == 2), "{t}");
    check_ner_rows(&out, "Ner");
    assert!(
        t.contains("line 7: column 'CategorizedLabels'") && t.contains("left out of the metrics"),
        "{t}"
    );
    assert!(
        t.contains("line 6: ground-truth entity 'Mr Nobody' (Person) is not in the text"),
        "{t}"
    );
    assert!(t.contains("of 4 rows with ground truth"), "{t}");
}

#[test]
fn extractive_answers_are_spans_of_the_context_or_unanswerable() {
    let f = Fixture::new();
    let config = shared("autolabel_configs/examples_configs_HEAD/config_squad_v2.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let prompt = c["prompt"].as_object_mut().unwrap();
    prompt.remove("few_shot_examples");
    prompt.remove("few_shot_num");
    let config = f.file("squad.json", &c.to_string());
    let data = f.head("squad_v2_dev_half/dev_half.csv", 12, "squad.csv");
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &[]);
    let t = text(&o);
    assert!(o.status.code().is_some_and(|c| c == 0 || c == 2), "{t}");
    assert!(
        t.contains("exact_match") && t.contains("completion_rate"),
        "{t}"
    );
    let rows = read_csv(&out);
    let mut answered = 0;
    for r in &rows {
        if r["OpenbookQAWikipedia_task_successfully_labeled"] != "True" {
            continue;
        }
        answered += 1;
        let a = &r["OpenbookQAWikipedia_task_label"];
        assert!(
            a == "unanswerable" || r["context"].contains(a.as_str()),
            "{a:?}"
        );
        let conf: f64 = r["OpenbookQAWikipedia_task_confidence"].parse().unwrap();
        assert!((0.0..=1.0).contains(&conf), "{conf}");
    }
    assert!(answered >= 6, "{answered} of 12 answered: {t}");
}

#[test]
fn bad_open_task_configs_name_the_key() {
    let f = Fixture::new();
    let data = f.head("autolabel_conll2003/test_head_small.csv", 3, "conll.csv");
    let out = f.dir.path().join("out.csv");
    let cases = [
        (
            r#"[{"description": "no name"}]"#,
            "'prompt.attributes[0]' has no 'name'",
        ),
        (
            r#"[{"name": "Person", "task_type": "regression"}]"#,
            "'prompt.attributes[0] ('Person').task_type' is 'regression'",
        ),
        (
            r#"[{"name": "Person", "options": []}]"#,
            "'prompt.attributes[0] ('Person').options' is an empty list",
        ),
        (
            r#"[{"name": "Person"}, {"name": "Person"}]"#,
            "attribute 'Person' appears twice",
        ),
    ];
    for (attrs, want) in cases {
        let config = f.file(
            "bad.json",
            &format!(
                r#"{{"task_name": "T", "task_type": "attribute_extraction", "dataset": {{"text_column": "example"}},
                    "prompt": {{"attributes": {attrs}, "example_template": "Example: {{example}}\nOutput: {{output_dict}}"}}}}"#
            ),
        );
        let o = f.run(&config, &data, &out, &[]);
        assert_eq!(o.status.code(), Some(1), "{attrs}");
        assert!(text(&o).contains(want), "{attrs}: {}", text(&o));
    }
    let config = f.file(
        "notext.json",
        r#"{"task_name": "T", "task_type": "named_entity_recognition", "dataset": {},
            "prompt": {"labels": ["Person"], "example_template": "Example: {example}\nOutput: {label}"}}"#,
    );
    let o = f.run(&config, &data, &out, &[]);
    assert!(
        text(&o).contains("'dataset.text_column' is missing"),
        "{}",
        text(&o)
    );
    // Gold columns that are not JSON lists are reported per row, not fatal.
    let bad = f.file(
        "badgold.csv",
        "example,Location,Organization,Person,Miscellaneous\nJapan won .,Japan,[],[],[]\n",
    );
    let config = f.file(
        "attr.json",
        r#"{"task_name": "T", "task_type": "attribute_extraction", "dataset": {"text_column": "example"},
            "prompt": {"attributes": [{"name": "Location"}, {"name": "Organization"}, {"name": "Person"}, {"name": "Miscellaneous"}],
                       "example_template": "Example: {example}\nOutput: {output_dict}"}}"#,
    );
    let o = f.run(&config, &bad, &out, &[]);
    assert!(
        text(&o).contains("line 2: column 'Location': not a JSON list"),
        "{}",
        text(&o)
    );
}

#[test]
fn score_gives_each_given_entity_its_probability_and_names_unknown_types() {
    let f = Fixture::new();
    let config = f.conll_config("conll.json", 0);
    // The ground truth as Autolabel's NER label (one JSON object), and one unknown type.
    let mut r =
        csv::Reader::from_path(common::shared("autolabel_conll2003/test_head_small.csv")).unwrap();
    let data = f.dir.path().join("given.csv");
    let mut w = csv::Writer::from_path(&data).unwrap();
    let mut header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    header.push("given".into());
    w.write_record(&header).unwrap();
    let mut entities = 0;
    for (i, rec) in r.records().take(6).enumerate() {
        let rec = rec.unwrap();
        let mut given = serde_json::Map::new();
        for (k, t) in ["Location", "Organization", "Person", "Miscellaneous"]
            .iter()
            .enumerate()
        {
            let list: serde_json::Value = serde_json::from_str(&rec[k + 1]).unwrap();
            entities += list.as_array().unwrap().len();
            given.insert(t.to_string(), list);
        }
        if i == 5 {
            given.insert("Weapon".into(), serde_json::json!(["sword"]));
        }
        let mut row: Vec<String> = rec.iter().map(String::from).collect();
        row.push(serde_json::Value::Object(given).to_string());
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    let scored = f.dir.path().join("scored.csv");
    let o = f.score(&config, &data, "given", &scored, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("scored 5/6 given answers"), "{t}");
    assert!(t.contains("given entities ('given')"), "{t}");
    let rows = read_csv(&scored);
    let task = "PersonLocationOrgMiscNER_task_given";
    let mut seen = 0;
    for r in &rows[..5] {
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&r[&format!("{task}_entities")]).unwrap();
        for e in &list {
            // Every given entity is in its sentence: a span and a probability.
            assert!(e["start"].as_i64().unwrap() >= 0, "{e}");
            let p = e["confidence"].as_f64().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{e}");
        }
        seen += list.len();
    }
    assert!(seen > 0 && seen <= entities, "{seen} of {entities}");
    assert!(
        rows[5][&format!("{task}_error")].contains("line 7: the given label has type 'Weapon'"),
        "{:?}",
        rows[5]
    );
}
