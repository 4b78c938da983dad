//! A Hugging Face `config.json`, read with errors that name the file and the key.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Architectures (`model_type`) whose safetensors weights this crate can run.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "t5", "umt5"];

#[derive(Debug)]
pub struct HfConfig {
    pub path: PathBuf,
    pub values: serde_json::Map<String, Value>,
}

impl HfConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        match value {
            Value::Object(values) => Ok(HfConfig {
                path: path.to_path_buf(),
                values,
            }),
            _ => bail!("{} must hold a JSON object", path.display()),
        }
    }

    /// `model_type`, checked against the supported architectures.
    pub fn model_type(&self) -> Result<String> {
        let t = self.string("model_type")?;
        if !SUPPORTED_MODEL_TYPES.contains(&t.as_str()) {
            bail!(
                "{}: model_type '{t}' is not supported; supported architectures: {} (GGUF files: llama, qwen2)",
                self.path.display(),
                SUPPORTED_MODEL_TYPES.join(", ")
            )
        }
        Ok(t)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key).filter(|v| !v.is_null())
    }

    fn missing(&self, key: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: required key '{key}' is missing; the config.json does not describe a complete model",
            self.path.display()
        )
    }

    fn bad(&self, key: &str, want: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: key '{key}' must be {want}, found {}",
            self.path.display(),
            self.values[key]
        )
    }

    pub fn string(&self, key: &str) -> Result<String> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_str()
            .map(String::from)
            .ok_or_else(|| self.bad(key, "a string"))
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.get(key).map(|_| self.string(key)).transpose()
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        match v.as_u64() {
            Some(n) if n > 0 => Ok(n as usize),
            _ => Err(self.bad(key, "a positive integer")),
        }
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key).map(|_| self.usize(key)).transpose()
    }

    /// A token id (0 allowed); lists (several end tokens) give their first entry.
    pub fn opt_token_id(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(a.first().and_then(Value::as_u64).map(|x| x as u32)),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as u32))
                .ok_or_else(|| self.bad(key, "a token id")),
        }
    }

    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        v.as_f64().ok_or_else(|| self.bad(key, "a number"))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|_| self.f64(key)).transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(key, "true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_key() {
        let p = Path::new("m/config.json");
        let c = HfConfig::parse(r#"{"model_type": "gpt2", "hidden_size": "big"}"#, p).unwrap();
        let e = c.model_type().unwrap_err().to_string();
        assert!(
            e.contains("m/config.json") && e.contains("gpt2") && e.contains("qwen2, t5"),
            "{e}"
        );
        let e = c.usize("hidden_size").unwrap_err().to_string();
        assert!(
            e.contains("'hidden_size' must be a positive integer"),
            "{e}"
        );
        let e = c.usize("num_hidden_layers").unwrap_err().to_string();
        assert!(e.contains("'num_hidden_layers' is missing"), "{e}");
        assert!(HfConfig::parse("[1]", p).is_err());
        assert!(HfConfig::parse("{", p)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
    }
}
