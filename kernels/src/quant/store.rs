//! Where a [`BlockMatrix`](super::BlockMatrix)'s planes and scales live: in memory, as built at
//! load, or in a mapped file written once per model, so that the next run skips the repacking
//! and several processes on one machine (shards) share one copy through the page cache.
//!
//! File layout (little-endian): `ALBLKMAT`, format version, block type, `n`, `k`, then the
//! element counts of the nibble plane, the extra plane, the scales `d` and the mins `m`, then
//! each of those at a 64-byte aligned offset. Anything that does not match what the caller
//! expects (version, type, shape, sizes) is an error, and the caller rebuilds the file.

use super::repack::Kind;
use candle_core::Result;
use std::io::Write;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"ALBLKMAT";
/// Bumped whenever the repacked layout changes, so older files are rebuilt.
const VERSION: u32 = 1;
const ALIGN: usize = 64;
const HEADER: usize = 8 + 4 + 4 + 8 + 8 + 4 * 8;

/// Plain data a mapped file may hold.
pub(super) trait Pod: Copy + 'static {}
impl Pod for u8 {}
impl Pod for f32 {}
impl Pod for half::f16 {}

/// A slice of `T`, owned or in a mapped file.
pub(super) enum Buf<T: Pod> {
    Owned(Vec<T>),
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

impl<T: Pod> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            // SAFETY: `offset` is aligned for `T` and `offset + len * size_of::<T>()` lies in
            // the map (checked in `Mapped::take`); the file is never written once mapped
            // (replaced by rename only).
            Buf::Mapped { map, offset, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*offset) as *const T, *len)
            },
        }
    }
}

/// The scales of every (group, sub-block, row), as the file has them (f16) or as products of
/// the file's scales (f32, k-quants).
pub(super) enum Scales {
    F16(Buf<half::f16>),
    F32(Buf<f32>),
}

impl Scales {
    pub(super) fn from_f32(kind: Kind, v: &[f32]) -> Self {
        if kind.f16_scales() {
            Scales::F16(Buf::Owned(
                v.iter().map(|&x| half::f16::from_f32(x)).collect(),
            ))
        } else {
            Scales::F32(Buf::Owned(v.to_vec()))
        }
    }

    pub(super) fn read(&self, from: usize, out: &mut [f32]) {
        match self {
            Scales::F16(s) => {
                use half::slice::HalfFloatSliceExt;
                s[from..from + out.len()].convert_to_f32_slice(out)
            }
            Scales::F32(s) => out.copy_from_slice(&s[from..from + out.len()]),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Scales::F16(s) => s.len(),
            Scales::F32(s) => s.len(),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Scales::F16(s) => 2 * s.len(),
            Scales::F32(s) => 4 * s.len(),
        }
    }

    pub(super) fn raw(&self) -> &[u8] {
        match self {
            Scales::F16(s) => as_bytes(s),
            Scales::F32(s) => as_bytes(s),
        }
    }

    fn mapped(kind: Kind, m: &Mapped, len: usize) -> Result<Self> {
        Ok(if kind.f16_scales() {
            Scales::F16(m.take(len)?)
        } else {
            Scales::F32(m.take(len)?)
        })
    }
}

fn as_bytes<T: Pod>(s: &[T]) -> &[u8] {
    // SAFETY: `T` is plain data without padding (u8, f16, f32).
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

/// The parts of a block matrix as the file holds them.
pub(super) struct Parts<'a> {
    pub n: usize,
    pub k: usize,
    pub nib: &'a [u8],
    pub extra: &'a [u8],
    pub d: &'a Scales,
    pub m: Option<&'a Scales>,
}

/// Writes `parts` to `path` through a temporary file renamed into place (a reader never sees
/// half a file; two writers of the same file leave one whole copy).
pub(super) fn write(path: &Path, code: u32, parts: &Parts) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let nth = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{nth}", std::process::id()));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    let m_len = parts.m.map_or(0, Scales::len);
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&code.to_le_bytes());
    head.extend_from_slice(&(parts.n as u64).to_le_bytes());
    head.extend_from_slice(&(parts.k as u64).to_le_bytes());
    for len in [parts.nib.len(), parts.extra.len(), parts.d.len(), m_len] {
        head.extend_from_slice(&(len as u64).to_le_bytes());
    }
    f.write_all(&head)?;
    let mut at = head.len();
    let sections: [&[u8]; 4] = [
        parts.nib,
        parts.extra,
        parts.d.raw(),
        parts.m.map_or(&[][..], Scales::raw),
    ];
    for s in sections {
        let pad = at.next_multiple_of(ALIGN) - at;
        f.write_all(&[0u8; ALIGN][..pad])?;
        f.write_all(s)?;
        at += pad + s.len();
    }
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A mapped file being read section by section.
struct Mapped {
    map: Arc<memmap2::Mmap>,
    at: std::cell::Cell<usize>,
}

impl Mapped {
    /// The next section: `len` elements of `T` at the next aligned offset.
    fn take<T: Pod>(&self, len: usize) -> Result<Buf<T>> {
        let offset = self.at.get().next_multiple_of(ALIGN);
        let end = offset + len * std::mem::size_of::<T>();
        if end > self.map.len() {
            candle_core::bail!("truncated ({} bytes, {end} needed)", self.map.len())
        }
        self.at.set(end);
        Ok(Buf::Mapped {
            map: self.map.clone(),
            offset,
            len,
        })
    }
}

/// What a mapped file holds: its planes and scales (the caller checks them against the shape).
pub(super) struct Loaded {
    pub nib: Buf<u8>,
    pub extra: Buf<u8>,
    pub d: Scales,
    pub m: Option<Scales>,
    pub lens: [usize; 4],
}

/// Maps `path` and checks its header against the block type `code`/`kind` and shape `n x k`.
pub(super) fn read(path: &Path, code: u32, kind: Kind, n: usize, k: usize) -> Result<Loaded> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the file is written whole and renamed into place, never modified afterwards.
    // Populated: the pages are read in now (from the page cache, or the disk once) rather than
    // faulted in one by one during the first products.
    let map = Arc::new(unsafe { memmap2::MmapOptions::new().populate().map(&file)? });
    if map.len() < HEADER || &map[..8] != MAGIC {
        candle_core::bail!("not a block-matrix file")
    }
    let u32_at = |i: usize| u32::from_le_bytes(map[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_le_bytes(map[i..i + 8].try_into().unwrap()) as usize;
    let (version, got_code) = (u32_at(8), u32_at(12));
    if version != VERSION || got_code != code || u64_at(16) != n || u64_at(24) != k {
        candle_core::bail!(
            "written for another layout or tensor (version {version}, type {got_code}, \
             {} x {})",
            u64_at(16),
            u64_at(24)
        )
    }
    let lens = [u64_at(32), u64_at(40), u64_at(48), u64_at(56)];
    let m = Mapped {
        map,
        at: std::cell::Cell::new(HEADER),
    };
    let nib = m.take(lens[0])?;
    let extra = m.take(lens[1])?;
    let d = Scales::mapped(kind, &m, lens[2])?;
    let mins = if lens[3] > 0 {
        Some(Scales::mapped(kind, &m, lens[3])?)
    } else {
        None
    };
    Ok(Loaded {
        nib,
        extra,
        d,
        m: mins,
        lens,
    })
}
