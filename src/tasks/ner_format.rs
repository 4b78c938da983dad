//! The text forms of named entities: Autolabel's ground-truth columns (JSON `{"Type": [...]}`,
//! `entity%Type` lines, JSON-list columns), the canonical JSON answer, character spans as
//! Autolabel assigns them, and the grammar the answer is generated under.

use super::ner_eval::Span;

/// `{"A": ["x", "y"], "B": []}` with every type in order, as Python's `json.dumps` writes it.
pub fn canonical_json(types: &[String], entities: &[(String, Vec<String>)]) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let parts: Vec<String> = types
        .iter()
        .map(|t| {
            let list = entities
                .iter()
                .find(|(k, _)| k == t)
                .map(|(_, v)| v.as_slice());
            let items: Vec<String> = list.unwrap_or(&[]).iter().map(|e| q(e)).collect();
            format!("{}: [{}]", q(t), items.join(", "))
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Ground truth in one column: JSON `{"Type": [...]}`, else Autolabel's `entity%Type` lines.
pub fn parse_label_column(value: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(v) {
        let mut out = Vec::new();
        for (k, list) in map {
            let Some(items) = list.as_array() else {
                return Err(format!("the value of '{k}' is not a list"));
            };
            let names: Option<Vec<String>> =
                items.iter().map(|i| i.as_str().map(String::from)).collect();
            let names = names.ok_or(format!("the list of '{k}' holds a non-string"))?;
            out.push((k, names));
        }
        return Ok(out);
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in v.lines().filter(|l| !l.trim().is_empty()) {
        let Some((entity, kind)) = line.rsplit_once('%') else {
            return Err(format!(
                "'{line}' is neither JSON {{\"Type\": [...]}} nor an entity%Type line"
            ));
        };
        match out.iter_mut().find(|(k, _)| k == kind.trim()) {
            Some((_, l)) => l.push(entity.to_string()),
            None => out.push((kind.trim().to_string(), vec![entity.to_string()])),
        }
    }
    Ok(out)
}

/// A JSON list of strings in one type column ("" is an empty list).
pub fn parse_list_column(value: &str) -> Result<Vec<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str::<Vec<String>>(v).map_err(|e| format!("not a JSON list of strings ({e})"))
}

/// Character spans of `(type, entity)` pairs in `text` as Autolabel assigns them: the k-th
/// mention of the same string takes its k-th occurrence (the last one when there are fewer),
/// and a string not in the text gets (-1, -1).
pub fn text_spans(text: &str, entities: &[(String, String)]) -> Vec<Span> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    entities
        .iter()
        .map(|(kind, e)| {
            let starts: Vec<i64> = if e.is_empty() {
                Vec::new()
            } else {
                text.match_indices(e.as_str())
                    .map(|(b, _)| text[..b].chars().count() as i64)
                    .collect()
            };
            let k = match seen.iter_mut().find(|(s, _)| *s == e.as_str()) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    seen.push((e.as_str(), 1));
                    0
                }
            };
            let (start, end) = match starts.get(k).or(starts.last()) {
                Some(&s) => (s, s + e.chars().count() as i64),
                None => (-1, -1),
            };
            Span {
                label: kind.clone(),
                start,
                end,
            }
        })
        .collect()
}

/// Runs of letters/digits, of whitespace, and of other characters (llguidance's word chunks).
fn chunks(text: &str) -> Vec<&str> {
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' {
            0
        } else if c.is_whitespace() {
            1
        } else {
            2
        }
    };
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev = None;
    for (i, c) in text.char_indices() {
        let k = class(c);
        if prev.is_some_and(|p| p != k) {
            out.push(&text[start..i]);
            start = i;
        }
        prev = Some(k);
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Most entities of one type in one answer.
pub const MAX_ENTITIES_PER_TYPE: usize = 32;

/// Most entities of one type the grammar lets an answer list for `text`: one per two words (at
/// least 1, at most [`MAX_ENTITIES_PER_TYPE`]), so every answer ends even when a model would go
/// on listing.
pub fn max_entities(text: &str) -> usize {
    let words = chunks(text)
        .iter()
        .filter(|c| c.chars().any(char::is_alphanumeric))
        .count();
    words.div_ceil(2).clamp(1, MAX_ENTITIES_PER_TYPE)
}

/// The Lark grammar of `{"Type": ["entity", ...], ...}` whose entities are runs of whole words
/// of `text` (JSON-escaped, so quotes and backslashes in the text stay valid JSON).
pub fn entity_grammar(types: &[String], text: &str) -> String {
    let lit = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut start = String::from("start: \"{\"");
    for (i, t) in types.iter().enumerate() {
        let key = format!("{}{}: ", if i > 0 { ", " } else { "" }, lit(t));
        start.push_str(&format!(" {} list", lit(&key)));
    }
    start.push_str(" \"}\"");
    let most = max_entities(text);
    let more = if most > 1 {
        format!(" (\", \" ent){{0,{}}}", most - 1)
    } else {
        String::new()
    };
    format!(
        "{start}\nlist: \"[\" (ent{more})? \"]\"\nent: \"\\\"\" span \"\\\"\"\nspan: {}\n",
        substring_regex(text)
    )
}

/// llguidance's `%regex {"substring_chunks": ...}` for a run of whole words of `text`, written
/// JSON-escaped (the run sits inside a JSON string).
pub fn substring_regex(text: &str) -> String {
    let escaped: Vec<String> = chunks(text)
        .iter()
        .map(|c| {
            let q = serde_json::to_string(c).expect("a string serializes");
            q[1..q.len() - 1].to_string()
        })
        .collect();
    format!(
        "%regex {}",
        serde_json::json!({ "substring_chunks": escaped })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ground_truth_forms_parse() {
        let json = parse_label_column(r#"{"Person": ["Ann", "Bo"], "Location": []}"#).unwrap();
        assert_eq!(
            json[0],
            ("Person".into(), vec!["Ann".to_string(), "Bo".into()])
        );
        let lines = parse_label_column("Ann%Person\nParis%Location\nBo%Person").unwrap();
        assert_eq!(lines[0].1, vec!["Ann".to_string(), "Bo".into()]);
        assert_eq!(lines[1], ("Location".into(), vec!["Paris".to_string()]));
        assert!(parse_label_column("just text").is_err());
        assert_eq!(parse_list_column(r#"["a", "b"]"#).unwrap().len(), 2);
        assert!(parse_list_column("a, b")
            .unwrap_err()
            .contains("not a JSON list"));
        assert!(parse_list_column("").unwrap().is_empty());
    }

    #[test]
    fn canonical_json_has_every_type_in_order() {
        let types = vec!["Location".to_string(), "Person".into()];
        let out = canonical_json(&types, &[("Person".into(), vec!["Ann \"A\"".into()])]);
        assert_eq!(out, r#"{"Location": [], "Person": ["Ann \"A\""]}"#);
    }

    #[test]
    fn repeated_entities_take_successive_occurrences_as_autolabel() {
        let text = "Ünal met Bo, then Bo met Ünal and Bo.";
        let pairs: Vec<(String, String)> = [
            ("P", "Bo"),
            ("P", "Ünal"),
            ("P", "Bo"),
            ("P", "Bo"),
            ("P", "Bo"),
            ("L", "Rome"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let spans = text_spans(text, &pairs);
        let starts: Vec<(i64, i64)> = spans.iter().map(|s| (s.start, s.end)).collect();
        // Character offsets (Ü is one character); a 4th "Bo" falls back to the last occurrence.
        assert_eq!(
            starts,
            vec![(9, 11), (0, 4), (18, 20), (34, 36), (34, 36), (-1, -1)]
        );
    }

    #[test]
    fn chunks_split_words_spaces_and_punctuation() {
        assert_eq!(
            chunks("AL-AIN , U.S. 1996"),
            vec!["AL", "-", "AIN", " ", ",", " ", "U", ".", "S", ".", " ", "1996"]
        );
        let g = entity_grammar(&["Person".into()], "say \"hi\"");
        assert!(g.contains(r#"\\\"hi\\\""#) || g.contains("\\\\\\\""), "{g}");
    }
}
