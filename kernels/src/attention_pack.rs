//! The attention's key and value segments as the products read them, made once per call:
//! each (segment, row, key head)'s keys transposed into panels of SIMD lanes, f32 or f16 (the
//! CPU KV cache of `--dtype q`) converted on the way. Values are read where they lie (f16 ones
//! converted as they are loaded).

use crate::attention_products::{Part, Width};
use crate::TaskPtr;
use candle_core::{DType, Result, Storage, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// A CPU tensor's data of f32 or f16 (its storage guard held by the caller) with its element
/// strides.
pub(crate) struct View {
    ptr: *const u8,
    pub(crate) f16: bool,
    pub(crate) strides: Vec<isize>,
}

// SAFETY: the data is only read, while the caller holds the storage's read guard.
unsafe impl Send for View {}
unsafe impl Sync for View {}

impl View {
    /// `None` off the CPU or for other dtypes (or f16 where `allow_f16` is false).
    pub(crate) fn of(
        storage: &Storage,
        layout: &candle_core::Layout,
        allow_f16: bool,
    ) -> Result<Option<Self>> {
        let Storage::Cpu(cpu) = storage else {
            return Ok(None);
        };
        let strides = layout.stride().iter().map(|&s| s as isize).collect();
        // SAFETY (both arms): the layout's offset lies inside its storage.
        match cpu {
            candle_core::CpuStorage::F32(data) => Ok(Some(View {
                ptr: unsafe { data.as_ptr().add(layout.start_offset()) } as *const u8,
                f16: false,
                strides,
            })),
            candle_core::CpuStorage::F16(data) if allow_f16 => Ok(Some(View {
                ptr: unsafe { data.as_ptr().add(layout.start_offset()) } as *const u8,
                f16: true,
                strides,
            })),
            _ => Ok(None),
        }
    }

    fn offset(&self, idx: &[usize]) -> isize {
        idx.iter()
            .zip(&self.strides)
            .map(|(&i, &s)| i as isize * s)
            .sum()
    }

    /// Element `idx`'s address in an f32 tensor (`idx` one index per dimension).
    pub(crate) fn at(&self, idx: &[usize]) -> *const f32 {
        debug_assert!(!self.f16);
        // SAFETY: callers index inside the tensor's shape.
        unsafe { (self.ptr as *const f32).offset(self.offset(idx)) }
    }

    /// Element `idx`'s address in an f16 tensor.
    fn at16(&self, idx: &[usize]) -> *const f16 {
        debug_assert!(self.f16);
        // SAFETY: callers index inside the tensor's shape.
        unsafe { (self.ptr as *const f16).offset(self.offset(idx)) }
    }
}

/// One run of keys and values: `[rows, kvh, len, hd]`, `rows` 1 when every row reads it.
pub(crate) struct Segment<'a> {
    pub k: &'a View,
    pub v: &'a View,
    pub shared: bool,
    pub len: usize,
}

/// Every segment's keys packed for one call.
pub(crate) struct Packed {
    keys: Vec<f32>,
    /// Per (segment, row, key head): where its packed keys start.
    units: Vec<(usize, usize, usize, usize)>,
    /// Each segment's first unit.
    first_unit: Vec<usize>,
    kvh: usize,
    lanes: usize,
}

impl Packed {
    pub(crate) fn new(segs: &[Segment], b: usize, kvh: usize, hd: usize, width: Width) -> Self {
        let lanes = width.lanes();
        let mut total = 0;
        let mut units = Vec::new();
        let mut first_unit = Vec::with_capacity(segs.len());
        for (si, s) in segs.iter().enumerate() {
            first_unit.push(units.len());
            let ldk = s.len.div_ceil(lanes) * lanes;
            for r in 0..if s.shared { 1 } else { b } {
                for g in 0..kvh {
                    units.push((si, r, g, total));
                    total += hd * ldk;
                }
            }
        }
        // Not zeroed first: every unit writes all of its values, and the length is set after.
        let mut keys: Vec<f32> = Vec::with_capacity(total);
        let kp = TaskPtr(keys.as_mut_ptr());
        crate::team::for_each(units.len(), |u| {
            let (si, r, g, at) = units[u];
            let s = &segs[si];
            let ldk = s.len.div_ceil(lanes) * lanes;
            let (kj, kd) = (s.k.strides[2], s.k.strides[3]);
            // SAFETY: each unit writes its own range of the buffer's capacity; the keys are
            // read inside their tensor's shape.
            unsafe {
                let out = std::slice::from_raw_parts_mut(kp.get().add(at), hd * ldk);
                if s.k.f16 {
                    pack_keys_f16(
                        width,
                        s.k.at16(&[r, g, 0, 0]),
                        (kj, kd),
                        s.len,
                        hd,
                        ldk,
                        out,
                    );
                } else {
                    pack_keys(
                        width,
                        s.k.at(&[r, g, 0, 0]),
                        (kj, kd),
                        s.len,
                        hd,
                        ldk,
                        ldk,
                        out,
                    );
                }
            }
        });
        // SAFETY: the units cover the buffer, each value written above.
        unsafe { keys.set_len(total) };
        Packed {
            keys,
            units,
            first_unit,
            kvh,
            lanes,
        }
    }

    /// Segment `si`'s keys `first..first + seen` of the block (of row `row`, key head `g`) as
    /// the products take them.
    pub(crate) fn part(
        &self,
        segs: &[Segment],
        si: usize,
        (row, g): (usize, usize),
        first: usize,
        seen: usize,
    ) -> Part {
        let s = &segs[si];
        let at = self.units[self.first_unit[si] + row * self.kvh + g].3;
        let (v, v16) = if s.v.f16 {
            (std::ptr::null(), s.v.at16(&[row, g, 0, 0]))
        } else {
            (s.v.at(&[row, g, 0, 0]), std::ptr::null())
        };
        Part {
            packed: self.keys.as_ptr().wrapping_add(at),
            ldk: s.len.div_ceil(self.lanes) * self.lanes,
            v,
            v16,
            vj: s.v.strides[2],
            first,
            seen,
        }
    }
}

/// [`pack_keys`] from f16 keys: sixteen at a time converted into a small buffer (F16C where the
/// CPU has it), then packed from there into their place.
///
/// SAFETY: as [`pack_keys`].
unsafe fn pack_keys_f16(
    width: Width,
    k: *const f16,
    (kj, kd): (isize, isize),
    n: usize,
    hd: usize,
    ldk: usize,
    out: &mut [f32],
) {
    const KEYS: usize = 16;
    let mut rows = vec![0f32; KEYS * hd];
    for j0 in (0..ldk).step_by(KEYS) {
        let m = KEYS.min(n.saturating_sub(j0));
        let src = k.wrapping_offset(j0 as isize * kj);
        to_f32_rows(src, (kj, kd), m, hd, &mut rows);
        let w = KEYS.min(ldk - j0);
        let rows_kd = (hd as isize, 1);
        pack_keys(width, rows.as_ptr(), rows_kd, m, hd, w, ldk, &mut out[j0..]);
    }
}

/// `n` rows of `hd` f16 values (row `j`, dimension `d` at `src + j * sj + d * sd`) into `out`
/// as f32, contiguous (F16C conversion where the CPU has it).
///
/// SAFETY: the rows lie in memory the caller may read; `out` holds `n * hd` values.
unsafe fn to_f32_rows(
    src: *const f16,
    (sj, sd): (isize, isize),
    n: usize,
    hd: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if sd == 1 && hd % 8 == 0 && std::arch::is_x86_feature_detected!("f16c") {
        return f16_rows_f16c(src, sj, n, hd, out);
    }
    for (j, row) in out.chunks_mut(hd).take(n).enumerate() {
        let r = src.offset(j as isize * sj);
        if sd == 1 {
            std::slice::from_raw_parts(r, hd).convert_to_f32_slice(row);
        } else {
            for (d, o) in row.iter_mut().enumerate() {
                *o = (*r.offset(d as isize * sd)).to_f32();
            }
        }
    }
}

/// [`to_f32_rows`] for contiguous rows of a multiple of 8 values, eight at a time with F16C in
/// one loop (the `half` crate's slice conversion makes a call per eight values).
///
/// SAFETY: as [`to_f32_rows`], on a CPU with F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn f16_rows_f16c(src: *const f16, sj: isize, n: usize, hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(out.len() >= n * hd);
    for j in 0..n {
        let r = src.offset(j as isize * sj) as *const __m128i;
        let o = out.as_mut_ptr().add(j * hd);
        for c in 0..hd / 8 {
            _mm256_storeu_ps(o.add(8 * c), _mm256_cvtph_ps(_mm_loadu_si128(r.add(c))));
        }
    }
}

/// Packs `n` keys (key `j`, dimension `d` at `k + j * kj + d * kd`) into `out` transposed:
/// `out[d * ld + j]` for `j < ldk`, `ldk` = `n` rounded up to whole panels (zeros past `n`).
/// Every one of those values is written.
///
/// SAFETY: the keys lie in memory the caller may read; `out` holds `(hd - 1) * ld + ldk`
/// values.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn pack_keys(
    width: Width,
    k: *const f32,
    (kj, kd): (isize, isize),
    n: usize,
    hd: usize,
    ldk: usize,
    ld: usize,
    out: &mut [f32],
) {
    const KEYS: usize = 16;
    let mut j0 = 0;
    #[cfg(target_arch = "x86_64")]
    if width == Width::Avx512 && (KEYS as isize - 1) * kj.abs() < i32::MAX as isize {
        // Sixteen keys' dimension `d` in one gather, stored as one vector.
        while j0 + KEYS <= n {
            gather_keys(
                k.offset(j0 as isize * kj),
                kj,
                kd,
                hd,
                out[j0..].as_mut_ptr(),
                ld,
            );
            j0 += KEYS;
        }
    }
    let _ = width;
    while j0 < ldk {
        let m = KEYS.min(ldk - j0);
        for d in 0..hd {
            let row = &mut out[d * ld + j0..][..m];
            for (l, o) in row.iter_mut().enumerate() {
                let j = j0 + l;
                *o = if j < n {
                    *k.offset(j as isize * kj + d as isize * kd)
                } else {
                    0.0
                };
            }
        }
        j0 += m;
    }
}

/// Sixteen keys from `k` (`kj` apart) into `out[d * ldk..][..16]` for every `d`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gather_keys(k: *const f32, kj: isize, kd: isize, hd: usize, out: *mut f32, ldk: usize) {
    use std::arch::x86_64::*;
    let idx = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(kj as i32),
    );
    for d in 0..hd {
        let v = _mm512_i32gather_ps::<4>(idx, k.offset(d as isize * kd));
        _mm512_storeu_ps(out.add(d * ldk), v);
    }
}

/// An f32 CPU tensor as f16 (F16C conversion where the CPU has it; candle's own cast converts
/// one value at a time), for keys and values going into an f16 KV cache.
pub fn to_f16(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return x.to_dtype(DType::F16);
    }
    let x = x.contiguous()?;
    let (storage, layout) = x.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        unreachable!("a CPU tensor")
    };
    let src = crate::contiguous_slice::<f32>(cpu, layout, "to_f16")?;
    let mut out = vec![f16::ZERO; src.len()];
    out.convert_from_f32_slice(src);
    Tensor::from_vec(out, x.dims(), x.device())
}
