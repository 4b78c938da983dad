//! `autolabel-local calibrate` for tasks with a label set (tasks with generated answers are in
//! `calibrate_open`): score labeled seed rows, fit a temperature (and with `--fit bias`
//! a per-label bias), choose the confidence
//! threshold that reaches a target accuracy, report calibration quality before and after (on a
//! held-out split with --holdout), write the calibration file and its charts.

use crate::calibration::{
    coverage_curve, default_path, quality, reliability_bins, top_outcome, Calibration, CurvePoint,
    Quality, SeedRow, ECE_BINS, FORMAT,
};
use crate::confidence::{Adjustment, ConfidenceMethod};
use crate::metrics::{auroc, format_table, metrics_table, Outcome, DEFAULT_THRESHOLDS};
use crate::plots;
use crate::scoring_pass::{score_all, PassOptions, Scored};
use crate::session::{CommonArgs, Session};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct CalibrateArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Where to write the calibration. Default: <config name>.calibration.json beside the config.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Accuracy the confidently labeled rows should reach.
    #[arg(long, default_value_t = 0.95)]
    pub target_accuracy: f64,
    /// Confidence the threshold is chosen for (label_prob, mean_logprob, min_logprob, margin,
    /// entropy); thresholds for the others are stored too.
    #[arg(long, default_value = "label_prob")]
    pub confidence: String,
    /// What to fit: `auto` (the one of none, temperature and bias with the lowest
    /// cross-validated NLL on the seed rows), `temperature` (confidences only; labels
    /// unchanged) or `bias` (temperature plus a per-label bias that corrects a model's preference
    /// for some labels; this can change labels, and needs seed rows for every label).
    #[arg(long, default_value = "auto")]
    pub fit: String,
    /// Share of the seed rows held out (not fitted on) to report honest calibration figures.
    #[arg(long, default_value_t = 0.0)]
    pub holdout: f64,
    /// Chart format: svg or png.
    #[arg(long, default_value = "svg")]
    pub plot_format: String,
    /// Do not write the charts.
    #[arg(long)]
    pub no_plots: bool,
    /// Rows scored together in one batch. Default: 8 on a CPU, 64 on a GPU.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Divide the model's content-free label prior out before fitting (see `run --debias`);
    /// the calibration file records the prior and `run --calibration` applies it.
    #[arg(long, value_name = "content-free")]
    pub debias: Option<String>,
}

/// A seed row: scores, truth index, and which split it is in.
struct Seed {
    scored: Scored,
    truth: usize,
    held_out: bool,
}

impl Seed {
    fn row(&self) -> SeedRow {
        SeedRow {
            logprobs: self.scored.scores.logprobs.clone(),
            truth: self.truth,
        }
    }
}

/// Deterministic split: a row is held out when its index hashes into the held-out share.
pub(crate) fn held_out(index: usize, fraction: f64) -> bool {
    let mut z = (index as u64).wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    ((z >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

fn outcomes(seeds: &[&Seed], method: ConfidenceMethod, adj: &Adjustment) -> Vec<(f32, bool)> {
    seeds
        .iter()
        .map(|s| {
            (
                method.value(&s.scored.scores, adj),
                adj.best(&s.scored.scores.logprobs) == s.truth,
            )
        })
        .collect()
}

fn metric_outcomes(seeds: &[&Seed], method: ConfidenceMethod, adj: &Adjustment) -> Vec<Outcome> {
    outcomes(seeds, method, adj)
        .into_iter()
        .map(|(confidence, correct)| Outcome {
            correct,
            confidence,
        })
        .collect()
}

/// Share of the outcomes a threshold keeps, and their accuracy.
pub(crate) fn kept_at(outcomes: &[Outcome], threshold: f32) -> (f64, f64) {
    let kept: Vec<&Outcome> = outcomes
        .iter()
        .filter(|x| x.confidence >= threshold)
        .collect();
    let right = kept.iter().filter(|x| x.correct).count();
    (
        kept.len() as f64 / outcomes.len().max(1) as f64,
        right as f64 / kept.len().max(1) as f64,
    )
}

/// Where the reliability diagram and the coverage chart of a calibration file go.
pub(crate) fn chart_paths(calibration: &Path, format: &str) -> (PathBuf, PathBuf) {
    let stem = calibration.with_extension("");
    (
        PathBuf::from(format!("{}.reliability.{format}", stem.display())),
        PathBuf::from(format!("{}.coverage.{format}", stem.display())),
    )
}

fn quality_line(name: &str, q: &Quality) -> String {
    format!(
        "| {name:<28} | {:>5} | {:>8.4} | {:>7.4} | {:>7.4} | {:>7.4} |",
        q.rows, q.accuracy, q.nll, q.ece, q.brier
    )
}

pub fn calibrate(args: &CalibrateArgs) -> Result<()> {
    let method = ConfidenceMethod::parse(&args.confidence)?;
    if !(0.0..1.0).contains(&args.holdout) {
        bail!(
            "--holdout {} must be at least 0 and below 1 (e.g. 0.3)",
            args.holdout
        )
    }
    if !(0.0..=1.0).contains(&args.target_accuracy) {
        bail!(
            "--target-accuracy {} must be between 0 and 1",
            args.target_accuracy
        )
    }
    if !["auto", "temperature", "bias"].contains(&args.fit.as_str()) {
        bail!("--fit '{}' must be auto, temperature or bias", args.fit)
    }
    if !["svg", "png"].contains(&args.plot_format.as_str()) {
        bail!("--plot-format '{}' must be svg or png", args.plot_format)
    }
    let session = Session::open(&args.common)?;
    for n in &session.notices {
        eprintln!("note: {n}");
    }
    if let Some(d) = &args.debias {
        crate::debias::parse(d)?;
        if session.task.fixed_candidates().is_none() {
            bail!("--debias needs a fixed label set; this task's answers are generated or its candidates differ per row, so there is no label prior to divide out")
        }
    }
    if let Some(open) = session.task.open() {
        return super::calibrate_open::calibrate_open(args, &session, open).map(|_| ());
    }
    calibrate_labels(args, &session, method).map(|_| ())
}

/// `calibrate` for a task with a label set.
fn calibrate_labels(
    args: &CalibrateArgs,
    session: &Session,
    method: ConfidenceMethod,
) -> Result<Calibration> {
    // Without a fixed label set (multiple choice: each row's options) only a temperature is fitted.
    let labels = session
        .task
        .fixed_candidates()
        .unwrap_or_else(|| std::sync::Arc::new(Vec::new()));
    if labels.is_empty() && args.fit == "bias" {
        bail!("--fit bias needs a fixed label set; this task's candidates differ per row (its options), so only a temperature is fitted: leave out --fit bias")
    }
    let data = &session.data;
    let label_column = session.config.dataset.label_column.clone();
    if data
        .rows
        .iter()
        .all(|r| session.task.ground_truth(data, r).is_none())
    {
        bail!(
            "{}: calibrate needs labeled seed rows, and no row has a value in the label column '{}' (dataset.label_column)",
            data.path.display(),
            label_column.as_deref().unwrap_or("(not set)")
        )
    }
    let path = args
        .calibration
        .clone()
        .unwrap_or_else(|| default_path(&args.common.config));
    let labeler = session.labeler(&args.common)?;
    let pass = score_all(
        session,
        &labeler,
        PassOptions::new(args.batch_size, args.common.max_tokens),
    )?;

    let mut seeds = Vec::new();
    let (mut failed, mut outside) = (0, Vec::new());
    for (i, (row, r)) in data.rows.iter().zip(pass.rows).enumerate() {
        let Some(truth) = session.task.ground_truth(data, row) else {
            continue;
        };
        let scored = match r {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                eprintln!("warning: seed row left out: {e}");
                continue;
            }
        };
        let Some(t) = scored.index_of(&truth) else {
            outside.push(format!("line {}: '{truth}'", row.line));
            continue;
        };
        seeds.push(Seed {
            scored,
            truth: t,
            held_out: held_out(i, args.holdout),
        });
    }
    if !outside.is_empty() {
        eprintln!(
            "warning: {} seed rows have a true label outside the label set and are left out ({}{})",
            outside.len(),
            outside[..outside.len().min(3)].join(", "),
            if outside.len() > 3 { ", ..." } else { "" }
        );
    }
    let fit: Vec<&Seed> = seeds.iter().filter(|s| !s.held_out).collect();
    let held: Vec<&Seed> = seeds.iter().filter(|s| s.held_out).collect();
    if fit.len() < 2 {
        bail!(
            "only {} seed rows could be used for fitting; calibrate needs labeled rows (at least dozens) whose labels are in the label set",
            fit.len()
        )
    }
    let rows = |v: &[&Seed]| v.iter().map(|s| s.row()).collect::<Vec<_>>();
    let (fit_rows, held_rows) = (rows(&fit), rows(&held));
    // With --debias the temperature (and bias) are fitted to the debiased log-probabilities.
    let prior = match &args.debias {
        Some(_) => {
            let (prior, used) = crate::debias::content_free_prior(session, &labeler)?;
            println!(
                "{} (inputs scored: {})",
                crate::debias::describe(&labels, &prior),
                used.iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            prior
        }
        None => Vec::new(),
    };
    let debiased: Vec<SeedRow> = fit_rows
        .iter()
        .map(|r| SeedRow {
            logprobs: r
                .logprobs
                .iter()
                .enumerate()
                .map(|(k, &l)| l - prior.get(k).copied().unwrap_or(0.0) as f32)
                .collect(),
            truth: r.truth,
        })
        .collect();
    let kind = match args.fit.as_str() {
        "auto" => {
            let (chosen, scores) = crate::fit_choice::choose(&debiased, labels.len());
            println!("{}", crate::fit_choice::describe(chosen, &scores));
            chosen
        }
        other => other,
    };
    let mut adj = crate::fit_choice::fit(kind, &debiased, labels.len());
    adj.debias = prior;
    let identity = Adjustment::default();
    let curves: BTreeMap<String, Vec<CurvePoint>> = ConfidenceMethod::ALL
        .iter()
        .map(|&m| {
            (
                m.name().to_string(),
                coverage_curve(&outcomes(&fit, m, &adj), fit.len()),
            )
        })
        .collect();
    let mut cal = Calibration {
        format: FORMAT.into(),
        task_name: session.task.name().into(),
        model: session.model_file(),
        labels: labels.as_ref().clone(),
        adjustment: adj.clone(),
        confidence: method,
        target_accuracy: args.target_accuracy,
        threshold: None,
        fit: quality(&fit_rows, &adj),
        fit_uncalibrated: quality(&fit_rows, &identity),
        holdout: (!held.is_empty()).then(|| quality(&held_rows, &adj)),
        holdout_uncalibrated: (!held.is_empty()).then(|| quality(&held_rows, &identity)),
        curves,
    };
    let point = cal.threshold_for(method, args.target_accuracy);
    cal.threshold = point.map(|p| p.threshold);
    cal.write(&path)?;

    println!(
        "scored {} seed rows in {:.1} s; fitted on {}, held out {}{}",
        seeds.len() + failed,
        pass.seconds,
        fit.len(),
        held.len(),
        if failed > 0 {
            format!(" ({failed} could not be scored)")
        } else {
            String::new()
        }
    );
    println!("temperature: {:.4}", adj.temperature);
    if !adj.bias.is_empty() {
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| adj.bias[b].total_cmp(&adj.bias[a]));
        let show = |i: &usize| format!("{} {:+.2}", labels[*i], adj.bias[*i]);
        println!(
            "per-label bias (nats), most raised first: {}",
            order
                .iter()
                .take(5)
                .map(show)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!();
    println!("| rows                         |     n | accuracy |     NLL |     ECE |   Brier |");
    println!("|------------------------------|------:|---------:|--------:|--------:|--------:|");
    println!(
        "{}",
        quality_line("fit, uncalibrated", &cal.fit_uncalibrated)
    );
    println!("{}", quality_line("fit, calibrated", &cal.fit));
    if let (Some(b), Some(a)) = (&cal.holdout_uncalibrated, &cal.holdout) {
        println!("{}", quality_line("held out, uncalibrated", b));
        if !adj.bias.is_empty() {
            let mut t_only = crate::fit_choice::fit("temperature", &debiased, labels.len());
            t_only.debias = adj.debias.clone();
            println!(
                "{}",
                quality_line("held out, temperature only", &quality(&held_rows, &t_only))
            );
        }
        println!("{}", quality_line("held out, calibrated", a));
    }
    if adj.bias.is_empty() && !labels.is_empty() {
        // A model that picks one label far more often than the seed rows have it has a label
        // preference that a temperature cannot remove.
        let mut chosen = vec![0usize; labels.len()];
        let mut truth = vec![0usize; labels.len()];
        for s in &fit {
            chosen[s.scored.scores.best] += 1;
            truth[s.truth] += 1;
        }
        if let Some(k) = (0..labels.len())
            .find(|&k| chosen[k] as f64 > truth[k] as f64 + 0.25 * fit.len() as f64)
        {
            println!(
                "\nhint: the model chose '{}' for {} of {} fit rows, but it is right for {}; `--fit bias` corrects such a preference",
                labels[k], chosen[k], fit.len(), truth[k]
            );
        }
    }
    println!("\nconfidence as a predictor of a right label (AUROC; 0.5 is chance):");
    let eval = if held.is_empty() { &fit } else { &held };
    for m in ConfidenceMethod::ALL {
        let o = metric_outcomes(eval, m, &adj);
        println!(
            "  {:<13} {}",
            m.name(),
            auroc(&o).map_or("n/a (all right or all wrong)".into(), |a| format!("{a:.4}"))
        );
    }
    println!(
        "\n{} rows, {} after calibration:",
        if held.is_empty() { "fit" } else { "held-out" },
        method.name()
    );
    let o = metric_outcomes(eval, method, &adj);
    println!(
        "{}",
        format_table(&metrics_table(&o, eval.len(), DEFAULT_THRESHOLDS))
    );
    match point {
        Some(p) => {
            println!(
                "threshold for accuracy {}: {} >= {:.4}, keeping {:.1}% of the fit rows at accuracy {:.4}",
                args.target_accuracy,
                method.name(),
                p.threshold,
                100.0 * p.completion_rate,
                p.accuracy
            );
            if !held.is_empty() {
                let (share, acc) = kept_at(&o, p.threshold);
                println!(
                    "on the held-out rows that threshold keeps {:.1}% at accuracy {acc:.4}",
                    100.0 * share
                );
            }
        }
        None => println!(
            "no threshold reaches accuracy {} on the fit rows: every subset is less accurate; `run --calibration` will need a lower --target-accuracy",
            args.target_accuracy
        ),
    }
    println!("\nwrote {}", path.display());

    if !args.no_plots {
        let (reliability, coverage) = chart_paths(&path, &args.plot_format);
        let before: Vec<(f32, bool)> = eval
            .iter()
            .map(|s| top_outcome(&s.row(), &identity))
            .collect();
        let after: Vec<(f32, bool)> = eval.iter().map(|s| top_outcome(&s.row(), &adj)).collect();
        let which = if held.is_empty() { "fit" } else { "held-out" };
        // The calibration is already written: a chart that cannot be drawn is a warning.
        let drawn = plots::reliability_diagram(
            &reliability,
            &reliability_bins(&before, ECE_BINS),
            &reliability_bins(&after, ECE_BINS),
            &format!(
                "{}: reliability on {} {which} rows (T = {:.2})",
                session.task.name(),
                eval.len(),
                adj.temperature
            ),
        );
        let curve_list: Vec<(&str, &[CurvePoint])> = cal
            .curves
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let drawn = drawn.and_then(|()| {
            plots::coverage_chart(
                &coverage,
                &curve_list,
                args.target_accuracy,
                &format!(
                    "{}: accuracy vs completion rate ({} fit rows)",
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
