//! The parts of multi-label classification that are about the answer's form: the Lark grammar of
//! a label subset (shared with attribute extraction's multi-label attributes) and how a
//! calibration and threshold rewrite the chosen labels of an answer, generated or by membership.

use super::open::{round6, Interpreted};

/// A grammar for a non-empty subset of `labels`, in their order, joined by `sep`: rule `l{i}`
/// is label i optionally followed by the separator and any later label's rule.
pub fn subset_grammar(labels: &[String], sep: &str) -> String {
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let quoted: Vec<String> = labels.iter().map(|l| quote(l)).collect();
    subset_rules("start", "l", &quoted, &quote(sep))
}

/// Lark rules for a non-empty subset of the `literals` (Lark string literals), in their order,
/// joined by the literal `sep`: rule `start` is any of the rules `{prefix}{i}`, and rule
/// `{prefix}{i}` is literal i optionally followed by `sep` and any later literal's rule.
pub fn subset_rules(start: &str, prefix: &str, literals: &[String], sep: &str) -> String {
    let alternatives = |from: usize| {
        (from..literals.len())
            .map(|j| format!("{prefix}{j}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut g = format!("{start}: {}\n", alternatives(0));
    for (i, l) in literals.iter().enumerate() {
        if i + 1 < literals.len() {
            g.push_str(&format!(
                "{prefix}{i}: {l} ({sep} ({}))?\n",
                alternatives(i + 1)
            ));
        } else {
            g.push_str(&format!("{prefix}{i}: {l}\n"));
        }
    }
    g
}

/// Calibrates every label's probability in a membership answer's detail (the raw one kept as
/// `probability`).
pub(crate) fn calibrate_every_label(
    answer: &mut Interpreted,
    calibrated: &dyn Fn(usize, f64) -> f64,
) {
    if let Some(items) = answer.detail.as_array_mut() {
        for (i, e) in items.iter_mut().enumerate() {
            let p = e["confidence"].as_f64().unwrap_or(0.0);
            e["probability"] = p.into();
            e["confidence"] = round6(calibrated(i, p)).into();
        }
    }
}

/// Calibrates each chosen label of `detail` (`{"label", "confidence"}` items) and marks it
/// against the threshold; returns the label that keeps the confident ones (the most confident
/// one when none is, so the label is never empty) and whether all were confident.
pub(crate) fn calibrate_chosen(
    detail: &mut serde_json::Value,
    separator: &str,
    calibrated: &dyn Fn(f64) -> f64,
    threshold: Option<f64>,
) -> (String, bool) {
    let Some(items) = detail.as_array_mut() else {
        return (String::new(), false);
    };
    let mut best = (0, f64::NEG_INFINITY);
    for (i, e) in items.iter_mut().enumerate() {
        let p = e["confidence"].as_f64().unwrap_or(0.0);
        let c = calibrated(p);
        e["probability"] = p.into();
        e["confidence"] = round6(c).into();
        if let Some(t) = threshold {
            e["confident"] = (c as f32 >= t as f32).into();
        }
        if c > best.1 {
            best = (i, c);
        }
    }
    let confident = |e: &serde_json::Value| e["confident"].as_bool().unwrap_or(true);
    let kept: Vec<&str> = items
        .iter()
        .enumerate()
        .filter(|(i, e)| confident(e) || *i == best.0)
        .map(|(_, e)| e["label"].as_str().unwrap_or_default())
        .collect();
    (kept.join(separator), items.iter().all(confident))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_grammar_lists_later_labels_only() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            subset_grammar(&labels, ", "),
            "start: l0 | l1 | l2\nl0: \"a\" (\", \" (l1 | l2))?\nl1: \"b\" (\", \" (l2))?\nl2: \"c\"\n"
        );
    }

    #[test]
    fn labels_below_the_threshold_leave_the_label_unless_none_is_left() {
        let chosen = |ps: &[(&str, f64)]| {
            serde_json::Value::Array(
                ps.iter()
                    .map(|(l, p)| serde_json::json!({"label": l, "confidence": p}))
                    .collect(),
            )
        };
        let half = |p: f64| p / 2.0;
        let mut d = chosen(&[("anger", 0.9), ("joy", 0.3), ("sadness", 0.7)]);
        assert_eq!(
            calibrate_chosen(&mut d, ", ", &half, Some(0.35)),
            ("anger, sadness".to_string(), false)
        );
        assert_eq!(d[1]["probability"], 0.3);
        assert_eq!(d[1]["confidence"], 0.15);
        assert_eq!(d[1]["confident"], false);
        assert_eq!(d[2]["confident"], true);
        let mut d = chosen(&[("anger", 0.2), ("joy", 0.5)]);
        assert_eq!(
            calibrate_chosen(&mut d, ";", &half, Some(0.9)),
            ("joy".to_string(), false),
            "none reaches the threshold: the most confident stays"
        );
        let mut d = chosen(&[("anger", 0.2), ("joy", 0.5)]);
        assert_eq!(
            calibrate_chosen(&mut d, ";", &half, None),
            ("anger;joy".to_string(), true),
            "without a threshold every label stays"
        );
        assert!(d[0].get("confident").is_none());
    }
}
