//! `score` for tasks whose answers are generated (named-entity recognition, attribute extraction,
//! extractive QA, multi-label classification): each row's given answer is written in the form the
//! task's grammar writes it and teacher-forced through the generation pass under a constraint that
//! admits exactly that text, so every unit of it (entity, attribute value, label, answer) gets the
//! probability the local model gives its tokens, read out by the same code as `run`'s.

use super::score::{ScoreArgs, ScoreSummary};
use crate::dataset::{Dataset, Row};
use crate::generation_pass::{generate_rows, Generates};
use crate::metrics::{auroc, format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::output::{default_out, write_output, OutputColumns};
use crate::scoring_pass::PassOptions;
use crate::session::Session;
use crate::tasks::open::{Interpreted, OpenTask};
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;

/// The given answers of a label column, as constraints that admit exactly them.
struct GivenAnswers<'a> {
    task: &'a dyn OpenTask,
    column: &'a str,
}

impl GivenAnswers<'_> {
    /// The row's given label, or an error naming the row when it has none.
    fn given_text(&self, data: &Dataset, row: &Row) -> Result<String, String> {
        let given = data.value(row, self.column).unwrap_or("").trim();
        if given.is_empty() {
            return Err(format!(
                "line {}: no label to score in column '{}'",
                row.line, self.column
            ));
        }
        Ok(given.to_string())
    }

    fn text(&self, data: &Dataset, row: &Row) -> Result<String, String> {
        let given = self.given_text(data, row)?;
        self.task.given_answer(data, row, &given)
    }
}

impl Generates for GivenAnswers<'_> {
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String> {
        let text = self.text(data, row)?;
        let literal = serde_json::to_string(&text).map_err(|e| e.to_string())?;
        Ok(Grammar::Lark(format!("start: {literal}\n")))
    }
    fn max_answer_tokens(&self, data: &Dataset, row: &Row, _: usize) -> usize {
        // Every token spells at least one byte; then the end token.
        self.text(data, row).map_or(1, |t| t.len() + 1)
    }
}

pub fn score_open(
    args: &ScoreArgs,
    session: &Session,
    task: &dyn OpenTask,
) -> Result<ScoreSummary> {
    let c = &args.confidence;
    let kind = &session.config.task_type;
    if c.calibration.is_some() || c.target_accuracy.is_some() || c.debias.is_some() {
        bail!("`score` for a {kind} task writes each {}'s probability under the model; --calibration, --target-accuracy and --debias apply to `run` (and to label sets)", task.unit())
    }
    if c.confidence.is_some() || c.all_confidence_columns {
        bail!("--confidence and --all-confidence-columns choose among label-set confidences; a {kind} task's confidence is the probability of each {}'s tokens", task.unit())
    }
    let data = &session.data;
    super::score::check_label_column(data, &args.label_column)?;
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    let labeler = session.labeler(&args.common)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&data.path, "scored"));
    let given = GivenAnswers {
        task,
        column: &args.label_column,
    };
    let opts = PassOptions::new(args.batch_size, args.common.max_tokens);
    let (rows, seconds): (Vec<Result<Interpreted, String>>, f64) = if task.scores_candidates() {
        // Multi-label by membership: every label's judgment is scored, and the given labels
        // read their probabilities from it.
        let pass = crate::scoring_pass::score_all(session, &labeler, opts)?;
        let rows = data
            .rows
            .iter()
            .zip(pass.rows)
            .map(|(row, r)| {
                let text = given.given_text(data, row)?;
                r.and_then(|s| task.interpret_given_scores(data, row, &s, &text))
            })
            .collect();
        (rows, pass.seconds)
    } else {
        let pass = generate_rows(data, &labeler, &given, opts, None)?;
        let rows = data
            .rows
            .iter()
            .zip(pass.rows)
            .map(|(row, r)| r.and_then(|a| task.interpret(data, row, &a)))
            .collect();
        (rows, pass.seconds)
    };
    let name = session.task.name();
    let names: Vec<String> = ["label_prob".to_string(), "error".to_string()]
        .into_iter()
        .chain(task.extra_columns())
        .chain(task.plain_columns())
        .map(|c| format!("{name}_task_given_{c}"))
        .collect();
    let width = names.len();
    let mut columns = OutputColumns::new(names, data.rows.len());
    let (mut scored, mut errors) = (0, Vec::new());
    let mut units: Vec<Outcome> = Vec::new();
    let mut support = 0;
    for (i, (row, r)) in data.rows.iter().zip(rows).enumerate() {
        let values = &mut columns.rows[i];
        match r {
            Ok(it) => {
                scored += 1;
                values.extend([format!("{:.6}", it.confidence), String::new()]);
                values.extend(it.extra.iter().cloned());
                if let Some(judged) = task.given_outcomes(data, row, &it) {
                    support += 1;
                    units.extend(judged.into_iter().map(|(p, correct)| Outcome {
                        correct,
                        confidence: p as f32,
                    }));
                }
            }
            Err(e) => {
                values.extend([String::new(), e.clone()]);
                errors.push(e);
            }
        }
        values.resize(width, String::new());
    }
    write_output(&out, data, &columns)?;
    eprintln!(
        "scored {scored}/{} given answers in {:.1} s with {} -> {}",
        data.rows.len(),
        seconds,
        session.model.path.display(),
        out.display()
    );
    if !errors.is_empty() {
        eprintln!(
            "{} rows could not be scored (see the error column); first ones:",
            errors.len()
        );
        for e in errors.iter().take(5) {
            eprintln!("  {e}");
        }
    }
    let unit = task.unit();
    let units_name = super::calibrate_open::plural(unit);
    let mut given_auroc = None;
    if support > 0 {
        given_auroc = auroc(&units);
        println!(
            "given {units_name} ('{}') against the ground truth, kept where the local model gives them at least the threshold's probability ({} {units_name} on {support} rows):",
            args.label_column,
            units.len()
        );
        println!(
            "{}",
            format_table(&metrics_table(&units, units.len(), DEFAULT_THRESHOLDS))
        );
        println!(
            "AUROC of P(given {unit}) for a right given {unit}: {}",
            given_auroc.map_or("n/a (all right or all wrong)".into(), |a| format!("{a:.4}"))
        );
    }
    Ok(ScoreSummary {
        rows: data.rows.len(),
        scored,
        errors: errors.len(),
        agreement: f64::NAN,
        auroc: given_auroc,
    })
}
