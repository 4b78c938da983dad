//! From per-token candidate log-probabilities to a label and its confidence.

/// The outcome of scoring one row's candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores {
    /// Index of the chosen (most probable) candidate.
    pub best: usize,
    /// log P(candidate | prompt) for every candidate (sum over its tokens, end token included).
    pub logprobs: Vec<f32>,
    /// P(candidate) normalised over the candidate set.
    pub probs: Vec<f32>,
    /// Mean token log-probability of every candidate (Autolabel's confidence measure).
    pub mean_token_logprobs: Vec<f32>,
}

impl LabelScores {
    pub fn from_token_logprobs(token_logprobs: &[Vec<f32>]) -> Self {
        let logprobs: Vec<f32> = token_logprobs.iter().map(|t| t.iter().sum()).collect();
        let mean_token_logprobs = token_logprobs
            .iter()
            .map(|t| t.iter().sum::<f32>() / t.len().max(1) as f32)
            .collect();
        let max = logprobs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = logprobs.iter().map(|&l| ((l - max) as f64).exp()).collect();
        let total: f64 = exps.iter().sum();
        let probs: Vec<f32> = exps.iter().map(|e| (e / total) as f32).collect();
        let best = logprobs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        LabelScores {
            best,
            logprobs,
            probs,
            mean_token_logprobs,
        }
    }

    /// Probability of the chosen label over the label set.
    pub fn confidence(&self) -> f32 {
        self.probs[self.best]
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
        assert!((s.probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let expected = 1.0 / (1.0 + (-1.5f32).exp() + (-0.9f32).exp());
        assert!((s.confidence() - expected).abs() < 1e-6);
        assert!((s.mean_token_logprobs[2] - (-0.8)).abs() < 1e-6);
    }

    #[test]
    fn ties_go_to_the_first_label() {
        let s = LabelScores::from_token_logprobs(&[vec![-1.0], vec![-1.0]]);
        assert_eq!(s.best, 0);
        assert!((s.confidence() - 0.5).abs() < 1e-6);
    }
}
