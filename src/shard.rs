//! Splitting one run over many machines: which rows shard I of N labels, the shard's file names,
//! and the manifest `merge` checks the pieces against.
//!
//! Rows are assigned by batch, not by position or hash. Every shard prepares every row (reads
//! and tokenizes the whole file: cheap next to labeling it) and forms the same length-sorted
//! batches an unsharded run would; shard I labels batches I, I+N, I+2N, ... So each row is
//! labeled in the same company, after the same shared prefix, as in one run on one machine,
//! and gets the same bits (what makes the merge byte-identical); and since batches are sorted
//! by length, dealing them round-robin gives every shard short and long rows alike. A row that
//! cannot be prepared (it has no batch) belongs to shard `row % N`; a repeated request belongs
//! to the shard of its first occurrence, which labels it once and copies it.

use crate::dataset::Dataset;
use crate::tasks::open::Interpreted;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Reads an integer environment variable; a value that is not one is an error naming it.
fn env_number(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    match env(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("environment variable {name}={v:?} is not a number")),
    }
}

impl Shard {
    /// `I/N`, `auto` or `auto/N`. `auto` takes I (and N) from the environment a scheduler sets:
    /// a Slurm job array (`SLURM_ARRAY_TASK_ID`, `_MIN`, `_STEP`, `_COUNT` or `_MAX`), else a
    /// Kubernetes Indexed Job (`JOB_COMPLETION_INDEX`, with N from `auto/N` or
    /// `AUTOLABEL_LOCAL_SHARDS`).
    pub fn parse(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        let spec = spec.trim();
        let (first, count) = match spec.split_once('/') {
            Some((i, n)) => (
                i.trim(),
                Some(n.trim().parse::<usize>().with_context(|| {
                    format!("--shard {spec}: the shard count {n:?} is not a number (write I/N, e.g. 0/4, or auto)")
                })?),
            ),
            None => (spec, None),
        };
        let shard = if first == "auto" {
            Self::from_env(env, count, spec)?
        } else {
            let index = first.parse::<usize>().with_context(|| {
                format!("--shard {spec}: write I/N (shard I of N, counting from 0, e.g. 0/4), auto or auto/N")
            })?;
            let Some(count) = count else {
                bail!("--shard {spec}: the number of shards is missing; write I/N, e.g. {index}/4")
            };
            Shard { index, count }
        };
        if shard.count == 0 {
            bail!("--shard {spec}: the number of shards must be at least 1")
        }
        if shard.index >= shard.count {
            bail!(
                "--shard {spec}: shard index {} is not below the shard count {} (indices run from 0 to {})",
                shard.index,
                shard.count,
                shard.count - 1
            )
        }
        Ok(shard)
    }

    fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        count: Option<usize>,
        spec: &str,
    ) -> Result<Shard> {
        if let Some(id) = env_number(env, "SLURM_ARRAY_TASK_ID")? {
            let min = env_number(env, "SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = env_number(env, "SLURM_ARRAY_TASK_STEP")?
                .unwrap_or(1)
                .max(1);
            let slurm_count = match env_number(env, "SLURM_ARRAY_TASK_COUNT")? {
                Some(c) => Some(c),
                None => env_number(env, "SLURM_ARRAY_TASK_MAX")?
                    .filter(|&max| max >= min)
                    .map(|max| (max - min) / step + 1),
            };
            if id < min || (id - min) % step != 0 {
                bail!("--shard {spec}: SLURM_ARRAY_TASK_ID={id} is not on the array's range (min {min}, step {step}); use a plain range such as --array=0-3, or give --shard I/N")
            }
            let index = (id - min) / step;
            let n = match (count, slurm_count) {
                (Some(c), Some(s)) if c != s => bail!(
                    "--shard {spec}: the job array has {s} tasks (SLURM_ARRAY_TASK_COUNT) but {c} shards were asked for; make them equal"
                ),
                (Some(c), _) | (None, Some(c)) => c,
                (None, None) => bail!(
                    "--shard {spec}: Slurm set SLURM_ARRAY_TASK_ID but not the array's size (SLURM_ARRAY_TASK_COUNT or _MAX); write --shard auto/N"
                ),
            };
            return Ok(Shard { index, count: n });
        }
        if let Some(index) = env_number(env, "JOB_COMPLETION_INDEX")? {
            let n = match count {
                Some(c) => c,
                None => env_number(env, "AUTOLABEL_LOCAL_SHARDS")?.with_context(|| {
                    format!("--shard {spec}: Kubernetes set JOB_COMPLETION_INDEX={index} but the number of shards is not known; write --shard auto/N with the Job's completions, or set AUTOLABEL_LOCAL_SHARDS")
                })?,
            };
            return Ok(Shard { index, count: n });
        }
        bail!("--shard {spec}: neither SLURM_ARRAY_TASK_ID (a Slurm job array) nor JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) is set; give the shard as --shard I/N")
    }

    /// Whether batch `k` of the pass (in the pass's length-sorted order) is this shard's.
    pub fn owns_batch(&self, k: usize) -> bool {
        k % self.count == self.index
    }

    /// Which rows this shard labels, given the pass's batches (indices of distinct items),
    /// each item's row, and the repeated rows as `(row, item)` (see [`crate::scoring_pass::Repeats`]).
    pub fn assign(
        &self,
        rows: usize,
        batches: &[Vec<usize>],
        item_row: impl Fn(usize) -> usize,
        copies: &[(usize, usize)],
    ) -> Vec<bool> {
        let mut owned: Vec<bool> = (0..rows).map(|r| r % self.count == self.index).collect();
        for (k, batch) in batches.iter().enumerate() {
            for &j in batch {
                owned[item_row(j)] = self.owns_batch(k);
            }
        }
        for &(row, j) in copies {
            owned[row] = owned[item_row(j)];
        }
        owned
    }

    /// `labeled.csv` -> `labeled.shard-2-of-4.csv` (the output, and with it the journal, of
    /// shard 2 of 4).
    pub fn file_name(&self, out: &Path) -> PathBuf {
        let stem = out.file_stem().unwrap_or_default().to_string_lossy();
        let name = match out.extension() {
            Some(e) => format!(
                "{stem}.shard-{}-of-{}.{}",
                self.index,
                self.count,
                e.to_string_lossy()
            ),
            None => format!("{stem}.shard-{}-of-{}", self.index, self.count),
        };
        out.with_file_name(name)
    }
}

/// The rows of `data` a shard labeled (all rows without a shard), their indices, and their
/// outcomes; `None` when there is no shard (use the whole dataset as it is).
pub fn restrict<T>(
    data: &Dataset,
    rows: Vec<T>,
    owned: Option<&[bool]>,
) -> (Option<(Dataset, Vec<usize>)>, Vec<T>) {
    let Some(owned) = owned else {
        return (None, rows);
    };
    let indices: Vec<usize> = (0..rows.len()).filter(|&i| owned[i]).collect();
    let mut part = Dataset::new(
        data.path.clone(),
        data.columns.clone(),
        indices.iter().map(|&i| data.rows[i].clone()).collect(),
    );
    part.unquoted_delimiter = data.unquoted_delimiter;
    let kept = rows
        .into_iter()
        .zip(owned)
        .filter_map(|(r, &o)| o.then_some(r))
        .collect();
    (Some((part, indices)), kept)
}

/// The shard index and count in a shard output's file name (`x.shard-2-of-4.csv`).
pub fn parse_file_name(path: &Path) -> Option<Shard> {
    let name = path.file_name()?.to_str()?;
    let at = name.rfind(".shard-")?;
    let rest = &name[at + ".shard-".len()..];
    let rest = rest.split('.').next()?;
    let (i, n) = rest.split_once("-of-")?;
    Some(Shard {
        index: i.parse().ok()?,
        count: n.parse().ok()?,
    })
}

/// The shard outputs beside `out` (`<stem>.shard-I-of-N.<ext>`), by count then index.
pub fn outputs_beside(out: &Path) -> Result<Vec<(Shard, PathBuf)>> {
    let dir = crate::output::parent_dir(out);
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let ext = out.extension().unwrap_or_default().to_string_lossy();
    let (prefix, suffix) = (format!("{stem}.shard-"), format!(".{ext}"));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(&suffix) {
            if let Some(s) = parse_file_name(&path) {
                found.push((s, path));
            }
        }
    }
    found.sort_by_key(|(s, _)| (s.count, s.index));
    Ok(found)
}

/// A file a shard depended on: where it was and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: String,
    pub sha256: String,
}

/// What one shard wrote, beside its output as `<output>.manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub shard: Shard,
    pub task: String,
    pub config: FileId,
    pub data: FileId,
    /// Rows of the whole run (all shards).
    pub data_rows: usize,
    pub model: FileId,
    /// Every option that changes the output's bytes (dtype, device, batch size, confidence...).
    pub settings: BTreeMap<String, String>,
    /// The output's file name (beside the manifest) and its sha256.
    pub output: FileId,
    pub header: Vec<String>,
    /// The output was written with quoting off (its input was read that way).
    pub unquoted: bool,
    /// The run's row indices (from 0, in data order) this shard's output holds, in order.
    pub rows: Vec<usize>,
    /// Each of those rows' answer as the metrics see it (None: not labeled).
    pub answers: Vec<Option<Interpreted>>,
}

pub const MANIFEST_FORMAT: &str = "autolabel-local shard manifest 1";

pub fn manifest_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    output.with_file_name(name)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl Manifest {
    /// Writes the manifest beside `output` (through a temporary file and a rename).
    pub fn write(&self, output: &Path) -> Result<()> {
        let path = manifest_path(output);
        let dir = crate::output::parent_dir(&path);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("cannot write to {}", dir.display()))?;
        serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), self)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// The manifest of shard output `output`.
    pub fn read(output: &Path) -> Result<Manifest> {
        let path = manifest_path(output);
        if !output.exists() {
            bail!("shard output {} does not exist", output.display())
        }
        let text = std::fs::read(&path).with_context(|| {
            format!(
                "{} is not a shard output: it has no manifest {} beside it (shard outputs come from `run --shard I/N`, and their manifest is written last; if that run was interrupted, run it again)",
                output.display(),
                path.display()
            )
        })?;
        let m: Manifest = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a shard manifest", path.display()))?;
        if m.format != MANIFEST_FORMAT {
            bail!(
                "{} was written by another version ({:?}); run that shard again",
                path.display(),
                m.format
            )
        }
        if m.rows.len() != m.answers.len() {
            bail!(
                "{} is damaged (rows and answers differ in number); run that shard again",
                path.display()
            )
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn explicit_and_environment_shards() {
        let none = env(&[]);
        assert_eq!(
            Shard::parse("2/4", &none).unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["4/4", "0/0", "x/4", "2", "2/x", "auto"] {
            assert!(Shard::parse(bad, &none).is_err(), "{bad}");
        }
        let e = Shard::parse("4/4", &none).unwrap_err().to_string();
        assert!(e.contains("not below the shard count 4"), "{e}");
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        assert_eq!(
            Shard::parse("auto", &slurm).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]);
        assert_eq!(
            Shard::parse("auto", &stepped).unwrap(),
            Shard { index: 2, count: 3 }
        );
        let e = Shard::parse("auto/5", &stepped).unwrap_err().to_string();
        assert!(e.contains("has 3 tasks"), "{e}");
        let k8s = env(&[("JOB_COMPLETION_INDEX", "1")]);
        assert!(Shard::parse("auto", &k8s)
            .unwrap_err()
            .to_string()
            .contains("AUTOLABEL_LOCAL_SHARDS"));
        assert_eq!(
            Shard::parse("auto/3", &k8s).unwrap(),
            Shard { index: 1, count: 3 }
        );
        let k8s = env(&[
            ("JOB_COMPLETION_INDEX", "3"),
            ("AUTOLABEL_LOCAL_SHARDS", "3"),
        ]);
        assert!(Shard::parse("auto", &k8s).is_err(), "index 3 of 3");
    }

    #[test]
    fn file_names_round_trip() {
        let s = Shard { index: 2, count: 4 };
        let p = s.file_name(Path::new("out/labeled.csv"));
        assert_eq!(p, Path::new("out/labeled.shard-2-of-4.csv"));
        assert_eq!(parse_file_name(&p), Some(s));
        assert_eq!(parse_file_name(Path::new("labeled.csv")), None);
        assert_eq!(
            manifest_path(&p),
            Path::new("out/labeled.shard-2-of-4.csv.manifest.json")
        );
    }

    #[test]
    fn every_row_has_exactly_one_shard() {
        // 10 rows; items 0..6 are rows 0,1,2,4,5,7,8 (3, 6 unprepared), row 9 repeats item 1.
        let item_row = |j: usize| [0, 1, 2, 4, 5, 7, 8][j];
        let batches = vec![vec![3, 1], vec![0, 6], vec![2, 5], vec![4]];
        let copies = [(9, 1)];
        let n = 3;
        let owned: Vec<Vec<bool>> = (0..n)
            .map(|index| Shard { index, count: n }.assign(10, &batches, item_row, &copies))
            .collect();
        for r in 0..10 {
            assert_eq!(owned.iter().filter(|o| o[r]).count(), 1, "row {r}");
        }
        let rows_of = |s: usize| (0..10).filter(|&r| owned[s][r]).collect::<Vec<_>>();
        // Batch 0 (rows 4, 1) and 3 (row 5), unprepared rows 3 and 6 (row % 3), row 9 (copies row 1).
        assert_eq!(rows_of(0), vec![1, 3, 4, 5, 6, 9]);
        assert_eq!(rows_of(1), vec![0, 8]);
        assert_eq!(rows_of(2), vec![2, 7]);
    }
}
