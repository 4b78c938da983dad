//! Scores candidate answers for one chat prompt: `cargo run --release -p autolabel-models --example score_one -- MODEL.gguf "question" label1 label2 ...`
use autolabel_models::{LoadOptions, LocalModel, ScoreRequest};
use candle_core::Device;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = LocalModel::load(
        args[1].as_ref(),
        &Device::Cpu,
        &LoadOptions {
            max_context: Some(4096),
            ..Default::default()
        },
    )?;
    let prompt = format!(
        "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
        args[2]
    );
    let ids = model.encode(&prompt)?;
    println!("prompt tokens: {ids:?}");
    let eot = model.encode("<|im_end|>")?;
    let candidates: Vec<Vec<u32>> = args[3..]
        .iter()
        .map(|l| Ok([model.encode(l)?, eot.clone()].concat()))
        .collect::<anyhow::Result<_>>()?;
    let t = std::time::Instant::now();
    let out = model.scorer.score_batch(&[ScoreRequest {
        prompt: ids,
        candidates: candidates.clone(),
    }])?;
    println!("scored in {:?}", t.elapsed());
    for (l, (c, lp)) in args[3..]
        .iter()
        .zip(candidates.iter().zip(&out[0].token_logprobs))
    {
        println!("{l:>12} {c:?} {lp:?} total {:.4}", lp.iter().sum::<f32>());
    }
    Ok(())
}
