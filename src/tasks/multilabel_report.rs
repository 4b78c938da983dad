//! The multi-label metrics report: exact-match accuracy and F1 (macro and weighted, as
//! scikit-learn computes them over the binarized label set, which is what Autolabel reports) at
//! a range of row-confidence thresholds, then each label's support, precision, recall and F1.

use super::open::Report;

/// One labeled row with ground truth: its confidence, true labels and chosen labels.
pub type Row = (f64, Vec<String>, Vec<String>);

/// Per-label counts over `rows`: (true positives, predicted, support).
fn counts(labels: &[String], rows: &[&Row]) -> Vec<(usize, usize, usize)> {
    labels
        .iter()
        .map(|l| {
            let mut c = (0, 0, 0);
            for (_, truth, chosen) in rows {
                let (t, p) = (truth.contains(l), chosen.contains(l));
                c.0 += (t && p) as usize;
                c.1 += p as usize;
                c.2 += t as usize;
            }
            c
        })
        .collect()
}

/// Precision, recall and F1 of one label (0 where undefined, scikit-learn's zero_division=0).
fn prf((tp, predicted, support): (usize, usize, usize)) -> (f64, f64, f64) {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(tp, predicted), ratio(tp, support));
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// F1 macro (mean over every label of the set) and weighted (by support).
pub fn f1_macro_weighted(labels: &[String], rows: &[&Row]) -> (f64, f64) {
    let c = counts(labels, rows);
    let f1: Vec<f64> = c.iter().map(|&x| prf(x).2).collect();
    let macro_f1 = f1.iter().sum::<f64>() / labels.len().max(1) as f64;
    let total: usize = c.iter().map(|x| x.2).sum();
    let weighted = if total == 0 {
        0.0
    } else {
        c.iter().zip(&f1).map(|(x, f)| x.2 as f64 * f).sum::<f64>() / total as f64
    };
    (macro_f1, weighted)
}

/// Exact-match accuracy: the chosen set is the true set.
fn exact(rows: &[&Row]) -> f64 {
    let right = rows.iter().filter(|(_, t, c)| t == c).count();
    right as f64 / rows.len().max(1) as f64
}

pub fn report(labels: &[String], rows: &[Row], support: usize) -> Report {
    let mut text = format!(
        "multi-label classification, {} of {support} rows with ground truth labeled\n| threshold | completion_rate | accuracy | f1_macro | f1_weighted |\n|----------:|----------------:|---------:|---------:|------------:|\n",
        rows.len()
    );
    let mut figures = Vec::new();
    for t in [0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99] {
        let kept: Vec<&Row> = rows.iter().filter(|r| r.0 >= t).collect();
        let (m, w) = f1_macro_weighted(labels, &kept);
        let acc = exact(&kept);
        let completion = kept.len() as f64 / support.max(1) as f64;
        text.push_str(&format!(
            "| {t:>9.2} | {completion:>15.4} | {acc:>8.4} | {m:>8.4} | {w:>11.4} |\n"
        ));
        if t == 0.0 {
            figures.push(("accuracy".to_string(), acc));
            figures.push(("f1_macro".to_string(), m));
            figures.push(("f1_weighted".to_string(), w));
        }
    }
    let all: Vec<&Row> = rows.iter().collect();
    let width = labels.iter().map(|l| l.len()).max().unwrap_or(5).max(5);
    text.push_str(&format!(
        "\n| {:<width$} | support | predicted | precision | recall |     f1 |\n",
        "label"
    ));
    for (l, c) in labels.iter().zip(counts(labels, &all)) {
        let (p, r, f) = prf(c);
        text.push_str(&format!(
            "| {l:<width$} | {:>7} | {:>9} | {p:>9.4} | {r:>6.4} | {f:>6.4} |\n",
            c.2, c.1
        ));
    }
    Report {
        text,
        warnings: Vec::new(),
        figures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    /// Figures checked against scikit-learn: with y_true = [[a,b],[b],[c]] and
    /// y_pred = [[a],[b],[b,c]] over classes [a,b,c,d] (MultiLabelBinarizer), f1_score gives
    /// macro 0.625 and weighted 0.75, accuracy_score 1/3; on the first two rows macro
    /// 0.4166667, weighted 0.7777778, accuracy 0.5.
    #[test]
    fn matches_scikit_learn() {
        let labels = v(&["a", "b", "c", "d"]);
        let rows: Vec<Row> = vec![
            (0.9, v(&["a", "b"]), v(&["a"])),
            (0.8, v(&["b"]), v(&["b"])),
            (0.2, v(&["c"]), v(&["b", "c"])),
        ];
        let all: Vec<&Row> = rows.iter().collect();
        let (m, w) = f1_macro_weighted(&labels, &all);
        assert!((m - 0.625).abs() < 1e-12, "{m}");
        assert!((w - 0.75).abs() < 1e-12, "{w}");
        let r = report(&labels, &rows, 4);
        assert_eq!(r.figures[0], ("accuracy".into(), 1.0 / 3.0));
        assert!(
            r.text
                .contains("|      0.50 |          0.5000 |   0.5000 |   0.4167 |      0.7778 |"),
            "{}",
            r.text
        );
    }
}
