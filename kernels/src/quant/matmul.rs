//! The parallel matmul over a block matrix: tasks of groups (pairs with AVX-512), each group
//! unpacked once and met by tiles of up to four activation rows (or, for a few rows, read
//! straight from the store by the tile), every output written once in its final place.

use super::activations::{quantize_rows, Q8Rows, QuantKey};
use super::repack::{self, BLOCK, GROUP, NIBBLES};
use super::store::Scales;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{BlockMatrix, Isa};
use crate::TaskPtr;
use candle_core::{Device, Result, Tensor};

/// One tile's groups unpacked and their scales in f32 (`d1`, `m1`: one group's, on the way;
/// `zeros`: the planes of the group past the last, for the direct AVX-512 tiles).
pub(super) struct Scratch {
    zeros: Vec<u8>,
    pub(super) vals: Vec<u8>,
    pub(super) d: Vec<f32>,
    pub(super) m: Vec<f32>,
    d1: Vec<f32>,
    m1: Vec<f32>,
}

impl Scratch {
    pub(super) fn new(kb: usize, subs: usize, width: usize) -> Self {
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
    /// Groups `g0..g0 + width`'s values and scales into `s`, side by side per 32-byte chunk
    /// and per scale vector (`width` 2 for the AVX-512 kernel); a group past the last is zeros.
    pub(super) fn unpack(&self, g0: usize, width: usize, s: &mut Scratch, simd: bool) {
        let kb = self.k / BLOCK;
        let eb = self.kind.extra_bytes();
        let vecs = kb * self.kind.subs();
        // A whole pair of groups at once in 512-bit registers (AVX-512: `width` 2 is chosen
        // only with it), the usual case; a pair missing its second group goes the long way.
        #[cfg(target_arch = "x86_64")]
        let paired = width == 2 && simd && g0 + 1 < self.groups();
        #[cfg(not(target_arch = "x86_64"))]
        let paired = false;
        #[cfg(target_arch = "x86_64")]
        if paired {
            let plane = |g: usize| {
                (
                    &self.nib[g * kb * NIBBLES..][..kb * NIBBLES],
                    &self.extra[g * kb * eb..][..kb * eb],
                )
            };
            let (a, b) = (plane(g0), plane(g0 + 1));
            // SAFETY: pairs are unpacked only where the AVX-512 tiles run (F, BW, VNNI
            // detected); the planes and `vals` hold `kb` blocks.
            unsafe {
                x86::unpack_pairs(
                    self.kind.extra(),
                    [a.0, b.0],
                    [a.1, b.1],
                    kb,
                    eb,
                    &mut s.vals,
                )
            };
        }
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
            // Each block's values, unless the pair's were unpacked above (its scales still are
            // below).
            let blocks = if paired { 0 } else { kb };
            for b in 0..blocks {
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
    pub(super) fn scales(&self, g: usize, d: &mut [f32], m: &mut [f32]) {
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
    pub(super) fn matmul_with(
        mats: &[&BlockMatrix],
        x: &Tensor,
        isa: Option<Isa>,
    ) -> Result<Vec<Tensor>> {
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
        let ptrs: Vec<TaskPtr> = outs.iter_mut().map(|o| TaskPtr(o.as_mut_ptr())).collect();
        let tasks: Vec<(usize, usize)> = mats
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                (0..m.groups().div_ceil(width).div_ceil(per_task)).map(move |t| (i, t))
            })
            .collect();
        crate::team::for_each(tasks.len(), |t| {
            let (i, task) = tasks[t];
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
