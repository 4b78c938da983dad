//! What `run` and `plan` share: config, data, task and model loaded and checked together.

use crate::config::{FewShotExamples, TaskConfig};
use crate::dataset::{Dataset, ReadOptions};
use crate::labeler::{Labeler, LabelerOptions};
use crate::model_source::{available_memory, choose_dtype, choose_model, model_name, parse_device};
use crate::operating_point::{ConfidenceArgs, OperatingPoint};
use crate::tasks::{build_task, Task};
use anyhow::{Context, Result};
use autolabel_models::weights::gguf::WeightFormat;
use autolabel_models::{LoadOptions, LocalModel};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Autolabel task config (JSON).
    #[arg(long)]
    pub config: PathBuf,
    /// Data to label: CSV, TSV or JSONL.
    #[arg(long)]
    pub data: PathBuf,
    /// Model: a model card name (see `autolabel-local models`), a local .gguf file, a local
    /// Hugging Face model directory (config.json, tokenizer.json, safetensors), a Hugging Face
    /// Hub repo (org/name, e.g. google/flan-t5-large), or a GGUF file in one
    /// (org/name:file.gguf). Default: the config's local model, else the default card.
    #[arg(long)]
    pub model: Option<String>,
    /// Branch, tag or commit of a Hugging Face Hub model (default main).
    #[arg(long)]
    pub revision: Option<String>,
    /// cpu, cuda or metal (cuda and metal need a build with that cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Label only the first N rows (with --sample-seed: N rows drawn at random).
    #[arg(long)]
    pub max_items: Option<usize>,
    /// With --max-items, draw the rows at random with this seed (kept in file order), e.g. for a
    /// seed set from a file sorted by label.
    #[arg(long, requires = "max_items")]
    pub sample_seed: Option<u64>,
    /// Send the Autolabel prompt as plain text instead of through the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,
    /// Longest prompt + answer in tokens; longer inputs are cut from the middle (with a warning).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Weights in memory: q (keep a GGUF file's quantization; safetensors decoders: Q8_0 at load),
    /// f32, f16 or bf16. Default: on the
    /// CPU the fastest form that fits in available memory (q where the integer SIMD kernels run,
    /// x86-64 with AVX2; else f32), said in the run's first lines; bf16 on a GPU.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Seed examples file (CSV/TSV/JSONL) to use instead of the config's prompt.few_shot_examples.
    #[arg(long)]
    pub few_shot_examples: Option<PathBuf>,
    /// Treat quotes in the data as plain text (like dataset.disable_quoting).
    #[arg(long)]
    pub disable_quoting: bool,
    /// Replace bytes in the data that are not UTF-8 with U+FFFD instead of stopping.
    #[arg(long)]
    pub lossy: bool,
    /// With prompt.chain_of_thought: most tokens of each row's generated explanation (one
    /// line; a longer one is cut there and its labels scored after it).
    #[arg(long, default_value_t = crate::chain_of_thought::DEFAULT_EXPLANATION_TOKENS)]
    pub explanation_tokens: usize,
    /// Ask each row with the label list in K orders (rotations of the configured list) and
    /// average its label probabilities over them; costs about K times the scoring. For models
    /// that favour the label listed first.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub label_orders: usize,
}

pub struct Session {
    pub config: TaskConfig,
    pub data: Dataset,
    pub task: Box<dyn Task>,
    pub model: LocalModel,
    /// The `--dtype` the weights are held in (asked for, or chosen for this machine).
    pub dtype: String,
    pub notices: Vec<String>,
}

impl Session {
    pub fn open(args: &CommonArgs) -> Result<Self> {
        Self::open_config(args, TaskConfig::load(&args.config)?)
    }

    /// [`Session::open`] with the config already loaded (and perhaps changed) from `args.config`.
    pub fn open_config(args: &CommonArgs, mut config: TaskConfig) -> Result<Self> {
        if let Some(seed) = &args.few_shot_examples {
            let seed = std::path::absolute(seed)?;
            config.prompt.few_shot_examples =
                Some(FewShotExamples::File(seed.display().to_string()));
        }
        let opts = ReadOptions {
            delimiter: config.delimiter()?,
            disable_quoting: args.disable_quoting
                || config.dataset.disable_quoting.unwrap_or(false),
            lossy: args.lossy,
        };
        let mut data = Dataset::read(&args.data, &opts)?;
        if let Some(n) = args.max_items {
            match args.sample_seed {
                Some(seed) => data.rows = sample_rows(std::mem::take(&mut data.rows), n, seed),
                None => data.rows.truncate(n),
            }
        }
        let task = build_task(&config, &data)?;
        let device = parse_device(&args.device)?;
        let (model_path, model_notice) =
            choose_model(args.model.as_deref(), args.revision.as_deref(), &config)?;
        let dtype = choose_dtype(
            args.dtype.as_deref(),
            &args.device,
            &model_path,
            available_memory(),
            autolabel_kernels::BlockMatrix::simd_available(),
        )?;
        let model = LocalModel::load(
            &model_path,
            &device,
            &LoadOptions {
                max_context: Some(args.max_tokens),
                weights: WeightFormat::parse(&dtype.name)?,
            },
        )
        .with_context(|| format!("cannot load model {}", model_path.display()))?;
        let mut notices: Vec<String> = model_notice.into_iter().collect();
        if let Some(why) = &dtype.why {
            notices.push(format!("weights held as --dtype {}: {why}", dtype.name));
        }
        notices.extend(task.notices());
        if !config.ignored_keys.is_empty() {
            notices.push(format!(
                "config keys {} are Autolabel's but change nothing here (dataset generation, chunking, transforms, API endpoints and vector stores are not part of this tool); ignored",
                config.ignored_keys.join(", ")
            ));
        }
        if config.model.compute_confidence == Some(false) {
            notices.push("model.compute_confidence is false, but confidence comes free with exact scoring and is always written".into());
        }
        Ok(Session {
            config,
            data,
            task,
            model,
            dtype: dtype.name,
            notices,
        })
    }

    /// The model's file name, or `org/name@commit` for a Hub model (what a calibration file
    /// records).
    pub fn model_file(&self) -> String {
        model_name(&self.model.path)
    }

    /// Confidence method, temperature and threshold, checked against this task and model.
    pub fn operating_point(&self, args: &ConfidenceArgs) -> Result<OperatingPoint> {
        let labels = self.task.fixed_candidates();
        OperatingPoint::resolve(
            args,
            self.task.name(),
            labels.as_deref().map(|l| l.as_slice()),
            &self.model_file(),
        )
    }

    /// The labeler for this session's model and task, as the command line asks.
    pub fn labeler(&self, args: &CommonArgs) -> Result<Labeler<'_>> {
        Labeler::new(
            &self.model,
            self.task.as_ref(),
            &LabelerOptions {
                chat_template: !args.no_chat_template,
                max_tokens: args.max_tokens,
                explanation_tokens: args.explanation_tokens,
                label_orders: args.label_orders,
            },
        )
    }
}

/// `n` rows drawn without replacement by a seeded shuffle, returned in their original order.
fn sample_rows<T>(rows: Vec<T>, n: usize, seed: u64) -> Vec<T> {
    let mut state = seed ^ 0x9E3779B97F4A7C15;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut order: Vec<usize> = (0..rows.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    let mut keep = vec![false; rows.len()];
    for &i in order.iter().take(n) {
        keep[i] = true;
    }
    rows.into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sampled_rows_are_distinct_in_order_and_seed_dependent() {
        let a = super::sample_rows((0..1000).collect(), 50, 1);
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(*a.last().unwrap() > 500, "drawn from the whole file");
        assert_ne!(a, super::sample_rows((0..1000).collect(), 50, 2));
        assert_eq!(a, super::sample_rows((0..1000).collect(), 50, 1));
        assert_eq!(super::sample_rows(vec![1, 2], 5, 0), vec![1, 2]);
    }
}
