//! The `autolabel-local` binary: argument parsing and exit codes; the commands live in
//! `autolabel_local::commands`.

use autolabel_local::commands::{self, calibrate, explain, merge, plan, run, score, status};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Label datasets with local language models: every label scored exactly, never parsed from text.
#[derive(Parser)]
#[command(
    name = "autolabel-local",
    version,
    after_help = "With no command, the options are `run`'s: autolabel-local --config task.json --data rows.csv"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Label a dataset and write it with the label, confidence and error columns.
    Run(run::RunArgs),
    /// Show the first prompt, token counts, label continuations and an estimated run time.
    Plan(plan::PlanArgs),
    /// Fit a temperature and a confidence threshold on labeled seed rows; report calibration
    /// quality and write the calibration file and charts.
    Calibrate(calibrate::CalibrateArgs),
    /// Score labels produced elsewhere: the local model's probability of each given label, its
    /// own label, and whether they agree.
    Score(score::ScoreArgs),
    /// Fill a seed file's explanation column (dataset.explanation_column) for chain-of-thought
    /// prompts: the model explains each example's label in one line.
    Explain(explain::ExplainArgs),
    /// Join the outputs of `run --shard I/N` into the output of one unsharded run, after
    /// checking that they belong together and hold every row once; print the metrics.
    Merge(merge::MergeArgs),
    /// Progress of a run (also of one that was interrupted), from its journal.
    Status(status::StatusArgs),
    /// List the model cards and whether each is in the local cache, and the models in the
    /// Hugging Face cache.
    Models,
}

/// `autolabel-local --config task.json --data rows.csv ...` (options with no command, as people
/// type it) means `run`.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    if first.starts_with('-') && !["-h", "--help", "-V", "--version"].contains(&first) {
        args.insert(1, "run".into());
    }
    args
}

/// Exit codes: 0 every row labeled, 2 some rows could not be labeled, 1 the run failed, 130
/// interrupted by Ctrl-C (resumable).
fn main() -> ExitCode {
    // candle's element-wise ops run on a spinning pool of their own beside rayon's (which runs
    // the matmuls and kernels); on a busy CPU the two pools fight for the cores (sms_spam on 2
    // cores: 13 -> 15 rows/s with it off), so it is off unless the user sets it.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    let result = match cli.command {
        Command::Run(args) => run::run(&args).map(|s| {
            if s.interrupted {
                130
            } else if s.errors > 0 {
                2
            } else {
                0
            }
        }),
        Command::Merge(args) => merge::merge(&args).map(|s| if s.errors > 0 { 2 } else { 0 }),
        Command::Status(args) => status::status(&args).map(|_| 0),
        Command::Plan(args) => plan::plan(&args).map(|_| 0),
        Command::Calibrate(args) => calibrate::calibrate(&args).map(|_| 0),
        Command::Score(args) => score::score(&args).map(|s| if s.errors > 0 { 2 } else { 0 }),
        Command::Explain(args) => explain::explain(&args).map(|s| if s.errors > 0 { 2 } else { 0 }),
        Command::Models => commands::models::models().map(|_| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
