//! Autolabel's few-shot selection algorithms over seed examples: which examples (indices into
//! the seed set, in prompt order) each row is shown.

use anyhow::{bail, Result};
use autolabel_models::embedding::cosine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The first `few_shot_num` examples, for every row.
    Fixed,
    /// The `few_shot_num` examples most similar to the row.
    SemanticSimilarity,
    /// Maximal marginal relevance (lambda 0.5) among the min(100, 5k) most similar.
    MaxMarginalRelevance,
    /// The first ceil(k / labels) examples of each label, labels in sorted order (Autolabel's
    /// rule: despite the name, no randomness).
    LabelDiversityRandom,
    /// The ceil(k / labels) most similar examples of each label, labels in sorted order.
    LabelDiversitySimilarity,
}

pub const ALGORITHMS: &[&str] = &[
    "fixed",
    "semantic_similarity",
    "max_marginal_relevance",
    "label_diversity_random",
    "label_diversity_similarity",
];

impl Algorithm {
    pub fn parse(name: &str, source: &str) -> Result<Self> {
        Ok(match name {
            "fixed" => Algorithm::Fixed,
            "semantic_similarity" => Algorithm::SemanticSimilarity,
            "max_marginal_relevance" => Algorithm::MaxMarginalRelevance,
            "label_diversity_random" => Algorithm::LabelDiversityRandom,
            "label_diversity_similarity" => Algorithm::LabelDiversitySimilarity,
            other => bail!(
                "{source}: config key 'prompt.few_shot_selection' is '{other}'; use one of {}",
                ALGORITHMS.join(", ")
            ),
        })
    }

    pub fn needs_embeddings(self) -> bool {
        matches!(
            self,
            Algorithm::SemanticSimilarity
                | Algorithm::MaxMarginalRelevance
                | Algorithm::LabelDiversitySimilarity
        )
    }

    pub fn needs_labels(self) -> bool {
        matches!(
            self,
            Algorithm::LabelDiversityRandom | Algorithm::LabelDiversitySimilarity
        )
    }

    /// The same examples for every row (no per-row choice).
    pub fn is_static(self) -> bool {
        matches!(self, Algorithm::Fixed | Algorithm::LabelDiversityRandom)
    }
}

/// The seed set the algorithms choose from.
pub struct Seeds<'a> {
    /// Normalised embeddings (empty when the algorithm needs none).
    pub embeddings: &'a [Vec<f32>],
    /// Each example's label (empty when the algorithm needs none).
    pub labels: &'a [String],
    pub count: usize,
    /// Labels of the task (for the per-label share ceil(k / labels)).
    pub num_labels: usize,
}

/// Indices of the seeds most similar to `query`, most similar first (ties: lower index first).
fn ranked(query: &[f32], embeddings: &[Vec<f32>], among: &[usize]) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = among
        .iter()
        .map(|&i| (i, cosine(query, &embeddings[i])))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
}

/// The examples of each label (labels sorted, each label's examples in seed order).
fn by_label(labels: &[String]) -> Vec<Vec<usize>> {
    let mut names: Vec<&String> = labels.iter().collect();
    names.sort();
    names.dedup();
    names
        .iter()
        .map(|n| (0..labels.len()).filter(|&i| &labels[i] == *n).collect())
        .collect()
}

/// The `k` examples for a row whose embedding is `query` (None for a static algorithm).
pub fn select(algorithm: Algorithm, k: usize, seeds: &Seeds, query: Option<&[f32]>) -> Vec<usize> {
    let all: Vec<usize> = (0..seeds.count).collect();
    let per_label = k.div_ceil(seeds.num_labels.max(1));
    if algorithm == Algorithm::LabelDiversityRandom {
        return by_label(seeds.labels)
            .into_iter()
            .flat_map(|g| g.into_iter().take(per_label))
            .take(k)
            .collect();
    }
    let Some(q) = query.filter(|_| algorithm != Algorithm::Fixed) else {
        return all.into_iter().take(k).collect();
    };
    match algorithm {
        Algorithm::MaxMarginalRelevance => {
            let fetch_k = (5 * k).clamp(k, 100.max(k));
            let pool: Vec<(usize, f32)> = ranked(q, seeds.embeddings, &all)
                .into_iter()
                .take(fetch_k)
                .collect();
            mmr(&pool, seeds.embeddings, k, 0.5)
        }
        Algorithm::LabelDiversitySimilarity => by_label(seeds.labels)
            .into_iter()
            .flat_map(|g| {
                ranked(q, seeds.embeddings, &g)
                    .into_iter()
                    .take(per_label)
                    .map(|(i, _)| i)
            })
            .take(k)
            .collect(),
        _ => ranked(q, seeds.embeddings, &all)
            .into_iter()
            .take(k)
            .map(|(i, _)| i)
            .collect(),
    }
}

/// LangChain's maximal_marginal_relevance: the most similar first, then repeatedly the one that
/// maximises lambda * similarity to the query - (1 - lambda) * its largest similarity to a chosen one.
fn mmr(pool: &[(usize, f32)], embeddings: &[Vec<f32>], k: usize, lambda: f32) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    let mut left: Vec<(usize, f32)> = pool.to_vec();
    while chosen.len() < k && !left.is_empty() {
        let (best, _) = left
            .iter()
            .enumerate()
            .map(|(j, &(i, sim))| {
                let redundancy = chosen
                    .iter()
                    .map(|&c| cosine(&embeddings[i], &embeddings[c]))
                    .fold(f32::NEG_INFINITY, f32::max);
                let redundancy = if chosen.is_empty() { 0.0 } else { redundancy };
                (j, lambda * sim - (1.0 - lambda) * redundancy)
            })
            .fold((0, f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
        chosen.push(left.remove(best).0);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(x: f32, y: f32) -> Vec<f32> {
        let n = (x * x + y * y).sqrt();
        vec![x / n, y / n]
    }

    #[test]
    fn each_algorithm_follows_autolabel() {
        // Seeds 0 and 1 are near-duplicates close to the query, 2 is a bit further in another
        // direction, 3 is far.
        let emb = vec![
            unit(1.0, 0.05),
            unit(1.0, 0.06),
            unit(1.0, -0.5),
            unit(0.0, 1.0),
        ];
        let labels: Vec<String> = ["b", "b", "a", "a"].iter().map(|s| s.to_string()).collect();
        let seeds = Seeds {
            embeddings: &emb,
            labels: &labels,
            count: 4,
            num_labels: 2,
        };
        let q = unit(1.0, 0.0);
        let pick = |a| select(a, 2, &seeds, Some(&q));
        assert_eq!(pick(Algorithm::Fixed), vec![0, 1]);
        assert_eq!(pick(Algorithm::SemanticSimilarity), vec![0, 1]);
        // MMR skips the near-duplicate for the more different seed 2.
        assert_eq!(pick(Algorithm::MaxMarginalRelevance), vec![0, 2]);
        // One per label, labels sorted ("a" first): the first "a" and the first "b".
        assert_eq!(pick(Algorithm::LabelDiversityRandom), vec![2, 0]);
        // One per label, the most similar of each.
        assert_eq!(pick(Algorithm::LabelDiversitySimilarity), vec![2, 0]);
        let far = unit(0.0, 1.0);
        assert_eq!(
            select(Algorithm::LabelDiversitySimilarity, 2, &seeds, Some(&far)),
            vec![3, 1]
        );
        assert_eq!(
            select(Algorithm::SemanticSimilarity, 3, &seeds, Some(&far))[0],
            3
        );
        // Rows with no embedding (content-free inputs) get the fixed choice.
        assert_eq!(
            select(Algorithm::SemanticSimilarity, 2, &seeds, None),
            vec![0, 1]
        );
    }
}
