//! `autolabel-local run`: label every row, write the output, print the summary and metrics.

use crate::metrics::{format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::operating_point::{ConfidenceArgs, OperatingPoint};
use crate::output::{bool_text, default_out, write_output, OutputColumns};
use crate::scoring_pass::score_all;
use crate::session::{CommonArgs, Session};
use anyhow::Result;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub confidence: ConfidenceArgs,
    /// Output file (.csv, .tsv or .jsonl). Default: <data name>.labeled.csv in the current directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows scored together in one batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub rows: usize,
    pub labeled: usize,
    pub errors: usize,
    pub truncated: usize,
    pub accuracy: Option<f64>,
    pub out: PathBuf,
}

pub fn run(args: &RunArgs) -> Result<RunSummary> {
    let session = Session::open(&args.common)?;
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    let labeler = session.labeler(&args.common)?;
    let op = session.operating_point(&args.confidence)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&session.data.path, "labeled"));
    let pass = score_all(&session, &labeler, args.batch_size, args.common.max_tokens);
    let data = &session.data;
    let task = session.task.name();

    let mut names: Vec<String> = ["label", "confidence", "successfully_labeled", "error"]
        .iter()
        .map(|c| format!("{task}_task_{c}"))
        .collect();
    if op.threshold.is_some() {
        names.push(format!("{task}_task_confidently_labeled"));
    }
    if args.confidence.all_confidence_columns {
        names.extend(OperatingPoint::all_columns(task));
    }
    let width = names.len();
    let mut columns = OutputColumns::new(names, data.rows.len());
    let mut labels = vec![None; data.rows.len()];
    let mut confident = 0;
    for (i, r) in pass.rows.iter().enumerate() {
        let values = &mut columns.rows[i];
        match r {
            Ok(s) => {
                let c = op.confidence(s);
                let label = op.label(s).to_string();
                values.extend([
                    label.clone(),
                    format!("{c:.6}"),
                    bool_text(true),
                    String::new(),
                ]);
                if op.threshold.is_some() {
                    values.push(bool_text(op.is_confident(c)));
                    confident += op.is_confident(c) as usize;
                }
                if args.confidence.all_confidence_columns {
                    values.extend(op.all_values(s));
                }
                labels[i] = Some((label, c));
            }
            Err(e) => {
                values.extend([String::new(), String::new(), bool_text(false), e.clone()]);
                values.resize(width, String::new());
            }
        }
    }
    write_output(&out, data, &columns)?;

    let labeled = labels.iter().filter(|l| l.is_some()).count();
    let errors = labels.len() - labeled;
    eprintln!(
        "labeled {labeled}/{} rows in {:.1} s ({:.2} rows/s) with {} -> {}",
        labels.len(),
        pass.seconds,
        labeled as f64 / pass.seconds.max(1e-9),
        session.model.path.display(),
        out.display()
    );
    eprintln!("confidence: {}", op.describe());
    if op.threshold.is_some() {
        eprintln!(
            "{confident} of {labeled} labeled rows are confidently labeled; the other {} keep their best label with {}_task_confidently_labeled = False",
            labeled - confident,
            task
        );
    }
    if pass.truncated > 0 {
        eprintln!(
            "{} rows had their input cut from the middle to fit --max-tokens",
            pass.truncated
        );
    }
    if errors > 0 {
        eprintln!("{errors} rows could not be labeled (see the error column); first ones:");
        for e in pass.rows.iter().filter_map(|r| r.as_ref().err()).take(5) {
            eprintln!("  {e}");
        }
    }

    let mut support = 0;
    let mut outcomes = Vec::new();
    for (row, l) in data.rows.iter().zip(&labels) {
        if let Some(truth) = session.task.ground_truth(data, row) {
            support += 1;
            if let Some((label, confidence)) = l {
                outcomes.push(Outcome {
                    correct: *label == truth,
                    confidence: *confidence,
                });
            }
        }
    }
    let mut accuracy = None;
    if support > 0 {
        let table = metrics_table(&outcomes, support, DEFAULT_THRESHOLDS);
        accuracy = Some(table[0].accuracy);
        println!("{}", format_table(&table));
    }
    Ok(RunSummary {
        rows: labels.len(),
        labeled,
        errors,
        truncated: pass.truncated,
        accuracy,
        out,
    })
}
