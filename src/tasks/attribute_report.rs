//! The metrics report of attribute extraction, as Autolabel reports it per attribute (support,
//! completion rate, accuracy) with F1 for spans, text and entity lists and the AUROC of the
//! value confidence, their macro average, and the threshold / completion table over all values
//! and (with several attributes) over each attribute's values.

use super::attribute_extraction::AttributeExtraction;
use super::attribute_values::same_value;
use super::attributes::Kind;
use super::open::{Interpreted, Report};
use super::question_answering::token_f1;
use crate::dataset::Dataset;
use crate::metrics::{auroc, format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use serde_json::Value;

pub fn report(
    task: &AttributeExtraction,
    data: &Dataset,
    answers: &[Option<Interpreted>],
) -> Option<Report> {
    if !task.truth_columns.iter().any(|&t| t) {
        return None;
    }
    let mut warnings = Vec::new();
    let mut text = String::from(
        "| attribute | kind | support | completion_rate | accuracy | f1 | auroc |\n|---|---|--:|--:|--:|--:|--:|\n",
    );
    let mut figures = Vec::new();
    let mut all: Vec<Outcome> = Vec::new();
    let mut total_support = 0;
    let mut each: Vec<(String, Vec<Outcome>, usize)> = Vec::new();
    let (mut macro_acc, mut macro_completion, mut measured) = (0.0, 0.0, 0);
    for (i, a) in task.attributes.iter().enumerate() {
        if !task.truth_columns[i] {
            continue;
        }
        let mut support = 0;
        let mut outcomes = Vec::new();
        let (mut f1_sum, mut tp, mut n_pred, mut n_true) = (0.0, 0usize, 0usize, 0usize);
        for (row, answer) in data.rows.iter().zip(answers) {
            let truth = match task.truth(data, row, i) {
                None => continue,
                Some(Err(e)) => {
                    warnings.push(e);
                    continue;
                }
                Some(Ok(t)) => t,
            };
            support += 1;
            let Some((value, p)) = answer
                .as_ref()
                .map(|a| AttributeExtraction::values(a)[i].clone())
            else {
                continue;
            };
            outcomes.push(Outcome {
                correct: same_value(&a.kind, &truth, &value),
                confidence: p as f32,
            });
            match (&a.kind, &truth, &value) {
                (Kind::Span | Kind::Text { .. }, Value::String(t), Value::String(v)) => {
                    f1_sum += token_f1(t, v)
                }
                (Kind::Entities, Value::Array(t), Value::Array(v)) => {
                    let mut left: Vec<&Value> = t.iter().collect();
                    for x in v {
                        if let Some(k) = left.iter().position(|y| *y == x) {
                            left.remove(k);
                            tp += 1;
                        }
                    }
                    n_pred += v.len();
                    n_true += t.len();
                }
                _ => {}
            }
        }
        if support == 0 {
            continue;
        }
        total_support += support;
        let answered = outcomes.len();
        let acc = outcomes.iter().filter(|o| o.correct).count() as f64 / answered.max(1) as f64;
        let completion = answered as f64 / support as f64;
        let f1 = match a.kind {
            Kind::Span | Kind::Text { .. } => Some(f1_sum / answered.max(1) as f64),
            Kind::Entities => Some(if n_pred + n_true == 0 {
                1.0
            } else {
                2.0 * tp as f64 / (n_pred + n_true) as f64
            }),
            _ => None,
        };
        let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
        text.push_str(&format!(
            "| {} | {} | {support} | {completion:.4} | {acc:.4} | {} | {} |\n",
            a.name,
            a.kind.name(),
            fmt(f1),
            fmt(auroc(&outcomes))
        ));
        figures.push((format!("{}:accuracy", a.name), acc));
        figures.push((format!("{}:completion_rate", a.name), completion));
        if let Some(f) = f1 {
            figures.push((format!("{}:f1", a.name), f));
        }
        macro_acc += acc;
        macro_completion += completion;
        measured += 1;
        all.extend(outcomes.iter().cloned());
        each.push((a.name.clone(), outcomes, support));
    }
    if measured == 0 {
        return (!warnings.is_empty()).then(|| Report {
            text: String::new(),
            warnings,
            figures,
        });
    }
    let (macro_acc, macro_completion) = (
        macro_acc / measured as f64,
        macro_completion / measured as f64,
    );
    text.push_str(&format!(
        "| macro | | | {macro_completion:.4} | {macro_acc:.4} | | |\n\nattribute values by confidence (accuracy = share of kept values that are right):\n{}",
        format_table(&metrics_table(&all, total_support, DEFAULT_THRESHOLDS))
    ));
    if each.len() > 1 {
        for (name, outcomes, support) in &each {
            text.push_str(&format!(
                "\n'{name}' values by confidence:\n{}",
                format_table(&metrics_table(outcomes, *support, DEFAULT_THRESHOLDS))
            ));
        }
    }
    figures.push(("accuracy".into(), macro_acc));
    figures.push(("completion_rate".into(), macro_completion));
    Some(Report {
        text,
        warnings,
        figures,
    })
}
