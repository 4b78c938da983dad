//! From per-token candidate log-probabilities to a label and its confidence.

use anyhow::{bail, Result};

/// The outcome of scoring one row's candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores {
    /// Index of the chosen (most probable) candidate.
    pub best: usize,
    /// log P(candidate | prompt) for every candidate (sum over its tokens, end token included).
    pub logprobs: Vec<f32>,
    /// Mean token log-probability of every candidate (Autolabel's confidence measure).
    pub mean_token_logprobs: Vec<f32>,
    /// The least likely token of every candidate.
    pub min_token_logprobs: Vec<f32>,
}

impl LabelScores {
    /// The scores of one row asked with its label list in several orders: each label's
    /// log-probability becomes the log of its probability over the label set averaged over the
    /// orders (so the scores are normalised); its mean and lowest token log-probabilities are
    /// averaged.
    pub fn average_over_orders(orders: &[LabelScores]) -> Self {
        let n = orders[0].logprobs.len();
        let k = orders.len() as f64;
        let mut mean_prob = vec![0f64; n];
        let mut mean_token = vec![0f64; n];
        let mut min_token = vec![0f64; n];
        for s in orders {
            for (i, p) in Adjustment::default().probs(&s.logprobs).iter().enumerate() {
                mean_prob[i] += p / k;
                mean_token[i] += s.mean_token_logprobs[i] as f64 / k;
                min_token[i] += s.min_token_logprobs[i] as f64 / k;
            }
        }
        let logprobs: Vec<f32> = mean_prob.iter().map(|p| p.ln() as f32).collect();
        LabelScores {
            best: Adjustment::default().best(&logprobs),
            logprobs,
            mean_token_logprobs: mean_token.iter().map(|&v| v as f32).collect(),
            min_token_logprobs: min_token.iter().map(|&v| v as f32).collect(),
        }
    }

    pub fn from_token_logprobs(token_logprobs: &[Vec<f32>]) -> Self {
        let logprobs: Vec<f32> = token_logprobs.iter().map(|t| t.iter().sum()).collect();
        let mean_token_logprobs = token_logprobs
            .iter()
            .map(|t| t.iter().sum::<f32>() / t.len().max(1) as f32)
            .collect();
        let min_token_logprobs = token_logprobs
            .iter()
            .map(|t| t.iter().copied().fold(0.0f32, f32::min))
            .collect();
        LabelScores {
            best: Adjustment::default().best(&logprobs),
            logprobs,
            mean_token_logprobs,
            min_token_logprobs,
        }
    }
}

/// What a calibration does to the label log-probabilities before the softmax over the label set:
/// divide by a temperature (never changes the chosen label) and, when fitted, add a per-label
/// bias (corrects a model that prefers some labels regardless of the input; can change it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adjustment {
    pub temperature: f64,
    /// One entry per label, or empty for none.
    #[serde(default)]
    pub bias: Vec<f64>,
    /// The content-free label prior (log, one entry per label) divided out of every row before
    /// the temperature (`--debias content-free`), or empty for none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debias: Vec<f64>,
}

impl Default for Adjustment {
    fn default() -> Self {
        Adjustment {
            temperature: 1.0,
            bias: Vec::new(),
            debias: Vec::new(),
        }
    }
}

impl Adjustment {
    pub fn temperature(temperature: f64) -> Self {
        Adjustment {
            temperature,
            bias: Vec::new(),
            debias: Vec::new(),
        }
    }

    pub fn logits(&self, logprobs: &[f32]) -> Vec<f64> {
        logprobs
            .iter()
            .enumerate()
            .map(|(k, &l)| {
                (l as f64 - self.debias.get(k).copied().unwrap_or(0.0)) / self.temperature
                    + self.bias.get(k).copied().unwrap_or(0.0)
            })
            .collect()
    }

    /// The label distribution after the adjustment.
    pub fn probs(&self, logprobs: &[f32]) -> Vec<f64> {
        let z = self.logits(logprobs);
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| e / total).collect()
    }

    /// The chosen label after the adjustment (ties go to the first).
    pub fn best(&self, logprobs: &[f32]) -> usize {
        if self.bias.is_empty() && self.debias.is_empty() {
            return argmax(logprobs.iter().map(|&l| l as f64));
        }
        argmax(self.logits(logprobs).into_iter())
    }
}

fn argmax(values: impl Iterator<Item = f64>) -> usize {
    values
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |acc, (i, v)| if v > acc.1 { (i, v) } else { acc },
        )
        .0
}

/// How a row's confidence is computed. Every method gives a number in [0, 1], larger meaning
/// more confident, so the same thresholds apply to all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfidenceMethod {
    /// P(label) over the label set, after the calibration.
    LabelProb,
    /// exp(mean token log-prob) of the chosen label (Autolabel's measure).
    MeanLogprob,
    /// exp(least token log-prob) of the chosen label.
    MinLogprob,
    /// P(best) - P(second best) over the label set (after the calibration).
    Margin,
    /// 1 - entropy / ln(number of labels) of the label distribution (after the calibration).
    Entropy,
}

impl ConfidenceMethod {
    pub const ALL: [ConfidenceMethod; 5] = [
        ConfidenceMethod::LabelProb,
        ConfidenceMethod::MeanLogprob,
        ConfidenceMethod::MinLogprob,
        ConfidenceMethod::Margin,
        ConfidenceMethod::Entropy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConfidenceMethod::LabelProb => "label_prob",
            ConfidenceMethod::MeanLogprob => "mean_logprob",
            ConfidenceMethod::MinLogprob => "min_logprob",
            ConfidenceMethod::Margin => "margin",
            ConfidenceMethod::Entropy => "entropy",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match Self::ALL.iter().find(|m| m.name() == s) {
            Some(m) => Ok(*m),
            None => bail!(
                "--confidence '{s}' is not a confidence method; use one of {}",
                Self::ALL.map(|m| m.name()).join(", ")
            ),
        }
    }

    /// The confidence of the label the adjustment chooses.
    pub fn value(self, s: &LabelScores, adj: &Adjustment) -> f32 {
        let best = adj.best(&s.logprobs);
        let probs = || adj.probs(&s.logprobs);
        (match self {
            ConfidenceMethod::LabelProb => probs()[best],
            ConfidenceMethod::MeanLogprob => (s.mean_token_logprobs[best] as f64).exp(),
            ConfidenceMethod::MinLogprob => (s.min_token_logprobs[best] as f64).exp(),
            ConfidenceMethod::Margin => {
                let p = probs();
                let second = p
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != best)
                    .map(|(_, &v)| v)
                    .fold(0.0, f64::max);
                p[best] - second
            }
            ConfidenceMethod::Entropy => {
                let p = probs();
                if p.len() < 2 {
                    1.0
                } else {
                    let h: f64 = p.iter().filter(|&&v| v > 0.0).map(|v| -v * v.ln()).sum();
                    1.0 - h / (p.len() as f64).ln()
                }
            }
        })
        .clamp(0.0, 1.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_normalise_over_the_label_set() {
        let s = LabelScores::from_token_logprobs(&[
            vec![-1.0, -0.5],
            vec![-3.0],
            vec![-0.2, -0.2, -2.0],
        ]);
        assert_eq!(s.best, 0);
        let probs = Adjustment::default().probs(&s.logprobs);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        let expected = 1.0 / (1.0 + (-1.5f32).exp() + (-0.9f32).exp());
        let confidence = ConfidenceMethod::LabelProb.value(&s, &Adjustment::default());
        assert!((confidence - expected).abs() < 1e-6);
        assert!((s.mean_token_logprobs[2] - (-0.8)).abs() < 1e-6);
        assert_eq!(s.min_token_logprobs[2], -2.0);
    }

    #[test]
    fn ties_go_to_the_first_label() {
        let s = LabelScores::from_token_logprobs(&[vec![-1.0], vec![-1.0]]);
        assert_eq!(s.best, 0);
        let confidence = ConfidenceMethod::LabelProb.value(&s, &Adjustment::default());
        assert!((confidence - 0.5).abs() < 1e-6);
    }

    #[test]
    fn every_method_gives_a_confidence_in_unit_range() {
        let s = LabelScores::from_token_logprobs(&[vec![-0.1, -0.3], vec![-2.0], vec![-4.0]]);
        let id = Adjustment::default();
        let p = id.probs(&s.logprobs);
        let v = |m| ConfidenceMethod::value(m, &s, &id) as f64;
        assert!((v(ConfidenceMethod::LabelProb) - p[0]).abs() < 1e-6);
        assert!((v(ConfidenceMethod::MeanLogprob) - (-0.2f64).exp()).abs() < 1e-6);
        assert!((v(ConfidenceMethod::MinLogprob) - (-0.3f64).exp()).abs() < 1e-6);
        assert!((v(ConfidenceMethod::Margin) - (p[0] - p[1])).abs() < 1e-6);
        let h: f64 = p.iter().map(|x| -x * x.ln()).sum();
        assert!((v(ConfidenceMethod::Entropy) - (1.0 - h / 3f64.ln())).abs() < 1e-6);
        // A higher temperature flattens the distribution: less confidence, same argmax.
        let hot = Adjustment::temperature(3.0);
        assert!(
            ConfidenceMethod::LabelProb.value(&s, &hot) < v(ConfidenceMethod::LabelProb) as f32
        );
        assert_eq!(hot.best(&s.logprobs), 0);
        // A bias can change the chosen label; the confidences follow it.
        let biased = Adjustment {
            temperature: 1.0,
            bias: vec![0.0, 3.0, 0.0],
            debias: Vec::new(),
        };
        assert_eq!(biased.best(&s.logprobs), 1);
        // A content-free prior is divided out before the temperature: P(label) / prior,
        // renormalised, whatever the temperature.
        let prior = [0.7f64, 0.2, 0.1];
        let debiased = Adjustment {
            temperature: 2.0,
            bias: Vec::new(),
            debias: prior.iter().map(|p| p.ln()).collect(),
        };
        let raw = Adjustment::default().probs(&s.logprobs);
        let want: Vec<f64> = raw.iter().zip(prior).map(|(r, q)| (r / q).sqrt()).collect();
        let total: f64 = want.iter().sum();
        for (got, w) in debiased.probs(&s.logprobs).iter().zip(&want) {
            assert!((got - w / total).abs() < 1e-9, "{got} vs {}", w / total);
        }
        assert!((ConfidenceMethod::MinLogprob.value(&s, &biased) - (-2.0f32).exp()).abs() < 1e-6);
        assert!(ConfidenceMethod::parse("margin").is_ok());
        assert!(ConfidenceMethod::parse("prob")
            .unwrap_err()
            .to_string()
            .contains("label_prob, mean_logprob"));
    }
}
