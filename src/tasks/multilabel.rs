//! Multi-label classification (Autolabel's `multilabel_classification`): the answer is a
//! non-empty subset of the label set written with the config's `label_separator`, in the order
//! the config lists the labels, found one of two ways (`prompt.multilabel_method`): by label
//! membership (the default; every label judged yes/no and scored exactly, see
//! [`super::multilabel_membership`]), or generated under a grammar that only allows the labels,
//! each at most once, with each chosen label's probability that of its tokens. Calibrated per
//! label; metrics as Autolabel reports them (exact-match accuracy, F1 macro and weighted) plus a
//! per-label table.

use super::multilabel_membership as membership;
use super::multilabel_report;
use super::multilabel_subset::{calibrate_chosen, calibrate_every_label};
pub use super::multilabel_subset::{subset_grammar, subset_rules};
use super::open::{round6, Answer, Interpreted, OpenTask, Report};
use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::PromptBuilder;
use crate::scoring_pass::Scored;
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;
use std::sync::Arc;

const TASK_GUIDELINES: &str = "Your job is to correctly label the provided input example into one or more of the following {num_labels} categories.\nCategories:\n{labels}\n";
/// Autolabel's separator when the config names none.
pub const DEFAULT_SEPARATOR: &str = ";";
/// `prompt.multilabel_method` when the config names none.
/// (Membership: every label gets a probability, and on the twitter-emotion rows its F1 is higher
/// for Qwen2.5 uncalibrated and for both real models calibrated; see docs/open-tasks.md.)
pub const DEFAULT_METHOD: &str = "membership";

pub struct MultiLabel {
    name: String,
    labels: Vec<String>,
    separator: String,
    grammar: String,
    prompt: PromptBuilder,
    label_column: Option<String>,
    notices: Vec<String>,
    /// With `prompt.multilabel_method: membership`: the yes/no judgment of every label, scored.
    membership: Option<Arc<Vec<String>>>,
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
        let method = config
            .prompt
            .multilabel_method
            .as_deref()
            .unwrap_or(DEFAULT_METHOD);
        let by_membership = match method {
            "membership" => true,
            "subset" => false,
            other => bail!("{src}: config key 'prompt.multilabel_method' is {other:?}; use \"membership\" (every label judged yes or no, scored exactly) or \"subset\" (the label subset generated)"),
        };
        let mut notices = Vec::new();
        let subset_guidelines = format!(
            "You will return the answer as a list of one or more labels separated by \"{separator}\", in the order the categories are listed. For example: \"{}\"",
            labels.iter().take(2).cloned().collect::<Vec<_>>().join(&separator)
        );
        let mut prompt = if by_membership {
            // The config's output guidelines describe a label list; the answer here is a yes/no
            // line per label.
            let mut c = config.clone();
            if c.prompt.output_guidelines.take().is_some() {
                notices.push("prompt.output_guidelines is replaced with multilabel_method \"membership\": the answer is a yes/no line per category".into());
            }
            super::config_prompt(
                &c,
                data,
                (TASK_GUIDELINES, &membership::output_guidelines(&labels)),
                "Input: {example}\nOutput: {labels}",
                &labels,
                label_column.clone(),
            )?
        } else {
            super::config_prompt(
                config,
                data,
                (TASK_GUIDELINES, &subset_guidelines),
                "Input: {example}\nOutput: {labels}",
                &labels,
                label_column.clone(),
            )?
        };
        match (&label_column, by_membership) {
            // Seed examples show their labels as the model answers: a judgment line per label.
            (Some(col), true) => {
                let (col, labels, sep) = (col.clone(), labels.clone(), separator.clone());
                let derive = move |name: &str, lookup: &dyn Fn(&str) -> Option<String>| {
                    let value = lookup(name)?;
                    if name != col {
                        return Some(value);
                    }
                    let truth: Vec<&str> = value.split(sep.trim()).map(str::trim).collect();
                    Some(membership::example_answer(&labels, &truth))
                };
                let mut embeddings = crate::embeddings::TaskEmbeddings::new(config, data, &prompt);
                few_shot::add_derived_few_shot_examples(
                    config,
                    &mut prompt,
                    &mut notices,
                    &mut embeddings,
                    &derive,
                )?;
            }
            _ => few_shot::add_few_shot_examples(config, data, &mut prompt, &mut notices)?,
        }
        if config.prompt.chain_of_thought == Some(true) {
            notices.push("prompt.chain_of_thought is ignored for multi-label: each label is judged (or the subset generated) directly, without an explanation first".into());
        }
        if config.prompt.label_selection == Some(true) {
            notices.push("prompt.label_selection is ignored: every label can be chosen".into());
        }
        notices.extend(super::missing_label_column(
            data,
            label_column.as_deref(),
            "metrics",
        ));
        let membership = by_membership.then(|| Arc::new(membership::candidates(&labels)));
        Ok(MultiLabel {
            name: config.task_name.clone(),
            grammar: subset_grammar(&labels, &separator),
            labels,
            separator,
            prompt,
            label_column,
            notices,
            membership,
        })
    }

    /// The labels of a given answer (a label column's), in label-set order, or an error naming
    /// the row and the label outside the set.
    fn given_labels(&self, row: &Row, given: &str) -> Result<Vec<String>, String> {
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
        Ok(self
            .labels
            .iter()
            .filter(|l| given.contains(&l.as_str()))
            .cloned()
            .collect())
    }

    /// Every label's membership probability from a row's scores.
    fn membership_probabilities(&self, row: &Row, scored: &Scored) -> Result<Vec<f64>, String> {
        if scored.labels.len() != 2 * self.labels.len() {
            return Err(format!(
                "line {}: {} scores for {} labels' yes/no judgments",
                row.line,
                scored.labels.len(),
                self.labels.len()
            ));
        }
        Ok(membership::probabilities(scored))
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
            .filter(|e| e["chosen"].as_bool().unwrap_or(true))
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
    fn candidates(&self, _: &Dataset, _: &Row) -> Result<Arc<Vec<String>>, String> {
        Ok(self.membership.clone().unwrap_or_default())
    }
    fn fixed_candidates(&self) -> Option<Arc<Vec<String>>> {
        self.membership.clone()
    }
    fn candidates_end_answer(&self) -> bool {
        self.membership.is_none()
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
        // The grammar writes the labels in the label set's order.
        Ok(self.given_labels(row, given)?.join(&self.separator))
    }

    fn scores_candidates(&self) -> bool {
        self.membership.is_some()
    }

    fn interpret_scores(
        &self,
        _: &Dataset,
        row: &Row,
        scored: &Scored,
    ) -> Result<Interpreted, String> {
        let probs = self.membership_probabilities(row, scored)?;
        Ok(membership::answer(
            &self.labels,
            &self.separator,
            &probs,
            None,
        ))
    }

    fn interpret_given_scores(
        &self,
        _: &Dataset,
        row: &Row,
        scored: &Scored,
        given: &str,
    ) -> Result<Interpreted, String> {
        let given = self.given_labels(row, given)?;
        let probs = self.membership_probabilities(row, scored)?;
        let chosen: Vec<usize> = (0..self.labels.len())
            .filter(|&i| given.contains(&self.labels[i]))
            .collect();
        Ok(membership::answer(
            &self.labels,
            &self.separator,
            &probs,
            Some(&chosen),
        ))
    }

    fn extra_columns(&self) -> Vec<String> {
        vec!["label_confidences".into()]
    }

    fn report(&self, data: &Dataset, answers: &[Option<Interpreted>]) -> Option<Report> {
        self.label_column.as_ref()?;
        let mut rows = Vec::new();
        let mut warnings = Vec::new();
        let mut support = 0;
        let mut memberships = Vec::new();
        for (row, answer) in data.rows.iter().zip(answers) {
            match self.truth_of(data, row) {
                None => {}
                Some(Err(e)) => warnings.push(e),
                Some(Ok(truth)) => {
                    support += 1;
                    if let Some(a) = answer {
                        let chosen: Vec<String> =
                            Self::chosen(a).into_iter().map(|(l, _)| l).collect();
                        if self.membership.is_some() {
                            let probs = membership::outcomes(a, &truth)
                                .into_iter()
                                .map(|(p, _)| p)
                                .collect();
                            memberships.push((probs, truth.clone()));
                        }
                        rows.push((a.confidence, truth, chosen));
                    }
                }
            }
        }
        if support == 0 && warnings.is_empty() {
            return None;
        }
        let mut report = multilabel_report::report(&self.labels, &rows, support);
        if self.membership.is_some() {
            report
                .text
                .push_str(&membership::auroc_lines(&self.labels, &memberships));
        }
        report.warnings = warnings;
        Some(report)
    }

    fn unit(&self) -> &'static str {
        if self.membership.is_some() {
            "label membership"
        } else {
            "label"
        }
    }

    fn unit_groups(&self) -> Vec<String> {
        // By membership every row judges every label: a scaling per label.
        match self.membership {
            Some(_) => self.labels.clone(),
            None => Vec::new(),
        }
    }

    fn group_kind(&self) -> &'static str {
        "label"
    }

    fn unit_probability(&self) -> String {
        match self.membership {
            Some(_) => "P(\"label: yes\") / (P(\"label: yes\") + P(\"label: no\"))".into(),
            None => "probability of the label's tokens".into(),
        }
    }

    fn grouped_outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(usize, f64, bool)>> {
        let units = self.outcomes(data, row, answer)?;
        let by_label = self.membership.is_some();
        Some(
            units
                .into_iter()
                .enumerate()
                .map(|(i, (p, ok))| (if by_label { i } else { 0 }, p, ok))
                .collect(),
        )
    }

    fn given_outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        // The given labels only (by membership the answer holds every label's probability).
        let truth = self.truth_of(data, row)?.ok()?;
        Some(
            Self::chosen(answer)
                .into_iter()
                .map(|(l, p)| (p, truth.contains(&l)))
                .collect(),
        )
    }

    fn apply_group_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(usize, f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        if self.membership.is_none() {
            return self.apply_calibration(answer, &|p| calibrated(0, p), threshold);
        }
        calibrate_every_label(answer, calibrated);
        membership::choose(answer, &self.separator, threshold)
    }

    fn chooses_per_group(&self) -> bool {
        self.membership.is_some()
    }

    fn apply_group_choice(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(usize, f64) -> f64,
        cut: &dyn Fn(usize) -> Option<f64>,
    ) -> bool {
        if self.membership.is_none() {
            return self.apply_group_calibration(answer, calibrated, None);
        }
        calibrate_every_label(answer, calibrated);
        let cut = |i| cut(i).unwrap_or(membership::CHOOSE_AT);
        membership::choose_at(answer, &self.separator, &cut, true)
    }

    fn outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        let truth = self.truth_of(data, row)?.ok()?;
        if self.membership.is_some() {
            return Some(membership::outcomes(answer, &truth));
        }
        Some(
            Self::chosen(answer)
                .into_iter()
                .map(|(l, p)| (p, truth.contains(&l)))
                .collect(),
        )
    }

    fn below_threshold_note(&self) -> &'static str {
        if self.membership.is_some() {
            return r#"labels below it are not chosen (the most confident one stays when none reaches it); every label's confidence is in the label_confidences column"#;
        }
        r#"labels below it leave the label (the most confident one stays when none reaches it) and are kept in the label_confidences column with "confident": false"#
    }

    fn apply_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        if self.membership.is_some() {
            return self.apply_group_calibration(answer, &|_, p| calibrated(p), threshold);
        }
        let (label, all) =
            calibrate_chosen(&mut answer.detail, &self.separator, calibrated, threshold);
        answer.label = label;
        answer.extra = vec![answer.detail.to_string()];
        all
    }
}
