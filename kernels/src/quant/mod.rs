//! Matmul with GGUF block weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants Q4_K, Q5_K,
//! Q6_K) in 8-bit integer SIMD, the llama.cpp way: activations are quantized per block of 32 to
//! 8 bits (a scale `d_x` and the block's sum) and meet the weights' unsigned values in integer
//! multiply-adds, `sum_i (d u_i + m) d_x q_i = d d_x sum_i u_i q_i + m d_x sum_i q_i`.
//!
//! The weights are stored again at load, eight rows interleaved at the file's bit width
//! ([`repack`]), so that each 32-bit SIMD lane is one weight row; the float scaling is done once
//! per block for eight (AVX-VNNI, AVX2) or sixteen (AVX-512 VNNI: two groups per register)
//! rows. candle 0.11 has no SIMD path for the 32-value types and a one-row-at-a-time one for
//! the k-quants. Here: the store and its construction; [`activations`] quantizes the input,
//! [`matmul`] runs the parallel product, [`x86`] holds the SIMD kernels, [`store`] the memory or
//! mapped file behind the store.

mod activations;
mod matmul;
mod repack;
mod store;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Result;
#[cfg(test)]
use candle_core::{Device, Tensor};
#[cfg(test)]
use matmul::Scratch;
use rayon::prelude::*;
use repack::{Kind, BLOCK, GROUP, NIBBLES};
use store::{Buf, Scales};
#[cfg(target_arch = "x86_64")]
use x86::Isa;

/// No SIMD kernels off x86-64 (the scalar loops run).
#[cfg(not(target_arch = "x86_64"))]
#[derive(Debug, Clone, Copy)]
enum Isa {}

/// A `[n, k]` matrix of GGUF block weights, eight rows interleaved.
pub struct BlockMatrix {
    kind: Kind,
    n: usize,
    k: usize,
    /// `[groups][k / 32][128]`: the low 4 bits of every value.
    nib: Buf<u8>,
    /// `[groups][k / 32][extra_bytes]`: the bits above 4.
    extra: Buf<u8>,
    /// `[groups][k / 32 * subs][8]`.
    d: Scales,
    /// Stored for the types with a min; otherwise `kind.offset() * d`.
    m: Option<Scales>,
}

impl BlockMatrix {
    /// The block types this kernel runs.
    pub const TYPES: [GgmlDType; 8] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];

    /// Whether `dtype` is one this kernel runs.
    pub fn supports(dtype: GgmlDType) -> bool {
        Kind::of(dtype).is_some()
    }

    /// Whether this CPU runs the SIMD kernels (x86-64 with AVX2 and FMA); elsewhere candle's own
    /// quantized matmul is as fast as the scalar fallback here.
    pub fn simd_available() -> bool {
        #[cfg(target_arch = "x86_64")]
        return crate::simd::has_avx2_fma();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// From a `QTensor` of a supported type and shape `[n, k]` (`k` a multiple of its block).
    pub fn from_qtensor(t: &QTensor) -> Result<Self> {
        let Some(kind) = Kind::of(t.dtype()) else {
            candle_core::bail!(
                "BlockMatrix: expected Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K or Q6_K weights, \
                 got {:?}",
                t.dtype()
            )
        };
        let (n, k) = t.shape().dims2()?;
        let (fvals, fbytes) = kind.file_block();
        if k % fvals != 0 {
            candle_core::bail!("BlockMatrix: row length {k} is not a multiple of {fvals}")
        }
        let data = t.data()?;
        let expected = n * (k / fvals) * fbytes;
        if data.len() != expected {
            candle_core::bail!(
                "BlockMatrix: {} bytes for [{n}, {k}] {kind:?} weights (expected {expected})",
                data.len()
            )
        }
        let (kb, subs) = (k / BLOCK, kind.subs());
        let groups = n.div_ceil(GROUP);
        let eb = kind.extra_bytes();
        let mut nib = vec![0u8; groups * kb * NIBBLES];
        // (A byte per group where there is no extra plane, so that the groups zip below.)
        let mut extra = vec![0u8; groups * (kb * eb).max(1)];
        let scales_per_group = kb * subs * GROUP;
        let mut d = vec![0f32; groups * scales_per_group];
        let mut m = vec![0f32; groups * scales_per_group];
        let row_bytes = (k / fvals) * fbytes;
        nib.par_chunks_mut(kb * NIBBLES)
            .zip(extra.par_chunks_mut((kb * eb).max(1)))
            .zip(
                d.par_chunks_mut(scales_per_group)
                    .zip(m.par_chunks_mut(scales_per_group)),
            )
            .enumerate()
            .for_each(|(g, ((nib, extra), (d, m)))| {
                let (mut u, mut dm) = ([0u8; BLOCK], [(0f32, 0f32); 2]);
                for r in 0..GROUP.min(n - g * GROUP) {
                    let row = &data[(g * GROUP + r) * row_bytes..][..row_bytes];
                    for b in 0..kb {
                        let file_block = b * BLOCK / fvals;
                        let fb = &row[file_block * fbytes..][..fbytes];
                        repack::decode(kind, fb, b % (fvals / BLOCK), &mut u, &mut dm);
                        let extra = if eb > 0 {
                            &mut extra[b * eb..][..eb]
                        } else {
                            &mut [][..]
                        };
                        repack::write_planes(
                            kind,
                            &u,
                            r,
                            &mut nib[b * NIBBLES..][..NIBBLES],
                            extra,
                        );
                        for (s, &(ds, ms)) in dm.iter().enumerate().take(subs) {
                            d[(b * subs + s) * GROUP + r] = ds;
                            m[(b * subs + s) * GROUP + r] = ms;
                        }
                    }
                }
            });
        Ok(BlockMatrix {
            kind,
            n,
            k,
            nib: Buf::Owned(nib),
            extra: Buf::Owned(extra),
            d: Scales::from_f32(kind, &d),
            m: kind.has_min().then(|| Scales::from_f32(kind, &m)),
        })
    }

    /// Writes the store to `path` (through a temporary file renamed into place), for
    /// [`Self::open`] to map in later runs.
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let parts = store::Parts {
            n: self.n,
            k: self.k,
            nib: &self.nib,
            extra: &self.extra,
            d: &self.d,
            m: self.m.as_ref(),
        };
        store::write(path, Self::code(self.kind), &parts)
    }

    /// The store [`Self::save`] wrote for a `[n, k]` tensor of `dtype`, mapped (shared with
    /// every process that maps the same file); an error if the file is missing or was written
    /// for another tensor, shape or layout version.
    pub fn open(path: &std::path::Path, dtype: GgmlDType, n: usize, k: usize) -> Result<Self> {
        let Some(kind) = Kind::of(dtype) else {
            candle_core::bail!("BlockMatrix: {dtype:?} is not a block type this kernel runs")
        };
        if !k.is_multiple_of(kind.file_block().0) || n == 0 {
            candle_core::bail!("BlockMatrix: shape [{n}, {k}] for {dtype:?}")
        }
        let map_err =
            |e: candle_core::Error| candle_core::Error::Msg(format!("{}: {e}", path.display()));
        let l = store::read(path, Self::code(kind), kind, n, k).map_err(map_err)?;
        let (kb, groups, eb) = (k / BLOCK, n.div_ceil(GROUP), kind.extra_bytes());
        let scales = groups * kb * kind.subs() * GROUP;
        let want = [
            groups * kb * NIBBLES,
            groups * (kb * eb).max(1),
            scales,
            if kind.has_min() { scales } else { 0 },
        ];
        if l.lens != want {
            candle_core::bail!(
                "{}: sections of {:?} elements, expected {want:?}",
                path.display(),
                l.lens
            )
        }
        Ok(BlockMatrix {
            kind,
            n,
            k,
            nib: l.nib,
            extra: l.extra,
            d: l.d,
            m: l.m,
        })
    }

    /// Whether the store is a mapped file (shared between processes) rather than memory.
    pub fn is_mapped(&self) -> bool {
        matches!(self.nib, Buf::Mapped { .. })
    }

    /// The block type's number in saved files.
    fn code(kind: Kind) -> u32 {
        Self::TYPES
            .iter()
            .position(|&t| Kind::of(t) == Some(kind))
            .expect("every kind is one of TYPES") as u32
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes held (the weights as stored here; compare with the file's).
    pub fn bytes(&self) -> usize {
        self.nib.len()
            + self.extra.len()
            + self.d.bytes()
            + self.m.as_ref().map_or(0, Scales::bytes)
    }

    /// Rows `ids` dequantized, `[ids.len() * k]` (an embedding lookup from the same store when
    /// the output head and the token embedding are one tensor).
    pub fn rows(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let (kb, subs, eb) = (self.k / BLOCK, self.kind.subs(), self.kind.extra_bytes());
        let mut out = vec![0f32; ids.len() * self.k];
        let mut vals = [0u8; 2 * NIBBLES];
        let mut d = vec![0f32; kb * subs * GROUP];
        let mut m = vec![0f32; kb * subs * GROUP];
        for (&id, out) in ids.iter().zip(out.chunks_mut(self.k)) {
            let id = id as usize;
            if id >= self.n {
                candle_core::bail!("BlockMatrix: row {id} of {}", self.n)
            }
            let (g, lane) = (id / GROUP, id % GROUP);
            self.scales(g, &mut d, &mut m);
            for b in 0..kb {
                let nib = &self.nib[(g * kb + b) * NIBBLES..][..NIBBLES];
                let extra = &self.extra[(g * kb + b) * eb..][..eb];
                repack::unpack_scalar(self.kind, nib, extra, &mut vals);
                for (i, o) in out[b * BLOCK..(b + 1) * BLOCK].iter_mut().enumerate() {
                    let u = vals[32 * (i / 4) + 4 * lane + i % 4] as f32;
                    let at = (b * subs + i / (BLOCK / subs)) * GROUP + lane;
                    *o = d[at] * u + m[at];
                }
            }
        }
        Ok(out)
    }

    fn groups(&self) -> usize {
        self.n.div_ceil(GROUP)
    }
}
