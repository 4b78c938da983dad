//! `calibrate` for tasks whose answers are generated (named-entity recognition, extractive QA):
//! generate answers for labeled seed rows, judge each unit (entity, answer) against the ground
//! truth, fit Platt scaling of the unit's probability, choose the threshold that reaches a target
//! precision, and write the calibration file and its charts.

use super::calibrate::{chart_paths, held_out, kept_at, CalibrateArgs};
use crate::answer_calibration::{
    group_platt, unit_quality, AnswerCalibration, UnitQuality, ANSWER_FORMAT,
};
use crate::answer_pass::answer_all;
use crate::calibration::{default_path, reliability_bins, ECE_BINS};
use crate::metrics::{auroc, format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::plots;
use crate::scoring_pass::PassOptions;
use crate::session::Session;
use crate::tasks::open::OpenTask;
use anyhow::{bail, Result};

fn quality_line(name: &str, q: &UnitQuality) -> String {
    format!(
        "| {name:<28} | {:>6} | {:>8.4} | {:>7.4} | {:>7.4} |",
        q.units, q.accuracy, q.ece, q.brier
    )
}

/// "entity" -> "entities", "answer" -> "answers".
pub(crate) fn plural(unit: &str) -> String {
    match unit.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None => format!("{unit}s"),
    }
}

fn as_outcomes(units: &[(f64, bool)], map: impl Fn(f64) -> f64) -> Vec<Outcome> {
    units
        .iter()
        .map(|&(p, correct)| Outcome {
            correct,
            confidence: map(p) as f32,
        })
        .collect()
}

pub fn calibrate_open(
    args: &CalibrateArgs,
    session: &Session,
    task: &dyn OpenTask,
) -> Result<AnswerCalibration> {
    let kind = &session.config.task_type;
    if !["auto", "temperature"].contains(&args.fit.as_str()) {
        bail!("--fit {} applies to tasks with a label set; {kind} tasks fit a scaling of each {}'s probability (the default)", args.fit, task.unit())
    }
    if args.confidence != "label_prob" {
        bail!("--confidence {} chooses among label-set confidences; a {kind} task's confidence is the probability of each {}'s tokens", args.confidence, task.unit())
    }
    let data = &session.data;
    if data
        .rows
        .iter()
        .all(|r| session.task.ground_truth(data, r).is_none())
    {
        bail!(
            "{}: calibrate needs labeled seed rows, and no row has readable ground truth for this {kind} config (see the config's dataset keys)",
            data.path.display()
        )
    }
    let path = args
        .calibration
        .clone()
        .unwrap_or_else(|| default_path(&args.common.config));
    let labeler = session.labeler(&args.common)?;
    let pass = answer_all(
        session,
        &labeler,
        task,
        PassOptions::new(args.batch_size, args.common.max_tokens),
    )?;
    let unit = task.unit();
    let units = plural(unit);
    let (mut fit, mut held) = (Vec::new(), Vec::new());
    let (mut rows_fit, mut rows_held, mut failed) = (0, 0, 0);
    for (i, (row, r)) in data.rows.iter().zip(&pass.rows).enumerate() {
        let answer = match r.clone() {
            Ok(a) => a,
            Err(e) => {
                if session.task.ground_truth(data, row).is_some() {
                    failed += 1;
                    eprintln!("warning: seed row left out: {e}");
                }
                continue;
            }
        };
        let Some(judged) = task.grouped_outcomes(data, row, &answer) else {
            continue;
        };
        if held_out(i, args.holdout) {
            rows_held += 1;
            held.extend(judged);
        } else {
            rows_fit += 1;
            fit.extend(judged);
        }
    }
    if fit.len() < 2 {
        bail!(
            "the model gave only {} {units} on {rows_fit} seed rows to fit on; calibrate needs labeled rows (at least dozens) where it answers",
            fit.len()
        )
    }
    let raw = |v: &[(usize, f64, bool)]| -> Vec<(f64, bool)> {
        v.iter().map(|&(_, p, ok)| (p, ok)).collect()
    };
    let (fit_raw, held_raw) = (raw(&fit), raw(&held));
    let (platt, mut curve) = AnswerCalibration::fit(&fit_raw);
    // Attribute extraction and multi-label by membership: a scaling per attribute or label (a
    // common one for groups with few seed units), and the threshold over every calibrated unit.
    let names = task.unit_groups();
    let mut groups = if names.is_empty() {
        Vec::new()
    } else {
        AnswerCalibration::fit_groups(&names, &fit, platt)
    };
    // Multi-label by membership: each label is chosen at the cut on its calibrated probability
    // with the best F1 on the fit rows.
    if task.chooses_per_group() {
        for (g, group) in groups.iter_mut().enumerate() {
            let own: Vec<(f64, bool)> = fit
                .iter()
                .filter(|u| u.0 == g)
                .map(|&(_, p, ok)| (group.platt.apply(p), ok))
                .collect();
            if let Some((cut, f1)) = crate::answer_calibration::f1_cut(&own) {
                group.choose_at = Some(cut);
                group.seed_f1 = Some(f1);
            }
        }
    }
    let calibrate = |v: &[(usize, f64, bool)]| -> Vec<(f64, bool)> {
        v.iter()
            .map(|&(g, p, ok)| (group_platt(&groups, platt, g).apply(p), ok))
            .collect()
    };
    let (fit_cal, held_cal) = (calibrate(&fit), calibrate(&held));
    if !groups.is_empty() {
        let mapped: Vec<(f32, bool)> = fit_cal.iter().map(|&(c, ok)| (c as f32, ok)).collect();
        curve = crate::calibration::coverage_curve(&mapped, fit_cal.len());
    }
    let identity = |p: f64| p;
    let mut cal = AnswerCalibration {
        format: ANSWER_FORMAT.into(),
        task_type: kind.clone(),
        task_name: session.task.name().into(),
        model: session.model_file(),
        unit: unit.into(),
        platt,
        groups: groups.clone(),
        target_accuracy: args.target_accuracy,
        threshold: None,
        fit: unit_quality(&fit_cal, identity),
        fit_uncalibrated: unit_quality(&fit_raw, identity),
        holdout: (!held.is_empty()).then(|| unit_quality(&held_cal, identity)),
        holdout_uncalibrated: (!held.is_empty()).then(|| unit_quality(&held_raw, identity)),
        curve,
    };
    let point = cal.threshold_for(args.target_accuracy);
    cal.threshold = point.map(|p| p.threshold);
    cal.write(&path)?;

    println!(
        "{} answers for {} seed rows in {:.1} s: {} {units} on {rows_fit} fit rows, {} on {rows_held} held-out rows{}",
        if pass.tokens.is_some() {
            "generated"
        } else {
            "scored"
        },
        rows_fit + rows_held + failed,
        pass.seconds,
        fit.len(),
        held.len(),
        if failed > 0 {
            format!(" ({failed} rows could not be labeled)")
        } else {
            String::new()
        }
    );
    if let Some(line) = &pass.overhead {
        println!("{line}");
    }
    if groups.is_empty() {
        println!(
            "calibrated {unit} confidence = sigmoid({:.4} * ln p + {:.4}), p = {}",
            platt.a,
            platt.b,
            task.unit_probability()
        );
    } else {
        println!(
            "calibrated {unit} confidence = sigmoid(a * ln p + b) per {}, p = {}:",
            task.group_kind(),
            task.unit_probability()
        );
        for g in &groups {
            let own = if g.units >= crate::answer_calibration::MIN_GROUP_UNITS {
                ""
            } else {
                " (too few to fit alone: the common scaling)"
            };
            let cut = match (g.choose_at, g.seed_f1) {
                (Some(c), Some(f)) => {
                    format!("; chosen at calibrated p >= {c:.4} (F1 {f:.3} on the fit rows)")
                }
                _ if task.chooses_per_group() => format!(
                    "; no fit row has it: chosen at p >= {}",
                    crate::tasks::multilabel_membership::CHOOSE_AT
                ),
                _ => String::new(),
            };
            println!(
                "  {}: a = {:.4}, b = {:.4} on {} fit {units}{own}{cut}",
                g.name, g.platt.a, g.platt.b, g.units
            );
        }
    }
    println!();
    println!("| {:<28} |      n | accuracy |     ECE |   Brier |", units);
    println!("|------------------------------|-------:|---------:|--------:|--------:|");
    println!(
        "{}",
        quality_line("fit, uncalibrated", &cal.fit_uncalibrated)
    );
    println!("{}", quality_line("fit, calibrated", &cal.fit));
    if let (Some(b), Some(a)) = (&cal.holdout_uncalibrated, &cal.holdout) {
        println!("{}", quality_line("held out, uncalibrated", b));
        println!("{}", quality_line("held out, calibrated", a));
    }
    let (eval, eval_cal, which) = if held.is_empty() {
        (&fit_raw, &fit_cal, "fit")
    } else {
        (&held_raw, &held_cal, "held-out")
    };
    let o = as_outcomes(eval_cal, identity);
    println!(
        "\nprobability as a predictor of a right {unit} (AUROC; 0.5 is chance): {}",
        auroc(&as_outcomes(eval, identity))
            .map_or("n/a (all right or all wrong)".into(), |a| format!("{a:.4}"))
    );
    println!("\n{which} {units}, calibrated confidence (accuracy = share of kept {units} that are right, completion_rate = share kept):");
    println!(
        "{}",
        format_table(&metrics_table(&o, eval.len(), DEFAULT_THRESHOLDS))
    );
    match point {
        Some(p) => {
            println!(
                "threshold for accuracy {}: calibrated confidence >= {:.4}, keeping {:.1}% of the fit {units} at accuracy {:.4}",
                args.target_accuracy,
                p.threshold,
                100.0 * p.completion_rate,
                p.accuracy
            );
            if !held.is_empty() {
                let (share, acc) = kept_at(&o, p.threshold);
                println!(
                    "on the held-out {units} that threshold keeps {:.1}% at accuracy {acc:.4}",
                    100.0 * share
                );
            }
        }
        None => println!(
            "no threshold reaches accuracy {} on the fit {units}: every subset is less accurate; `run --calibration --target-accuracy` will need a lower target",
            args.target_accuracy
        ),
    }
    if cal.groups.iter().any(|g| g.choose_at.is_some()) {
        println!(
            "`run --calibration` chooses each {} at its own cut (above); with --target-accuracy it uses one threshold instead",
            task.group_kind()
        );
    }
    println!("\nwrote {}", path.display());

    if !args.no_plots {
        let (reliability, coverage) = chart_paths(&path, &args.plot_format);
        let pairs = |v: &[(f64, bool)]| -> Vec<(f32, bool)> {
            v.iter().map(|&(p, ok)| (p as f32, ok)).collect()
        };
        let drawn = plots::reliability_diagram(
            &reliability,
            &reliability_bins(&pairs(eval), ECE_BINS),
            &reliability_bins(&pairs(eval_cal), ECE_BINS),
            &format!(
                "{}: reliability of {} {which} {units}",
                session.task.name(),
                eval.len()
            ),
        );
        let name = format!("calibrated {unit} confidence");
        let drawn = drawn.and_then(|()| {
            plots::coverage_chart(
                &coverage,
                &[(name.as_str(), cal.curve.as_slice())],
                args.target_accuracy,
                &format!(
                    "{}: accuracy vs share of {units} kept ({} fit {units})",
                    session.task.name(),
                    fit.len()
                ),
            )
        });
        match drawn {
            Ok(()) => println!("wrote {} and {}", reliability.display(), coverage.display()),
            Err(e) => eprintln!("warning: charts not written: {e:#}"),
        }
    }
    Ok(cal)
}
