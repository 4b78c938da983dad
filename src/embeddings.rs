//! The embedding model a config asks for (its `embedding` key, else all-MiniLM-L6-v2) and an
//! on-disk cache of embeddings keyed by the model's weights sha256 and the text's sha256.

use crate::config::{TaskConfig, API_PROVIDERS};
use crate::dataset::{Dataset, Row};
use crate::prompt::PromptBuilder;
use anyhow::{bail, Context, Result};
use autolabel_models::embedding::source::{resolve_embedding_model, EmbeddingCard};
use autolabel_models::embedding::Embedder;
use autolabel_models::sources::fetch::cache_root;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

pub struct Embeddings {
    pub embedder: Embedder,
    /// The model as the config named it (or the default's name).
    pub model_name: String,
    cache: Option<Mutex<Connection>>,
}

/// The embedding model named by the config's `embedding.model` (a built-in name, a local
/// folder or a Hub sentence-transformers repo); API providers and no key mean the default.
/// Returns the name and a notice when the config named an API model.
pub fn model_name(config: &TaskConfig) -> Result<(String, Option<String>)> {
    let default = EmbeddingCard::builtin().upstream;
    let Some(value) = &config.embedding else {
        return Ok((default, None));
    };
    let Some(obj) = value.as_object() else {
        bail!(
            "{}: config key 'embedding' must be an object such as {{\"model\": \"{default}\"}}",
            config.source
        )
    };
    for key in obj.keys() {
        if key != "model" && key != "provider" {
            bail!(
                "{}: config key 'embedding.{key}' is not known (known: model, provider)",
                config.source
            )
        }
    }
    let text = |key: &str| -> Result<Option<String>> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!(
                "{}: config key 'embedding.{key}' must be a string",
                config.source
            ),
        }
    };
    let provider = text("provider")?;
    let model = text("model")?;
    if let Some(p) = provider.as_deref().filter(|p| API_PROVIDERS.contains(p)) {
        return Ok((
            default.clone(),
            Some(format!(
                "embedding.provider '{p}' is an API; embeddings are computed locally with {default}"
            )),
        ));
    }
    Ok((model.unwrap_or(default), None))
}

impl Embeddings {
    /// Loads the config's embedding model (fetching it if needed) and opens the cache.
    pub fn open(config: &TaskConfig) -> Result<(Self, Option<String>)> {
        let (name, notice) = model_name(config)?;
        let root = cache_root();
        let what = || format!("{}: config key 'embedding.model' ('{name}')", config.source);
        let dir = resolve_embedding_model(&name, &config.base_dir, &root).with_context(what)?;
        let embedder = Embedder::load(&dir).with_context(what)?;
        let cache = match open_cache(&root.join("embeddings.sqlite")) {
            Ok(c) => Some(Mutex::new(c)),
            Err(e) => {
                eprintln!("warning: embeddings will not be cached on disk: {e:#}");
                None
            }
        };
        Ok((
            Embeddings {
                embedder,
                model_name: name,
                cache,
            },
            notice,
        ))
    }

    /// Embeddings of `texts` (in order): cached ones read back, the rest computed and stored.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<Vec<u8>> = texts
            .iter()
            .map(|t| Sha256::digest(t.as_bytes()).to_vec())
            .collect();
        let model = &self.embedder.weights_sha256;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        if let Some(c) = &self.cache {
            let conn = c.lock().expect("embedding cache lock");
            let mut stmt = conn
                .prepare_cached("SELECT vector FROM embeddings WHERE model = ?1 AND text = ?2")?;
            for (slot, key) in out.iter_mut().zip(&keys) {
                let blob: Option<Vec<u8>> = stmt
                    .query_row(params![model, key], |r| r.get(0))
                    .optional()?;
                *slot = blob.filter(|b| b.len() == 4 * self.embedder.dim).map(|b| {
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect()
                });
            }
        }
        // Each distinct missing text once.
        let mut first: HashMap<&[u8], usize> = HashMap::new();
        let mut todo: Vec<usize> = Vec::new();
        for (i, slot) in out.iter().enumerate() {
            if slot.is_none() && !first.contains_key(keys[i].as_slice()) {
                first.insert(&keys[i], todo.len());
                todo.push(i);
            }
        }
        if !todo.is_empty() {
            let fresh = self
                .embedder
                .embed(&todo.iter().map(|&i| texts[i].as_str()).collect::<Vec<_>>())?;
            if let Some(c) = &self.cache {
                let mut conn = c.lock().expect("embedding cache lock");
                let tx = conn.transaction()?;
                {
                    let mut stmt = tx.prepare_cached(
                        "INSERT OR REPLACE INTO embeddings (model, text, vector) VALUES (?1, ?2, ?3)",
                    )?;
                    for (&i, v) in todo.iter().zip(&fresh) {
                        let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        stmt.execute(params![model, keys[i], blob])?;
                    }
                }
                tx.commit()?;
            }
            for (slot, key) in out.iter_mut().zip(&keys) {
                if slot.is_none() {
                    *slot = Some(fresh[first[key.as_slice()]].clone());
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every text embedded"))
            .collect())
    }
}

fn open_cache(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // Several runs (shards) may share the cache.
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS embeddings (
             model TEXT NOT NULL, text BLOB NOT NULL, vector BLOB NOT NULL,
             PRIMARY KEY (model, text));",
    )
    .with_context(|| format!("cannot set up {}", path.display()))?;
    Ok(conn)
}

/// What the selections of one task share: the embedding model, opened on first use, and the
/// rows' embeddings, computed once (few-shot and label selection compare the same row texts).
pub struct TaskEmbeddings<'a> {
    config: &'a TaskConfig,
    data: &'a Dataset,
    /// The columns a row or example is compared by: the template's input columns, sorted.
    columns: Vec<String>,
    store: Option<Embeddings>,
    rows: Option<Vec<(u64, Vec<f32>)>>,
}

impl<'a> TaskEmbeddings<'a> {
    pub fn new(config: &'a TaskConfig, data: &'a Dataset, prompt: &PromptBuilder) -> Self {
        let mut columns = prompt.input_columns();
        columns.sort();
        TaskEmbeddings {
            config,
            data,
            columns,
            store: None,
            rows: None,
        }
    }

    /// The text a row or example is compared by: the input columns' values, sorted by column
    /// name, joined by a space (as Autolabel does).
    pub fn text(&self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        self.columns
            .iter()
            .map(|c| lookup(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The embedding model (opened, and fetched if needed, on first use).
    pub fn store(&mut self, notices: &mut Vec<String>) -> Result<&Embeddings> {
        if self.store.is_none() {
            let (store, notice) = Embeddings::open(self.config)?;
            notices.extend(notice);
            self.store = Some(store);
        }
        Ok(self.store.as_ref().expect("opened above"))
    }

    /// Every row that can be labeled, by line number, with its embedding.
    pub fn rows(&mut self, notices: &mut Vec<String>) -> Result<&[(u64, Vec<f32>)]> {
        if self.rows.is_none() {
            let data = self.data;
            let usable: Vec<&Row> = data.rows.iter().filter(|r| r.error.is_none()).collect();
            let texts: Vec<String> = usable
                .iter()
                .map(|r| self.text(&|c: &str| data.value(r, c).map(String::from)))
                .collect();
            let vectors = self.store(notices)?.embed(&texts)?;
            self.rows = Some(usable.iter().map(|r| r.line).zip(vectors).collect());
        }
        Ok(self.rows.as_deref().expect("embedded above"))
    }

    /// The number of rows that can be labeled (what [`TaskEmbeddings::rows`] embeds).
    pub fn row_count(&self) -> usize {
        self.data.rows.iter().filter(|r| r.error.is_none()).count()
    }
}
