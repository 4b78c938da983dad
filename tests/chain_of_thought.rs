//! Chain of thought on real SMS rows with a tiny random model: each row's explanation is what the
//! generation engine gives for that row's prompt under the one-line constraint, and its labels
//! are scored exactly after that explanation (checked against the engine and the scorer called
//! directly); a resumed run reproduces the output; `explain` fills a seed file's explanations,
//! which chain-of-thought prompts then show; seed files without them are refused.

mod common;

use autolabel_models::generation::{generate, ConstraintCompiler, GenerationRequest, Grammar};
use autolabel_models::tokenization::token_env::token_env;
use autolabel_models::{LoadOptions, LocalModel, ScoreRequest};
use candle_core::Device;
use common::{read_csv, shared, text, token_ids, Fixture};
use std::path::PathBuf;

/// The first `n` SMS rows from line `from` on, as a CSV with a header (Label, SMS).
fn sms(f: &Fixture, name: &str, from: usize, n: usize) -> PathBuf {
    let raw = std::fs::read_to_string(shared("sms_spam/SMSSpamCollection.tsv")).unwrap();
    let path = f.dir.path().join(name);
    let mut w = csv::Writer::from_path(&path).unwrap();
    w.write_record(["Label", "SMS"]).unwrap();
    for l in raw.lines().skip(1 + from).take(n) {
        w.write_record(l.splitn(2, '\t')).unwrap();
    }
    w.flush().unwrap();
    path
}

fn config(f: &Fixture, name: &str, seed: Option<&PathBuf>) -> PathBuf {
    let mut c = serde_json::json!({
        "task_name": "Spam", "task_type": "classification",
        "dataset": {"label_column": "Label", "explanation_column": "explanation", "delimiter": ","},
        "prompt": {
            "task_guidelines": "Classify the SMS message as one of:\n{labels}",
            "output_guidelines": "Your answer will consist of an explanation, followed by the correct answer. The last line of the response should always be is JSON format with one key: {\"label\": \"the correct answer\"}.\n",
            "labels": ["ham", "spam"],
            "example_template": "Message: {SMS}\nLabel: Let's think step by step.\n{explanation}\n{Label}",
            "chain_of_thought": true}});
    if let Some(seed) = seed {
        c["prompt"]["few_shot_examples"] = seed.to_str().unwrap().into();
        c["prompt"]["few_shot_num"] = 3.into();
    }
    f.file(name, &c.to_string())
}

#[test]
fn each_row_is_scored_after_its_own_explanation() {
    // Through the chat template (the line may end with a newline before the end of turn) and
    // without (the end token is the newline).
    for chat in [true, false] {
        scored_after_explanations(chat);
    }
}

fn scored_after_explanations(chat: bool) {
    let f = Fixture::new();
    let data = sms(&f, "sms.csv", 0, 9);
    let config = config(&f, "cot.json", None);
    let out = f.dir.path().join("out.csv");
    let mut flags = vec!["--explanation-tokens", "12"];
    if !chat {
        flags.push("--no-chat-template");
    }
    let o = f.run(&config, &data, &out, &flags);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("chain of thought: 9 explanations generated"),
        "{t}"
    );
    let rows = read_csv(&out);
    assert_eq!(rows.len(), 9);

    // The requests as the labeler prepares them: prompts, and the labels as Autolabel writes a
    // chain-of-thought answer, each with the end-of-turn token.
    let (plan, requests) = f.plan_requests(&config, &data, &flags);
    assert!(plan.contains("expl[max_tokens=12]"), "{plan}");

    // The engine and the scorer, called directly.
    let model = LocalModel::load(&f.model, &Device::Cpu, &LoadOptions::default()).unwrap();
    let ids = token_ids;
    let candidates: Vec<Vec<u32>> = requests[0]["candidate_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    let end = *candidates[0].last().unwrap();
    assert_eq!(
        model
            .decode(&candidates[0][..candidates[0].len() - 1])
            .unwrap(),
        r#"{"label": "ham"}"#
    );
    let env = token_env(&model.tokenizer, model.scorer.vocab_size(), &[end]).unwrap();
    let compiler = ConstraintCompiler::new(&env).unwrap();
    let close = if chat { " \"\\n\"?" } else { "" };
    let grammar = Grammar::Lark(format!(
        "start: expl{close}\nexpl[max_tokens=12]: /[^\\n{{][^\\n]*/\n"
    ));
    assert_eq!(
        model.decode(&[end]).unwrap() == "\n",
        !chat,
        "the end token is the newline exactly without the chat template"
    );
    let newline = model.encode("\n").unwrap();
    for (r, row) in requests.iter().zip(&rows) {
        let prompt = ids(&r["prompt_ids"]);
        let g = generate(
            model.scorer.as_ref(),
            &[GenerationRequest {
                prompt: prompt.clone(),
                max_new_tokens: 14,
            }],
            vec![Some(compiler.matcher(&grammar).unwrap())],
            &[end],
        )
        .unwrap()
        .remove(0);
        let answer = g.answer_tokens().to_vec();
        let said = String::from_utf8(env.tok_trie().decode(&answer)).unwrap();
        let explanation = &row["Spam_task_explanation"];
        assert_eq!(said.trim(), explanation, "line {}", r["line"]);
        assert!(!explanation.contains('\n') && !explanation.starts_with('{'));
        let mut after = prompt.clone();
        after.extend(&answer);
        if !said.ends_with('\n') {
            after.extend(&newline);
        }
        let scored = model
            .scorer
            .score_batch(&[ScoreRequest {
                prompt: after,
                candidates: candidates.clone(),
            }])
            .unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&row["Spam_task_label_logprobs"]).unwrap();
        for (label, lp) in ["ham", "spam"].iter().zip(&scored[0].token_logprobs) {
            let expected: f32 = lp.iter().sum();
            let got = written[label].as_f64().unwrap() as f32;
            assert!(
                (expected - got).abs() < 2e-4,
                "line {}: {label} {expected} vs {got}",
                r["line"]
            );
        }
    }

    // A second run takes explanations and scores from the journal and writes the same bytes.
    let before = std::fs::read(&out).unwrap();
    let o = f.run(&config, &data, &out, &flags);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("9 rows came from the journal"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap(), before);

    // Three shards merge to the unsharded run's bytes (each row is explained and scored in the
    // same batch as without shards).
    for i in 0..3 {
        let shard = format!("{i}/3");
        let mut args = flags.clone();
        args.extend(["--shard", shard.as_str()]);
        let o = f.run(&config, &data, &f.dir.path().join("sharded.csv"), &args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let merged = f.dir.path().join("sharded.csv");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_autolabel-local"))
        .args(["merge", "--out", merged.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        std::fs::read(&merged).unwrap() == before,
        "the merged shards differ from the unsharded run"
    );
}

#[test]
fn explain_fills_the_seed_explanations_that_chain_of_thought_shows() {
    let f = Fixture::new();
    let seed = sms(&f, "seed.csv", 100, 5);
    let data = sms(&f, "sms.csv", 0, 4);
    let config = config(&f, "cot.json", Some(&seed));
    // Without explanations the examples cannot be shown the way the template asks.
    let out = f.dir.path().join("out.csv");
    let o = f.run(&config, &data, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("have no explanation in column 'explanation'")
            && text(&o).contains("autolabel-local explain --config"),
        "{}",
        text(&o)
    );

    let explain = |extra: &[&str]| {
        let mut args = vec!["explain", "--config", config.to_str().unwrap()];
        args.extend(extra);
        args.extend(["--explanation-tokens", "10"]);
        f.command(&args)
    };
    let before = read_csv(&seed);
    let o = explain(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("explained 5 examples"), "{}", text(&o));
    let after = read_csv(&seed);
    assert_eq!(after.len(), 5);
    for (a, b) in after.iter().zip(&before) {
        assert_eq!((&a["Label"], &a["SMS"]), (&b["Label"], &b["SMS"]));
        let e = &a["explanation"];
        assert!(!e.trim().is_empty() && !e.contains('\n'), "{e:?}");
    }
    // Explanations already there are kept unless --overwrite.
    let o = explain(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("explained 0 examples") && text(&o).contains("5 kept"),
        "{}",
        text(&o)
    );
    assert_eq!(read_csv(&seed), after);

    // The prompt shows each example's explanation, then its label as Autolabel's JSON line.
    let o = f.command(&[
        "plan",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--sample",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let first = &after[0];
    let shown = format!(
        "Message: {}\nLabel: Let's think step by step.\n{}\n{{\"label\": \"{}\"}}",
        first["SMS"], first["explanation"], first["Label"]
    );
    assert!(text(&o).contains(&shown), "{}\n---\n{shown}", text(&o));
    let o = f.run(&config, &data, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(read_csv(&out)
        .iter()
        .all(|r| ["ham", "spam"].contains(&r["Spam_task_label"].as_str())));

    // A config without an explanation column cannot say where explanations go.
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["dataset"]
        .as_object_mut()
        .unwrap()
        .remove("explanation_column");
    let bare = f.file("bare.json", &c.to_string());
    let o = f.command(&["explain", "--config", bare.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("'dataset.explanation_column' is missing"),
        "{}",
        text(&o)
    );
}
