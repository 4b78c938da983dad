//! Calibration of generated answers (an entity of named-entity recognition, the answer of
//! extractive QA): Platt scaling of each unit's probability fitted on labeled seed rows, the
//! confidence threshold that reaches a target precision, and the file `calibrate` writes for them.

use crate::calibration::{choose_threshold, coverage_curve, ece, CurvePoint, ECE_BINS};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// P(correct) = sigmoid(a * ln p + b), where p is the unit's probability under the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

/// Probabilities below this are treated as this (ln p stays finite).
const MIN_PROB: f64 = 1e-12;
/// Ridge penalty on (a, b): keeps the fit finite when every seed unit is right (or wrong).
const RIDGE: f64 = 1e-2;

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

impl Platt {
    pub fn apply(&self, p: f64) -> f64 {
        sigmoid(self.a * p.max(MIN_PROB).ln() + self.b)
    }

    /// Mean negative log-likelihood of the outcomes (plus the ridge term).
    fn loss(&self, outcomes: &[(f64, bool)]) -> f64 {
        let n = outcomes.len().max(1) as f64;
        let nll: f64 = outcomes
            .iter()
            .map(|&(p, ok)| {
                let q = self.apply(p).clamp(1e-15, 1.0 - 1e-15);
                -if ok { q.ln() } else { (1.0 - q).ln() }
            })
            .sum();
        nll / n + RIDGE * (self.a * self.a + self.b * self.b) / n
    }

    /// Logistic regression of correctness on ln p by Newton's method (the objective is convex),
    /// with `a >= 0` so that a more probable unit never gets a lower calibrated confidence.
    pub fn fit(outcomes: &[(f64, bool)]) -> Platt {
        let xs: Vec<(f64, f64)> = outcomes
            .iter()
            .map(|&(p, ok)| (p.max(MIN_PROB).ln(), ok as u8 as f64))
            .collect();
        let mut w = Platt { a: 1.0, b: 0.0 };
        for _ in 0..100 {
            let (mut ga, mut gb) = (2.0 * RIDGE * w.a, 2.0 * RIDGE * w.b);
            let (mut haa, mut hab, mut hbb) = (2.0 * RIDGE, 0.0, 2.0 * RIDGE);
            for &(x, y) in &xs {
                let q = sigmoid(w.a * x + w.b);
                let r = q - y;
                ga += r * x;
                gb += r;
                let s = q * (1.0 - q);
                haa += s * x * x;
                hab += s * x;
                hbb += s;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-300 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Damped step: halve until the loss does not rise.
            let mut step = 1.0;
            let before = w.loss(outcomes);
            let mut next = w;
            while step > 1e-6 {
                next = Platt {
                    a: w.a - step * da,
                    b: w.b - step * db,
                };
                if next.loss(outcomes) <= before + 1e-12 {
                    break;
                }
                step /= 2.0;
            }
            let moved = (next.a - w.a).abs() + (next.b - w.b).abs();
            w = next;
            if moved < 1e-10 {
                break;
            }
        }
        if w.a < 0.0 {
            // Confidence does not predict correctness here: a constant, the seed precision
            // (shrunk by the ridge term like the fit).
            let n = xs.len() as f64;
            let right: f64 = xs.iter().map(|x| x.1).sum();
            let rate = ((right + 0.5) / (n + 1.0)).clamp(1e-6, 1.0 - 1e-6);
            w = Platt {
                a: 0.0,
                b: (rate / (1.0 - rate)).ln(),
            };
        }
        w
    }
}

/// How well a unit's confidence predicts that it is right, on one set of seed units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UnitQuality {
    pub units: usize,
    /// Share of the units that are right (precision, for entities).
    pub accuracy: f64,
    pub ece: f64,
    pub brier: f64,
}

pub fn unit_quality(outcomes: &[(f64, bool)], map: impl Fn(f64) -> f64) -> UnitQuality {
    let mapped: Vec<(f32, bool)> = outcomes
        .iter()
        .map(|&(p, ok)| (map(p) as f32, ok))
        .collect();
    let n = outcomes.len().max(1) as f64;
    UnitQuality {
        units: outcomes.len(),
        accuracy: outcomes.iter().filter(|o| o.1).count() as f64 / n,
        ece: ece(&mapped, ECE_BINS),
        brier: mapped
            .iter()
            .map(|&(q, ok)| (q as f64 - ok as u8 as f64).powi(2))
            .sum::<f64>()
            / n,
    }
}

/// The scaling of one group of units (one attribute's values), fitted on that group alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlatt {
    pub name: String,
    pub platt: Platt,
    /// Seed units of the group the scaling was fitted on.
    pub units: usize,
    /// Multi-label by membership: the calibrated probability at or above which this label is
    /// chosen, the cut with the best F1 on the seed rows (None: no seed row had the label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choose_at: Option<f64>,
    /// The label's F1 on the seed rows at `choose_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_f1: Option<f64>,
}

/// The cut on `units` (calibrated probability, is a true label) with the best F1 when the units
/// at or above it are chosen, halfway to the next lower probability, and that F1; None without
/// a true unit.
pub fn f1_cut(units: &[(f64, bool)]) -> Option<(f64, f64)> {
    let positives = units.iter().filter(|u| u.1).count();
    if positives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = units.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut chosen) = (0usize, 0usize);
    let mut best: Option<(f64, f64)> = None;
    let mut i = 0;
    while i < sorted.len() {
        let c = sorted[i].0;
        while i < sorted.len() && sorted[i].0 == c {
            tp += sorted[i].1 as usize;
            chosen += 1;
            i += 1;
        }
        let f1 = 2.0 * tp as f64 / (chosen + positives) as f64;
        let next = sorted.get(i).map_or(0.0, |u| u.0);
        if best.is_none_or(|(_, f)| f1 > f) {
            best = Some(((c + next) / 2.0, f1));
        }
    }
    best
}

/// The scaling of group `g` among `groups`, `common` when there is none for it.
pub fn group_platt(groups: &[GroupPlatt], common: Platt, g: usize) -> Platt {
    groups.get(g).map_or(common, |x| x.platt)
}

/// Fewest seed units of a group for a scaling of its own; smaller groups use the common one.
pub const MIN_GROUP_UNITS: usize = 8;

/// What `calibrate` writes for a task with generated answers and `run --calibration` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerCalibration {
    pub format: String,
    pub task_type: String,
    pub task_name: String,
    /// File name of the model the calibration was fitted with.
    pub model: String,
    /// What one calibrated unit is ("entity", "answer").
    pub unit: String,
    pub platt: Platt,
    /// A scaling per unit group (per attribute), when the task has groups; `platt` is the one
    /// fitted on every unit, used for a group with too few seed units.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupPlatt>,
    pub target_accuracy: f64,
    /// Lowest calibrated confidence kept at the target accuracy on the seed units.
    pub threshold: Option<f32>,
    pub fit: UnitQuality,
    pub fit_uncalibrated: UnitQuality,
    pub holdout: Option<UnitQuality>,
    pub holdout_uncalibrated: Option<UnitQuality>,
    /// Accuracy vs share of units kept over the calibrated confidence, on the fit units.
    pub curve: Vec<CurvePoint>,
}

pub const ANSWER_FORMAT: &str = "autolabel-local-answer-calibration-1";

impl AnswerCalibration {
    /// Fits the scaling and the curve on `fit` outcomes (unit probability, right).
    pub fn fit(outcomes: &[(f64, bool)]) -> (Platt, Vec<CurvePoint>) {
        let platt = Platt::fit(outcomes);
        let mapped: Vec<(f32, bool)> = outcomes
            .iter()
            .map(|&(p, ok)| (platt.apply(p) as f32, ok))
            .collect();
        (platt, coverage_curve(&mapped, outcomes.len()))
    }

    /// The scaling of group `g` (the common one when the calibration has no groups).
    pub fn platt_for(&self, g: usize) -> Platt {
        group_platt(&self.groups, self.platt, g)
    }

    /// Per-group scalings fitted on `outcomes` (group, probability, right) for `names`: a group
    /// with fewer than [`MIN_GROUP_UNITS`] seed units takes `common`.
    pub fn fit_groups(
        names: &[String],
        outcomes: &[(usize, f64, bool)],
        common: Platt,
    ) -> Vec<GroupPlatt> {
        names
            .iter()
            .enumerate()
            .map(|(g, name)| {
                let own: Vec<(f64, bool)> = outcomes
                    .iter()
                    .filter(|o| o.0 == g)
                    .map(|o| (o.1, o.2))
                    .collect();
                let platt = if own.len() >= MIN_GROUP_UNITS {
                    Platt::fit(&own)
                } else {
                    common
                };
                GroupPlatt {
                    name: name.clone(),
                    platt,
                    units: own.len(),
                    choose_at: None,
                    seed_f1: None,
                }
            })
            .collect()
    }

    pub fn threshold_for(&self, target: f64) -> Option<CurvePoint> {
        choose_threshold(&self.curve, target)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read calibration file {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a calibration file written by `autolabel-local calibrate`",
                path.display()
            )
        })?;
        let format = value["format"].as_str().unwrap_or_default();
        if format != ANSWER_FORMAT {
            bail!(
                "{}: calibration format '{format}' is not '{ANSWER_FORMAT}' (a calibration for generated answers); it was made for another kind of task: run `autolabel-local calibrate` with this config",
                path.display()
            )
        }
        serde_json::from_value(value).with_context(|| {
            format!(
                "{} is not a calibration file written by `autolabel-local calibrate`",
                path.display()
            )
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write calibration file {}", path.display()))
    }

    /// Refuses a calibration made for another task or model, or for other unit groups.
    pub fn check_matches(
        &self,
        path: &Path,
        task_name: &str,
        model_file: &str,
        groups: &[String],
        unit: &str,
    ) -> Result<()> {
        if self.unit != unit {
            bail!(
                "{} calibrates {}s, and this task's confidences are per {unit} (a different prompt.multilabel_method?); calibrate this config again",
                path.display(),
                self.unit
            )
        }
        let names: Vec<&String> = self.groups.iter().map(|g| &g.name).collect();
        if !self.groups.is_empty() && names != groups.iter().collect::<Vec<_>>() {
            bail!(
                "{} was made for the groups {:?}, not {groups:?}; calibrate this config again",
                path.display(),
                names
            )
        }
        if self.task_name != task_name {
            bail!(
                "{} was made for task '{}', not '{task_name}'; calibrate this config again",
                path.display(),
                self.task_name
            )
        }
        if self.model != model_file {
            bail!(
                "{} was made with model {}, not {model_file}; calibrate with this model again",
                path.display(),
                self.model
            )
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f1_cut_takes_the_best_f1_halfway_to_the_next_probability() {
        // Chosen at >= 0.8: tp 2 of 3 chosen, 3 positives: F1 4/6. At >= 0.4: tp 3 of 4: 6/7.
        let units = [
            (0.9, true),
            (0.8, true),
            (0.8, false),
            (0.4, true),
            (0.2, false),
        ];
        let (cut, f1) = f1_cut(&units).unwrap();
        assert!((cut - 0.3).abs() < 1e-12, "{cut}");
        assert!((f1 - 6.0 / 7.0).abs() < 1e-12, "{f1}");
        assert_eq!(f1_cut(&[(0.5, false), (0.1, false)]), None, "no true unit");
    }

    /// Units whose true P(right) is q(p) = p^0.5: the fit should recover it closely.
    #[test]
    fn platt_recovers_a_known_relation() {
        let mut state = 12345u64;
        let mut rand = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let outcomes: Vec<(f64, bool)> = (0..20000)
            .map(|_| {
                let p = rand().powi(3);
                let right = rand() < sigmoid(0.7 * p.max(MIN_PROB).ln() + 1.5);
                (p, right)
            })
            .collect();
        let w = Platt::fit(&outcomes);
        assert!((w.a - 0.7).abs() < 0.05 && (w.b - 1.5).abs() < 0.1, "{w:?}");
        let raw = unit_quality(&outcomes, |p| p);
        let fitted = unit_quality(&outcomes, |p| w.apply(p));
        assert!(
            fitted.ece < 0.02 && fitted.ece < raw.ece,
            "{raw:?} {fitted:?}"
        );
    }

    #[test]
    fn platt_is_finite_when_every_unit_is_right_or_uninformative() {
        let all_right: Vec<(f64, bool)> = (1..50).map(|i| (i as f64 / 50.0, true)).collect();
        let w = Platt::fit(&all_right);
        assert!(
            w.a.is_finite() && w.b.is_finite() && w.apply(0.5) > 0.9,
            "{w:?}"
        );
        // Higher probability, more often wrong: no increasing relation, a constant rate.
        let reversed: Vec<(f64, bool)> = (1..=100).map(|i| (i as f64 / 100.0, i <= 30)).collect();
        let w = Platt::fit(&reversed);
        assert_eq!(w.a, 0.0);
        assert!((w.apply(0.9) - 30.5 / 101.0).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn a_file_of_another_kind_is_named() {
        let dir = std::env::temp_dir().join(format!("answer_cal_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.json");
        std::fs::write(&path, r#"{"format": "autolabel-local-calibration-1"}"#).unwrap();
        let e = AnswerCalibration::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("generated answers") && e.contains("c.json"),
            "{e}"
        );
    }
}
