//! Sharded runs (`run --shard`) and `merge`: shards started the way Slurm job arrays and
//! Kubernetes Indexed Jobs start them (their environment variables), one killed and requeued,
//! merge to the bytes and metrics of one unsharded run; every bad merge is refused by name.

mod common;
use common::{shared, text, Fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_autolabel-local");

fn cli(f: &Fixture, args: &[&str], env: &[(&str, String)]) -> Command {
    f.link_embedding_model();
    let mut c = Command::new(BIN);
    c.args(args)
        .args(["--model", f.model.to_str().unwrap(), "--max-tokens", "8192"])
        .env("AUTOLABEL_LOCAL_CACHE", f.dir.path().join("cache"))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn merge(out: &Path, shards: &[PathBuf], extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["merge", "--out", out.to_str().unwrap()])
        .args(shards)
        .args(extra)
        .output()
        .unwrap()
}

/// Runs a labeling command that must finish (exit 0, or 2 when some rows could not be labeled).
fn labeled(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&o)
    );
    o
}

/// The metrics table a command printed (stdout).
fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn slurm_env(id: usize, count: usize) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_ARRAY_TASK_ID", id.to_string()),
        ("SLURM_ARRAY_TASK_MIN", "0".into()),
        ("SLURM_ARRAY_TASK_MAX", (count - 1).to_string()),
        ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
    ]
}

/// 400 SMS (with repeated messages, read with quoting off) in 4 shards as a Slurm array starts
/// them; shard 1 is killed with SIGKILL mid-run and requeued (run again with the same
/// environment); the merge equals the unsharded run byte for byte, metrics included.
#[test]
fn slurm_array_shards_with_a_requeued_task_merge_to_the_unsharded_bytes() {
    let f = Fixture::new();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sms_spam/config.json");
    let data = shared("sms_spam/SMSSpamCollection.tsv");
    let full = f.dir.path().join("full.tsv");
    let base = [
        "run",
        "--config",
        config,
        "--data",
        data.to_str().unwrap(),
        "--max-items",
        "400",
    ];
    let started = Instant::now();
    let o = cli(&f, &base, &[])
        .args(["--out", full.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let seconds = started.elapsed().as_secs_f64();
    let reference = stdout(&o);

    let out = f.dir.path().join("labeled.tsv");
    let run_shard = |i: usize| {
        cli(&f, &base, &slurm_env(i, 4))
            .args(["--out", out.to_str().unwrap(), "--shard", "auto"])
            .output()
            .unwrap()
    };
    for i in [0, 2, 3] {
        let o = run_shard(i);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains(&format!("shard {i}/4")), "{}", text(&o));
    }
    // Shard 1: killed once its journal holds rows (or after a quarter of the full run's time).
    let journal = f.dir.path().join("labeled.shard-1-of-4.tsv.journal");
    let mut child = cli(&f, &base, &slurm_env(1, 4))
        .args(["--out", out.to_str().unwrap(), "--shard", "auto"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < seconds / 4.0 + 1.0 {
        std::thread::sleep(Duration::from_millis(100));
        if std::fs::metadata(&journal).is_ok_and(|m| m.len() > 0) && t.elapsed().as_secs_f64() > 1.5
        {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let shard1 = f.dir.path().join("labeled.shard-1-of-4.tsv");
    let killed_before_end = !shard1.exists();
    let o = run_shard(1);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    eprintln!(
        "requeued shard 1 (killed before its end: {killed_before_end}): {}",
        text(&o)
    );

    // merge finds the shards beside --out.
    let o = merge(&out, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("merged 4 shards"), "{}", text(&o));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&full).unwrap(),
        "the merged shards differ from the unsharded run"
    );
    assert_eq!(stdout(&o), reference, "the merged metrics differ");
    assert!(reference.contains("accuracy"), "{reference}");
}

/// Named-entity recognition (a generated answer) in 3 shards as a Kubernetes Indexed Job
/// starts them, JSONL output: the merge equals the unsharded run, entity metrics included. Then
/// every way a merge can be wrong is refused by name and writes nothing.
#[test]
fn indexed_job_shards_of_a_generated_task_merge_and_bad_merges_are_refused() {
    let f = Fixture::new();
    let config = f.conll_config("conll.json", 2);
    let data = f.head("autolabel_conll2003/test_head_small.csv", 15, "conll.csv");
    let base = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "2",
    ];
    let full = f.dir.path().join("full.jsonl");
    let o = labeled(cli(&f, &base, &[]).args(["--out", full.to_str().unwrap()]));
    let reference = stdout(&o);
    assert!(reference.contains("strict"), "{reference}");

    let out = f.dir.path().join("labeled.jsonl");
    let mut shards = Vec::new();
    for i in 0..3 {
        let env = [
            ("JOB_COMPLETION_INDEX", i.to_string()),
            ("AUTOLABEL_LOCAL_SHARDS", "3".to_string()),
        ];
        labeled(cli(&f, &base, &env).args(["--out", out.to_str().unwrap(), "--shard", "auto"]));
        shards.push(f.dir.path().join(format!("labeled.shard-{i}-of-3.jsonl")));
    }
    let o = merge(&out, &shards, &["--config", config.to_str().unwrap()]);
    assert!(
        o.status.code().is_some_and(|c| c == 0 || c == 2),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&full).unwrap(),
        "the merged shards differ from the unsharded run"
    );
    assert_eq!(stdout(&o), reference, "the merged metrics differ");

    // Bad merges: each names what is wrong and writes nothing.
    let bad = f.dir.path().join("bad.jsonl");
    let refused = |shards: &[PathBuf], extra: &[&str], expect: &str| {
        let o = merge(&bad, shards, extra);
        assert_eq!(o.status.code(), Some(1), "{expect}: {}", text(&o));
        assert!(text(&o).contains(expect), "wanted {expect:?}: {}", text(&o));
        assert!(
            !bad.exists(),
            "{expect}: a refused merge wrote {}",
            bad.display()
        );
    };
    refused(
        &[shards[0].clone(), shards[2].clone()],
        &[],
        "shard 1/3 of this 3-shard run is missing",
    );
    refused(
        &[shards[0].clone(), shards[0].clone(), shards[2].clone()],
        &[],
        "shard 0/3 appears twice",
    );
    // The shard count changed between runs: a 2-shard run's shard 0 next to the 3-shard ones.
    let o = labeled(cli(&f, &base, &[]).args(["--out", out.to_str().unwrap(), "--shard", "0/2"]));
    assert!(
        text(&o).contains("are shards of a run with 3 shards; the shard count changed"),
        "{}",
        text(&o)
    );
    let two = f.dir.path().join("labeled.shard-0-of-2.jsonl");
    refused(
        &[two.clone(), shards[1].clone(), shards[2].clone()],
        &[],
        "the shard count changed between runs",
    );
    let o = merge(&out, &[], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("different shard counts (2 and 3)"),
        "{}",
        text(&o)
    );
    // Another config (one more few-shot example) and another model for shard 1.
    let other = f.conll_config("conll3.json", 3);
    let other_out = f.dir.path().join("other.jsonl");
    labeled(
        cli(
            &f,
            &[
                "run",
                "--config",
                other.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--batch-size",
                "2",
            ],
            &[],
        )
        .args(["--out", other_out.to_str().unwrap(), "--shard", "1/3"]),
    );
    let other1 = f.dir.path().join("other.shard-1-of-3.jsonl");
    refused(
        &[shards[0].clone(), other1.clone(), shards[2].clone()],
        &[],
        "their config differs",
    );
    refused(
        &shards,
        &["--config", other.to_str().unwrap()],
        "is not the one the shards were made with",
    );
    let g = Fixture::with_seed(Some(99));
    labeled(cli(&g, &base, &[]).args(["--out", other_out.to_str().unwrap(), "--shard", "1/3"]));
    refused(
        &[shards[0].clone(), other1.clone(), shards[2].clone()],
        &[],
        "their model differs",
    );
    // Another batch size makes other batches, so other bits: refused too.
    labeled(cli(&f, &base[..base.len() - 2], &[]).args([
        "--out",
        other_out.to_str().unwrap(),
        "--shard",
        "1/3",
        "--batch-size",
        "3",
    ]));
    refused(
        &[shards[0].clone(), other1.clone(), shards[2].clone()],
        &[],
        "option batch_size differs",
    );
    // A shard output changed after it was written.
    let edited = f.dir.path().join("edited.shard-1-of-3.jsonl");
    std::fs::copy(&shards[1], &edited).unwrap();
    std::fs::copy(manifest(&shards[1]), manifest(&edited)).unwrap();
    let mut bytes = std::fs::read(&edited).unwrap();
    bytes.extend_from_slice(b"{}\n");
    std::fs::write(&edited, bytes).unwrap();
    refused(
        &[shards[0].clone(), edited, shards[2].clone()],
        &[],
        "is not the file shard 1/3 wrote",
    );
    // A file without a manifest, the merged output as a shard, another format.
    refused(std::slice::from_ref(&full), &[], "is not a shard output");
    let o = merge(&shards[0], &shards, &[]);
    assert!(
        text(&o).contains("is one of the shard outputs"),
        "{}",
        text(&o)
    );
    let o = merge(&f.dir.path().join("x.csv"), &shards, &[]);
    assert!(
        text(&o).contains("name the merged output .jsonl"),
        "{}",
        text(&o)
    );

    // A shard index at or past the count, or a scheduler variable that is missing: refused
    // before the model loads.
    for (spec, env, expect) in [
        ("3/3", vec![], "not below the shard count 3"),
        ("auto", vec![], "neither SLURM_ARRAY_TASK_ID"),
        (
            "auto",
            vec![("JOB_COMPLETION_INDEX", "1".to_string())],
            "AUTOLABEL_LOCAL_SHARDS",
        ),
    ] {
        let o = cli(&f, &base, &env)
            .args(["--out", out.to_str().unwrap(), "--shard", spec])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains(expect), "{spec}: {}", text(&o));
    }
}

fn manifest(p: &Path) -> PathBuf {
    let mut n = p.file_name().unwrap().to_os_string();
    n.push(".manifest.json");
    p.with_file_name(n)
}

/// The shipped Kubernetes Job asks for as many shards as it has completions, runs them with the
/// model cache on the volume and offline, and the merge job merges the same output; the Slurm
/// script runs shards with --shard auto (tests/slurm.rs runs it under a real Slurm).
#[test]
fn shipped_cluster_examples_agree_with_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let job = std::fs::read_to_string(root.join("kubernetes/label-job.yaml")).unwrap();
    let completions: usize = job
        .lines()
        .find_map(|l| l.trim().strip_prefix("completions:"))
        .expect("completions")
        .trim()
        .parse()
        .unwrap();
    assert!(job.contains("completionMode: Indexed"), "{job}");
    assert!(
        job.contains(&format!("--shard auto/{completions}")),
        "{job}"
    );
    assert!(job.contains("HF_HUB_OFFLINE") && job.contains("AUTOLABEL_LOCAL_CACHE"));
    let out = job
        .split_whitespace()
        .skip_while(|w| *w != "--out")
        .nth(1)
        .unwrap();
    let merge = std::fs::read_to_string(root.join("kubernetes/merge-job.yaml")).unwrap();
    assert!(merge.contains(&format!("merge --out {out}")), "{merge}");
    let sbatch = std::fs::read_to_string(root.join("slurm/label.sbatch")).unwrap();
    assert!(sbatch.contains("--shard auto") && sbatch.contains("--dependency=afterok"));
    // The shard spec the Job's pods compute from JOB_COMPLETION_INDEX is accepted by the CLI.
    let f = Fixture::new();
    let o = cli(
        &f,
        &["run", "--config", "missing.json", "--data", "x.csv"],
        &[("JOB_COMPLETION_INDEX", completions.to_string())],
    )
    .args(["--shard", &format!("auto/{completions}")])
    .output()
    .unwrap();
    assert!(
        text(&o).contains(&format!("not below the shard count {completions}")),
        "{}",
        text(&o)
    );
}
