//! Autolabel-format prompts: task guidelines (with `{labels}` expanded), output guidelines, seed
//! examples and the current example, each rendered through `example_template`.

use anyhow::{bail, Result};
use std::collections::HashMap;
use std::sync::Arc;

const ZERO_SHOT: &str = "{task_guidelines}\n\n{output_guidelines}\n\nNow I want you to label the following example:\n{current_example}";
const FEW_SHOT: &str = "{task_guidelines}\n\n{output_guidelines}\n\nSome examples with their output answers are provided below:\n\n{seed_examples}\n\nNow I want you to label the following example:\n{current_example}";

/// Python `str.format_map` with a default of "" for unknown names, as Autolabel uses it:
/// `{name}` is replaced, `{{` and `}}` are literal braces, other braces stay as they are.
pub fn format_template(template: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
        } else if let Some(name) = placeholder_at(tail) {
            out.push_str(&lookup(name).unwrap_or_default());
            rest = &tail[name.len() + 2..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The names of the `{placeholders}` in a template, in order of first use.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            rest = &tail[2..];
        } else if let Some(name) = placeholder_at(tail) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
            rest = &tail[name.len() + 2..];
        } else {
            rest = &tail[1..];
        }
    }
    names
}

/// Task guidelines with `{labels}` and `{num_labels}` expanded.
fn expand_labels(guidelines: &str, label_text: &str, num_labels: usize) -> String {
    format_template(guidelines, |name| match name {
        "labels" => Some(label_text.to_string()),
        "num_labels" => Some(num_labels.to_string()),
        _ => None,
    })
}

fn placeholder_at(s: &str) -> Option<&str> {
    let body = s.strip_prefix('{')?;
    let end = body.find('}')?;
    let name = &body[..end];
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == ' ' || c == '-' || c == '.');
    valid.then_some(name)
}

/// Everything that makes the prompt of one row, fixed for a run.
#[derive(Debug, Clone)]
pub struct PromptBuilder {
    task_guidelines: String,
    /// The task guidelines before `{labels}` is expanded (for rows shown only some labels).
    raw_task_guidelines: String,
    /// Per-row label list text and count for `{labels}` / `{num_labels}` (label selection).
    row_labels: Arc<HashMap<u64, (String, usize)>>,
    output_guidelines: String,
    example_template: String,
    seed_examples: Vec<String>,
    /// The seed examples shown (indices into `seed_examples`, in prompt order) to a row the
    /// per-row choice does not cover.
    shown: Vec<usize>,
    /// Per-row choice of seed examples, by the row's line number (few-shot selection).
    per_row: Arc<HashMap<u64, Vec<usize>>>,
    /// Columns left empty in the current example (the answer and its explanation).
    blank_columns: Vec<String>,
}

impl PromptBuilder {
    pub fn new(
        task_guidelines: &str,
        output_guidelines: &str,
        example_template: &str,
        labels: &[String],
        blank_columns: Vec<String>,
    ) -> Self {
        Self::with_label_text(
            task_guidelines,
            output_guidelines,
            example_template,
            &labels.join("\n"),
            labels.len(),
            blank_columns,
        )
    }

    /// [`PromptBuilder::new`] with `{labels}` shown as `label_text` (e.g. labels with their
    /// descriptions) and `{num_labels}` as `num_labels`.
    pub fn with_label_text(
        task_guidelines: &str,
        output_guidelines: &str,
        example_template: &str,
        label_text: &str,
        num_labels: usize,
        blank_columns: Vec<String>,
    ) -> Self {
        PromptBuilder {
            task_guidelines: expand_labels(task_guidelines, label_text, num_labels),
            raw_task_guidelines: task_guidelines.to_string(),
            row_labels: Arc::default(),
            output_guidelines: output_guidelines.to_string(),
            example_template: example_template.to_string(),
            seed_examples: Vec::new(),
            shown: Vec::new(),
            per_row: Arc::default(),
            blank_columns,
        }
    }

    pub fn example_template(&self) -> &str {
        &self.example_template
    }

    /// Adds a labeled seed example (its values looked up by column name).
    pub fn add_seed_example(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        self.shown.push(self.seed_examples.len());
        self.seed_examples
            .push(format_template(&self.example_template, lookup));
    }

    /// Chooses which seed examples rows see: `shown` by default, `per_row` by line number.
    pub fn select_seeds(&mut self, shown: Vec<usize>, per_row: HashMap<u64, Vec<usize>>) {
        self.shown = shown;
        self.per_row = Arc::new(per_row);
    }

    /// Shows the row at each line only its own labels (label text, count) in `{labels}`.
    pub fn select_labels(&mut self, row_labels: HashMap<u64, (String, usize)>) {
        self.row_labels = Arc::new(row_labels);
    }

    /// The prompt for one row whose column values come from `lookup`, with the default seeds.
    pub fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        self.render_seeds(&self.shown, None, lookup)
    }

    /// The prompt for the row at `line`, with the seed examples chosen for it.
    pub fn render_row(&self, line: u64, lookup: impl Fn(&str) -> Option<String>) -> String {
        let seeds = self.per_row.get(&line).unwrap_or(&self.shown);
        let guidelines = self
            .row_labels
            .get(&line)
            .map(|(text, n)| expand_labels(&self.raw_task_guidelines, text, *n));
        self.render_seeds(seeds, guidelines.as_deref(), lookup)
    }

    /// [`PromptBuilder::render_row`] with `{labels}` showing `label_text` (`num_labels` labels),
    /// e.g. the labels in another order.
    pub fn render_row_with_labels(
        &self,
        line: u64,
        label_text: &str,
        num_labels: usize,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> String {
        let seeds = self.per_row.get(&line).unwrap_or(&self.shown);
        let guidelines = expand_labels(&self.raw_task_guidelines, label_text, num_labels);
        self.render_seeds(seeds, Some(&guidelines), lookup)
    }

    /// Whether the task guidelines show the label list (`{labels}`).
    pub fn shows_labels(&self) -> bool {
        placeholders(&self.raw_task_guidelines)
            .iter()
            .any(|p| p == "labels")
    }

    fn render_seeds(
        &self,
        shown: &[usize],
        guidelines: Option<&str>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> String {
        let current = format_template(&self.example_template, |name| {
            if self.blank_columns.iter().any(|c| c == name) {
                Some(String::new())
            } else {
                lookup(name)
            }
        });
        let seeds = shown
            .iter()
            .map(|&i| self.seed_examples[i].as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let template = if shown.is_empty() {
            ZERO_SHOT
        } else {
            FEW_SHOT
        };
        format_template(template, |name| match name {
            "task_guidelines" => Some(guidelines.unwrap_or(&self.task_guidelines).to_string()),
            "output_guidelines" => Some(self.output_guidelines.clone()),
            "seed_examples" => Some(seeds.clone()),
            "current_example" => Some(current.clone()),
            _ => None,
        })
    }

    /// Checks that every placeholder of the example template is a column of the data (or one of
    /// the blank columns), naming the missing ones.
    pub fn check_columns(&self, columns: &[String], data_name: &str) -> Result<()> {
        let missing: Vec<String> = placeholders(&self.example_template)
            .into_iter()
            .filter(|p| !columns.contains(p) && !self.blank_columns.contains(p))
            .collect();
        if !missing.is_empty() {
            bail!(
                "config key 'prompt.example_template' uses {} that {data_name} does not have (its columns: {}); fix the template or the data",
                missing.iter().map(|m| format!("{{{m}}}")).collect::<Vec<_>>().join(", "),
                columns.join(", ")
            )
        }
        Ok(())
    }

    /// Columns of the current example that come from the data (not blanked).
    pub fn input_columns(&self) -> Vec<String> {
        placeholders(&self.example_template)
            .into_iter()
            .filter(|p| !self.blank_columns.contains(p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_python_format_map() {
        let out = format_template("a {x} {{lit}} {missing} }} {not valid} {", |n| {
            (n == "x").then(|| "X".into())
        });
        assert_eq!(
            out, "a X {lit}  }  {",
            "unknown names become empty, as with defaultdict(str)"
        );
        assert_eq!(
            placeholders("Input: {example}\nOutput: {label} {example}"),
            vec!["example", "label"]
        );
    }

    #[test]
    fn zero_and_few_shot_prompts() {
        let labels = vec!["positive".to_string(), "negative".to_string()];
        let mut b = PromptBuilder::new(
            "Classify into:\n{labels}",
            "Answer with the label.",
            "Input: {example}\nOutput: {label}",
            &labels,
            vec!["label".into()],
        );
        let row = |n: &str| {
            (n == "example")
                .then(|| "great film".to_string())
                .or(Some("positive".into()))
        };
        assert_eq!(
            b.render(row),
            "Classify into:\npositive\nnegative\n\nAnswer with the label.\n\nNow I want you to label the following example:\nInput: great film\nOutput: "
        );
        b.add_seed_example(|n| {
            Some(if n == "example" {
                "bad".into()
            } else {
                "negative".into()
            })
        });
        let p = b.render(row);
        assert!(
            p.contains("provided below:\n\nInput: bad\nOutput: negative\n\nNow I want"),
            "{p}"
        );
        let err = b
            .check_columns(&["text".into()], "d.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("{example}") && err.contains("d.csv"), "{err}");
    }
}
