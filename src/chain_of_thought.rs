//! Chain of thought for label-set tasks (Autolabel's `prompt.chain_of_thought`): every row first
//! gets a one-line explanation, generated under a constraint with a token bound, and its labels
//! are then scored exactly after that line, each written as Autolabel writes a chain-of-thought
//! answer (`{"label": "..."}`). The explanation is the only generated text; the label is still
//! a probability over the whole label set, never parsed out of what the model wrote.

use crate::dataset::{Dataset, Row};
use crate::generation_pass::{generate_rows, Generates, GenerationResult};
use crate::labeler::Labeler;
use crate::scoring_pass::PassOptions;
use anyhow::Result;
use autolabel_models::generation::Grammar;

/// Default bound on an explanation's tokens (`--explanation-tokens`): Autolabel asks for at most
/// two sentences, which small models write in 30-80 tokens.
pub const DEFAULT_EXPLANATION_TOKENS: usize = 96;

/// `json.dumps(value)` for a string, as Python writes it (ASCII only: other characters as
/// `\uXXXX`, surrogate pairs beyond the BMP).
pub fn python_json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", u));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A label as Autolabel shows it in a chain-of-thought answer: `json.dumps({"label": label})`.
pub fn label_json(label: &str) -> String {
    format!("{{\"label\": {}}}", python_json_string(label))
}

/// The constraint on an explanation: one line of at most `max_tokens` tokens that does not start
/// like an answer (`{`). When the end token is itself a newline (a
/// prompt without a chat template) the end token closes the line; otherwise the line may end
/// with a newline before the end token.
pub fn explanation_grammar(max_tokens: usize, newline_is_end: bool) -> Grammar {
    let close = if newline_is_end { "" } else { " \"\\n\"?" };
    Grammar::Lark(format!(
        "start: expl{close}\nexpl[max_tokens={max_tokens}]: /[^\\n{{][^\\n]*/\n"
    ))
}

/// The constraint on a seed example's explanation (`explain`): with a chat template, several
/// lines (the model ends its turn when it is done), at most `max_tokens` tokens, not starting
/// with `{`; without one the newline ends the answer, so one line as in
/// [`explanation_grammar`]. The lines are joined into one ([`one_line`]) so that examples show
/// explanations in the form a chain-of-thought run generates them.
pub fn seed_explanation_grammar(labeler: &Labeler, max_tokens: usize) -> Result<Grammar> {
    if newline_is_end(labeler)? {
        return Ok(explanation_grammar(max_tokens, true));
    }
    Ok(Grammar::Lark(format!(
        "start: expl\nexpl[max_tokens={max_tokens}]: /[^\\n{{](.|\\n)*/\n"
    )))
}

/// An explanation on one line: its lines joined by a space, runs of whitespace made one.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A row's explanation: its text and the tokens that follow the prompt before the candidates
/// (the explanation line and its newline).
#[derive(Debug, Clone)]
pub struct Explanation {
    pub text: String,
    pub tokens: Vec<u32>,
}

/// Every row's explanation, in file order, and what the generation pass measured.
pub struct Explained {
    pub rows: Vec<Result<Explanation, String>>,
    pub pass: GenerationResult,
}

/// What the explanation pass generates for each row of a label-set task.
struct ExplanationSpec<'a> {
    labeler: &'a Labeler<'a>,
    grammar: Grammar,
}

impl Generates for ExplanationSpec<'_> {
    fn grammar(&self, _: &Dataset, _: &Row) -> Result<Grammar, String> {
        Ok(self.grammar.clone())
    }
    fn max_answer_tokens(&self, _: &Dataset, _: &Row, _: usize) -> usize {
        self.labeler.explanation_budget()
    }
    fn reserved_tokens(&self, data: &Dataset, row: &Row) -> Result<usize, String> {
        self.labeler.longest_candidate(data, row)
    }
}

/// Whether the labeler's end-of-answer token is the newline (no chat template).
fn newline_is_end(labeler: &Labeler) -> Result<bool> {
    Ok(labeler.answer_end() == labeler.model().encode("\n")?.as_slice())
}

/// The explanation grammar for this labeler's model and prompt form (`max_tokens` per line).
pub fn grammar_for(labeler: &Labeler, max_tokens: usize) -> Result<Grammar> {
    Ok(explanation_grammar(max_tokens, newline_is_end(labeler)?))
}

/// Generates every row's explanation (rows that cannot be labeled keep their error). The
/// prompt's input is cut exactly as the scoring pass after it will cut it.
pub fn explain_rows(data: &Dataset, labeler: &Labeler, opts: PassOptions) -> Result<Explained> {
    let max = labeler
        .explanation_tokens()
        .unwrap_or(DEFAULT_EXPLANATION_TOKENS);
    let spec = ExplanationSpec {
        labeler,
        grammar: grammar_for(labeler, max)?,
    };
    let mut pass = generate_rows(data, labeler, &spec, opts, None)?;
    let newline = labeler.model().encode("\n")?;
    let rows = std::mem::take(&mut pass.rows)
        .into_iter()
        .map(|r| {
            r.map(|a| {
                let mut tokens = a.tokens.clone();
                if !a.text.ends_with('\n') {
                    tokens.extend(&newline);
                }
                Explanation {
                    text: a.text.trim().to_string(),
                    tokens,
                }
            })
        })
        .collect();
    Ok(Explained { rows, pass })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_written_as_python_json_dumps() {
        assert_eq!(label_json("spam"), r#"{"label": "spam"}"#);
        assert_eq!(
            label_json("say \"hi\"\\ café 😀"),
            r#"{"label": "say \"hi\"\\ caf\u00e9 \ud83d\ude00"}"#
        );
    }

    #[test]
    fn explanations_are_joined_into_one_line() {
        assert_eq!(
            one_line("Let's think:\n1. It offers a prize.\n\n2. So  spam. "),
            "Let's think: 1. It offers a prize. 2. So spam."
        );
    }

    #[test]
    fn explanation_grammar_is_one_bounded_line() {
        let g = explanation_grammar(40, false).text();
        assert!(g.contains("max_tokens=40") && g.contains("\"\\n\"?"), "{g}");
        assert!(!explanation_grammar(40, true).text().contains("\"\\n\"?"));
    }
}
