//! Label-free debiasing (contextual calibration, Zhao et al. 2021, "Calibrate Before Use"): the
//! task's own prompt is scored with content-free inputs ("N/A", "", "[MASK]") in place of the
//! row's input columns; the average label distribution over them is the model's prior for this
//! prompt, and every row's distribution is divided by it (its log is subtracted from every
//! label's log-probability). No labeled rows are needed.

use crate::dataset::{Dataset, Row};
use crate::labeler::Labeler;
use crate::session::Session;
use anyhow::{bail, Result};

/// The inputs scored in place of a row's input columns.
pub const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];

/// The name `--debias` takes.
pub const METHOD: &str = "content-free";

/// Checks a `--debias` value.
pub fn parse(value: &str) -> Result<()> {
    if value != METHOD {
        bail!("--debias '{value}' is not a method; the one there is: {METHOD}")
    }
    Ok(())
}

/// The log of the mean label distribution over the content-free inputs, one entry per label of
/// the task's fixed label set, and the inputs that could be scored.
pub fn content_free_prior(session: &Session, labeler: &Labeler) -> Result<(Vec<f64>, Vec<String>)> {
    let task = session.task.as_ref();
    let Some(labels) = task.fixed_candidates() else {
        bail!("--debias needs a fixed label set; this task's candidates differ per row (multiple choice: each row's options), and there is no label prior to divide out")
    };
    let columns = session.data.columns.clone();
    let inputs = task.input_columns();
    let rows: Vec<Row> = CONTENT_FREE
        .iter()
        .map(|text| Row {
            line: 0,
            fields: columns
                .iter()
                .map(|c| {
                    if inputs.contains(c) {
                        text.to_string()
                    } else {
                        String::new()
                    }
                })
                .collect(),
            error: None,
        })
        .collect();
    let data = Dataset::new(session.data.path.clone(), columns, rows);
    // Through the same pass as the rows (with chain of thought, each input gets its explanation
    // first). An empty input is refused by tasks that need one; the other inputs still count.
    let pass = crate::scoring_pass::score_data(
        &data,
        labeler,
        crate::scoring_pass::PassOptions::new(Some(CONTENT_FREE.len()), labeler.max_tokens()),
    )?;
    let mut scores = Vec::new();
    let mut used = Vec::new();
    for (r, text) in pass.rows.iter().zip(CONTENT_FREE) {
        if let Ok(s) = r {
            scores.push(s.scores.clone());
            used.push(text.to_string());
        }
    }
    if scores.is_empty() {
        bail!("--debias: none of the content-free inputs (\"N/A\", \"\", \"[MASK]\") could be put through this task's prompt")
    }
    let mut mean = vec![0.0; labels.len()];
    for s in &scores {
        let p = crate::confidence::Adjustment::default().probs(&s.logprobs);
        for (m, v) in mean.iter_mut().zip(p) {
            *m += v / scores.len() as f64;
        }
    }
    // A label the model never gives stays impossible rather than dividing by zero.
    Ok((mean.iter().map(|m| m.max(1e-30).ln()).collect(), used))
}

/// One line saying what the prior is: the labels it favours most.
pub fn describe(labels: &[String], log_prior: &[f64]) -> String {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| log_prior[b].total_cmp(&log_prior[a]));
    let shown: Vec<String> = order
        .iter()
        .take(4)
        .map(|&i| format!("{} {:.3}", labels[i], log_prior[i].exp()))
        .collect();
    format!(
        "content-free label prior (divided out of every row): {}{}",
        shown.join(", "),
        if labels.len() > 4 { ", ..." } else { "" }
    )
}
