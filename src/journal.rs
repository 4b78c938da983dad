//! The run journal: every scored row is stored durably (SQLite, WAL, synchronous=FULL, one
//! transaction per batch) under a key that hashes everything that decides its scores: the model
//! file's sha256, the weight format and device, the prompt's token ids and every label's token
//! ids. A rerun of the same command after a crash reuses every stored row; a changed config or
//! model changes the keys of exactly the rows it affects. The journal lives beside the output
//! (`<out>.journal`).

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub type RowKey = [u8; 32];

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

/// Where the journal of an output file lives.
pub fn journal_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    out.with_file_name(name)
}

/// Hash of what decides every row's scores apart from the row itself.
pub fn settings_key(model_sha: &str, weights: &str, device: &str) -> RowKey {
    let mut h = Sha256::new();
    for part in ["autolabel-local-journal-1", model_sha, weights, device] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// A row's key: the settings plus its prompt and label token ids.
pub fn row_key(settings: &RowKey, prompt: &[u32], candidates: &[Vec<u32>]) -> RowKey {
    let mut h = Sha256::new();
    h.update(settings);
    h.update((prompt.len() as u64).to_le_bytes());
    for t in prompt {
        h.update(t.to_le_bytes());
    }
    h.update((candidates.len() as u64).to_le_bytes());
    for c in candidates {
        h.update((c.len() as u64).to_le_bytes());
        for t in c {
            h.update(t.to_le_bytes());
        }
    }
    h.finalize().into()
}

fn encode(token_logprobs: &[Vec<f32>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((token_logprobs.len() as u32).to_le_bytes());
    for c in token_logprobs {
        out.extend((c.len() as u32).to_le_bytes());
        for v in c {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Vec<Vec<f32>>> {
    let mut pos = 0;
    let u32_at = |pos: &mut usize| -> Option<u32> {
        let b = bytes.get(*pos..*pos + 4)?;
        *pos += 4;
        Some(u32::from_le_bytes(b.try_into().ok()?))
    };
    let n = u32_at(&mut pos)?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let len = u32_at(&mut pos)?;
        let mut c = Vec::with_capacity(len as usize);
        for _ in 0..len {
            c.push(f32::from_bits(u32_at(&mut pos)?));
        }
        out.push(c);
    }
    (pos == bytes.len()).then_some(out)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Progress of the run the journal last started.
#[derive(Debug, Clone)]
pub struct Progress {
    pub command: String,
    pub total: usize,
    pub done: usize,
    pub started: i64,
    pub updated: i64,
    pub finished: bool,
}

impl Journal {
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |e: rusqlite::Error| {
            anyhow::anyhow!(
                "cannot use the run journal {}: {e}; delete it or pass --fresh to start over",
                path.display()
            )
        };
        let conn = Connection::open(path).map_err(fail)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS scores (key BLOB PRIMARY KEY, logprobs BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS run_rows (idx INTEGER PRIMARY KEY, key BLOB NOT NULL);",
        )
        .map_err(fail)?;
        Ok(Journal {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing journal without creating one (for `status`).
    pub fn open_existing(path: &Path) -> Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        Self::open(path).map(Some)
    }

    /// Deletes a journal and its WAL files (`--fresh`).
    pub fn remove(path: &Path) -> Result<()> {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_os_string();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delete {}", path.display()))
                }
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
            params![name, value],
        )?;
        Ok(())
    }

    /// The sha256 of a model file; of a model directory, a sha256 over the shas of the files
    /// that decide its outputs (config, tokenizer files, weights). File shas are remembered by
    /// (path, size, mtime) so a resume does not hash them again.
    pub fn model_sha(&self, model: &Path) -> Result<String> {
        if !model.is_dir() {
            return self.file_sha(model);
        }
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(model)
            .with_context(|| format!("cannot list {}", model.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n == "config.json"
                    || n.starts_with("tokenizer")
                    || n == "spiece.model"
                    || n == "chat_template.jinja"
                    || n.ends_with(".safetensors")
                    || n.ends_with(".gguf")
            })
            .collect();
        files.sort();
        let mut h = Sha256::new();
        for f in &files {
            h.update(f.file_name().unwrap_or_default().as_encoded_bytes());
            h.update(self.file_sha(f)?.as_bytes());
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn file_sha(&self, model: &Path) -> Result<String> {
        // Files in a Hugging Face cache snapshot link to blobs named by their sha256.
        if let Ok(target) = std::fs::read_link(model) {
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(name.to_lowercase());
            }
        }
        let meta =
            std::fs::metadata(model).with_context(|| format!("cannot read {}", model.display()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("{} {} {mtime}", model.display(), meta.len());
        let name = format!("model_sha {id}");
        if let Some(sha) = self.meta(&name)? {
            return Ok(sha);
        }
        let sha = autolabel_models::sources::fetch::sha256_file(model)?;
        self.set_meta(&name, &sha)?;
        Ok(sha)
    }

    /// Records the rows of the run that starts now (for `status`), in one transaction.
    pub fn begin_run(&mut self, command: &str, keys: &[Option<RowKey>]) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM run_rows", [])?;
        {
            let mut ins = tx.prepare("INSERT INTO run_rows (idx, key) VALUES (?1, ?2)")?;
            for (i, k) in keys.iter().enumerate() {
                // Rows that cannot be scored have no key; they count as done.
                ins.execute(params![i as i64, k.map(|k| k.to_vec()).unwrap_or_default()])?;
            }
        }
        for (name, value) in [
            ("command", command.to_string()),
            ("total", keys.len().to_string()),
            ("started", now().to_string()),
            ("updated", now().to_string()),
            ("finished", "0".into()),
        ] {
            tx.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
                params![name, value],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn lookup(&self, key: &RowKey) -> Result<Option<Vec<Vec<f32>>>> {
        let bytes: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT logprobs FROM scores WHERE key = ?1",
                [&key[..]],
                |r| r.get(0),
            )
            .optional()?;
        Ok(bytes.and_then(|b| decode(&b)))
    }

    /// Stores a batch's scores durably in one transaction.
    pub fn record(&mut self, rows: &[(RowKey, &[Vec<f32>])]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut ins =
                tx.prepare("INSERT OR REPLACE INTO scores (key, logprobs) VALUES (?1, ?2)")?;
            for (k, lp) in rows {
                ins.execute(params![&k[..], encode(lp)])?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('updated', ?1)",
            [now().to_string()],
        )?;
        tx.commit()
            .with_context(|| format!("cannot write the run journal {}", self.path.display()))?;
        Ok(())
    }

    pub fn finish(&self) -> Result<()> {
        self.set_meta("finished", "1")?;
        self.set_meta("updated", &now().to_string())
    }

    pub fn progress(&self) -> Result<Progress> {
        let get = |n: &str| -> Result<i64> {
            Ok(self.meta(n)?.and_then(|v| v.parse().ok()).unwrap_or(0))
        };
        let done: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM run_rows r WHERE length(r.key) = 0 OR EXISTS (SELECT 1 FROM scores s WHERE s.key = r.key)",
            [],
            |r| r.get(0),
        )?;
        Ok(Progress {
            command: self.meta("command")?.unwrap_or_default(),
            total: get("total")? as usize,
            done: done as usize,
            started: get("started")?,
            updated: get("updated")?,
            finished: get("finished")? == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_survive_reopening_and_keys_follow_their_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(&dir.path().join("out.csv"));
        assert!(path.ends_with("out.csv.journal"));
        let s = settings_key("abc", "f32", "cpu");
        let k1 = row_key(&s, &[1, 2, 3], &[vec![4], vec![5, 6]]);
        assert_ne!(k1, row_key(&s, &[1, 2, 3], &[vec![4], vec![5, 7]]));
        assert_ne!(k1, row_key(&s, &[1, 2], &[vec![3, 4], vec![5, 6]]));
        assert_ne!(
            k1,
            row_key(
                &settings_key("abd", "f32", "cpu"),
                &[1, 2, 3],
                &[vec![4], vec![5, 6]]
            )
        );
        let lp = vec![vec![-0.5f32, -1e-9], vec![f32::MIN_POSITIVE, -3.25]];
        {
            let mut j = Journal::open(&path).unwrap();
            j.begin_run("run x", &[Some(k1), None, Some([7; 32])])
                .unwrap();
            j.record(&[(k1, &lp)]).unwrap();
        }
        let j = Journal::open_existing(&path).unwrap().unwrap();
        assert_eq!(j.lookup(&k1).unwrap(), Some(lp), "bit-exact");
        assert_eq!(j.lookup(&[9; 32]).unwrap(), None);
        let p = j.progress().unwrap();
        assert_eq!((p.total, p.done, p.finished), (3, 2, false));
        Journal::remove(&path).unwrap();
        assert!(!path.exists());
        assert!(decode(&[1, 0, 0]).is_none());
    }
}
