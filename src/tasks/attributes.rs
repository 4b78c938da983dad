//! The attributes of an `attribute_extraction` config: the kind of value each one takes (one of
//! its options, a subset of them, a list of entities copied from the text, one span of the
//! text, free text, or JSON under its own schema), the checks on them, and how the prompt
//! describes them (Autolabel's `{attribute_json}`). Their answer's values: `attribute_values`.

use super::attribute_values::ascii_escape;
use crate::config::TaskConfig;
use anyhow::{bail, Result};
use serde_json::Value;

/// Tokens a free-text attribute may take when its config gives no `max_tokens`.
pub const DEFAULT_TEXT_TOKENS: usize = 48;

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// One of the options (Autolabel's `task_type: classification`, or options without a type).
    Choice(Vec<String>),
    /// A non-empty subset of the options, in their order, joined by the label separator.
    MultiLabel(Vec<String>),
    /// A list of entities, each a run of whole words of the text (no options, no type: the
    /// form of Autolabel's extraction benchmarks).
    Entities,
    /// One run of whole words of the text, or "" when there is none (`task_type: span`).
    Span,
    /// Free text on one line, at most `max_tokens` tokens (`task_type: text`).
    Text { max_tokens: usize },
    /// Any JSON value the attribute's `schema` (a JSON schema) allows.
    Schema(Value),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Choice(_) => "classification",
            Kind::MultiLabel(_) => "multilabel",
            Kind::Entities => "entities",
            Kind::Span => "span",
            Kind::Text { .. } => "text",
            Kind::Schema(_) => "schema",
        }
    }

    /// Whether the value is copied from the text column.
    pub fn needs_text(&self) -> bool {
        matches!(self, Kind::Entities | Kind::Span)
    }
}

#[derive(Debug, Clone)]
pub struct Attribute {
    pub name: String,
    pub description: String,
    pub kind: Kind,
    /// Autolabel HEAD's `options_desc`: a description per option.
    pub options_desc: Vec<(String, String)>,
}

/// Whether every attribute of the config is a plain list of entities (no options, schema or
/// type): the named-entity form, which has its own task and span-level metrics.
pub fn all_entity_lists(config: &TaskConfig) -> bool {
    let Some(attrs) = config.prompt.attributes.as_ref().and_then(|a| a.as_array()) else {
        return true;
    };
    attrs.iter().all(|a| {
        let set = |k: &str| a.get(k).is_some_and(|v| !v.is_null());
        let typed = a
            .get("task_type")
            .or_else(|| a.get("type"))
            .and_then(|t| t.as_str())
            .is_some_and(|t| !matches!(t, "" | "list" | "entities" | "named_entity_recognition"));
        !set("options") && !set("schema") && !typed
    })
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, String> {
    let Some(items) = v.as_array() else {
        return Err(format!("{what} is not a list (e.g. [\"yes\", \"no\"])"));
    };
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(s) = item.as_str() else {
            return Err(format!("{what}[{i}] is not a string"));
        };
        if s.trim().is_empty() {
            return Err(format!("{what}[{i}] is empty"));
        }
        if out.iter().any(|o| o == s) {
            return Err(format!("{what} lists '{s}' twice"));
        }
        out.push(s.to_string());
    }
    if out.is_empty() {
        return Err(format!(
            "{what} is an empty list; give the options, or remove the key for a value copied from the text"
        ));
    }
    Ok(out)
}

/// Reads and checks `prompt.attributes`; `separator` is the multi-label separator.
pub fn parse_attributes(config: &TaskConfig, separator: &str) -> Result<Vec<Attribute>> {
    let src = &config.source;
    let Some(attrs) = config.prompt.attributes.as_ref().and_then(|a| a.as_array()) else {
        bail!("{src}: config key 'prompt.attributes' is missing or not a list; an attribute_extraction task needs its attributes, e.g. [{{\"name\": \"brand\", \"description\": \"...\"}}]")
    };
    let mut out: Vec<Attribute> = Vec::new();
    for (i, a) in attrs.iter().enumerate() {
        let key = format!("prompt.attributes[{i}]");
        if !a.is_object() {
            bail!("{src}: config key '{key}' is not an object; each attribute is {{\"name\": ..., \"description\": ...}}")
        }
        let Some(name) = a
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.trim().is_empty())
        else {
            bail!("{src}: config key '{key}' has no 'name'; every attribute needs one")
        };
        let key = format!("{key} ('{name}')");
        if out.iter().any(|o| o.name == name) {
            bail!("{src}: attribute '{name}' appears twice in 'prompt.attributes'")
        }
        let description = match a.get("description") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => bail!("{src}: config key '{key}.description' is not a string"),
        };
        let options = match a.get("options") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                string_list(v, &format!("config key '{key}.options'"))
                    .map_err(|e| anyhow::anyhow!("{src}: {e}"))?,
            ),
        };
        let schema = match a.get("schema") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(serde_json::from_str::<Value>(s).map_err(|e| {
                anyhow::anyhow!("{src}: config key '{key}.schema' is not JSON ({e}); give a JSON schema, e.g. {{\"type\": \"integer\"}}")
            })?),
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(_) => bail!("{src}: config key '{key}.schema' is neither a JSON schema object nor a string holding one"),
        };
        if let Some(s) = &schema {
            if !s.is_object() {
                bail!("{src}: config key '{key}.schema' is not a JSON schema object")
            }
        }
        let ty = match a.get("task_type").or_else(|| a.get("type")) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(_) => bail!("{src}: config key '{key}.task_type' is not a string"),
        };
        let max_tokens = match a.get("max_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().filter(|n| (1..=4096).contains(n)) {
                Some(n) => Some(n as usize),
                None => bail!(
                    "{src}: config key '{key}.max_tokens' must be a whole number from 1 to 4096"
                ),
            },
        };
        let no_options = |what: &str| -> Result<()> {
            if options.is_some() {
                bail!("{src}: config key '{key}' has options and task_type '{what}'; a {what} attribute takes no options (remove them, or make it 'classification' or 'multilabel_classification')")
            }
            if schema.is_some() && what != "json" {
                bail!("{src}: config key '{key}' has a schema and task_type '{what}'; remove one of them")
            }
            Ok(())
        };
        let kind = match ty.as_str() {
            "classification" | "multilabel_classification" => {
                let Some(opts) = options.clone() else {
                    bail!("{src}: config key '{key}' is a {ty} attribute without 'options'; list the values it can take")
                };
                if schema.is_some() {
                    bail!("{src}: config key '{key}' has both options and a schema; remove one of them")
                }
                if ty == "classification" {
                    Kind::Choice(opts)
                } else {
                    if let Some(o) = opts.iter().find(|o| o.contains(separator.trim())) {
                        bail!("{src}: option '{o}' of config key '{key}' contains the label separator {separator:?} (dataset.label_separator); choose a separator no option contains")
                    }
                    Kind::MultiLabel(opts)
                }
            }
            "" => match (&options, &schema) {
                (Some(_), Some(_)) => bail!("{src}: config key '{key}' has both options and a schema; remove one of them"),
                (Some(o), None) => Kind::Choice(o.clone()),
                (None, Some(s)) => Kind::Schema(s.clone()),
                (None, None) => Kind::Entities,
            },
            "list" | "entities" | "named_entity_recognition" => {
                no_options(&ty)?;
                Kind::Entities
            }
            "span" => {
                no_options(&ty)?;
                Kind::Span
            }
            "text" => {
                no_options(&ty)?;
                Kind::Text {
                    max_tokens: max_tokens.unwrap_or(DEFAULT_TEXT_TOKENS),
                }
            }
            "json" => {
                no_options(&ty)?;
                match &schema {
                    Some(s) => Kind::Schema(s.clone()),
                    None => bail!("{src}: config key '{key}' has task_type 'json' and no 'schema'; give the JSON schema its value must follow"),
                }
            }
            other => bail!("{src}: config key '{key}.task_type' is '{other}'; an attribute is one of: classification, multilabel_classification (both with options), list (entities copied from the text; the default without options), span (one span of the text), text (free text), json (with a schema)"),
        };
        if max_tokens.is_some() && !matches!(kind, Kind::Text { .. }) {
            bail!("{src}: config key '{key}.max_tokens' applies to task_type 'text' only")
        }
        let options_desc = match a.get("options_desc") {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|d| (k.clone(), d.to_string())))
                .collect(),
            _ => Vec::new(),
        };
        out.push(Attribute {
            name: name.to_string(),
            description,
            kind,
            options_desc,
        });
    }
    if out.is_empty() {
        bail!("{src}: config key 'prompt.attributes' is empty")
    }
    Ok(out)
}

/// `json.dumps(obj, indent=4)` as Python writes it (non-ASCII escaped).
fn python_pretty(obj: &serde_json::Map<String, Value>) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(obj, &mut ser).expect("a map serializes");
    ascii_escape(&String::from_utf8(buf).expect("JSON is UTF-8"))
}

/// Autolabel's `{attribute_json}`: each attribute's description with its options (and, for a
/// multi-label attribute, the output format), as `json.dumps(..., indent=4)`.
pub fn attribute_json(attributes: &[Attribute], separator: &str) -> String {
    let mut map = serde_json::Map::new();
    for a in attributes {
        let mut desc = a.description.clone();
        if let Kind::MultiLabel(opts) = &a.kind {
            let example: Vec<&str> = opts.iter().take(3).map(String::as_str).collect();
            desc.push_str(&format!(
                " The output format should be all the labels separated by {}. For example: {}",
                if separator == ";" {
                    "semicolons".to_string()
                } else {
                    format!("{separator:?}")
                },
                example.join(separator)
            ));
        }
        if let Kind::Choice(opts) | Kind::MultiLabel(opts) = &a.kind {
            desc.push_str(&format!("\nOptions:\n{}", opts.join(",")));
            if !a.options_desc.is_empty() {
                desc.push_str("\nDescription for each option:");
                for (k, v) in &a.options_desc {
                    desc.push_str(&format!("\n{k}: {v}"));
                }
            }
        }
        map.insert(a.name.clone(), Value::String(desc));
    }
    python_pretty(&map)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A config with these attributes (JSON list), for the unit tests.
    pub(crate) fn config(attrs: &str) -> TaskConfig {
        let text = format!(
            r#"{{"task_name": "t", "task_type": "attribute_extraction", "dataset": {{"text_column": "text"}},
               "model": {{"provider": "huggingface_pipeline", "name": "x"}},
               "prompt": {{"task_guidelines": "g", "example_template": "{{text}} {{output_dict}}", "attributes": {attrs}}}}}"#
        );
        TaskConfig::parse(&text, "c.json").unwrap()
    }

    #[test]
    fn kinds_follow_options_and_types() {
        let c = config(
            r#"[{"name": "a", "description": "d", "options": ["x", "y"]},
                {"name": "b", "description": "d", "options": ["x", "y"], "task_type": "multilabel_classification"},
                {"name": "c", "description": "d"},
                {"name": "d", "description": "d", "task_type": "span"},
                {"name": "e", "description": "d", "task_type": "text", "max_tokens": 9},
                {"name": "f", "description": "d", "schema": "{\"type\": \"integer\"}"}]"#,
        );
        let a = parse_attributes(&c, ";").unwrap();
        let kinds: Vec<&str> = a.iter().map(|a| a.kind.name()).collect();
        assert_eq!(
            kinds,
            [
                "classification",
                "multilabel",
                "entities",
                "span",
                "text",
                "schema"
            ]
        );
        assert_eq!(a[4].kind, Kind::Text { max_tokens: 9 });
        assert!(!all_entity_lists(&c));
        assert!(all_entity_lists(&config(
            r#"[{"name": "P", "description": "d"}]"#
        )));
    }

    #[test]
    fn bad_attributes_are_named() {
        let cases = [
            (
                r#"[{"name": "a", "options": "x,y"}]"#,
                "options' is not a list",
            ),
            (r#"[{"name": "a", "options": []}]"#, "empty list"),
            (
                r#"[{"name": "a", "options": ["x"], "task_type": "text"}]"#,
                "has options and task_type 'text'",
            ),
            (
                r#"[{"name": "a", "task_type": "classification"}]"#,
                "without 'options'",
            ),
            (r#"[{"name": "a", "options": ["x", "x"]}]"#, "twice"),
            (
                r#"[{"name": "a", "options": ["x;y"], "task_type": "multilabel_classification"}]"#,
                "separator",
            ),
            (r#"[{"name": "a", "schema": "{nope"}]"#, "is not JSON"),
            (
                r#"[{"name": "a", "task_type": "date"}]"#,
                "task_type' is 'date'",
            ),
            (
                r#"[{"name": "a", "max_tokens": 5}]"#,
                "applies to task_type 'text'",
            ),
        ];
        for (attrs, want) in cases {
            let e = parse_attributes(&config(attrs), ";")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("c.json"), "{attrs}: {e}");
        }
    }

    #[test]
    fn attribute_json_is_autolabels() {
        let c = config(
            r#"[{"name": "violence", "options": ["not_violent", "violent"], "description": "If violent."},
                {"name": "tags", "options": ["a", "b"], "task_type": "multilabel_classification", "description": "Tags."}]"#,
        );
        let a = parse_attributes(&c, ";").unwrap();
        assert_eq!(
            attribute_json(&a, ";"),
            "{\n    \"violence\": \"If violent.\\nOptions:\\nnot_violent,violent\",\n    \"tags\": \"Tags. The output format should be all the labels separated by semicolons. For example: a;b\\nOptions:\\na,b\"\n}"
        );
    }
}
