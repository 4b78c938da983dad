//! A sharded run under a real Slurm (scripts/slurm_test.sh): a one-node cluster started on this
//! machine runs examples/slurm/label.sbatch, a 4-task array over 200 SMS with SmolLM2 and a
//! dependent merge job; one task is requeued while it runs; the merge must equal the unsharded
//! run byte for byte. Where Slurm cannot start here (not root, no packages) the script says why
//! and this test checks nothing more: tests/shards.rs runs the same shards as plain processes.

mod common;
use common::Fixture;
use std::process::Command;

#[test]
fn a_real_slurm_array_with_a_requeued_task_merges_to_the_unsharded_bytes() {
    let f = Fixture::smollm2();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/slurm_test.sh");
    let o = Command::new("bash")
        .args([script, "200"])
        .env("BIN", env!("CARGO_BIN_EXE_autolabel-local"))
        .env("MODEL", &f.model)
        .env("FALLBACK", "none")
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{out}");
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("slurm_test: PASSED") || out.contains("slurm_test: no real Slurm here"),
        "{out}"
    );
}
