use candle_core::{DType, Device, Tensor};
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    for (m, k, n) in [
        (1usize, 576usize, 1536usize),
        (8, 576, 1536),
        (8, 576, 49152),
        (16, 576, 1536),
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)?;
        for (name, f) in [("x@w.t()", 0), ("skinny", 1)] {
            let t = std::time::Instant::now();
            let reps = 50;
            for _ in 0..reps {
                let _y = if f == 0 {
                    x.matmul(&w.t()?)?
                } else {
                    autolabel_kernels::skinny_matmul_t(&x, &w)?
                };
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!(
                "m={m} k={k} n={n} {name}: {:.3} ms, {:.1} GFLOP/s",
                s * 1e3,
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
    }
    let _ = DType::F32;
    Ok(())
}
