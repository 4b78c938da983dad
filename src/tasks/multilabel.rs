//! Multi-label classification (Autolabel's `multilabel_classification`): the answer is a
//! non-empty subset of the label set written with the config's `label_separator`, generated
//! under a grammar that only allows the labels, each at most once, in the order the config lists
//! them. Every chosen label has its own probability (of its tokens, under the model's full
//! distribution), calibrated per label and thresholded like entities; metrics as Autolabel
//! reports them (exact-match accuracy, F1 macro and weighted) plus a per-label table.

use super::multilabel_report;
use super::open::{round6, Answer, Interpreted, OpenTask, Report};
use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::PromptBuilder;
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;

const TASK_GUIDELINES: &str = "Your job is to correctly label the provided input example into one or more of the following {num_labels} categories.\nCategories:\n{labels}\n";
/// Autolabel's separator when the config names none.
pub const DEFAULT_SEPARATOR: &str = ";";

pub struct MultiLabel {
    name: String,
    labels: Vec<String>,
    separator: String,
    grammar: String,
    prompt: PromptBuilder,
    label_column: Option<String>,
    notices: Vec<String>,
}

/// A grammar for a non-empty subset of `labels`, in their order, joined by `sep`: rule `l{i}`
/// is label i optionally followed by the separator and any later label's rule.
pub fn subset_grammar(labels: &[String], sep: &str) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let quoted: Vec<String> = labels.iter().map(|l| quote(l)).collect();
    subset_rules("start", "l", &quoted, &quote(sep))
}

/// Lark rules for a non-empty subset of the `literals` (Lark string literals), in their order,
/// joined by the literal `sep`: rule `start` is any of the rules `{prefix}{i}`, and rule
/// `{prefix}{i}` is literal i optionally followed by `sep` and any later literal's rule.
pub fn subset_rules(start: &str, prefix: &str, literals: &[String], sep: &str) -> String {
    let alternatives = |from: usize| {
        (from..literals.len())
            .map(|j| format!("{prefix}{j}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut g = format!("{start}: {}\n", alternatives(0));
    for (i, l) in literals.iter().enumerate() {
        if i + 1 < literals.len() {
            g.push_str(&format!(
                "{prefix}{i}: {l} ({sep} ({}))?\n",
                alternatives(i + 1)
            ));
        } else {
            g.push_str(&format!("{prefix}{i}: {l}\n"));
        }
    }
    g
}

impl MultiLabel {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        let src = &config.source;
        let labels = config.labels();
        if labels.is_empty() {
            bail!("{src}: config key 'prompt.labels' is missing; a multilabel_classification task needs its label list")
        }
        let separator = config
            .dataset
            .label_separator
            .clone()
            .unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        if separator.trim().is_empty() {
            bail!("{src}: config key 'dataset.label_separator' is {separator:?}; it must contain a visible character (e.g. \";\" or \", \")")
        }
        if let Some(l) = labels.iter().find(|l| l.contains(separator.trim())) {
            bail!("{src}: label '{l}' contains the label separator {separator:?} (dataset.label_separator); choose a separator no label contains")
        }
        let label_column = config.dataset.label_column.clone();
        let output_guidelines = format!(
            "You will return the answer as a list of one or more labels separated by \"{separator}\", in the order the categories are listed. For example: \"{}\"",
            labels.iter().take(2).cloned().collect::<Vec<_>>().join(&separator)
        );
        let mut prompt = super::config_prompt(
            config,
            data,
            (TASK_GUIDELINES, &output_guidelines),
            "Input: {example}\nOutput: {labels}",
            &labels,
            label_column.clone(),
        )?;
        let mut notices = Vec::new();
        few_shot::add_few_shot_examples(config, data, &mut prompt, &mut notices)?;
        if config.prompt.chain_of_thought == Some(true) {
            notices.push("prompt.chain_of_thought is ignored: the labels are generated directly under the label-set grammar".into());
        }
        if config.prompt.label_selection == Some(true) {
            notices.push("prompt.label_selection is ignored: every label can be chosen".into());
        }
        notices.extend(super::missing_label_column(
            data,
            label_column.as_deref(),
            "metrics",
        ));
        Ok(MultiLabel {
            name: config.task_name.clone(),
            grammar: subset_grammar(&labels, &separator),
            labels,
            separator,
            prompt,
            label_column,
            notices,
        })
    }

    /// The row's ground-truth labels (in label-set order), an error naming the row and the
    /// unknown label, or None without ground truth.
    pub fn truth_of(&self, data: &Dataset, row: &Row) -> Option<Result<Vec<String>, String>> {
        let col = self.label_column.as_deref()?;
        let value = super::label_value(data, row, Some(col))?;
        let given: Vec<&str> = value
            .split(self.separator.trim())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = given.iter().find(|g| !self.labels.iter().any(|l| l == *g)) {
            return Some(Err(format!(
                "line {}: '{col}' has the label '{bad}', which is not one of prompt.labels (split by dataset.label_separator {:?})",
                row.line, self.separator
            )));
        }
        Some(Ok(self
            .labels
            .iter()
            .filter(|l| given.contains(&l.as_str()))
            .cloned()
            .collect()))
    }

    /// The chosen labels of an interpreted answer with their confidences, in label-set order.
    pub fn chosen(answer: &Interpreted) -> Vec<(String, f64)> {
        answer
            .detail
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["label"].as_str().unwrap_or_default().to_string(),
                    e["confidence"].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    }
}

impl Task for MultiLabel {
    fn name(&self) -> &str {
        &self.name
    }
    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        match self.truth_of(data, row)? {
            Ok(l) => Some(l.join(&self.separator)),
            Err(_) => None,
        }
    }
    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }
    fn open(&self) -> Option<&dyn OpenTask> {
        Some(self)
    }
}

impl OpenTask for MultiLabel {
    fn grammar(&self, _: &Dataset, _: &Row) -> Result<Grammar, String> {
        Ok(Grammar::Lark(self.grammar.clone()))
    }

    fn max_answer_tokens(&self, _: &Dataset, _: &Row, _: usize) -> usize {
        // Every label once, with separators, and the end token: no token is shorter than a byte.
        self.labels.iter().map(|l| l.len()).sum::<usize>()
            + self.labels.len() * self.separator.len()
            + 2
    }

    fn interpret(&self, _: &Dataset, row: &Row, answer: &Answer) -> Result<Interpreted, String> {
        let mut detail = Vec::new();
        let mut cursor = 0;
        for piece in answer.text.split(&self.separator) {
            let (start, end) = (cursor, cursor + piece.len());
            cursor = end + self.separator.len();
            let label = piece.trim();
            if !self.labels.iter().any(|l| l == label) {
                return Err(format!(
                    "line {}: the answer {:?} has {label:?}, which is not a label",
                    row.line, answer.text
                ));
            }
            let p = (answer.logprob_of_bytes(start, end) as f64).exp();
            detail.push(serde_json::json!({"label": label, "confidence": round6(p)}));
        }
        let labels: Vec<&str> = detail
            .iter()
            .map(|d| d["label"].as_str().unwrap_or_default())
            .collect();
        let label = labels.join(&self.separator);
        let detail = serde_json::Value::Array(detail);
        Ok(Interpreted {
            label,
            confidence: answer.mean_token_probability(),
            extra: vec![detail.to_string()],
            detail,
        })
    }

    fn given_answer(&self, _: &Dataset, row: &Row, given: &str) -> Result<String, String> {
        let given: Vec<&str> = given
            .split(self.separator.trim())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = given.iter().find(|g| !self.labels.iter().any(|l| l == *g)) {
            return Err(format!(
                "line {}: the given label '{bad}' is not one of prompt.labels (split by dataset.label_separator {:?})",
                row.line, self.separator
            ));
        }
        // The grammar writes the labels in the label set's order.
        Ok(self
            .labels
            .iter()
            .filter(|l| given.contains(&l.as_str()))
            .cloned()
            .collect::<Vec<_>>()
            .join(&self.separator))
    }

    fn extra_columns(&self) -> Vec<String> {
        vec!["label_confidences".into()]
    }

    fn report(&self, data: &Dataset, answers: &[Option<Interpreted>]) -> Option<Report> {
        self.label_column.as_ref()?;
        let mut rows = Vec::new();
        let mut warnings = Vec::new();
        let mut support = 0;
        for (row, answer) in data.rows.iter().zip(answers) {
            match self.truth_of(data, row) {
                None => {}
                Some(Err(e)) => warnings.push(e),
                Some(Ok(truth)) => {
                    support += 1;
                    if let Some(a) = answer {
                        let chosen: Vec<String> =
                            Self::chosen(a).into_iter().map(|(l, _)| l).collect();
                        rows.push((a.confidence, truth, chosen));
                    }
                }
            }
        }
        if support == 0 && warnings.is_empty() {
            return None;
        }
        let mut report = multilabel_report::report(&self.labels, &rows, support);
        report.warnings = warnings;
        Some(report)
    }

    fn unit(&self) -> &'static str {
        "label"
    }

    fn outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        let truth = self.truth_of(data, row)?.ok()?;
        Some(
            Self::chosen(answer)
                .into_iter()
                .map(|(l, p)| (p, truth.contains(&l)))
                .collect(),
        )
    }

    fn below_threshold_note(&self) -> &'static str {
        r#"labels below it leave the label (the most confident one stays when none reaches it) and are kept in the label_confidences column with "confident": false"#
    }

    fn apply_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        let (label, all) =
            calibrate_chosen(&mut answer.detail, &self.separator, calibrated, threshold);
        answer.label = label;
        answer.extra = vec![answer.detail.to_string()];
        all
    }
}

/// Calibrates each chosen label of `detail` (`{"label", "confidence"}` items) and marks it
/// against the threshold; returns the label that keeps the confident ones (the most confident
/// one when none is, so the label is never empty) and whether all were confident.
fn calibrate_chosen(
    detail: &mut serde_json::Value,
    separator: &str,
    calibrated: &dyn Fn(f64) -> f64,
    threshold: Option<f64>,
) -> (String, bool) {
    let Some(items) = detail.as_array_mut() else {
        return (String::new(), false);
    };
    let mut best = (0, f64::NEG_INFINITY);
    for (i, e) in items.iter_mut().enumerate() {
        let p = e["confidence"].as_f64().unwrap_or(0.0);
        let c = calibrated(p);
        e["probability"] = p.into();
        e["confidence"] = round6(c).into();
        if let Some(t) = threshold {
            e["confident"] = (c as f32 >= t as f32).into();
        }
        if c > best.1 {
            best = (i, c);
        }
    }
    let confident = |e: &serde_json::Value| e["confident"].as_bool().unwrap_or(true);
    let kept: Vec<&str> = items
        .iter()
        .enumerate()
        .filter(|(i, e)| confident(e) || *i == best.0)
        .map(|(_, e)| e["label"].as_str().unwrap_or_default())
        .collect();
    (kept.join(separator), items.iter().all(confident))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_grammar_lists_later_labels_only() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            subset_grammar(&labels, ", "),
            "start: l0 | l1 | l2\nl0: \"a\" (\", \" (l1 | l2))?\nl1: \"b\" (\", \" (l2))?\nl2: \"c\"\n"
        );
    }

    #[test]
    fn labels_below_the_threshold_leave_the_label_unless_none_is_left() {
        let chosen = |ps: &[(&str, f64)]| {
            serde_json::Value::Array(
                ps.iter()
                    .map(|(l, p)| serde_json::json!({"label": l, "confidence": p}))
                    .collect(),
            )
        };
        let half = |p: f64| p / 2.0;
        let mut d = chosen(&[("anger", 0.9), ("joy", 0.3), ("sadness", 0.7)]);
        assert_eq!(
            calibrate_chosen(&mut d, ", ", &half, Some(0.35)),
            ("anger, sadness".to_string(), false)
        );
        assert_eq!(d[1]["probability"], 0.3);
        assert_eq!(d[1]["confidence"], 0.15);
        assert_eq!(d[1]["confident"], false);
        assert_eq!(d[2]["confident"], true);
        let mut d = chosen(&[("anger", 0.2), ("joy", 0.5)]);
        assert_eq!(
            calibrate_chosen(&mut d, ";", &half, Some(0.9)),
            ("joy".to_string(), false),
            "none reaches the threshold: the most confident stays"
        );
        let mut d = chosen(&[("anger", 0.2), ("joy", 0.5)]);
        assert_eq!(
            calibrate_chosen(&mut d, ";", &half, None),
            ("anger;joy".to_string(), true),
            "without a threshold every label stays"
        );
        assert!(d[0].get("confident").is_none());
    }
}
