//! Label selection (Autolabel's `label_selection`): each row is shown, and scored on, only the
//! `label_selection_count` labels whose embeddings are most similar to the row's text.

use crate::config::TaskConfig;
use crate::embeddings::TaskEmbeddings;
use crate::prompt::PromptBuilder;
use anyhow::{bail, Result};
use autolabel_models::embedding::cosine;
use std::collections::HashMap;
use std::sync::Arc;

/// Autolabel's default `label_selection_count`.
pub const DEFAULT_COUNT: usize = 10;

/// Each row's labels (by line number), in the config's label order, when the config turns label
/// selection on; the prompt is set to show each row its own labels.
pub fn select_labels(
    config: &TaskConfig,
    prompt: &mut PromptBuilder,
    notices: &mut Vec<String>,
    embeddings: &mut TaskEmbeddings,
) -> Result<Option<HashMap<u64, Arc<Vec<String>>>>> {
    if config.prompt.label_selection != Some(true) {
        return Ok(None);
    }
    let source = &config.source;
    let Some(labels) = &config.prompt.labels else {
        bail!("{source}: prompt.label_selection needs prompt.labels")
    };
    let names = labels.names();
    // As in Autolabel, a count below 1 means every label.
    let k = match config.prompt.label_selection_count {
        None => DEFAULT_COUNT,
        Some(c) if c < 1 => names.len(),
        Some(c) => c as usize,
    }
    .min(names.len());
    let threshold = config.prompt.label_selection_threshold.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&threshold) {
        bail!("{source}: config key 'prompt.label_selection_threshold' is {threshold}; it is a share of the best label's similarity, between 0 and 1")
    }
    let rows = embeddings.row_count();
    let store = embeddings.store(notices)?;
    let label_vecs = store.embed(&labels.selection_texts())?;
    eprintln!(
        "label selection: embedding {rows} rows with {} to keep each row's {k} most similar of {} labels",
        store.model_name,
        names.len()
    );
    let mut per_row = HashMap::new();
    let mut row_text = HashMap::new();
    for (line, v) in embeddings.rows(notices)? {
        let keep = most_similar(v, &label_vecs, k, threshold);
        let chosen: Vec<String> = (0..names.len())
            .filter(|i| keep.contains(i))
            .map(|i| names[i].clone())
            .collect();
        row_text.insert(*line, (labels.prompt_text_of(&chosen), chosen.len()));
        per_row.insert(*line, Arc::new(chosen));
    }
    prompt.select_labels(row_text);
    Ok(Some(per_row))
}

/// Indices of the `k` labels most similar to `row`, keeping only those whose similarity exceeds
/// `threshold` times the best one's (Autolabel's rule).
fn most_similar(row: &[f32], labels: &[Vec<f32>], k: usize, threshold: f64) -> Vec<usize> {
    let mut scored: Vec<(usize, f32)> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i, cosine(row, l)))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let best = scored.first().map_or(0.0, |s| s.1) as f64;
    let mut keep: Vec<usize> = scored
        .iter()
        .take(k)
        .filter(|(_, s)| *s as f64 > threshold * best)
        .map(|(i, _)| *i)
        .collect();
    if keep.is_empty() {
        // Every similarity is at or below zero: keep the best one rather than none.
        keep.extend(scored.first().map(|s| s.0));
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_most_similar_above_the_threshold_share() {
        let labels = vec![
            vec![1.0, 0.0],
            vec![0.8, 0.6],
            vec![0.0, 1.0],
            vec![-1.0, 0.0],
        ];
        let row = [1.0, 0.0];
        assert_eq!(most_similar(&row, &labels, 2, 0.0), vec![0, 1]);
        assert_eq!(
            most_similar(&row, &labels, 4, 0.0),
            vec![0, 1],
            "similarity 0 and below dropped"
        );
        assert_eq!(most_similar(&row, &labels, 4, 0.9), vec![0]);
        assert_eq!(
            most_similar(&[-1.0, 0.0], &labels[..3], 2, 0.0),
            vec![2],
            "0 similarity is not > 0"
        );
    }
}
