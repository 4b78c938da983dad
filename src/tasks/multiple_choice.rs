//! Multiple-choice question answering (Autolabel's `question_answering` with an `options` column,
//! e.g. sciq): each row's options are its candidates, scored exactly like a label set, so the
//! answer is always one of that row's options and the confidence is a probability over them.

use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::PromptBuilder;
use anyhow::Result;
use std::sync::Arc;

const TASK_GUIDELINES: &str = "You are an expert at answering questions. Your job is to answer the given question, choosing the best answer from among the options provided.";
const OUTPUT_GUIDELINES: &str =
    "You will return the answer with just one element: the correct option, copied exactly";

/// The column holding each row's options.
pub const OPTIONS_COLUMN: &str = "options";

pub struct MultipleChoice {
    name: String,
    prompt: PromptBuilder,
    label_column: Option<String>,
    notices: Vec<String>,
}

/// Whether a `question_answering` config is multiple choice: its example template shows an
/// `options` column of the data.
pub fn is_multiple_choice(config: &TaskConfig, data: &Dataset) -> bool {
    config
        .prompt
        .example_template
        .as_deref()
        .is_some_and(|t| t.contains(&format!("{{{OPTIONS_COLUMN}}}")))
        && data.column(OPTIONS_COLUMN).is_some()
}

/// A row's options: a JSON list of strings, or a Python list literal as Autolabel's sciq data
/// stores them (`['a', "b's", ...]`). Options are trimmed; repeated options count once.
pub fn parse_options(value: &str) -> Result<Vec<String>, String> {
    let v = value.trim();
    let items = if let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(v) {
        list.into_iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()
    } else {
        python_list(v)?
    };
    let mut out: Vec<String> = Vec::new();
    for s in items {
        let s = s.trim().to_string();
        if !s.is_empty() && !out.contains(&s) {
            out.push(s);
        }
    }
    if out.is_empty() {
        return Err("the option list is empty".into());
    }
    Ok(out)
}

/// A Python list literal of quoted strings.
fn python_list(v: &str) -> Result<Vec<String>, String> {
    match super::python_literal::parse(v) {
        Some(serde_json::Value::Array(items)) => Ok(items
            .into_iter()
            .map(|x| match x {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect()),
        _ => {
            let short: String = v.chars().take(60).collect();
            Err(format!(
                "not a list of options (JSON or ['a', 'b']): {short:?}"
            ))
        }
    }
}

impl MultipleChoice {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        let label_column = config.dataset.label_column.clone();
        let mut prompt = super::config_prompt(
            config,
            data,
            (TASK_GUIDELINES, OUTPUT_GUIDELINES),
            "Question: {question}\nOptions: {options}\nAnswer: {answer}",
            &[],
            label_column.clone(),
        )?;
        let mut notices = Vec::new();
        few_shot::add_few_shot_examples(config, data, &mut prompt, &mut notices)?;
        if config.prompt.chain_of_thought == Some(true) {
            notices.push("prompt.chain_of_thought is ignored: the options are scored exactly, with no generated explanation".into());
        }
        notices.extend(super::missing_label_column(
            data,
            label_column.as_deref(),
            "accuracy",
        ));
        Ok(MultipleChoice {
            name: config.task_name.clone(),
            prompt,
            label_column,
            notices,
        })
    }
}

impl Task for MultipleChoice {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }

    fn candidates(&self, data: &Dataset, row: &Row) -> Result<Arc<Vec<String>>, String> {
        parse_options(data.value(row, OPTIONS_COLUMN).unwrap_or(""))
            .map(Arc::new)
            .map_err(|e| format!("line {}: column '{OPTIONS_COLUMN}': {e}", row.line))
    }

    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        super::label_value(data, row, self.label_column.as_deref())
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_from_python_and_json_lists() {
        assert_eq!(
            parse_options("['Oxygen', 'antioxidants', \"it's\", 'a\\'b']").unwrap(),
            vec!["Oxygen", "antioxidants", "it's", "a'b"]
        );
        assert_eq!(parse_options(r#"["x", "y", "x"]"#).unwrap(), vec!["x", "y"]);
        assert!(parse_options("[]").unwrap_err().contains("empty"));
        assert!(parse_options("a, b").unwrap_err().contains("not a list"));
        assert!(parse_options("['a' 'b']")
            .unwrap_err()
            .contains("not a list"));
    }
}
