//! `x · wᵀ` at the shapes of a SmolLM2 generation step (a few activation rows times a weight
//! matrix, and the 49152-wide output head): candle's matmul against the skinny-matmul kernel.
//! `cargo run --release -p autolabel-models --example mm_bench`

use candle_core::{Device, Tensor};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (m, k, n) in [
        (1, 576, 1536),
        (8, 576, 1536),
        (8, 576, 49152),
        (12, 576, 1536),
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        for (name, skinny) in [("candle matmul", false), ("skinny_matmul", true)] {
            let reps = 50;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                if skinny {
                    autolabel_kernels::skinny_matmul_t(&x, &w)?;
                } else {
                    x.matmul(&w.t()?)?;
                }
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "m={m} k={k} n={n} {name}: {:.3} ms, {:.1} GFLOP/s",
                s * 1e3,
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
    }
    Ok(())
}
