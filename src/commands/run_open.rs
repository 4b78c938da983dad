//! `run` for tasks whose answers are generated under a constraint (named-entity recognition):
//! the generation pass, the task's output columns and its metrics report.

use super::run::{interrupted, journaled_pass, open_journal, RunArgs, RunSummary};
use crate::generation_pass::generate_all;
use crate::labeler::Labeler;
use crate::output::{bool_text, write_output, OutputColumns};
use crate::session::Session;
use crate::tasks::open::OpenTask;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

pub fn run_open(
    args: &RunArgs,
    session: &Session,
    labeler: &Labeler,
    task: &dyn OpenTask,
    out: PathBuf,
    stop: &AtomicBool,
) -> Result<RunSummary> {
    let c = &args.confidence;
    if c.calibration.is_some() || c.target_accuracy.is_some() || c.confidence.is_some() {
        bail!("--calibration, --target-accuracy and --confidence are not supported yet for {} tasks; each entity's confidence is in the entities column", session.config.task_type)
    }
    let (mut journal, settings, journal_file) = open_journal(args, session, &out)?;
    let pass = generate_all(
        session,
        labeler,
        task,
        journaled_pass(args, &mut journal, settings, stop),
    )?;
    let data = &session.data;
    let total = pass.rows.len();
    if pass.interrupted {
        return Ok(interrupted(&pass.rows, pass.truncated, &journal_file, out));
    }
    let name = session.task.name();
    let names: Vec<String> = ["label", "confidence", "successfully_labeled", "error"]
        .iter()
        .map(|c| c.to_string())
        .chain(task.extra_columns())
        .map(|c| format!("{name}_task_{c}"))
        .collect();
    let width = names.len();
    let mut columns = OutputColumns::new(names, total);
    let mut interpreted = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (i, (row, r)) in data.rows.iter().zip(&pass.rows).enumerate() {
        let values = &mut columns.rows[i];
        match r
            .as_ref()
            .map_err(String::clone)
            .and_then(|a| task.interpret(data, row, a))
        {
            Ok(it) => {
                values.extend([
                    it.label.clone(),
                    format!("{:.6}", it.confidence),
                    bool_text(true),
                    String::new(),
                ]);
                values.extend(it.extra.iter().cloned());
                interpreted.push(Some(it));
            }
            Err(e) => {
                values.extend([String::new(), String::new(), bool_text(false), e.clone()]);
                values.resize(width, String::new());
                errors.push(e);
                interpreted.push(None);
            }
        }
    }
    write_output(&out, data, &columns)?;
    journal.finish()?;
    let labeled = total - errors.len();
    eprintln!(
        "labeled {labeled}/{total} rows in {:.1} s ({:.2} rows/s, {:.1} generated tokens/s) with {} -> {}",
        pass.seconds,
        pass.generated as f64 / pass.seconds.max(1e-9),
        pass.tokens as f64 / pass.seconds.max(1e-9),
        session.model.path.display(),
        out.display()
    );
    if pass.reused > 0 {
        eprintln!(
            "{} rows came from the journal {}; --fresh generates everything again",
            pass.reused,
            journal_file.display()
        );
    }
    if pass.truncated > 0 {
        eprintln!(
            "{} rows had their input cut from the middle to fit --max-tokens",
            pass.truncated
        );
    }
    if !errors.is_empty() {
        eprintln!(
            "{} rows could not be labeled (see the error column); first ones:",
            errors.len()
        );
        for e in errors.iter().take(5) {
            eprintln!("  {e}");
        }
    }
    let mut accuracy = None;
    if let Some(report) = task.report(data, &interpreted) {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        accuracy = report
            .figures
            .iter()
            .find(|(n, _)| n == "accuracy")
            .map(|(_, v)| *v);
        println!("{}", report.text);
    }
    Ok(RunSummary {
        rows: total,
        labeled,
        errors: errors.len(),
        truncated: pass.truncated,
        accuracy,
        out,
        interrupted: false,
    })
}
