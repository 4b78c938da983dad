//! Autolabel's JSON task config, read so that Autolabel's own configs run unchanged.
//!
//! Unknown keys are rejected with the full key path and the closest known key; type errors name
//! the key path too.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
pub struct TaskConfig {
    pub task_name: String,
    pub task_type: String,
    #[serde(default)]
    pub dataset: DatasetConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub embedding: Option<Value>,
    pub prompt: PromptConfig,
    /// Directory of the config file; relative paths inside the config resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
    #[serde(skip)]
    pub source: String,
    /// Autolabel keys the config has that this tool does not use (full paths), for a notice.
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DatasetConfig {
    pub label_column: Option<String>,
    pub label_separator: Option<String>,
    pub text_column: Option<String>,
    pub delimiter: Option<String>,
    pub explanation_column: Option<String>,
    pub image_url_column: Option<String>,
    pub input_columns: Option<Vec<String>>,
    pub disable_quoting: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelConfig {
    pub provider: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub params: Option<Value>,
    pub compute_confidence: Option<bool>,
    pub logit_bias: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PromptConfig {
    pub task_guidelines: Option<String>,
    pub output_guidelines: Option<String>,
    #[serde(default)]
    pub labels: Option<Labels>,
    pub example_template: Option<String>,
    pub few_shot_examples: Option<FewShotExamples>,
    pub few_shot_selection: Option<String>,
    pub few_shot_num: Option<usize>,
    pub chain_of_thought: Option<bool>,
    pub label_selection: Option<bool>,
    pub label_selection_count: Option<i64>,
    pub label_selection_threshold: Option<f64>,
    pub attributes: Option<Value>,
    pub json_mode: Option<bool>,
    /// `multilabel_classification`: how each label's probability is found (`membership`: every
    /// label judged yes/no and scored exactly; `subset`: the label subset generated).
    pub multilabel_method: Option<String>,
}

/// Autolabel accepts a list of labels or a map of label to description (kept in the config's
/// order: the order decides the prompt's label list and the output's).
#[derive(Debug, Clone)]
pub enum Labels {
    List(Vec<String>),
    Described(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for Labels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct LabelsVisitor;
        impl<'de> serde::de::Visitor<'de> for LabelsVisitor {
            type Value = Labels;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of labels or an object mapping each label to its description")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Labels, A::Error> {
                let mut v = Vec::new();
                while let Some(l) = seq.next_element::<String>()? {
                    v.push(l);
                }
                Ok(Labels::List(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Labels, A::Error> {
                let mut v = Vec::new();
                while let Some((k, d)) = map.next_entry::<String, String>()? {
                    v.push((k, d));
                }
                Ok(Labels::Described(v))
            }
        }
        d.deserialize_any(LabelsVisitor)
    }
}

/// Few-shot examples inline, or the path of a CSV file holding them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FewShotExamples {
    Inline(Vec<BTreeMap<String, Value>>),
    File(String),
}

/// Every key Autolabel's schema knows, by section.
const KNOWN_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "task_name",
            "task_type",
            "dataset",
            "model",
            "embedding",
            "prompt",
        ],
    ),
    (
        "dataset",
        &[
            "label_column",
            "label_separator",
            "text_column",
            "delimiter",
            "explanation_column",
            "image_url_column",
            "input_columns",
            "disable_quoting",
        ],
    ),
    (
        "model",
        &[
            "provider",
            "name",
            "params",
            "compute_confidence",
            "logit_bias",
        ],
    ),
    (
        "prompt",
        &[
            "task_guidelines",
            "output_guidelines",
            "labels",
            "example_template",
            "few_shot_examples",
            "few_shot_selection",
            "few_shot_num",
            "chain_of_thought",
            "label_selection",
            "label_selection_count",
            "label_selection_threshold",
            "attributes",
            "json_mode",
            "multilabel_method",
        ],
    ),
];

/// Keys Autolabel knows that change nothing here (dataset generation, chunking, transforms,
/// API endpoints, vector stores, image columns): accepted, and named in a notice.
const IGNORED_KEYS: &[(&str, &[&str])] = &[
    ("", &["dataset_generation", "chunking", "transforms"]),
    ("dataset", &["image_columns", "output_columns"]),
    ("model", &["max_context_length", "endpoint"]),
    ("prompt", &["vector_store_params", "output_format"]),
];

/// API providers whose models cannot run locally: such configs run with the default local model.
pub const API_PROVIDERS: &[&str] = &[
    "openai",
    "anthropic",
    "google",
    "cohere",
    "refuel",
    "mistral",
    "openai_vision",
    "vllm",
    "azure_openai",
];

impl TaskConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg = Self::parse(&text, &path.display().to_string())?;
        cfg.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(cfg)
    }

    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{source}: not valid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        let ignored_keys = check_known_keys(&value, source)?;
        let mut cfg: TaskConfig = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{source}: config key '{path}': {}", e.inner())
        })?;
        cfg.source = source.to_string();
        cfg.ignored_keys = ignored_keys;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let src = &self.source;
        if self.task_name.trim().is_empty() {
            bail!("{src}: config key 'task_name' is empty; give the task a name (it prefixes the output columns)")
        }
        if let Some(labels) = &self.prompt.labels {
            let list = labels.names();
            if list.is_empty() {
                bail!("{src}: config key 'prompt.labels' is empty; list the labels to choose from")
            }
            let mut seen = std::collections::HashSet::new();
            for l in &list {
                if l.trim().is_empty() {
                    bail!("{src}: config key 'prompt.labels' contains an empty label; remove it")
                }
                if !seen.insert(l.as_str()) {
                    bail!("{src}: config key 'prompt.labels' lists '{l}' twice; each label must appear once")
                }
            }
        }
        if let Some(n) = self.prompt.few_shot_num {
            if n > 0 && self.prompt.few_shot_examples.is_none() {
                bail!(
                    "{src}: 'prompt.few_shot_num' is {n} but 'prompt.few_shot_examples' is missing"
                )
            }
        }
        Ok(())
    }

    pub fn labels(&self) -> Vec<String> {
        self.prompt
            .labels
            .as_ref()
            .map(|l| l.names())
            .unwrap_or_default()
    }

    pub fn delimiter(&self) -> Result<Option<u8>> {
        match self.dataset.delimiter.as_deref() {
            None => Ok(None),
            Some(d) => {
                let d = if d == "\\t" { "\t" } else { d };
                if d.len() != 1 {
                    bail!(
                        "{}: config key 'dataset.delimiter' must be one character, got {d:?}",
                        self.source
                    )
                }
                Ok(Some(d.as_bytes()[0]))
            }
        }
    }

    /// Whether the config's model is an API model (which runs here with a local model instead).
    pub fn names_api_model(&self) -> bool {
        self.model
            .provider
            .as_deref()
            .is_some_and(|p| API_PROVIDERS.contains(&p.to_lowercase().as_str()))
    }
}

impl Labels {
    pub fn names(&self) -> Vec<String> {
        match self {
            Labels::List(l) => l.clone(),
            Labels::Described(m) => m.iter().map(|(k, _)| k.clone()).collect(),
        }
    }

    /// What `{labels}` shows in the task guidelines: one label per line, or Autolabel's
    /// `label : description` lines when the labels have descriptions.
    pub fn prompt_text(&self) -> String {
        self.prompt_text_of(&self.names())
    }

    /// [`Labels::prompt_text`] for some of the labels (in the order given).
    pub fn prompt_text_of(&self, names: &[String]) -> String {
        match self {
            Labels::List(_) => names.join("\n"),
            Labels::Described(m) => names
                .iter()
                .filter_map(|n| m.iter().find(|(k, _)| k == n))
                .map(|(k, d)| format!("{k} : {d}\n"))
                .collect(),
        }
    }

    /// The text each label is compared by in label selection: its description when the labels
    /// have them (as Autolabel does), else its name.
    pub fn selection_texts(&self) -> Vec<String> {
        match self {
            Labels::List(l) => l.clone(),
            Labels::Described(m) => m.iter().map(|(_, d)| d.clone()).collect(),
        }
    }
}

/// Checks every key against Autolabel's schema; returns the known keys that are not used here.
fn check_known_keys(value: &Value, source: &str) -> Result<Vec<String>> {
    let Value::Object(top) = value else {
        bail!("{source}: the config must be a JSON object with task_name, task_type, dataset, model and prompt")
    };
    let mut ignored = Vec::new();
    for (section, keys) in KNOWN_KEYS {
        let obj = if section.is_empty() {
            Some(top)
        } else {
            match top.get(*section) {
                Some(Value::Object(o)) => Some(o),
                Some(Value::Null) | None => None,
                Some(_) => bail!("{source}: config key '{section}' must be an object"),
            }
        };
        let Some(obj) = obj else { continue };
        let unused: &[&str] = IGNORED_KEYS
            .iter()
            .find(|(s, _)| s == section)
            .map(|(_, k)| *k)
            .unwrap_or(&[]);
        for key in obj.keys() {
            let full = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            if unused.contains(&key.as_str()) {
                ignored.push(full);
            } else if !keys.contains(&key.as_str()) {
                let closest = keys
                    .iter()
                    .map(|k| (strsim::levenshtein(k, key), *k))
                    .min()
                    .filter(|(d, _)| *d <= 3);
                let hint = match closest {
                    Some((_, k)) => format!("did you mean '{k}'?"),
                    None => format!("known keys here: {}", keys.join(", ")),
                };
                bail!("{source}: unknown config key '{full}'; {hint}")
            }
        }
    }
    Ok(ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"task_name": "T", "task_type": "classification",
        "prompt": {"task_guidelines": "Pick one of {labels}", "labels": ["a", "b"],
                   "example_template": "Input: {example}\nOutput: {label}"}}"#;

    #[test]
    fn minimal_config_loads() {
        let c = TaskConfig::parse(MINIMAL, "t.json").unwrap();
        assert_eq!(c.labels(), vec!["a", "b"]);
    }

    #[test]
    fn described_labels_keep_the_config_order_and_show_their_descriptions() {
        let text = MINIMAL.replace(
            r#"["a", "b"]"#,
            r#"{"zebra": "striped", "apple": "a fruit", "mango": "another fruit"}"#,
        );
        let c = TaskConfig::parse(&text, "t.json").unwrap();
        assert_eq!(c.labels(), vec!["zebra", "apple", "mango"]);
        assert_eq!(
            c.prompt.labels.unwrap().prompt_text(),
            "zebra : striped\napple : a fruit\nmango : another fruit\n",
            "Autolabel's `label : description` lines"
        );
        let bad = MINIMAL.replace(r#"["a", "b"]"#, r#"{"a": 3}"#);
        let err = TaskConfig::parse(&bad, "t.json").unwrap_err().to_string();
        assert!(err.contains("prompt.labels"), "{err}");
    }

    #[test]
    fn autolabel_keys_that_change_nothing_are_accepted_and_named() {
        let text = MINIMAL.replacen(
            "{",
            r#"{"chunking": {"confidence_chunk_size": 100}, "transforms": [], "#,
            1,
        );
        let c = TaskConfig::parse(&text, "t.json").unwrap();
        assert_eq!(c.ignored_keys, vec!["chunking", "transforms"]);
    }

    #[test]
    fn misspelled_key_names_the_path_and_the_fix() {
        let text = MINIMAL.replace("\"labels\"", "\"lables\"");
        let err = TaskConfig::parse(&text, "t.json").unwrap_err().to_string();
        assert!(
            err.contains("prompt.lables") && err.contains("did you mean 'labels'"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_key() {
        let text = MINIMAL.replace("\"T\"", "3");
        let err = TaskConfig::parse(&text, "t.json").unwrap_err().to_string();
        assert!(err.contains("task_name"), "{err}");
    }

    #[test]
    fn duplicate_and_empty_labels_are_errors() {
        let dup = MINIMAL.replace(r#"["a", "b"]"#, r#"["a", "a"]"#);
        assert!(TaskConfig::parse(&dup, "t")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let empty = MINIMAL.replace(r#"["a", "b"]"#, "[]");
        assert!(TaskConfig::parse(&empty, "t")
            .unwrap_err()
            .to_string()
            .contains("empty"));
    }

    #[test]
    fn broken_json_gives_line_and_column() {
        let err = TaskConfig::parse("{\"task_name\": ", "t.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.json") && err.contains("line 1"), "{err}");
    }
}
