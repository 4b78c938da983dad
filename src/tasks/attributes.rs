//! The attributes of an `attribute_extraction` config: the kind of value each one takes (one of
//! its options, a subset of them, a list of entities copied from the text, one span of the
//! text, free text, or JSON under its own schema), how the prompt describes them (Autolabel's
//! `{attribute_json}`), the grammar their answer is generated under and how a ground-truth cell
//! is read and compared.

use super::ner_format::{max_entities, parse_list_column, substring_regex};
use crate::config::TaskConfig;
use anyhow::{bail, Result};
use autolabel_models::generation::Grammar;
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

/// Escapes every non-ASCII character of JSON text as `\uXXXX` (Python's `ensure_ascii`).
pub fn ascii_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
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

/// A Lark string literal of `s`.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `s` JSON-escaped, without the quotes.
fn json_inner(s: &str) -> String {
    let q = lit(s);
    q[1..q.len() - 1].to_string()
}

/// The Lark grammar of the answer `{"a": <value>, "b": <value>}`: every attribute once, in the
/// config's order, each value under its kind's rule (`text` is the row's text column, where
/// entities and spans are copied from).
pub fn answer_grammar(attributes: &[Attribute], separator: &str, text: &str) -> String {
    let mut start = String::from("start: \"{\"");
    let mut rules = String::new();
    for (i, a) in attributes.iter().enumerate() {
        let key = format!("{}{}: ", if i > 0 { ", " } else { "" }, lit(&a.name));
        start.push_str(&format!(" {} v{i}", lit(&key)));
        let q = lit("\"");
        match &a.kind {
            Kind::Choice(opts) => {
                let alts: Vec<String> = opts.iter().map(|o| lit(&lit(o))).collect();
                rules.push_str(&format!("v{i}: {}\n", alts.join(" | ")));
            }
            Kind::MultiLabel(opts) => {
                let alternatives = |from: usize| {
                    (from..opts.len())
                        .map(|j| format!("v{i}_{j}"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                };
                rules.push_str(&format!("v{i}: {q} ({}) {q}\n", alternatives(0)));
                for (j, o) in opts.iter().enumerate() {
                    let label = lit(&json_inner(o));
                    if j + 1 < opts.len() {
                        rules.push_str(&format!(
                            "v{i}_{j}: {label} ({} ({}))?\n",
                            lit(&json_inner(separator)),
                            alternatives(j + 1)
                        ));
                    } else {
                        rules.push_str(&format!("v{i}_{j}: {label}\n"));
                    }
                }
            }
            Kind::Entities => {
                let most = max_entities(text);
                let more = if most > 1 {
                    format!(" (\", \" v{i}_e){{0,{}}}", most - 1)
                } else {
                    String::new()
                };
                rules.push_str(&format!(
                    "v{i}: \"[\" (v{i}_e{more})? \"]\"\nv{i}_e: {q} v{i}_s {q}\nv{i}_s: {}\n",
                    substring_regex(text)
                ));
            }
            Kind::Span => {
                rules.push_str(&format!(
                    "v{i}: {q} v{i}_s {q} | {}\nv{i}_s: {}\n",
                    lit("\"\""),
                    substring_regex(text)
                ));
            }
            Kind::Text { max_tokens } => {
                rules.push_str(&format!(
                    "v{i}: {q} v{i}_t {q} | {}\nv{i}_t[max_tokens={max_tokens}]: /([^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\\\/])+/\n",
                    lit("\"\"")
                ));
            }
            Kind::Schema(schema) => {
                rules.push_str(&format!("v{i}: %json {}\n", Grammar::python_layout(schema)));
            }
        }
    }
    start.push_str(" \"}\"");
    format!("{start}\n{rules}")
}

/// Most tokens the value of `kind` may take in practice (`input_tokens`: the row's input).
pub fn value_budget(kind: &Kind, text: &str, input_tokens: usize) -> usize {
    match kind {
        Kind::Choice(opts) => opts.iter().map(|o| o.len()).max().unwrap_or(0) + 2,
        Kind::MultiLabel(opts) => opts.iter().map(|o| o.len() + 2).sum::<usize>() + 2,
        Kind::Entities => input_tokens + 6 * max_entities(text) + 4,
        Kind::Span => input_tokens + 4,
        Kind::Text { max_tokens } => max_tokens + 4,
        Kind::Schema(_) => 256,
    }
}

/// A value as its `<name>_label` column shows it: strings as they are, lists and other JSON as
/// JSON text written as Python's `json.dumps` writes it.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => python_json(other),
    }
}

/// JSON text with Python's `json.dumps` separators (`", "`, `": "`), non-ASCII escaped.
pub fn python_json(v: &Value) -> String {
    ascii_escape(&json_text(v))
}

/// JSON text with Python's `json.dumps` separators, non-ASCII characters as they are (the form
/// the answer grammar writes).
pub fn json_text(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Array(items) => {
                out.push('[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write(x, out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&lit(k));
                    out.push_str(": ");
                    write(x, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A generated value made tidy: spans and entities lose the whitespace a run of the text may
/// start or end with (entities left empty by that are dropped).
pub fn tidy(kind: &Kind, v: Value) -> Value {
    match (kind, v) {
        (Kind::Span | Kind::Text { .. }, Value::String(s)) => Value::String(s.trim().to_string()),
        (Kind::Entities, Value::Array(items)) => Value::Array(
            items
                .into_iter()
                .filter_map(|e| {
                    let s = e.as_str()?.trim().to_string();
                    (!s.is_empty()).then_some(Value::String(s))
                })
                .collect(),
        ),
        (_, v) => v,
    }
}

/// A ground-truth cell of attribute `a` in the form its answers take (None: an empty cell, no
/// ground truth), or why the cell cannot be read.
pub fn read_truth(a: &Attribute, cell: &str, separator: &str) -> Option<Result<Value, String>> {
    let cell = cell.trim();
    if cell.is_empty() {
        return None;
    }
    Some(match &a.kind {
        Kind::Choice(opts) => {
            if opts.iter().any(|o| o == cell) {
                Ok(Value::String(cell.to_string()))
            } else {
                Err(format!(
                    "'{cell}' is not one of the options of '{}'",
                    a.name
                ))
            }
        }
        Kind::MultiLabel(opts) => {
            let given: Vec<&str> = cell
                .split(separator.trim())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            match given.iter().find(|g| !opts.iter().any(|o| o == *g)) {
                Some(bad) => Err(format!(
                    "'{bad}' is not one of the options of '{}' (split by dataset.label_separator {separator:?})",
                    a.name
                )),
                None => Ok(Value::String(
                    opts.iter()
                        .filter(|o| given.contains(&o.as_str()))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(separator),
                )),
            }
        }
        Kind::Entities => parse_list_column(cell).map(|l| {
            Value::Array(
                l.into_iter()
                    .map(|s| Value::String(s.trim().into()))
                    .collect(),
            )
        }),
        Kind::Span | Kind::Text { .. } => Ok(Value::String(cell.to_string())),
        Kind::Schema(_) => Ok(serde_json::from_str(cell).unwrap_or(Value::String(cell.into()))),
    })
}

/// Whether a value equals the ground truth: entity lists as multisets, the rest exactly.
pub fn same_value(kind: &Kind, truth: &Value, value: &Value) -> bool {
    match (kind, truth, value) {
        (Kind::Entities, Value::Array(t), Value::Array(v)) => {
            let sorted = |l: &Vec<Value>| {
                let mut s: Vec<String> = l.iter().map(|x| x.to_string()).collect();
                s.sort();
                s
            };
            sorted(t) == sorted(v)
        }
        _ => truth == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(attrs: &str) -> TaskConfig {
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

    #[test]
    fn truth_cells_are_read_per_kind() {
        let c = config(
            r#"[{"name": "a", "options": ["x", "y"]},
                {"name": "b", "options": ["x", "y", "z"], "task_type": "multilabel_classification"},
                {"name": "c"}]"#,
        );
        let a = parse_attributes(&c, ";").unwrap();
        assert_eq!(
            read_truth(&a[0], " y ", ";"),
            Some(Ok(Value::String("y".into())))
        );
        assert!(read_truth(&a[0], "w", ";")
            .unwrap()
            .unwrap_err()
            .contains("'w'"));
        assert_eq!(
            read_truth(&a[1], "z; x", ";"),
            Some(Ok(Value::String("x;z".into())))
        );
        assert!(read_truth(&a[2], "", ";").is_none());
        let t = read_truth(&a[2], r#"["B", "A"]"#, ";").unwrap().unwrap();
        assert!(same_value(&a[2].kind, &t, &serde_json::json!(["A", "B"])));
        assert!(!same_value(&a[2].kind, &t, &serde_json::json!(["A"])));
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = serde_json::json!({"a": ["x", "é"], "b": 1});
        assert_eq!(python_json(&v), r#"{"a": ["x", "\u00e9"], "b": 1}"#);
    }
}
