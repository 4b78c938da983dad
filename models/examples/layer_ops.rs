use candle_core::{Device, Tensor, D};
use std::time::Instant;
fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let t = 512usize;
    let (hs, h, kvh, hd, ffn) = (576usize, 9usize, 3usize, 64usize, 1536usize);
    let x = Tensor::randn(0f32, 1.0, (t, hs), &dev)?;
    let w = Tensor::ones(hs, candle_core::DType::F32, &dev)?;
    let wqkv = Tensor::randn(0f32, 0.05, (hs + 2 * kvh * hd, hs), &dev)?;
    let wo = Tensor::randn(0f32, 0.05, (hs, hs), &dev)?;
    let wg = Tensor::randn(0f32, 0.05, (ffn, hs), &dev)?;
    let wd = Tensor::randn(0f32, 0.05, (hs, ffn), &dev)?;
    let cos = Tensor::randn(0f32, 1.0, (1, t, hd / 2), &dev)?;
    let sin = cos.clone();
    let mask = Tensor::zeros((1, 1, 1, t, t), candle_core::DType::F32, &dev)?;
    let mut times = std::collections::BTreeMap::<&str, f64>::new();
    let n = 20;
    for _ in 0..n {
        let mut tm = |name: &'static str,
                      f: &mut dyn FnMut() -> candle_core::Result<Tensor>|
         -> candle_core::Result<Tensor> {
            let s = Instant::now();
            let r = f()?;
            *times.entry(name).or_default() += s.elapsed().as_secs_f64();
            Ok(r)
        };
        let xn = tm("rms_norm", &mut || candle_nn::ops::rms_norm(&x, &w, 1e-5))?;
        let _xn2 = tm("fused_rms_norm", &mut || {
            autolabel_kernels::rms_norm(&x, &w, 1e-5)
        })?;
        let qkv = tm("mm_qkv", &mut || xn.matmul(&wqkv.t()?))?;
        let q = tm("split_heads", &mut || {
            qkv.narrow(1, 0, hs)?
                .reshape((1, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()
        })?;
        let k = tm("split_heads", &mut || {
            qkv.narrow(1, hs, kvh * hd)?
                .reshape((1, t, kvh, hd))?
                .transpose(1, 2)?
                .contiguous()
        })?;
        let v = tm("split_heads", &mut || {
            qkv.narrow(1, hs + kvh * hd, kvh * hd)?
                .reshape((1, t, kvh, hd))?
                .transpose(1, 2)?
                .contiguous()
        })?;
        let q = tm("rope", &mut || {
            candle_nn::rotary_emb::rope_i(&q, &cos, &sin)
        })?;
        let k = tm("rope", &mut || {
            candle_nn::rotary_emb::rope_i(&k, &cos, &sin)
        })?;
        let qg = q.reshape((1, kvh, 3 * t, hd))?;
        let s = tm("mm_qk", &mut || qg.matmul(&k.t()?))?;
        let _s2 = tm("mm_qk_contig", &mut || qg.matmul(&k.t()?.contiguous()?))?;
        let _s3 = tm("mm_qk_scaledq", &mut || (&qg * 0.125)?.matmul(&k.t()?))?;
        let s0 = s.clone();
        let s = tm("scale", &mut || s.clone() * 0.125)?;
        let s = tm("mask_add", &mut || {
            s.reshape((1, kvh, 3, t, t))?.broadcast_add(&mask)
        })?;
        let p = tm("softmax", &mut || candle_nn::ops::softmax_last_dim(&s))?;
        let m3 = mask.reshape((1, t, t))?;
        let _p2 = tm("fused_softmax", &mut || {
            autolabel_kernels::masked_softmax(&s0.reshape((1, kvh * 3, t, t))?, &m3, 0.125)
        })?;
        let a = tm("mm_pv", &mut || p.reshape((1, kvh, 3 * t, t))?.matmul(&v))?;
        let a = tm("merge_heads", &mut || {
            a.reshape((1, h, t, hd))?
                .transpose(1, 2)?
                .reshape((t, h * hd))
        })?;
        let o = tm("mm_o", &mut || a.matmul(&wo.t()?))?;
        let x1 = tm("residual", &mut || &x + &o)?;
        let xn = tm("rms_norm", &mut || candle_nn::ops::rms_norm(&x1, &w, 1e-5))?;
        let g = tm("mm_gate_up", &mut || xn.matmul(&wg.t()?))?;
        let u = tm("mm_gate_up", &mut || xn.matmul(&wg.t()?))?;
        let sg = tm("silu", &mut || candle_nn::ops::silu(&g))?;
        let f = tm("mul", &mut || &sg * &u)?;
        let _f2 = tm("fused_silu_mul", &mut || {
            autolabel_kernels::silu_mul(&g, &u)
        })?;
        let d = tm("mm_down", &mut || f.matmul(&wd.t()?))?;
        let _ = tm("residual", &mut || &x1 + &d)?;
        let _ = D::Minus1;
    }
    let total: f64 = times.values().sum();
    for (k, v) in &times {
        println!(
            "{k:>12} {:7.3} ms {:5.1}%",
            v / n as f64 * 1e3,
            v / total * 100.0
        );
    }
    println!("total {:.3} ms per layer", total / n as f64 * 1e3);
    Ok(())
}
