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

#[cfg(test)]
mod tests {
    use super::*;

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
