//! Prints the top next-token log-probs after a token sequence: `top_tokens MODEL.gguf id,id,...`
use autolabel_models::architectures::decoder::build_mask;
use autolabel_models::weights::gguf::GgufFile;
use candle_core::{Device, Tensor, D};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dev = Device::Cpu;
    let mut g = GgufFile::open(args[1].as_ref())?;
    let dec = g.load_decoder(&dev, Some(4096), Default::default())?;
    let ids: Vec<u32> = args[2].split(',').map(|s| s.parse().unwrap()).collect();
    let n = ids.len();
    let toks = Tensor::from_vec(ids, (1, n), &dev)?;
    let pos = Tensor::arange(0u32, n as u32, &dev)?.reshape((1, n))?;
    let mask = build_mask(1, n, n, &dev, |_, q, k| k <= q)?;
    let (h, _) = dec.forward(&toks, &pos, &mask, None)?;
    let last = h.narrow(1, n - 1, 1)?.squeeze(1)?;
    let lp = candle_nn::ops::log_softmax(&dec.logits(&last)?, D::Minus1)?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let mut idx: Vec<usize> = (0..lp.len()).collect();
    idx.sort_by(|a, b| lp[*b].total_cmp(&lp[*a]));
    for i in &idx[..8] {
        println!("{i} {:.4}", lp[*i]);
    }
    Ok(())
}
