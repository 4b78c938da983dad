//! Criterion benches of the fused CPU attention (`attention_cpu`) at the shapes the decoders
//! run: SmolLM2's heads (9 query heads over 3 key heads of 64, `smollm2/`) and Qwen2.5-0.5B's
//! (14 over 2, `qwen2.5/`), a 112-token shared prefix.
//!
//!     cargo bench -p autolabel-kernels --bench attention
//!
//! - `prefill_256`: one row's 256-position chunk over the prefix and itself (causal).
//! - `prefill_256_after_512`: a long row's third chunk: the prefix, 512 earlier keys, itself.
//! - `label_pass_b8`: 8 rows of 24 trie nodes over the prefix, a 60-token prompt and the nodes.
//! - `decode_b8`: a generation step, 8 rows of one query over the prefix and 200 keys.
//!
//! Each with the keys and values in f32 (`--dtype f32`) and in f16 (`--dtype q`'s CPU cache).
//!
//! Throughput is in FLOP/s of the two products over the keys each query sees (causal halves
//! not counted).

use autolabel_kernels::attention_cpu;
use candle_core::{DType, Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const HD: usize = 64;
const PREFIX: usize = 112;

/// Queries `[b, H, t, HD]`, their keys and values `[b, kvh, t, HD]`, `earlier` keys of each row
/// before them, a causal mask over prefix + earlier + own keys; keys and values in `kv`.
fn case(
    kv: DType,
    heads: (usize, usize),
    b: usize,
    t: usize,
    earlier: usize,
) -> candle_core::Result<[Tensor; 8]> {
    let (h, kvh) = heads;
    let dev = Device::Cpu;
    let r = |shape: (usize, usize, usize, usize)| Tensor::randn(0f32, 1.0, shape, &dev);
    let keys = PREFIX + earlier + t;
    let mut m = vec![f32::NEG_INFINITY; b * t * keys];
    for bi in 0..b {
        for i in 0..t {
            for j in 0..PREFIX + earlier + i + 1 {
                m[(bi * t + i) * keys + j] = 0.0;
            }
        }
    }
    let r_kv = |shape| r(shape)?.to_dtype(kv);
    Ok([
        r((b, t, h, HD))?.transpose(1, 2)?.contiguous()?,
        r_kv((b, kvh, t, HD))?,
        r_kv((b, kvh, t, HD))?,
        Tensor::from_vec(m, (b, t, keys), &dev)?,
        r_kv((1, kvh, PREFIX, HD))?,
        r_kv((1, kvh, PREFIX, HD))?,
        r_kv((b, kvh, earlier, HD))?,
        r_kv((b, kvh, earlier, HD))?,
    ])
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let shapes = [
        ("prefill_256", 1, 256, 0),
        ("prefill_256_after_512", 1, 256, 512),
        ("label_pass_b8", 8, 24, 60),
        ("decode_b8", 8, 1, 200),
    ];
    let models = [("smollm2", (9, 3)), ("qwen2.5", (14, 2))];
    let cases = models.into_iter().flat_map(|m| {
        shapes
            .into_iter()
            .flat_map(move |s| [DType::F32, DType::F16].map(|kv| (m, s, kv)))
    });
    for ((model, heads), (name, b, t, earlier), kv) in cases {
        let [q, k, v, m, pk, pv, ek, ev] = case(kv, heads, b, t, earlier).unwrap();
        let seen: usize = (0..t).map(|i| PREFIX + earlier + i + 1).sum();
        g.throughput(Throughput::Elements((4 * b * heads.0 * HD * seen) as u64));
        let name = format!("{model}/{name}/{}", kv.as_str());
        let mut before = vec![(&pk, &pv)];
        if earlier > 0 {
            before.push((&ek, &ev));
        }
        g.bench_function(&name, |bench| {
            bench.iter(|| attention_cpu(&q, &k, &v, &m, &before, 0.125).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, attention);
criterion_main!(benches);
