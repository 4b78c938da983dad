use super::*;
use candle_core::quantized::QMatMul;
use candle_core::Module;

const TYPES: [GgmlDType; 8] = BlockMatrix::TYPES;

/// Deterministic values in [-scale, scale).
fn seeded(shape: (usize, usize), scale: f32, seed: u64) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let data: Vec<f32> = (0..shape.0 * shape.1)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Every weight as `d * u + m` from the interleaved store (scalar unpack) equals candle's
/// dequantization of the file's block, bit for bit: the decoding and the repacking are exact.
#[test]
fn the_store_gives_back_every_dequantized_weight() -> Result<()> {
    for dtype in TYPES {
        // 13 rows: a last group of 5 padded rows; 512 values: two k-quant super-blocks.
        let w = seeded((13, 512), 0.3, 7)?;
        let qt = QTensor::quantize(&w, dtype)?;
        let want = qt.dequantize(&Device::Cpu)?.to_vec2::<f32>()?;
        let m = BlockMatrix::from_qtensor(&qt)?;
        let (kb, subs) = (512 / BLOCK, m.kind.subs());
        let mut s = Scratch::new(kb, subs, 1);
        for g in 0..m.groups() {
            m.unpack(g, 1, &mut s, false);
            for (r, want_row) in want.iter().enumerate().skip(g * GROUP).take(GROUP) {
                let lane = r - g * GROUP;
                for (i, &want) in want_row.iter().enumerate() {
                    let (b, j, t) = (i / BLOCK, (i % BLOCK) / 4, i % 4);
                    let u = s.vals[b * 256 + 32 * j + 4 * lane + t] as f32;
                    let at = (b * subs + (i % BLOCK) / (BLOCK / subs)) * GROUP + lane;
                    let got = s.d[at] * u + s.m[at];
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                        "{dtype:?} row {r} value {i}: {got} vs {want}"
                    );
                }
            }
        }
    }
    Ok(())
}

/// A row looked up from the store (the embedding of a tied output head) is the dequantized row.
#[test]
fn rows_are_the_dequantized_rows() -> Result<()> {
    for dtype in TYPES {
        let qt = QTensor::quantize(&seeded((13, 256), 0.5, 11)?, dtype)?;
        let want = qt.dequantize(&Device::Cpu)?;
        let m = BlockMatrix::from_qtensor(&qt)?;
        let ids = [12u32, 0, 7, 12];
        let got = Tensor::from_vec(m.rows(&ids)?, (4, 256), &Device::Cpu)?;
        let want = want.index_select(&Tensor::new(&ids, &Device::Cpu)?, 0)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-6, "{dtype:?}: {diff}");
    }
    assert!(BlockMatrix::from_qtensor(&QTensor::quantize(
        &seeded((3, 32), 0.5, 1)?,
        GgmlDType::Q8_0
    )?)?
    .rows(&[3])
    .is_err());
    Ok(())
}

/// The SIMD unpack writes the same bytes as the scalar one, for every plane layout.
#[cfg(target_arch = "x86_64")]
#[test]
fn simd_and_scalar_unpack_agree() -> Result<()> {
    if !BlockMatrix::simd_available() {
        return Ok(());
    }
    for dtype in TYPES {
        let qt = QTensor::quantize(&seeded((16, 256), 1.0, 3)?, dtype)?;
        let m = BlockMatrix::from_qtensor(&qt)?;
        let eb = m.kind.extra_bytes();
        for b in 0..256 / BLOCK {
            let nib = &m.nib[b * NIBBLES..][..NIBBLES];
            let extra = &m.extra[b * eb..][..eb];
            let (mut a, mut s) = ([0u8; 256], [0u8; 256]);
            repack::unpack_scalar(m.kind, nib, extra, &mut s);
            // SAFETY: AVX2 is present (checked above).
            unsafe { x86::unpack(m.kind.extra(), nib, extra, &mut a, 32) };
            assert_eq!(a, s, "{dtype:?} block {b}");
            // Side by side with another group (the AVX-512 kernel's pairs): the same chunks
            // at a stride of 64.
            let mut pair = [7u8; 512];
            // SAFETY: as above.
            unsafe { x86::unpack(m.kind.extra(), nib, extra, &mut pair[32..], 64) };
            for j in 0..8 {
                assert_eq!(
                    pair[64 * j + 32..][..32],
                    s[32 * j..][..32],
                    "{dtype:?} {b} {j}"
                );
                assert_eq!(pair[64 * j..][..32], [7u8; 32], "{dtype:?} {b} {j}");
            }
        }
    }
    Ok(())
}

/// Against the exact product with the quantized weights: as close as candle's own quantized
/// matmul (both quantize the activations to 8 bits), on every kernel this CPU has and the
/// scalar loops, which agree with each other.
#[test]
fn as_close_to_the_exact_product_as_candles_matmul_for_every_type_and_kernel() -> Result<()> {
    let dev = Device::Cpu;
    #[allow(unused_mut)]
    let mut kernels: Vec<Option<Isa>> = vec![None];
    #[cfg(target_arch = "x86_64")]
    if BlockMatrix::simd_available() {
        kernels.push(Some(x86::Isa::Avx2));
        if std::arch::is_x86_feature_detected!("avxvnni") {
            kernels.push(Some(x86::Isa::Vnni));
        }
        if x86::Isa::has_avx512() {
            kernels.push(Some(x86::Isa::Avx512));
        }
    }
    for dtype in TYPES {
        // Fixed pseudo-random data: with fresh draws each run, the error comparison with
        // candle's kernel came out either way now and then. 70 rows: a partial last group,
        // and an odd number of groups (the AVX-512 kernel's last pair is half zeros);
        // 11 activation rows: tiles of 4, 4 and 3 rows from unpacked groups (more than 8
        // rows), and below, 1, 2 and 7 of them through AVX-512's direct tiles.
        let w = seeded((70, 512), 0.1, 1)?;
        let x = seeded((11, 512), 1.0, 2)?;
        let qt = QTensor::quantize(&w, dtype)?;
        let exact = x.matmul(&qt.dequantize(&dev)?.t()?)?;
        let m = BlockMatrix::from_qtensor(&qt)?;
        let candle = QMatMul::from_qtensor(qt)?.forward(&x)?;
        // Root mean square error (the largest single error of two 8-bit roundings is noise).
        let err =
            |t: &Tensor| -> Result<f32> { (t - &exact)?.sqr()?.mean_all()?.sqrt()?.to_scalar() };
        let candle_err = err(&candle)?;
        let scale = exact.abs()?.max_all()?.to_scalar::<f32>()?;
        let mut first: Option<Tensor> = None;
        for &isa in &kernels {
            let ours = BlockMatrix::matmul_with(&[&m], &x, isa)?.remove(0);
            let ours_err = err(&ours)?;
            assert!(
                ours_err <= candle_err * 1.05 + 1e-6,
                "{dtype:?} {isa:?}: ours {ours_err} vs candle {candle_err}"
            );
            assert!(
                ours_err < 0.01 * scale,
                "{dtype:?} {isa:?}: error {ours_err} at {scale}"
            );
            // Rows are independent: a few rows alone (tiles of 1, 2, 4 and 3; with AVX-512
            // read straight from the store) give the same, bit for bit.
            for rows in [1, 2, 7] {
                let alone = BlockMatrix::matmul_with(&[&m], &x.narrow(0, 0, rows)?, isa)?.remove(0);
                let diff = (alone - ours.narrow(0, 0, rows)?)?.abs()?.max_all()?;
                assert_eq!(
                    diff.to_scalar::<f32>()?,
                    0.0,
                    "{dtype:?} {isa:?} {rows} rows"
                );
            }
            match &first {
                None => first = Some(ours),
                Some(f) => {
                    let diff = (&ours - f)?.abs()?.max_all()?.to_scalar::<f32>()?;
                    assert!(diff <= 1e-5 * scale, "{dtype:?} {isa:?} vs scalar: {diff}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn other_types_and_shapes_are_errors() -> Result<()> {
    let w = seeded((4, 64), 0.1, 5)?;
    let qt = QTensor::quantize(&w, GgmlDType::F16)?;
    let err = BlockMatrix::from_qtensor(&qt).err().unwrap().to_string();
    assert!(err.contains("expected Q4_0"), "{err}");
    let m = BlockMatrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_1)?)?;
    let x = Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu)?;
    let err = m.matmul_t(&x).unwrap_err().to_string();
    assert!(err.contains("columns"), "{err}");
    Ok(())
}

/// Stored at about the file's size: the same bits per value, scales in f16 where the file has
/// them in f16.
#[test]
fn the_store_is_about_the_files_size() -> Result<()> {
    for dtype in TYPES {
        let qt = QTensor::quantize(&seeded((64, 512), 0.1, 9)?, dtype)?;
        let file = qt.data()?.len();
        let ours = BlockMatrix::from_qtensor(&qt)?.bytes();
        let limit = if dtype.block_size() == 256 {
            1.35
        } else {
            1.11
        };
        assert!(
            (ours as f64) <= limit * file as f64,
            "{dtype:?}: {ours} bytes stored for {file} in the file"
        );
    }
    Ok(())
}

/// The SIMD activation quantizer gives the scalar one's values, scale and half sums.
#[cfg(target_arch = "x86_64")]
#[test]
fn simd_and_scalar_quantizers_agree() -> Result<()> {
    if !crate::simd::has_avx2_fma() {
        return Ok(());
    }
    let x = seeded((64, 32), 3.0, 13)?.to_vec2::<f32>()?;
    for (i, x) in x.iter().enumerate() {
        // Some blocks of zeros, of one value, and of values just below and at halves.
        let x: Vec<f32> = match i {
            0 => vec![0.0; 32],
            1 => (0..32).map(|j| if j == 5 { -2.5 } else { 0.0 }).collect(),
            2 | 3 => (0..32)
                .map(|j| match j {
                    0 => 127.0,
                    _ if i == 2 => (j as f32 - 16.0) + 0.5,
                    _ => (j as f32 - 16.0) + 0.49999997,
                })
                .collect(),
            _ => x.clone(),
        };
        let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
        // SAFETY: AVX2 and FMA are present (checked above).
        let simd = unsafe { x86::quantize_block(&x, &mut a) };
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let id = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (q, &v) in b.iter_mut().zip(&x) {
            *q = (v * id).round() as i8;
        }
        let half = |h: &[i8]| h.iter().map(|&v| v as i32).sum::<i32>();
        assert_eq!(simd, (scale, [half(&b[..16]), half(&b[16..])]), "block {i}");
        assert_eq!(a, b, "block {i}");
    }
    Ok(())
}

/// Several matrices of one input in one pass give what each gives alone (mixed types: the
/// activations quantized once per way of quantizing).
#[test]
fn shared_input_products_equal_separate_ones() -> Result<()> {
    let x = seeded((5, 512), 1.0, 21)?;
    let mats: Vec<BlockMatrix> = [
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4_1,
        GgmlDType::Q6K,
    ]
    .iter()
    .enumerate()
    .map(|(i, &t)| {
        BlockMatrix::from_qtensor(&QTensor::quantize(
            &seeded((24 + 8 * i, 512), 0.1, i as u64)?,
            t,
        )?)
    })
    .collect::<Result<_>>()?;
    let refs: Vec<&BlockMatrix> = mats.iter().collect();
    let shared = BlockMatrix::matmul_t_shared(&refs, &x)?;
    for (m, got) in mats.iter().zip(shared) {
        let alone = m.matmul_t(&x)?;
        let diff = (got - alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{:?}", m.kind);
    }
    Ok(())
}
