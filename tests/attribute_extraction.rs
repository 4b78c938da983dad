//! Attribute extraction from the command line on real product titles (examples/product_attributes,
//! built from Walmart-Amazon): with tiny random-weight models every answer holds every attribute
//! with a value its kind allows (an option, an ordered subset of options, runs of the title, one
//! line of text, an integer under a JSON schema), each attribute's confidence equals the
//! geometric mean of its value's token probabilities as the exact scorer gives them, a rerun
//! comes from the journal byte for byte, `calibrate` fits the values' confidence, and bad
//! attributes and ground truth get messages naming the key or row.

mod common;

use autolabel_local::tasks::attribute_values::answer_grammar;
use autolabel_local::tasks::attributes::parse_attributes;
use autolabel_models::generation::{generate, ConstraintCompiler, GenerationRequest, Grammar};
use autolabel_models::tokenization::token_env::token_env;
use autolabel_models::{LoadOptions, LocalModel, ScoreRequest};
use candle_core::Device;
use common::{read_csv, text, token_ids, Fixture};
use std::path::{Path, PathBuf};

const TASK: &str = "Products";
const TAGS: [&str; 4] = ["wireless", "black", "usb", "color"];

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/product_attributes")
        .join(rel)
}

/// The first `n` rows of the example's test file.
fn titles(f: &Fixture, n: usize) -> PathBuf {
    let mut r = csv::Reader::from_path(example("test.csv")).unwrap();
    let name = format!("titles{n}.csv");
    let mut w = csv::Writer::from_path(f.dir.path().join(&name)).unwrap();
    w.write_record(r.headers().unwrap()).unwrap();
    for rec in r.records().take(n) {
        w.write_record(&rec.unwrap()).unwrap();
    }
    w.flush().unwrap();
    f.dir.path().join(name)
}

/// The example's config with one attribute of every kind added.
fn all_kinds(f: &Fixture) -> PathBuf {
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example("config.json")).unwrap()).unwrap();
    c["task_name"] = TASK.into();
    let attrs = c["prompt"]["attributes"].as_array_mut().unwrap();
    attrs.extend([
        serde_json::json!({"name": "tags", "description": "Tags.", "options": TAGS, "task_type": "multilabel_classification"}),
        serde_json::json!({"name": "words", "description": "Notable words."}),
        serde_json::json!({"name": "summary", "description": "A short summary.", "task_type": "text", "max_tokens": 6}),
        serde_json::json!({"name": "pack", "description": "How many items.", "schema": "{\"type\": \"integer\", \"minimum\": 0, \"maximum\": 99}"}),
    ]);
    f.file("all_kinds.json", &c.to_string())
}

fn categories() -> Vec<String> {
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example("config.json")).unwrap()).unwrap();
    c["prompt"]["attributes"][1]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect()
}

/// Checks every row of an all-kinds output; returns how many rows chose several tags.
fn check_rows(out: &Path) -> usize {
    let categories = categories();
    let mut several = 0;
    for r in read_csv(out) {
        assert_eq!(
            r[&format!("{TASK}_task_successfully_labeled")],
            "True",
            "{r:?}"
        );
        let title = &r["title"];
        let label: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r[&format!("{TASK}_task_label")]).unwrap();
        let keys: Vec<&str> = label.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["brand", "category", "tags", "words", "summary", "pack"]
        );
        let brand = &r["brand_label"];
        assert!(
            title.contains(brand.as_str()),
            "brand {brand:?} in {title:?}"
        );
        assert!(categories.contains(&r["category_label"]), "{r:?}");
        let tags: Vec<&str> = r["tags_label"].split(';').collect();
        let at: Vec<usize> = tags
            .iter()
            .map(|t| TAGS.iter().position(|x| x == t).expect("an option"))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "order: {tags:?}");
        several += (tags.len() > 1) as usize;
        let words: Vec<String> = serde_json::from_str(&r["words_label"]).unwrap();
        for w in &words {
            assert!(
                !w.is_empty() && title.contains(w.as_str()),
                "{w:?} in {title:?}"
            );
        }
        assert!(!r["summary_label"].contains('\n'));
        let pack: i64 = r["pack_label"].parse().expect("an integer");
        assert!((0..=99).contains(&pack), "{pack}");
        for a in ["brand", "category", "tags", "words", "summary", "pack"] {
            let p: f64 = r[&format!("{a}_confidence")].parse().unwrap();
            assert!(p > 0.0 && p <= 1.0, "{a}: {p}");
        }
    }
    several
}

#[test]
fn every_kind_of_attribute_stays_in_its_grammar_across_random_models() {
    let mut several = 0;
    for seed in [1, 2, 3, 4, 5, 6] {
        let f = Fixture::with_seed(Some(seed));
        let config = all_kinds(&f);
        let data = titles(&f, 6);
        let out = f.dir.path().join("out.csv");
        let o = f.run(&config, &data, &out, &[]);
        assert!(o.status.success(), "{}", text(&o));
        several += check_rows(&out);
    }
    assert!(several > 0, "some weights choose several tags");
}

#[test]
fn each_attribute_confidence_is_its_value_tokens_mean_probability_and_reruns_are_identical() {
    let f = Fixture::new();
    let config = all_kinds(&f);
    let data = titles(&f, 8);
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &["--no-chat-template"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("| brand | span | 8 |") && t.contains("| category | classification | 8 |"),
        "per-attribute metrics: {t}"
    );
    assert!(
        t.contains("'brand' values by confidence:")
            && t.contains("'category' values by confidence:"),
        "a threshold table per attribute: {t}"
    );
    assert!(
        t.contains("no column for attributes tags, words, summary, pack"),
        "{t}"
    );
    check_rows(&out);
    let rows = read_csv(&out);

    // The prompts as the run prepares them, then the engine and the scorer called directly.
    let (_, requests) = f.plan_requests(&config, &data, &["--no-chat-template"]);
    let cfg = autolabel_local::config::TaskConfig::load(&config).unwrap();
    let attributes = parse_attributes(&cfg, ";").unwrap();
    let model = LocalModel::load(&f.model, &Device::Cpu, &LoadOptions::default()).unwrap();
    let end = model.encode("\n").unwrap()[0];
    let env = token_env(&model.tokenizer, model.scorer.vocab_size(), &[end]).unwrap();
    let compiler = ConstraintCompiler::new(&env).unwrap();
    for (r, row) in requests.iter().zip(&rows) {
        let prompt = token_ids(&r["prompt_ids"]);
        let grammar = Grammar::Lark(answer_grammar(&attributes, ";", &row["title"]));
        let g = generate(
            model.scorer.as_ref(),
            &[GenerationRequest {
                prompt: prompt.clone(),
                max_new_tokens: 400,
            }],
            vec![Some(compiler.matcher(&grammar).unwrap())],
            &[end],
        )
        .unwrap()
        .remove(0);
        let answer = g.answer_tokens().to_vec();
        let mut candidate = answer.clone();
        candidate.push(end);
        let scored = model
            .scorer
            .score_batch(&[ScoreRequest {
                prompt,
                candidates: vec![candidate],
            }])
            .unwrap();
        let lps = &scored[0].token_logprobs[0];
        // Each token's bytes in the answer text.
        let mut spans = Vec::new();
        let mut at = 0;
        for t in &answer {
            let n = env.tok_trie().decode(&[*t]).len();
            spans.push((at, at + n));
            at += n;
        }
        let said = String::from_utf8(env.tok_trie().decode(&answer)).unwrap();
        // Each value's bytes: after its key, up to the next key or the closing brace.
        for (i, a) in attributes.iter().enumerate() {
            let key = format!("\"{}\": ", a.name);
            let start = said.find(&key).unwrap() + key.len();
            let end = match attributes.get(i + 1) {
                Some(next) => said.find(&format!(", \"{}\": ", next.name)).unwrap(),
                None => said.len() - 1,
            };
            let over: Vec<f64> = spans
                .iter()
                .zip(lps)
                .filter(|((s, e), _)| *s < end && *e > start)
                .map(|(_, lp)| *lp as f64)
                .collect();
            let expected = (over.iter().sum::<f64>() / over.len() as f64).exp();
            let got: f64 = row[&format!("{}_confidence", a.name)].parse().unwrap();
            assert!(
                (expected - got).abs() < 1e-4 * expected.max(1e-3),
                "line {}: {} {expected} vs {got} in {said}",
                r["line"],
                a.name
            );
        }
    }

    let before = std::fs::read(&out).unwrap();
    let o = f.run(
        &config,
        &data,
        &out,
        &["--no-chat-template", "--batch-size", "3"],
    );
    assert!(
        text(&o).contains("8 rows came from the journal"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);
}

#[test]
fn calibrate_fits_the_values_confidence_and_run_applies_it() {
    let f = Fixture::new();
    let config = example("config.json");
    let seed = example("seed.csv");
    let cal = f.dir.path().join("cal.json");
    // A random model is rarely right: a target it can reach, so a threshold is chosen.
    let o = f.calibrate(&config, &seed, &cal, &["--target-accuracy", "0.05"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("80 values on"), "{t}");
    assert!(
        t.contains("per attribute") && t.contains("  brand: a = "),
        "{t}"
    );
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
    let groups: Vec<(String, u64)> = file["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["units"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        [("brand".to_string(), 40), ("category".to_string(), 40)]
    );
    let cal_text = t;
    let data = titles(&f, 5);
    let out = f.dir.path().join("out.csv");
    let o = f.run(
        &config,
        &data,
        &out,
        &["--calibration", cal.to_str().unwrap()],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("calibrated value probability per attribute (brand: sigmoid("),
        "{t}"
    );
    let platt = |name: &str| {
        let g = file["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap();
        (
            g["platt"]["a"].as_f64().unwrap(),
            g["platt"]["b"].as_f64().unwrap(),
        )
    };
    // Each attribute's value is calibrated with its own scaling: the raw probability is the
    // geometric mean the uncalibrated run writes.
    let plain = f.dir.path().join("plain.csv");
    let o = f.run(&config, &data, &plain, &[]);
    assert!(o.status.success(), "{}", text(&o));
    for (r, raw) in read_csv(&out).iter().zip(read_csv(&plain)) {
        for a in ["brand", "category"] {
            let (pa, pb) = platt(a);
            let p: f64 = raw[&format!("{a}_confidence")].parse().unwrap();
            let want = 1.0 / (1.0 + (-(pa * p.max(1e-12).ln() + pb)).exp());
            let got: f64 = r[&format!("{a}_confidence")].parse().unwrap();
            assert!(
                (want - got).abs() < 1e-5 * want.max(1e-6) + 1e-9,
                "{a}: {want} vs {got}"
            );
        }
    }
    // A calibration fitted for other attributes is refused.
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["prompt"]["attributes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "color", "task_type": "text"}));
    let other = f.file("other.json", &c.to_string());
    let o = f.run(
        &other,
        &data,
        &out,
        &["--calibration", cal.to_str().unwrap()],
    );
    assert!(
        text(&o).contains("was made for the groups [\"brand\", \"category\"]"),
        "{}",
        text(&o)
    );
    for r in read_csv(&out) {
        assert!(
            r.contains_key("ProductAttributes_task_confidently_labeled"),
            "{cal_text}\n{t}"
        );
        let p: f64 = r["category_confidence"].parse().unwrap();
        assert!((0.0..=1.0).contains(&p));
    }
}

#[test]
fn bad_attributes_and_ground_truth_are_named() {
    let f = Fixture::new();
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example("config.json")).unwrap()).unwrap();
    let data = f.file(
        "d.csv",
        "title,brand,category\nsony 16gb sd card,sony,usb flash drives\nhp laser toner,hp,toner\n",
    );
    let out = f.dir.path().join("out.csv");
    let o = f.run(&example("config.json"), &data, &out, &[]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("line 3: column 'category': 'toner' is not one of the options of 'category'"),
        "{t}"
    );
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "options",
            "a,b".into(),
            "prompt.attributes[1] ('category').options' is not a list",
        ),
        ("options", serde_json::json!([]), "is an empty list"),
        (
            "task_type",
            "text".into(),
            "has options and task_type 'text'",
        ),
        ("task_type", "date".into(), "task_type' is 'date'"),
        ("schema", "{\"type\": ".into(), "schema' is not JSON"),
    ];
    for (key, value, want) in cases {
        let mut c = base.clone();
        c["prompt"]["attributes"][1][key] = value;
        let o = f.run(&f.file("bad.json", &c.to_string()), &data, &out, &[]);
        let t = text(&o);
        assert!(
            !o.status.success() && t.contains(want) && t.contains("bad.json"),
            "{key}: {t}"
        );
    }
    let mut c = base.clone();
    c["dataset"].as_object_mut().unwrap().remove("text_column");
    let o = f.run(&f.file("notext.json", &c.to_string()), &data, &out, &[]);
    let t = text(&o);
    assert!(
        t.contains("'dataset.text_column' is missing; attribute 'brand' (span)"),
        "{t}"
    );
    // A T5 vocabulary has no '{': every row says so in one line instead of a parser dump.
    let t5 = Fixture::with_model(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/hf/tiny-flan-t5"),
    );
    let o = t5.run(&example("config.json"), &data, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    for r in read_csv(&out) {
        let e = &r["ProductAttributes_task_error"];
        assert!(
            e.contains("requires \"{\" next and the model's vocabulary has no token for it")
                && !e.contains('\n'),
            "{e}"
        );
    }
}

/// The example's config with only attributes whose generated text is kept as it is (an option,
/// options, an integer): a given answer equal to the generated one is spelled the same.
fn exact_kinds(f: &Fixture) -> PathBuf {
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(example("config.json")).unwrap()).unwrap();
    c["task_name"] = TASK.into();
    let category = c["prompt"]["attributes"][1].clone();
    c["prompt"]["attributes"] = serde_json::json!([
        category,
        {"name": "tags", "description": "Tags.", "options": TAGS, "task_type": "multilabel_classification"},
        {"name": "pack", "description": "How many items.", "schema": {"type": "integer", "minimum": 0, "maximum": 99}},
    ]);
    f.file("exact_kinds.json", &c.to_string())
}

#[test]
fn score_gives_back_the_confidences_run_wrote_for_its_own_answers() {
    let f = Fixture::new();
    let config = exact_kinds(&f);
    let data = titles(&f, 8);
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &["--batch-size", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    let scored = f.dir.path().join("scored.csv");
    let o = f.score(
        &config,
        &out,
        &format!("{TASK}_task_label"),
        &scored,
        &["--batch-size", "1"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("scored 8/8 given answers"), "{t}");
    // With ground truth for category: the given values judged, AUROC printed.
    assert!(t.contains("given values"), "{t}");
    let close = |a: &str, b: &str| {
        let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
        (a - b).abs() <= 1e-5 * a.abs().max(b.abs()).max(1e-6)
    };
    for r in read_csv(&scored) {
        assert!(
            close(
                &r[&format!("{TASK}_task_given_label_prob")],
                &r[&format!("{TASK}_task_confidence")]
            ),
            "{r:?}"
        );
        for a in ["category", "tags", "pack"] {
            assert_eq!(
                r[&format!("{TASK}_task_given_{a}_label")],
                r[&format!("{a}_label")]
            );
            assert!(
                close(
                    &r[&format!("{TASK}_task_given_{a}_confidence")],
                    &r[&format!("{a}_confidence")]
                ),
                "{a}: {r:?}"
            );
        }
    }
}

#[test]
fn score_reads_given_attribute_values_and_names_bad_ones() {
    let f = Fixture::new();
    let config = example("config.json");
    let data = f.file(
        "given.csv",
        concat!(
            "title,brand,category,given\n",
            "sony 16gb usb flash drive,sony,usb flash drives,\"{\"\"brand\"\": \"\"sony\"\", \"\"category\"\": \"\"usb flash drives\"\"}\"\n",
            "hp 564 ink cartridge,hp,inkjet printer ink,\"{\"\"brand\"\": \"\"canon\"\", \"\"category\"\": \"\"mice\"\"}\"\n",
            "hp 564 ink cartridge,hp,inkjet printer ink,\"{\"\"brand\"\": \"\"hp\"\", \"\"category\"\": \"\"toner\"\"}\"\n",
            "hp 564 ink cartridge,hp,inkjet printer ink,not json\n",
            // As Autolabel's output files hold a dict label (Python's str()).
            "hp 564 ink cartridge,hp,inkjet printer ink,\"{'brand': 'hp', 'category': 'inkjet printer ink'}\"\n",
        ),
    );
    let scored = f.dir.path().join("scored.csv");
    let o = f.score(&config, &data, "given", &scored, &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    let rows = read_csv(&scored);
    let col = |r: &std::collections::HashMap<String, String>, c: &str| {
        r[&format!("ProductAttributes_task_given_{c}")].clone()
    };
    assert_eq!(col(&rows[0], "brand_label"), "sony");
    let p: f64 = col(&rows[0], "brand_confidence").parse().unwrap();
    assert!(p > 0.0 && p <= 1.0);
    assert!(
        col(&rows[1], "error").contains("\"canon\" of 'brand' is not in the text"),
        "{rows:?}"
    );
    assert!(
        col(&rows[2], "error").contains("'toner' is not one of the options of 'category'"),
        "{rows:?}"
    );
    assert!(
        col(&rows[3], "error").contains("line 5: the given label is not a JSON object"),
        "{rows:?}"
    );
    assert_eq!(col(&rows[4], "error"), "", "{rows:?}");
    assert_eq!(col(&rows[4], "brand_label"), "hp");
    assert_eq!(col(&rows[4], "category_label"), "inkjet printer ink");
}
