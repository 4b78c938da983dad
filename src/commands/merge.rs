//! `autolabel-local merge`: joins the outputs of `run --shard I/N` into the output one unsharded
//! run writes, byte for byte, after checking that the shards belong together (same config, data,
//! model and options, one of each index) and hold every row exactly once; prints the metrics of
//! the whole set. Nothing is written when a check fails.

use super::run::label_set_report;
use super::run_open::open_report;
use crate::config::TaskConfig;
use crate::dataset::{Dataset, ReadOptions};
use crate::shard::{sha256_file, Manifest, Shard};
use crate::tasks::build_task;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct MergeArgs {
    /// The merged output file (.csv, .tsv or .jsonl, as the shards).
    #[arg(long)]
    pub out: PathBuf,
    /// Shard outputs to merge. Default: every <out stem>.shard-I-of-N.<ext> beside --out.
    pub shards: Vec<PathBuf>,
    /// The task config, for the metrics. Default: the file the shards were made with (its
    /// path as they recorded it); either way it must be that same config.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub struct MergeSummary {
    pub rows: usize,
    pub shards: usize,
    pub errors: usize,
    pub accuracy: Option<f64>,
}

pub fn merge(args: &MergeArgs) -> Result<MergeSummary> {
    let files = if args.shards.is_empty() {
        discover(&args.out)?
    } else {
        args.shards.clone()
    };
    let mut shards = Vec::with_capacity(files.len());
    for f in &files {
        if same_file(f, &args.out) {
            bail!(
                "--out {} is one of the shard outputs; name another file for the merged output",
                args.out.display()
            )
        }
        shards.push((f.clone(), Manifest::read(f)?));
    }
    check_together(&shards)?;
    let owner = check_rows(&shards)?;
    let out_ext = extension(&args.out);
    let shard_ext = extension(&shards[0].0);
    if out_ext != shard_ext {
        bail!(
            "--out {} is a .{out_ext} file but the shards are .{shard_ext}; name the merged output .{shard_ext}",
            args.out.display()
        )
    }

    // The config the metrics need, checked before anything is written.
    let first = &shards[0].1;
    let config_path = match &args.config {
        Some(p) => p.clone(),
        None => PathBuf::from(&first.config.path),
    };
    let config_sha = sha256_file(&config_path).map_err(|_| {
        anyhow::anyhow!(
            "the shards were made with config {}, which is not there; pass it with --config",
            config_path.display()
        )
    })?;
    if config_sha != first.config.sha256 {
        bail!(
            "config {} is not the one the shards were made with (its sha256 differs); pass that config with --config",
            config_path.display()
        )
    }
    // Each shard's records as byte ranges of its file, then the merged file in row order.
    let mut bodies = Vec::with_capacity(shards.len());
    let mut header: Option<Vec<u8>> = None;
    for (path, m) in &shards {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let (head, records) = records(path, &bytes, m.unquoted)?;
        if records.len() != m.rows.len() {
            bail!(
                "{} holds {} rows but its manifest lists {}; run shard {} again",
                path.display(),
                records.len(),
                m.rows.len(),
                m.shard
            )
        }
        let head = bytes[head].to_vec();
        match &header {
            Some(h) if *h != head => bail!(
                "{} has another header than {}; run the shards again with the same options",
                path.display(),
                shards[0].0.display()
            ),
            Some(_) => {}
            None => header = Some(head),
        }
        bodies.push((bytes, records));
    }
    let mut next = vec![0usize; shards.len()];
    let mut answers = Vec::with_capacity(owner.len());
    let dir = crate::output::parent_dir(&args.out);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write to the output directory {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        w.write_all(header.as_deref().unwrap_or_default())?;
        for &s in &owner {
            let (bytes, records) = &bodies[s];
            w.write_all(&bytes[records[next[s]].clone()])?;
            answers.push(shards[s].1.answers[next[s]].clone());
            next[s] += 1;
        }
        w.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;

    let errors = answers.iter().filter(|a| a.is_none()).count();
    eprintln!(
        "merged {} shards of {}: {} rows ({} labeled, {errors} not labeled) -> {}",
        shards.len(),
        first.task,
        owner.len(),
        owner.len() - errors,
        args.out.display()
    );

    // The metrics of the whole set, from the merged file's ground truth.
    let config = TaskConfig::load(&config_path)?;
    let data = Dataset::read(
        &args.out,
        &ReadOptions {
            delimiter: None,
            disable_quoting: first.unquoted,
            lossy: false,
        },
    )?;
    let task = build_task(&config, &data)?;
    let accuracy = match task.open() {
        Some(open) => open_report(open, &data, &answers),
        None => {
            let labels: Vec<Option<(String, f32)>> = answers
                .iter()
                .map(|a| a.as_ref().map(|a| (a.label.clone(), a.confidence as f32)))
                .collect();
            label_set_report(task.as_ref(), &data, &labels)
        }
    };
    Ok(MergeSummary {
        rows: owner.len(),
        shards: shards.len(),
        errors,
        accuracy,
    })
}

fn extension(p: &Path) -> String {
    match p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_lowercase)
    {
        Some(e) if e == "tsv" || e == "jsonl" => e,
        _ => "csv".into(),
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The shard outputs beside `out`, all with one N.
fn discover(out: &Path) -> Result<Vec<PathBuf>> {
    let found = crate::shard::outputs_beside(out)?;
    let counts: std::collections::BTreeSet<usize> = found.iter().map(|(s, _)| s.count).collect();
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let ext = out.extension().unwrap_or_default().to_string_lossy();
    match counts.len() {
        0 => bail!(
            "no shard outputs beside {} (looked for {stem}.shard-I-of-N.{ext} in {}); name them after --out, or run `run --shard I/N --out {}` first",
            out.display(),
            crate::output::parent_dir(out).display(),
            out.display()
        ),
        1 => Ok(found.into_iter().map(|(_, p)| p).collect()),
        _ => bail!(
            "beside {} are shards of runs with different shard counts ({}): the shard count changed between runs; delete the old ones or name the shards to merge",
            out.display(),
            counts.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" and ")
        ),
    }
}

/// The shards come from one run: same count, task, config, data, model, options and header,
/// each index once and every output as its manifest recorded it.
fn check_together(shards: &[(PathBuf, Manifest)]) -> Result<()> {
    let (p0, m0) = &shards[0];
    for (p, m) in &shards[1..] {
        let differ = |what: &str, a: &str, b: &str| -> anyhow::Error {
            anyhow::anyhow!(
                "{} and {} come from different runs: their {what} differs ({a} vs {b}); run every shard with the same config, data, model and options",
                p0.display(),
                p.display()
            )
        };
        if m.shard.count != m0.shard.count {
            bail!(
                "{} is shard {} but {} is shard {}: the shard count changed between runs; merge the shards of one count (run the missing ones with that count)",
                p0.display(),
                m0.shard,
                p.display(),
                m.shard
            )
        }
        if m.task != m0.task {
            return Err(differ("task", &m0.task, &m.task));
        }
        if m.config.sha256 != m0.config.sha256 {
            return Err(differ("config", &m0.config.path, &m.config.path));
        }
        if m.data.sha256 != m0.data.sha256 || m.data_rows != m0.data_rows {
            return Err(differ("data", &m0.data.path, &m.data.path));
        }
        if m.model.sha256 != m0.model.sha256 {
            return Err(differ("model", &m0.model.path, &m.model.path));
        }
        let keys: std::collections::BTreeSet<&String> =
            m0.settings.keys().chain(m.settings.keys()).collect();
        for k in keys {
            let get = |m: &Manifest| m.settings.get(k).cloned().unwrap_or_else(|| "unset".into());
            if get(m0) != get(m) {
                return Err(differ(&format!("option {k}"), &get(m0), &get(m)));
            }
        }
        if m.header != m0.header || m.unquoted != m0.unquoted {
            return Err(differ(
                "output columns",
                &m0.header.join(","),
                &m.header.join(","),
            ));
        }
    }
    let n = m0.shard.count;
    let mut seen: Vec<Option<&Path>> = vec![None; n];
    for (p, m) in shards {
        if let Some(q) = seen[m.shard.index] {
            bail!(
                "shard {} appears twice: {} and {}; merge one of them",
                m.shard,
                q.display(),
                p.display()
            )
        }
        seen[m.shard.index] = Some(p);
        if sha256_file(p)? != m.output.sha256 {
            bail!(
                "{} is not the file shard {} wrote (its sha256 differs from the manifest's): it was changed or copied in part; run that shard again",
                p.display(),
                m.shard
            )
        }
    }
    let missing: Vec<usize> = (0..n).filter(|&i| seen[i].is_none()).collect();
    if let Some(&first) = missing.first() {
        let names: Vec<String> = missing.iter().map(|i| format!("{i}/{n}")).collect();
        bail!(
            "shard {} of this {n}-shard run {} missing (expected e.g. {}); run it with --shard {first}/{n} and merge again",
            names.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            Shard { index: first, count: n }
                .file_name(&strip_shard(p0))
                .display()
        )
    }
    Ok(())
}

/// `x.shard-2-of-4.csv` -> `x.csv`.
fn strip_shard(p: &Path) -> PathBuf {
    let name = p.file_name().unwrap_or_default().to_string_lossy();
    match (name.rfind(".shard-"), p.extension()) {
        (Some(at), Some(ext)) => {
            p.with_file_name(format!("{}.{}", &name[..at], ext.to_string_lossy()))
        }
        _ => p.to_path_buf(),
    }
}

/// Which shard holds each row of the run; every row must be in exactly one.
fn check_rows(shards: &[(PathBuf, Manifest)]) -> Result<Vec<usize>> {
    let total = shards[0].1.data_rows;
    let mut owner: Vec<Option<usize>> = vec![None; total];
    let mut doubled = Vec::new();
    for (s, (p, m)) in shards.iter().enumerate() {
        if m.rows.windows(2).any(|w| w[0] >= w[1]) || m.rows.last().is_some_and(|&r| r >= total) {
            bail!(
                "{} lists rows out of order or beyond the data's {total}; run shard {} again",
                p.display(),
                m.shard
            )
        }
        for &r in &m.rows {
            match owner[r] {
                Some(o) => doubled.push(format!(
                    "row {} (in {} and {})",
                    r + 1,
                    shards[o].0.display(),
                    p.display()
                )),
                None => owner[r] = Some(s),
            }
        }
    }
    if !doubled.is_empty() {
        bail!(
            "{} rows appear in more than one shard: {}{}; these shards were not made by one run, run them again with the same options",
            doubled.len(),
            doubled[..doubled.len().min(5)].join(", "),
            if doubled.len() > 5 { ", ..." } else { "" }
        )
    }
    let missing: Vec<String> = (0..total)
        .filter(|&r| owner[r].is_none())
        .map(|r| (r + 1).to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} data rows are in no shard (rows {}{}, counting data rows from 1); run the shards again with the same options",
            missing.len(),
            missing[..missing.len().min(10)].join(", "),
            if missing.len() > 10 { ", ..." } else { "" }
        )
    }
    Ok(owner.into_iter().map(|o| o.unwrap_or(0)).collect())
}

/// A shard output's header bytes and each record's byte range (JSONL: one line per record,
/// no header).
fn records(path: &Path, bytes: &[u8], unquoted: bool) -> Result<(Range<usize>, Vec<Range<usize>>)> {
    if extension(path) == "jsonl" {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                out.push(start..i + 1);
                start = i + 1;
            }
        }
        if start < bytes.len() {
            out.push(start..bytes.len());
        }
        return Ok((0..0, out));
    }
    let delimiter = if extension(path) == "tsv" {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .quoting(!unquoted)
        .from_reader(bytes);
    let mut record = csv::ByteRecord::new();
    let mut ranges = Vec::new();
    loop {
        let start = reader.position().byte() as usize;
        if !reader
            .read_byte_record(&mut record)
            .with_context(|| format!("cannot read {}", path.display()))?
        {
            break;
        }
        ranges.push(start..reader.position().byte() as usize);
    }
    if ranges.is_empty() {
        bail!(
            "{} is empty (not even a header); run that shard again",
            path.display()
        )
    }
    let header = ranges.remove(0);
    Ok((header, ranges))
}
