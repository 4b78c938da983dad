//! `run` for tasks whose answers are generated under a constraint (named-entity recognition):
//! the generation pass, the task's output columns and its metrics report.

use super::run::{interrupted, journaled_pass, open_journal, write_manifest, RunArgs, RunSummary};
use crate::answer_calibration::AnswerCalibration;
use crate::answer_pass::answer_all;
use crate::calibration::CurvePoint;
use crate::dataset::Dataset;
use crate::labeler::Labeler;
use crate::output::{bool_text, write_output, OutputColumns};
use crate::session::Session;
use crate::shard::restrict;
use crate::tasks::open::Interpreted;
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
    let point = AnswerPoint::resolve(args, session, task)?;
    let (mut journal, settings, journal_file) = open_journal(args, session, &out)?;
    let mut pass = answer_all(
        session,
        labeler,
        task,
        journaled_pass(args, &mut journal, settings, stop),
    )?;
    let (part, pass_rows) = restrict(
        &session.data,
        std::mem::take(&mut pass.rows),
        pass.owned.as_deref(),
    );
    let data = part.as_ref().map(|(d, _)| d).unwrap_or(&session.data);
    let total = pass_rows.len();
    if pass.interrupted {
        return Ok(interrupted(&pass_rows, pass.truncated, &journal_file, out));
    }
    let name = session.task.name();
    let thresholded = point
        .as_ref()
        .is_some_and(|p| p.threshold.is_some() || p.cuts);
    let prefixed = |c: String| format!("{name}_task_{c}");
    let names: Vec<String> = ["label", "confidence", "successfully_labeled", "error"]
        .iter()
        .map(|c| prefixed(c.to_string()))
        .chain(task.extra_columns().into_iter().map(prefixed))
        .chain(task.plain_columns())
        .chain(thresholded.then(|| prefixed("confidently_labeled".to_string())))
        .collect();
    let mut confident = 0;
    let width = names.len();
    let mut columns = OutputColumns::new(names, total);
    let mut interpreted = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (i, r) in pass_rows.iter().enumerate() {
        let values = &mut columns.rows[i];
        match r.clone() {
            Ok(mut it) => {
                let sure = point.as_ref().map(|p| p.apply(task, &mut it));
                values.extend([
                    it.label.clone(),
                    format!("{:.6}", it.confidence),
                    bool_text(true),
                    String::new(),
                ]);
                values.extend(it.extra.iter().cloned());
                if thresholded {
                    let sure = sure.unwrap_or(true);
                    confident += sure as usize;
                    values.push(bool_text(sure));
                }
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
    let header = write_output(&out, data, &columns)?;
    journal.finish()?;
    if let (Some(shard), Some((_, indices))) = (args.shard()?, &part) {
        let answers = interpreted.clone();
        write_manifest(
            args,
            session,
            &mut journal,
            shard,
            &out,
            header,
            indices,
            answers,
        )?;
    }
    let labeled = total - errors.len();
    let tokens = pass.tokens.map_or(String::new(), |t| {
        format!(
            ", {:.1} generated tokens/s",
            t as f64 / pass.seconds.max(1e-9)
        )
    });
    eprintln!(
        "labeled {labeled}/{total} rows in {:.1} s ({:.2} rows/s{tokens}) with {} -> {}",
        pass.seconds,
        pass.answered as f64 / pass.seconds.max(1e-9),
        session.model.path.display(),
        out.display()
    );
    if let Some(line) = &pass.overhead {
        eprintln!("{line}");
    }
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
    if let Some(p) = &point {
        eprintln!("confidence: {}", p.describe(task.unit()));
        if p.cuts {
            eprintln!(
                "{confident} of {labeled} labeled rows have a {} at or above its cut; {}",
                task.group_kind(),
                task.below_threshold_note()
            );
        } else if thresholded {
            eprintln!(
                "{confident} of {labeled} labeled rows have every {} at or above the threshold; {}",
                task.unit(),
                task.below_threshold_note()
            );
        }
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
    let accuracy = open_report(task, data, &interpreted);
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

/// Prints a generated-answer task's metrics report and its warnings (when the data has ground
/// truth); returns the accuracy figure, if the task has one.
pub(crate) fn open_report(
    task: &dyn OpenTask,
    data: &Dataset,
    interpreted: &[Option<Interpreted>],
) -> Option<f64> {
    let report = task.report(data, interpreted)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    println!("{}", report.text);
    report
        .figures
        .iter()
        .find(|(n, _)| n == "accuracy")
        .map(|(_, v)| *v)
}

/// The calibration and threshold a run of a generated-answer task applies.
struct AnswerPoint {
    /// The scaling(s): one, or one per unit group (per attribute or label).
    cal: AnswerCalibration,
    group: &'static str,
    /// Each group is chosen at its own cut from the calibration (multi-label by membership).
    cuts: bool,
    threshold: Option<CurvePoint>,
    target: f64,
    path: PathBuf,
}

impl AnswerPoint {
    fn resolve(args: &RunArgs, session: &Session, task: &dyn OpenTask) -> Result<Option<Self>> {
        let c = &args.confidence;
        let kind = &session.config.task_type;
        if c.debias.is_some() {
            bail!("--debias divides a label prior out of a label set's distribution; a {kind} task's answer is generated, so there is none to divide out")
        }
        if c.confidence.is_some() || c.all_confidence_columns {
            bail!("--confidence and --all-confidence-columns choose among label-set confidences; a {kind} task's confidence is the probability of each {}'s tokens", task.unit())
        }
        if let Some(t) = c.target_accuracy {
            if !(0.0..=1.0).contains(&t) {
                bail!("--target-accuracy {t} must be between 0 and 1 (e.g. 0.9)")
            }
        }
        let Some(path) = &c.calibration else {
            if c.target_accuracy.is_some() {
                bail!("--target-accuracy needs --calibration FILE: the threshold comes from labeled seed rows (run `autolabel-local calibrate` with this config first)")
            }
            return Ok(None);
        };
        let cal = AnswerCalibration::read(path)?;
        cal.check_matches(
            path,
            session.task.name(),
            &session.model_file(),
            &task.unit_groups(),
            task.unit(),
        )?;
        let target = c.target_accuracy.unwrap_or(cal.target_accuracy);
        // Multi-label by membership: each label's own cut, unless a target accuracy is asked.
        let cuts = task.chooses_per_group()
            && c.target_accuracy.is_none()
            && cal.groups.iter().any(|g| g.choose_at.is_some());
        let threshold = match cal.threshold_for(target) {
            _ if cuts => None,
            Some(p) => Some(p),
            None if c.target_accuracy.is_none() => None,
            None => {
                let best = cal.curve.iter().map(|p| p.accuracy).fold(0.0, f64::max);
                eprintln!(
                    "warning: no threshold reached accuracy {target} on the seed {}s of {} (the best subset reached {best:.3}); every {} is marked below the threshold (lower --target-accuracy or calibrate on more seed rows)",
                    task.unit(),
                    path.display(),
                    task.unit()
                );
                Some(crate::operating_point::unreachable(best))
            }
        };
        Ok(Some(AnswerPoint {
            cal,
            group: task.group_kind(),
            cuts,
            threshold,
            target,
            path: path.clone(),
        }))
    }

    /// Calibrates an answer's units; whether every unit reached the threshold.
    fn apply(&self, task: &dyn OpenTask, it: &mut Interpreted) -> bool {
        if self.cuts {
            return task.apply_group_choice(it, &|g, p| self.cal.platt_for(g).apply(p), &|g| {
                self.cal.groups.get(g).and_then(|x| x.choose_at)
            });
        }
        task.apply_group_calibration(
            it,
            &|g, p| self.cal.platt_for(g).apply(p),
            self.threshold.map(|p| p.threshold as f64),
        )
    }

    fn describe(&self, unit: &str) -> String {
        let cal = if self.cal.groups.is_empty() {
            format!(
                "calibrated {unit} probability sigmoid({:.3} ln p + {:.3}) from {}",
                self.cal.platt.a,
                self.cal.platt.b,
                self.path.display()
            )
        } else {
            let each: Vec<String> = self
                .cal
                .groups
                .iter()
                .map(|g| {
                    format!(
                        "{}: sigmoid({:.3} ln p + {:.3})",
                        g.name, g.platt.a, g.platt.b
                    )
                })
                .collect();
            format!(
                "calibrated {unit} probability per {} ({}) from {}",
                self.group,
                each.join(", "),
                self.path.display()
            )
        };
        if self.cuts {
            let each: Vec<String> = self
                .cal
                .groups
                .iter()
                .map(|g| match g.choose_at {
                    Some(c) => format!("{} >= {c:.4}", g.name),
                    None => format!(
                        "{} >= {}",
                        g.name,
                        crate::tasks::multilabel_membership::CHOOSE_AT
                    ),
                })
                .collect();
            return format!(
                "{cal}; each {} chosen at its own cut (best F1 on the seed rows; --target-accuracy sets one threshold instead): {}",
                self.group,
                each.join(", ")
            );
        }
        match &self.threshold {
            Some(p) if p.threshold.is_infinite() => format!(
                "{cal}; no threshold reached accuracy {} on the seed rows (the best subset reached {:.3}): every {unit} is below it",
                self.target, p.accuracy
            ),
            Some(p) => format!(
                "{cal}; threshold {:.4} (on the seed rows it kept {:.1}% of {unit}s at accuracy {:.3}, target {})",
                p.threshold,
                100.0 * p.completion_rate,
                p.accuracy,
                self.target
            ),
            None => format!(
                "{cal}; no threshold (the calibration's target {} was not reachable on its seed rows)",
                self.target
            ),
        }
    }
}
