//! Task types. A task turns a row into a prompt and a set of candidate answers; scoring, confidence
//! and output are shared by all tasks.

use crate::config::{FewShotExamples, TaskConfig};
use crate::dataset::{Dataset, ReadOptions, Row};
use crate::prompt::PromptBuilder;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::Arc;

pub trait Task: Send + Sync {
    /// The task's name (prefix of the output columns).
    fn name(&self) -> &str;
    /// The candidate answers for a row.
    fn candidates(&self, data: &Dataset, row: &Row) -> Arc<Vec<String>>;
    /// The candidate answers when they are the same for every row (checked once, up front).
    fn fixed_candidates(&self) -> Option<Arc<Vec<String>>>;
    /// The user prompt for a row; `override_column` replaces one column's value (used to truncate
    /// an over-long input).
    fn prompt(&self, data: &Dataset, row: &Row, override_column: Option<(&str, &str)>) -> String;
    /// Columns of the row that the prompt shows (checked for emptiness, truncated when too long).
    fn input_columns(&self) -> Vec<String>;
    /// The ground-truth answer, when the data has one.
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String>;
    /// Notes for the user about config keys that are accepted but change nothing (yet).
    fn notices(&self) -> Vec<String>;
}

pub const SUPPORTED_TASK_TYPES: &[&str] = &["classification", "entity_matching"];

/// Builds the task a config describes and checks it against the data's columns.
pub fn build_task(config: &TaskConfig, data: &Dataset) -> Result<Box<dyn Task>> {
    match config.task_type.as_str() {
        "classification" | "entity_matching" => Ok(Box::new(Classification::new(config, data)?)),
        other => bail!(
            "{}: config key 'task_type' is '{other}', which is not supported yet; supported: {}",
            config.source,
            SUPPORTED_TASK_TYPES.join(", ")
        ),
    }
}

/// Single-label classification over a fixed label set (Autolabel's `classification`, and
/// `entity_matching`, which is classification over labels like "duplicate" / "not duplicate").
pub struct Classification {
    name: String,
    labels: Arc<Vec<String>>,
    prompt: PromptBuilder,
    label_column: Option<String>,
    notices: Vec<String>,
}

const CLASSIFICATION_GUIDELINES: &str = "Your job is to correctly label the provided input example into one of the following {num_labels} categories.\nCategories:\n{labels}\n";
const ENTITY_MATCHING_GUIDELINES: &str = "Your job is to tell whether the two given entities are duplicates of each other. Label the pair with one of the following {num_labels} categories.\nCategories:\n{labels}\n";
const OUTPUT_GUIDELINES: &str =
    "You will return the answer with just one element: \"the correct label\"";

impl Classification {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        let src = &config.source;
        let labels = config.labels();
        if labels.is_empty() {
            bail!(
                "{src}: config key 'prompt.labels' is missing; a {} task needs its label list",
                config.task_type
            )
        }
        let Some(template) = config.prompt.example_template.as_deref() else {
            bail!("{src}: config key 'prompt.example_template' is missing; e.g. \"Input: {{example}}\\nOutput: {{label}}\"")
        };
        let default_guidelines = if config.task_type == "entity_matching" {
            ENTITY_MATCHING_GUIDELINES
        } else {
            CLASSIFICATION_GUIDELINES
        };
        let label_column = config.dataset.label_column.clone();
        let blank: Vec<String> = label_column
            .iter()
            .chain(config.dataset.explanation_column.iter())
            .cloned()
            .collect();
        let mut prompt = PromptBuilder::new(
            config
                .prompt
                .task_guidelines
                .as_deref()
                .unwrap_or(default_guidelines),
            config
                .prompt
                .output_guidelines
                .as_deref()
                .unwrap_or(OUTPUT_GUIDELINES),
            template,
            &labels,
            blank,
        );
        prompt.check_columns(&data.columns, &data.path.display().to_string())?;
        let mut notices = Vec::new();
        add_few_shot_examples(config, &mut prompt, &mut notices)?;
        if config.prompt.chain_of_thought == Some(true) {
            notices.push("prompt.chain_of_thought is ignored: labels are scored exactly, with no generated explanation".into());
        }
        if config.prompt.label_selection == Some(true) {
            notices.push("prompt.label_selection is ignored: every label is scored".into());
        }
        if let Some(col) = &label_column {
            if data.column(col).is_none() {
                notices.push(format!(
                    "dataset.label_column '{col}' is not in {}; no accuracy will be reported",
                    data.path.display()
                ));
            }
        }
        Ok(Classification {
            name: config.task_name.clone(),
            labels: Arc::new(labels),
            prompt,
            label_column,
            notices,
        })
    }
}

/// One few-shot example: its value for a column name.
type ColumnLookup = Box<dyn Fn(&str) -> Option<String>>;

fn add_few_shot_examples(
    config: &TaskConfig,
    prompt: &mut PromptBuilder,
    notices: &mut Vec<String>,
) -> Result<()> {
    let Some(examples) = &config.prompt.few_shot_examples else {
        return Ok(());
    };
    let selection = config
        .prompt
        .few_shot_selection
        .as_deref()
        .unwrap_or("fixed");
    let rows: Vec<ColumnLookup> = match examples {
        FewShotExamples::Inline(list) => list
            .iter()
            .map(|ex| {
                let ex = ex.clone();
                Box::new(move |name: &str| {
                    ex.get(name).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                }) as Box<dyn Fn(&str) -> Option<String>>
            })
            .collect(),
        FewShotExamples::File(path) => {
            // Relative to the config file, else (as Autolabel does) to the working directory.
            let beside_config = config.base_dir.join(path);
            let full = if beside_config.exists() {
                beside_config
            } else {
                Path::new(path).to_path_buf()
            };
            let opts = ReadOptions {
                delimiter: config.delimiter()?,
                disable_quoting: config.dataset.disable_quoting.unwrap_or(false),
                lossy: false,
            };
            let seed = Dataset::read(&full, &opts).with_context(|| {
                format!(
                    "{}: config key 'prompt.few_shot_examples' names {path}, which cannot be read",
                    config.source
                )
            })?;
            let seed = Arc::new(seed);
            (0..seed.rows.len())
                .map(|i| {
                    let seed = seed.clone();
                    Box::new(move |name: &str| seed.value(&seed.rows[i], name).map(String::from))
                        as Box<dyn Fn(&str) -> Option<String>>
                })
                .collect()
        }
    };
    let n = config
        .prompt
        .few_shot_num
        .unwrap_or(rows.len())
        .min(rows.len());
    if selection != "fixed" {
        notices.push(format!(
            "prompt.few_shot_selection '{selection}' is not implemented yet; using the first {n} examples (fixed selection)"
        ));
    }
    for lookup in rows.iter().take(n) {
        prompt.add_seed_example(lookup);
    }
    Ok(())
}

impl Task for Classification {
    fn name(&self) -> &str {
        &self.name
    }

    fn candidates(&self, _: &Dataset, _: &Row) -> Arc<Vec<String>> {
        self.labels.clone()
    }

    fn fixed_candidates(&self) -> Option<Arc<Vec<String>>> {
        Some(self.labels.clone())
    }

    fn prompt(&self, data: &Dataset, row: &Row, override_column: Option<(&str, &str)>) -> String {
        self.prompt.render(|name| match override_column {
            Some((col, value)) if col == name => Some(value.to_string()),
            _ => data.value(row, name).map(String::from),
        })
    }

    fn input_columns(&self) -> Vec<String> {
        self.prompt.input_columns()
    }

    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        let col = self.label_column.as_deref()?;
        data.value(row, col)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }
}
