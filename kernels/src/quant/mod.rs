//! Matmul with GGUF block weights (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants Q4_K, Q5_K,
//! Q6_K) in 8-bit integer SIMD, the llama.cpp way: activations are quantized per block of 32 to
//! 8 bits (a scale `d_x` and the block's sum) and meet the weights' unsigned values in integer
//! multiply-adds, `sum_i (d u_i + m) d_x q_i = d d_x sum_i u_i q_i + m d_x sum_i q_i`.
//!
//! The weights are stored again at load, eight rows interleaved at the file's bit width
//! ([`repack`]), so that each 32-bit SIMD lane is one weight row: four activation rows times
//! eight weight rows per tile, the integer products by AVX-VNNI where the CPU has it (picked at
//! run time) and AVX2 otherwise, the float scaling once per block for eight rows. candle 0.11
//! has no SIMD path for the 32-value types and a one-row-at-a-time one for the k-quants.

mod repack;
mod store;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
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

/// Activations quantized per block of 32: `x ~ d * q` (d rounded to f16 as llama.cpp stores
/// it) and `d * sum(q)` per weight sub-block.
struct Q8Rows {
    d: Vec<f32>,
    s: Vec<f32>,
    q: Vec<i8>,
}

/// What decides how activations are quantized for a block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuantKey {
    f16_scale: bool,
    subs: usize,
    sum_in_f16: bool,
}

impl QuantKey {
    fn of(kind: Kind) -> Self {
        QuantKey {
            f16_scale: kind.f16_scales(),
            subs: kind.subs(),
            sum_in_f16: kind.sum_in_f16(),
        }
    }
}

/// One tile's groups unpacked and their scales in f32 (`d1`, `m1`: one group's, on the way;
/// `zeros`: the planes of the group past the last, for the direct AVX-512 tiles).
struct Scratch {
    zeros: Vec<u8>,
    vals: Vec<u8>,
    d: Vec<f32>,
    m: Vec<f32>,
    d1: Vec<f32>,
    m1: Vec<f32>,
}

impl Scratch {
    fn new(kb: usize, subs: usize, width: usize) -> Self {
        let scales = kb * subs * GROUP;
        Scratch {
            // (Planes and scales: 128 bytes per block covers both, at most 2 x 8 f32 scales.)
            zeros: vec![0u8; if width == 2 { kb * NIBBLES } else { 0 }],
            vals: vec![0u8; kb * 2 * NIBBLES * width],
            d: vec![0f32; scales * width],
            m: vec![0f32; scales * width],
            d1: vec![0f32; scales],
            m1: vec![0f32; scales],
        }
    }
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

    /// Groups `g0..g0 + width`'s values and scales into `s`, side by side per 32-byte chunk
    /// and per scale vector (`width` 2 for the AVX-512 kernel); a group past the last is zeros.
    fn unpack(&self, g0: usize, width: usize, s: &mut Scratch, simd: bool) {
        let kb = self.k / BLOCK;
        let eb = self.kind.extra_bytes();
        let vecs = kb * self.kind.subs();
        for w in 0..width {
            let g = g0 + w;
            if g >= self.groups() {
                for b in 0..kb {
                    for j in 0..8 {
                        s.vals[b * 256 * width + 32 * (j * width + w)..][..32].fill(0);
                    }
                }
                for v in 0..vecs {
                    s.d[(v * width + w) * GROUP..][..GROUP].fill(0.0);
                    s.m[(v * width + w) * GROUP..][..GROUP].fill(0.0);
                }
                continue;
            }
            for b in 0..kb {
                let nib = &self.nib[(g * kb + b) * NIBBLES..][..NIBBLES];
                let extra = &self.extra[(g * kb + b) * eb..][..eb];
                let out = &mut s.vals[b * 256 * width + 32 * w..];
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: callers pass `simd` only when AVX2 is present.
                    unsafe { x86::unpack(self.kind.extra(), nib, extra, out, 32 * width) };
                    continue;
                }
                let _ = simd;
                assert_eq!(width, 1, "pairs of groups are unpacked with SIMD only");
                repack::unpack_scalar(self.kind, nib, extra, &mut out[..2 * NIBBLES]);
            }
            if width == 1 {
                self.scales(g, &mut s.d, &mut s.m);
            } else {
                self.scales(g, &mut s.d1, &mut s.m1);
                for v in 0..vecs {
                    let to = (v * width + w) * GROUP;
                    s.d[to..to + GROUP].copy_from_slice(&s.d1[v * GROUP..][..GROUP]);
                    s.m[to..to + GROUP].copy_from_slice(&s.m1[v * GROUP..][..GROUP]);
                }
            }
        }
    }

    /// Group `g`'s scales in f32.
    fn scales(&self, g: usize, d: &mut [f32], m: &mut [f32]) {
        self.d.read(g * d.len(), d);
        match &self.m {
            Some(stored) => stored.read(g * m.len(), m),
            None => {
                let c = self.kind.offset();
                for (m, d) in m.iter_mut().zip(d.iter()) {
                    *m = c * d;
                }
            }
        }
    }

    /// `x @ W^T` for `x` `[rows, k]` (f32, CPU): `[rows, n]`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Self::matmul_t_shared(&[self], x)?.remove(0))
    }

    /// `x @ W_i^T` for several matrices of the same input (q, k and v; gate and up): the
    /// activations are quantized once for all that take them alike, and the matrices' groups
    /// share one parallel pass.
    pub fn matmul_t_shared(mats: &[&BlockMatrix], x: &Tensor) -> Result<Vec<Tensor>> {
        #[cfg(target_arch = "x86_64")]
        let isa = Self::simd_available().then(Isa::detect);
        #[cfg(not(target_arch = "x86_64"))]
        let isa = None;
        Self::matmul_with(mats, x, isa)
    }

    /// `matmul_t_shared` with the given kernels (`None`: the scalar loops).
    fn matmul_with(mats: &[&BlockMatrix], x: &Tensor, isa: Option<Isa>) -> Result<Vec<Tensor>> {
        let (rows, k) = x.dims2()?;
        for m in mats {
            if k != m.k {
                candle_core::bail!("BlockMatrix: input has {k} columns, weights {}", m.k)
            }
        }
        // The activations read in place when they are f32 and contiguous (as the decoders
        // hand them), else copied once.
        let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let xs: &[f32] = match (&*storage, layout.contiguous_offsets()) {
            (candle_core::Storage::Cpu(c), Some((from, to))) => &c.as_slice::<f32>()?[from..to],
            _ => candle_core::bail!("BlockMatrix: input is not an f32 CPU tensor"),
        };
        // One quantization per way of quantizing (scale rounding, sums per 16 or 32).
        let mut quantized: Vec<(QuantKey, Q8Rows)> = Vec::new();
        for m in mats {
            let key = QuantKey::of(m.kind);
            if !quantized.iter().any(|(k, _)| *k == key) {
                quantized.push((key, quantize_rows(xs, rows, k, m.kind)));
            }
        }
        let kb = k / BLOCK;
        // Groups per tile: two for the AVX-512 kernel (a group past the last is zeros).
        #[cfg(target_arch = "x86_64")]
        let width = isa.map_or(1, Isa::groups_per_tile);
        #[cfg(not(target_arch = "x86_64"))]
        let width = 1;
        // A few activation rows (a generation step, up to a batch of 8) against pairs of
        // groups: planes and scales are read by the tile straight from the store, unpacked and
        // converted in registers, instead of to memory first (1 row: Q4_1 55 -> 81 GFLOP/s,
        // 8 rows 184 -> 193; beyond 8 rows unpacking once per group is cheaper).
        let direct = width == 2 && rows <= 8;
        let threads = rayon::current_num_threads();
        let total_groups: usize = mats.iter().map(|m| m.groups().div_ceil(width)).sum();
        // Groups per task: enough tasks for every core, few enough that each task's unpacking
        // is repaid over the activation rows.
        let per_task = (total_groups / (4 * threads)).clamp(1, 8);
        // Each output written once, straight into its `[rows, n]` place: a task owns whole
        // groups (8 columns of every row), so no two tasks write the same element.
        let mut outs: Vec<Vec<f32>> = mats
            .iter()
            .map(|m| Vec::with_capacity(rows * m.n))
            .collect();
        let ptrs: Vec<OutPtr> = outs.iter_mut().map(|o| OutPtr(o.as_mut_ptr())).collect();
        let tasks: Vec<(usize, usize)> = mats
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                (0..m.groups().div_ceil(width).div_ceil(per_task)).map(move |t| (i, t))
            })
            .collect();
        tasks.par_iter().for_each(|&(i, task)| {
            let m = mats[i];
            let q = &quantized
                .iter()
                .find(|(k, _)| *k == QuantKey::of(m.kind))
                .unwrap()
                .1;
            let mut s = Scratch::new(kb, m.kind.subs(), width);
            let mut res = [0f32; 4 * 2 * GROUP];
            let units = m.groups().div_ceil(width);
            for u in task * per_task..((task + 1) * per_task).min(units) {
                let g = u * width;
                if !direct {
                    m.unpack(g, width, &mut s, isa.is_some());
                }
                let cols = (width * GROUP).min(m.n - g * GROUP);
                let mut r0 = 0;
                while r0 < rows {
                    // Four activation rows per tile (eight, with AVX-512's 32 registers, was
                    // slower); a last tile of one to three.
                    let t = (rows - r0).min(4);
                    // Full units straight into the output; a partial last one through `res`.
                    let (out, ldo) = if cols == width * GROUP {
                        // SAFETY: rows `r0..r0 + t`, columns `g * 8..g * 8 + cols` are inside
                        // the `rows * n` capacity and written by this task only.
                        (unsafe { ptrs[i].get().add(r0 * m.n + g * GROUP) }, m.n)
                    } else {
                        (res.as_mut_ptr(), width * GROUP)
                    };
                    match t {
                        4 => m.tile::<4>(&s, q, r0, isa, out, ldo, direct.then_some(g)),
                        3 => m.tile::<3>(&s, q, r0, isa, out, ldo, direct.then_some(g)),
                        2 => m.tile::<2>(&s, q, r0, isa, out, ldo, direct.then_some(g)),
                        _ => m.tile::<1>(&s, q, r0, isa, out, ldo, direct.then_some(g)),
                    }
                    if cols < width * GROUP {
                        for (j, row) in res.chunks(width * GROUP).take(t).enumerate() {
                            let at = (r0 + j) * m.n + g * GROUP;
                            // SAFETY: as above.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    row.as_ptr(),
                                    ptrs[i].get().add(at),
                                    cols,
                                )
                            };
                        }
                    }
                    r0 += t;
                }
            }
        });
        mats.iter()
            .zip(outs)
            .map(|(m, mut out)| {
                // SAFETY: the groups cover all `n` columns of all rows, each written above.
                unsafe { out.set_len(rows * m.n) };
                Tensor::from_vec(out, (rows, m.n), &Device::Cpu)
            })
            .collect()
    }

    /// Activation rows `r0..r0 + T` against the group(s) in `s`, into `out` (`8 * groups`
    /// values per row, rows `ldo` apart); with `direct`, the pair of groups from that one on
    /// read from their planes (AVX-512 only).
    #[allow(clippy::too_many_arguments)]
    fn tile<const T: usize>(
        &self,
        s: &Scratch,
        q: &Q8Rows,
        r0: usize,
        isa: Option<Isa>,
        out: *mut f32,
        ldo: usize,
        direct: Option<usize>,
    ) {
        let (kb, subs) = (self.k / BLOCK, self.kind.subs());
        let k = self.k;
        #[cfg(target_arch = "x86_64")]
        if let Some(isa) = isa {
            let t = x86::Tile {
                vals: &s.vals,
                d: &s.d,
                m: &s.m,
                kb,
                k,
                xq: &q.q[r0 * k..(r0 + T) * k],
                xd: &q.d[r0 * kb..(r0 + T) * kb],
                xs: &q.s[r0 * kb * subs..(r0 + T) * kb * subs],
                out,
                ldo,
            };
            if let Some(g) = direct {
                let (kb, eb) = (self.k / BLOCK, self.kind.extra_bytes());
                let plane = |g: usize| -> (&[u8], &[u8]) {
                    if g < self.groups() {
                        (
                            &self.nib[g * kb * NIBBLES..][..kb * NIBBLES],
                            &self.extra[g * kb * eb..][..kb * eb],
                        )
                    } else {
                        (&s.zeros[..kb * NIBBLES], &s.zeros[..kb * eb])
                    }
                };
                // Each group's scales (and mins) as raw bytes, `kb * subs * 8` values of 2 or
                // 4 bytes.
                let width = if self.kind.f16_scales() { 2 } else { 4 };
                let per_group = kb * subs * GROUP * width;
                fn scales<'a>(sc: &'a Scales, g: usize, per: usize, zeros: &'a [u8]) -> &'a [u8] {
                    sc.raw()
                        .get(g * per..(g + 1) * per)
                        .unwrap_or(&zeros[..per])
                }
                let (a, b) = (plane(g), plane(g + 1));
                let planes = x86::Planes {
                    extra_kind: self.kind.extra(),
                    nib: [a.0, b.0],
                    extra: [a.1, b.1],
                    extra_bytes: eb,
                    d: [
                        scales(&self.d, g, per_group, &s.zeros),
                        scales(&self.d, g + 1, per_group, &s.zeros),
                    ],
                    m: self.m.as_ref().map(|m| {
                        [
                            scales(m, g, per_group, &s.zeros),
                            scales(m, g + 1, per_group, &s.zeros),
                        ]
                    }),
                    f16: self.kind.f16_scales(),
                    offset: self.kind.offset(),
                };
                debug_assert_eq!(isa, Isa::Avx512);
                // SAFETY: direct tiles are chosen only with AVX-512 (VNNI, BW) detected.
                unsafe { x86::tile_direct::<T>(self.kind, &t, &planes) };
                return;
            }
            // SAFETY: `isa` was detected on this CPU (tests pass only what it has); the
            // caller owns `out`'s `T` rows of `8 * groups` values.
            unsafe { x86::tile::<T>(isa, self.kind, &t) };
            return;
        }
        let _ = (isa, direct);
        let span = BLOCK / subs;
        for t in 0..T {
            let r = r0 + t;
            for lane in 0..GROUP {
                let mut acc = 0f32;
                for b in 0..kb {
                    for sub in 0..subs {
                        let mut isum = 0i32;
                        for i in sub * span..(sub + 1) * span {
                            let (j, tt) = (i / 4, i % 4);
                            let u = s.vals[b * 256 + 32 * j + 4 * lane + tt];
                            isum += u as i32 * q.q[r * k + b * BLOCK + i] as i32;
                        }
                        let at = (b * subs + sub) * GROUP + lane;
                        acc += s.d[at] * q.d[r * kb + b] * isum as f32
                            + s.m[at] * q.s[(r * kb + b) * subs + sub];
                    }
                }
                // SAFETY: the caller owns `out`'s `T` rows of 8 values, `ldo` apart.
                unsafe { *out.add(t * ldo + lane) = acc };
            }
        }
    }
}

/// Where the tasks of one matmul write their outputs (disjoint columns of one buffer).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint elements, and the buffer outlives the parallel pass.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// One block of 32 activations to 8 bits (see `x86::quantize_block`).
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, [i32; 2]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2 and FMA are present (checked at run time).
        return unsafe { x86::quantize_block(x, q) };
    }
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (qi, &v) in q.iter_mut().zip(x) {
        // Half away from zero, as llama.cpp's reference quantizer and candle's round;
        // |v * id| <= 127, so the cast is exact.
        *qi = (v * id).round() as i8;
    }
    let half = |h: &[i8]| h.iter().map(|&v| v as i32).sum::<i32>();
    (scale, [half(&q[..16]), half(&q[16..])])
}

/// Quantizes rows of activations per block of 32, with sums per weight sub-block.
fn quantize_rows(xs: &[f32], rows: usize, k: usize, kind: Kind) -> Q8Rows {
    let blocks = rows * k / BLOCK;
    let subs = kind.subs();
    let mut out = Q8Rows {
        d: vec![0.0; blocks],
        s: vec![0.0; blocks * subs],
        q: vec![0; rows * k],
    };
    out.q
        .par_chunks_mut(BLOCK)
        .zip(out.d.par_iter_mut().zip(out.s.par_chunks_mut(subs)))
        .zip(xs.par_chunks(BLOCK))
        .with_min_len(64)
        .for_each(|((q, (d, s)), x)| {
            let (scale, halves) = quantize_block(x, q);
            // The scale rounded to f16 as llama.cpp's Q8_0 / Q8_1 store it (its Q8_K, the
            // k-quants' partner, keeps f32).
            *d = if kind.f16_scales() {
                half::f16::from_f32(scale).to_f32()
            } else {
                scale
            };
            let sums = if subs == 2 {
                halves
            } else {
                [halves[0] + halves[1], 0]
            };
            for (s, &sum) in s.iter_mut().zip(&sums) {
                *s = if kind.sum_in_f16() {
                    // llama.cpp's Q8_1 stores the block sum (from the unrounded scale) in f16.
                    half::f16::from_f32(scale * sum as f32).to_f32()
                } else {
                    *d * sum as f32
                };
            }
        });
    out
}
