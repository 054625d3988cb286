//! Fast CPU kernels for the U-Net: candle custom ops with hand-written backward passes.
//!
//! A MAP-GA iteration is dominated by one network forward and one vector-Jacobian product back
//! to the *input*. Stock candle 0.11 is 6-11x slower than PyTorch there (issue #5):
//! its conv input gradient is a direct `conv_transpose2d` loop without GEMM, its autograd always
//! computes conv kernel gradients (which a VJP to the input never needs), `candle_nn::GroupNorm`
//! differentiates through about 45 allocating broadcast ops, and the upsampling backward is a
//! grouped conv. This module replaces those four with [`candle_core::CustomOp1`]s:
//!
//! * [`conv2d()`] (`conv2d.rs`): im2col + one GEMM per image with the bias fused; the backward
//!   is `W^T g` as one GEMM plus col2im. 3x3 stride-1 convs on images at least 32 wide run
//!   as Winograd's F(4x4, 3x3) (`winograd.rs`), forward and backward.
//!   [`conv2d_fused()`] (`conv2d/fused.rs`) also adds a per-image bias and a residual in the
//!   same op: the U-Net's residual blocks fold their noise-embedding add and skip
//!   connection into their convs, which saves two passes and two backward graph nodes each. Weights loaded from a file are *constants* captured in
//!   the op: no kernel or bias gradient is computed (MAP-GA only differentiates with respect to
//!   the image). Weights tracked by autograd (a `Var`) take a second op whose backward also
//!   gives the kernel gradient (one GEMM per image against its im2col matrix), so the same
//!   layers can be fine-tuned.
//! * [`group_norm()`] (`group_norm.rs`): GroupNorm with an optional fused SiLU, statistics in
//!   f64 accumulators, the closed-form backward (statistics recomputed, no saved tensors).
//!   The affine weight and bias are constants too; tracked ones take the stock layer.
//! * [`upsample_nearest2x()`] (`upsample.rs`): nearest-neighbour 2x upsampling whose backward
//!   is a 2x2 box sum.
//! * [`attention()`] (`attention.rs`): multi-head self-attention over the pixels from a `qkv`
//!   projection, one op with its backward and a fused scaled softmax (forward and backward).
//! * [`res_block()`] (`res_block.rs`): a U-Net residual block (GroupNorm+SiLU, conv plus the
//!   noise embedding, GroupNorm+SiLU, conv plus the skip connection) as one op running the
//!   kernels above, so candle's backward pass accumulates one gradient for the block instead
//!   of one per layer.
//!
//! The layers [`Conv2d`] and [`GroupNorm`] load from a `VarBuilder` under the same tensor
//! names as `candle_nn`'s (`weight`, `bias`), so state dicts and model cards are unchanged.
//!
//! All kernels run for f32 and f64 tensors on the CPU. Anything else (a CUDA or Metal tensor,
//! another dtype, parameters on another device or of another dtype) takes the stock candle
//! ops, with the same results and errors as before. Non-contiguous inputs are made contiguous
//! first. GEMMs use the `gemm` crate (the one candle uses; the `x86-v4` feature of this crate's
//! manifest turns on its AVX-512 micro-kernels). Work runs on the current rayon pool: over
//! the images of a batch when there are at least as many images as threads, otherwise inside
//! each GEMM and im2col/col2im. The elementwise loops are compiled for AVX-512 and AVX2 as well
//! as the baseline and picked at run time.
//!
//! Threads: candle 0.11 runs its own large elementwise ops (adds, scalings, copies of 64 Ki
//! elements or more) on a separate pool whose threads spin for a while after each op. With
//! as many such threads as cores (its default, `CANDLE_NUM_THREADS`, falls back to
//! `RAYON_NUM_THREADS` and then to the core count) they compete with the rayon threads these
//! kernels use: on a 2-core machine a batch-16 VJP measured about 2x slower than with
//! `CANDLE_NUM_THREADS=1`, which keeps candle's elementwise ops on the calling thread. The
//! command line sets that default (`crate::cli::set_threads`).

// Only `matmul` below (the bounds-checked wrapper around `gemm::gemm`) and `vectorized_fn!`
// (calls to functions compiled for CPU features detected at run time) use `unsafe`.
#![allow(unsafe_code)]

mod attention;
mod conv2d;
mod group_norm;
mod res_block;
mod upsample;
mod winograd;

pub use attention::attention;
pub use conv2d::{conv2d, conv2d_fused, Conv2d};
pub use group_norm::{group_norm, GroupNorm};
pub use res_block::res_block;
pub use upsample::upsample_nearest2x;

use std::cell::Cell;

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor, WithDType};

/// The float types the kernels are written for (f32 and f64).
pub(crate) trait Real: WithDType + std::ops::Neg<Output = Self> {
    /// e^x: for f32 [`exp_f32`] (vectorises), for f64 the standard library's.
    fn exp(self) -> Self;

    /// `self * a + b` with one rounding: one instruction in the kernels' AVX2 and AVX-512
    /// versions (see [`exp_f32`] for CPUs without FMA).
    fn mul_add(self, a: Self, b: Self) -> Self;

    /// Runs `f` on a scratch buffer of `len` elements kept per thread between calls (its
    /// content is whatever the last user left). A nested call on the same thread gets a fresh
    /// buffer, so re-entrance (rayon work stealing) is safe.
    fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;
}

/// e^x for f32 without a libm call, so that loops over it vectorise (`f32::exp` is one call
/// per element, the largest cost of a fused GroupNorm+SiLU). `x = n ln2 + r` with
/// `|r| <= ln2 / 2` (ln2 split in two parts so `r` is exact to f32 rounding), `e^r` by its
/// degree-7 Taylor polynomial (truncation error below 6e-9 relative) and `2^n` from the exponent
/// bits. Relative error a few f32 ulps. Arguments beyond [-87, 88] saturate (to about 1.6e-38
/// and 1.7e38) instead of reaching 0 or infinity; NaN stays NaN.
///
/// The steps are fused multiply-adds (`mul_add`): one instruction each in the kernels' AVX2
/// and AVX-512 versions (`vectorized_fn!`), which made the GroupNorm+SiLU forward 28% cheaper
/// than separate multiplies and adds; on an x86 CPU without FMA (before 2013) the baseline
/// version computes them in software, correct but slow.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits so n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (|t| < 2^22).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = x.mul_add(LOG2_E, ROUND) - ROUND;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p: f32 = 1.0 / 5040.0;
    p = p.mul_add(r, 1.0 / 720.0);
    p = p.mul_add(r, 1.0 / 120.0);
    p = p.mul_add(r, 1.0 / 24.0);
    p = p.mul_add(r, 1.0 / 6.0);
    p = p.mul_add(r, 0.5);
    p = p.mul_add(r, 1.0);
    p = p.mul_add(r, 1.0);
    // 2^n from the bits of 2^23 + (n + 127), whose mantissa is n + 127 (an integer cast would
    // not vectorise: `as i32` saturates and maps NaN to 0 element by element).
    p * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

macro_rules! real {
    ($t:ty, $cell:ident, $exp:expr) => {
        thread_local! {
            static $cell: Cell<Vec<$t>> = const { Cell::new(Vec::new()) };
        }

        impl Real for $t {
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }

            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }

            fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                let mut buf = $cell.take();
                if buf.len() < len {
                    buf.resize(len, 0.0);
                }
                let r = f(&mut buf[..len]);
                $cell.set(buf);
                r
            }
        }
    };
}

real!(f32, SCRATCH_F32, exp_f32);
real!(f64, SCRATCH_F64, f64::exp);

/// Whether the fast kernels can run on `x` with the parameters `params`: all on the CPU, x
/// f32 or f64, every parameter of x's dtype and contiguous.
fn fast_path(x: &Tensor, params: &[Option<&Tensor>]) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && params
            .iter()
            .flatten()
            .all(|p| p.device().is_cpu() && p.dtype() == x.dtype() && p.is_contiguous())
}

/// The contiguous elements of a CPU storage seen through `layout`.
fn cpu_slice<'a, T: Real>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{what}: the kernel needs a contiguous tensor"),
    }
}

/// The error of a kernel called on a storage of a dtype it does not implement.
fn unsupported(op: &str, s: &CpuStorage) -> candle_core::Error {
    use candle_core::backend::BackendStorage;
    candle_core::Error::Msg(format!("{op} kernel: unsupported dtype {:?}", s.dtype()))
}

/// Runs `f` on the CPU storage and layout of `t`.
fn with_storage<R>(
    t: &Tensor,
    what: &str,
    f: impl FnOnce(&CpuStorage, &Layout) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(cpu, layout),
        _ => candle_core::bail!("{what}: a tensor is not on the CPU"),
    }
}

/// Runs `f` on the contiguous CPU data of `t` (a parameter captured by an op).
fn with_data<T: Real, R>(t: &Tensor, what: &str, f: impl FnOnce(&[T]) -> Result<R>) -> Result<R> {
    with_storage(t, what, |cpu, layout| f(cpu_slice(cpu, layout, what)?))
}

/// Which x86-64 vector extension the elementwise loops are compiled for (see
/// [`vectorized_fn`]).
#[cfg(target_arch = "x86_64")]
#[derive(PartialEq, Eq)]
enum Simd {
    /// AVX-512 (F, BW, DQ, VL).
    V4,
    /// AVX2 with FMA.
    V3,
    /// The baseline target (SSE2).
    Base,
}

/// The widest vector extension of this CPU (the standard library caches the detection).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn simd() -> Simd {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
        Simd::V4
    } else if has!("avx2") && has!("fma") {
        Simd::V3
    } else {
        Simd::Base
    }
}

/// `fn name<T: Real>(args) { body }` whose body is compiled three times on x86-64 (for
/// AVX-512, for AVX2 with FMA and for the baseline SSE2) and run in the widest version the CPU
/// supports, detected at run time: the elementwise loops of the kernels vectorise 2-4x wider
/// than in the baseline build. Elsewhere the body is compiled once.
macro_rules! vectorized_fn {
    ($(#[$m:meta])* fn $name:ident<T: Real>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        fn $name<T: Real>($($arg: $ty),*) {
            #[inline(always)]
            fn body<T: Real>($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v4<T: Real>($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3<T: Real>($($arg: $ty),*) {
                    body($($arg),*)
                }
                match $crate::kernels::simd() {
                    // SAFETY: the CPU has every feature `v4` is compiled for.
                    $crate::kernels::Simd::V4 => return unsafe { v4($($arg),*) },
                    // SAFETY: the CPU has every feature `v3` is compiled for.
                    $crate::kernels::Simd::V3 => return unsafe { v3($($arg),*) },
                    $crate::kernels::Simd::Base => {}
                }
            }
            body($($arg),*)
        }
    };
}
use vectorized_fn;

/// Elements of work below which a rayon task is not worth splitting further.
const MIN_TASK: usize = 16 * 1024;

thread_local! {
    /// Whether this thread runs inside [`image_task`].
    static IMAGE_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, the work on one image of a batch whose images run in parallel, one per rayon
/// task: the kernels it calls on this thread may then choose the paths that suit one core
/// (see [`in_image_task`]).
fn image_task<R>(f: impl FnOnce() -> R) -> R {
    /// Restores the flag, also when `f` panics.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IMAGE_TASK.set(self.0);
        }
    }
    let _restore = Restore(IMAGE_TASK.replace(true));
    f()
}

/// Whether this thread runs inside [`image_task`]: the other threads are busy with other
/// images, so a kernel's inner parallelism will mostly run on this one.
fn in_image_task() -> bool {
    IMAGE_TASK.get()
}

/// The `with_min_len` of a parallel loop over items of `item_len` elements: enough items for
/// [`MIN_TASK`] elements.
fn min_items(item_len: usize) -> usize {
    MIN_TASK.div_ceil(item_len.max(1))
}

/// GEMM parallelism on the current rayon pool: all its threads, or none when it has one.
fn gemm_parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// A row-major or transposed view of a matrix in a slice: element `(i, j)` is
/// `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a, T> {
    data: &'a [T],
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// Row-major `rows x cols`, rows `cols` apart.
    fn rows(data: &'a [T], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `cols x rows` matrix, read as `rows x cols`.
    fn transposed(data: &'a [T], rows: usize) -> Self {
        Mat {
            data,
            rs: 1,
            cs: rows,
        }
    }

    /// Whether an `m x n` view fits in the slice.
    fn fits(&self, m: usize, n: usize) -> bool {
        m == 0 || n == 0 || (m - 1) * self.rs + (n - 1) * self.cs < self.data.len()
    }
}

/// `dst (m x n, row-major) = [dst +] lhs (m x k) * rhs (k x n)`: with `accumulate` the product
/// is added to what `dst` holds, otherwise `dst` is overwritten.
///
/// # Panics
/// When a view does not fit its slice (a bug in the caller).
fn matmul<T: Real>(
    dst: &mut [T],
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    (m, n, k): (usize, usize, usize),
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    assert!(
        dst.len() >= m * n && lhs.fits(m, k) && rhs.fits(k, n),
        "kernels::matmul: a {m}x{k} by {k}x{n} product does not fit its buffers"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    // SAFETY: the assertion above keeps every element gemm reads (lhs, rhs) or writes (dst)
    // inside its slice; `dst` is a unique borrow, so it aliases neither input. The strides are
    // small positive numbers (slice lengths), so the casts to isize do not wrap. gemm accepts
    // f32 and f64, the only `Real` types.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the kernel tests: seeded random tensors, the relative error and a VJP.
    use candle_core::{DType, Device, Tensor, Var};

    /// A seeded standard normal tensor.
    pub fn randn(seed: u64, shape: &[usize], dtype: DType) -> Tensor {
        let mut g = crate::random::generator(seed, "kernel tests", 0);
        crate::random::normal_tensor(&mut g, shape, dtype, &Device::Cpu).unwrap()
    }

    /// The elements of `t`, flattened, as f64.
    pub fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    /// max |got - want| / max |want|.
    pub fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
        assert_eq!(got.dims(), want.dims(), "shapes differ");
        let (g, w) = (values(got), values(want));
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let diff = g
            .iter()
            .zip(&w)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        diff / scale.max(f64::MIN_POSITIVE)
    }

    /// Runs `f` inside a rayon pool of `threads` threads.
    pub fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(f)
    }

    /// `f(x)` and the gradient of `sum(f(x) * v)` with respect to `x`, `v` seeded random.
    pub fn value_and_vjp(
        x: &Tensor,
        seed: u64,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> (Tensor, Tensor) {
        let var = Var::from_tensor(x).unwrap();
        let out = f(var.as_tensor()).unwrap();
        let v = randn(seed, out.dims(), out.dtype());
        let grads = (&out * &v).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = grads.get(var.as_tensor()).expect("a gradient").clone();
        (out.detach(), grad)
    }

    /// The tolerance of a comparison with candle's own op in `dtype`.
    pub fn tolerance(dtype: DType) -> f64 {
        match dtype {
            DType::F64 => 1e-10,
            _ => 1e-5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn exp_f32_is_accurate() {
        let mut worst = 0.0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 1e-6, "relative error {worst:.2e}");
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 1e-37);
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        assert_eq!(exp_f32(0.0), 1.0);
    }
}
