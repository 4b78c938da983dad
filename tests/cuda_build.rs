//! The CUDA build compiles, checked on machines without a GPU (CI included):
//! `scripts/cuda_check.sh` fetches nvcc and the CUDA headers from NVIDIA's PyPI wheels and runs
//! `cargo check --release --features cuda` in its own target directory, which compiles
//! candle's CUDA kernels to PTX with that nvcc. Running the CUDA build is the GPU check's job
//! (`scripts/gpu_check.sh` on a machine with a GPU).

use std::process::Command;

#[test]
fn the_cuda_build_compiles() {
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("bash")
        .arg(format!("{root}/scripts/cuda_check.sh"))
        .env("CARGO", env!("CARGO"))
        .output()
        .expect("bash runs scripts/cuda_check.sh");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let tail: String = log
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        o.status.success(),
        "the CUDA build does not compile:\n{tail}"
    );
    assert!(log.contains("the CUDA build compiles"), "{tail}");
}
