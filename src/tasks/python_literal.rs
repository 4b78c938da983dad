//! Python literals as Autolabel's output files hold them (pandas writes a dict or list label with
//! `str()`: `{'brand': 'sony', 'tags': ['a', 'b']}`), read into JSON values: dicts, lists,
//! tuples, quoted strings with their escapes, numbers, True, False and None.

use serde_json::Value;

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Reader<'_> {
    fn skip_space(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.chars.next();
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.skip_space();
        match *self.chars.peek()? {
            '{' => {
                self.chars.next();
                let mut map = serde_json::Map::new();
                loop {
                    self.skip_space();
                    if self.chars.peek() == Some(&'}') {
                        self.chars.next();
                        return Some(Value::Object(map));
                    }
                    let key = match self.value()? {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    self.skip_space();
                    if self.chars.next()? != ':' {
                        return None;
                    }
                    let v = self.value()?;
                    map.insert(key, v);
                    self.skip_space();
                    match self.chars.next()? {
                        ',' => continue,
                        '}' => return Some(Value::Object(map)),
                        _ => return None,
                    }
                }
            }
            open @ ('[' | '(') => {
                self.chars.next();
                let close = if open == '[' { ']' } else { ')' };
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    if self.chars.peek() == Some(&close) {
                        self.chars.next();
                        return Some(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.skip_space();
                    match self.chars.next()? {
                        ',' => continue,
                        c if c == close => return Some(Value::Array(items)),
                        _ => return None,
                    }
                }
            }
            quote @ ('\'' | '"') => {
                self.chars.next();
                let mut s = String::new();
                loop {
                    match self.chars.next()? {
                        '\\' => match self.chars.next()? {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            'u' => {
                                let hex: String =
                                    (0..4).filter_map(|_| self.chars.next()).collect();
                                s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                            }
                            c => s.push(c),
                        },
                        c if c == quote => return Some(Value::String(s)),
                        c => s.push(c),
                    }
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = self.chars.peek() {
                    if c.is_alphanumeric() || matches!(c, '.' | '-' | '+' | '_') {
                        word.push(c);
                        self.chars.next();
                    } else {
                        break;
                    }
                }
                match word.as_str() {
                    "True" => Some(Value::Bool(true)),
                    "False" => Some(Value::Bool(false)),
                    "None" => Some(Value::Null),
                    w => serde_json::from_str::<serde_json::Number>(w)
                        .ok()
                        .map(Value::Number),
                }
            }
        }
    }
}

/// The JSON value of a Python literal, or None when `text` is not one (trailing text included).
pub fn parse(text: &str) -> Option<Value> {
    let mut r = Reader {
        chars: text.chars().peekable(),
    };
    let v = r.value()?;
    r.skip_space();
    r.chars.next().is_none().then_some(v)
}

/// JSON if `text` is JSON, else a Python literal.
pub fn json_or_python(text: &str) -> Option<Value> {
    serde_json::from_str(text.trim())
        .ok()
        .or_else(|| parse(text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn python_reprs_read_as_json() {
        assert_eq!(
            parse(r#"{'brand': 'sony', "it's": ['a\'b', 2, 1.5, True, None], 'e': ()}"#),
            Some(json!({"brand": "sony", "it's": ["a'b", 2, 1.5, true, null], "e": []}))
        );
        assert_eq!(parse("['\\u00e9']"), Some(json!(["é"])));
        assert_eq!(parse("{'a': 'b'} x"), None);
        assert_eq!(parse("['a' 'b']"), None);
        assert_eq!(parse("{'a' 'b'}"), None);
        assert_eq!(json_or_python(r#"{"a": "b"}"#), Some(json!({"a": "b"})));
    }
}
