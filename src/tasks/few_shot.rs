//! Few-shot examples from the config (inline or a seed file), chosen for each row by
//! `few_shot_selection` (with local sentence embeddings where the algorithm compares texts).

use super::example_selection::{select, Algorithm, Seeds};
use crate::config::{FewShotExamples, TaskConfig};
use crate::dataset::{Dataset, ReadOptions};
use crate::embeddings::TaskEmbeddings;
use crate::prompt::{placeholders, PromptBuilder};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// One few-shot example: its value for a column name.
type ColumnLookup = Box<dyn Fn(&str) -> Option<String>>;

/// A column's value in a seed example, given the name and the example's raw lookup (lets a
/// task show its answer column in the form it generates).
pub(crate) type Derive<'a> = &'a dyn Fn(&str, &dyn Fn(&str) -> Option<String>) -> Option<String>;

pub(crate) fn add_few_shot_examples(
    config: &TaskConfig,
    data: &Dataset,
    prompt: &mut PromptBuilder,
    notices: &mut Vec<String>,
) -> Result<()> {
    let mut embeddings = TaskEmbeddings::new(config, data, prompt);
    add_derived_few_shot_examples(config, prompt, notices, &mut embeddings, &|name, lookup| {
        lookup(name)
    })
}

/// The seed examples, each with where it came from (for messages).
fn load_examples(
    config: &TaskConfig,
    examples: &FewShotExamples,
) -> Result<(Vec<ColumnLookup>, String)> {
    Ok(match examples {
        FewShotExamples::Inline(list) => (
            list.iter()
                .map(|ex| {
                    let ex = ex.clone();
                    Box::new(move |name: &str| {
                        ex.get(name).map(|v| match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                    }) as ColumnLookup
                })
                .collect(),
            "config key 'prompt.few_shot_examples'".to_string(),
        ),
        FewShotExamples::File(path) => {
            // Relative to the config file, else (as Autolabel does) to the working directory.
            let beside_config = config.base_dir.join(path);
            let full = if beside_config.exists() {
                beside_config
            } else {
                Path::new(path).to_path_buf()
            };
            let opts = ReadOptions {
                delimiter: config.delimiter()?,
                disable_quoting: config.dataset.disable_quoting.unwrap_or(false),
                lossy: false,
            };
            let seed = Dataset::read(&full, &opts).with_context(|| {
                format!(
                    "{}: config key 'prompt.few_shot_examples' names {path}, which cannot be read",
                    config.source
                )
            })?;
            let seed = Arc::new(seed);
            let lookups = (0..seed.rows.len())
                .map(|i| {
                    let seed = seed.clone();
                    Box::new(move |name: &str| seed.value(&seed.rows[i], name).map(String::from))
                        as ColumnLookup
                })
                .collect();
            (lookups, format!("seed file {}", full.display()))
        }
    })
}

/// [`add_few_shot_examples`] with column values rewritten by `derive`.
pub(crate) fn add_derived_few_shot_examples(
    config: &TaskConfig,
    prompt: &mut PromptBuilder,
    notices: &mut Vec<String>,
    embeddings: &mut TaskEmbeddings,
    derive: Derive,
) -> Result<()> {
    let Some(examples) = &config.prompt.few_shot_examples else {
        return Ok(());
    };
    let source = &config.source;
    let algorithm = Algorithm::parse(
        config
            .prompt
            .few_shot_selection
            .as_deref()
            .unwrap_or("fixed"),
        source,
    )?;
    let (rows, origin) = load_examples(config, examples)?;
    // Every column the example template shows must be in every example (the explanation column
    // only when chain of thought shows it).
    let explanation = config.dataset.explanation_column.as_deref();
    let shown = placeholders(prompt.example_template());
    for (i, lookup) in rows.iter().enumerate() {
        let missing: Vec<&String> = shown
            .iter()
            .filter(|c| Some(c.as_str()) != explanation && derive(c, lookup.as_ref()).is_none())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{source}: {origin}: example {} has no {} (the example template shows {}); add {} to the examples or change prompt.example_template",
                i + 1,
                missing.iter().map(|m| format!("'{m}'")).collect::<Vec<_>>().join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                if missing.len() == 1 { "the column" } else { "the columns" },
            )
        }
    }
    // Chain of thought shows each example's explanation before its answer: Autolabel asks for
    // them to be generated first (`generate_explanations`; here `autolabel-local explain`).
    if let Some(column) = explanation
        .filter(|c| config.prompt.chain_of_thought == Some(true) && shown.iter().any(|s| s == c))
    {
        let missing: Vec<String> = rows
            .iter()
            .enumerate()
            .filter(|(_, l)| l(column).is_none_or(|v| v.trim().is_empty()))
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{source}: {origin}: {} of {} examples have no explanation in column '{column}' (dataset.explanation_column; examples {}{}); with prompt.chain_of_thought every example shows its explanation: generate them with `autolabel-local explain --config {source}` or set chain_of_thought to false",
                missing.len(),
                rows.len(),
                missing.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
                if missing.len() > 5 { ", ..." } else { "" }
            )
        }
    }
    let k = config.prompt.few_shot_num.unwrap_or(rows.len());
    if k > rows.len() {
        bail!(
            "{source}: config key 'prompt.few_shot_num' is {k} but {origin} has {} example{}; lower few_shot_num or add examples",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        )
    }
    let labels: Vec<String> = if algorithm.needs_labels() {
        let Some(column) = config.dataset.label_column.as_deref() else {
            bail!("{source}: prompt.few_shot_selection '{}' groups examples by label and needs dataset.label_column", config.prompt.few_shot_selection.as_deref().unwrap_or_default())
        };
        rows.iter()
            .enumerate()
            .map(|(i, l)| {
                l(column).with_context(|| {
                    format!("{source}: {origin}: example {} has no label column '{column}' (dataset.label_column); label every example", i + 1)
                })
            })
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    for lookup in &rows {
        prompt.add_seed_example(|name| derive(name, lookup));
    }
    let num_labels = match &config.prompt.labels {
        Some(l) => l.names().len(),
        None => {
            let mut distinct = labels.clone();
            distinct.sort();
            distinct.dedup();
            distinct.len()
        }
    };
    let mut vectors = Vec::new();
    let mut per_row = HashMap::new();
    if algorithm.needs_embeddings() {
        let seed_texts: Vec<String> = rows.iter().map(|l| embeddings.text(l.as_ref())).collect();
        let rows_to_embed = embeddings.row_count();
        let store = embeddings.store(notices)?;
        vectors = store.embed(&seed_texts)?;
        eprintln!(
            "few-shot selection '{}': embedding {rows_to_embed} rows with {}",
            config
                .prompt
                .few_shot_selection
                .as_deref()
                .unwrap_or_default(),
            store.model_name
        );
        let seeds = Seeds {
            embeddings: &vectors,
            labels: &labels,
            count: rows.len(),
            num_labels,
        };
        for (line, e) in embeddings.rows(notices)? {
            per_row.insert(*line, select(algorithm, k, &seeds, Some(e)));
        }
    }
    let seeds = Seeds {
        embeddings: &vectors,
        labels: &labels,
        count: rows.len(),
        num_labels,
    };
    prompt.select_seeds(select(algorithm, k, &seeds, None), per_row);
    Ok(())
}
