//! `autolabel-local run`: label every row, write the output, print the summary and metrics.

use crate::labeler::Prepared;
use crate::metrics::{format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::output::{write_output, RowOutput};
use crate::session::{CommonArgs, Session};
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
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

/// Prompt tokens allowed in one batch (rows x longest prompt), bounding attention memory.
const BATCH_TOKEN_BUDGET: usize = 8192;

/// Groups rows of similar length (indices into `prepared`, sorted by prompt length).
pub fn batches(prepared: &[(usize, Prepared)], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..prepared.len()).collect();
    order.sort_by_key(|&i| prepared[i].1.prompt_ids.len());
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    for i in order {
        let len = prepared[i].1.prompt_ids.len();
        if !cur.is_empty()
            && (cur.len() >= batch_size.max(1) || (cur.len() + 1) * len > BATCH_TOKEN_BUDGET)
        {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn run(args: &RunArgs) -> Result<RunSummary> {
    let session = Session::open(&args.common)?;
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    let labeler = session.labeler(&args.common)?;
    let data = &session.data;
    let mut outputs = vec![RowOutput::default(); data.rows.len()];
    let mut prepared = Vec::new();
    let mut truncated = 0;
    for (i, row) in data.rows.iter().enumerate() {
        match labeler.prepare(data, row) {
            Ok(p) => {
                if p.truncated {
                    truncated += 1;
                    eprintln!(
                        "warning: line {}: input cut from the middle to fit {} tokens",
                        row.line, args.common.max_tokens
                    );
                }
                prepared.push((i, p));
            }
            Err(e) => outputs[i].error = e,
        }
    }

    let started = Instant::now();
    let bar = ProgressBar::new(prepared.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  ETA {eta}")
            .expect("valid progress template"),
    );
    for batch in batches(&prepared, args.batch_size) {
        let items: Vec<&Prepared> = batch.iter().map(|&j| &prepared[j].1).collect();
        match labeler.score(&items) {
            Ok(scores) => {
                for (&j, s) in batch.iter().zip(scores) {
                    let (i, p) = &prepared[j];
                    outputs[*i] = RowOutput {
                        label: p.labels[s.best].clone(),
                        confidence: Some(s.confidence()),
                        successfully_labeled: true,
                        error: String::new(),
                    };
                }
            }
            Err(e) => {
                for &j in &batch {
                    let (i, _) = prepared[j];
                    outputs[i].error = format!("line {}: scoring failed: {e:#}", data.rows[i].line);
                }
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    let out = args.out.clone().unwrap_or_else(|| {
        let stem = data
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("data");
        PathBuf::from(format!("{stem}.labeled.csv"))
    });
    write_output(&out, data, session.task.name(), &outputs)?;

    let labeled = outputs.iter().filter(|o| o.successfully_labeled).count();
    let errors = outputs.len() - labeled;
    eprintln!(
        "labeled {labeled}/{} rows in {elapsed:.1} s ({:.2} rows/s) with {} -> {}",
        outputs.len(),
        labeled as f64 / elapsed.max(1e-9),
        session.model.path.display(),
        out.display()
    );
    if truncated > 0 {
        eprintln!("{truncated} rows had their input cut from the middle to fit --max-tokens");
    }
    if errors > 0 {
        eprintln!("{errors} rows could not be labeled (see the error column); first ones:");
        for o in outputs.iter().filter(|o| !o.successfully_labeled).take(5) {
            eprintln!("  {}", o.error);
        }
    }

    let mut support = 0;
    let mut outcomes = Vec::new();
    for (row, o) in data.rows.iter().zip(&outputs) {
        if let Some(truth) = session.task.ground_truth(data, row) {
            support += 1;
            if o.successfully_labeled {
                outcomes.push(Outcome {
                    correct: o.label == truth,
                    confidence: o.confidence.unwrap_or(0.0),
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
        rows: outputs.len(),
        labeled,
        errors,
        truncated,
        accuracy,
        out,
    })
}
