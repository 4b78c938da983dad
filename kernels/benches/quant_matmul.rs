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
//! `peak/vpdpbusd_*` is the machine's integer peak the kernel is held to: independent VNNI
//! multiply-adds on registers, on every rayon thread, nothing loaded (counted as 2 ops per
//! u8 x i8 product, like the matmuls).

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

/// The integer peak: twelve independent `vpdpbusd` chains per thread (more than the
/// instruction's latency, 5 cycles, times its throughput, 2 per cycle), on every rayon thread;
/// 256-bit (AVX-VNNI) and 512-bit (AVX-512 VNNI), whichever the CPU has.
fn peak(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        const ITERS: usize = 100_000;
        const CHAINS: usize = 12;
        #[target_feature(enable = "avx2,avxvnni")]
        unsafe fn ymm() -> i32 {
            let mut acc = [_mm256_setzero_si256(); CHAINS];
            let w = _mm256_set1_epi8(3);
            let mut x = _mm256_set1_epi8(1);
            for _ in 0..ITERS {
                for a in acc.iter_mut() {
                    *a = _mm256_dpbusd_avx_epi32(*a, w, x);
                }
                x = std::hint::black_box(x);
            }
            let sum = acc
                .iter()
                .fold(_mm256_setzero_si256(), |s, a| _mm256_add_epi32(s, *a));
            _mm256_extract_epi32::<0>(sum)
        }
        #[target_feature(enable = "avx512f,avx512vnni")]
        unsafe fn zmm() -> i32 {
            let mut acc = [_mm512_setzero_si512(); CHAINS];
            let w = _mm512_set1_epi8(3);
            let mut x = _mm512_set1_epi8(1);
            for _ in 0..ITERS {
                for a in acc.iter_mut() {
                    *a = _mm512_dpbusd_epi32(*a, w, x);
                }
                x = std::hint::black_box(x);
            }
            let sum = acc
                .iter()
                .fold(_mm512_setzero_si512(), |s, a| _mm512_add_epi32(s, *a));
            _mm512_reduce_add_epi32(sum)
        }
        let threads = rayon::current_num_threads();
        let mut g = c.benchmark_group("peak");
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let has = |f: &str| match f {
            "ymm" => std::arch::is_x86_feature_detected!("avxvnni"),
            _ => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
        };
        for (name, bytes) in [("ymm", 32usize), ("zmm", 64)] {
            if !has(name) {
                continue;
            }
            // A u8 x i8 product per byte of the register, 2 ops each.
            g.throughput(Throughput::Elements(
                (threads * ITERS * CHAINS * bytes * 2) as u64,
            ));
            g.bench_function(format!("vpdpbusd_{name}"), |b| {
                b.iter(|| {
                    // SAFETY: the CPU has the instructions (checked above).
                    rayon::broadcast(|_| unsafe {
                        if bytes == 32 {
                            ymm()
                        } else {
                            zmm()
                        }
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, quantized, dense, peak);
criterion_main!(benches);
