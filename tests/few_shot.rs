//! Few-shot selection with local embeddings on real data: which seed examples each row is shown
//! (semantic similarity puts a row's own copy first, label diversity shows every label), the
//! on-disk embedding cache, and clear messages for bad seed sets and embedding models.

mod common;

use autolabel_local::config::TaskConfig;
use autolabel_local::dataset::{Dataset, ReadOptions};
use autolabel_local::tasks::build_task;
use common::{shared, text, Fixture};
use std::path::Path;

/// SMS rows (label, text) from the shared copy, from line `from` on.
fn sms(from: usize, n: usize) -> Vec<(String, String)> {
    std::fs::read_to_string(shared("sms_spam/SMSSpamCollection.tsv"))
        .unwrap()
        .lines()
        .skip(from)
        .take(n)
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.to_string(), b.replace('"', ""))
        })
        .collect()
}

fn write_csv(f: &Fixture, name: &str, rows: &[(String, String)]) -> std::path::PathBuf {
    let mut s = String::from("label,text\n");
    for (l, t) in rows {
        s.push_str(&format!("{l},\"{t}\"\n"));
    }
    f.file(name, &s)
}

fn config(f: &Fixture, name: &str, selection: &str, k: usize, seed: &Path) -> std::path::PathBuf {
    let c = serde_json::json!({
        "task_name": "Spam", "task_type": "classification",
        "dataset": {"label_column": "label", "delimiter": ","},
        "embedding": {"model": f.dir.path().join("cache/embeddings/all-minilm-l6-v2")},
        "prompt": {
            "task_guidelines": "Classify the message as one of:\n{labels}",
            "labels": ["ham", "spam"],
            "example_template": "Message: {text}\nLabel: {label}",
            "few_shot_examples": seed, "few_shot_selection": selection, "few_shot_num": k}});
    f.file(name, &c.to_string())
}

/// The seed examples shown in each row's prompt, as (label, text).
fn shown(config: &Path, data: &Path) -> Vec<Vec<(String, String)>> {
    let cfg = TaskConfig::load(config).unwrap();
    let opts = ReadOptions {
        delimiter: Some(b','),
        disable_quoting: false,
        lossy: false,
    };
    let data = Dataset::read(data, &opts).unwrap();
    let task = build_task(&cfg, &data).unwrap();
    data.rows
        .iter()
        .map(|r| {
            let p = task.prompt(&data, r, None);
            let seeds = p.split("provided below:\n\n").nth(1).unwrap();
            let seeds = seeds.split("\n\nNow I want you").next().unwrap();
            seeds
                .split("\n\n")
                .map(|ex| {
                    let (m, l) = ex.rsplit_once("\nLabel: ").unwrap();
                    (l.to_string(), m.trim_start_matches("Message: ").to_string())
                })
                .collect()
        })
        .collect()
}

#[test]
fn selection_by_real_embeddings() {
    let f = Fixture::new();
    f.link_embedding_model();
    let eval = sms(1, 12);
    // The seed set holds 60 other messages and copies of the first six evaluation rows.
    let mut seeds = sms(200, 60);
    seeds.extend(eval[..6].iter().cloned());
    let seed = write_csv(&f, "seed.csv", &seeds);
    let data = write_csv(&f, "data.csv", &eval);

    let semantic = shown(
        &config(&f, "s.json", "semantic_similarity", 3, &seed),
        &data,
    );
    for (i, row) in semantic.iter().enumerate() {
        assert_eq!(row.len(), 3);
        if i < 6 {
            assert_eq!(
                row[0], eval[i],
                "row {i}: its own copy is the most similar example"
            );
        } else {
            assert!(!row.contains(&eval[i]));
        }
    }
    let distinct: std::collections::BTreeSet<_> = semantic.iter().map(|r| r[1].clone()).collect();
    assert!(
        distinct.len() > 3,
        "rows are shown different examples: {distinct:?}"
    );

    let fixed = shown(&config(&f, "f.json", "fixed", 3, &seed), &data);
    assert!(fixed.iter().all(|r| r[..] == seeds[..3]));

    // Label diversity: 4 examples over 2 labels, two of each; "ham" sorts first.
    for sel in ["label_diversity_similarity", "label_diversity_random"] {
        let rows = shown(&config(&f, &format!("{sel}.json"), sel, 4, &seed), &data);
        for r in &rows {
            let labels: Vec<&str> = r.iter().map(|(l, _)| l.as_str()).collect();
            assert_eq!(labels, ["ham", "ham", "spam", "spam"], "{sel}");
        }
        if sel == "label_diversity_similarity" {
            // Row 0 is ham: its copy leads the ham examples.
            assert_eq!(eval[0].0, "ham");
            assert_eq!(rows[0][0], eval[0]);
        }
    }

    // MMR keeps the row's copy first but avoids repeating a near-duplicate of it.
    let mmr = shown(
        &config(&f, "m.json", "max_marginal_relevance", 3, &seed),
        &data,
    );
    for i in 0..6 {
        assert_eq!(mmr[i][0], eval[i]);
    }
}

#[test]
fn cli_run_with_semantic_selection_caches_embeddings() {
    let f = Fixture::new();
    let eval = sms(1, 8);
    let seed = write_csv(&f, "seed.csv", &sms(300, 30));
    let data = write_csv(&f, "data.csv", &eval);
    let cfg = config(&f, "c.json", "semantic_similarity", 2, &seed);
    let out = f.dir.path().join("out.csv");
    let o = f.run(&cfg, &data, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("embedding 8 rows"), "{}", text(&o));
    let cache = f.dir.path().join("cache/embeddings.sqlite");
    let count = |p: &Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM embeddings", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&cache), 38, "30 seed texts and 8 rows, each once");
    // A second run reads them back (same count) and writes the same bytes.
    let out2 = f.dir.path().join("out2.csv");
    let o = f.run(&cfg, &data, &out2, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&cache), 38);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

#[test]
fn bad_seed_sets_and_embedding_models_are_named() {
    let f = Fixture::new();
    let data = write_csv(&f, "data.csv", &sms(1, 3));
    let seed = write_csv(&f, "seed.csv", &sms(300, 5));
    let out = f.dir.path().join("out.csv");
    let fails = |cfg: &Path, want: &[&str]| {
        let o = f.run(cfg, &data, &out, &[]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        for w in want {
            assert!(text(&o).contains(w), "{w}: {}", text(&o));
        }
    };
    // few_shot_num larger than the seed set.
    fails(
        &config(&f, "a.json", "semantic_similarity", 9, &seed),
        &["few_shot_num' is 9", "has 5 examples"],
    );
    // A seed file without the label column.
    let unlabeled = f.file("unlabeled.csv", "text\nhello\nwin a prize\n");
    fails(
        &config(&f, "b.json", "fixed", 1, &unlabeled),
        &["unlabeled.csv", "example 1 has no 'label'"],
    );
    fails(
        &config(&f, "b2.json", "label_diversity_random", 1, &unlabeled),
        &["unlabeled.csv", "'label'"],
    );
    // An unknown algorithm.
    fails(
        &config(&f, "c.json", "nearest", 1, &seed),
        &["few_shot_selection' is 'nearest'", "semantic_similarity"],
    );
    // An embedding model that is not a BERT encoder.
    let llama = f.dir.path().join("llama");
    std::fs::create_dir_all(&llama).unwrap();
    std::fs::write(llama.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let mut c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(config(&f, "d.json", "semantic_similarity", 2, &seed)).unwrap(),
    )
    .unwrap();
    c["embedding"]["model"] = llama.to_str().unwrap().into();
    let d = f.file("d.json", &c.to_string());
    fails(
        &d,
        &[
            "embedding.model",
            "model_type 'llama' is not a BERT encoder",
        ],
    );
    c["embedding"] = serde_json::json!({"model": "no-such-model"});
    let e = f.file("e.json", &c.to_string());
    fails(&e, &["embedding model 'no-such-model'"]);
}

#[test]
fn label_selection_shows_and_scores_each_row_its_most_similar_labels() {
    let f = Fixture::new();
    f.link_embedding_model();
    let data = f.head("banking77/test.csv", 30, "b77.csv");
    let mut c: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/banking77/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    c["prompt"]["label_selection"] = true.into();
    c["prompt"]["label_selection_count"] = 5.into();
    c["embedding"] =
        serde_json::json!({"model": f.dir.path().join("cache/embeddings/all-minilm-l6-v2")});
    let cfg = f.file("ls.json", &c.to_string());
    let out = f.dir.path().join("out.csv");
    let o = f.run(&cfg, &data, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("keep each row's 5 most similar of 77 labels"),
        "{}",
        text(&o)
    );
    let rows = common::read_csv(&out);
    let config = TaskConfig::load(&cfg).unwrap();
    let opts = ReadOptions {
        delimiter: Some(b','),
        disable_quoting: false,
        lossy: false,
    };
    let d = Dataset::read(&data, &opts).unwrap();
    let task = build_task(&config, &d).unwrap();
    let mut kept_truth = 0;
    for (row, r) in d.rows.iter().zip(&rows) {
        let scored: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&r["Banking77_task_label_logprobs"]).unwrap();
        assert_eq!(scored.len(), 5, "five labels scored");
        // The prompt lists exactly the scored labels.
        let prompt = task.prompt(&d, row, None);
        let listed = prompt
            .split("Categories:\n")
            .nth(1)
            .unwrap()
            .split("\n\n")
            .next()
            .unwrap();
        let listed: Vec<&str> = listed.lines().collect();
        assert_eq!(listed.len(), 5, "{prompt}");
        assert!(listed.iter().all(|l| scored.contains_key(*l)));
        assert!(scored.contains_key(&r["Banking77_task_label"]));
        kept_truth += scored.contains_key(&r["category"]) as usize;
    }
    // The embedding's choice is informed: far above the 5/77 a random choice would keep.
    assert!(
        kept_truth >= 12,
        "true label kept for {kept_truth} of 30 rows"
    );
    // No fixed label set: debiasing is refused with the reason.
    let o = f.run(&cfg, &data, &out, &["--debias", "content-free", "--fresh"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("differ per row"), "{}", text(&o));
    c["prompt"]["label_selection_threshold"] = 1.5.into();
    let bad = f.file("bad.json", &c.to_string());
    let o = f.run(&bad, &data, &out, &[]);
    assert!(
        text(&o).contains("label_selection_threshold' is 1.5"),
        "{}",
        text(&o)
    );
}
