//! Autolabel's metrics table: support, threshold, accuracy and completion rate.

/// One labeled row with ground truth: whether the label was right and its confidence.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub correct: bool,
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub support: usize,
    pub threshold: f32,
    pub accuracy: f64,
    pub completion_rate: f64,
}

/// Thresholds reported by default: everything, then increasingly confident subsets.
pub const DEFAULT_THRESHOLDS: &[f32] = &[0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99];

/// `support` counts rows with ground truth (labeled or not); a row counts as completed at a
/// threshold when it was labeled with at least that confidence.
pub fn metrics_table(outcomes: &[Outcome], support: usize, thresholds: &[f32]) -> Vec<MetricRow> {
    thresholds
        .iter()
        .map(|&t| {
            let kept: Vec<&Outcome> = outcomes.iter().filter(|o| o.confidence >= t).collect();
            let correct = kept.iter().filter(|o| o.correct).count();
            MetricRow {
                support,
                threshold: t,
                accuracy: if kept.is_empty() {
                    0.0
                } else {
                    correct as f64 / kept.len() as f64
                },
                completion_rate: if support == 0 {
                    0.0
                } else {
                    kept.len() as f64 / support as f64
                },
            }
        })
        .collect()
}

pub fn format_table(rows: &[MetricRow]) -> String {
    let mut s = String::from("| support | threshold | accuracy | completion_rate |\n|--------:|----------:|---------:|----------------:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {:>7} | {:>9.2} | {:>8.4} | {:>15.4} |\n",
            r.support, r.threshold, r.accuracy, r.completion_rate
        ));
    }
    s
}

/// Area under the ROC curve of confidence as a predictor of correctness: the probability that a
/// right label has a higher confidence than a wrong one (ties count half). None without both.
pub fn auroc(outcomes: &[Outcome]) -> Option<f64> {
    let pos = outcomes.iter().filter(|o| o.correct).count();
    let neg = outcomes.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut sorted: Vec<&Outcome> = outcomes.iter().collect();
    sorted.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    // Sum of the (tie-averaged, 1-based) ranks of the right labels.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].confidence == sorted[i].confidence {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * sorted[i..=j].iter().filter(|o| o.correct).count() as f64;
        i = j + 1;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_by_hand() {
        let o = |correct, confidence| Outcome {
            correct,
            confidence,
        };
        assert_eq!(auroc(&[o(true, 0.9), o(false, 0.1)]), Some(1.0));
        assert_eq!(auroc(&[o(true, 0.1), o(false, 0.9)]), Some(0.0));
        assert_eq!(auroc(&[o(true, 0.5), o(false, 0.5)]), Some(0.5));
        // Pairs (right, wrong): (0.8,0.6) yes, (0.8,0.9) no, (0.7,0.6) yes, (0.7,0.9) no.
        assert_eq!(
            auroc(&[o(true, 0.8), o(true, 0.7), o(false, 0.6), o(false, 0.9)]),
            Some(0.5)
        );
        assert_eq!(auroc(&[o(true, 0.8)]), None);
    }

    #[test]
    fn accuracy_and_completion_by_threshold() {
        let o = |correct, confidence| Outcome {
            correct,
            confidence,
        };
        let outcomes = [o(true, 0.9), o(false, 0.6), o(true, 0.99), o(false, 0.95)];
        let t = metrics_table(&outcomes, 5, &[0.0, 0.9, 0.99]);
        assert_eq!(t[0].accuracy, 0.5);
        assert_eq!(t[0].completion_rate, 0.8);
        assert!((t[1].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(t[2].accuracy, 1.0);
        assert_eq!(t[2].completion_rate, 0.2);
        assert!(format_table(&t).contains("|       5 |      0.99 |   1.0000 |          0.2000 |"));
    }
}
