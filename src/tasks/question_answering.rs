//! Extractive question answering (Autolabel's `question_answering`): the answer is generated
//! under llguidance's substring constraint, so it is a run of whole words of the context or the
//! literal `unanswerable`. Metrics as Autolabel computes them: exact match and token F1 after
//! lower-casing and removing punctuation and articles.

use super::open::{Answer, Interpreted, OpenTask, Report};
use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::PromptBuilder;
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;

const TASK_GUIDELINES: &str = "Your job is to answer the following questions using the context provided with the question. The answer is a continuous span of words from the context. If the question cannot be answered using the context alone, answer unanswerable.";
const OUTPUT_GUIDELINES: &str = "You will return the answer with one element: the correct answer, copied from the context, or unanswerable.";
/// The answer allowed besides a span of the context.
pub const UNANSWERABLE: &str = "unanswerable";

pub struct QuestionAnswering {
    name: String,
    prompt: PromptBuilder,
    /// The column the answer is copied from (else the longest input column of each row).
    context_column: Option<String>,
    label_column: Option<String>,
    notices: Vec<String>,
}

impl QuestionAnswering {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        let src = &config.source;
        let label_column = config.dataset.label_column.clone();
        let mut prompt = super::config_prompt(
            config,
            data,
            (TASK_GUIDELINES, OUTPUT_GUIDELINES),
            "Context: {context}\nQuestion: {question}\nAnswer: {answer}",
            &[],
            label_column.clone(),
        )?;
        let context_column = match &config.dataset.text_column {
            Some(c) if data.column(c).is_none() => bail!(
                "{src}: dataset.text_column '{c}' is not a column of {}",
                data.path.display()
            ),
            Some(c) => Some(c.clone()),
            None => prompt.input_columns().into_iter().find(|c| c == "context"),
        };
        let mut notices = Vec::new();
        few_shot::add_few_shot_examples(config, data, &mut prompt, &mut notices)?;
        if config.prompt.chain_of_thought == Some(true) {
            notices.push("prompt.chain_of_thought is ignored: the answer is generated directly under the substring constraint".into());
        }
        notices.extend(super::missing_label_column(
            data,
            label_column.as_deref(),
            "metrics",
        ));
        Ok(QuestionAnswering {
            name: config.task_name.clone(),
            prompt,
            context_column,
            label_column,
            notices,
        })
    }

    fn context<'d>(&self, data: &'d Dataset, row: &'d Row) -> &'d str {
        match &self.context_column {
            Some(c) => data.value(row, c).unwrap_or(""),
            None => self
                .prompt
                .input_columns()
                .iter()
                .filter_map(|c| data.value(row, c))
                .max_by_key(|v| v.len())
                .unwrap_or(""),
        }
    }
}

/// Autolabel's `normalize_text`: lower case, no punctuation, no articles, single spaces.
pub fn normalize(s: &str) -> String {
    let lower: String = s
        .to_lowercase()
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    lower
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Autolabel's text F1 of one answer: over the sets of normalized words.
pub fn token_f1(truth: &str, pred: &str) -> f64 {
    let (t, p) = (normalize(truth), normalize(pred));
    let t: Vec<&str> = t.split(' ').collect();
    let p: Vec<&str> = p.split(' ').collect();
    let ts: std::collections::BTreeSet<&str> = t.iter().copied().collect();
    let ps: std::collections::BTreeSet<&str> = p.iter().copied().collect();
    let common = ts.intersection(&ps).count();
    if common == 0 {
        return 0.0;
    }
    let (rec, prec) = (
        common as f64 / t.len() as f64,
        common as f64 / p.len() as f64,
    );
    2.0 * prec * rec / (prec + rec)
}

impl Task for QuestionAnswering {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        super::label_value(data, row, self.label_column.as_deref())
    }
    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }
    fn open(&self) -> Option<&dyn OpenTask> {
        Some(self)
    }
}

impl OpenTask for QuestionAnswering {
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String> {
        let context = self.context(data, row);
        if context.trim().is_empty() {
            return Err(format!("line {}: the context is empty", row.line));
        }
        Ok(Grammar::Substring {
            text: context.to_string(),
            alternatives: vec![UNANSWERABLE.into()],
        })
    }

    fn max_answer_tokens(&self, _: &Dataset, _: &Row, input_tokens: usize) -> usize {
        // A substring of the context ends by the end of the context at the latest.
        input_tokens + 4
    }

    fn interpret(&self, _: &Dataset, row: &Row, answer: &Answer) -> Result<Interpreted, String> {
        let text = answer.text.trim();
        if text.is_empty() {
            return Err(format!("line {}: the answer is empty", row.line));
        }
        Ok(Interpreted {
            label: text.to_string(),
            confidence: answer.mean_token_probability(),
            extra: Vec::new(),
            detail: serde_json::Value::Null,
        })
    }

    fn given_answer(&self, data: &Dataset, row: &Row, given: &str) -> Result<String, String> {
        let given = given.trim();
        if given != UNANSWERABLE && !self.context(data, row).contains(given) {
            return Err(format!(
                "line {}: the given answer {given:?} is not in the context",
                row.line
            ));
        }
        Ok(given.to_string())
    }

    fn extra_columns(&self) -> Vec<String> {
        Vec::new()
    }

    fn report(&self, data: &Dataset, answers: &[Option<Interpreted>]) -> Option<Report> {
        let mut scored: Vec<(f64, bool, f64)> = Vec::new(); // confidence, exact, f1
        let mut support = 0;
        for (row, a) in data.rows.iter().zip(answers) {
            let Some(truth) = self.ground_truth(data, row) else {
                continue;
            };
            support += 1;
            if let Some(a) = a {
                scored.push((
                    a.confidence,
                    normalize(&truth) == normalize(&a.label),
                    token_f1(&truth, &a.label),
                ));
            }
        }
        if support == 0 {
            return None;
        }
        let mut text = format!("question answering, {} of {support} rows with ground truth answered\nthreshold | completion_rate | exact_match | f1\n", scored.len());
        let mut figures = Vec::new();
        for t in [0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99] {
            let kept: Vec<&(f64, bool, f64)> = scored.iter().filter(|s| s.0 >= t).collect();
            let n = kept.len().max(1) as f64;
            let em = kept.iter().filter(|s| s.1).count() as f64 / n;
            let f1 = kept.iter().map(|s| s.2).sum::<f64>() / n;
            let completion = kept.len() as f64 / support as f64;
            text.push_str(&format!(
                "{t:>9.2} | {completion:>15.4} | {em:>11.4} | {f1:.4}\n"
            ));
            if t == 0.0 {
                figures.push(("accuracy".into(), em));
                figures.push(("exact_match".into(), em));
                figures.push(("f1".into(), f1));
            }
        }
        Some(Report {
            text,
            warnings: Vec::new(),
            figures,
        })
    }

    fn unit(&self) -> &'static str {
        "answer"
    }

    fn outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        let truth = self.ground_truth(data, row)?;
        Some(vec![(
            answer.confidence,
            normalize(&truth) == normalize(&answer.label),
        )])
    }

    fn below_threshold_note(&self) -> &'static str {
        "rows below it keep their answer with confidently_labeled = False"
    }

    fn apply_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        answer.confidence = calibrated(answer.confidence);
        threshold.is_none_or(|t| answer.confidence as f32 >= t as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_and_f1_follow_autolabel() {
        assert_eq!(normalize("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(token_f1("the Eiffel Tower", "Eiffel Tower"), 1.0);
        assert!((token_f1("Eiffel Tower", "tower in Paris") - 0.4).abs() < 1e-12);
        assert_eq!(token_f1("unanswerable", "Paris"), 0.0);
        assert_eq!(token_f1("", ""), 1.0, "two empty answers agree");
    }
}
