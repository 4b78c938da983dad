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

/// `<data stem>.labeled.csv` in the current directory, the default output of `run`.
pub fn default_out(data: &Path, suffix: &str) -> PathBuf {
    let stem = data.file_stem().and_then(|s| s.to_str()).unwrap_or("data");
    PathBuf::from(format!("{stem}.{suffix}.csv"))
}

pub fn write_output(path: &Path, data: &Dataset, extra: &OutputColumns) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to the output directory {}", dir.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    if jsonl {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        for (row, values) in data.rows.iter().zip(&extra.rows) {
            let mut obj = serde_json::Map::new();
            for (c, v) in data.columns.iter().zip(&row.fields) {
                obj.insert(c.clone(), v.clone().into());
            }
            for (c, v) in extra.names.iter().zip(values) {
                obj.insert(c.clone(), v.clone().into());
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
        let mut w = csv::WriterBuilder::new()
            .delimiter(delimiter)
            .from_writer(tmp.as_file_mut());
        w.write_record(data.columns.iter().chain(extra.names.iter()))?;
        for (row, values) in data.rows.iter().zip(&extra.rows) {
            w.write_record(row.fields.iter().chain(values.iter()))?;
        }
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write output file {}", path.display()))?;
    Ok(())
}
