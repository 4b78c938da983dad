//! Constraints on generated answers through llguidance: a JSON schema, a Lark grammar, or a
//! substring of a given text, each compiled against the model's vocabulary by one parser factory
//! built once per tokenizer. A row's constraint is a [`Matcher`] that gives the tokens allowed
//! next and follows the tokens chosen.

use anyhow::{anyhow, Result};
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::TokEnv;
use llguidance::{Matcher, ParserFactory};

/// What an answer must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    /// JSON matching this schema (llguidance's JSON schema support), written on one line as
    /// Python's `json.dumps` writes it (`", "` between items, `": "` after keys, no other
    /// whitespace) unless the schema's own `x-guidance` options say otherwise. Free whitespace
    /// would let a model pad its answer with spaces instead of finishing it.
    JsonSchema(serde_json::Value),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
    /// A contiguous run of whole words of `text` (llguidance's `substring_words`), or one of
    /// `alternatives` verbatim (e.g. `unanswerable`).
    Substring {
        text: String,
        alternatives: Vec<String>,
    },
}

impl Grammar {
    /// `schema` with llguidance's JSON formatting options set to Python's `json.dumps` layout
    /// (unless the schema sets its own `x-guidance`): one line, `", "` and `": "`.
    pub fn python_layout(schema: &serde_json::Value) -> serde_json::Value {
        let mut schema = schema.clone();
        if let Some(obj) = schema.as_object_mut() {
            obj.entry("x-guidance").or_insert_with(|| {
                serde_json::json!({
                    "whitespace_flexible": false,
                    "item_separator": ", ",
                    "key_separator": ": "
                })
            });
        }
        schema
    }

    /// The Lark text of a [`Grammar::Substring`] (the other forms are not rewritten).
    pub fn substring_lark(text: &str, alternatives: &[String]) -> String {
        let words = serde_json::json!({ "substring_words": text });
        let mut start = String::from("start: span");
        for a in alternatives {
            start.push_str(" | ");
            start.push_str(&serde_json::Value::String(a.clone()).to_string());
        }
        format!("{start}\nspan: %regex {words}\n")
    }

    /// The grammar as text: Lark (a substring constraint rewritten) or the JSON schema.
    pub fn text(&self) -> String {
        match self {
            Grammar::Lark(l) => l.clone(),
            Grammar::JsonSchema(s) => s.to_string(),
            Grammar::Substring { text, alternatives } => Self::substring_lark(text, alternatives),
        }
    }

    fn top_level(&self) -> TopLevelGrammar {
        match self {
            Grammar::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(Self::python_layout(schema))
            }
            Grammar::Lark(lark) => TopLevelGrammar::from_lark(lark.clone()),
            Grammar::Substring { text, alternatives } => {
                TopLevelGrammar::from_lark(Self::substring_lark(text, alternatives))
            }
        }
    }
}

/// Compiles grammars for one tokenizer (build once, share across rows and threads).
pub struct ConstraintCompiler {
    factory: ParserFactory,
}

impl ConstraintCompiler {
    /// A compiler for the vocabulary in `env` (see `tokenization::token_env`), whose
    /// end-of-sequence tokens end every constrained answer.
    pub fn new(env: &TokEnv) -> Result<Self> {
        let mut factory = ParserFactory::new_simple(env)?;
        factory.quiet();
        Ok(Self { factory })
    }

    pub fn env(&self) -> &TokEnv {
        self.factory.tok_env()
    }

    /// The end-of-answer tokens (the constraint's EOS set).
    pub fn end_tokens(&self) -> Vec<u32> {
        self.factory.tok_env().tok_trie().eos_tokens().to_vec()
    }

    /// A fresh matcher for `grammar`; a grammar llguidance rejects is an error with its reason.
    pub fn matcher(&self, grammar: &Grammar) -> Result<Matcher> {
        let parser = self
            .factory
            .create_parser(grammar.top_level())
            .map_err(|e| anyhow!("the answer's constraint is not valid: {e}"))?;
        let m = Matcher::new(Ok(parser));
        match m.get_error() {
            Some(e) => Err(anyhow!("the answer's constraint is not valid: {e}")),
            None => Ok(m),
        }
    }
}
