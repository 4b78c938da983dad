//! With `--features cuda`, compiles src/cuda/*.cu to PTX (cudaforge, as candle-kernels does:
//! nvcc from the PATH or CUDA_ROOT, the target from CUDA_COMPUTE_CAP or the GPU present) and
//! writes $OUT_DIR/ptx.rs with one `&str` constant per file. Without the feature it does nothing.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/cuda");
    #[cfg(feature = "cuda")]
    cuda::build();
}

#[cfg(feature = "cuda")]
mod cuda {
    pub fn build() {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
        let ptx = cudaforge::KernelBuilder::new()
            .source_dir("src/cuda")
            .out_dir(&out)
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()
            .unwrap_or_else(|e| panic!("compiling kernels/src/cuda/*.cu to PTX failed: {e}"));
        ptx.write(out.join("ptx.rs"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", out.join("ptx.rs").display()));
    }
}
