//! Launchers of the CUDA kernels in `src/cuda/ops.cu` (PTX built by build.rs with `--features
//! cuda`), called from the fused ops' `cuda_fwd`. Each checks shapes and dtypes the way the CPU
//! kernel does and computes in f32 whatever the storage type (f32, f16, bf16).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout, Result, Shape};

mod ptx {
    include!(concat!(env!("OUT_DIR"), "/ptx.rs"));
}

/// The module name the PTX is cached under in the device.
const MODULE: &str = "autolabel-kernels-ops";

/// Threads of a block that reduces a row of `n` values: a multiple of the warp, at most 1024.
fn row_threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// The contiguous part of `s` that `layout` describes, or an error naming the op.
fn view<'a, T>(s: &'a CudaSlice<T>, layout: &Layout, op: &str) -> Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(s.slice(a..b)),
        None => candle_core::bail!("{op}: inputs must be contiguous"),
    }
}

fn to_i32(n: usize, what: &str, op: &str) -> Result<i32> {
    i32::try_from(n).map_err(|_| candle_core::Error::Msg(format!("{op}: {what} {n} is too large")))
}

/// `softmax(scores * scale + mask)` for scores `[b, heads, q, k]` (f32, f16 or bf16) and an f32
/// mask `[b, q, k]`; one block per row of keys.
pub(crate) fn masked_softmax(
    scores: &CudaStorage,
    scores_layout: &Layout,
    mask: &CudaStorage,
    mask_layout: &Layout,
    scale: f32,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "masked_softmax";
    let (b, heads, q, k) = scores_layout.shape().dims4()?;
    if mask_layout.shape().dims3()? != (b, q, k) {
        candle_core::bail!(
            "{OP}: mask {:?} does not fit scores {:?} (want [{b}, {q}, {k}])",
            mask_layout.shape(),
            scores_layout.shape()
        )
    }
    let dev = scores.device().clone();
    let mask = view(mask.as_cuda_slice::<f32>()?, mask_layout, OP)?;
    let (heads, q_i, k_i) = (
        to_i32(heads, "heads", OP)?,
        to_i32(q, "queries", OP)?,
        to_i32(k, "keys", OP)?,
    );
    let rows = b * heads as usize * q;
    let cfg = LaunchConfig {
        grid_dim: (
            u32::try_from(rows)
                .map_err(|_| candle_core::Error::Msg(format!("{OP}: {rows} rows")))?,
            1,
            1,
        ),
        block_dim: (row_threads(k), 1, 1),
        shared_mem_bytes: 0,
    };
    fn go<T: DeviceRepr>(
        dev: &CudaDevice,
        name: &str,
        scores: CudaView<T>,
        mask: &CudaView<f32>,
        cfg: LaunchConfig,
        (heads, q, k, scale): (i32, i32, i32, f32),
    ) -> Result<CudaSlice<T>> {
        let func = dev.get_or_load_custom_func(name, MODULE, ptx::OPS)?;
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(scores.len())? };
        let mut builder = func.builder();
        builder
            .arg(&scores)
            .arg(mask)
            .arg(&out)
            .arg(&heads)
            .arg(&q)
            .arg(&k)
            .arg(&scale);
        // SAFETY: the arguments match the kernel's signature; sizes were checked above.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(out)
    }
    let args = (heads, q_i, k_i, scale);
    let slice = match &scores.slice {
        CudaStorageSlice::F32(s) => CudaStorageSlice::F32(go(
            &dev,
            "masked_softmax_f32",
            view(s, scores_layout, OP)?,
            &mask,
            cfg,
            args,
        )?),
        CudaStorageSlice::F16(s) => CudaStorageSlice::F16(go(
            &dev,
            "masked_softmax_f16",
            view(s, scores_layout, OP)?,
            &mask,
            cfg,
            args,
        )?),
        CudaStorageSlice::BF16(s) => CudaStorageSlice::BF16(go(
            &dev,
            "masked_softmax_bf16",
            view(s, scores_layout, OP)?,
            &mask,
            cfg,
            args,
        )?),
        _ => candle_core::bail!("{OP}: scores of dtype {:?} on CUDA", scores.dtype()),
    };
    Ok((
        CudaStorage { slice, device: dev },
        scores_layout.shape().clone(),
    ))
}

/// `silu(gate) * up` element-wise (f32, f16 or bf16, both the same dtype and shape).
pub(crate) fn silu_mul(
    gate: &CudaStorage,
    gate_layout: &Layout,
    up: &CudaStorage,
    up_layout: &Layout,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "silu_mul";
    if gate_layout.shape() != up_layout.shape() {
        candle_core::bail!(
            "{OP}: shapes differ: {:?} and {:?}",
            gate_layout.shape(),
            up_layout.shape()
        )
    }
    let dev = gate.device().clone();
    let n = gate_layout.shape().elem_count();
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256).min(1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    fn go<T: DeviceRepr>(
        dev: &CudaDevice,
        name: &str,
        gate: CudaView<T>,
        up: CudaView<T>,
        cfg: LaunchConfig,
    ) -> Result<CudaSlice<T>> {
        let func = dev.get_or_load_custom_func(name, MODULE, ptx::OPS)?;
        let n = gate.len();
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(n)? };
        let mut builder = func.builder();
        builder.arg(&gate).arg(&up).arg(&out).arg(&n);
        // SAFETY: the arguments match the kernel's signature; both inputs hold n values.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(out)
    }
    let slice = match (&gate.slice, &up.slice) {
        (CudaStorageSlice::F32(g), CudaStorageSlice::F32(u)) => CudaStorageSlice::F32(go(
            &dev,
            "silu_mul_f32",
            view(g, gate_layout, OP)?,
            view(u, up_layout, OP)?,
            cfg,
        )?),
        (CudaStorageSlice::F16(g), CudaStorageSlice::F16(u)) => CudaStorageSlice::F16(go(
            &dev,
            "silu_mul_f16",
            view(g, gate_layout, OP)?,
            view(u, up_layout, OP)?,
            cfg,
        )?),
        (CudaStorageSlice::BF16(g), CudaStorageSlice::BF16(u)) => CudaStorageSlice::BF16(go(
            &dev,
            "silu_mul_bf16",
            view(g, gate_layout, OP)?,
            view(u, up_layout, OP)?,
            cfg,
        )?),
        _ => candle_core::bail!(
            "{OP}: gate {:?} and up {:?} on CUDA (want both f32, f16 or bf16)",
            gate.dtype(),
            up.dtype()
        ),
    };
    Ok((
        CudaStorage { slice, device: dev },
        gate_layout.shape().clone(),
    ))
}

/// For f32 logits `[rows, vocab]` and u32 pairs `[n, 2]` (row, token): `[n]` log-probabilities,
/// one log-sum-exp per row (a block each), then one thread per pair. A pair out of range gives
/// NaN (the caller checks pairs on the host, where they are built).
pub(crate) fn log_softmax_gather(
    logits: &CudaStorage,
    logits_layout: &Layout,
    pairs: &CudaStorage,
    pairs_layout: &Layout,
) -> Result<(CudaStorage, Shape)> {
    const OP: &str = "log_softmax_gather";
    let (rows, vocab) = logits_layout.shape().dims2()?;
    let (n, two) = pairs_layout.shape().dims2()?;
    if two != 2 {
        candle_core::bail!("{OP}: pairs must be [n, 2], got {:?}", pairs_layout.shape())
    }
    let dev = logits.device().clone();
    let x = view(logits.as_cuda_slice::<f32>()?, logits_layout, OP)?;
    let p = view(pairs.as_cuda_slice::<u32>()?, pairs_layout, OP)?;
    let (rows_i, vocab_i, n_i) = (
        to_i32(rows, "rows", OP)?,
        to_i32(vocab, "vocabulary", OP)?,
        to_i32(n, "pairs", OP)?,
    );
    // SAFETY: every element of both is written by the kernels below.
    let lse = unsafe { dev.alloc::<f32>(rows)? };
    let out = unsafe { dev.alloc::<f32>(n)? };
    let func = dev.get_or_load_custom_func("row_logsumexp_f32", MODULE, ptx::OPS)?;
    let mut builder = func.builder();
    builder.arg(&x).arg(&lse).arg(&vocab_i);
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (row_threads(vocab), 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; x holds rows x vocab values.
    unsafe { builder.launch(cfg) }.w()?;
    let func = dev.get_or_load_custom_func("gather_logprobs_f32", MODULE, ptx::OPS)?;
    let mut builder = func.builder();
    builder
        .arg(&x)
        .arg(&lse)
        .arg(&p)
        .arg(&out)
        .arg(&n_i)
        .arg(&rows_i)
        .arg(&vocab_i);
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature; p holds n pairs, indices are checked.
    unsafe { builder.launch(cfg) }.w()?;
    Ok((
        CudaStorage {
            slice: CudaStorageSlice::F32(out),
            device: dev,
        },
        Shape::from(n),
    ))
}
