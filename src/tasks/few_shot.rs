//! Few-shot examples from the config (inline or a seed file), chosen by `few_shot_selection`.

use crate::config::{FewShotExamples, TaskConfig};
use crate::dataset::{Dataset, ReadOptions};
use crate::prompt::PromptBuilder;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// One few-shot example: its value for a column name.
type ColumnLookup = Box<dyn Fn(&str) -> Option<String>>;

/// A column's value in a seed example, given the name and the example's raw lookup (lets a
/// task show its answer column in the form it generates).
pub(crate) type Derive<'a> = &'a dyn Fn(&str, &dyn Fn(&str) -> Option<String>) -> Option<String>;

pub(crate) fn add_few_shot_examples(
    config: &TaskConfig,
    prompt: &mut PromptBuilder,
    notices: &mut Vec<String>,
) -> Result<()> {
    add_derived_few_shot_examples(config, prompt, notices, &|name, lookup| lookup(name))
}

/// [`add_few_shot_examples`] with column values rewritten by `derive`.
pub(crate) fn add_derived_few_shot_examples(
    config: &TaskConfig,
    prompt: &mut PromptBuilder,
    notices: &mut Vec<String>,
    derive: Derive,
) -> Result<()> {
    let Some(examples) = &config.prompt.few_shot_examples else {
        return Ok(());
    };
    let selection = config
        .prompt
        .few_shot_selection
        .as_deref()
        .unwrap_or("fixed");
    let rows: Vec<ColumnLookup> = match examples {
        FewShotExamples::Inline(list) => list
            .iter()
            .map(|ex| {
                let ex = ex.clone();
                Box::new(move |name: &str| {
                    ex.get(name).map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                }) as Box<dyn Fn(&str) -> Option<String>>
            })
            .collect(),
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
            (0..seed.rows.len())
                .map(|i| {
                    let seed = seed.clone();
                    Box::new(move |name: &str| seed.value(&seed.rows[i], name).map(String::from))
                        as Box<dyn Fn(&str) -> Option<String>>
                })
                .collect()
        }
    };
    let n = config
        .prompt
        .few_shot_num
        .unwrap_or(rows.len())
        .min(rows.len());
    if selection != "fixed" {
        notices.push(format!(
            "prompt.few_shot_selection '{selection}' is not implemented yet; using the first {n} examples (fixed selection)"
        ));
    }
    for lookup in rows.iter().take(n) {
        prompt.add_seed_example(|name| derive(name, lookup));
    }
    Ok(())
}
