//! Task types, one file each behind the [`Task`] trait. A task owns its prompt, its candidate
//! answers, its ground truth and its notices; scoring, confidence and output are shared by the
//! closed-set tasks.

pub mod attribute_extraction;
pub mod attribute_report;
pub mod attribute_values;
pub mod attributes;
pub mod classification;
pub mod entity_matching;
pub mod example_selection;
mod few_shot;
pub mod label_selection;
pub mod multilabel;
pub mod multilabel_membership;
pub mod multilabel_report;
pub mod multilabel_subset;
pub mod multiple_choice;
pub mod named_entity_recognition;
pub mod ner_eval;
pub mod ner_format;
pub mod ner_report;
pub mod open;
pub mod python_literal;
pub mod question_answering;

use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::PromptBuilder;
use anyhow::{bail, Result};
use std::sync::Arc;

pub use classification::Classification;

pub trait Task: Send + Sync {
    /// The task's name (prefix of the output columns).
    fn name(&self) -> &str;
    /// The prompt every row is rendered through.
    fn prompt_builder(&self) -> &PromptBuilder;
    /// The candidate answers for a row (none for a task whose answers are generated), or why the
    /// row has none.
    fn candidates(&self, _data: &Dataset, _row: &Row) -> Result<Arc<Vec<String>>, String> {
        Ok(Arc::new(Vec::new()))
    }
    /// The candidate answers when they are the same for every row (checked once, up front).
    fn fixed_candidates(&self) -> Option<Arc<Vec<String>>> {
        None
    }
    /// Whether a candidate is a whole answer, scored with the end token after it (false: it
    /// is the start of an answer that goes on, e.g. one `label: yes` line of several).
    fn candidates_end_answer(&self) -> bool {
        true
    }
    /// The user prompt for a row; `override_column` replaces one column's value (used to truncate
    /// an over-long input).
    fn prompt(&self, data: &Dataset, row: &Row, override_column: Option<(&str, &str)>) -> String {
        self.prompt_builder()
            .render_row(row.line, |name| row_value(data, row, override_column, name))
    }
    /// Columns of the row that the prompt shows (checked for emptiness, truncated when too long).
    fn input_columns(&self) -> Vec<String> {
        self.prompt_builder().input_columns()
    }
    /// The ground-truth answer, when the data has one.
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String>;
    /// Notes for the user about config keys that are accepted but change nothing (yet).
    fn notices(&self) -> Vec<String>;
    /// The prompt for a row with the label list shown as `labels` (the fixed labels in another
    /// order), for tasks whose prompt lists their labels; None for the others.
    fn prompt_with_labels(
        &self,
        _data: &Dataset,
        _row: &Row,
        _override_column: Option<(&str, &str)>,
        _labels: &[String],
    ) -> Option<String> {
        None
    }
    /// Whether each row gets a generated explanation before its candidates are scored
    /// (`prompt.chain_of_thought`).
    fn chain_of_thought(&self) -> bool {
        false
    }
    /// A task whose answer is generated under a constraint instead of chosen from candidates.
    fn open(&self) -> Option<&dyn open::OpenTask> {
        None
    }
}

pub const SUPPORTED_TASK_TYPES: &[&str] = &[
    "classification",
    "entity_matching",
    "multilabel_classification",
    "named_entity_recognition",
    "attribute_extraction",
    "question_answering (extractive, or multiple choice with an options column)",
];

/// The prompt a config describes: its guidelines (else the task's defaults), its example
/// template (required; `example` shows one in the error), the labels for `{labels}`, and the
/// answer and explanation columns left blank in the current example; checked against the data's
/// columns.
pub(crate) fn config_prompt(
    config: &TaskConfig,
    data: &Dataset,
    defaults: (&str, &str),
    example: &str,
    labels: &[String],
    answer_column: Option<String>,
) -> Result<PromptBuilder> {
    let Some(template) = config.prompt.example_template.as_deref() else {
        bail!(
            "{}: config key 'prompt.example_template' is missing; e.g. {example:?}",
            config.source
        )
    };
    let blank: Vec<String> = answer_column
        .into_iter()
        .chain(config.dataset.explanation_column.iter().cloned())
        .collect();
    // Labels with descriptions show them, as Autolabel does (when the task's labels are the
    // config's).
    let label_text = match &config.prompt.labels {
        Some(l) if !labels.is_empty() && l.names() == labels => l.prompt_text(),
        _ => labels.join("\n"),
    };
    let prompt = PromptBuilder::with_label_text(
        config
            .prompt
            .task_guidelines
            .as_deref()
            .unwrap_or(defaults.0),
        config
            .prompt
            .output_guidelines
            .as_deref()
            .unwrap_or(defaults.1),
        template,
        &label_text,
        labels.len(),
        blank,
    );
    prompt.check_columns(&data.columns, &data.path.display().to_string())?;
    Ok(prompt)
}

/// A row's value in column `name`, or `override_column`'s value when it names that column (a
/// truncated input).
pub(crate) fn row_value(
    data: &Dataset,
    row: &Row,
    override_column: Option<(&str, &str)>,
    name: &str,
) -> Option<String> {
    match override_column {
        Some((col, value)) if col == name => Some(value.to_string()),
        _ => data.value(row, name).map(String::from),
    }
}

/// The note for a configured label column the data does not have (`what`: the figures that are
/// then not reported).
pub(crate) fn missing_label_column(
    data: &Dataset,
    column: Option<&str>,
    what: &str,
) -> Option<String> {
    let c = column.filter(|c| data.column(c).is_none())?;
    Some(format!(
        "dataset.label_column '{c}' is not in {}; no {what} will be reported",
        data.path.display()
    ))
}

/// A row's trimmed, non-empty value in `column` (a label column's ground truth).
pub(crate) fn label_value(data: &Dataset, row: &Row, column: Option<&str>) -> Option<String> {
    data.value(row, column?)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Builds the task a config describes and checks it against the data's columns.
pub fn build_task(config: &TaskConfig, data: &Dataset) -> Result<Box<dyn Task>> {
    match config.task_type.as_str() {
        "classification" => Ok(Box::new(Classification::new(config, data)?)),
        "entity_matching" => Ok(Box::new(entity_matching::new(config, data)?)),
        "multilabel_classification" => Ok(Box::new(multilabel::MultiLabel::new(config, data)?)),
        "question_answering" if multiple_choice::is_multiple_choice(config, data) => Ok(Box::new(
            multiple_choice::MultipleChoice::new(config, data)?,
        )),
        "question_answering" => Ok(Box::new(question_answering::QuestionAnswering::new(
            config, data,
        )?)),
        "attribute_extraction" if !attributes::all_entity_lists(config) => Ok(Box::new(
            attribute_extraction::AttributeExtraction::new(config, data)?,
        )),
        "named_entity_recognition" | "attribute_extraction" => Ok(Box::new(
            named_entity_recognition::NamedEntityRecognition::new(config, data)?,
        )),
        other => bail!(
            "{}: config key 'task_type' is '{other}', which is not supported yet; supported: {}",
            config.source,
            SUPPORTED_TASK_TYPES.join(", ")
        ),
    }
}
