//! `autolabel-local status --out FILE`: how far the run writing FILE got, from its journal.

use crate::journal::{journal_path, Journal};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The output file of the run (as given to `run --out`).
    #[arg(long)]
    pub out: PathBuf,
}

fn ago(t: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(t);
    let s = (now - t).max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        _ => format!("{:.1} h ago", s as f64 / 3600.0),
    }
}

pub fn status(args: &StatusArgs) -> Result<()> {
    let path = journal_path(&args.out);
    let Some(journal) = Journal::open_existing(&path)? else {
        bail!(
            "no run journal for {} (looked for {}); was the run started with --out {}?",
            args.out.display(),
            path.display(),
            args.out.display()
        )
    };
    let p = journal.progress()?;
    let state = if p.finished {
        "finished"
    } else if p.done == p.total {
        "all rows scored; output not written yet (run the command again to write it)"
    } else {
        "not finished (running, or interrupted: run the same command again to resume)"
    };
    println!("{}: {state}", args.out.display());
    println!(
        "  {} of {} rows done ({:.1}%)",
        p.done,
        p.total,
        100.0 * p.done as f64 / p.total.max(1) as f64
    );
    println!(
        "  started {}, last batch {}",
        ago(p.started),
        ago(p.updated)
    );
    let elapsed = (p.updated - p.started).max(1) as f64;
    if !p.finished && p.done > 0 && p.done < p.total {
        println!(
            "  about {:.0} min left at the rate so far",
            (p.total - p.done) as f64 / (p.done as f64 / elapsed) / 60.0
        );
    }
    println!("  command: {}", p.command);
    println!("  journal: {}", path.display());
    Ok(())
}
