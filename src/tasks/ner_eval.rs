//! Span-level NER evaluation with the SemEval'13 schemes as the `nervaluate` package (1.2)
//! computes them: strict (boundaries and type), exact (boundaries), partial (overlap counts
//! half) and ent_type (overlap and type). Spans are `(start, end)` character offsets given the
//! way Autolabel hands them to nervaluate (`end = start + len`, compared as inclusive).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub label: String,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub correct: usize,
    pub incorrect: usize,
    pub partial: usize,
    pub missed: usize,
    pub spurious: usize,
}

/// The four schemes, in nervaluate's order.
pub const SCHEMES: [&str; 4] = ["strict", "exact", "partial", "ent_type"];

impl Counts {
    pub fn actual(&self) -> usize {
        self.correct + self.incorrect + self.partial + self.spurious
    }
    pub fn possible(&self) -> usize {
        self.correct + self.incorrect + self.partial + self.missed
    }
    fn add(&mut self, o: &Counts) {
        self.correct += o.correct;
        self.incorrect += o.incorrect;
        self.partial += o.partial;
        self.missed += o.missed;
        self.spurious += o.spurious;
    }
    /// Precision, recall, F1; `half_partial` for the partial and ent_type schemes.
    pub fn prf(&self, half_partial: bool) -> (f64, f64, f64) {
        let hit = self.correct as f64
            + if half_partial {
                0.5 * self.partial as f64
            } else {
                0.0
            };
        let p = if self.actual() > 0 {
            hit / self.actual() as f64
        } else {
            0.0
        };
        let r = if self.possible() > 0 {
            hit / self.possible() as f64
        } else {
            0.0
        };
        let f = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        (p, r, f)
    }
}

fn overlaps(p: &Span, t: &Span) -> bool {
    // nervaluate: any overlap, ends inclusive (min_overlap_percentage 1%).
    !(p.start > t.end || p.end < t.start)
}

fn same_bounds(p: &Span, t: &Span) -> bool {
    p.start == t.start && p.end == t.end
}

/// One document under one scheme.
fn evaluate_doc(scheme: &str, truth: &[Span], pred: &[Span]) -> Counts {
    let mut c = Counts::default();
    let mut matched = vec![false; truth.len()];
    for p in pred {
        match scheme {
            "strict" | "exact" => {
                let mut hit = None;
                let mut near = None;
                for (ti, t) in truth.iter().enumerate() {
                    if matched[ti] {
                        continue;
                    }
                    let exact = same_bounds(p, t) && (scheme == "exact" || p.label == t.label);
                    if exact {
                        hit = Some(ti);
                        break;
                    }
                    if near.is_none() && overlaps(p, t) {
                        near = Some(ti);
                    }
                }
                if let Some(ti) = hit {
                    c.correct += 1;
                    matched[ti] = true;
                } else if let Some(ti) = near {
                    c.incorrect += 1;
                    matched[ti] = true;
                } else {
                    c.spurious += 1;
                }
            }
            "partial" => {
                let mut hit = None;
                let mut near = None;
                for (ti, t) in truth.iter().enumerate() {
                    if matched[ti] || !overlaps(p, t) {
                        continue;
                    }
                    if same_bounds(p, t) {
                        hit = Some(ti);
                        break;
                    }
                    if near.is_none() {
                        near = Some(ti);
                    }
                }
                if let Some(ti) = hit {
                    c.correct += 1;
                    matched[ti] = true;
                } else if let Some(ti) = near {
                    c.partial += 1;
                    matched[ti] = true;
                } else {
                    c.spurious += 1;
                }
            }
            _ => {
                // ent_type: the same-type overlap with the closest boundaries is correct.
                let mut best: Option<(usize, i64)> = None;
                let mut wrong = None;
                for (ti, t) in truth.iter().enumerate() {
                    if matched[ti] || !overlaps(p, t) {
                        continue;
                    }
                    let distance = (p.start - t.start).abs() + (p.end - t.end).abs();
                    if p.label == t.label {
                        if best.is_none_or(|(_, d)| distance < d) {
                            best = Some((ti, distance));
                        }
                    } else if wrong.is_none() {
                        wrong = Some(ti);
                    }
                }
                if let Some((ti, _)) = best {
                    c.correct += 1;
                    matched[ti] = true;
                } else if let Some(ti) = wrong {
                    c.incorrect += 1;
                    matched[ti] = true;
                } else {
                    c.spurious += 1;
                }
            }
        }
    }
    c.missed = matched.iter().filter(|m| !**m).count();
    c
}

/// Counts per scheme, overall and per entity type, summed over documents.
#[derive(Debug, Clone, Default)]
pub struct NerEvaluation {
    pub overall: BTreeMap<&'static str, Counts>,
    pub per_type: BTreeMap<String, BTreeMap<&'static str, Counts>>,
}

impl NerEvaluation {
    /// Evaluates documents `(truth, prediction)`; spans whose label is not in `tags` are
    /// ignored, and per-type results cover the tags that occur in the data.
    pub fn new(docs: &[(Vec<Span>, Vec<Span>)], tags: &[String]) -> Self {
        let mut e = NerEvaluation::default();
        let keep = |s: &[Span]| -> Vec<Span> {
            s.iter()
                .filter(|x| tags.contains(&x.label))
                .cloned()
                .collect()
        };
        let mut used: Vec<String> = docs
            .iter()
            .flat_map(|(t, p)| t.iter().chain(p))
            .map(|s| s.label.clone())
            .filter(|l| tags.contains(l))
            .collect();
        used.sort();
        used.dedup();
        for (truth, pred) in docs {
            let (truth, pred) = (keep(truth), keep(pred));
            for scheme in SCHEMES {
                e.overall
                    .entry(scheme)
                    .or_default()
                    .add(&evaluate_doc(scheme, &truth, &pred));
                for tag in &used {
                    let only = |s: &[Span]| -> Vec<Span> {
                        s.iter().filter(|x| &x.label == tag).cloned().collect()
                    };
                    e.per_type
                        .entry(tag.clone())
                        .or_default()
                        .entry(scheme)
                        .or_default()
                        .add(&evaluate_doc(scheme, &only(&truth), &only(&pred)));
                }
            }
        }
        e
    }

    /// Precision, recall and F1 of a scheme overall.
    pub fn prf(&self, scheme: &str) -> (f64, f64, f64) {
        let c = self.overall.get(scheme).copied().unwrap_or_default();
        c.prf(matches!(scheme, "partial" | "ent_type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(v: &serde_json::Value) -> Vec<Span> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| Span {
                label: s["label"].as_str().unwrap().into(),
                start: s["start"].as_i64().unwrap(),
                end: s["end"].as_i64().unwrap(),
            })
            .collect()
    }

    fn check(ours: &Counts, scheme: &str, want: &serde_json::Value, what: &str) {
        let n = |k: &str| want[k].as_u64().unwrap() as usize;
        assert_eq!(
            (
                ours.correct,
                ours.incorrect,
                ours.partial,
                ours.missed,
                ours.spurious
            ),
            (
                n("correct"),
                n("incorrect"),
                n("partial"),
                n("missed"),
                n("spurious")
            ),
            "{what} {scheme}"
        );
        let (p, r, f) = ours.prf(matches!(scheme, "partial" | "ent_type"));
        for (a, k) in [(p, "precision"), (r, "recall"), (f, "f1")] {
            assert!(
                (a - want[k].as_f64().unwrap()).abs() < 1e-12,
                "{what} {scheme} {k}"
            );
        }
    }

    /// Made by scripts/make_nervaluate_reference.py with nervaluate 1.2.1.
    #[test]
    fn counts_and_scores_equal_nervaluate() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/nervaluate_reference.json"
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let docs: Vec<(Vec<Span>, Vec<Span>)> = r["docs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (spans(&d[0]), spans(&d[1])))
            .collect();
        let tags: Vec<String> = serde_json::from_value(r["tags"].clone()).unwrap();
        let e = NerEvaluation::new(&docs, &tags);
        for scheme in SCHEMES {
            check(&e.overall[scheme], scheme, &r["overall"][scheme], "overall");
            for tag in &tags {
                check(
                    &e.per_type[tag][scheme],
                    scheme,
                    &r["entities"][tag][scheme],
                    tag,
                );
            }
        }
        assert_eq!(e.per_type.len(), tags.len());
    }
}
