//! Calibration maths and the calibration file: a temperature (and optionally a per-label bias)
//! fitted on labeled seed rows by minimising the negative log-likelihood of the true label over
//! the label set, expected calibration error, Brier score, and the confidence threshold that
//! reaches a target accuracy.

use crate::confidence::{Adjustment, ConfidenceMethod};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One labeled seed row: log P(label) for every label and the index of the true label.
#[derive(Debug, Clone)]
pub struct SeedRow {
    pub logprobs: Vec<f32>,
    pub truth: usize,
}

/// Mean negative log-likelihood of the true labels after an adjustment.
pub fn nll(rows: &[SeedRow], adj: &Adjustment) -> f64 {
    let total: f64 = rows
        .iter()
        .map(|r| -adj.probs(&r.logprobs)[r.truth].max(1e-300).ln())
        .sum();
    total / rows.len().max(1) as f64
}

/// The temperature minimising [`nll`]. The NLL is convex in 1/T, so a golden-section search over
/// log T in [1/100, 100] finds the minimum.
pub fn fit_temperature(rows: &[SeedRow]) -> f64 {
    if rows.is_empty() {
        return 1.0;
    }
    let f = |log_t: f64| nll(rows, &Adjustment::temperature(log_t.exp()));
    let (mut a, mut b) = ((0.01f64).ln(), (100.0f64).ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-6 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// Temperature and per-label bias minimising the NLL plus a Gaussian prior on the bias
/// (standard deviation 2 nats, so a few seed rows cannot push a label far). The objective is
/// convex in (1/T, bias): damped Newton steps from the fitted temperature.
pub fn fit_temperature_and_bias(rows: &[SeedRow], labels: usize) -> Adjustment {
    let start = Adjustment::temperature(fit_temperature(rows));
    if rows.is_empty() || labels < 2 {
        return start;
    }
    let n = rows.len() as f64;
    let lambda = 1.0 / (2.0 * 4.0 * n);
    let d = labels + 1;
    // Parameters: [1/T, b_0 .. b_{K-1}].
    let to_adj = |x: &[f64]| Adjustment {
        temperature: 1.0 / x[0],
        bias: x[1..].to_vec(),
        debias: Vec::new(),
    };
    let objective = |x: &[f64]| {
        if x[0] <= 1e-6 {
            return f64::INFINITY;
        }
        nll(rows, &to_adj(x)) + lambda * x[1..].iter().map(|b| b * b).sum::<f64>()
    };
    let mut x = vec![0.0; d];
    x[0] = 1.0 / start.temperature;
    let mut fx = objective(&x);
    for _ in 0..100 {
        let adj = to_adj(&x);
        let mut g = vec![0.0; d];
        let mut h = vec![0.0; d * d];
        for r in rows {
            let p = adj.probs(&r.logprobs);
            let l: Vec<f64> = r.logprobs.iter().map(|&v| v as f64).collect();
            let a: f64 = p.iter().zip(&l).map(|(p, l)| p * l).sum();
            for k in 0..labels {
                let y = (k == r.truth) as u8 as f64;
                g[0] += (p[k] - y) * l[k] / n;
                g[k + 1] += (p[k] - y) / n;
                h[0] += p[k] * l[k] * l[k] / n;
                h[k + 1] += p[k] * (l[k] - a) / n;
                h[(k + 1) * d] += p[k] * (l[k] - a) / n;
                h[(k + 1) * d + k + 1] += p[k] / n;
                for j in 0..labels {
                    h[(k + 1) * d + j + 1] -= p[k] * p[j] / n;
                }
            }
            h[0] -= a * a / n;
        }
        for k in 1..d {
            g[k] += 2.0 * lambda * x[k];
            h[k * d + k] += 2.0 * lambda;
        }
        let Some(step) = solve_spd(&h, &g, d) else {
            break;
        };
        let decrease: f64 = g.iter().zip(&step).map(|(a, b)| a * b).sum();
        if decrease < 1e-12 {
            break;
        }
        let mut t = 1.0;
        loop {
            let trial: Vec<f64> = x.iter().zip(&step).map(|(a, b)| a - t * b).collect();
            let ft = objective(&trial);
            if ft <= fx - 1e-4 * t * decrease {
                x = trial;
                fx = ft;
                break;
            }
            t /= 2.0;
            if t < 1e-10 {
                return to_adj(&x);
            }
        }
    }
    to_adj(&x)
}

/// Solves H s = g for a symmetric positive definite H (d x d, row-major) by Cholesky, with a
/// tiny ridge for safety. None if H is not positive definite.
fn solve_spd(h: &[f64], g: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut sum = h[i * d + j] + if i == j { 1e-10 } else { 0.0 };
            for k in 0..j {
                sum -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                if sum <= 0.0 {
                    return None;
                }
                l[i * d + i] = sum.sqrt();
            } else {
                l[i * d + j] = sum / l[j * d + j];
            }
        }
    }
    let mut y = vec![0.0; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (g[i] - s) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * d + i];
    }
    Some(x)
}

/// Expected calibration error of (confidence, correct) pairs over `bins` equal-width bins.
pub fn ece(outcomes: &[(f32, bool)], bins: usize) -> f64 {
    reliability_bins(outcomes, bins)
        .iter()
        .map(|b| b.count as f64 / outcomes.len().max(1) as f64 * (b.accuracy - b.confidence).abs())
        .sum()
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub confidence: f64,
    pub accuracy: f64,
}

/// Non-empty equal-width confidence bins with their mean confidence and accuracy.
pub fn reliability_bins(outcomes: &[(f32, bool)], bins: usize) -> Vec<Bin> {
    let bins = bins.max(1);
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for &(c, ok) in outcomes {
        let i = ((c as f64 * bins as f64) as usize).min(bins - 1);
        sums[i].0 += 1;
        sums[i].1 += c as f64;
        sums[i].2 += ok as usize;
    }
    sums.iter()
        .enumerate()
        .filter(|(_, s)| s.0 > 0)
        .map(|(i, s)| Bin {
            lower: i as f64 / bins as f64,
            upper: (i + 1) as f64 / bins as f64,
            count: s.0,
            confidence: s.1 / s.0 as f64,
            accuracy: s.2 as f64 / s.0 as f64,
        })
        .collect()
}

/// Multi-class Brier score: mean over rows of sum_k (p_k - [k = truth])^2.
pub fn brier(rows: &[SeedRow], adj: &Adjustment) -> f64 {
    let total: f64 = rows
        .iter()
        .map(|r| {
            adj.probs(&r.logprobs)
                .iter()
                .enumerate()
                .map(|(k, p)| (p - (k == r.truth) as u8 as f64).powi(2))
                .sum::<f64>()
        })
        .sum();
    total / rows.len().max(1) as f64
}

/// A point of the accuracy-vs-completion-rate curve: keeping rows with confidence >= threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub threshold: f32,
    pub accuracy: f64,
    pub completion_rate: f64,
}

/// Accuracy and completion rate at every distinct confidence of the seed rows, from the most
/// confident down. `support` is the number of seed rows (rows that failed count as not completed).
pub fn coverage_curve(outcomes: &[(f32, bool)], support: usize) -> Vec<CurvePoint> {
    let mut sorted: Vec<(f32, bool)> = outcomes.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut out = Vec::new();
    let mut correct = 0usize;
    for (i, &(c, ok)) in sorted.iter().enumerate() {
        correct += ok as usize;
        // Emit a point once every row with this confidence is in.
        if sorted.get(i + 1).is_none_or(|n| n.0 < c) {
            out.push(CurvePoint {
                threshold: c,
                accuracy: correct as f64 / (i + 1) as f64,
                completion_rate: (i + 1) as f64 / support.max(1) as f64,
            });
        }
    }
    out
}

/// The threshold that keeps the most rows while their accuracy stays at or above `target`.
pub fn choose_threshold(curve: &[CurvePoint], target: f64) -> Option<CurvePoint> {
    curve
        .iter()
        .filter(|p| p.accuracy >= target)
        .max_by(|a, b| a.completion_rate.total_cmp(&b.completion_rate))
        .copied()
}

/// Calibration quality of one set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub rows: usize,
    pub accuracy: f64,
    pub nll: f64,
    pub ece: f64,
    pub brier: f64,
}

pub const ECE_BINS: usize = 10;

pub fn quality(rows: &[SeedRow], adj: &Adjustment) -> Quality {
    let outcomes: Vec<(f32, bool)> = rows.iter().map(|r| top_outcome(r, adj)).collect();
    Quality {
        rows: rows.len(),
        accuracy: outcomes.iter().filter(|o| o.1).count() as f64 / rows.len().max(1) as f64,
        nll: nll(rows, adj),
        ece: ece(&outcomes, ECE_BINS),
        brier: brier(rows, adj),
    }
}

/// (P(chosen label), chosen label is right) after an adjustment.
pub fn top_outcome(r: &SeedRow, adj: &Adjustment) -> (f32, bool) {
    let best = adj.best(&r.logprobs);
    (adj.probs(&r.logprobs)[best] as f32, best == r.truth)
}

/// What `calibrate` writes and `run --calibration` / `score --calibration` read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub format: String,
    pub task_name: String,
    /// File name of the model the calibration was fitted with.
    pub model: String,
    pub labels: Vec<String>,
    /// Temperature and per-label bias (the bias is empty unless fitted with `--fit bias`).
    pub adjustment: Adjustment,
    pub confidence: ConfidenceMethod,
    pub target_accuracy: f64,
    /// Lowest confidence kept at the target accuracy on the seed rows (None: not reachable).
    pub threshold: Option<f32>,
    /// Seed rows the calibration and threshold were fitted on.
    pub fit: Quality,
    pub fit_uncalibrated: Quality,
    /// The same on held-out rows (with `--holdout`).
    pub holdout: Option<Quality>,
    pub holdout_uncalibrated: Option<Quality>,
    /// Accuracy vs completion rate on the fit rows for every confidence method (by name), so a
    /// run can choose another target or method later.
    pub curves: std::collections::BTreeMap<String, Vec<CurvePoint>>,
}

pub const FORMAT: &str = "autolabel-local-calibration-1";

impl Calibration {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read calibration file {}", path.display()))?;
        let not_ours = || {
            format!(
                "{} is not a calibration file written by `autolabel-local calibrate`",
                path.display()
            )
        };
        let value: serde_json::Value = serde_json::from_str(&text).with_context(not_ours)?;
        if value["format"] == crate::answer_calibration::ANSWER_FORMAT {
            bail!(
                "{} is a calibration for generated answers (made by `calibrate` for task '{}'), not for a label set; calibrate this config instead",
                path.display(),
                value["task_name"].as_str().unwrap_or_default()
            )
        }
        let c: Calibration = serde_json::from_value(value).with_context(not_ours)?;
        if c.format != FORMAT {
            bail!(
                "{}: calibration format '{}' is not '{FORMAT}'; run `autolabel-local calibrate` again",
                path.display(),
                c.format
            )
        }
        Ok(c)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write calibration file {}", path.display()))
    }

    /// The operating point for a confidence method and target accuracy, from the seed curves.
    pub fn threshold_for(&self, method: ConfidenceMethod, target: f64) -> Option<CurvePoint> {
        self.curves
            .get(method.name())
            .and_then(|c| choose_threshold(c, target))
    }

    /// Checks that this calibration belongs to the run's task, labels and model.
    pub fn check_matches(
        &self,
        path: &Path,
        task: &str,
        labels: &[String],
        model_file: &str,
    ) -> Result<()> {
        if self.labels != labels {
            bail!(
                "{} was fitted for the labels [{}], but this config has [{}]; run `autolabel-local calibrate` for this config",
                path.display(),
                self.labels.join(", "),
                labels.join(", ")
            )
        }
        if self.model != model_file {
            bail!(
                "{} was fitted with model {}, but this run uses {}; a calibration belongs to one model: calibrate again with --model {model_file}",
                path.display(),
                self.model,
                model_file
            )
        }
        if self.task_name != task {
            eprintln!(
                "note: {} was fitted for task '{}'; this config's task is '{task}' (same labels and model, so it is used)",
                path.display(),
                self.task_name
            );
        }
        Ok(())
    }
}

/// Where `calibrate` writes by default: `<config stem>.calibration.json` beside the config.
pub fn default_path(config: &Path) -> PathBuf {
    let stem = config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("task");
    config.with_file_name(format!("{stem}.calibration.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator so the tests need no dependency.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Rows whose label distribution is softmax(z) and whose truth is drawn from it: a perfectly
    /// calibrated source. The model's log-probs are z * sharpen.
    fn synthetic(n: usize, k: usize, sharpen: f64, seed: u64) -> Vec<SeedRow> {
        let mut rng = Lcg(seed);
        (0..n)
            .map(|_| {
                let z: Vec<f32> = (0..k).map(|_| (rng.next() * 4.0) as f32).collect();
                let p = Adjustment::default().probs(&z);
                let u = rng.next();
                let mut acc = 0.0;
                let mut truth = k - 1;
                for (i, pi) in p.iter().enumerate() {
                    acc += pi;
                    if u < acc {
                        truth = i;
                        break;
                    }
                }
                SeedRow {
                    logprobs: z.iter().map(|v| v * sharpen as f32).collect(),
                    truth,
                }
            })
            .collect()
    }

    #[test]
    fn a_calibrated_source_gets_temperature_one_and_small_ece() {
        let rows = synthetic(20000, 4, 1.0, 7);
        let t = fit_temperature(&rows);
        assert!((t - 1.0).abs() < 0.05, "T = {t}");
        assert!(quality(&rows, &Adjustment::default()).ece < 0.02);
    }

    #[test]
    fn a_sharpened_source_is_recovered() {
        let rows = synthetic(20000, 3, 2.5, 11);
        let t = fit_temperature(&rows);
        assert!((t - 2.5).abs() < 0.15, "T = {t}");
        let before = quality(&rows, &Adjustment::default());
        let after = quality(&rows, &Adjustment::temperature(t));
        assert!(before.ece > 0.05, "{before:?}");
        assert!(after.ece < 0.02 && after.nll < before.nll && after.brier < before.brier);
        assert_eq!(
            before.accuracy, after.accuracy,
            "a temperature never changes the argmax"
        );
    }

    #[test]
    fn a_label_preference_is_removed_by_the_bias() {
        // The source is calibrated, but the model adds 2 nats to label 0 on every row.
        let mut rows = synthetic(20000, 3, 1.0, 5);
        for r in &mut rows {
            r.logprobs[0] += 2.0;
        }
        let adj = fit_temperature_and_bias(&rows, 3);
        assert!((adj.temperature - 1.0).abs() < 0.05, "{adj:?}");
        let shift = (adj.bias[0] - adj.bias[1], adj.bias[0] - adj.bias[2]);
        assert!(
            (shift.0 + 2.0).abs() < 0.1 && (shift.1 + 2.0).abs() < 0.1,
            "{adj:?}"
        );
        let before = quality(&rows, &Adjustment::default());
        let after = quality(&rows, &adj);
        assert!(
            after.accuracy > before.accuracy + 0.05,
            "{before:?} {after:?}"
        );
        assert!(after.ece < 0.02 && after.nll < before.nll);
        // Without a preference the bias stays near zero.
        let fair = fit_temperature_and_bias(&synthetic(20000, 3, 1.0, 9), 3);
        assert!(fair.bias.iter().all(|b| b.abs() < 0.1), "{fair:?}");
    }

    #[test]
    fn ece_and_brier_by_hand() {
        // Two bins: [0.9, 0.9] with one right -> |0.5 - 0.9|; [0.3] right -> |1 - 0.3|.
        let e = ece(&[(0.9, true), (0.9, false), (0.3, true)], 10);
        assert!((e - (2.0 / 3.0 * 0.4 + 1.0 / 3.0 * 0.7)).abs() < 1e-6);
        let rows = [SeedRow {
            logprobs: vec![0.0, 0.0],
            truth: 0,
        }];
        assert!((brier(&rows, &Adjustment::default()) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn threshold_reaches_the_target_on_the_fit_rows_with_the_most_coverage() {
        let outcomes = [
            (0.99, true),
            (0.97, true),
            (0.95, false),
            (0.9, true),
            (0.9, true),
            (0.8, true),
            (0.6, false),
            (0.55, false),
        ];
        let curve = coverage_curve(&outcomes, 10);
        assert_eq!(curve.len(), 7, "tied confidences make one point");
        let p = choose_threshold(&curve, 0.8).unwrap();
        assert_eq!(p.threshold, 0.8);
        assert!((p.accuracy - 5.0 / 6.0).abs() < 1e-12 && (p.completion_rate - 0.6).abs() < 1e-12);
        let kept: Vec<_> = outcomes.iter().filter(|o| o.0 >= p.threshold).collect();
        assert!(kept.iter().filter(|o| o.1).count() as f64 / kept.len() as f64 >= 0.8);
        assert_eq!(choose_threshold(&curve, 1.0).unwrap().threshold, 0.97);
        assert!(choose_threshold(&coverage_curve(&[(0.9, false)], 1), 0.5).is_none());
    }
}
