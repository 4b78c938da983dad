//! Criterion benches of the quantized matmul, per GGUF block type and shape, against candle's own
//! quantized matmul and the f32 product of the same (dequantized) weights: the numbers behind
//! `--dtype q` versus `--dtype f32`.
//!
//!     cargo bench -p autolabel-kernels --bench quant_matmul            # everything (~10 min)
//!     cargo bench -p autolabel-kernels --bench quant_matmul -- 'q4_k/'  # one block type
//!
//! Throughput is in FLOP/s ("elem/s" = 2 * rows * n * k per second). Shapes are the real models':
//! SmolLM2's FFN up/gate (1536 x 576), Qwen2.5-0.5B's (4864 x 896) and its FFN down (896 x 4864,
//! the k-quant tensors of a Q4_K_M file). Rows: a generation step (1, 8) and prefills (128, 512).

use autolabel_kernels::BlockMatrix;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;

const SHAPES: [(&str, usize, usize); 3] = [
    ("smollm2_up", 1536, 576),
    ("qwen_up", 4864, 896),
    ("qwen_down", 896, 4864),
];
const ROWS: [usize; 4] = [1, 8, 128, 512];

fn name(t: GgmlDType) -> String {
    format!("{t:?}").to_lowercase()
}

fn quantized(c: &mut Criterion) {
    let dev = Device::Cpu;
    for dtype in BlockMatrix::TYPES {
        let mut g = c.benchmark_group(name(dtype));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for (shape, n, k) in SHAPES {
            if k % dtype.block_size() != 0 {
                continue;
            }
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let qt = QTensor::quantize(&w, dtype).unwrap();
            let ours =
                BlockMatrix::supports(dtype).then(|| BlockMatrix::from_qtensor(&qt).unwrap());
            let candle = QMatMul::from_qtensor(qt).unwrap();
            for rows in ROWS {
                let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
                g.throughput(Throughput::Elements((2 * rows * n * k) as u64));
                let id = format!("{shape}/{rows}");
                if let Some(ours) = &ours {
                    g.bench_with_input(BenchmarkId::new("ours", &id), &x, |b, x| {
                        b.iter(|| ours.matmul_t(x).unwrap())
                    });
                }
                g.bench_with_input(BenchmarkId::new("candle", &id), &x, |b, x| {
                    b.iter(|| candle.forward(x).unwrap())
                });
            }
        }
        g.finish();
    }
}

/// The f32 product `--dtype f32` runs (candle's GEMM; the skinny kernel for a few rows).
fn dense(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("f32");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for (shape, n, k) in SHAPES {
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        for rows in ROWS {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            g.throughput(Throughput::Elements((2 * rows * n * k) as u64));
            g.bench_with_input(
                BenchmarkId::new("f32", format!("{shape}/{rows}")),
                &x,
                |b, x| {
                    b.iter(|| {
                        if rows <= autolabel_kernels::SKINNY_MAX_ROWS {
                            autolabel_kernels::skinny_matmul_t(x, &w).unwrap()
                        } else {
                            x.matmul(&w.t().unwrap()).unwrap()
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, quantized, dense);
criterion_main!(benches);
