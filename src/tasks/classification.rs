//! Single-label classification over a fixed label set: every label is a candidate, scored exactly.

use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::embeddings::TaskEmbeddings;
use crate::prompt::PromptBuilder;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// Single-label classification over a fixed label set (Autolabel's `classification`, and
/// `entity_matching`, which is classification over labels like "duplicate" / "not duplicate").
pub struct Classification {
    name: String,
    labels: Arc<Vec<String>>,
    prompt: PromptBuilder,
    label_column: Option<String>,
    /// Each row's labels under label selection (by line number).
    row_labels: Option<HashMap<u64, Arc<Vec<String>>>>,
    chain_of_thought: bool,
    /// The config's labels (with their descriptions, if any), to show them in another order.
    config_labels: Option<crate::config::Labels>,
    notices: Vec<String>,
}

pub(crate) const CLASSIFICATION_GUIDELINES: &str = "Your job is to correctly label the provided input example into one of the following {num_labels} categories.\nCategories:\n{labels}\n";
const OUTPUT_GUIDELINES: &str =
    "You will return the answer with just one element: \"the correct label\"";

impl Classification {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        Self::with_guidelines(config, data, CLASSIFICATION_GUIDELINES)
    }

    /// A classification whose default task guidelines (used when the config has none) are
    /// `default_guidelines`.
    pub fn with_guidelines(
        config: &TaskConfig,
        data: &Dataset,
        default_guidelines: &str,
    ) -> Result<Self> {
        let src = &config.source;
        let labels = config.labels();
        if labels.is_empty() {
            bail!(
                "{src}: config key 'prompt.labels' is missing; a {} task needs its label list",
                config.task_type
            )
        }
        let label_column = config.dataset.label_column.clone();
        let mut prompt = super::config_prompt(
            config,
            data,
            (default_guidelines, OUTPUT_GUIDELINES),
            "Input: {example}\nOutput: {label}",
            &labels,
            label_column.clone(),
        )?;
        let mut notices = Vec::new();
        let chain_of_thought = config.prompt.chain_of_thought == Some(true);
        // Few-shot and label selection share the embedding model and the rows' embeddings.
        let mut embeddings = TaskEmbeddings::new(config, data, &prompt);
        // With chain of thought an example's answer is shown as Autolabel shows it, after its
        // explanation: {"label": "..."}.
        let wrap = label_column.clone().filter(|_| chain_of_thought);
        few_shot::add_derived_few_shot_examples(
            config,
            &mut prompt,
            &mut notices,
            &mut embeddings,
            &move |name: &str, lookup: &dyn Fn(&str) -> Option<String>| {
                let v = lookup(name)?;
                Some(match &wrap {
                    Some(c) if c == name => crate::chain_of_thought::label_json(v.trim()),
                    _ => v,
                })
            },
        )?;
        let row_labels = super::label_selection::select_labels(
            config,
            &mut prompt,
            &mut notices,
            &mut embeddings,
        )?;
        notices.extend(super::missing_label_column(
            data,
            label_column.as_deref(),
            "accuracy",
        ));
        Ok(Classification {
            name: config.task_name.clone(),
            labels: Arc::new(labels),
            prompt,
            label_column,
            row_labels,
            chain_of_thought,
            config_labels: config.prompt.labels.clone(),
            notices,
        })
    }
}

impl Task for Classification {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }

    fn candidates(&self, _: &Dataset, row: &Row) -> Result<Arc<Vec<String>>, String> {
        Ok(match &self.row_labels {
            Some(rows) => rows.get(&row.line).cloned().unwrap_or(self.labels.clone()),
            None => self.labels.clone(),
        })
    }

    fn fixed_candidates(&self) -> Option<Arc<Vec<String>>> {
        // Under label selection the candidates differ per row.
        self.row_labels.is_none().then(|| self.labels.clone())
    }

    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        super::label_value(data, row, self.label_column.as_deref())
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn chain_of_thought(&self) -> bool {
        self.chain_of_thought
    }

    fn prompt_with_labels(
        &self,
        data: &Dataset,
        row: &Row,
        override_column: Option<(&str, &str)>,
        labels: &[String],
    ) -> Option<String> {
        if self.row_labels.is_some() || !self.prompt.shows_labels() {
            return None;
        }
        let text = match &self.config_labels {
            Some(l) => l.prompt_text_of(labels),
            None => labels.join("\n"),
        };
        Some(
            self.prompt
                .render_row_with_labels(row.line, &text, labels.len(), |name| {
                    super::row_value(data, row, override_column, name)
                }),
        )
    }
}
