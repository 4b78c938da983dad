//! GGUF blocks decoded into unsigned integer values and per-sub-block scales, and stored again
//! eight weight rows interleaved, so that one 256-bit vector holds four consecutive values of
//! each of eight rows: the operand of `vpdpbusd` (or `pmaddubsw`) whose eight 32-bit lanes are
//! eight rows' partial dot products. Values are kept at the file's bit width (a 4-bit plane plus
//! a 1-, 2- or 4-bit plane for the rest), so the weights take about the file's memory.
//!
//! Every type comes out as `w = d * u + m` per sub-block, `u` unsigned (0..=15, 31, 63 or 255):
//! Q4_0 `m = -8d`, Q5_0 `m = -16d`, Q8_0 `m = -128d`, Q6_K `m = -32d` (`d` = super-scale x the
//! 16 values' 8-bit scale); Q4_1 / Q5_1 store `m`; Q4_K / Q5_K `d` = super-scale x 6-bit scale,
//! `m` = -super-min x 6-bit min, per 32 values.

use candle_core::quantized::GgmlDType;

/// Values per block of the activations and of the interleaved layout.
pub const BLOCK: usize = 32;
/// Weight rows interleaved in one group.
pub const GROUP: usize = 8;
/// Bytes of the 4-bit plane per (group, block): 8 rows x 32 values / 2.
pub const NIBBLES: usize = GROUP * BLOCK / 2;

/// The block types the kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

/// What the values need beyond their low 4 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    None,
    /// One more bit (5-bit values): 32 bytes per (group, block), bit `j` of byte `4r + t` is
    /// bit 4 of vector `j`'s byte `4r + t`.
    Bit,
    /// Two more bits (6-bit values): two 32-byte planes, bits `2(j % 4)..` of plane `j / 4`.
    TwoBits,
    /// Four more bits (8-bit values): a second nibble plane laid out like the first.
    Nibble,
}

impl Kind {
    pub fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Kind::Q4_0,
            GgmlDType::Q4_1 => Kind::Q4_1,
            GgmlDType::Q5_0 => Kind::Q5_0,
            GgmlDType::Q5_1 => Kind::Q5_1,
            GgmlDType::Q8_0 => Kind::Q8_0,
            GgmlDType::Q4K => Kind::Q4K,
            GgmlDType::Q5K => Kind::Q5K,
            GgmlDType::Q6K => Kind::Q6K,
            _ => return None,
        })
    }

    /// Values per GGUF block and its bytes.
    pub fn file_block(self) -> (usize, usize) {
        match self {
            Kind::Q4_0 => (32, 18),
            Kind::Q4_1 => (32, 20),
            Kind::Q5_0 => (32, 22),
            Kind::Q5_1 => (32, 24),
            Kind::Q8_0 => (32, 34),
            Kind::Q4K => (256, 144),
            Kind::Q5K => (256, 176),
            Kind::Q6K => (256, 210),
        }
    }

    pub fn extra(self) -> Extra {
        match self {
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q4K => Extra::None,
            Kind::Q5_0 | Kind::Q5_1 | Kind::Q5K => Extra::Bit,
            Kind::Q6K => Extra::TwoBits,
            Kind::Q8_0 => Extra::Nibble,
        }
    }

    pub fn extra_bytes(self) -> usize {
        match self.extra() {
            Extra::None => 0,
            Extra::Bit => 32,
            Extra::TwoBits => 64,
            Extra::Nibble => NIBBLES,
        }
    }

    /// Sub-blocks (own scale) per 32 values: Q6_K scales every 16.
    pub fn subs(self) -> usize {
        if self == Kind::Q6K {
            2
        } else {
            1
        }
    }

    /// Whether `m` is stored (otherwise it is a fixed multiple of `d`).
    pub fn has_min(self) -> bool {
        matches!(self, Kind::Q4_1 | Kind::Q5_1 | Kind::Q4K | Kind::Q5K)
    }

    /// `m = offset * d` for the types that store no `m`.
    pub fn offset(self) -> f32 {
        match self {
            Kind::Q4_0 => -8.0,
            Kind::Q5_0 => -16.0,
            Kind::Q8_0 => -128.0,
            Kind::Q6K => -32.0,
            _ => 0.0,
        }
    }

    /// Whether the scales are the file's f16 values (exact in f16) or products that need f32.
    pub fn f16_scales(self) -> bool {
        matches!(
            self,
            Kind::Q4_0 | Kind::Q4_1 | Kind::Q5_0 | Kind::Q5_1 | Kind::Q8_0
        )
    }

    /// Whether llama.cpp pairs this type with Q8_1 activations, whose block sum is stored in f16
    /// (the sum term is then rounded the same way, so `q` computes what llama.cpp computes).
    pub fn sum_in_f16(self) -> bool {
        matches!(self, Kind::Q4_1 | Kind::Q5_1)
    }
}

fn f16(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Q4_K / Q5_K's 6-bit scale and min of sub-block `j` (llama.cpp's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 32 values `u` of 32-value block `jb` of a file block, and `(d, m)` per sub-block.
pub fn decode(kind: Kind, fb: &[u8], jb: usize, u: &mut [u8; BLOCK], dm: &mut [(f32, f32); 2]) {
    let nibbles = |u: &mut [u8; BLOCK], qs: &[u8]| {
        for i in 0..16 {
            u[i] = qs[i] & 0xF;
            u[i + 16] = qs[i] >> 4;
        }
    };
    let fifth = |u: &mut [u8; BLOCK], qh: &[u8]| {
        let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
        for (i, v) in u.iter_mut().enumerate() {
            *v |= (((qh >> i) & 1) as u8) << 4;
        }
    };
    match kind {
        Kind::Q4_0 => {
            nibbles(u, &fb[2..18]);
            dm[0] = (f16(fb, 0), -8.0 * f16(fb, 0));
        }
        Kind::Q4_1 => {
            nibbles(u, &fb[4..20]);
            dm[0] = (f16(fb, 0), f16(fb, 2));
        }
        Kind::Q5_0 => {
            nibbles(u, &fb[6..22]);
            fifth(u, &fb[2..6]);
            dm[0] = (f16(fb, 0), -16.0 * f16(fb, 0));
        }
        Kind::Q5_1 => {
            nibbles(u, &fb[8..24]);
            fifth(u, &fb[4..8]);
            dm[0] = (f16(fb, 0), f16(fb, 2));
        }
        Kind::Q8_0 => {
            for (v, &q) in u.iter_mut().zip(&fb[2..34]) {
                *v = q ^ 0x80;
            }
            dm[0] = (f16(fb, 0), -128.0 * f16(fb, 0));
        }
        Kind::Q4K | Kind::Q5K => {
            let (d, dmin) = (f16(fb, 0), f16(fb, 2));
            let (sc, m) = scale_min_k4(jb, &fb[4..16]);
            let qs = if kind == Kind::Q4K {
                &fb[16..144]
            } else {
                &fb[48..176]
            };
            let chunk = &qs[32 * (jb / 2)..32 * (jb / 2) + 32];
            let shift = 4 * (jb % 2);
            for (v, &q) in u.iter_mut().zip(chunk) {
                *v = (q >> shift) & 0xF;
            }
            if kind == Kind::Q5K {
                for (v, &h) in u.iter_mut().zip(&fb[16..48]) {
                    *v |= ((h >> jb) & 1) << 4;
                }
            }
            dm[0] = (d * sc as f32, -dmin * m as f32);
        }
        Kind::Q6K => {
            let (ql, qh, sc) = (&fb[0..128], &fb[128..192], &fb[192..208]);
            let d = f16(fb, 208);
            // Value 128n + 32p + l (l < 32) takes its low bits from ql[64n + l + 32(p % 2)]
            // (nibble p / 2) and its high bits from qh[32n + l] (bits 2p, 2p + 1).
            let (n, p) = (jb / 4, jb % 4);
            for (l, v) in u.iter_mut().enumerate() {
                let lo = (ql[64 * n + l + 32 * (p % 2)] >> (4 * (p / 2))) & 0xF;
                let hi = (qh[32 * n + l] >> (2 * p)) & 3;
                *v = lo | (hi << 4);
            }
            for (s, dm) in dm.iter_mut().enumerate() {
                let scale = d * sc[2 * jb + s] as i8 as f32;
                *dm = (scale, -32.0 * scale);
            }
        }
    }
}

/// Writes the values of row `r` (0..8) of one (group, block) into its planes.
pub fn write_planes(kind: Kind, u: &[u8; BLOCK], r: usize, nib: &mut [u8], extra: &mut [u8]) {
    for j in 0..4 {
        for t in 0..4 {
            let (a, b) = (u[4 * j + t], u[16 + 4 * j + t]);
            let p = 32 * j + 4 * r + t;
            nib[p] = (a & 0xF) | ((b & 0xF) << 4);
            match kind.extra() {
                Extra::None => {}
                Extra::Bit => {
                    extra[4 * r + t] |= ((a >> 4) & 1) << j | ((b >> 4) & 1) << (j + 4);
                }
                Extra::TwoBits => {
                    extra[4 * r + t] |= ((a >> 4) & 3) << (2 * j);
                    extra[32 + 4 * r + t] |= ((b >> 4) & 3) << (2 * j);
                }
                Extra::Nibble => extra[p] = (a >> 4) | ((b >> 4) << 4),
            }
        }
    }
}

/// The 256 interleaved bytes of one (group, block) from its planes: vector `j` (32 bytes), byte
/// `4r + t` = value `4j + t` of row `r` (the scalar twin of the SIMD unpack).
pub fn unpack_scalar(kind: Kind, nib: &[u8], extra: &[u8], out: &mut [u8]) {
    for j in 0..4 {
        for p in 0..32 {
            let byte = nib[32 * j + p];
            let (mut a, mut b) = (byte & 0xF, byte >> 4);
            match kind.extra() {
                Extra::None => {}
                Extra::Bit => {
                    a |= ((extra[p] >> j) & 1) << 4;
                    b |= ((extra[p] >> (j + 4)) & 1) << 4;
                }
                Extra::TwoBits => {
                    a |= ((extra[p] >> (2 * j)) & 3) << 4;
                    b |= ((extra[32 + p] >> (2 * j)) & 3) << 4;
                }
                Extra::Nibble => {
                    a |= (extra[32 * j + p] & 0xF) << 4;
                    b |= extra[32 * j + p] & 0xF0;
                }
            }
            out[32 * j + p] = a;
            out[32 * (j + 4) + p] = b;
        }
    }
}
