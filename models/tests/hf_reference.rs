//! Safetensors checkpoints (Llama with Llama-3 rope scaling, sharded Qwen2, Mistral, T5, FLAN-T5
//! style t5-v1_1, umT5) against Hugging Face transformers: tiny random-weight models and reference
//! log-probabilities written by scripts/make_reference_models.py (transformers, CPU, float32).

use autolabel_models::local_model::ModelKind;
use autolabel_models::weights::gguf::WeightFormat;
use autolabel_models::{LoadOptions, LocalModel, ScoreRequest};
use candle_core::Device;
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

struct Reference {
    requests: Vec<ScoreRequest>,
    logprobs: Vec<Vec<Vec<f64>>>,
    texts: Vec<String>,
    text_ids: Vec<Vec<u32>>,
}

fn reference(name: &str) -> Reference {
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(name).join("reference.json")).unwrap(),
    )
    .unwrap();
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let prompts: Vec<Vec<u32>> = v["prompts"].as_array().unwrap().iter().map(ids).collect();
    let cands: Vec<Vec<Vec<u32>>> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(ids).collect())
        .collect();
    let logprobs = v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    c.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect()
                })
                .collect()
        })
        .collect();
    Reference {
        requests: prompts
            .into_iter()
            .zip(cands)
            .map(|(prompt, candidates)| ScoreRequest { prompt, candidates })
            .collect(),
        logprobs,
        texts: v["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        text_ids: v["text_ids"].as_array().unwrap().iter().map(ids).collect(),
    }
}

fn load(name: &str, weights: WeightFormat) -> LocalModel {
    LocalModel::load(
        &fixture(name),
        &Device::Cpu,
        &LoadOptions {
            max_context: None,
            weights,
        },
    )
    .unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

/// Largest difference between our token log-probs and the reference, absolute and relative to
/// the reference's magnitude.
fn max_error(model: &LocalModel, r: &Reference, batched: bool) -> (f64, f64) {
    let outputs = if batched {
        model.scorer.score_batch(&r.requests).unwrap()
    } else {
        r.requests
            .iter()
            .map(|q| {
                model
                    .scorer
                    .score_batch(std::slice::from_ref(q))
                    .unwrap()
                    .remove(0)
            })
            .collect()
    };
    let (mut worst, mut worst_rel) = (0f64, 0f64);
    for (out, want) in outputs.iter().zip(&r.logprobs) {
        assert_eq!(out.token_logprobs.len(), want.len());
        for (got, want) in out.token_logprobs.iter().zip(want) {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                worst = worst.max((*g as f64 - w).abs());
                worst_rel = worst_rel.max((*g as f64 - w).abs() / w.abs().max(1.0));
            }
        }
    }
    (worst, worst_rel)
}

fn check(name: &str, kind: ModelKind, arch: &str) {
    let r = reference(name);
    let model = load(name, WeightFormat::F32);
    assert_eq!(model.kind, kind, "{name}");
    assert_eq!(model.architecture, arch, "{name}");
    for (text, ids) in r.texts.iter().zip(&r.text_ids) {
        assert_eq!(
            &model.encode(text).unwrap(),
            ids,
            "{name}: tokenization of {text:?}"
        );
    }
    let (batched, _) = max_error(&model, &r, true);
    let (single, _) = max_error(&model, &r, false);
    eprintln!(
        "{name}: max |ours - transformers| {batched:.1e} batched, {single:.1e} one row at a time"
    );
    assert!(
        batched < 1e-4 && single < 1e-4,
        "{name}: batched {batched}, single {single}"
    );
    // Narrower weights stay close (activations, norms and softmax remain f32); random weights
    // amplify rounding, so the bound is relative to the log-prob.
    for (fmt, tol) in [(WeightFormat::F16, 0.02), (WeightFormat::BF16, 0.05)] {
        let m = load(name, fmt);
        let (abs, rel) = max_error(&m, &r, true);
        assert!(
            rel < tol,
            "{name} {fmt:?}: max error {abs} ({rel} relative)"
        );
    }
}

#[test]
fn llama_with_llama3_rope_scaling_matches_transformers() {
    check("tiny-llama", ModelKind::Decoder, "llama");
    let m = load("tiny-llama", WeightFormat::F32);
    assert!(m.add_bos, "tokenizer_config.json asks for BOS");
    assert_eq!(m.bos_token.as_deref(), Some("<|endoftext|>"));
}

#[test]
fn sharded_qwen2_matches_transformers() {
    check("tiny-qwen2", ModelKind::Decoder, "qwen2");
    let m = load("tiny-qwen2", WeightFormat::F32);
    assert!(m.chat_template.as_deref().unwrap().contains("<|im_start|>"));
    assert_eq!(m.eos_token.as_deref(), Some("<|im_end|>"));
    assert!(!m.add_bos);
}

#[test]
fn mistral_matches_transformers() {
    check("tiny-mistral", ModelKind::Decoder, "mistral");
}

#[test]
fn t5_relu_tied_matches_transformers() {
    check("tiny-t5", ModelKind::EncoderDecoder, "t5");
    let m = load("tiny-t5", WeightFormat::F32);
    assert_eq!(m.eos_token_id, Some(1));
    assert!(m.chat_template.is_none());
}

#[test]
fn flan_t5_style_gated_gelu_untied_matches_transformers() {
    check("tiny-flan-t5", ModelKind::EncoderDecoder, "t5");
}

#[test]
fn umt5_matches_transformers() {
    check("tiny-umt5", ModelKind::EncoderDecoder, "umt5");
}

/// A random Qwen2 checkpoint whose matrices fill whole Q8_0 blocks (hidden 64, FFN 128; the
/// fixtures' 48 do not), with tiny-qwen2's tokenizer.
fn block_sized_qwen2() -> tempfile::TempDir {
    use candle_core::{DType, Tensor};
    let dir = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("tiny-qwen2").join(f), dir.path().join(f)).unwrap();
    }
    let mut cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-qwen2").join("config.json")).unwrap(),
    )
    .unwrap();
    cfg["hidden_size"] = 64.into();
    cfg["intermediate_size"] = 128.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let (v, h, f, kv) = (432, 64, 128, 32);
    let dev = Device::Cpu;
    let rand = |shape: &[usize]| Tensor::randn(0f32, 0.15, shape, &dev).unwrap();
    let mut t = std::collections::HashMap::new();
    t.insert("model.embed_tokens.weight".to_string(), rand(&[v, h]));
    t.insert("lm_head.weight".to_string(), rand(&[v, h]));
    t.insert(
        "model.norm.weight".to_string(),
        Tensor::ones(h, DType::F32, &dev).unwrap(),
    );
    for i in 0..2 {
        let p = format!("model.layers.{i}");
        for (n, shape) in [
            ("self_attn.q_proj.weight", vec![h, h]),
            ("self_attn.q_proj.bias", vec![h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.k_proj.bias", vec![kv]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.bias", vec![kv]),
            ("self_attn.o_proj.weight", vec![h, h]),
            ("mlp.gate_proj.weight", vec![f, h]),
            ("mlp.up_proj.weight", vec![f, h]),
            ("mlp.down_proj.weight", vec![h, f]),
        ] {
            t.insert(format!("{p}.{n}"), rand(&shape));
        }
        for n in ["input_layernorm.weight", "post_attention_layernorm.weight"] {
            t.insert(
                format!("{p}.{n}"),
                Tensor::ones(h, DType::F32, &dev).unwrap(),
            );
        }
    }
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn safetensors_decoders_quantize_to_q8_0_with_dtype_q() {
    let dir = block_sized_qwen2();
    let requests = reference("tiny-qwen2").requests;
    let score = |weights| {
        let m = LocalModel::load(
            dir.path(),
            &Device::Cpu,
            &LoadOptions {
                max_context: None,
                weights,
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        m.scorer.score_batch(&requests).unwrap()
    };
    let exact = score(WeightFormat::F32);
    let diff = |other: &[autolabel_models::CandidateLogprobs]| {
        let (mut worst, mut changed) = (0f32, false);
        for (a, b) in exact.iter().zip(other) {
            let pairs = a
                .token_logprobs
                .iter()
                .flatten()
                .zip(b.token_logprobs.iter().flatten());
            for (x, y) in pairs {
                worst = worst.max((x - y).abs() / x.abs().max(1.0));
                changed |= x != y;
            }
        }
        (worst, changed)
    };
    let (q, changed) = diff(&score(WeightFormat::Quantized));
    let (bf16, _) = diff(&score(WeightFormat::BF16));
    eprintln!("largest relative log-prob difference from f32: Q8_0 {q:.1e}, bf16 {bf16:.1e}");
    // Quantized (the numbers moved), and within the bound bf16 is held to above.
    assert!(
        changed,
        "--dtype q gave the f32 numbers bit for bit: nothing was quantized"
    );
    assert!(q < 5e-2, "Q8_0 vs f32: {q} (bf16: {bf16})");
}

#[test]
fn quantized_dtype_is_refused_for_t5() {
    let e = LocalModel::load(
        &fixture("tiny-t5"),
        &Device::Cpu,
        &LoadOptions {
            max_context: None,
            weights: WeightFormat::Quantized,
        },
    )
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("--dtype q") && e.to_string().contains("t5 model"),
        "{e}"
    );
}

/// A copy of a fixture with `edit` applied to its config.json, and the load error.
fn load_error(
    name: &str,
    edit: impl Fn(&mut serde_json::Map<String, Value>),
    remove: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let cfg_path = dir.path().join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    for f in remove {
        std::fs::remove_file(dir.path().join(f)).unwrap();
    }
    let e = LocalModel::load(dir.path(), &Device::Cpu, &LoadOptions::default())
        .err()
        .unwrap_or_else(|| panic!("expected a load error from {name} with {remove:?}"));
    format!("{e:#}")
}

#[test]
fn bad_model_directories_get_clear_errors() {
    let e = load_error(
        "tiny-llama",
        |c| {
            c.insert("model_type".into(), "gpt2".into());
        },
        &[],
    );
    assert!(
        e.contains("model_type 'gpt2' is not supported")
            && e.contains("llama, mistral, qwen2, t5, umt5"),
        "{e}"
    );
    let e = load_error(
        "tiny-llama",
        |c| {
            c.remove("num_hidden_layers");
        },
        &[],
    );
    assert!(
        e.contains("config.json") && e.contains("'num_hidden_layers' is missing"),
        "{e}"
    );
    let e = load_error(
        "tiny-t5",
        |c| {
            c.remove("d_model");
        },
        &[],
    );
    assert!(e.contains("'d_model' is missing"), "{e}");
    let e = load_error(
        "tiny-llama",
        |c| {
            c.insert("vocab_size".into(), 100.into());
        },
        &[],
    );
    assert!(
        e.contains("the tokenizer has") && e.contains("does not belong to this model"),
        "{e}"
    );
    let e = load_error(
        "tiny-qwen2",
        |c| {
            c.insert("hidden_size".into(), 64.into());
        },
        &[],
    );
    assert!(e.contains("the weights do not match config.json"), "{e}");
    let e = load_error("tiny-qwen2", |_| {}, &["model-00003-of-00005.safetensors"]);
    assert!(
        e.contains("model-00003-of-00005.safetensors") && e.contains("missing"),
        "{e}"
    );
    let e = load_error("tiny-t5", |_| {}, &["tokenizer.json"]);
    assert!(e.contains("no tokenizer.json"), "{e}");
    let e = load_error(
        "tiny-llama",
        |c| {
            c.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            );
        },
        &[],
    );
    assert!(e.contains("rope scaling 'yarn' is not supported"), "{e}");
    let e = load_error(
        "tiny-flan-t5",
        |c| {
            c.insert("feed_forward_proj".into(), "gated-tanh".into());
        },
        &[],
    );
    assert!(e.contains("activation 'tanh' is not supported"), "{e}");
}

#[test]
fn spiece_model_tokenizes_like_sentencepiece() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spiece");
    let tok = autolabel_models::tokenization::sentencepiece::tokenizer_from_spiece(
        &dir.join("spiece.model"),
    )
    .unwrap();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    for (text, ids) in r["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["ids"].as_array().unwrap())
    {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{text:?}");
    }
    // Control tokens written in text are special tokens, as in transformers' fast tokenizers.
    assert_eq!(tok.encode("<pad> </s>", false).unwrap().get_ids(), &[0, 1]);
    // With special tokens, T5-style: </s> appended.
    let with = tok.encode("hello", true).unwrap().get_ids().to_vec();
    assert_eq!(with.last(), Some(&1));
    // A model directory with spiece.model and no tokenizer.json loads with it.
    let m = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture("tiny-t5")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "tokenizer.json" {
            std::fs::copy(e.path(), m.path().join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(dir.join("spiece.model"), m.path().join("spiece.model")).unwrap();
    let model = LocalModel::load(m.path(), &Device::Cpu, &LoadOptions::default()).unwrap();
    let first = r["texts"][0].as_str().unwrap();
    assert_eq!(
        serde_json::json!(model.encode(first).unwrap()),
        r["ids"][0],
        "spiece-only directory"
    );
    let e = autolabel_models::tokenization::sentencepiece::tokenizer_from_spiece(
        &dir.join("reference.json"),
    )
    .err()
    .unwrap();
    assert!(
        format!("{e:#}").contains("not a readable SentencePiece model"),
        "{e:#}"
    );
}
