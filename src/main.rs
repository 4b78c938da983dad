use autolabel_local::{calibrate, plan, run, score, status};
use autolabel_models::cards::ModelCard;
use autolabel_models::{fetch, hub};
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Label datasets with local language models: every label scored exactly, never parsed from text.
#[derive(Parser)]
#[command(name = "autolabel-local", version)]
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
    /// Progress of a run (also of one that was interrupted), from its journal.
    Status(status::StatusArgs),
    /// List the model cards and whether each is in the local cache, and the models in the
    /// Hugging Face cache.
    Models,
}

/// Exit codes: 0 every row labeled, 2 some rows could not be labeled, 1 the run failed, 130
/// interrupted by Ctrl-C (resumable).
fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Status(args) => status::status(&args).map(|_| 0),
        Command::Plan(args) => plan::plan(&args).map(|_| 0),
        Command::Calibrate(args) => calibrate::calibrate(&args).map(|_| 0),
        Command::Score(args) => score::score(&args).map(|s| if s.errors > 0 { 2 } else { 0 }),
        Command::Models => {
            let root = fetch::cache_root();
            for card in ModelCard::builtin() {
                let path = fetch::cached_path(&card, &root);
                println!(
                    "{:<30} {:<8} {:>6.0} MB  {}{}\n{:<30} license: {}",
                    card.name,
                    card.architecture,
                    card.size as f64 / 1e6,
                    if path.exists() {
                        format!("cached at {}", path.display())
                    } else {
                        "not cached".into()
                    },
                    if card.default { "  (default)" } else { "" },
                    "",
                    card.license
                );
            }
            let hub = fetch::hf_hub_cache();
            let repos = hub::list_cache(&hub);
            println!("\nHugging Face cache {}:", hub.display());
            if repos.is_empty() {
                println!("  (no models; --model org/name downloads one)");
            }
            for r in repos {
                let refs: Vec<String> = r
                    .refs
                    .iter()
                    .map(|(name, commit)| format!("{name} -> {}", &commit[..commit.len().min(12)]))
                    .collect();
                println!(
                    "  {:<40} {:>8.1} MB  {}",
                    r.repo,
                    r.bytes as f64 / 1e6,
                    refs.join(", ")
                );
                for (dir, what) in r.snapshots {
                    println!(
                        "    {}: {what}",
                        dir.file_name().unwrap_or_default().to_string_lossy()
                    );
                }
            }
            Ok(0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
