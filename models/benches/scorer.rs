//! Criterion benches of the scorer on the real default model (SmolLM2-135M-Instruct, fetched
//! through its card like a user would): rows/s by label count (2 / 8 / 77, banking77's labels)
//! and by batch size, prefill FLOP/s by weight format, and the matmul throughput of this CPU at
//! the model's shapes (the peak prefill is measured against).
//!
//!     cargo bench -p autolabel-models --bench scorer
//!
//! Throughputs in "elem/s" are FLOP/s for the prefill and matmul groups, rows/s for the others.

use autolabel_models::sources::cards::ModelCard;
use autolabel_models::sources::fetch::{cache_root, resolve_card};
use autolabel_models::weights::gguf::{GgufFile, WeightFormat};
use autolabel_models::{LoadOptions, LocalModel, ScoreRequest};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;
use std::time::Duration;

fn model_file() -> PathBuf {
    let card = ModelCard::find("smollm2-135m-instruct").expect("built-in card");
    resolve_card(&card, &cache_root()).expect("the default model (fetched through its card)")
}

fn load(format: WeightFormat) -> LocalModel {
    let opts = LoadOptions {
        max_context: Some(2048),
        weights: format,
    };
    LocalModel::load(&model_file(), &Device::Cpu, &opts).unwrap()
}

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

/// banking77's 77 labels, in the example config's order.
fn banking_labels() -> Vec<String> {
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/banking77/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    cfg["prompt"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// Short real queries (banking77's test set).
fn queries(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(shared("banking77/test.csv")).unwrap();
    let mut rd = csv::Reader::from_reader(text.as_bytes());
    rd.records()
        .take(n)
        .map(|r| r.unwrap()[0].to_string())
        .collect()
}

struct Prompts {
    instructions: Vec<u32>,
    rows: Vec<Vec<u32>>,
}

fn prompts(model: &LocalModel, labels: &[String], n: usize) -> Prompts {
    let head = format!(
        "<|im_start|>user\nClassify the customer's banking query into one of these intents:\n{}\n\nQuery: ",
        labels.join("\n")
    );
    let rows: Vec<Vec<u32>> = queries(n)
        .iter()
        .map(|q| {
            model
                .encode(&format!("{head}{q}<|im_end|>\n<|im_start|>assistant\n"))
                .unwrap()
        })
        .collect();
    // The shared prefix is the rows' common token prefix (the head's last token may merge with
    // a query's first word), as the labeler computes it.
    let common = rows
        .iter()
        .map(|r| r.iter().zip(&rows[0]).take_while(|(a, b)| a == b).count())
        .min()
        .unwrap();
    let instructions = rows[0][..common].to_vec();
    Prompts { instructions, rows }
}

impl Prompts {
    /// Every row with the same candidates.
    fn requests(&self, candidates: &[Vec<u32>]) -> Vec<ScoreRequest> {
        self.rows
            .iter()
            .map(|r| ScoreRequest {
                prompt: r.clone(),
                candidates: candidates.to_vec(),
            })
            .collect()
    }
}

/// SmolLM2 (f32), banking77's labels and 8 of its queries, the instructions prefilled once.
fn banking_setup() -> (LocalModel, Vec<String>, Prompts) {
    let model = load(WeightFormat::F32);
    let labels = banking_labels();
    let p = prompts(&model, &labels, 8);
    model.scorer.set_shared_prefix(&p.instructions).unwrap();
    (model, labels, p)
}

fn candidates(model: &LocalModel, labels: &[String]) -> Vec<Vec<u32>> {
    let end = model.tokenizer.token_to_id("<|im_end|>").unwrap();
    labels
        .iter()
        .map(|l| [model.encode(l).unwrap(), vec![end]].concat())
        .collect()
}

/// One row at a time, the instructions prefilled once: the cost of 2, 8 and 77 labels.
fn label_count(c: &mut Criterion) {
    let (model, labels, p) = banking_setup();
    let mut g = c.benchmark_group("labels_per_row");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(p.rows.len() as u64));
    for n in [2usize, 8, 77] {
        let cands = candidates(&model, &labels[..n]);
        let reqs = p.requests(&cands);
        g.bench_with_input(BenchmarkId::from_parameter(n), &reqs, |b, reqs| {
            b.iter(|| {
                for r in reqs {
                    model.scorer.score_batch(std::slice::from_ref(r)).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// Short rows with 2 labels in batches of 1, 4 and 8 (rows/s).
fn batch_size(c: &mut Criterion) {
    let (model, labels, p) = banking_setup();
    let cands = candidates(&model, &labels[..2]);
    let reqs = p.requests(&cands);
    let mut g = c.benchmark_group("batch_size");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(reqs.len() as u64));
    for bs in [1usize, 4, 8] {
        g.bench_with_input(BenchmarkId::from_parameter(bs), &reqs, |b, reqs| {
            b.iter(|| {
                for chunk in reqs.chunks(bs) {
                    model.scorer.score_batch(chunk).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// FLOPs of a prefill of `n` tokens: 2 x (matmul weights per token) x n, plus attention.
fn prefill_flops(model_path: &std::path::Path, n: usize) -> u64 {
    let mut g = GgufFile::open(model_path).unwrap();
    let cfg = g.decoder_config().unwrap();
    let (h, kv) = (cfg.hidden_size, cfg.n_kv_heads * cfg.head_dim);
    let q = cfg.n_heads * cfg.head_dim;
    let ffn = g
        .tensor("blk.0.ffn_up.weight", &Device::Cpu)
        .unwrap()
        .shape()
        .dims()[0];
    let per_layer = h * q + 2 * h * kv + q * h + 3 * h * ffn;
    let attn = 2 * n * q; // scores and weighted values, per token per key (causal average n/2)
    (2 * (per_layer * cfg.n_layers * n + attn * cfg.n_layers * n / 2)) as u64
}

/// Prefill of one long prompt (no shared prefix), per weight format, in FLOP/s.
fn prefill(c: &mut Criterion) {
    let path = model_file();
    let text =
        std::fs::read_to_string(shared("autolabel_movie_reviews/movie_reviews.csv")).unwrap();
    let mut g = c.benchmark_group("prefill_flops");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    for (name, format) in [("f32", WeightFormat::F32), ("q", WeightFormat::Quantized)] {
        let model = load(format);
        let ids = model.encode(&text).unwrap();
        let end = model.tokenizer.token_to_id("<|im_end|>").unwrap();
        for n in [128usize, 512] {
            let req = ScoreRequest {
                prompt: ids[..n].to_vec(),
                candidates: vec![vec![end]],
            };
            g.throughput(Throughput::Elements(prefill_flops(&path, n)));
            g.bench_with_input(BenchmarkId::new(name, n), &req, |b, req| {
                b.iter(|| model.scorer.score_batch(std::slice::from_ref(req)).unwrap())
            });
        }
    }
    g.finish();
}

/// This CPU's matmul throughput at the model's feed-forward shape ([512, 576] x [576, 1536]),
/// f32 (what `--dtype f32` runs), Q4_1 through our kernel (what `--dtype q` runs on AVX2 CPUs)
/// and through candle's quantized matmul, in FLOP/s.
fn matmul(c: &mut Criterion) {
    let (m, k, n) = (512usize, 576usize, 1536usize);
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
    let mut g = c.benchmark_group("matmul_flops");
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    let dense = QMatMul::Tensor(w.clone());
    g.bench_function("f32", |b| b.iter(|| dense.forward(&x).unwrap()));
    let qt = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
    let ours = autolabel_kernels::BlockMatrix::from_qtensor(&qt).unwrap();
    g.bench_function("q4_1_ours", |b| b.iter(|| ours.matmul_t(&x).unwrap()));
    let q = QMatMul::from_qtensor(qt).unwrap();
    g.bench_function("q4_1_candle", |b| b.iter(|| q.forward(&x).unwrap()));
    g.finish();
}

criterion_group!(benches, matmul, prefill, label_count, batch_size);
criterion_main!(benches);
