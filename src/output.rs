//! Writing labeled rows: every input column, then the command's output columns. The file is
//! written to a temporary name next to the target and renamed into place, so it is never
//! half-written. The format follows the extension: .jsonl, .tsv, anything else CSV.

use crate::dataset::Dataset;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Columns appended to the input: names and one value per row.
pub struct OutputColumns {
    pub names: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl OutputColumns {
    pub fn new(names: Vec<String>, rows: usize) -> Self {
        OutputColumns {
            names,
            rows: vec![Vec::new(); rows],
        }
    }
}

/// Autolabel's spelling of booleans in output files.
pub fn bool_text(b: bool) -> String {
    if b { "True" } else { "False" }.to_string()
}

/// `<data stem>.<suffix>.<data extension>` (csv, tsv or jsonl; csv otherwise) in the current
/// directory: the default output of `run` and `score`, in the input's format.
pub fn default_out(data: &Path, suffix: &str) -> PathBuf {
    let stem = data.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    let ext = match data.extension().and_then(|e| e.to_str()) {
        Some(e) if ["tsv", "jsonl"].contains(&e.to_lowercase().as_str()) => e.to_lowercase(),
        _ => "csv".into(),
    };
    PathBuf::from(format!("{stem}.{suffix}.{ext}"))
}

/// The folder `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Output columns whose name is already an input column replace it in place (re-labeling a
/// labeled file keeps one set of columns); the others are appended.
/// Returns the header written (JSONL: the keys of every object).
pub fn write_output(path: &Path, data: &Dataset, extra: &OutputColumns) -> Result<Vec<String>> {
    let replaced: Vec<Option<usize>> = extra.names.iter().map(|n| data.column(n)).collect();
    let appended: Vec<&String> = extra
        .names
        .iter()
        .zip(&replaced)
        .filter(|(_, r)| r.is_none())
        .map(|(n, _)| n)
        .collect();
    let header: Vec<&String> = data.columns.iter().chain(appended).collect();
    let record = |fields: &[String], values: &[String]| -> Vec<String> {
        let mut out: Vec<String> = data
            .columns
            .iter()
            .enumerate()
            .map(|(i, _)| fields.get(i).cloned().unwrap_or_default())
            .collect();
        for (v, r) in values.iter().zip(&replaced) {
            match r {
                Some(i) => out[*i] = v.clone(),
                None => out.push(v.clone()),
            }
        }
        out
    };
    let dir = parent_dir(path);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to the output directory {}", dir.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    if jsonl {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        for (row, values) in data.rows.iter().zip(&extra.rows) {
            let mut obj = serde_json::Map::new();
            for (c, v) in header.iter().zip(record(&row.fields, values)) {
                obj.insert(c.to_string(), v.into());
            }
            serde_json::to_writer(&mut w, &obj)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    } else {
        let delimiter = if path.extension().is_some_and(|e| e == "tsv") {
            b'\t'
        } else {
            b','
        };
        // Input read with quoting off in this delimiter is written back the same way (its
        // fields cannot hold the delimiter or a newline), so it reads back with the same config.
        let unquoted = data.unquoted_delimiter == Some(delimiter);
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .quote_style(if unquoted {
                csv::QuoteStyle::Never
            } else {
                csv::QuoteStyle::Necessary
            })
            .from_writer(tmp.as_file_mut());
        let clean = |v: String| -> String {
            if unquoted {
                v.replace([delimiter as char, '\n', '\r'], " ")
            } else {
                v
            }
        };
        w.write_record(&header)?;
        for (row, values) in data.rows.iter().zip(&extra.rows) {
            w.write_record(record(&row.fields, values).into_iter().map(clean))?;
        }
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write output file {}", path.display()))?;
    Ok(header.into_iter().cloned().collect())
}
