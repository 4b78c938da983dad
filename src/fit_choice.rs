//! `calibrate --fit auto`: chooses among no adjustment, a temperature, and a temperature with a
//! per-label bias by their negative log-likelihood on seed rows they were not fitted on (5-fold
//! cross-validation over the fit rows), so a bias is only used where it generalises.

use crate::calibration::{fit_temperature, fit_temperature_and_bias, nll, SeedRow};
use crate::confidence::Adjustment;

const FOLDS: usize = 5;

/// Fits `kind` ("none", "temperature" or "bias") on `rows`.
pub fn fit(kind: &str, rows: &[SeedRow], labels: usize) -> Adjustment {
    match kind {
        "none" => Adjustment::default(),
        "bias" => fit_temperature_and_bias(rows, labels),
        _ => Adjustment::temperature(fit_temperature(rows)),
    }
}

/// Mean held-out NLL of each candidate over the folds (row i is in fold i % 5), and the chosen
/// candidate: the lowest, the simpler one on a tie.
pub fn choose(rows: &[SeedRow], labels: usize) -> (&'static str, Vec<(&'static str, f64)>) {
    let mut kinds = vec!["none", "temperature"];
    if labels >= 2 {
        kinds.push("bias");
    }
    let folds = FOLDS.min(rows.len()).max(1);
    let scores: Vec<(&'static str, f64)> = kinds
        .iter()
        .map(|&kind| {
            let mut total = 0.0;
            for k in 0..folds {
                let train: Vec<SeedRow> = rows
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % folds != k || folds == 1)
                    .map(|(_, r)| r.clone())
                    .collect();
                let test: Vec<SeedRow> = rows
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % folds == k)
                    .map(|(_, r)| r.clone())
                    .collect();
                total += nll(&test, &fit(kind, &train, labels)) * test.len() as f64;
            }
            (kind, total / rows.len().max(1) as f64)
        })
        .collect();
    let mut best = scores[0];
    for &s in &scores[1..] {
        if s.1 < best.1 - 1e-9 {
            best = s;
        }
    }
    (best.0, scores)
}

/// The line `calibrate` prints about the choice.
pub fn describe(chosen: &str, scores: &[(&str, f64)]) -> String {
    let what = |k: &str| match k {
        "none" => "no adjustment",
        "bias" => "temperature + per-label bias",
        _ => "temperature",
    };
    format!(
        "--fit auto chose {} (lowest cross-validated NLL on the fit rows, 5 folds: {})",
        what(chosen),
        scores
            .iter()
            .map(|(k, v)| format!("{} {v:.4}", what(k)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, favour: f32) -> Vec<SeedRow> {
        // Two labels; the model favours label 0 by `favour` nats, the truth alternates with a
        // weak signal in the scores.
        (0..n)
            .map(|i| {
                let truth = i % 2;
                let signal = if truth == 1 { 0.5 } else { -0.5 };
                SeedRow {
                    logprobs: vec![favour, signal],
                    truth,
                }
            })
            .collect()
    }

    #[test]
    fn a_bias_is_chosen_only_where_the_model_prefers_a_label() {
        let (chosen, scores) = choose(&rows(60, 3.0), 2);
        assert_eq!(chosen, "bias", "{scores:?}");
        let (chosen, scores) = choose(&rows(60, 0.0), 2);
        assert_ne!(chosen, "bias", "{scores:?}");
        assert_eq!(scores.len(), 3);
        // Without a fixed label set only none and temperature compete.
        assert_eq!(choose(&rows(10, 0.0), 0).1.len(), 2);
        assert!(describe("bias", &scores).contains("temperature + per-label bias"));
    }
}
