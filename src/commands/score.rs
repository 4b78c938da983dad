//! `autolabel-local score`: a local second opinion on labels produced elsewhere (an API model, a
//! person). For each row: the local model's probability of the given label, its own best label,
//! and whether they agree; with ground truth, how well that probability separates right from
//! wrong given labels.

use crate::metrics::{auroc, format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::operating_point::{ConfidenceArgs, OperatingPoint};
use crate::output::{bool_text, default_out, write_output, OutputColumns};
use crate::scoring_pass::{score_all, PassOptions};
use crate::session::{CommonArgs, Session};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub confidence: ConfidenceArgs,
    /// Column holding the labels to score.
    #[arg(long)]
    pub label_column: String,
    /// Output file (.csv, .tsv or .jsonl). Default: <data name>.scored.csv in the current directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows scored together in one batch. Default: 8 on a CPU, 64 on a GPU.
    #[arg(long)]
    pub batch_size: Option<usize>,
}

pub struct ScoreSummary {
    pub rows: usize,
    pub scored: usize,
    pub errors: usize,
    pub agreement: f64,
    /// AUROC of the given label's probability for the given label being right (with ground truth).
    pub auroc: Option<f64>,
}

/// Refuses a `--label-column` the data does not have, listing the columns it has.
pub(crate) fn check_label_column(data: &crate::dataset::Dataset, column: &str) -> Result<()> {
    if data.column(column).is_none() {
        bail!(
            "{}: no column '{column}' (--label-column); the columns are {}",
            data.path.display(),
            data.columns.join(", ")
        )
    }
    Ok(())
}

pub fn score(args: &ScoreArgs) -> Result<ScoreSummary> {
    let session = Session::open(&args.common)?;
    if let Some(task) = session.task.open() {
        return super::score_open::score_open(args, &session, task);
    }
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    let data = &session.data;
    check_label_column(data, &args.label_column)?;
    let labeler = session.labeler(&args.common)?;
    let mut op = session.operating_point(&args.confidence)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&data.path, "scored"));
    let pass = score_all(
        &session,
        &labeler,
        PassOptions::new(args.batch_size, args.common.max_tokens),
    )?;
    if let Some(line) = op.apply_debias(&session, &labeler)? {
        eprintln!("{line}");
    }
    let task = session.task.name();
    let mut names: Vec<String> = [
        "given_label_prob",
        "local_label",
        "local_confidence",
        "agrees",
        "error",
    ]
    .iter()
    .map(|c| format!("{task}_task_{c}"))
    .collect();
    if args.confidence.all_confidence_columns {
        names.extend(OperatingPoint::all_columns(task));
    }
    names.extend(OperatingPoint::logprob_columns(task));
    if pass.explanations.is_some() {
        names.push(format!("{task}_task_explanation"));
    }
    let width = names.len();
    let mut columns = OutputColumns::new(names, data.rows.len());
    let (mut scored, mut agree, mut errors) = (0, 0, 0);
    let (mut given_outcomes, mut local_outcomes, mut support) = (Vec::new(), Vec::new(), 0);
    for (i, (row, r)) in data.rows.iter().zip(&pass.rows).enumerate() {
        let values = &mut columns.rows[i];
        let given = data.value(row, &args.label_column).unwrap_or("").trim();
        let s = match r {
            Ok(s) => s,
            Err(e) => {
                errors += 1;
                values.extend([
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    e.clone(),
                ]);
                values.resize(width, String::new());
                continue;
            }
        };
        let local = op.label(s);
        let local_conf = op.confidence(s);
        let given_index = s.index_of(given);
        let error = match given_index {
            Some(_) => String::new(),
            None if given.is_empty() => format!(
                "line {}: no label to score in column '{}'",
                row.line, args.label_column
            ),
            None => format!(
                "line {}: given label '{given}' is not one of the {} labels",
                row.line,
                s.labels.len()
            ),
        };
        let given_prob = given_index.map(|g| op.probs(s)[g] as f32);
        values.extend([
            given_prob.map(|p| format!("{p:.6}")).unwrap_or_default(),
            local.to_string(),
            format!("{local_conf:.6}"),
            given_prob
                .map(|_| bool_text(given == local))
                .unwrap_or_default(),
            error,
        ]);
        if args.confidence.all_confidence_columns {
            values.extend(op.all_values(s));
        }
        values.extend(OperatingPoint::logprob_values(s));
        if let Some(e) = &pass.explanations {
            values.push(e[i].clone().unwrap_or_default());
        }
        match given_prob {
            Some(p) => {
                scored += 1;
                agree += (given == local) as usize;
                if let Some(truth) = session.task.ground_truth(data, row) {
                    support += 1;
                    given_outcomes.push(Outcome {
                        correct: given == truth,
                        confidence: p,
                    });
                    local_outcomes.push(Outcome {
                        correct: local == truth,
                        confidence: local_conf,
                    });
                }
            }
            None => errors += 1,
        }
    }
    write_output(&out, data, &columns)?;
    let agreement = agree as f64 / scored.max(1) as f64;
    eprintln!(
        "scored {scored}/{} given labels in {:.1} s with {} -> {}",
        data.rows.len(),
        pass.seconds,
        session.model.path.display(),
        out.display()
    );
    eprintln!(
        "the local model's best label agrees with '{}' on {agree} of {scored} rows ({:.1}%)",
        args.label_column,
        100.0 * agreement
    );
    if errors > 0 {
        eprintln!("{errors} rows could not be scored (see the error column)");
    }
    let mut given_auroc = None;
    if support > 0 {
        given_auroc = auroc(&given_outcomes);
        println!(
            "given labels ('{}') against the ground truth, kept where the local model gives them at least the threshold's probability:",
            args.label_column
        );
        println!(
            "{}",
            format_table(&metrics_table(&given_outcomes, support, DEFAULT_THRESHOLDS))
        );
        println!(
            "AUROC of P(given label) for a right given label: {}",
            given_auroc.map_or("n/a (all right or all wrong)".into(), |a| format!("{a:.4}"))
        );
        println!(
            "local labels for comparison: accuracy {:.4}, AUROC of their {} confidence {}",
            local_outcomes.iter().filter(|o| o.correct).count() as f64 / support as f64,
            op.method.name(),
            auroc(&local_outcomes).map_or("n/a".into(), |a| format!("{a:.4}"))
        );
    }
    Ok(ScoreSummary {
        rows: data.rows.len(),
        scored,
        errors,
        agreement,
        auroc: given_auroc,
    })
}
