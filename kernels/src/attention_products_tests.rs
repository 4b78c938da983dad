//! The attention products against their definition, on every SIMD width.
use super::*;
use crate::attention_pack::pack_keys;

fn seeded(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn widths() -> Vec<Width> {
    let mut w = vec![Width::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            w.push(Width::Avx2);
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            w.push(Width::Avx512);
        }
    }
    w
}

/// Every SIMD width packs, scores and sums to the same bits as the scalar build, for tile
/// shapes with remainders (13 queries, 37 + 20 keys, head dimensions with a scalar tail).
#[test]
fn every_width_gives_the_scalar_bits() {
    for hd in [64usize, 72, 20] {
        let (ql, lens) = (13usize, [37usize, 20]);
        let q = seeded(ql * hd, 1);
        // Keys and values of two segments, keys `hd + 3` apart (not contiguous rows).
        let kj = hd + 3;
        let keys: Vec<Vec<f32>> = lens.iter().map(|&n| seeded(n * kj, n as u32)).collect();
        let vals: Vec<Vec<f32>> = lens.iter().map(|&n| seeded(n * hd, 7 * n as u32)).collect();
        let total: usize = lens.iter().sum();
        // Query i sees keys up to 30 + 2i (some see all of both segments).
        let sees: Vec<usize> = (0..ql).map(|i| (30 + 2 * i).min(total)).collect();
        let run = |width: Width| -> (Vec<f32>, Vec<f32>) {
            let lanes = width.lanes();
            let mut packed = Vec::new();
            let mut parts = Vec::new();
            let mut first = 0;
            for (s, &n) in lens.iter().enumerate() {
                let ldk = n.div_ceil(lanes) * lanes;
                let mut p = vec![f32::NAN; hd * ldk];
                unsafe {
                    pack_keys(
                        width,
                        keys[s].as_ptr(),
                        (kj as isize, 1),
                        n,
                        hd,
                        ldk,
                        ldk,
                        &mut p,
                    )
                };
                assert!(p.iter().all(|x| !x.is_nan()), "every packed value written");
                packed.push(p);
                parts.push((ldk, first, n));
                first += n;
            }
            let parts: Vec<Part> = parts
                .iter()
                .enumerate()
                .map(|(s, &(ldk, first, seen))| Part {
                    packed: packed[s].as_ptr(),
                    ldk,
                    v: vals[s].as_ptr(),
                    v16: std::ptr::null(),
                    vj: hd as isize,
                    first,
                    seen,
                })
                .collect();
            let mut sc = vec![0f32; ql * total];
            unsafe { scores(width, &q, &sees, hd, &parts, &mut sc, total) };
            // Probabilities: the scores masked past each query's keys.
            let probs: Vec<f32> = sc
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    if i % total < sees[i / total] {
                        x.abs()
                    } else {
                        0.0
                    }
                })
                .collect();
            // Rows in runs of 3 (a query's heads), each run 4 rows' room apart: row r of the
            // product at (r / 3) * 4 + r % 3.
            let mut spaced = vec![f32::NAN; ql.div_ceil(3) * 4 * hd];
            let at = |r: usize| (r / 3 * 4 + r % 3) * hd;
            let dest = Out {
                ptr: spaced.as_mut_ptr(),
                per: 3,
                ld: 4 * hd,
            };
            unsafe { weighted_values(width, &probs, total, &sees, hd, &parts, dest) };
            let out: Vec<f32> = (0..ql)
                .flat_map(|r| spaced[at(r)..at(r) + hd].to_vec())
                .collect();
            (sc, out)
        };
        let (want_s, want_o) = run(Width::Scalar);
        // The scalar build is the plain definition: one FMA chain per value.
        for i in 0..ql {
            for j in 0..sees[i] {
                let (s, jj) = if j < lens[0] {
                    (0, j)
                } else {
                    (1, j - lens[0])
                };
                let key = &keys[s][jj * kj..];
                let dot = (0..hd).fold(0f32, |acc, d| q[i * hd + d].mul_add(key[d], acc));
                assert_eq!(want_s[i * total + j], dot, "hd {hd} score ({i}, {j})");
            }
        }
        for w in widths() {
            let (s, o) = run(w);
            for i in 0..ql {
                let n = sees[i];
                assert_eq!(
                    s[i * total..][..n],
                    want_s[i * total..][..n],
                    "{w:?} hd {hd} row {i}"
                );
            }
            assert_eq!(o, want_o, "{w:?} hd {hd} values");
        }
    }
}
