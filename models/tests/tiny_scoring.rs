//! Scoring maths on tiny random-weight GGUF models: tree-masked, KV-shared, batched scoring must
//! equal scoring every full sequence from scratch, one row at a time.

use autolabel_models::architectures::decoder::{build_mask, Decoder};
use autolabel_models::testing::{write_tiny_gguf, TinySpec};
use autolabel_models::weights::gguf::{GgufFile, WeightFormat};
use autolabel_models::{ContinuationScorer, LoadOptions, LocalModel, ScoreRequest};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor, D};

fn load(spec: &TinySpec, format: WeightFormat) -> (tempfile::TempDir, Decoder) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, spec).unwrap();
    let dec = GgufFile::open(&path)
        .unwrap()
        .load_decoder(&Device::Cpu, None, format)
        .unwrap();
    (dir, dec)
}

/// log P(candidate tokens | prompt) computed the plain way: the whole sequence from scratch with a
/// causal mask, full log-softmax at every position.
fn from_scratch(dec: &Decoder, prompt: &[u32], cand: &[u32]) -> Vec<f32> {
    let dev = Device::Cpu;
    let seq: Vec<u32> = prompt.iter().chain(cand).copied().collect();
    let n = seq.len();
    let toks = Tensor::from_vec(seq, (1, n), &dev).unwrap();
    let pos = Tensor::arange(0u32, n as u32, &dev)
        .unwrap()
        .reshape((1, n))
        .unwrap();
    let mask = build_mask(1, n, n, &dev, |_, q, k| k <= q).unwrap();
    let (h, _) = dec.forward(&toks, &pos, &mask, None).unwrap();
    let logits = dec.logits(&h.squeeze(0).unwrap()).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    cand.iter()
        .enumerate()
        .map(|(i, &t)| lp[prompt.len() - 1 + i][t as usize])
        .collect()
}

/// [`from_scratch`] for every candidate of a request.
fn all_from_scratch(dec: &Decoder, r: &ScoreRequest) -> Vec<Vec<f32>> {
    r.candidates
        .iter()
        .map(|c| from_scratch(dec, &r.prompt, c))
        .collect()
}

fn requests() -> Vec<ScoreRequest> {
    // Candidates share prefixes (a trie with branching), end with the same end token (261), and
    // differ in length; prompts differ in length so batching pads.
    let cands = vec![
        vec![70, 80, 261],
        vec![70, 81, 261],
        vec![70, 80, 90, 261],
        vec![5, 261],
    ];
    vec![
        ScoreRequest {
            prompt: vec![259, 10, 20, 30, 40, 50, 60, 260],
            candidates: cands.clone(),
        },
        ScoreRequest {
            prompt: vec![259, 11, 12],
            candidates: cands.clone(),
        },
        ScoreRequest {
            prompt: (0..40).map(|i| (i * 7 % 250) as u32).collect(),
            candidates: cands[1..].to_vec(),
        },
    ]
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            assert!((p - q).abs() <= tol, "{what}: {p} vs {q} (tolerance {tol})");
        }
    }
}

/// `reqs` scored as one batch equal each row's candidates scored from scratch (to 1e-4).
fn batch_scores_as_from_scratch(
    dec: &Decoder,
    reqs: &[ScoreRequest],
    what: impl Fn(&ScoreRequest) -> String,
) {
    let got = dec.score_batch(reqs).unwrap();
    for (r, g) in reqs.iter().zip(&got) {
        assert_close(&g.token_logprobs, &all_from_scratch(dec, r), 1e-4, &what(r));
    }
}

fn check_against_scratch(spec: &TinySpec, format: WeightFormat, tol: f32) {
    let (_dir, dec) = load(spec, format);
    let reqs = requests();
    let batched = dec.score_batch(&reqs).unwrap();
    for (r, got) in reqs.iter().zip(&batched) {
        let want = all_from_scratch(&dec, r);
        assert_close(
            &got.token_logprobs,
            &want,
            tol,
            "tree scoring vs from scratch",
        );
        let alone = dec.score_batch(std::slice::from_ref(r)).unwrap();
        assert_close(
            &got.token_logprobs,
            &alone[0].token_logprobs,
            tol,
            "batched vs one by one",
        );
    }
}

#[test]
fn llama_tree_scoring_equals_scoring_from_scratch() {
    check_against_scratch(&TinySpec::llama(), WeightFormat::F32, 1e-4);
}

#[test]
fn qwen2_tree_scoring_equals_scoring_from_scratch() {
    check_against_scratch(&TinySpec::qwen2(), WeightFormat::F32, 1e-4);
}

#[test]
fn narrow_dense_weights_keep_the_scoring_consistent() {
    // f16 and bf16 weights with f32 activations: the tree pass still equals scoring from scratch
    // with the same weights (rounding of the narrow matmuls differs with batch shape).
    check_against_scratch(&TinySpec::qwen2(), WeightFormat::F16, 2e-3);
    check_against_scratch(&TinySpec::llama(), WeightFormat::BF16, 2e-2);
}

#[test]
fn quantized_weights_keep_the_scoring_consistent() {
    let spec = TinySpec {
        dtype: GgmlDType::Q8_0,
        ..TinySpec::llama()
    };
    check_against_scratch(&spec, WeightFormat::Quantized, 1e-3);
}

#[test]
fn padding_does_not_change_results() {
    let (_dir, dec) = load(&TinySpec::llama(), WeightFormat::F32);
    let short = requests()[1].clone();
    let long = requests()[2].clone();
    let alone = dec.score_batch(std::slice::from_ref(&short)).unwrap();
    // The short row padded to the long one's length, placed second.
    let padded = dec.score_batch(&[long, short]).unwrap();
    assert_close(
        &alone[0].token_logprobs,
        &padded[1].token_logprobs,
        1e-4,
        "padded",
    );
}

#[test]
fn candidate_probabilities_are_real_probabilities() {
    // Every single-token continuation of a prompt: their probabilities must sum to 1.
    let (_dir, dec) = load(&TinySpec::qwen2(), WeightFormat::F32);
    let vocab = dec.config.vocab_size as u32;
    let req = ScoreRequest {
        prompt: vec![1, 2, 3],
        candidates: (0..vocab).map(|t| vec![t]).collect(),
    };
    let out = dec.score_batch(&[req]).unwrap();
    let total: f32 = out[0].totals().iter().map(|l| l.exp()).sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");
}

#[test]
fn too_long_requests_are_errors_not_panics() {
    let (_dir, dec) = load(
        &TinySpec {
            context: 16,
            ..TinySpec::llama()
        },
        WeightFormat::F32,
    );
    let req = ScoreRequest {
        prompt: vec![1; 15],
        candidates: vec![vec![2, 3]],
    };
    let err = dec.score_batch(&[req]).unwrap_err().to_string();
    assert!(err.contains("context length 16"), "{err}");
    let empty = ScoreRequest {
        prompt: vec![],
        candidates: vec![vec![2]],
    };
    assert!(dec.score_batch(&[empty]).is_err());
}

#[test]
fn tokenizer_from_gguf_metadata_round_trips_and_maps_chat_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &TinySpec::llama()).unwrap();
    let m = LocalModel::load(&path, &Device::Cpu, &LoadOptions::default()).unwrap();
    let text = "<|im_start|>user\nsay the cat at 42 ünïcode<|im_end|>";
    let ids = m.encode(text).unwrap();
    assert_eq!(ids[0], m.tokenizer.token_to_id("<|im_start|>").unwrap());
    assert_eq!(
        *ids.last().unwrap(),
        m.tokenizer.token_to_id("<|im_end|>").unwrap()
    );
    assert!(
        ids.contains(&m.tokenizer.token_to_id("Ġthe").unwrap()),
        "merges are applied: {ids:?}"
    );
    assert_eq!(m.decode(&ids).unwrap(), text);
    assert!(m.chat_template.is_some());
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, &TinySpec::llama()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = LocalModel::load(&path, &Device::Cpu, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("truncated") && err.contains("tiny.gguf"),
        "{err}"
    );
    std::fs::write(&path, b"not a gguf at all").unwrap();
    let err = LocalModel::load(&path, &Device::Cpu, &LoadOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a readable GGUF"), "{err}");
}

/// A declared shared prefix (prefilled once, its cache repeated over the batch) gives the same
/// log-probs as scoring every full sequence from scratch; requests that do not start with it, or
/// do not go beyond it, fall back to a full prefill.
#[test]
fn shared_prefix_gives_the_same_scores() {
    for spec in [TinySpec::llama(), TinySpec::qwen2()] {
        let (_dir, dec) = load(&spec, WeightFormat::F32);
        let prefix: Vec<u32> = (0..24).map(|i| (i * 11 % 250) as u32).collect();
        let cands = vec![vec![70, 80, 261], vec![70, 81, 261], vec![5, 261]];
        let req = |tail: &[u32]| ScoreRequest {
            prompt: prefix.iter().chain(tail).copied().collect(),
            candidates: cands.clone(),
        };
        let reqs = vec![req(&[1, 2, 3]), req(&[9]), req(&[4, 5, 6, 7, 8, 9, 10])];
        let plain = dec.score_batch(&reqs).unwrap();
        dec.set_shared_prefix(&prefix).unwrap();
        let shared = dec.score_batch(&reqs).unwrap();
        for ((r, a), b) in reqs.iter().zip(&plain).zip(&shared) {
            let want = all_from_scratch(&dec, r);
            assert_close(
                &b.token_logprobs,
                &want,
                1e-4,
                "shared prefix vs from scratch",
            );
            assert_close(
                &b.token_logprobs,
                &a.token_logprobs,
                1e-4,
                "shared vs plain",
            );
        }
        // A request that is only the prefix, or another prompt, is still scored exactly.
        let other = vec![
            ScoreRequest {
                prompt: prefix.clone(),
                candidates: cands.clone(),
            },
            ScoreRequest {
                prompt: vec![259, 11, 12],
                candidates: cands.clone(),
            },
        ];
        let got = dec.score_batch(&other).unwrap();
        for (r, g) in other.iter().zip(&got) {
            let want = all_from_scratch(&dec, r);
            assert_close(
                &g.token_logprobs,
                &want,
                1e-4,
                "fallback without the prefix",
            );
        }
        dec.set_shared_prefix(&[]).unwrap();
    }
}

/// Prompts longer than a prefill chunk (run in several passes, each attending to the earlier
/// chunks' caches where they lie) score as from scratch, batched with short ones, with and
/// without a shared prefix that is itself longer than a chunk.
#[test]
fn prompts_longer_than_a_prefill_chunk_score_as_from_scratch() {
    use autolabel_models::architectures::decoder_prefill::PREFILL_CHUNK;
    for base in [TinySpec::llama(), TinySpec::qwen2()] {
        let spec = TinySpec {
            context: 4 * PREFILL_CHUNK,
            ..base
        };
        let (_dir, dec) = load(&spec, WeightFormat::F32);
        let run = |n: usize, seed: usize| -> Vec<u32> {
            (0..n).map(|i| ((i * 7 + seed) % 250) as u32).collect()
        };
        let prefix = run(PREFILL_CHUNK + 30, 1);
        let reqs: Vec<ScoreRequest> = [2 * PREFILL_CHUNK + 5, 10, PREFILL_CHUNK - 31]
            .iter()
            .enumerate()
            .map(|(j, &n)| ScoreRequest {
                prompt: prefix.iter().copied().chain(run(n, j + 3)).collect(),
                candidates: vec![vec![70, 80, 261], vec![70, 81, 261], vec![5, 261]],
            })
            .collect();
        for shared in [false, true] {
            if shared {
                dec.set_shared_prefix(&prefix).unwrap();
            }
            batch_scores_as_from_scratch(&dec, &reqs, |r| {
                format!("{}-token prompt, shared prefix {shared}", r.prompt.len())
            });
        }
        dec.set_shared_prefix(&[]).unwrap();
    }
}

/// A batch whose label pass predicts at more positions than one chunk of logits holds (three
/// rows of 60 four-token labels: 384 logit rows, six chunks, a row's positions falling into
/// more than one) scores as from scratch.
#[test]
fn label_passes_longer_than_a_logit_chunk_score_as_from_scratch() {
    use autolabel_models::scoring::trie_logprobs::LOGIT_ROWS;
    let (_dir, dec) = load(&TinySpec::llama(), WeightFormat::F32);
    let labels: Vec<Vec<u32>> = (0..60u32)
        .map(|i| vec![3 + i % 7, 20 + i, 90 + i % 3, 261])
        .collect();
    let reqs: Vec<ScoreRequest> = (0..3)
        .map(|j| ScoreRequest {
            prompt: (0..12 + 5 * j)
                .map(|i| ((i * 11 + j) % 250) as u32)
                .collect(),
            candidates: labels.clone(),
        })
        .collect();
    let fed: usize = reqs
        .iter()
        .map(|r| {
            autolabel_models::scoring::trie::CandidateTrie::build(&r.candidates)
                .fed_nodes()
                .len()
        })
        .sum();
    assert!(fed + reqs.len() > 4 * LOGIT_ROWS, "{fed} fed nodes");
    batch_scores_as_from_scratch(&dec, &reqs, |_| "many labels".into());
}

/// A batch of many short rows is prefilled in several chunks (a chunk is `PREFILL_CHUNK`
/// positions across the batch: 20 rows of ~40 tokens take three) and scores as from scratch.
#[test]
fn many_short_rows_prefilled_in_chunks_score_as_from_scratch() {
    use autolabel_models::architectures::decoder_prefill::PREFILL_CHUNK;
    let (_dir, dec) = load(&TinySpec::llama(), WeightFormat::F32);
    let reqs: Vec<ScoreRequest> = (0..20)
        .map(|j| ScoreRequest {
            prompt: (0..36 + j % 5)
                .map(|i| ((i * 13 + j) % 250) as u32)
                .collect(),
            candidates: vec![vec![70, 80, 261], vec![70, 81, 261], vec![5, 261]],
        })
        .collect();
    let positions: usize = reqs.len() * reqs.iter().map(|r| r.prompt.len()).max().unwrap();
    assert!(positions > 3 * PREFILL_CHUNK, "{positions} positions");
    batch_scores_as_from_scratch(&dec, &reqs, |_| "20 short rows".into());
}
