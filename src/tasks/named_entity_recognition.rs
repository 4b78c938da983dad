//! Named-entity recognition, in both of Autolabel's forms: `named_entity_recognition` (labels are
//! the entity types, ground truth a JSON `{"Type": [...]}` or `entity%Type` lines in the label
//! column) and `attribute_extraction` whose attributes are lists of entities (one JSON-list
//! column per type, `{output_dict}` in the template). The answer is generated under a grammar
//! that writes `{"Type": ["entity", ...], ...}` with every type in order and every entity a run
//! of whole words of the input text, so it always parses and every span is in the text.

use super::ner_format::{
    canonical_json, entity_grammar, max_entities, parse_label_column, parse_list_column, text_spans,
};
use super::ner_report;
use super::open::{round6, Answer, Interpreted, OpenTask, Report};
use super::{few_shot, Task};
use crate::config::TaskConfig;
use crate::dataset::{Dataset, Row};
use crate::prompt::{format_template, PromptBuilder};
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;

const TASK_GUIDELINES: &str = "Your job is to extract named entities mentioned in text, and classify them into one of the following {num_labels} categories.\nCategories:\n{labels}\n";
const OUTPUT_GUIDELINES: &str = "You will return the answer as a JSON object with one key per category, in this order: {keys}. The value of each key is the list of the entities of that category, each copied exactly from the text, or an empty list when there are none.";

/// Where the ground truth is.
enum Truth {
    /// One column: JSON `{"Type": [...]}` or `entity%Type` lines.
    LabelColumn(String),
    /// One column per type holding a JSON list of entities.
    TypeColumns,
    None,
}

pub struct NamedEntityRecognition {
    name: String,
    types: Vec<String>,
    text_column: String,
    prompt: PromptBuilder,
    truth: Truth,
    notices: Vec<String>,
}

/// The entity types of an `attribute_extraction` config whose attributes are entity lists.
fn attribute_types(config: &TaskConfig) -> Result<Vec<String>> {
    let src = &config.source;
    let Some(attrs) = config.prompt.attributes.as_ref().and_then(|a| a.as_array()) else {
        bail!("{src}: config key 'prompt.attributes' is missing or not a list; an attribute_extraction task needs its attributes, e.g. [{{\"name\": \"Person\", \"description\": \"...\"}}]")
    };
    let mut types = Vec::new();
    for (i, a) in attrs.iter().enumerate() {
        let Some(name) = a
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.trim().is_empty())
        else {
            bail!("{src}: config key 'prompt.attributes[{i}]' has no 'name'; every attribute needs one")
        };
        // Attributes with options, schemas or other types go to attribute extraction
        // (`attributes::all_entity_lists` decides).
        if types.iter().any(|t| t == name) {
            bail!("{src}: attribute '{name}' appears twice in 'prompt.attributes'")
        }
        types.push(name.to_string());
    }
    if types.is_empty() {
        bail!("{src}: config key 'prompt.attributes' is empty")
    }
    Ok(types)
}

/// `{"attribute": "description", ...}` as Autolabel writes it into `{attribute_json}`.
fn attribute_json(config: &TaskConfig) -> String {
    let mut map = serde_json::Map::new();
    for a in config
        .prompt
        .attributes
        .iter()
        .flat_map(|a| a.as_array())
        .flatten()
    {
        if let Some(n) = a.get("name").and_then(|n| n.as_str()) {
            let d = a.get("description").and_then(|d| d.as_str()).unwrap_or("");
            map.insert(n.into(), d.into());
        }
    }
    serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default()
}

impl NamedEntityRecognition {
    pub fn new(config: &TaskConfig, data: &Dataset) -> Result<Self> {
        let src = &config.source;
        let attribute_form = config.task_type == "attribute_extraction";
        let types = if attribute_form {
            attribute_types(config)?
        } else {
            let labels = config.labels();
            if labels.is_empty() {
                bail!("{src}: config key 'prompt.labels' is missing; a named_entity_recognition task needs its entity types")
            }
            labels
        };
        let Some(template) = config.prompt.example_template.as_deref() else {
            bail!("{src}: config key 'prompt.example_template' is missing; e.g. \"Example: {{example}}\\nOutput: {{label}}\"")
        };
        let Some(text_column) = config.dataset.text_column.clone() else {
            bail!("{src}: config key 'dataset.text_column' is missing; named-entity recognition copies its entities from that column")
        };
        if data.column(&text_column).is_none() {
            bail!(
                "{src}: dataset.text_column '{text_column}' is not a column of {} (its columns: {})",
                data.path.display(),
                data.columns.join(", ")
            )
        }
        let mut notices = Vec::new();
        let label_column = config.dataset.label_column.clone();
        let answer_column = if attribute_form {
            Some("output_dict".to_string())
        } else {
            label_column.clone()
        };
        let truth = if attribute_form {
            let present: Vec<&String> = types.iter().filter(|t| data.column(t).is_some()).collect();
            if present.len() == types.len() {
                Truth::TypeColumns
            } else {
                if !present.is_empty() {
                    notices.push(format!(
                        "only some attribute columns are in {} ({}); no metrics will be reported",
                        data.path.display(),
                        present
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                Truth::None
            }
        } else {
            match &label_column {
                Some(c) if data.column(c).is_some() => Truth::LabelColumn(c.clone()),
                Some(_) => {
                    notices.extend(super::missing_label_column(
                        data,
                        label_column.as_deref(),
                        "metrics",
                    ));
                    Truth::None
                }
                None => Truth::None,
            }
        };
        let blank: Vec<String> = answer_column
            .iter()
            .chain(config.dataset.explanation_column.iter())
            .cloned()
            .collect();
        let keys = types
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let attr_json = attribute_json(config);
        let output = format_template(
            config
                .prompt
                .output_guidelines
                .as_deref()
                .unwrap_or(OUTPUT_GUIDELINES),
            |n| match n {
                "keys" => Some(keys.clone()),
                "attribute_json" => Some(attr_json.clone()),
                _ => None,
            },
        );
        let mut prompt = PromptBuilder::new(
            config
                .prompt
                .task_guidelines
                .as_deref()
                .unwrap_or(TASK_GUIDELINES),
            &output,
            template,
            &types,
            blank,
        );
        prompt.check_columns(&data.columns, &data.path.display().to_string())?;
        // Seed examples show their answer in the form the model writes.
        let types_for_seed = types.clone();
        let derive = move |name: &str, lookup: &dyn Fn(&str) -> Option<String>| -> Option<String> {
            if answer_column.as_deref() != Some(name) {
                return lookup(name);
            }
            let entities: Vec<(String, Vec<String>)> = if name == "output_dict" && attribute_form {
                types_for_seed
                    .iter()
                    .map(|t| {
                        (
                            t.clone(),
                            parse_list_column(&lookup(t).unwrap_or_default()).unwrap_or_default(),
                        )
                    })
                    .collect()
            } else {
                parse_label_column(&lookup(name).unwrap_or_default()).unwrap_or_default()
            };
            Some(canonical_json(&types_for_seed, &entities))
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
            notices.push("prompt.chain_of_thought is ignored: entities are generated directly under a grammar".into());
        }
        Ok(NamedEntityRecognition {
            name: config.task_name.clone(),
            types,
            text_column,
            prompt,
            truth,
            notices,
        })
    }

    /// The ground-truth entities of a row (`None`: no ground truth; `Err`: unreadable).
    fn truth_of(&self, data: &Dataset, row: &Row) -> Option<Result<Vec<(String, String)>, String>> {
        let flatten = |v: Vec<(String, Vec<String>)>| {
            v.into_iter()
                .flat_map(|(k, l)| l.into_iter().map(move |e| (k.clone(), e)))
                .collect()
        };
        match &self.truth {
            Truth::None => None,
            Truth::LabelColumn(c) => Some(
                parse_label_column(data.value(row, c).unwrap_or(""))
                    .map(flatten)
                    .map_err(|e| format!("line {}: column '{c}': {e}", row.line)),
            ),
            Truth::TypeColumns => {
                let mut all = Vec::new();
                for t in &self.types {
                    match parse_list_column(data.value(row, t).unwrap_or("")) {
                        Ok(l) => all.push((t.clone(), l)),
                        Err(e) => {
                            return Some(Err(format!("line {}: column '{t}': {e}", row.line)))
                        }
                    }
                }
                Some(Ok(flatten(all)))
            }
        }
    }
}

impl Task for NamedEntityRecognition {
    fn name(&self) -> &str {
        &self.name
    }

    fn prompt_builder(&self) -> &PromptBuilder {
        &self.prompt
    }
    fn ground_truth(&self, data: &Dataset, row: &Row) -> Option<String> {
        match self.truth_of(data, row)? {
            Ok(pairs) => {
                let mut by_type: Vec<(String, Vec<String>)> = Vec::new();
                for (k, e) in pairs {
                    match by_type.iter_mut().find(|(t, _)| *t == k) {
                        Some((_, l)) => l.push(e),
                        None => by_type.push((k, vec![e])),
                    }
                }
                Some(canonical_json(&self.types, &by_type))
            }
            Err(_) => None,
        }
    }
    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }
    fn open(&self) -> Option<&dyn OpenTask> {
        Some(self)
    }
}

impl OpenTask for NamedEntityRecognition {
    fn grammar(&self, data: &Dataset, row: &Row) -> Result<Grammar, String> {
        let text = data.value(row, &self.text_column).unwrap_or("");
        Ok(Grammar::Lark(entity_grammar(&self.types, text)))
    }

    fn max_answer_tokens(&self, data: &Dataset, row: &Row, input_tokens: usize) -> usize {
        // Room for the longest answer a model would write in practice: the JSON frame, and per
        // type as many entities as the grammar allows at a few tokens each (a model that keeps
        // listing reaches the grammar's cap and ends instead of being cut off).
        let text = data.value(row, &self.text_column).unwrap_or("");
        let per_type = max_entities(text);
        2 * input_tokens + self.types.len() * (8 + 6 * per_type) + 16
    }

    fn interpret(&self, data: &Dataset, row: &Row, answer: &Answer) -> Result<Interpreted, String> {
        let text = data.value(row, &self.text_column).unwrap_or("");
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&answer.text)
            .map_err(|e| {
                format!(
                    "line {}: the answer is not JSON ({e}): {}",
                    row.line, answer.text
                )
            })?;
        let mut by_type: Vec<(String, Vec<String>)> = Vec::new();
        let mut pairs = Vec::new();
        let mut confidences = Vec::new();
        let mut cursor = 0;
        for t in &self.types {
            let mut list = Vec::new();
            let key = format!("{}: [", serde_json::to_string(t).unwrap_or_default());
            if let Some(p) = answer.text[cursor..].find(&key) {
                cursor += p + key.len();
            }
            for e in parsed
                .get(t)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let e = e.as_str().unwrap_or_default().to_string();
                let quoted = serde_json::to_string(&e).unwrap_or_default();
                let lp = match answer.text[cursor..].find(&quoted) {
                    Some(p) => {
                        let (s, end) = (cursor + p + 1, cursor + p + quoted.len() - 1);
                        cursor += p + quoted.len();
                        answer.logprob_of_bytes(s, end)
                    }
                    None => 0.0,
                };
                // A run of chunks may start or end with the text's whitespace: the entity is
                // the words, as in the ground truth.
                let e = e.trim().to_string();
                if e.is_empty() {
                    continue;
                }
                list.push(e.clone());
                pairs.push((t.clone(), e));
                confidences.push((lp as f64).exp());
            }
            by_type.push((t.clone(), list));
        }
        let spans = text_spans(text, &pairs);
        let detail: Vec<serde_json::Value> = spans
            .iter()
            .zip(&pairs)
            .zip(&confidences)
            .map(|((s, (_, e)), c)| {
                serde_json::json!({"type": s.label, "text": e, "start": s.start, "end": s.end, "confidence": round6(*c)})
            })
            .collect();
        let detail = serde_json::Value::Array(detail);
        Ok(Interpreted {
            label: canonical_json(&self.types, &by_type),
            confidence: answer.mean_token_probability(),
            extra: vec![detail.to_string()],
            detail,
        })
    }

    fn given_answer(&self, _: &Dataset, row: &Row, given: &str) -> Result<String, String> {
        // Autolabel's output files hold a dict label as Python writes it.
        let json = match super::python_literal::json_or_python(given) {
            Some(v @ serde_json::Value::Object(_)) => v.to_string(),
            _ => given.to_string(),
        };
        let entities = parse_label_column(&json).map_err(|e| format!("line {}: {e}", row.line))?;
        if let Some((t, _)) = entities.iter().find(|(t, _)| !self.types.contains(t)) {
            return Err(format!(
                "line {}: the given label has type '{t}', which is not one of the entity types ({})",
                row.line,
                self.types.join(", ")
            ));
        }
        Ok(canonical_json(&self.types, &entities))
    }

    fn extra_columns(&self) -> Vec<String> {
        vec!["entities".into()]
    }

    fn report(&self, data: &Dataset, answers: &[Option<Interpreted>]) -> Option<Report> {
        if matches!(self.truth, Truth::None) {
            return None;
        }
        let rows = data.rows.iter().zip(answers).filter_map(|(row, answer)| {
            let truth = self.truth_of(data, row)?;
            let text = data.value(row, &self.text_column).unwrap_or("");
            Some((row.line, text, truth, answer.as_ref().map(|a| &a.detail)))
        });
        Some(ner_report::report(&self.types, rows))
    }

    fn unit(&self) -> &'static str {
        "entity"
    }

    fn outcomes(
        &self,
        data: &Dataset,
        row: &Row,
        answer: &Interpreted,
    ) -> Option<Vec<(f64, bool)>> {
        let truth = self.truth_of(data, row)?.ok()?;
        let text = data.value(row, &self.text_column).unwrap_or("");
        let gold = text_spans(text, &truth);
        Some(
            ner_report::predicted(&answer.detail)
                .into_iter()
                .map(|(span, p)| (p, span.start >= 0 && gold.contains(&span)))
                .collect(),
        )
    }

    fn below_threshold_note(&self) -> &'static str {
        r#"entities below it are left out of the label and kept in the entities column with "confident": false"#
    }

    fn apply_calibration(
        &self,
        answer: &mut Interpreted,
        calibrated: &dyn Fn(f64) -> f64,
        threshold: Option<f64>,
    ) -> bool {
        let mut all = true;
        let mut by_type: Vec<(String, Vec<String>)> =
            self.types.iter().map(|t| (t.clone(), Vec::new())).collect();
        for e in answer.detail.as_array_mut().into_iter().flatten() {
            let p = e["confidence"].as_f64().unwrap_or(0.0);
            let c = calibrated(p);
            e["probability"] = p.into();
            e["confidence"] = round6(c).into();
            if let Some(t) = threshold {
                let keep = c as f32 >= t as f32;
                e["confident"] = keep.into();
                all &= keep;
                if !keep {
                    continue;
                }
            }
            let ty = e["type"].as_str().unwrap_or_default();
            if let Some((_, l)) = by_type.iter_mut().find(|(t, _)| t == ty) {
                l.push(e["text"].as_str().unwrap_or_default().to_string());
            }
        }
        answer.label = canonical_json(&self.types, &by_type);
        answer.extra = vec![answer.detail.to_string()];
        all
    }
}
