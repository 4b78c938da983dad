//! The x86-64 kernels: unpacking a group's planes into interleaved bytes (AVX2), and the tile
//! product of eight weight rows with four activation rows, once with AVX-VNNI's `vpdpbusd` (four
//! u8 x i8 products into each 32-bit lane in one instruction) and once with AVX2's
//! `pmaddubsw` + `pmaddwd`; with AVX-512 VNNI, two groups (sixteen weight rows) per 512-bit
//! register. Lanes are weight rows, so the per-block float work (convert, scale, add) is done
//! once for eight (or sixteen) rows, not once per row.

use super::repack::{Extra, Kind, BLOCK, NIBBLES};
use std::arch::x86_64::*;

/// One (group, block)'s 256 interleaved bytes from its planes: its eight 32-byte chunks at
/// `out[stride * j..]` (`stride` 32: one group alone; 64: a pair's halves side by side).
#[target_feature(enable = "avx2")]
pub unsafe fn unpack(extra_kind: Extra, nib: &[u8], extra: &[u8], out: &mut [u8], stride: usize) {
    debug_assert!(nib.len() >= NIBBLES && stride >= 32 && out.len() >= 7 * stride + 32);
    let low = _mm256_set1_epi8(0x0F);
    let bit4 = _mm256_set1_epi8(0x10);
    let bits45 = _mm256_set1_epi8(0x30);
    let high = _mm256_set1_epi8(0xF0u8 as i8);
    let load = |s: &[u8], at: usize| _mm256_loadu_si256(s.as_ptr().add(at) as *const __m256i);
    // Bits `from..` of each byte moved to bit 4 (16-bit shifts; the mask drops what crossed a
    // byte boundary).
    let to4 = |v: __m256i, from: i32, mask: __m256i| {
        let moved = if from <= 4 {
            _mm256_sll_epi16(v, _mm_cvtsi32_si128(4 - from))
        } else {
            _mm256_srl_epi16(v, _mm_cvtsi32_si128(from - 4))
        };
        _mm256_and_si256(moved, mask)
    };
    for j in 0..4 {
        let p = load(nib, 32 * j);
        let mut a = _mm256_and_si256(p, low);
        let mut b = _mm256_and_si256(_mm256_srli_epi16(p, 4), low);
        match extra_kind {
            Extra::None => {}
            Extra::Bit => {
                let h = load(extra, 0);
                a = _mm256_or_si256(a, to4(h, j as i32, bit4));
                b = _mm256_or_si256(b, to4(h, j as i32 + 4, bit4));
            }
            Extra::TwoBits => {
                let (h0, h1) = (load(extra, 0), load(extra, 32));
                a = _mm256_or_si256(a, to4(h0, 2 * j as i32, bits45));
                b = _mm256_or_si256(b, to4(h1, 2 * j as i32, bits45));
            }
            Extra::Nibble => {
                let q = load(extra, 32 * j);
                a = _mm256_or_si256(a, _mm256_and_si256(_mm256_slli_epi16(q, 4), high));
                b = _mm256_or_si256(b, _mm256_and_si256(q, high));
            }
        }
        _mm256_storeu_si256(out.as_mut_ptr().add(stride * j) as *mut __m256i, a);
        _mm256_storeu_si256(out.as_mut_ptr().add(stride * (j + 4)) as *mut __m256i, b);
    }
}

/// One tile's inputs and where its outputs go: a group's unpacked values (`kb` blocks of 256
/// bytes; 512 for a pair) and its scales (`kb * subs` vectors of 8 or 16 rows,
/// `w = d * u + m`); the tile's activation rows one after another (8-bit values, `k` per row;
/// a scale per block, `kb` per row; `d * sum(q)` per sub-block, `kb * subs` per row); output
/// row `r` at `out + r * ldo`.
pub struct Tile<'a> {
    pub vals: &'a [u8],
    pub d: &'a [f32],
    pub m: &'a [f32],
    pub kb: usize,
    pub k: usize,
    pub xq: &'a [i8],
    pub xd: &'a [f32],
    pub xs: &'a [f32],
    pub out: *mut f32,
    pub ldo: usize,
}

macro_rules! tile_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// `out[t][r] = sum_k w[r][k] x[t][k]` for the tile's 8 weight rows and `T` activation
        /// rows.
        #[target_feature(enable = $features)]
        pub unsafe fn $name<const T: usize, const SUBS: usize, const WIDE: bool>(t: &Tile) {
            // Independent accumulator chains where there are few rows (one row's eight
            // dependent `vpdpbusd` per block would otherwise wait on each other's latency).
            let chains = match T {
                1 => 4,
                2 => 2,
                _ => 1,
            };
            let mut acc = [_mm256_setzero_ps(); T];
            let mut acc_m = [_mm256_setzero_ps(); T];
            let per_sub = 8 / SUBS;
            for b in 0..t.kb {
                let vals = t.vals.as_ptr().add(b * 256);
                for s in 0..SUBS {
                    let mut isum = [[_mm256_setzero_si256(); 4]; T];
                    for j in s * per_sub..(s + 1) * per_sub {
                        let w = _mm256_loadu_si256(vals.add(32 * j) as *const __m256i);
                        for r in 0..T {
                            let x = (t.xq.as_ptr().add(r * t.k + b * BLOCK + 4 * j) as *const i32)
                                .read_unaligned();
                            let c = j % chains;
                            isum[r][c] = $dot::<WIDE>(isum[r][c], w, _mm256_set1_epi32(x));
                        }
                    }
                    let at = (b * SUBS + s) * 8;
                    let d = _mm256_loadu_ps(t.d.as_ptr().add(at));
                    let m = _mm256_loadu_ps(t.m.as_ptr().add(at));
                    for r in 0..T {
                        let mut sum = isum[r][0];
                        for c in 1..chains {
                            sum = _mm256_add_epi32(sum, isum[r][c]);
                        }
                        let xd = *t.xd.get_unchecked(r * t.kb + b);
                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(xd));
                        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[r]);
                        let xs = _mm256_set1_ps(*t.xs.get_unchecked((r * t.kb + b) * SUBS + s));
                        acc_m[r] = _mm256_fmadd_ps(m, xs, acc_m[r]);
                    }
                }
            }
            for r in 0..T {
                acc[r] = _mm256_add_ps(acc[r], acc_m[r]);
            }
            for r in 0..T {
                _mm256_storeu_ps(t.out.add(r * t.ldo), acc[r]);
            }
        }
    };
}

/// `acc + sum of 4 u8 x i8 products` per 32-bit lane (VNNI: exact, no 16-bit step).
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn dot_vnni<const WIDE: bool>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(acc, w, x)
}

/// The same with AVX2: `pmaddubsw` adds pairs into 16 bits with saturation, which 8-bit
/// weights (up to 255 x 127 x 2) would overflow, so those are split into their low 7 bits and
/// their top bit (each pair then fits).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2<const WIDE: bool>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    if WIDE {
        let top = _mm256_set1_epi8(0x80u8 as i8);
        let lo = _mm256_maddubs_epi16(_mm256_andnot_si256(top, w), x);
        let hi = _mm256_maddubs_epi16(_mm256_and_si256(top, w), x);
        let sum = _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones));
        _mm256_add_epi32(acc, sum)
    } else {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones))
    }
}

tile_kernel!(tile_vnni, "avx2,fma,avxvnni", dot_vnni);
tile_kernel!(tile_avx2, "avx2,fma", dot_avx2);

/// The tile product for a pair of groups (sixteen weight rows, one per 32-bit lane of a
/// 512-bit register) with AVX-512 VNNI: `vals` holds, per block and chunk `j`, the first
/// group's 32 bytes then the second's (`unpack` with stride 64); `d` and `m` sixteen scales
/// per sub-block. Twice the work of `tile_vnni` per instruction, the same arithmetic per lane.
#[target_feature(enable = "avx512f,avx512vnni,avx2,fma")]
#[allow(clippy::needless_range_loop)] // rows and chains index parallel arrays
pub unsafe fn tile_avx512<const T: usize, const SUBS: usize>(t: &Tile) {
    let chains = match T {
        1 => 4,
        2 => 2,
        _ => 1,
    };
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    let per_sub = 8 / SUBS;
    for b in 0..t.kb {
        let vals = t.vals.as_ptr().add(b * 512);
        for s in 0..SUBS {
            let mut isum = [[_mm512_setzero_si512(); 4]; T];
            for j in s * per_sub..(s + 1) * per_sub {
                let w = _mm512_loadu_si512(vals.add(64 * j) as *const __m512i);
                for r in 0..T {
                    let x = (t.xq.as_ptr().add(r * t.k + b * BLOCK + 4 * j) as *const i32)
                        .read_unaligned();
                    let c = j % chains;
                    isum[r][c] = _mm512_dpbusd_epi32(isum[r][c], w, _mm512_set1_epi32(x));
                }
            }
            let at = (b * SUBS + s) * 16;
            let d = _mm512_loadu_ps(t.d.as_ptr().add(at));
            let m = _mm512_loadu_ps(t.m.as_ptr().add(at));
            for r in 0..T {
                let mut sum = isum[r][0];
                for c in 1..chains {
                    sum = _mm512_add_epi32(sum, isum[r][c]);
                }
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*t.xd.get_unchecked(r * t.kb + b)));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[r]);
                let xs = _mm512_set1_ps(*t.xs.get_unchecked((r * t.kb + b) * SUBS + s));
                acc_m[r] = _mm512_fmadd_ps(m, xs, acc_m[r]);
            }
        }
    }
    for r in 0..T {
        _mm512_storeu_ps(t.out.add(r * t.ldo), _mm512_add_ps(acc[r], acc_m[r]));
    }
}

/// Two groups' planes and scales, as the store holds them, for [`tile_avx512_direct`].
pub struct Planes<'a> {
    /// Each group's nibble plane (`kb * 128` bytes) and extra plane (`kb * extra_bytes`).
    pub nib: [&'a [u8]; 2],
    pub extra: [&'a [u8]; 2],
    pub extra_bytes: usize,
    /// Each group's scales (`kb * subs` vectors of 8, f16 or f32 as `f16` says) and mins (the
    /// same; `None`: `m = offset * d`).
    pub d: [&'a [u8]; 2],
    pub m: Option<[&'a [u8]; 2]>,
    pub f16: bool,
    pub offset: f32,
}

/// Scale vector `i` of both groups as sixteen f32 lanes.
#[inline(always)]
unsafe fn scales_pair(p: [&[u8]; 2], i: usize, f16: bool) -> __m512 {
    if f16 {
        let lo = _mm_loadu_si128(p[0].as_ptr().add(16 * i) as *const __m128i);
        let hi = _mm_loadu_si128(p[1].as_ptr().add(16 * i) as *const __m128i);
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi))
    } else {
        let lo = _mm256_loadu_si256(p[0].as_ptr().add(32 * i) as *const __m256i);
        let hi = _mm256_loadu_si256(p[1].as_ptr().add(32 * i) as *const __m256i);
        _mm512_castsi512_ps(_mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi))
    }
}

/// 32 bytes of each group side by side in one register.
#[inline(always)]
unsafe fn load_pair(a: *const u8, b: *const u8) -> __m512i {
    let lo = _mm256_loadu_si256(a as *const __m256i);
    let hi = _mm256_loadu_si256(b as *const __m256i);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The [`Extra`] kinds as const parameters, so each direct tile is built for one of them.
const NONE: u8 = 0;
const BIT: u8 = 1;
const TWO_BITS: u8 = 2;
const NIBBLE: u8 = 3;

/// A block's eight 64-byte chunks for a pair of groups, unpacked in registers (what
/// [`unpack`] with stride 64 stores, the same bits), for extra kind `E`. Always inlined into
/// its AVX-512 caller (a call per block returned the eight registers through memory: a third
/// of a generation run's time was spent in it); the caller's target features cover the
/// intrinsics.
#[inline(always)]
unsafe fn unpack_pair<const E: u8>(nib: [*const u8; 2], extra: [*const u8; 2]) -> [__m512i; 8] {
    let low = _mm512_set1_epi8(0x0F);
    let bit4 = _mm512_set1_epi8(0x10);
    let bits45 = _mm512_set1_epi8(0x30);
    let high = _mm512_set1_epi8(0xF0u8 as i8);
    let to4 = |v: __m512i, from: i32, mask: __m512i| {
        let moved = if from <= 4 {
            _mm512_sll_epi16(v, _mm_cvtsi32_si128(4 - from))
        } else {
            _mm512_srl_epi16(v, _mm_cvtsi32_si128(from - 4))
        };
        _mm512_and_si512(moved, mask)
    };
    let mut w = [_mm512_setzero_si512(); 8];
    for j in 0..4 {
        let p = load_pair(nib[0].add(32 * j), nib[1].add(32 * j));
        let mut a = _mm512_and_si512(p, low);
        let mut b = _mm512_and_si512(_mm512_srli_epi16::<4>(p), low);
        match E {
            BIT => {
                let h = load_pair(extra[0], extra[1]);
                a = _mm512_or_si512(a, to4(h, j as i32, bit4));
                b = _mm512_or_si512(b, to4(h, j as i32 + 4, bit4));
            }
            TWO_BITS => {
                let h0 = load_pair(extra[0], extra[1]);
                let h1 = load_pair(extra[0].add(32), extra[1].add(32));
                a = _mm512_or_si512(a, to4(h0, 2 * j as i32, bits45));
                b = _mm512_or_si512(b, to4(h1, 2 * j as i32, bits45));
            }
            NIBBLE => {
                let q = load_pair(extra[0].add(32 * j), extra[1].add(32 * j));
                a = _mm512_or_si512(a, _mm512_and_si512(_mm512_slli_epi16::<4>(q), high));
                b = _mm512_or_si512(b, _mm512_and_si512(q, high));
            }
            _ => {}
        }
        w[j] = a;
        w[j + 4] = b;
    }
    w
}

/// Every block of a pair of groups unpacked into `out` (512 bytes a block: what [`unpack`]
/// with stride 64 stores for each group), for the AVX-512 tiles over many activation rows: one
/// call per pair, the blocks unpacked in 512-bit registers.
///
/// SAFETY: AVX-512 F/BW present; both groups' planes hold `kb` blocks (`NIBBLES` and `eb` bytes
/// a block); `out` holds `kb * 512` bytes.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
pub unsafe fn unpack_pairs(
    kind: Extra,
    nib: [&[u8]; 2],
    extra: [&[u8]; 2],
    kb: usize,
    eb: usize,
    out: &mut [u8],
) {
    debug_assert!(out.len() >= kb * 512 && nib.iter().all(|p| p.len() >= kb * NIBBLES));
    match kind {
        Extra::None => unpack_pairs_of::<NONE>(nib, extra, kb, eb, out),
        Extra::Bit => unpack_pairs_of::<BIT>(nib, extra, kb, eb, out),
        Extra::TwoBits => unpack_pairs_of::<TWO_BITS>(nib, extra, kb, eb, out),
        Extra::Nibble => unpack_pairs_of::<NIBBLE>(nib, extra, kb, eb, out),
    }
}

#[inline(always)]
unsafe fn unpack_pairs_of<const E: u8>(
    nib: [&[u8]; 2],
    extra: [&[u8]; 2],
    kb: usize,
    eb: usize,
    out: &mut [u8],
) {
    for b in 0..kb {
        let n = nib.map(|p| p.as_ptr().add(b * NIBBLES));
        let e = extra.map(|p| p.as_ptr().add(b * eb));
        let w = unpack_pair::<E>(n, e);
        let o = out.as_mut_ptr().add(b * 512);
        for (j, w) in w.iter().enumerate() {
            _mm512_storeu_si512(o.add(64 * j) as *mut __m512i, *w);
        }
    }
}

/// [`tile_avx512`] reading the two groups' planes and scales straight from the store, values
/// unpacked and scales converted in registers: for a few activation rows (a generation step),
/// where unpacking to memory first is not repaid. `t.vals`, `t.d` and `t.m` are not read. The
/// same arithmetic in the same order, so the same results.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)] // rows and chains index parallel arrays
pub unsafe fn tile_avx512_direct<const T: usize, const SUBS: usize, const E: u8>(
    t: &Tile,
    planes: &Planes,
) {
    let chains = match T {
        1 => 4,
        2 => 2,
        _ => 1,
    };
    let mut acc = [_mm512_setzero_ps(); T];
    let mut acc_m = [_mm512_setzero_ps(); T];
    let per_sub = 8 / SUBS;
    let eb = planes.extra_bytes;
    for b in 0..t.kb {
        let nib = planes.nib.map(|p| p.as_ptr().add(b * NIBBLES));
        let extra = planes.extra.map(|p| p.as_ptr().add(b * eb));
        let w = unpack_pair::<E>(nib, extra);
        for s in 0..SUBS {
            let mut isum = [[_mm512_setzero_si512(); 4]; T];
            for j in s * per_sub..(s + 1) * per_sub {
                for r in 0..T {
                    let x = (t.xq.as_ptr().add(r * t.k + b * BLOCK + 4 * j) as *const i32)
                        .read_unaligned();
                    let c = j % chains;
                    isum[r][c] = _mm512_dpbusd_epi32(isum[r][c], w[j], _mm512_set1_epi32(x));
                }
            }
            let i = b * SUBS + s;
            let d = scales_pair(planes.d, i, planes.f16);
            let m = match planes.m {
                Some(mp) => scales_pair(mp, i, planes.f16),
                None => _mm512_mul_ps(_mm512_set1_ps(planes.offset), d),
            };
            for r in 0..T {
                let mut sum = isum[r][0];
                for c in 1..chains {
                    sum = _mm512_add_epi32(sum, isum[r][c]);
                }
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*t.xd.get_unchecked(r * t.kb + b)));
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[r]);
                let xs = _mm512_set1_ps(*t.xs.get_unchecked((r * t.kb + b) * SUBS + s));
                acc_m[r] = _mm512_fmadd_ps(m, xs, acc_m[r]);
            }
        }
    }
    for r in 0..T {
        _mm512_storeu_ps(t.out.add(r * t.ldo), _mm512_add_ps(acc[r], acc_m[r]));
    }
}

/// The direct tile for `kind` (AVX-512 VNNI and BW present).
pub unsafe fn tile_direct<const T: usize>(kind: Kind, t: &Tile, planes: &Planes) {
    match (kind.extra(), kind.subs()) {
        (Extra::None, 1) => tile_avx512_direct::<T, 1, NONE>(t, planes),
        (Extra::Bit, 1) => tile_avx512_direct::<T, 1, BIT>(t, planes),
        (Extra::TwoBits, 2) => tile_avx512_direct::<T, 2, TWO_BITS>(t, planes),
        (Extra::Nibble, 1) => tile_avx512_direct::<T, 1, NIBBLE>(t, planes),
        (e, subs) => unreachable!("no block type has {e:?} with {subs} sub-blocks"),
    }
}

/// Which instruction set runs the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 VNNI: sixteen weight rows (a pair of groups) per tile.
    Avx512,
    Vnni,
    Avx2,
}

impl Isa {
    /// The best this CPU has (AVX2 and FMA are required; the caller checks).
    pub fn detect() -> Isa {
        if Self::has_avx512() {
            Isa::Avx512
        } else if is_x86_feature_detected!("avxvnni") {
            Isa::Vnni
        } else {
            Isa::Avx2
        }
    }

    /// Whether the AVX-512 VNNI kernel can run here.
    pub fn has_avx512() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// Groups of eight weight rows per tile.
    pub fn groups_per_tile(self) -> usize {
        match self {
            Isa::Avx512 => 2,
            _ => 1,
        }
    }
}

/// The tile product for `kind` with `isa` (which the CPU must have) into `t.out`: `8 *
/// isa.groups_per_tile()` values per activation row.
pub unsafe fn tile<const T: usize>(isa: Isa, kind: Kind, t: &Tile) {
    let wide = kind == Kind::Q8_0;
    match (isa, kind.subs(), wide) {
        (Isa::Avx512, 2, _) => tile_avx512::<T, 2>(t),
        (Isa::Avx512, _, _) => tile_avx512::<T, 1>(t),
        (Isa::Vnni, 2, _) => tile_vnni::<T, 2, false>(t),
        (Isa::Vnni, _, _) => tile_vnni::<T, 1, false>(t),
        (Isa::Avx2, 2, _) => tile_avx2::<T, 2, false>(t),
        (Isa::Avx2, _, true) => tile_avx2::<T, 1, true>(t),
        (Isa::Avx2, _, false) => tile_avx2::<T, 1, false>(t),
    }
}

/// One block of 32 activations to 8 bits: `q = round(x / scale)`, `scale = max |x| / 127`
/// (returned unrounded), with the sum of `q` over each half (`sums[0]` the first 16).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, [i32; 2]) {
    debug_assert!(x.len() >= BLOCK && q.len() >= BLOCK);
    let p = x.as_ptr();
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
    let sign = _mm256_set1_ps(-0.0);
    let abs = |a: __m256| _mm256_andnot_ps(sign, a);
    let m = _mm256_max_ps(
        _mm256_max_ps(abs(v[0]), abs(v[1])),
        _mm256_max_ps(abs(v[2]), abs(v[3])),
    );
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    let scale = _mm_cvtss_f32(m) / 127.0;
    let id = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
    // Round half away from zero (llama.cpp's reference quantizer, candle's and the scalar
    // path's): the truncation, plus one away from zero where the dropped part is >= 0.5
    // (exact: `s - trunc(s)` is).
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let i = v.map(|v| {
        let s = _mm256_mul_ps(v, id);
        let t = _mm256_round_ps(s, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let up = _mm256_cmp_ps(abs(_mm256_sub_ps(s, t)), half, _CMP_GE_OQ);
        let step = _mm256_and_ps(up, _mm256_or_ps(one, _mm256_and_ps(sign, s)));
        _mm256_cvttps_epi32(_mm256_add_ps(t, step))
    });
    let sum_half = |a: __m256i, b: __m256i| {
        let s = _mm256_add_epi32(a, b);
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    };
    let sums = [sum_half(i[0], i[1]), sum_half(i[2], i[3])];
    // i32 -> i16 -> i8 packs work per 128-bit lane; the permute puts the values back in order.
    let w = _mm256_packs_epi32(i[0], i[1]);
    let z = _mm256_packs_epi32(i[2], i[3]);
    let b = _mm256_packs_epi16(w, z);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, b);
    (scale, sums)
}
