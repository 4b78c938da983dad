//! The values of an attribute-extraction answer: the grammar the answer `{"name": value, ...}`
//! is generated under (one rule per attribute, by its kind), the token budget, how a generated
//! value is tidied and written into its column, and how a ground-truth cell is read and compared.

use super::attributes::{Attribute, Kind};
use super::multilabel::subset_rules;
use super::ner_format::{max_entities, parse_list_column, substring_regex};
use autolabel_models::generation::Grammar;
use serde_json::Value;

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

/// A Lark string literal of `s`.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `s` JSON-escaped, without the quotes.
fn json_inner(s: &str) -> String {
    let q = lit(s);
    q[1..q.len() - 1].to_string()
}

/// What the answer writes before attribute `i`'s value: `{` is already written, then
/// `"name": `, with `, ` before every key but the first.
pub fn key_text(i: usize, name: &str) -> String {
    format!("{}{}: ", if i > 0 { ", " } else { "" }, lit(name))
}

/// The value an attribute takes when a seed example or a given label has none: an empty list or
/// string for the kinds that allow one, None for the others (an option is required).
pub fn empty_value(kind: &Kind) -> Option<Value> {
    match kind {
        Kind::Entities => Some(Value::Array(Vec::new())),
        Kind::Span | Kind::Text { .. } => Some(Value::String(String::new())),
        _ => None,
    }
}

/// The Lark grammar of the answer `{"a": <value>, "b": <value>}`: every attribute once, in the
/// config's order, each value under its kind's rule (`text` is the row's text column, where
/// entities and spans are copied from).
pub fn answer_grammar(attributes: &[Attribute], separator: &str, text: &str) -> String {
    let mut start = String::from("start: \"{\"");
    let mut rules = String::new();
    for (i, a) in attributes.iter().enumerate() {
        start.push_str(&format!(" {} v{i}", lit(&key_text(i, &a.name))));
        let q = lit("\"");
        match &a.kind {
            Kind::Choice(opts) => {
                let alts: Vec<String> = opts.iter().map(|o| lit(&lit(o))).collect();
                rules.push_str(&format!("v{i}: {}\n", alts.join(" | ")));
            }
            Kind::MultiLabel(opts) => {
                let literals: Vec<String> = opts.iter().map(|o| lit(&json_inner(o))).collect();
                rules.push_str(&format!("v{i}: {q} v{i}_s {q}\n"));
                rules.push_str(&subset_rules(
                    &format!("v{i}_s"),
                    &format!("v{i}_"),
                    &literals,
                    &lit(&json_inner(separator)),
                ));
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
    use crate::tasks::attributes::parse_attributes;
    use crate::tasks::attributes::tests::config;

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
