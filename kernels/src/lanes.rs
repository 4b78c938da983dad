//! SIMD vectors of f32 for the attention products: one lane (portable), AVX2 and AVX-512, with
//! the few operations the products use, each one IEEE rounding, so every width computes the
//! same values.

/// A SIMD vector of f32 lanes with the operations the products use; `fma` is one rounding,
/// so every width gives the same values.
pub(crate) trait Lanes: Copy {
    const N: usize;
    unsafe fn zero() -> Self;
    unsafe fn load(p: *const f32) -> Self;
    /// `N` f16 values, converted (exactly).
    unsafe fn load_f16(p: *const half::f16) -> Self;
    unsafe fn splat(x: f32) -> Self;
    /// `a * b + c`.
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// The first `n` lanes only.
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        let mut all = [0f32; 16];
        self.store(all.as_mut_ptr());
        std::ptr::copy_nonoverlapping(all.as_ptr(), p, n);
    }
}

#[derive(Clone, Copy)]
pub(crate) struct One(pub(crate) f32);

impl Lanes for One {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn zero() -> Self {
        One(0.0)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        One(*p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const half::f16) -> Self {
        One((*p).to_f32())
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        One(x)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        One(a.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lanes;
    use std::arch::x86_64::*;

    impl Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const half::f16) -> Self {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self)
        }
    }

    impl Lanes for __m512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> Self {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const half::f16) -> Self {
            _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self)
        }
        #[inline(always)]
        unsafe fn store_first(self, p: *mut f32, n: usize) {
            _mm512_mask_storeu_ps(p, ((1u32 << n) - 1) as u16, self)
        }
    }
}
