//! The generation engine on tiny random-weight models: what it generates must score, under the
//! exact candidate scorer, the log-probabilities it reported (every architecture, batched and
//! alone, with and without the shared prefix), and constrained outputs must satisfy their
//! constraint on every row.

use autolabel_models::generation::{
    generate, ConstraintCompiler, Finish, GenerationRequest, Grammar,
};
use autolabel_models::testing::{write_tiny_gguf, TinySpec};
use autolabel_models::tokenization::token_env::token_env;
use autolabel_models::{LoadOptions, LocalModel, ScoreRequest};
use candle_core::Device;
use std::path::PathBuf;

fn tiny_gguf(spec: &TinySpec) -> (tempfile::TempDir, LocalModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, spec).unwrap();
    let model = LocalModel::load(&path, &Device::Cpu, &LoadOptions::default()).unwrap();
    (dir, model)
}

fn hf_fixture(name: &str) -> LocalModel {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name);
    LocalModel::load(&path, &Device::Cpu, &LoadOptions::default()).unwrap()
}

/// Deterministic pseudo-random numbers.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Prompts of different lengths; with `prefix`, all start with it.
fn prompts(vocab: usize, n: usize, prefix: &[u32], seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Lcg(seed);
    (0..n)
        .map(|i| {
            let mut p = prefix.to_vec();
            p.extend((0..3 + 2 * i).map(|_| 1 + rng.below(vocab.min(300) - 1) as u32));
            p
        })
        .collect()
}

/// Generates unconstrained (ending at `end`) and checks every row against the exact scorer,
/// and the batch against each row alone.
fn check_consistency(model: &LocalModel, end: u32, prefix: &[u32]) {
    let gen = model.scorer.as_ref();
    let vocab = gen.vocab_size();
    let rows = prompts(vocab, 5, prefix, 3);
    let requests: Vec<GenerationRequest> = rows
        .iter()
        .map(|p| GenerationRequest {
            prompt: p.clone(),
            // Past the decoder's first generated-token buffer (32 positions), so it doubles.
            max_new_tokens: 40,
        })
        .collect();
    model.scorer.set_shared_prefix(prefix).unwrap();
    let batch = generate(gen, &requests, vec![None; rows.len()], &[end]).unwrap();
    for (i, (r, g)) in requests.iter().zip(&batch).enumerate() {
        assert!(!g.tokens.is_empty());
        assert_eq!(g.logprobs, g.constrained_logprobs, "unconstrained row {i}");
        let scored = model
            .scorer
            .score_batch(&[ScoreRequest {
                prompt: r.prompt.clone(),
                candidates: vec![g.tokens.clone()],
            }])
            .unwrap();
        let want = &scored[0].token_logprobs[0];
        assert_eq!(want.len(), g.logprobs.len());
        for (t, (a, b)) in g.logprobs.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() < 1e-4,
                "row {i} token {t}: generated {a}, scorer {b}"
            );
        }
        // Greedy: every chosen token is the most likely one under the scorer too.
        let alone = generate(gen, std::slice::from_ref(r), vec![None], &[end]).unwrap();
        assert_eq!(
            alone[0].tokens, g.tokens,
            "row {i}: batch differs from alone"
        );
    }
    model.scorer.set_shared_prefix(&[]).unwrap();
}

#[test]
fn generated_logprobs_equal_the_exact_scorer_for_every_architecture() {
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let (_dir, model) = tiny_gguf(&spec);
        let end = model.encode("<|im_end|>").unwrap()[0];
        check_consistency(&model, end, &[]);
        let prefix: Vec<u32> = (40..70).collect();
        check_consistency(&model, end, &prefix);
    }
    for name in [
        "tiny-llama",
        "tiny-qwen2",
        "tiny-mistral",
        "tiny-t5",
        "tiny-flan-t5",
        "tiny-umt5",
    ] {
        let model = hf_fixture(name);
        let end = model.eos_token_id.unwrap_or(2);
        check_consistency(&model, end, &[]);
    }
}

fn compiler(model: &LocalModel, end: u32) -> ConstraintCompiler {
    let env = token_env(&model.tokenizer, model.scorer.vocab_size(), &[end]).unwrap();
    ConstraintCompiler::new(&env).unwrap()
}

const WORDS: &[&str] = &[
    "Aspirin", "dose", "of", "81", "mg", "was", "given", "to", "John", "Smith", "on", "Monday",
    "in", "Boston", ",", "the", "patient", "said", ".", "court", "ruled", "ACME", "Corp",
];

fn random_text(rng: &mut Lcg, words: usize) -> String {
    let mut t = String::new();
    for i in 0..words {
        let w = WORDS[rng.below(WORDS.len())];
        if i > 0 && w != "," && w != "." {
            t.push(' ');
        }
        t.push_str(w);
    }
    t
}

/// Whether `answer` is a run of whole chunks of `text` (letters, digits, spaces and punctuation
/// chunked as llguidance's `substring_words` does).
fn is_word_substring(text: &str, answer: &str) -> bool {
    if answer.is_empty() {
        return true;
    }
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' {
            0
        } else if c.is_whitespace() {
            1
        } else {
            2
        }
    };
    let mut bounds = vec![0];
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for w in chars.windows(2) {
        if class(w[0].1) != class(w[1].1) {
            bounds.push(w[1].0);
        }
    }
    bounds.push(text.len());
    text.match_indices(answer)
        .any(|(s, _)| bounds.contains(&s) && bounds.contains(&(s + answer.len())))
}

#[test]
fn constrained_outputs_always_satisfy_their_constraint() {
    let mut steps = 0usize;
    let (mut json_rows, mut json_ended) = (0usize, 0usize);
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let (_dir, model) = tiny_gguf(&spec);
        let end = model.encode("<|im_end|>").unwrap()[0];
        let compiler = compiler(&model, end);
        let trie = compiler.env().tok_trie().clone();
        let gen = model.scorer.as_ref();
        let mut rng = Lcg(spec.seed);
        for round in 0..12 {
            // Substrings of a random text (or "unanswerable").
            let texts: Vec<String> = (0..8).map(|_| random_text(&mut rng, 6 + round)).collect();
            let requests: Vec<GenerationRequest> = texts
                .iter()
                .map(|t| GenerationRequest {
                    prompt: model.encode(&format!("Text: {t}\nAnswer:")).unwrap(),
                    max_new_tokens: 64,
                })
                .collect();
            let matchers = texts
                .iter()
                .map(|t| {
                    Some(
                        compiler
                            .matcher(&Grammar::Substring {
                                text: t.clone(),
                                alternatives: vec!["unanswerable".into()],
                            })
                            .unwrap(),
                    )
                })
                .collect();
            let out = generate(gen, &requests, matchers, &[end]).unwrap();
            for (t, g) in texts.iter().zip(&out) {
                assert_eq!(g.finish, Finish::End, "{t:?}: {g:?}");
                steps += g.tokens.len();
                let answer = String::from_utf8(trie.decode(g.answer_tokens())).unwrap();
                assert!(
                    answer == "unanswerable" || is_word_substring(t, &answer),
                    "{answer:?} is not a substring of {t:?}"
                );
                for (full, c) in g.logprobs.iter().zip(&g.constrained_logprobs) {
                    assert!(*c >= *full - 1e-5 && *c <= 1e-5, "{full} {c}");
                }
            }
            // JSON with an enum and a bounded list of strings.
            let schema = serde_json::json!({
                "type": "object",
                "properties": {
                    "kind": {"enum": ["drug", "person", "place"]},
                    "names": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}
                },
                "required": ["kind", "names"],
                "additionalProperties": false
            });
            let matchers = requests
                .iter()
                .map(|_| {
                    Some(
                        compiler
                            .matcher(&Grammar::JsonSchema(schema.clone()))
                            .unwrap(),
                    )
                })
                .collect();
            let out = generate(gen, &requests, matchers, &[end]).unwrap();
            for g in &out {
                let text = String::from_utf8(trie.decode(g.answer_tokens())).unwrap();
                steps += g.tokens.len();
                json_rows += 1;
                json_ended += (g.finish == Finish::End) as usize;
                if g.finish != Finish::End {
                    assert_eq!(g.finish, Finish::Length, "{text}");
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"));
                assert!(["drug", "person", "place"].contains(&v["kind"].as_str().unwrap()));
                let names = v["names"].as_array().unwrap();
                assert!(names.len() <= 3);
                assert!(names
                    .iter()
                    .all(|n| n.as_str().unwrap().chars().count() <= 8));
            }
        }
    }
    eprintln!("{steps} constrained steps; {json_ended} of {json_rows} JSON answers complete");
    assert!(steps >= 2000, "only {steps} constrained steps");
    assert!(
        json_ended * 2 >= json_rows,
        "{json_ended} of {json_rows} JSON answers complete"
    );
}

#[test]
fn a_grammar_llguidance_rejects_is_a_clear_error() {
    let (_dir, model) = tiny_gguf(&TinySpec::llama());
    let end = model.encode("<|im_end|>").unwrap()[0];
    let c = compiler(&model, end);
    let err = |g: Grammar| match c.matcher(&g) {
        Ok(_) => panic!("{g:?} was accepted"),
        Err(e) => e.to_string(),
    };
    let e = err(Grammar::Lark("start: undefined_rule".into()));
    assert!(e.contains("constraint is not valid"), "{e}");
    let e = err(Grammar::JsonSchema(
        serde_json::json!({"type": "no-such-type"}),
    ));
    assert!(e.contains("constraint is not valid"), "{e}");
}
