//! The confidence options `run` and `score` share: which confidence to report, the calibration
//! temperature, and the threshold that reaches a target accuracy on the seed rows.

use crate::calibration::{Calibration, CurvePoint};
use crate::confidence::{Adjustment, ConfidenceMethod};
use crate::scoring_pass::Scored;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ConfidenceArgs {
    /// Calibration file from `autolabel-local calibrate`: applies its temperature and, with a
    /// target accuracy, its threshold.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Mark rows below the confidence that reached this accuracy on the seed rows as not
    /// confidently labeled (default: the target the calibration was made for).
    #[arg(long)]
    pub target_accuracy: Option<f64>,
    /// Confidence written to the confidence column: label_prob, mean_logprob, min_logprob,
    /// margin or entropy (default: the calibration's, else label_prob).
    #[arg(long)]
    pub confidence: Option<String>,
    /// Also write one column per confidence method.
    #[arg(long)]
    pub all_confidence_columns: bool,
    /// Divide the model's label prior out of every row's label distribution: content-free (the
    /// prompt scored with "N/A", "" and "[MASK]" as input; no labeled rows needed).
    #[arg(long, value_name = "content-free")]
    pub debias: Option<String>,
}

/// The threshold of a target no subset of the seed rows reached: no confidence reaches it, so
/// every row is marked not confidently labeled.
pub fn unreachable(best_accuracy: f64) -> CurvePoint {
    CurvePoint {
        threshold: f32::INFINITY,
        accuracy: best_accuracy,
        completion_rate: 0.0,
    }
}

/// How confidences are computed and which rows count as confidently labeled.
#[derive(Debug, Clone)]
pub struct OperatingPoint {
    pub method: ConfidenceMethod,
    pub adjustment: Adjustment,
    /// The seed-set point chosen for the target accuracy.
    pub threshold: Option<CurvePoint>,
    pub target_accuracy: Option<f64>,
    pub calibration: Option<PathBuf>,
    /// `--debias` was asked for and no calibration brings its prior: the run computes it
    /// ([`crate::debias::content_free_prior`]) and sets `adjustment.debias`.
    pub needs_prior: bool,
}

impl OperatingPoint {
    /// Resolves the options against the calibration file (checked against the run's task,
    /// labels and model file name).
    pub fn resolve(
        args: &ConfidenceArgs,
        task: &str,
        labels: Option<&[String]>,
        model_file: &str,
    ) -> Result<Self> {
        let method = args
            .confidence
            .as_deref()
            .map(ConfidenceMethod::parse)
            .transpose()?;
        if let Some(t) = args.target_accuracy {
            if !(0.0..=1.0).contains(&t) {
                bail!("--target-accuracy {t} must be between 0 and 1 (e.g. 0.95)")
            }
        }
        if let Some(d) = &args.debias {
            crate::debias::parse(d)?;
            if labels.is_none() {
                bail!("--debias needs a fixed label set; this task's candidates differ per row (multiple choice: each row's options), so there is no label prior to divide out")
            }
        }
        let Some(path) = &args.calibration else {
            if args.target_accuracy.is_some() {
                bail!("--target-accuracy needs --calibration FILE: the threshold comes from labeled seed rows (run `autolabel-local calibrate` first)")
            }
            return Ok(OperatingPoint {
                method: method.unwrap_or(ConfidenceMethod::LabelProb),
                adjustment: Adjustment::default(),
                threshold: None,
                target_accuracy: None,
                calibration: None,
                needs_prior: args.debias.is_some(),
            });
        };
        let cal = Calibration::read(path)?;
        // A task whose candidates differ per row (multiple choice) has a calibration without labels.
        cal.check_matches(path, task, labels.unwrap_or(&[]), model_file)?;
        if args.debias.is_some() && cal.adjustment.debias.is_empty() {
            bail!(
                "--debias: the calibration {} was fitted without debiasing; calibrate again with --debias {} (the calibration then carries the prior), or leave out --debias",
                path.display(),
                crate::debias::METHOD
            )
        }
        let method = method.unwrap_or(cal.confidence);
        let target = args.target_accuracy.unwrap_or(cal.target_accuracy);
        let threshold = match cal.threshold_for(method, target) {
            Some(point) => Some(point),
            None => {
                let best = cal
                    .curves
                    .get(method.name())
                    .and_then(|c| c.iter().map(|p| p.accuracy).reduce(f64::max))
                    .unwrap_or(0.0);
                if args.target_accuracy.is_some() {
                    eprintln!(
                        "warning: no {} threshold reached accuracy {target} on the seed rows of {} (the best subset reached {best:.3}); every row is labeled with confidently_labeled = False (lower --target-accuracy or calibrate on more seed rows)",
                        method.name(),
                        path.display()
                    );
                    Some(unreachable(best))
                } else {
                    None
                }
            }
        };
        Ok(OperatingPoint {
            method,
            adjustment: cal.adjustment.clone(),
            threshold,
            target_accuracy: Some(target),
            calibration: Some(path.clone()),
            needs_prior: false,
        })
    }

    /// The label chosen after the calibration (the model's argmax unless a bias was fitted).
    pub fn label<'a>(&self, s: &'a Scored) -> &'a str {
        &s.labels[self.adjustment.best(&s.scores.logprobs)]
    }

    pub fn confidence(&self, s: &Scored) -> f32 {
        self.method.value(&s.scores, &self.adjustment)
    }

    /// P(label) over the label set after the calibration.
    pub fn probs(&self, s: &Scored) -> Vec<f64> {
        self.adjustment.probs(&s.scores.logprobs)
    }

    /// Whether a row's confidence reaches the threshold (every row does without one).
    pub fn is_confident(&self, confidence: f32) -> bool {
        self.threshold.is_none_or(|p| confidence >= p.threshold)
    }

    /// The extra column names for `--all-confidence-columns`.
    pub fn all_columns(task: &str) -> Vec<String> {
        ConfidenceMethod::ALL
            .iter()
            .map(|m| format!("{task}_task_confidence_{}", m.name()))
            .collect()
    }

    /// The values of those columns for a row.
    pub fn all_values(&self, s: &Scored) -> Vec<String> {
        ConfidenceMethod::ALL
            .iter()
            .map(|m| format!("{:.6}", m.value(&s.scores, &self.adjustment)))
            .collect()
    }

    /// The columns every run and score writes with each candidate's raw log-probability (the
    /// label's tokens and the end token) and mean token log-probability, as JSON objects
    /// mapping label to value in the label set's order: to audit a label, ensemble models, or
    /// check the scores against another engine.
    pub fn logprob_columns(task: &str) -> Vec<String> {
        ["label_logprobs", "label_mean_token_logprobs"]
            .iter()
            .map(|c| format!("{task}_task_{c}"))
            .collect()
    }

    /// The values of those columns for a row.
    pub fn logprob_values(s: &Scored) -> Vec<String> {
        let object = |values: &[f32]| {
            let map: serde_json::Map<String, serde_json::Value> = s
                .labels
                .iter()
                .zip(values)
                .map(|(l, &v)| {
                    // Six decimals, as the other confidence columns; -inf (a label the model
                    // cannot produce) has no JSON number and is written as null.
                    let v: serde_json::Value = if v.is_finite() {
                        format!("{v:.6}")
                            .parse::<f64>()
                            .map_or(serde_json::Value::Null, Into::into)
                    } else {
                        serde_json::Value::Null
                    };
                    (l.clone(), v)
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        };
        vec![
            object(&s.scores.logprobs),
            object(&s.scores.mean_token_logprobs),
        ]
    }

    /// Computes the content-free prior when `--debias` asks for it (see [`crate::debias`]);
    /// returns a line describing it.
    pub fn apply_debias(
        &mut self,
        session: &crate::session::Session,
        labeler: &crate::labeler::Labeler,
    ) -> Result<Option<String>> {
        let labels = session.task.fixed_candidates().unwrap_or_default();
        if self.needs_prior {
            let (prior, _) = crate::debias::content_free_prior(session, labeler)?;
            self.adjustment.debias = prior;
            self.needs_prior = false;
        } else if self.adjustment.debias.is_empty() {
            return Ok(None);
        }
        Ok(Some(crate::debias::describe(
            &labels,
            &self.adjustment.debias,
        )))
    }

    pub fn describe(&self) -> String {
        let debiased = if self.adjustment.debias.is_empty() {
            ""
        } else {
            "content-free prior divided out, "
        };
        let cal = match &self.calibration {
            Some(path) => format!(
                "{debiased}temperature {:.3}{} from {}",
                self.adjustment.temperature,
                if self.adjustment.bias.is_empty() {
                    ""
                } else {
                    " and per-label bias"
                },
                path.display()
            ),
            None if !debiased.is_empty() => "content-free prior divided out, uncalibrated".into(),
            None => "uncalibrated".into(),
        };
        match (&self.threshold, self.target_accuracy) {
            (Some(p), Some(target)) if p.threshold.is_infinite() => format!(
                "{} ({cal}; no threshold reached accuracy {target} on the seed rows, the best subset reached {:.3}: every row is not confidently labeled)",
                self.method.name(),
                p.accuracy
            ),
            (Some(p), Some(target)) => format!(
                "{} >= {:.4} ({cal}; on the seed rows this kept {:.1}% at accuracy {:.3}, target {target})",
                self.method.name(),
                p.threshold,
                100.0 * p.completion_rate,
                p.accuracy
            ),
            _ => format!("{} ({cal})", self.method.name()),
        }
    }
}
