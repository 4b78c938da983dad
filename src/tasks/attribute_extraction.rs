//! Attribute extraction (Autolabel's `attribute_extraction` with options, types or schemas):
//! the answer `{"name": value, ...}` is generated under one grammar built from the attributes
//! (options as alternatives, multi-label options as ordered subsets, entities and spans as runs
//! of the text, free text on one line, JSON schemas through llguidance), so every answer parses
//! and every value is allowed. Each attribute gets its own value column and confidence (the
//! geometric mean of its value's token probabilities, Autolabel's `logprob_average_per_key`),
//! metrics per attribute and a threshold table over all values. Configs whose attributes are all
//! plain entity lists run as named-entity recognition instead (span-level metrics).

use super::attribute_values::{
    answer_grammar, cell_text, empty_value, json_text, key_text, python_json, read_truth,
    same_value, tidy, value_budget,
};
use super::attributes::{attribute_json, parse_attributes, Attribute, Kind};
use super::open::{round6, Answer, Interpreted, OpenTask, Report};
use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::{format_template, PromptBuilder};
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;
use serde_json::{json, Value};

const TASK_GUIDELINES: &str = "You are an expert at extracting attributes from text. Given a piece of text, extract the required attributes.";
const OUTPUT_GUIDELINES: &str = "You will return the extracted attributes as a json with the following keys:\n{attribute_json}.\nWrite every key, in this order; a key with nothing to extract gets an empty value.";
/// The template placeholder the answer goes in (Autolabel's `OUTPUT_DICT_KEY`).
pub const OUTPUT_DICT: &str = "output_dict";

pub struct AttributeExtraction {
    name: String,
    pub(super) attributes: Vec<Attribute>,
    separator: String,
    /// The column entities and spans are copied from.
    text_column: Option<String>,
    /// Attributes whose ground truth the data has (a column named after the attribute).
    pub(super) truth_columns: Vec<bool>,
    prompt: PromptBuilder,
    notices: Vec<String>,
}

impl AttributeExtraction {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        let src = &config.source;
        let separator = config
            .dataset
            .label_separator
            .clone()
            .unwrap_or_else(|| super::multilabel::DEFAULT_SEPARATOR.into());
        if separator.trim().is_empty() {
            bail!("{src}: config key 'dataset.label_separator' is {separator:?}; it must contain a visible character (e.g. \";\")")
        }
        let attributes = parse_attributes(config, &separator)?;
        let text_column = config.dataset.text_column.clone();
        if let Some(c) = &text_column {
            if data.column(c).is_none() {
                bail!(
                    "{src}: dataset.text_column '{c}' is not a column of {} (its columns: {})",
                    data.path.display(),
                    data.columns.join(", ")
                )
            }
        } else if let Some(a) = attributes.iter().find(|a| a.kind.needs_text()) {
            bail!("{src}: config key 'dataset.text_column' is missing; attribute '{}' ({}) is copied from that column", a.name, a.kind.name())
        }
        let Some(template) = config.prompt.example_template.as_deref() else {
            bail!("{src}: config key 'prompt.example_template' is missing; e.g. \"Text: {{text}}\\nOutput: {{output_dict}}\"")
        };
        let blank: Vec<String> = std::iter::once(OUTPUT_DICT.to_string())
            .chain(config.dataset.explanation_column.iter().cloned())
            .collect();
        let attr_json = attribute_json(&attributes, &separator);
        let output = format_template(
            config
                .prompt
                .output_guidelines
                .as_deref()
                .unwrap_or(OUTPUT_GUIDELINES),
            |n| (n == "attribute_json").then(|| attr_json.clone()),
        );
        let mut prompt = PromptBuilder::new(
            config
                .prompt
                .task_guidelines
                .as_deref()
                .unwrap_or(TASK_GUIDELINES),
            &output,
            template,
            &[],
            blank,
        );
        prompt.check_columns(&data.columns, &data.path.display().to_string())?;
        let truth_columns: Vec<bool> = attributes
            .iter()
            .map(|a| data.column(&a.name).is_some())
            .collect();
        let mut notices = Vec::new();
        if truth_columns.iter().any(|&t| t) && !truth_columns.iter().all(|&t| t) {
            let missing: Vec<&str> = attributes
                .iter()
                .zip(&truth_columns)
                .filter(|(_, t)| !**t)
                .map(|(a, _)| a.name.as_str())
                .collect();
            notices.push(format!(
                "{} has no column for attribute{} {}; no metrics for {}",
                data.path.display(),
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            ));
        }
        // Seed examples show their answer in the form the model writes (the grammar's: every
        // attribute, non-ASCII as it is), its value read from the example's column of that name.
        let (attrs, sep) = (attributes.clone(), separator.clone());
        let derive = move |name: &str, lookup: &dyn Fn(&str) -> Option<String>| -> Option<String> {
            if name != OUTPUT_DICT {
                return lookup(name);
            }
            let mut obj = serde_json::Map::new();
            for a in &attrs {
                let cell = lookup(&a.name).unwrap_or_default();
                let value = match read_truth(a, &cell, &sep) {
                    Some(Ok(v)) => v,
                    Some(Err(_)) => return None,
                    None => empty_value(&a.kind)?,
                };
                obj.insert(a.name.clone(), value);
            }
            Some(json_text(&Value::Object(obj)))
        };
        let mut embeddings = crate::embeddings::TaskEmbeddings::new(config, data, &prompt);
        few_shot::add_derived_few_shot_examples(
            config,
            &mut prompt,
            &mut notices,
            &mut embeddings,
            &derive,
        )?;
        if config.prompt.chain_of_thought == Some(true) {
            notices.push("prompt.chain_of_thought is ignored: the attributes are generated directly under their grammar".into());
        }
        if config.prompt.label_selection == Some(true) {
            notices.push("prompt.label_selection is ignored: every option can be chosen".into());
        }
        Ok(AttributeExtraction {
            name: config.task_name.clone(),
            attributes,
            separator,
            text_column,
            truth_columns,
            prompt,
            notices,
        })
    }

    fn text<'d>(&self, data: &'d Dataset, row: &'d Row) -> &'d str {
        self.text_column
            .as_deref()
            .and_then(|c| data.value(row, c))
            .unwrap_or("")
    }

    /// Attribute `i`'s ground truth in a row (None: no column or an empty cell).
    pub(super) fn truth(
        &self,
        data: &Dataset,
        row: &Row,
        i: usize,
    ) -> Option<Result<Value, String>> {
        if !self.truth_columns[i] {
            return None;
        }
        let a = &self.attributes[i];
        read_truth(a, data.value(row, &a.name).unwrap_or(""), &self.separator)
            .map(|r| r.map_err(|e| format!("line {}: column '{}': {e}", row.line, a.name)))
    }

    /// The values and confidences of an interpreted answer, in attribute order.
    pub(super) fn values(answer: &Interpreted) -> Vec<(Value, f64)> {
        answer
            .detail
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| (d["value"].clone(), d["confidence"].as_f64().unwrap_or(0.0)))
            .collect()
    }

    fn cells(&self, detail: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for d in detail.as_array().into_iter().flatten() {
            out.push(cell_text(&d["value"]));
            out.push(d["confidence"].as_f64().unwrap_or(0.0).to_string());
        }
        out
    }
}

impl Task for AttributeExtraction {
    fn name(&self) -> &str {
        &self.name
    }
    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        let mut obj = serde_json::Map::new();
        for (i, a) in self.attributes.iter().enumerate() {
            if let Some(Ok(v)) = self.truth(data, row, i) {
                obj.insert(a.name.clone(), v);
            }
        }
        (!obj.is_empty()).then(|| python_json(&Value::Object(obj)))
    }
    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }
    fn open(&self) -> Option<&dyn OpenTask> {
        Some(self)
    }
}

impl OpenTask for AttributeExtraction {
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String> {
        let text = self.text(data, row);
        if text.trim().is_empty() && self.attributes.iter().any(|a| a.kind.needs_text()) {
            return Err(format!(
                "line {}: the text column '{}' is empty",
                row.line,
                self.text_column.as_deref().unwrap_or_default()
            ));
        }
        Ok(Grammar::Lark(answer_grammar(
            &self.attributes,
            &self.separator,
            text,
        )))
    }

    fn max_answer_tokens(&self, data: &Dataset, row: &Row, input_tokens: usize) -> usize {
        let text = self.text(data, row);
        self.attributes
            .iter()
            .map(|a| a.name.len() + 4 + value_budget(&a.kind, text, input_tokens))
            .sum::<usize>()
            + 4
    }

    fn interpret(&self, _: &Dataset, row: &Row, answer: &Answer) -> Result<Interpreted, String> {
        let text = answer.text.as_str();
        let broken = |what: &str| {
            format!(
                "line {}: the answer does not have the grammar's form ({what}): {text}",
                row.line
            )
        };
        let mut pos = 1;
        if !text.starts_with('{') {
            return Err(broken("no opening brace"));
        }
        let mut label = serde_json::Map::new();
        let mut detail = Vec::new();
        for (i, a) in self.attributes.iter().enumerate() {
            let key = key_text(i, &a.name);
            if !text[pos..].starts_with(&key) {
                return Err(broken(&format!("no key '{}'", a.name)));
            }
            pos += key.len();
            let mut stream = serde_json::Deserializer::from_str(&text[pos..]).into_iter::<Value>();
            let value = match stream.next() {
                Some(Ok(v)) => v,
                _ => return Err(broken(&format!("no value for '{}'", a.name))),
            };
            let end = pos + stream.byte_offset();
            let p = answer.mean_probability_of_bytes(pos, end).unwrap_or(1.0);
            pos = end;
            let value = tidy(&a.kind, value);
            label.insert(a.name.clone(), value.clone());
            detail.push(json!({"attribute": a.name, "value": value, "confidence": round6(p)}));
        }
        let detail = Value::Array(detail);
        Ok(Interpreted {
            label: python_json(&Value::Object(label)),
            confidence: answer.mean_token_probability(),
            extra: self.cells(&detail),
            detail,
        })
    }

    fn given_answer(&self, data: &Dataset, row: &Row, given: &str) -> Result<String, String> {
        let line = row.line;
        // Autolabel's output files hold the label as Python writes a dict.
        let Some(Value::Object(obj)) = super::python_literal::json_or_python(given) else {
            return Err(format!(
                "line {line}: the given label is not a JSON object {{\"attribute\": value, ...}} (or a Python dict as Autolabel's output files hold it)"
            ));
        };
        if let Some(k) = obj
            .keys()
            .find(|k| !self.attributes.iter().any(|a| &a.name == *k))
        {
            return Err(format!(
                "line {line}: the given label has the key '{k}', which is not an attribute"
            ));
        }
        let text = self.text(data, row);
        let mut answer = serde_json::Map::new();
        for a in &self.attributes {
            let value = match obj.get(&a.name) {
                None | Some(Value::Null) => empty_value(&a.kind).ok_or_else(|| {
                    format!("line {line}: the given label has no value for '{}'", a.name)
                })?,
                Some(v) => {
                    let cell = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    match read_truth(a, &cell, &self.separator) {
                        Some(Ok(v)) => v,
                        Some(Err(e)) => return Err(format!("line {line}: {e}")),
                        None => tidy(&a.kind, v.clone()),
                    }
                }
            };
            let outside = match (&a.kind, &value) {
                (Kind::Span, Value::String(s)) => (!text.contains(s.as_str())).then(|| s.clone()),
                (Kind::Entities, Value::Array(items)) => items
                    .iter()
                    .filter_map(|e| e.as_str())
                    .find(|e| !text.contains(e))
                    .map(String::from),
                _ => None,
            };
            if let Some(s) = outside {
                return Err(format!(
                    "line {line}: the given value {s:?} of '{}' is not in the text",
                    a.name
                ));
            }
            answer.insert(a.name.clone(), value);
        }
        Ok(json_text(&Value::Object(answer)))
    }

    fn extra_columns(&self) -> Vec<String> {
        Vec::new()
    }

    fn plain_columns(&self) -> Vec<String> {
        self.attributes
            .iter()
            .flat_map(|a| {
                [
                    format!("{}_label", a.name),
                    format!("{}_confidence", a.name),
                ]
            })
            .collect()
    }

    fn report(&self, data: &Dataset, answers: &[Option<Interpreted>]) -> Option<Report> {
        super::attribute_report::report(self, data, answers)
    }

    fn unit(&self) -> &'static str {
        "value"
    }

    fn outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        let judged = self.grouped_outcomes(data, row, answer)?;
        Some(judged.into_iter().map(|(_, p, ok)| (p, ok)).collect())
    }

    fn unit_groups(&self) -> Vec<String> {
        self.attributes.iter().map(|a| a.name.clone()).collect()
    }

    fn grouped_outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(usize, f64, bool)>> {
        let values = Self::values(answer);
        let judged: Vec<(usize, f64, bool)> = self
            .attributes
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let truth = self.truth(data, row, i)?.ok()?;
                let (v, p) = values.get(i)?;
                Some((i, *p, same_value(&a.kind, &truth, v)))
            })
            .collect();
        (!judged.is_empty()).then_some(judged)
    }

    fn below_threshold_note(&self) -> &'static str {
        "values below it stay in the label and their <name>_label column; the row gets confidently_labeled = False"
    }

    fn apply_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        self.apply_group_calibration(answer, &|_, p| calibrated(p), threshold)
    }

    fn apply_group_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(usize, f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        let mut all = true;
        for (i, d) in answer
            .detail
            .as_array_mut()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let p = d["confidence"].as_f64().unwrap_or(0.0);
            let c = calibrated(i, p);
            d["probability"] = p.into();
            d["confidence"] = round6(c).into();
            if let Some(t) = threshold {
                let keep = c as f32 >= t as f32;
                d["confident"] = keep.into();
                all &= keep;
            }
        }
        answer.extra = self.cells(&answer.detail);
        all
    }
}
