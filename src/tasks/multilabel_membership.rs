//! Multi-label classification by label membership: every label of the set is judged on its own,
//! `label: yes` against `label: no` scored exactly in one pass over the label trie (as
//! classification scores its labels), so each label gets P(yes) normalised over the two answers,
//! whether it is chosen or not. The chosen labels are those at or above 0.5 (or the calibrated
//! threshold); the most probable one when none is, so the answer is never empty.

use super::open::{round6, Interpreted};
use crate::scoring_pass::Scored;
use serde_json::{json, Value};

/// The probability at or above which a label is chosen when no threshold is given.
pub const CHOOSE_AT: f64 = 0.5;

/// The output guidelines of the membership prompt (the config's describe a label list, which is
/// not the answer here).
pub fn output_guidelines(labels: &[String]) -> String {
    let (a, b) = (
        labels.first().map_or("label1", String::as_str),
        labels.get(1).map_or("label2", String::as_str),
    );
    format!(
        "For every category, you will say whether the input belongs to it: the category, a colon, then \"yes\" or \"no\", one category per line. For example:\n{a}: no\n{b}: yes"
    )
}

/// One judgment line.
fn judgment(label: &str, member: bool) -> String {
    format!("{label}: {}", if member { "yes" } else { "no" })
}

/// A seed example's answer: a judgment line for every label, in the label set's order.
pub fn example_answer(labels: &[String], truth: &[&str]) -> String {
    labels
        .iter()
        .map(|l| judgment(l, truth.contains(&l.as_str())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The candidates every row scores: `label: yes` then `label: no` for each label in order.
pub fn candidates(labels: &[String]) -> Vec<String> {
    labels
        .iter()
        .flat_map(|l| [judgment(l, true), judgment(l, false)])
        .collect()
}

/// Each label's membership probability from a row's scores of [`candidates`]:
/// P(yes) / (P(yes) + P(no)) for its two judgments.
pub fn probabilities(scored: &Scored) -> Vec<f64> {
    scored
        .scores
        .logprobs
        .chunks(2)
        .map(|c| 1.0 / (1.0 + ((c[1] - c[0]) as f64).exp()))
        .collect()
}

/// The answer that chooses `chosen` (indices into the labels; the labels at or above
/// [`CHOOSE_AT`] when None, the most probable one when none is) given every label's probability.
/// Its detail lists every label with its probability and whether it is chosen; its confidence
/// is the geometric mean over the labels of the probability of each one's decision.
pub fn answer(
    labels: &[String],
    separator: &str,
    probs: &[f64],
    chosen: Option<&[usize]>,
) -> Interpreted {
    let detail = Value::Array(
        labels
            .iter()
            .zip(probs)
            .map(|(l, &p)| json!({"label": l, "confidence": round6(p)}))
            .collect(),
    );
    let mut it = Interpreted {
        label: String::new(),
        confidence: 0.0,
        extra: Vec::new(),
        detail,
    };
    match chosen {
        Some(c) => mark(&mut it, separator, &|i, _| c.contains(&i), None),
        None => {
            choose(&mut it, separator, None);
        }
    }
    it
}

/// Chooses the labels of an answer whose detail holds every label's (calibrated) confidence:
/// those at or above `threshold` (else [`CHOOSE_AT`]), the most confident one when none is.
/// Marks each label `confident` when a threshold is given; returns whether some label reached
/// it (the row did not need its best label to stay non-empty).
pub fn choose(it: &mut Interpreted, separator: &str, threshold: Option<f64>) -> bool {
    let at = threshold.unwrap_or(CHOOSE_AT);
    choose_at(it, separator, &|_| at, threshold.is_some())
}

/// [`choose`] with a cut per label (`cut(label index)`); `mark` sets each label's `confident`
/// flag (its confidence reached its cut).
pub fn choose_at(
    it: &mut Interpreted,
    separator: &str,
    cut: &dyn Fn(usize) -> f64,
    mark_confident: bool,
) -> bool {
    let cs: Vec<f64> = it
        .detail
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["confidence"].as_f64().unwrap_or(0.0))
        .collect();
    let above = |i: usize, c: f64| c as f32 >= cut(i) as f32;
    let reached = cs.iter().enumerate().any(|(i, &c)| above(i, c));
    let best = (0..cs.len())
        .max_by(|&a, &b| cs[a].total_cmp(&cs[b]).then(b.cmp(&a)))
        .unwrap_or(0);
    mark(
        it,
        separator,
        &|i, c| above(i, c) || (!reached && i == best),
        mark_confident.then_some(cut),
    );
    reached
}

/// Sets each label's `chosen` flag by `pick(index, confidence)` (and with a threshold
/// `confident`: the confidence reached it), the answer's label and its confidence.
fn mark(
    it: &mut Interpreted,
    separator: &str,
    pick: &dyn Fn(usize, f64) -> bool,
    cut: Option<&dyn Fn(usize) -> f64>,
) {
    let items = it
        .detail
        .as_array_mut()
        .expect("membership detail is a list");
    let (mut names, mut log_sum) = (Vec::new(), 0.0);
    for (i, e) in items.iter_mut().enumerate() {
        let c = e["confidence"].as_f64().unwrap_or(0.0);
        let chosen = pick(i, c);
        e["chosen"] = chosen.into();
        if let Some(cut) = cut {
            e["confident"] = (c as f32 >= cut(i) as f32).into();
        }
        if chosen {
            names.push(e["label"].as_str().unwrap_or_default().to_string());
        }
        let decided = if chosen { c } else { 1.0 - c };
        log_sum += decided.max(f64::MIN_POSITIVE).ln();
    }
    it.label = names.join(separator);
    it.confidence = round6((log_sum / items.len().max(1) as f64).exp());
    it.extra = vec![it.detail.to_string()];
}

/// Each label's (probability, is a true label) on one row: the units calibration fits.
pub fn outcomes(it: &Interpreted, truth: &[String]) -> Vec<(f64, bool)> {
    it.detail
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let l = e["label"].as_str().unwrap_or_default();
            (
                e["confidence"].as_f64().unwrap_or(0.0),
                truth.iter().any(|t| t == l),
            )
        })
        .collect()
}

/// Per-label AUROC of the membership probability against the ground truth over `rows` (each
/// row's probabilities in label order and its true labels); "n/a" where a label is always or
/// never true.
pub fn auroc_lines(labels: &[String], rows: &[(Vec<f64>, Vec<String>)]) -> String {
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(5).max(5);
    let mut text = format!(
        "\nmembership probability per label (AUROC against the ground truth):\n| {:<width$} |  AUROC |\n",
        "label"
    );
    let mut all = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let units: Vec<crate::metrics::Outcome> = rows
            .iter()
            .map(|(p, truth)| crate::metrics::Outcome {
                correct: truth.contains(l),
                confidence: p[i] as f32,
            })
            .collect();
        all.extend(units.iter().cloned());
        let a = crate::metrics::auroc(&units).map_or("n/a".into(), |a| format!("{a:.4}"));
        text.push_str(&format!("| {l:<width$} | {a:>6} |\n"));
    }
    let a = crate::metrics::auroc(&all).map_or("n/a".into(), |a| format!("{a:.4}"));
    text.push_str(&format!("| {:<width$} | {a:>6} |\n", "(all)"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn labels_at_or_above_one_half_are_chosen_and_the_best_stays_when_none_is() {
        let labels = v(&["anger", "joy", "fear"]);
        let it = answer(&labels, ", ", &[0.7, 0.2, 0.5], None);
        assert_eq!(it.label, "anger, fear");
        let expect = ((0.7f64).ln() + (0.8f64).ln() + (0.5f64).ln()) / 3.0;
        assert!(
            (it.confidence - expect.exp()).abs() < 1e-5,
            "{}",
            it.confidence
        );
        assert_eq!(it.detail[1]["chosen"], false);
        let it = answer(&labels, ", ", &[0.1, 0.3, 0.2], None);
        assert_eq!(it.label, "joy", "none reaches 0.5: the most probable stays");
        let it = answer(&labels, ";", &[0.9, 0.9, 0.1], Some(&[2]));
        assert_eq!(it.label, "fear", "given labels are taken as they are");
        let mut it = answer(&labels, ";", &[0.9, 0.6, 0.1], None);
        assert!(choose(&mut it, ";", Some(0.8)));
        assert_eq!(it.label, "anger");
        assert_eq!(
            it.detail[1]["confident"], false,
            "0.6: above 0.5, below 0.8"
        );
        assert_eq!(it.detail[0]["confident"], true);
        assert!(!choose(&mut it, ";", Some(0.95)));
        assert_eq!(it.label, "anger");
    }

    #[test]
    fn examples_judge_every_label_and_candidates_pair_yes_with_no() {
        let labels = v(&["anger", "joy"]);
        assert_eq!(example_answer(&labels, &["joy"]), "anger: no\njoy: yes");
        assert_eq!(
            candidates(&labels),
            v(&["anger: yes", "anger: no", "joy: yes", "joy: no"])
        );
    }
}
