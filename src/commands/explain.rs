//! `autolabel-local explain`: fills a seed file's explanation column (`dataset.explanation_column`)
//! as Autolabel's `generate_explanations` does, so that a chain-of-thought config can show each
//! example's reasoning. Every labeled example is put through Autolabel's explanation prompt (the
//! task's guidelines, the example with its label) and the model's explanation (with a chat
//! template it may take several lines, joined into one: the form a chain-of-thought run
//! generates) is written to the column.

use crate::config::{FewShotExamples, TaskConfig};
use crate::dataset::{Dataset, Row};
use crate::generation_pass::{generate_rows, Generates};
use crate::labeler::{Labeler, LabelerOptions};
use crate::output::{write_output, OutputColumns};
use crate::prompt::{format_template, PromptBuilder};
use crate::scoring_pass::PassOptions;
use crate::session::{CommonArgs, Session};
use crate::tasks::Task;
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;
use std::path::PathBuf;

/// Autolabel's explanation prompt for classification (`GENERATE_EXPLANATION_PROMPT`).
const EXPLANATION_PROMPT: &str = "Your job is to provide an explanation for why a specific output might have been generated for a task. \n\nBEGIN TASK DESCRIPTION\n{task_guidelines}\nEND TASK DESCRIPTION\nYou will be given an input example and the corresponding output. Your job is to provide an explanation for why the output is correct for the task above.\nThink step by step and generate an explanation with at most 2 sentences.{label_format}\n{labeled_example}\nExplanation: ";
/// Autolabel's `LABEL_FORMAT_IN_EXPLANATION` (explanations that end by naming the label).
const LABEL_FORMAT: &str =
    " The last line of the explanation should be - So, the answer is <label>.";

#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// Autolabel task config (JSON) with dataset.explanation_column.
    #[arg(long)]
    pub config: PathBuf,
    /// Labeled examples to explain (CSV, TSV or JSONL). Default: the config's
    /// prompt.few_shot_examples file.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to write the examples with their explanations. Default: the examples file itself
    /// (as Autolabel does), replaced atomically.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Explain every example again, also those that already have an explanation.
    #[arg(long)]
    pub overwrite: bool,
    /// Model, as for `run` (default: the config's local model, else the default card).
    #[arg(long)]
    pub model: Option<String>,
    /// Branch, tag or commit of a Hugging Face Hub model.
    #[arg(long)]
    pub revision: Option<String>,
    /// cpu, cuda or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights in memory: f32, f16, bf16 or q (as for `run`).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Send the prompt as plain text instead of through the model's chat template.
    #[arg(long)]
    pub no_chat_template: bool,
    /// Longest prompt + explanation in tokens.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens: usize,
    /// Most tokens of each explanation.
    #[arg(long, default_value_t = crate::chain_of_thought::DEFAULT_EXPLANATION_TOKENS)]
    pub explanation_tokens: usize,
    /// Examples generated together in one batch. Default: 8 on a CPU, 64 on a GPU.
    #[arg(long)]
    pub batch_size: Option<usize>,
}

/// What `explain` did.
#[derive(Debug, Clone)]
pub struct ExplainSummary {
    pub explained: usize,
    pub kept: usize,
    pub errors: usize,
    pub out: PathBuf,
}

/// The explanation prompt of a task, as a task the labeler can render rows through.
struct ExplanationTask {
    name: String,
    prompt: PromptBuilder,
    guidelines: String,
    explanation_column: String,
    label_column: String,
}

impl Task for ExplanationTask {
    fn name(&self) -> &str {
        &self.name
    }
    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }
    fn prompt(&self, data: &Dataset, row: &Row, override_column: Option<(&str, &str)>) -> String {
        let example = format_template(self.prompt.example_template(), |name| {
            if name == self.explanation_column {
                return Some(String::new());
            }
            crate::tasks::row_value(data, row, override_column, name)
        });
        format_template(EXPLANATION_PROMPT, |name| match name {
            "task_guidelines" => Some(self.guidelines.clone()),
            "label_format" => Some(LABEL_FORMAT.to_string()),
            "labeled_example" => Some(example.clone()),
            _ => None,
        })
    }
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        crate::tasks::label_value(data, row, Some(&self.label_column))
    }
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One bounded line per labeled example.
struct Spec<'a> {
    task: &'a ExplanationTask,
    grammar: Grammar,
    budget: usize,
}

impl Generates for Spec<'_> {
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String> {
        match self.task.ground_truth(data, row) {
            Some(_) => Ok(self.grammar.clone()),
            None => Err(format!(
                "line {}: no label in column '{}' to explain",
                row.line, self.task.label_column
            )),
        }
    }
    fn max_answer_tokens(&self, _: &Dataset, _: &Row, _: usize) -> usize {
        self.budget
    }
}

/// The examples file `explain` reads by default: the config's few-shot examples file.
fn default_data(config: &TaskConfig) -> Result<PathBuf> {
    match &config.prompt.few_shot_examples {
        Some(FewShotExamples::File(path)) => {
            let beside = config.base_dir.join(path);
            Ok(if beside.exists() { beside } else { PathBuf::from(path) })
        }
        Some(FewShotExamples::Inline(_)) => bail!(
            "{}: prompt.few_shot_examples is a list inside the config; write the examples to a CSV file and pass it with --data (explain writes the explanations into a file)",
            config.source
        ),
        None => bail!(
            "{}: the config has no prompt.few_shot_examples; pass the labeled examples to explain with --data",
            config.source
        ),
    }
}

pub fn explain(args: &ExplainArgs) -> Result<ExplainSummary> {
    let mut config = TaskConfig::load(&args.config)?;
    let src = config.source.clone();
    if !["classification", "entity_matching"].contains(&config.task_type.as_str()) {
        bail!(
            "{src}: explain writes explanations for label-set tasks (classification, entity_matching), whose chain of thought scores the labels after the explanation; task_type is '{}'",
            config.task_type
        )
    }
    let Some(explanation_column) = config.dataset.explanation_column.clone() else {
        bail!("{src}: config key 'dataset.explanation_column' is missing; name the column the explanations go to (e.g. \"explanation\") and show it in prompt.example_template")
    };
    let Some(label_column) = config.dataset.label_column.clone() else {
        bail!("{src}: config key 'dataset.label_column' is missing; explanations explain each example's label")
    };
    let data_path = match &args.data {
        Some(p) => p.clone(),
        None => default_data(&config)?,
    };
    // The examples are the data here: the task is built without few-shot examples and without
    // chain of thought (which would ask for the explanations this command writes).
    config.prompt.few_shot_examples = None;
    config.prompt.chain_of_thought = Some(false);
    config.prompt.label_selection = Some(false);
    let common = CommonArgs {
        config: args.config.clone(),
        data: data_path.clone(),
        model: args.model.clone(),
        revision: args.revision.clone(),
        device: args.device.clone(),
        max_items: None,
        sample_seed: None,
        no_chat_template: args.no_chat_template,
        max_tokens: args.max_tokens,
        dtype: args.dtype.clone(),
        few_shot_examples: None,
        disable_quoting: false,
        lossy: false,
        explanation_tokens: args.explanation_tokens,
        label_orders: 1,
    };
    let session = Session::open_config(&common, config)?;
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    let data = &session.data;
    if data.column(&label_column).is_none() {
        bail!(
            "{}: has no label column '{label_column}' (dataset.label_column); its columns: {}",
            data_path.display(),
            data.columns.join(", ")
        )
    }
    let labels = session.config.labels();
    let label_text = labels.join("\n");
    let guidelines = format_template(
        session.config.prompt.task_guidelines.as_deref().unwrap_or(
            if session.config.task_type == "entity_matching" {
                crate::tasks::entity_matching::ENTITY_MATCHING_GUIDELINES
            } else {
                crate::tasks::classification::CLASSIFICATION_GUIDELINES
            },
        ),
        |name| match name {
            "labels" => Some(label_text.clone()),
            "num_labels" => Some(labels.len().to_string()),
            _ => None,
        },
    );
    let task = ExplanationTask {
        name: session.task.name().to_string(),
        prompt: session.task.prompt_builder().clone(),
        guidelines,
        explanation_column: explanation_column.clone(),
        label_column,
    };
    let labeler = Labeler::new(
        &session.model,
        &task,
        &LabelerOptions {
            chat_template: !args.no_chat_template,
            max_tokens: args.max_tokens,
            explanation_tokens: args.explanation_tokens,
            label_orders: 1,
        },
    )?;
    let existing = |row: &Row| {
        data.value(row, &explanation_column)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let todo: Vec<usize> = (0..data.rows.len())
        .filter(|&i| args.overwrite || existing(&data.rows[i]).is_none())
        .collect();
    let mut wanted = vec![false; data.rows.len()];
    for &i in &todo {
        wanted[i] = true;
    }
    let spec = Spec {
        task: &task,
        grammar: crate::chain_of_thought::seed_explanation_grammar(
            &labeler,
            args.explanation_tokens,
        )?,
        budget: args.explanation_tokens + 2,
    };
    eprintln!(
        "explaining {} of {} examples of {} with {}",
        todo.len(),
        data.rows.len(),
        data_path.display(),
        session.model.path.display()
    );
    let pass = generate_rows(
        data,
        &labeler,
        &spec,
        PassOptions::new(args.batch_size, args.max_tokens),
        Some(&todo),
    )?;
    let mut columns = OutputColumns::new(vec![explanation_column.clone()], data.rows.len());
    let (mut explained, mut errors) = (0, Vec::new());
    for (i, row) in data.rows.iter().enumerate() {
        let value = if wanted[i] {
            match &pass.rows[i] {
                Ok(a) => {
                    explained += 1;
                    crate::chain_of_thought::one_line(&a.text)
                }
                Err(e) => {
                    errors.push(e.clone());
                    existing(row).unwrap_or_default()
                }
            }
        } else {
            existing(row).unwrap_or_default()
        };
        columns.rows[i].push(value);
    }
    let out = args.out.clone().unwrap_or(data_path);
    write_output(&out, data, &columns)?;
    let kept = data.rows.len() - todo.len();
    eprintln!(
        "explained {explained} examples in {:.1} s ({} generated tokens){} -> {} (column '{explanation_column}')",
        pass.seconds,
        pass.tokens,
        if kept > 0 {
            format!("; {kept} kept their explanation (--overwrite explains them again)")
        } else {
            String::new()
        },
        out.display()
    );
    if !errors.is_empty() {
        eprintln!(
            "{} examples could not be explained; first ones:",
            errors.len()
        );
        for e in errors.iter().take(5) {
            eprintln!("  {e}");
        }
    }
    Ok(ExplainSummary {
        explained,
        kept,
        errors: errors.len(),
        out,
    })
}
