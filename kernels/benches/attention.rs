//! Criterion benches of the fused CPU attention (`attention_cpu`) at the shapes the decoders
//! run: SmolLM2's heads (9 query heads over 3 key heads of 64), a 112-token shared prefix.
//!
//!     cargo bench -p autolabel-kernels --bench attention
//!
//! - `prefill_256`: one row's 256-position chunk over the prefix and itself (causal).
//! - `prefill_256_after_512`: a long row's third chunk: the prefix, 512 earlier keys, itself.
//! - `label_pass_b8`: 8 rows of 24 trie nodes over the prefix, a 60-token prompt and the nodes.
//! - `decode_b8`: a generation step, 8 rows of one query over the prefix and 200 keys.
//!
//! Throughput is in FLOP/s of the two products over the keys each query sees (causal halves
//! not counted).

use autolabel_kernels::attention_cpu;
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const H: usize = 9;
const KVH: usize = 3;
const HD: usize = 64;
const PREFIX: usize = 112;

/// Queries `[b, H, t, HD]`, their keys and values `[b, KVH, t, HD]`, `earlier` keys of each row
/// before them, a causal mask over prefix + earlier + own keys.
fn case(b: usize, t: usize, earlier: usize) -> candle_core::Result<[Tensor; 8]> {
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
    Ok([
        r((b, t, H, HD))?.transpose(1, 2)?.contiguous()?,
        r((b, KVH, t, HD))?,
        r((b, KVH, t, HD))?,
        Tensor::from_vec(m, (b, t, keys), &dev)?,
        r((1, KVH, PREFIX, HD))?,
        r((1, KVH, PREFIX, HD))?,
        r((b, KVH, earlier, HD))?,
        r((b, KVH, earlier, HD))?,
    ])
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (name, b, t, earlier) in [
        ("prefill_256", 1, 256, 0),
        ("prefill_256_after_512", 1, 256, 512),
        ("label_pass_b8", 8, 24, 60),
        ("decode_b8", 8, 1, 200),
    ] {
        let [q, k, v, m, pk, pv, ek, ev] = case(b, t, earlier).unwrap();
        let seen: usize = (0..t).map(|i| PREFIX + earlier + i + 1).sum();
        g.throughput(Throughput::Elements((4 * b * H * HD * seen) as u64));
        let mut before = vec![(&pk, &pv)];
        if earlier > 0 {
            before.push((&ek, &ev));
        }
        g.bench_function(name, |bench| {
            bench.iter(|| attention_cpu(&q, &k, &v, &m, &before, 0.125).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, attention);
criterion_main!(benches);
