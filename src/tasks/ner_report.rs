//! The named-entity metrics report: nervaluate's schemes over the rows with ground truth,
//! Autolabel's accuracy, per-type figures and the entity-confidence threshold table.

use super::ner_eval::{NerEvaluation, Span, SCHEMES};
use super::ner_format::text_spans;
use super::open::Report;

/// Every predicted entity with its confidence, as read back from an answer's detail
/// ([`super::open::Interpreted::detail`]).
pub fn predicted(detail: &serde_json::Value) -> Vec<(Span, f64)> {
    entities(detail, |_| true)
}

/// The predicted entities that are in the label: all but those a threshold left out.
pub fn predicted_in_label(detail: &serde_json::Value) -> Vec<(Span, f64)> {
    entities(detail, |e| e["confident"].as_bool() != Some(false))
}

fn entities(
    detail: &serde_json::Value,
    keep: impl Fn(&serde_json::Value) -> bool,
) -> Vec<(Span, f64)> {
    detail
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| keep(e))
                .map(|e| {
                    (
                        Span {
                            label: e["type"].as_str().unwrap_or_default().into(),
                            start: e["start"].as_i64().unwrap_or(-1),
                            end: e["end"].as_i64().unwrap_or(-1),
                        },
                        e["confidence"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Predicted spans with their confidence.
type Scored = Vec<(Span, f64)>;

/// Entity-confidence thresholds of the completion table.
const THRESHOLDS: [f64; 7] = [0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99];

/// The report over rows given as (line, text, ground truth or why it cannot be read, the
/// answer's entity detail when the row was labeled).
pub fn report<'a>(
    types: &[String],
    rows: impl Iterator<
        Item = (
            u64,
            &'a str,
            Result<Vec<(String, String)>, String>,
            Option<&'a serde_json::Value>,
        ),
    >,
) -> Report {
    let mut warnings = Vec::new();
    let (mut support, mut missing_in_text) = (0, 0);
    let mut docs: Vec<(Vec<Span>, Scored)> = Vec::new();
    for (line, text, truth, detail) in rows {
        let truth = match truth {
            Ok(t) => t,
            Err(e) => {
                warnings.push(format!("{e}; the row is left out of the metrics"));
                continue;
            }
        };
        support += 1;
        let spans = text_spans(text, &truth);
        for (s, (_, e)) in spans.iter().zip(&truth) {
            if s.start < 0 {
                missing_in_text += 1;
                if missing_in_text <= 5 {
                    warnings.push(format!("line {line}: ground-truth entity '{e}' ({}) is not in the text; it counts as missed", s.label));
                }
            }
        }
        if let Some(d) = detail {
            docs.push((spans, predicted_in_label(d)));
        }
    }
    if missing_in_text > 5 {
        warnings.push(format!(
            "{missing_in_text} ground-truth entities in all are not in their text"
        ));
    }
    let tags = types.to_vec();
    let at = |t: f64| -> (NerEvaluation, usize, usize) {
        let mut kept = 0;
        let mut total = 0;
        let d: Vec<(Vec<Span>, Vec<Span>)> = docs
            .iter()
            .map(|(truth, pred)| {
                total += pred.len();
                let p: Vec<Span> = pred
                    .iter()
                    .filter(|(_, c)| *c >= t)
                    .map(|(s, _)| s.clone())
                    .collect();
                kept += p.len();
                (truth.clone(), p)
            })
            .collect();
        (NerEvaluation::new(&d, &tags), kept, total)
    };
    let (all, _, _) = at(0.0);
    let mut text = format!(
            "named-entity metrics (nervaluate schemes), {} of {support} rows with ground truth labeled\n{:<10} {:>9} {:>7} {:>7}\n",
            docs.len(), "scheme", "precision", "recall", "f1"
        );
    let mut figures = Vec::new();
    for scheme in SCHEMES {
        let (p, r, f) = all.prf(scheme);
        text.push_str(&format!("{scheme:<10} {p:>9.4} {r:>7.4} {f:>7.4}\n"));
        figures.push((format!("{scheme}_f1"), f));
    }
    let strict = all.overall.get("strict").copied().unwrap_or_default();
    let accuracy = if strict.possible() > 0 {
        strict.correct as f64 / strict.possible() as f64
    } else {
        0.0
    };
    figures.push(("accuracy".into(), accuracy));
    text.push_str(&format!(
        "accuracy (strict correct / possible, as Autolabel): {accuracy:.4}\nper type (strict):"
    ));
    for (t, s) in &all.per_type {
        let (p, r, f) = s.get("strict").copied().unwrap_or_default().prf(false);
        text.push_str(&format!(
            "\n  {t:<16} precision {p:.4} recall {r:.4} f1 {f:.4}"
        ));
    }
    text.push_str(
        "\nentity confidence threshold | entities kept | strict precision | recall | f1\n",
    );
    for t in THRESHOLDS {
        let (e, kept, total) = at(t);
        let (p, r, f) = e.prf("strict");
        let share = if total > 0 {
            kept as f64 / total as f64
        } else {
            0.0
        };
        text.push_str(&format!(
            "{t:>28.2} | {share:>13.4} | {p:>16.4} | {r:>6.4} | {f:.4}\n"
        ));
    }
    Report {
        text,
        warnings,
        figures,
    }
}
