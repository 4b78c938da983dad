//! Writing labeled rows: every input column, then Autolabel's output columns. The file is written
//! to a temporary name next to the target and renamed into place, so it is never half-written.

use crate::dataset::Dataset;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Autolabel's output values for one row.
#[derive(Debug, Clone, Default)]
pub struct RowOutput {
    pub label: String,
    pub confidence: Option<f32>,
    pub successfully_labeled: bool,
    pub error: String,
}

pub fn output_columns(task_name: &str) -> [String; 4] {
    ["label", "confidence", "successfully_labeled", "error"]
        .map(|c| format!("{task_name}_task_{c}"))
}

pub fn write_output(
    path: &Path,
    data: &Dataset,
    task_name: &str,
    outputs: &[RowOutput],
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to the output directory {}", dir.display()))?;
    let extra = output_columns(task_name);
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let values = |o: &RowOutput| {
        [
            o.label.clone(),
            o.confidence.map(|c| format!("{c:.6}")).unwrap_or_default(),
            if o.successfully_labeled {
                "True"
            } else {
                "False"
            }
            .to_string(),
            o.error.clone(),
        ]
    };
    if jsonl {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        for (row, out) in data.rows.iter().zip(outputs) {
            let mut obj = serde_json::Map::new();
            for (c, v) in data.columns.iter().zip(&row.fields) {
                obj.insert(c.clone(), v.clone().into());
            }
            for (c, v) in extra.iter().zip(values(out)) {
                obj.insert(c.clone(), v.into());
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
        w.write_record(data.columns.iter().chain(extra.iter()))?;
        for (row, out) in data.rows.iter().zip(outputs) {
            w.write_record(row.fields.iter().cloned().chain(values(out)))?;
        }
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write output file {}", path.display()))?;
    Ok(())
}
