//! Reading datasets (CSV with any delimiter, TSV with quoting off, JSONL) into rows that keep their
//! line numbers. A malformed row is kept with an error instead of stopping the read.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Field delimiter; default from the extension (`.tsv` tab, else comma).
    pub delimiter: Option<u8>,
    /// Treat quote characters as ordinary text (needed for files like the SMS spam TSV).
    pub disable_quoting: bool,
    /// Replace bytes that are not UTF-8 with U+FFFD (with a warning) instead of stopping.
    pub lossy: bool,
}

#[derive(Debug, Clone)]
pub struct Row {
    /// 1-based line number in the file where the row starts.
    pub line: u64,
    /// One value per column (short rows are padded with empty values).
    pub fields: Vec<String>,
    /// Why this row cannot be labeled, if it is malformed.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// Read as delimited text with quoting off, and with which delimiter: an output in the same
    /// format is written the same way, so it reads back with the same config.
    pub unquoted_delimiter: Option<u8>,
    index: HashMap<String, usize>,
}

impl Dataset {
    pub fn new(path: PathBuf, columns: Vec<String>, rows: Vec<Row>) -> Self {
        let index = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        Dataset {
            path,
            columns,
            rows,
            unquoted_delimiter: None,
            index,
        }
    }

    pub fn read(path: &Path, opts: &ReadOptions) -> Result<Self> {
        if !path.exists() {
            bail!("data file {} does not exist", path.display())
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read data file {}", path.display()))?;
        Self::parse(path, &bytes, opts)
    }

    /// Parses a file's bytes; `path` names the file in messages and picks the format by extension.
    pub fn parse(path: &Path, bytes: &[u8], opts: &ReadOptions) -> Result<Self> {
        let owned;
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) if opts.lossy => {
                owned = String::from_utf8_lossy(bytes).into_owned();
                eprintln!(
                    "warning: data file {}: bytes that are not UTF-8 (first at offset {}, line {}) were replaced with U+FFFD (--lossy)",
                    path.display(),
                    e.valid_up_to(),
                    line_at(bytes, e.valid_up_to())
                );
                &owned
            }
            Err(e) => bail!(
                "data file {} is not UTF-8: invalid byte 0x{:02x} at offset {} (line {}); convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass --lossy to replace such bytes",
                path.display(),
                bytes[e.valid_up_to()],
                e.valid_up_to(),
                line_at(bytes, e.valid_up_to())
            ),
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            bail!("data file {} is empty", path.display())
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_lowercase();
        let ds = if ext == "jsonl" || ext == "ndjson" {
            read_jsonl(path, text)?
        } else {
            let delimiter = opts
                .delimiter
                .unwrap_or(if ext == "tsv" { b'\t' } else { b',' });
            let mut ds = read_delimited(path, text, delimiter, opts.disable_quoting)?;
            if opts.disable_quoting {
                ds.unquoted_delimiter = Some(delimiter);
            }
            ds
        };
        if ds.rows.is_empty() {
            bail!(
                "data file {} has a header but no rows; add rows to label",
                path.display()
            )
        }
        Ok(ds)
    }

    pub fn column(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn value<'a>(&self, row: &'a Row, column: &str) -> Option<&'a str> {
        self.column(column)
            .and_then(|i| row.fields.get(i))
            .map(String::as_str)
    }
}

/// 1-based line number of a byte offset.
fn line_at(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn read_delimited(
    path: &Path,
    text: &str,
    delimiter: u8,
    disable_quoting: bool,
) -> Result<Dataset> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(!disable_quoting)
        .flexible(true)
        .has_headers(true)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if columns.iter().all(|c| c.is_empty()) {
        bail!("{}: the header row is empty", path.display())
    }
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c) {
            bail!(
                "{}: column '{c}' appears twice in the header",
                path.display()
            )
        }
    }
    if columns.len() == 1
        && delimiter != b'\t'
        && text.lines().next().is_some_and(|l| l.contains('\t'))
    {
        eprintln!(
            "warning: {} has a single column but its header contains tabs; set dataset.delimiter to \"\\t\" if it is tab-separated",
            path.display()
        );
    }
    let newlines: Vec<u64> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i as u64)
        .collect();
    let bytes = text.as_bytes();
    let line_of = |byte: u64| {
        // With CRLF, csv may place a record at the '\n' that ends the previous line.
        let mut b = byte as usize;
        while b < bytes.len() && (bytes[b] == b'\r' || bytes[b] == b'\n') {
            b += 1;
        }
        newlines.partition_point(|&n| (n as usize) < b) as u64 + 1
    };
    let mut rows = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        // Line numbers come from byte offsets (csv's own line count differs between LF and CRLF).
        let line = line_of(reader.position().byte());
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map(|p| line_of(p.byte())).unwrap_or(line);
                let mut fields: Vec<String> = record.iter().map(String::from).collect();
                let error = if fields.len() != columns.len() {
                    let msg = format!(
                        "{}, line {line}: expected {} fields, found {}",
                        path.display(),
                        columns.len(),
                        fields.len()
                    );
                    let msg = if fields.len() > columns.len() {
                        format!("{msg}; extra fields: {:?}", &fields[columns.len()..])
                    } else {
                        msg
                    };
                    fields.resize(columns.len(), String::new());
                    Some(msg)
                } else {
                    None
                };
                rows.push(Row {
                    line,
                    fields,
                    error,
                });
            }
            Err(e) => bail!("{}, line {line}: cannot parse CSV: {e}", path.display()),
        }
    }
    Ok(Dataset::new(path.to_path_buf(), columns, rows))
}

fn read_jsonl(path: &Path, text: &str) -> Result<Dataset> {
    let mut columns: Vec<String> = Vec::new();
    let mut parsed = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) {
            Ok(obj) => {
                for k in obj.keys() {
                    if !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
                parsed.push((line_no, Ok(obj)));
            }
            Err(e) => parsed.push((
                line_no,
                Err(format!(
                    "{}, line {line_no}: not a JSON object: {e}",
                    path.display()
                )),
            )),
        }
    }
    if columns.is_empty() {
        bail!("{}: no JSON object found", path.display())
    }
    let rows = parsed
        .into_iter()
        .map(|(line, obj)| match obj {
            Ok(obj) => Row {
                line,
                fields: columns
                    .iter()
                    .map(|c| match obj.get(c) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    })
                    .collect(),
                error: None,
            },
            Err(msg) => Row {
                line,
                fields: vec![String::new(); columns.len()],
                error: Some(msg),
            },
        })
        .collect();
    Ok(Dataset::new(path.to_path_buf(), columns, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        (dir, p)
    }

    #[test]
    fn csv_with_bom_crlf_quotes_and_a_short_row() {
        let (_d, p) = write(
            "a.csv",
            b"\xef\xbb\xbfexample,label\r\n\"a, b\",x\r\nonly\r\nc,y\r\n",
        );
        let ds = Dataset::read(&p, &ReadOptions::default()).unwrap();
        assert_eq!(ds.columns, vec!["example", "label"]);
        assert_eq!(ds.rows.len(), 3);
        assert_eq!(ds.rows[0].fields, vec!["a, b", "x"]);
        let err = ds.rows[1].error.as_ref().unwrap();
        assert!(
            err.contains("line 3") && err.contains("expected 2 fields, found 1"),
            "{err}"
        );
        assert_eq!(ds.rows[2].line, 4);
    }

    #[test]
    fn tsv_without_quoting_keeps_quotes() {
        let (_d, p) = write("a.tsv", b"Label\tSMS\nham\tsay \"hi\nspam\tok\n");
        let opts = ReadOptions {
            delimiter: None,
            disable_quoting: true,
            lossy: false,
        };
        let ds = Dataset::read(&p, &opts).unwrap();
        assert_eq!(ds.rows[0].fields, vec!["ham", "say \"hi"]);
        assert_eq!(ds.rows.len(), 2);
    }

    #[test]
    fn jsonl_rows_and_bad_lines() {
        let (_d, p) = write(
            "a.jsonl",
            b"{\"example\": \"hi\", \"label\": \"x\"}\nnot json\n",
        );
        let ds = Dataset::read(&p, &ReadOptions::default()).unwrap();
        assert_eq!(ds.rows.len(), 2);
        assert!(ds.rows[1].error.as_ref().unwrap().contains("line 2"));
    }

    #[test]
    fn non_utf8_and_missing_files_are_clear_errors() {
        let (_d, p) = write("a.csv", b"example\nab\xff\n");
        let err = Dataset::read(&p, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not UTF-8") && err.contains("offset 10") && err.contains("line 2"),
            "{err}"
        );
        let lossy = ReadOptions {
            lossy: true,
            ..ReadOptions::default()
        };
        let ds = Dataset::read(&p, &lossy).unwrap();
        assert_eq!(ds.rows[0].fields, vec!["ab\u{fffd}"]);
        let err = Dataset::read(Path::new("/nope.csv"), &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nope.csv") && err.contains("does not exist"));
    }
}
