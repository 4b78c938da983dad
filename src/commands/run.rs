//! `autolabel-local run`: label every row, write the output, print the summary and metrics.
//! Scores go to a journal beside the output as they are made, so an interrupted run (Ctrl-C,
//! kill -9, power loss) resumes where it stopped when the same command is run again.

use crate::dataset::Dataset;
use crate::journal::{journal_path, settings_key, Journal};
use crate::metrics::{format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::operating_point::{ConfidenceArgs, OperatingPoint};
use crate::output::{bool_text, default_out, write_output, OutputColumns};
use crate::scoring_pass::{score_all, PassOptions};
use crate::session::{CommonArgs, Session};
use crate::shard::{restrict, sha256_file, FileId, Manifest, Shard, MANIFEST_FORMAT};
use crate::tasks::open::Interpreted;
use crate::tasks::Task;
use anyhow::Result;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub confidence: ConfidenceArgs,
    /// Output file (.csv, .tsv or .jsonl). Default: <data name>.labeled.csv in the current directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows scored together in one batch. Default: 8 on a CPU, 64 on a GPU.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Ignore (and delete) the journal of an earlier run of this output; score every row again.
    #[arg(long)]
    pub fresh: bool,
    /// Label one shard of the rows: I/N (shard I of N, from 0), or auto (I and N from a Slurm
    /// job array or a Kubernetes Indexed Job; auto/N gives N). Writes <out stem>.shard-I-of-N.<ext>
    /// and its manifest; `autolabel-local merge` joins the shards.
    #[arg(long, value_name = "I/N|auto")]
    pub shard: Option<String>,
}

impl RunArgs {
    /// The shard this run labels (`--shard`), read from the scheduler's environment for `auto`.
    pub fn shard(&self) -> Result<Option<Shard>> {
        self.shard
            .as_deref()
            .map(|s| Shard::parse(s, &|k| std::env::var(k).ok()))
            .transpose()
    }

    /// Every option that changes an output's bytes, for shards to be checked against each
    /// other (files by their sha256, not their path: nodes may mount them elsewhere).
    fn output_settings(&self, dtype: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let c = &self.common;
        let file = |p: &Option<PathBuf>| -> Result<String> {
            p.as_deref()
                .map(sha256_file)
                .transpose()
                .map(|s| s.unwrap_or_default())
        };
        let mut confidence = self.confidence.clone();
        let calibration = file(&confidence.calibration.take())?;
        Ok([
            ("dtype", dtype.to_string()),
            ("device", c.device.clone()),
            ("revision", format!("{:?}", c.revision)),
            (
                "batch_size",
                crate::batching::batch_rows(self.batch_size, c.device == "cpu").to_string(),
            ),
            ("max_tokens", c.max_tokens.to_string()),
            ("max_items", format!("{:?}", c.max_items)),
            ("sample_seed", format!("{:?}", c.sample_seed)),
            ("chat_template", (!c.no_chat_template).to_string()),
            ("few_shot_examples", file(&c.few_shot_examples)?),
            ("disable_quoting", c.disable_quoting.to_string()),
            ("lossy", c.lossy.to_string()),
            ("explanation_tokens", c.explanation_tokens.to_string()),
            ("label_orders", c.label_orders.to_string()),
            ("calibration", calibration),
            ("confidence", format!("{confidence:?}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect())
    }
}

/// Writes a shard's manifest beside its output: what it was made from (config, data, model,
/// output options), which rows it holds and their answers for the merged metrics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_manifest(
    args: &RunArgs,
    session: &Session,
    journal: &mut Journal,
    shard: Shard,
    out: &std::path::Path,
    header: Vec<String>,
    indices: &[usize],
    answers: Vec<Option<Interpreted>>,
) -> Result<()> {
    let id = |p: &std::path::Path, sha: String| FileId {
        path: std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string(),
        sha256: sha,
    };
    let c = &args.common;
    Manifest {
        format: MANIFEST_FORMAT.into(),
        shard,
        task: session.task.name().to_string(),
        config: id(&c.config, sha256_file(&c.config)?),
        data: id(&c.data, journal.file_sha(&c.data)?),
        data_rows: session.data.rows.len(),
        model: id(&session.model.path, journal.model_sha(&session.model.path)?),
        settings: args.output_settings(&session.dtype)?,
        output: FileId {
            path: out
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            sha256: sha256_file(out)?,
        },
        header,
        unquoted: session.data.unquoted_delimiter.is_some(),
        rows: indices.to_vec(),
        answers,
    }
    .write(out)
}

/// Set by the first Ctrl-C: the run stops after the current batch. A second Ctrl-C exits at once
/// (the journal still holds every finished batch).
fn stop_flag() -> &'static AtomicBool {
    static STOP: OnceLock<&'static AtomicBool> = OnceLock::new();
    STOP.get_or_init(|| {
        let flag: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after the current batch (Ctrl-C again to quit at once)");
        });
        flag
    })
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub rows: usize,
    pub labeled: usize,
    pub errors: usize,
    pub truncated: usize,
    pub accuracy: Option<f64>,
    pub out: PathBuf,
    /// Stopped early on request; no output was written.
    pub interrupted: bool,
}

pub fn run(args: &RunArgs) -> Result<RunSummary> {
    // Ctrl-C from the start: before scoring begins it simply stops before the first batch.
    let stop = stop_flag();
    // The shard and the output location are checked before the model loads.
    let shard = args.shard()?;
    let mut out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.common.data, "labeled"));
    if let Some(s) = shard {
        let whole = out.clone();
        out = s.file_name(&out);
        eprintln!(
            "shard {s}: labeling this shard's rows into {}",
            out.display()
        );
        let mut other: Vec<String> = crate::shard::outputs_beside(&whole)
            .unwrap_or_default()
            .into_iter()
            .filter(|(o, _)| o.count != s.count)
            .map(|(o, _)| o.count.to_string())
            .collect();
        other.dedup();
        if !other.is_empty() {
            eprintln!(
                "note: beside {} are shards of a run with {} shards; the shard count changed, so merge only the -of-{} ones (and delete the others)",
                whole.display(),
                other.join(" and "),
                s.count
            );
        }
    }
    let out_dir = crate::output::parent_dir(&out);
    if !out_dir.is_dir() {
        anyhow::bail!(
            "the output directory {} does not exist; create it or choose another --out",
            out_dir.display()
        )
    }
    if out.is_dir() {
        anyhow::bail!(
            "--out {} is a directory; name a file (.csv, .tsv or .jsonl)",
            out.display()
        )
    }
    let session = Session::open(&args.common)?;
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    let labeler = session.labeler(&args.common)?;
    if let Some(open) = session.task.open() {
        return super::run_open::run_open(args, &session, &labeler, open, out, stop);
    }
    let mut op = session.operating_point(&args.confidence)?;
    let (mut journal, settings, journal_file) = open_journal(args, &session, &out)?;
    let pass = score_all(
        &session,
        &labeler,
        journaled_pass(args, &mut journal, settings, stop),
    )?;
    let (part, pass_rows) = restrict(&session.data, pass.rows, pass.owned.as_deref());
    let data = part.as_ref().map(|(d, _)| d).unwrap_or(&session.data);
    if pass.interrupted {
        return Ok(interrupted(&pass_rows, pass.truncated, &journal_file, out));
    }
    if let Some(line) = op.apply_debias(&session, &labeler)? {
        eprintln!("{line}");
    }
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
    names.extend(OperatingPoint::logprob_columns(task));
    let explanations = pass.explanations.as_ref().map(|e| {
        names.push(format!("{task}_task_explanation"));
        restrict_values(e, pass.owned.as_deref())
    });
    let width = names.len();
    let mut columns = OutputColumns::new(names, data.rows.len());
    let mut labels = vec![None; data.rows.len()];
    let mut confident = 0;
    for (i, r) in pass_rows.iter().enumerate() {
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
                values.extend(OperatingPoint::logprob_values(s));
                if let Some(e) = &explanations {
                    values.push(e[i].clone().unwrap_or_default());
                }
                labels[i] = Some((label, c));
            }
            Err(e) => {
                values.extend([String::new(), String::new(), bool_text(false), e.clone()]);
                values.resize(width, String::new());
            }
        }
    }
    let header = write_output(&out, data, &columns)?;
    journal.finish()?;
    if let (Some(shard), Some((_, indices))) = (shard, &part) {
        let answers = labels
            .iter()
            .map(|l| {
                l.as_ref().map(|(label, confidence)| Interpreted {
                    label: label.clone(),
                    confidence: *confidence as f64,
                    extra: Vec::new(),
                    detail: serde_json::Value::Null,
                })
            })
            .collect();
        write_manifest(
            args,
            &session,
            &mut journal,
            shard,
            &out,
            header,
            indices,
            answers,
        )?;
    }

    let labeled = labels.iter().filter(|l| l.is_some()).count();
    let errors = labels.len() - labeled;
    eprintln!(
        "labeled {labeled}/{} rows in {:.1} s ({:.2} rows/s) with {} -> {}",
        labels.len(),
        pass.seconds,
        pass.scored as f64 / pass.seconds.max(1e-9),
        session.model.path.display(),
        out.display()
    );
    if let Some(x) = &pass.explanation_pass {
        eprintln!("{}", x.describe());
    }
    if pass.reused > 0 {
        eprintln!(
            "{} rows came from the journal {} (an earlier run of this output); --fresh scores everything again",
            pass.reused,
            journal_file.display()
        );
    }
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
        for e in pass_rows.iter().filter_map(|r| r.as_ref().err()).take(5) {
            eprintln!("  {e}");
        }
    }

    let accuracy = label_set_report(session.task.as_ref(), data, &labels);
    Ok(RunSummary {
        rows: labels.len(),
        labeled,
        errors,
        truncated: pass.truncated,
        accuracy,
        out,
        interrupted: false,
    })
}

/// The values of the rows a shard owns (all values without a shard), in file order.
pub(crate) fn restrict_values<T: Clone>(values: &[T], owned: Option<&[bool]>) -> Vec<T> {
    match owned {
        None => values.to_vec(),
        Some(o) => values
            .iter()
            .zip(o)
            .filter(|(_, &k)| k)
            .map(|(v, _)| v.clone())
            .collect(),
    }
}

/// Prints the metrics table of a label-set task against the ground truth (when the data has
/// it); returns the accuracy of all rows.
pub(crate) fn label_set_report(
    task: &dyn Task,
    data: &Dataset,
    labels: &[Option<(String, f32)>],
) -> Option<f64> {
    let mut support = 0;
    let mut outcomes = Vec::new();
    for (row, l) in data.rows.iter().zip(labels) {
        if let Some(truth) = task.ground_truth(data, row) {
            support += 1;
            if let Some((label, confidence)) = l {
                outcomes.push(Outcome {
                    correct: *label == truth,
                    confidence: *confidence,
                });
            }
        }
    }
    (support > 0).then(|| {
        let table = metrics_table(&outcomes, support, DEFAULT_THRESHOLDS);
        println!("{}", format_table(&table));
        table[0].accuracy
    })
}

/// The run's journal (`--fresh` deletes it first), the settings key of this model, weight
/// format and device, and the journal's path.
pub(crate) fn open_journal(
    args: &RunArgs,
    session: &Session,
    out: &std::path::Path,
) -> Result<(Journal, crate::journal::RowKey, PathBuf)> {
    let journal_file = journal_path(out);
    if args.fresh {
        Journal::remove(&journal_file)?;
    }
    let journal = Journal::open(&journal_file)?;
    let settings = settings_key(
        &journal.model_sha(&session.model.path)?,
        &session.dtype,
        &args.common.device,
    );
    Ok((journal, settings, journal_file))
}

/// The pass options of a run: `--batch-size`, `--max-tokens`, the journal (recording this
/// command line) and the stop flag.
pub(crate) fn journaled_pass<'a>(
    args: &RunArgs,
    journal: &'a mut Journal,
    settings: crate::journal::RowKey,
    stop: &'a AtomicBool,
) -> PassOptions<'a> {
    let command: Vec<String> = std::env::args().collect();
    PassOptions {
        batch_size: args.batch_size,
        max_tokens: args.common.max_tokens,
        journal: Some((journal, settings, command.join(" "))),
        stop: Some(stop),
        // Checked when the run started.
        shard: args.shard().ok().flatten(),
    }
}

/// Says how far an interrupted run got and how to resume it.
pub(crate) fn interrupted<T>(
    rows: &[std::result::Result<T, String>],
    truncated: usize,
    journal_file: &std::path::Path,
    out: PathBuf,
) -> RunSummary {
    let total = rows.len();
    let left = rows
        .iter()
        .filter(|r| r.as_ref().is_err_and(|e| e.contains("interrupted")))
        .count();
    eprintln!(
        "interrupted: {} of {total} rows are done and kept in {}; run the same command again to resume (`autolabel-local status --out {}` shows progress)",
        total - left,
        journal_file.display(),
        out.display()
    );
    RunSummary {
        rows: total,
        labeled: 0,
        errors: 0,
        truncated,
        accuracy: None,
        out,
        interrupted: true,
    }
}
