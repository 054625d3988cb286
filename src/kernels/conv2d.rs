//! 2-D convolution (cross-correlation, NCHW, groups 1, dilation 1) with constant weights.
//!
//! Forward, per image: im2col of the input into a `(C_in k_h k_w) x (H_out W_out)` matrix,
//! then `out = W cols + bias` as one GEMM (the output is pre-filled with the bias and the GEMM
//! accumulates into it). A 1x1 conv with stride 1 and no padding skips im2col: the image
//! already is that matrix. Backward to the input: `cols = W^T g` as one GEMM, then col2im
//! (the adjoint of im2col) sums the columns back into the image.
//!
//! A 3x3 stride-1 conv on an image wide enough (`winograd::applies`) runs as Winograd's
//! F(4x4, 3x3) instead (`winograd.rs`: 4x fewer multiplications), and its input gradient
//! as the forward of the adjoint conv (flipped, transposed weights) through the same.
//! Another stride-1 conv whose images each run on one core (a batch spread over the threads
//! image by image, or one thread) runs as one GEMM per kernel row over column-shifted copies
//! of the input (`kernel_rows.rs`: a third of im2col's copying for 3x3), and so does the
//! adjoint conv for its input gradient (no col2im). With one image on several threads the
//! single im2col GEMM splits better (three GEMMs measured slower there).
//!
//! The Winograd and kernel-row weights are rearranged once per layer and kept
//! (`weight_cache.rs`), not once per call and image.
//!
//! Weights loaded from a model file are constants: the op captures them and no kernel or bias
//! gradient is ever computed (a VJP to the input never needs one). Weights that are tracked
//! by autograd (a `Var`, or computed from one) take a second op with the weights as an
//! argument, whose backward also gives the kernel gradient `sum_b g_b cols_b^T` (one GEMM per
//! image against its im2col matrix); the bias is then added by candle's own broadcast add.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::winograd;
use super::{
    cpu_slice, fast_path, gemm_parallelism, image_task, in_image_task, matmul, min_items,
    unsupported, vectorized_fn, with_data, Mat, Real,
};

mod fused;
mod kernel_rows;
mod weight_cache;
pub use fused::conv2d_fused;
pub(super) use fused::FusedConv;
use weight_cache::{ConvWeights, Form, WeightCache};

/// The sizes of one convolution: batch, input channels and size, output channels, kernel
/// size, stride, padding (the same on every side) and output size.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geom {
    pub(super) b: usize,
    pub(super) cin: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) cout: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Geom {
    /// The geometry of input `x_dims` `[B, C_in, H, W]` with weights `w_dims`
    /// `[C_out, C_in, k_h, k_w]`, or the error candle would give.
    pub(super) fn new(
        x_dims: &[usize],
        w_dims: &[usize],
        stride: usize,
        pad: usize,
    ) -> Result<Geom> {
        let (&[b, cin, h, w], &[cout, wcin, kh, kw]) = (x_dims, w_dims) else {
            candle_core::bail!(
                "conv2d: input {x_dims:?} and weights {w_dims:?} must both have rank 4"
            )
        };
        if cin != wcin {
            candle_core::bail!(
                "conv2d: input has {cin} channels, the weights {w_dims:?} expect {wcin}"
            )
        }
        if stride == 0 {
            candle_core::bail!("conv2d: stride must be at least 1")
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel does not fit a {h}x{w} input with padding {pad}"
            )
        }
        Ok(Geom {
            b,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            pad,
            ho: (h + 2 * pad - kh) / stride + 1,
            wo: (w + 2 * pad - kw) / stride + 1,
        })
    }

    /// Rows of the im2col matrix (the GEMM depth).
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    /// Output pixels per channel (the GEMM width).
    pub(super) fn n(&self) -> usize {
        self.ho * self.wo
    }

    pub(super) fn in_len(&self) -> usize {
        self.cin * self.h * self.w
    }

    pub(super) fn out_len(&self) -> usize {
        self.cout * self.n()
    }

    /// The output's shape `[B, C_out, H_out, W_out]`.
    pub(super) fn out_shape(&self) -> Shape {
        Shape::from((self.b, self.cout, self.ho, self.wo))
    }

    /// Calls `f(output index, input index, weight index)` for every product of a direct
    /// convolution (every output element, input channel and kernel tap that reads inside the
    /// input, padding skipped): the f64 references of the kernel tests are sums over it.
    #[cfg(test)]
    pub(super) fn each_product(&self, mut f: impl FnMut(usize, usize, usize)) {
        for out in 0..self.b * self.out_len() {
            let (ox, oy) = (out % self.wo, out / self.wo % self.ho);
            let (co, b) = (out / self.n() % self.cout, out / self.out_len());
            for ci in 0..self.cin {
                for ky in 0..self.kh {
                    for kx in 0..self.kw {
                        let iy = (oy * self.stride + ky) as isize - self.pad as isize;
                        let ix = (ox * self.stride + kx) as isize - self.pad as isize;
                        if iy < 0 || ix < 0 || iy >= self.h as isize || ix >= self.w as isize {
                            continue;
                        }
                        let input = ((b * self.cin + ci) * self.h + iy as usize) * self.w;
                        let weight = ((co * self.cin + ci) * self.kh + ky) * self.kw + kx;
                        f(out, input + ix as usize, weight);
                    }
                }
            }
        }
    }

    /// An error unless `dims` (of the tensor `what`: an output gradient, a residual) are the
    /// output's.
    fn check_output(&self, dims: &[usize], what: &str) -> Result<()> {
        let want = [self.b, self.cout, self.ho, self.wo];
        if dims != want {
            candle_core::bail!("{what} {dims:?} for an output of {want:?}")
        }
        Ok(())
    }

    /// A 1x1 conv with stride 1 and no padding: im2col is the identity.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }

    /// For a stride-1 conv with a square kernel and `pad < k` (every 3x3 "same" conv), the
    /// conv whose forward is this one's input gradient: the output gradient convolved with the
    /// flipped, transposed weights ([`flipped_transposed`]) and padding `k - 1 - pad` gives
    /// back the input's size. [`input_grad`] takes it where the Winograd or the kernel-row
    /// forward applies to it; through im2col it measured no faster than `W^T g` + col2im, so
    /// other convs keep that. None for strided and pointwise convs.
    fn adjoint(&self) -> Option<Geom> {
        (self.stride == 1 && self.kh == self.kw && self.pad < self.kh && !self.pointwise()).then(
            || Geom {
                b: self.b,
                cin: self.cout,
                h: self.ho,
                w: self.wo,
                cout: self.cin,
                kh: self.kh,
                kw: self.kw,
                stride: 1,
                pad: self.kh - 1 - self.pad,
                ho: self.h,
                wo: self.w,
            },
        )
    }

    /// The output positions `lo..hi` along a dimension of input size `size` (and output size
    /// `out`) whose tap `t` reads inside the input: `0 <= o * stride + t - pad < size`.
    fn valid(&self, t: usize, size: usize, out: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if t >= p { 0 } else { (p - t).div_ceil(s) };
        let hi = if size + p <= t {
            0
        } else {
            out.min((size - 1 + p - t) / s + 1)
        };
        (lo.min(hi), hi)
    }

    /// The input row or column `o * stride + t - pad` of a valid output position.
    fn src(&self, o: usize, t: usize) -> usize {
        o * self.stride + t - self.pad
    }
}

/// What one kernel tap `(ky, kx)` reads, the same for every channel.
#[derive(Debug, Clone, Copy)]
struct Tap {
    ky: usize,
    kx: usize,
    /// The output rows `ylo..yhi` and columns `xlo..xhi` where the tap reads inside the input.
    ys: (usize, usize),
    xs: (usize, usize),
    /// For a stride-1 conv that keeps the width (`W_out = W`, e.g. 3x3 with padding 1): the
    /// shift `delta` with `row[d] = plane[d + delta]` at every valid output position `d` (the
    /// valid rows are one contiguous stretch of the input plane), and the part `lo..hi` of the
    /// tap row where `d + delta` lies inside the plane.
    shift: Option<(isize, usize, usize)>,
}

impl Geom {
    /// Every tap of the kernel, in weight order.
    fn taps(&self) -> Vec<Tap> {
        let mut taps = Vec::with_capacity(self.kh * self.kw);
        for ky in 0..self.kh {
            for kx in 0..self.kw {
                let ys = self.valid(ky, self.h, self.ho);
                let xs = self.valid(kx, self.w, self.wo);
                let shift = (self.stride == 1 && self.wo == self.w).then(|| {
                    let p = self.pad as isize;
                    let delta = (ky as isize - p) * self.w as isize + (kx as isize - p);
                    let plane = (self.h * self.w) as isize;
                    let lo = ((ys.0 * self.w) as isize).max(-delta).max(0);
                    let hi = ((ys.1 * self.w) as isize).min(plane - delta).max(lo);
                    (delta, lo as usize, hi as usize)
                });
                taps.push(Tap {
                    ky,
                    kx,
                    ys,
                    xs,
                    shift,
                });
            }
        }
        taps
    }
}

/// Zeroes, in the rows `ylo..yhi` of a `H_out x W_out` tap row, the columns outside
/// `xlo..xhi` (where the tap reads padding), and all of the rows outside `ylo..yhi`.
#[inline(always)]
fn zero_invalid<T: Real>(row: &mut [T], g: &Geom, tap: &Tap) {
    let ((ylo, yhi), (xlo, xhi)) = (tap.ys, tap.xs);
    row[..ylo * g.wo].fill(T::zero());
    row[yhi * g.wo..].fill(T::zero());
    // Column by column (usually one on each side), as strided stores.
    let body = &mut row[ylo * g.wo..yhi * g.wo];
    if body.is_empty() {
        return;
    }
    for c in (0..xlo).chain(xhi..g.wo) {
        for v in body[c..].iter_mut().step_by(g.wo) {
            *v = T::zero();
        }
    }
}

/// Writes the im2col matrix of one image `x` (`[C_in, H, W]`) into `cols` (`K x N`), every
/// element (zeros where the kernel reads padding).
fn im2col<T: Real>(x: &[T], cols: &mut [T], g: &Geom, parallel: bool) {
    let (plane, rows, taps) = (g.h * g.w, g.kh * g.kw * g.n(), g.taps());
    let fill = |(rows, plane): (&mut [T], &[T])| im2col_channel(plane, rows, g, &taps);
    if parallel {
        cols.par_chunks_mut(rows)
            .zip(x.par_chunks(plane))
            .with_min_len(min_items(rows))
            .for_each(fill);
    } else {
        cols.chunks_mut(rows).zip(x.chunks(plane)).for_each(fill);
    }
}

vectorized_fn! {
    /// [`im2col`] of one channel: its tap rows from its `plane`.
    fn im2col_channel<T: Real>(plane: &[T], rows: &mut [T], g: &Geom, taps: &[Tap]) {
        for (tap, row) in taps.iter().zip(rows.chunks_mut(g.n())) {
            if let Some((delta, lo, hi)) = tap.shift {
                // One copy of the shifted plane, then zeros where it wrapped round a row edge.
                if lo < hi {
                    let src = (lo as isize + delta) as usize;
                    row[lo..hi].copy_from_slice(&plane[src..src + (hi - lo)]);
                }
                zero_invalid(row, g, tap);
                continue;
            }
            let ((ylo, yhi), (xlo, xhi)) = (tap.ys, tap.xs);
            row[..ylo * g.wo].fill(T::zero());
            row[yhi * g.wo..].fill(T::zero());
            for oy in ylo..yhi {
                let seg = &mut row[oy * g.wo..][..g.wo];
                let src = &plane[g.src(oy, tap.ky) * g.w..][..g.w];
                seg[..xlo].fill(T::zero());
                seg[xhi..].fill(T::zero());
                if xlo < xhi {
                    let src = &src[g.src(xlo, tap.kx)..];
                    let seg = &mut seg[xlo..xhi];
                    if g.stride == 1 {
                        seg.copy_from_slice(&src[..seg.len()]);
                    } else {
                        for (v, &s) in seg.iter_mut().zip(src.iter().step_by(g.stride)) {
                            *v = s;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns `cols` (`K x N`) back into the image `dx` (`[C_in, H, W]`): the adjoint of
/// [`im2col`]. `cols` is scratch: the entries that stand for padding may be zeroed.
fn col2im<T: Real>(cols: &mut [T], dx: &mut [T], g: &Geom, parallel: bool) {
    let (plane, rows, taps) = (g.h * g.w, g.kh * g.kw * g.n(), g.taps());
    let add = |(plane, rows): (&mut [T], &mut [T])| col2im_channel(plane, rows, g, &taps);
    if parallel {
        dx.par_chunks_mut(plane)
            .zip(cols.par_chunks_mut(rows))
            .with_min_len(min_items(rows))
            .for_each(add);
    } else {
        dx.chunks_mut(plane)
            .zip(cols.chunks_mut(rows))
            .for_each(add);
    }
}

vectorized_fn! {
    /// [`col2im`] of one channel: its tap rows of `cols` added into its `plane`.
    fn col2im_channel<T: Real>(plane: &mut [T], rows: &mut [T], g: &Geom, taps: &[Tap]) {
        for (tap, row) in taps.iter().zip(rows.chunks_mut(g.n())) {
            if let Some((delta, lo, hi)) = tap.shift {
                // Zero what stands for padding, then one add over the shifted plane.
                if lo < hi {
                    zero_invalid(row, g, tap);
                    let dst = (lo as isize + delta) as usize;
                    for (d, &s) in plane[dst..dst + (hi - lo)].iter_mut().zip(&row[lo..hi]) {
                        *d += s;
                    }
                }
                continue;
            }
            let ((ylo, yhi), (xlo, xhi)) = (tap.ys, tap.xs);
            if xlo >= xhi {
                continue;
            }
            for oy in ylo..yhi {
                let seg = &row[oy * g.wo..][xlo..xhi];
                let dst = &mut plane[g.src(oy, tap.ky) * g.w..][g.src(xlo, tap.kx)..];
                if g.stride == 1 {
                    for (d, &s) in dst[..seg.len()].iter_mut().zip(seg) {
                        *d += s;
                    }
                } else {
                    for (d, &s) in dst.iter_mut().step_by(g.stride).zip(seg) {
                        *d += s;
                    }
                }
            }
        }
    }
}

/// Runs `f(image index, input chunk, output chunk, parallel inside, gemm parallelism)` for
/// every image: in parallel over the images when there are at least as many as threads
/// (each single-threaded, inside [`image_task`]), otherwise one after the other with the
/// parallelism inside.
fn per_image<T: Real>(
    input: &[T],
    in_len: usize,
    output: &mut [T],
    out_len: usize,
    f: impl Fn(&[T], &mut [T], bool, gemm::Parallelism) + Sync,
) {
    if in_len == 0 || out_len == 0 {
        return;
    }
    if one_thread_per_image(output.len() / out_len) {
        output
            .par_chunks_mut(out_len)
            .zip(input.par_chunks(in_len))
            .for_each(|(o, i)| image_task(|| f(i, o, false, gemm::Parallelism::None)));
    } else {
        let par = gemm_parallelism();
        for (o, i) in output.chunks_mut(out_len).zip(input.chunks(in_len)) {
            f(i, o, true, par);
        }
    }
}

/// Whether the images of a conv of `images` images each run on one core: [`per_image`] runs
/// them one per thread (or all on one), or the conv itself runs for one image of a batch
/// spread over the threads (a residual block image by image).
fn one_thread_per_image(images: usize) -> bool {
    let n = rayon::current_num_threads();
    n == 1 || images >= n || in_image_task()
}

/// Whether [`forward`] runs the conv `g` as kernel-row GEMMs (`kernel_rows.rs`): a stride-1
/// conv whose images each run on one core.
fn by_kernel_rows(g: &Geom) -> bool {
    kernel_rows::applies(g) && one_thread_per_image(g.b)
}

/// The forward conv of a batch `x` (`[B, C_in, H, W]`, contiguous), `[B, C_out, H_out, W_out]`.
fn forward<T: Real>(x: &[T], w: &ConvWeights<'_, T>, bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    if winograd::applies(g) {
        let u = w.get(Form::Winograd, |w| winograd::transform_weights(w, g));
        return winograd::forward(x, &u, bias, g);
    }
    let (m, n, k) = (g.cout, g.n(), g.k());
    // The output starts as the bias (or zeros) and the GEMM adds the products to it.
    let mut out = match bias {
        Some(bias) => {
            let mut out = Vec::with_capacity(g.b * g.out_len());
            for _ in 0..g.b {
                for &b in bias {
                    out.extend(std::iter::repeat_n(b, n));
                }
            }
            out
        }
        None => vec![T::zero(); g.b * g.out_len()],
    };
    if by_kernel_rows(g) {
        let w_rows = w.get(Form::KernelRows, |w| kernel_rows::weight_rows(w, g));
        per_image(x, g.in_len(), &mut out, g.out_len(), |x, out, par, gp| {
            T::with_scratch(kernel_rows::copies_len(g), |copies| {
                kernel_rows::forward_image(x, &w_rows, out, copies, g, (par, gp));
            });
        });
        return out;
    }
    let w = w.data();
    per_image(x, g.in_len(), &mut out, g.out_len(), |x, out, par, gp| {
        let lhs = Mat::rows(&w, k);
        if g.pointwise() {
            matmul(out, lhs, Mat::rows(x, n), (m, n, k), true, gp);
        } else {
            T::with_scratch(k * n, |cols| {
                im2col(x, cols, g, par);
                matmul(out, lhs, Mat::rows(cols, n), (m, n, k), true, gp);
            });
        }
    });
    out
}

/// The weights of [`Geom::adjoint`]: `w_t[i, o, y, x] = w[o, i, k_h - 1 - y, k_w - 1 - x]`
/// (`[C_in, C_out, k_h, k_w]` from `[C_out, C_in, k_h, k_w]`).
fn flipped_transposed<T: Real>(w: &[T], g: &Geom) -> Vec<T> {
    let taps = g.kh * g.kw;
    let mut wt = vec![T::zero(); w.len()];
    for o in 0..g.cout {
        for i in 0..g.cin {
            let src = &w[(o * g.cin + i) * taps..][..taps];
            let dst = &mut wt[(i * g.cout + o) * taps..][..taps];
            for (d, &v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = v;
            }
        }
    }
    wt
}

/// The gradient with respect to the input of a batch of output gradients `grad`
/// (`[B, C_out, H_out, W_out]`, contiguous): `[B, C_in, H, W]`.
///
/// A conv whose [`Geom::adjoint`] the Winograd or the kernel-row forward takes runs as that
/// forward; any other as `W^T g` (one GEMM per image) + col2im.
fn input_grad<T: Real>(grad: &[T], w: &[T], cache: &WeightCache, g: &Geom) -> Vec<T> {
    let by_forward = |a: &Geom| winograd::applies(a) || by_kernel_rows(a);
    if let Some(adjoint) = g.adjoint().filter(by_forward) {
        return forward(grad, &ConvWeights::adjoint(w, *g, cache), None, &adjoint);
    }
    let (m, n, k) = (g.k(), g.n(), g.cout);
    let mut dx = vec![T::zero(); g.b * g.in_len()];
    per_image(grad, g.out_len(), &mut dx, g.in_len(), |gr, dx, par, gp| {
        let lhs = Mat::transposed(w, m);
        if g.pointwise() {
            matmul(dx, lhs, Mat::rows(gr, n), (m, n, k), false, gp);
        } else {
            T::with_scratch(m * n, |cols| {
                matmul(cols, lhs, Mat::rows(gr, n), (m, n, k), false, gp);
                col2im(cols, dx, g, par);
            });
        }
    });
    dx
}

/// The gradient with respect to the weights of a batch of output gradients `grad`
/// (`[B, C_out, H_out, W_out]`) at the input `x` (`[B, C_in, H, W]`), both contiguous:
/// `[C_out, C_in, k_h, k_w]`, the sum over the images of `g_b cols_b^T`.
fn weight_grad<T: Real>(grad: &[T], x: &[T], g: &Geom) -> Vec<T> {
    let (m, n, k) = (g.cout, g.k(), g.n());
    let mut dw = vec![T::zero(); m * n];
    if g.in_len() == 0 || g.out_len() == 0 {
        return dw;
    }
    let (par, gp) = (rayon::current_num_threads() > 1, gemm_parallelism());
    for (gr, x) in grad.chunks(g.out_len()).zip(x.chunks(g.in_len())) {
        let lhs = Mat::rows(gr, k);
        if g.pointwise() {
            matmul(&mut dw, lhs, Mat::transposed(x, k), (m, n, k), true, gp);
        } else {
            T::with_scratch(n * k, |cols| {
                im2col(x, cols, g, par);
                matmul(&mut dw, lhs, Mat::transposed(cols, k), (m, n, k), true, gp);
            });
        }
    }
    dw
}

/// The conv as a custom op on its input; the weights and bias are constants.
pub(super) struct Conv2dOp {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// The rearranged weights of the layer (or of this call).
    cache: Arc<WeightCache>,
}

impl Conv2dOp {
    /// The op for constant `weight` and `bias`, with the layer's weight cache (a fresh one
    /// when none is given).
    fn new(
        weight: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
        cache: Option<&Arc<WeightCache>>,
    ) -> Conv2dOp {
        Conv2dOp {
            weight: weight.clone(),
            bias: bias.cloned(),
            stride,
            padding,
            cache: cache.cloned().unwrap_or_else(WeightCache::new),
        }
    }

    /// The output of the input `s`, `l` (contiguous), with its geometry.
    fn output<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(Vec<T>, Geom)> {
        self.output_of(cpu_slice::<T>(s, l, "conv2d")?, l.dims())
    }

    /// The output of the contiguous input `x` of shape `dims`, with its geometry.
    pub(super) fn output_of<T: Real>(&self, x: &[T], dims: &[usize]) -> Result<(Vec<T>, Geom)> {
        let g = Geom::new(dims, self.weight.dims(), self.stride, self.padding)?;
        if let Some(b) = &self.bias {
            if b.dims() != [g.cout] {
                candle_core::bail!("conv2d: bias {:?} for {} channels", b.dims(), g.cout)
            }
        }
        if x.len() != g.b * g.in_len() {
            candle_core::bail!("conv2d: {} elements for an input of {dims:?}", x.len())
        }
        let out = with_data::<T, _>(&self.weight, "conv2d", |w| {
            let w = ConvWeights::plain(w, &self.cache);
            match &self.bias {
                Some(b) => with_data::<T, _>(b, "conv2d", |b| Ok(forward(x, &w, Some(b), &g))),
                None => Ok(forward(x, &w, None, &g)),
            }
        })?;
        Ok((out, g))
    }

    /// The weights and the bias.
    pub(super) fn tensors(&self) -> Vec<&Tensor> {
        std::iter::once(&self.weight).chain(&self.bias).collect()
    }

    /// The layer on tensors, [`conv2d_fused`] (with its fallbacks).
    pub(super) fn layer_with(
        &self,
        x: &Tensor,
        image_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let conv = (&self.weight, self.bias.as_ref(), self.stride, self.padding);
        fused::conv2d_fused_cached(x, conv, image_bias, residual, Some(&self.cache))
    }

    pub(super) fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, g) = self.output::<T>(s, l)?;
        Ok((T::to_cpu_storage_owned(out), g.out_shape()))
    }

    /// The gradient with respect to an input of shape `dims` of the contiguous output
    /// gradient `grad`.
    pub(super) fn input_grad_of<T: Real>(&self, grad: &[T], dims: &[usize]) -> Result<Vec<T>> {
        let g = Geom::new(dims, self.weight.dims(), self.stride, self.padding)?;
        if grad.len() != g.b * g.out_len() {
            candle_core::bail!(
                "conv2d backward: {} gradient elements for an output of {:?}",
                grad.len(),
                g.out_shape().dims()
            )
        }
        with_data::<T, _>(&self.weight, "conv2d backward", |w| {
            Ok(input_grad(grad, w, &self.cache, &g))
        })
    }

    /// The gradient with respect to the input `x` of the output gradient `grad`.
    fn input_grad(&self, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let op = Conv2dInputGrad {
            conv: Conv2dOp {
                weight: self.weight.clone(),
                bias: None,
                stride: self.stride,
                padding: self.padding,
                cache: self.cache.clone(),
            },
            input: x.dims().to_vec(),
        };
        grad.contiguous()?.apply_op1_no_bwd(&op)
    }
}

impl CustomOp1 for Conv2dOp {
    fn name(&self) -> &'static str {
        "mapga-conv2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l),
            CpuStorage::F64(_) => self.run::<f64>(s, l),
            other => Err(unsupported("conv2d", other)),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.input_grad(arg, grad)?))
    }
}

/// The input gradient of [`Conv2dOp`] as an op on the output gradient.
struct Conv2dInputGrad {
    /// The conv (its bias plays no part).
    conv: Conv2dOp,
    /// The input's shape.
    input: Vec<usize>,
}

impl Conv2dInputGrad {
    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let c = &self.conv;
        let g = Geom::new(&self.input, c.weight.dims(), c.stride, c.padding)?;
        g.check_output(l.dims(), "conv2d backward: gradient")?;
        let grad = cpu_slice::<T>(s, l, "conv2d backward")?;
        let dx = c.input_grad_of(grad, &self.input)?;
        Ok((T::to_cpu_storage_owned(dx), Shape::from(self.input.clone())))
    }
}

impl CustomOp1 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "mapga-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l),
            CpuStorage::F64(_) => self.run::<f64>(s, l),
            other => Err(unsupported("conv2d", other)),
        }
    }
}

/// The conv as a custom op on its input and its weights, for weights tracked by autograd:
/// the backward gives the input gradient (as [`Conv2dInputGrad`]) and the kernel gradient
/// ([`Conv2dWeightGrad`]), each only when that argument is tracked.
struct Conv2dTrainableOp {
    stride: usize,
    padding: usize,
}

impl Conv2dTrainableOp {
    fn run<T: Real>(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(xl.dims(), wl.dims(), self.stride, self.padding)?;
        let x = cpu_slice::<T>(xs, xl, "conv2d")?;
        let w = cpu_slice::<T>(ws, wl, "conv2d")?;
        Ok((
            T::to_cpu_storage_owned(forward(
                x,
                &ConvWeights::plain(w, &WeightCache::default()),
                None,
                &g,
            )),
            g.out_shape(),
        ))
    }
}

impl CustomOp2 for Conv2dTrainableOp {
    fn name(&self) -> &'static str {
        "mapga-conv2d-trainable"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (xs, ws) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>((xs, xl), (ws, wl)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>((xs, xl), (ws, wl)),
            (other, _) => Err(unsupported("conv2d", other)),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = if x.track_op() {
            let op = Conv2dInputGrad {
                conv: Conv2dOp {
                    weight: w.detach(),
                    bias: None,
                    stride: self.stride,
                    padding: self.padding,
                    // The weights change between calls: nothing kept beyond this one.
                    cache: WeightCache::new(),
                },
                input: x.dims().to_vec(),
            };
            Some(grad.apply_op1_no_bwd(&op)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            let op = Conv2dWeightGrad {
                weight: w.dims().to_vec(),
                stride: self.stride,
                padding: self.padding,
            };
            Some(grad.apply_op2_no_bwd(&x.detach(), &op)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// The kernel gradient of [`Conv2dTrainableOp`] as an op on the output gradient and the input.
struct Conv2dWeightGrad {
    weight: Vec<usize>,
    stride: usize,
    padding: usize,
}

impl Conv2dWeightGrad {
    fn run<T: Real>(
        &self,
        (gs, gl): (&CpuStorage, &Layout),
        (xs, xl): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(xl.dims(), &self.weight, self.stride, self.padding)?;
        g.check_output(gl.dims(), "conv2d backward: gradient")?;
        let grad = cpu_slice::<T>(gs, gl, "conv2d backward")?;
        let x = cpu_slice::<T>(xs, xl, "conv2d backward")?;
        Ok((
            T::to_cpu_storage_owned(weight_grad(grad, x, &g)),
            Shape::from(self.weight.clone()),
        ))
    }
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "mapga-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (gs, xs) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>((gs, gl), (xs, xl)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>((gs, gl), (xs, xl)),
            (other, _) => Err(unsupported("conv2d backward", other)),
        }
    }
}

/// `x` (`[B, C_in, H, W]`) convolved with `weight` (`[C_out, C_in, k_h, k_w]`) plus `bias`
/// (`[C_out]`), with `stride` and zero `padding` on every side: the same as candle's
/// `x.conv2d(weight, padding, stride, 1, 1)` followed by the bias.
///
/// Differentiable in `x`, and in `weight` and `bias` when autograd tracks them (a `Var` or a
/// tensor computed from one); untracked weights are constants and cost no gradient work. Off
/// the fast path (see the module documentation) this is the stock candle conv.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_cached(x, weight, bias, stride, padding, None)
}

/// [`conv2d()`] with the weight cache of the layer the weights belong to, if any.
fn conv2d_cached(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    cache: Option<&Arc<WeightCache>>,
) -> Result<Tensor> {
    if fast_path(x, &[Some(weight), bias])
        && x.rank() == 4
        && x.elem_count() > 0
        && weight.elem_count() > 0
    {
        let trainable = weight.track_op() || bias.is_some_and(Tensor::track_op);
        if trainable {
            let op = Conv2dTrainableOp { stride, padding };
            let y = x.contiguous()?.apply_op2(&weight.contiguous()?, op)?;
            return match bias {
                Some(b) => {
                    if b.dims() != [weight.dim(0)?] {
                        candle_core::bail!(
                            "conv2d: bias {:?} for {} channels",
                            b.dims(),
                            weight.dim(0)?
                        )
                    }
                    y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)
                }
                None => Ok(y),
            };
        }
        let op = Conv2dOp::new(weight, bias, stride, padding, cache);
        return x.contiguous()?.apply_op1(op);
    }
    let y = x.conv2d(weight, padding, stride, 1, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// A conv layer with a bias, constant weights and the fast kernel ([`conv2d()`]). It keeps
/// the rearranged forms of its weights the fast paths compute (see `weight_cache.rs`); clones
/// share them.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    cache: Arc<WeightCache>,
}

impl Conv2d {
    /// A layer from its tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, stride: usize, padding: usize) -> Conv2d {
        Conv2d {
            weight,
            bias,
            stride,
            padding,
            cache: WeightCache::new(),
        }
    }

    /// A square `kernel`-sized conv from `in_channels` to `out_channels` with a bias, loaded
    /// from `vb` exactly as `candle_nn::conv2d` does (tensors `weight`
    /// `[out, in, kernel, kernel]` and `bias` `[out]`, same initialisation hints).
    pub fn load(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Conv2d> {
        let weight = vb.get_with_hints(
            (out_channels, in_channels, kernel, kernel),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bound = 1. / (in_channels as f64).sqrt();
        let bias = vb.get_with_hints(
            out_channels,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Conv2d::new(weight, Some(bias), stride, padding))
    }

    /// The layer as an op (the same tensors).
    pub(super) fn op(&self) -> Conv2dOp {
        let (w, b) = (&self.weight, self.bias.as_ref());
        Conv2dOp::new(w, b, self.stride, self.padding, Some(&self.cache))
    }

    /// The weights `[C_out, C_in, k_h, k_w]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[C_out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Conv2d {
    /// The layer's output plus `image_bias` (`[B, C_out]`, broadcast over the pixels) and
    /// `residual` (the output's shape), in one op ([`conv2d_fused`]).
    pub fn forward_with(
        &self,
        x: &Tensor,
        image_bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.op().layer_with(x, image_bias, residual)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (&self.weight, self.bias.as_ref());
        conv2d_cached(x, w, b, self.stride, self.padding, Some(&self.cache))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{on_threads, randn, rel_err, tolerance, value_and_vjp, values};
    use candle_core::{DType, Device, Var};

    /// The stock candle conv with bias (what `candle_nn::Conv2d` computes).
    fn stock(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
        x.conv2d(w, pad, stride, 1, 1)?
            .broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)
    }

    /// The input gradient of `sum(conv(x) * v)` by direct summation in f64.
    fn reference_input_grad(
        x: &Tensor,
        w: &Tensor,
        v: &Tensor,
        stride: usize,
        pad: usize,
    ) -> Tensor {
        let g = Geom::new(x.dims(), w.dims(), stride, pad).unwrap();
        let (wv, vv) = (values(w), values(v));
        let mut dx = vec![0.0; g.b * g.in_len()];
        g.each_product(|o, i, k| dx[i] += vv[o] * wv[k]);
        Tensor::from_vec(dx, x.dims(), &Device::Cpu).unwrap()
    }

    /// Whether candle 0.11's conv backward handles the shape: it derives one output padding
    /// from the height and uses it for the width too.
    fn candle_backward_works(h: usize, w: usize, k: usize, stride: usize, pad: usize) -> bool {
        (h + 2 * pad - k) % stride == (w + 2 * pad - k) % stride
    }

    /// (batch, in channels, height, width, out channels, kernel, stride, padding)
    type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

    const CASES: &[Case] = &[
        (1, 3, 7, 5, 6, 3, 1, 1),
        (2, 5, 8, 8, 13, 3, 2, 1),
        (3, 7, 9, 11, 5, 3, 2, 1),
        (1, 3, 9, 7, 4, 1, 1, 0),
        (4, 6, 6, 10, 9, 1, 1, 0),
        (2, 4, 7, 7, 3, 1, 2, 0),
        (1, 5, 11, 9, 7, 5, 1, 2),
        (3, 3, 10, 12, 1, 5, 2, 2),
        (2, 9, 6, 7, 11, 3, 1, 0),
        (1, 2, 5, 6, 3, 3, 2, 2),
        (5, 17, 13, 13, 19, 3, 1, 1),
        (2, 1, 6, 5, 2, 5, 1, 0),
        // Wide enough for the Winograd path (forward and input gradient), odd sizes, paddings
        // 0-2.
        (3, 4, 6, 33, 5, 3, 1, 1),
        (2, 3, 9, 35, 2, 3, 1, 0),
        (1, 2, 5, 34, 3, 3, 1, 2),
        // Inputs smaller than the kernel: taps that read only padding.
        (1, 2, 1, 1, 3, 5, 1, 2),
        (2, 3, 2, 3, 2, 5, 1, 2),
        (3, 2, 2, 1, 4, 5, 2, 2),
    ];

    fn check_case(case: usize, dtype: DType) {
        let (b, cin, h, w, cout, k, stride, pad) = CASES[case];
        let seed = 100 * case as u64;
        let x = randn(seed, &[b, cin, h, w], dtype);
        let wt = randn(seed + 1, &[cout, cin, k, k], dtype);
        let bias = randn(seed + 2, &[cout], dtype);
        let what = format!("case {:?} {dtype:?}", CASES[case]);
        let (out, grad) = value_and_vjp(&x, seed + 3, |x| conv2d(x, &wt, Some(&bias), stride, pad));
        let want = stock(&x, &wt, &bias, stride, pad).unwrap();
        let err = rel_err(&out, &want);
        assert!(err < tolerance(dtype), "{what}: forward error {err:.2e}");
        // value_and_vjp draws v from seed + 3 with the output's shape.
        let v = randn(seed + 3, out.dims(), dtype);
        let err = rel_err(&grad, &reference_input_grad(&x, &wt, &v, stride, pad));
        assert!(
            err < tolerance(dtype),
            "{what}: input grad error {err:.2e} (direct sum)"
        );
        if candle_backward_works(h, w, k, stride, pad) {
            let (_, want) = value_and_vjp(&x, seed + 3, |x| stock(x, &wt, &bias, stride, pad));
            let err = rel_err(&grad, &want);
            assert!(
                err < tolerance(dtype),
                "{what}: input grad error {err:.2e} (candle)"
            );
        }
    }

    /// Runs `check(case, dtype)` on every case in f32 and f64 on a pool of `threads` threads.
    fn on_every_case(threads: usize, check: fn(usize, DType)) {
        on_threads(threads, || {
            for case in 0..CASES.len() {
                check(case, DType::F32);
                check(case, DType::F64);
            }
        });
    }

    fn check_all(threads: usize) {
        on_every_case(threads, check_case);
    }

    #[test]
    fn conv2d_matches_candle_on_one_thread() {
        check_all(1);
    }

    /// Two threads: batches of 1 go through the GEMM's own parallelism and a parallel
    /// im2col/col2im, larger ones are split over the images.
    #[test]
    fn conv2d_matches_candle_on_two_and_three_threads() {
        check_all(2);
        check_all(3);
    }

    /// The kernel gradient of `sum(conv(x) * v)` by direct summation in f64.
    fn reference_weight_grad(
        x: &Tensor,
        w: &Tensor,
        v: &Tensor,
        stride: usize,
        pad: usize,
    ) -> Tensor {
        let g = Geom::new(x.dims(), w.dims(), stride, pad).unwrap();
        let (xv, vv) = (values(x), values(v));
        let mut dw = vec![0.0; w.elem_count()];
        g.each_product(|o, i, k| dw[k] += vv[o] * xv[i]);
        Tensor::from_vec(dw, w.dims(), &Device::Cpu).unwrap()
    }

    /// Trainable weights: the output, and the gradients of `sum(conv(x) * v)` with respect to
    /// the input, the weights and the bias, against direct f64 sums, on every case.
    fn check_trainable_case(case: usize, dtype: DType) {
        let (b, cin, h, w, cout, k, stride, pad) = CASES[case];
        let seed = 100 * case as u64 + 50;
        let x = Var::from_tensor(&randn(seed, &[b, cin, h, w], dtype)).unwrap();
        let wt = Var::from_tensor(&randn(seed + 1, &[cout, cin, k, k], dtype)).unwrap();
        let bias = Var::from_tensor(&randn(seed + 2, &[cout], dtype)).unwrap();
        let what = format!("case {:?} {dtype:?}", CASES[case]);
        let out = conv2d(&x, &wt, Some(&bias), stride, pad).unwrap();
        let want = stock(&x, &wt, &bias, stride, pad).unwrap();
        let err = rel_err(&out, &want);
        assert!(err < tolerance(dtype), "{what}: forward error {err:.2e}");
        let v = randn(seed + 3, out.dims(), dtype);
        let grads = (&out * &v).unwrap().sum_all().unwrap().backward().unwrap();
        let grad = |t: &Var| grads.get(t.as_tensor()).expect("a gradient").clone();
        let checks = [
            (
                "input",
                grad(&x),
                reference_input_grad(&x, &wt, &v, stride, pad),
            ),
            (
                "weight",
                grad(&wt),
                reference_weight_grad(&x, &wt, &v, stride, pad),
            ),
            ("bias", grad(&bias), v.sum((0, 2, 3)).unwrap()),
        ];
        for (name, got, want) in checks {
            let err = rel_err(&got, &want);
            assert!(
                err < tolerance(dtype),
                "{what}: {name} grad error {err:.2e}"
            );
        }
    }

    #[test]
    fn trainable_weights_get_their_gradients_on_one_and_two_threads() {
        for threads in [1, 2] {
            on_every_case(threads, check_trainable_case);
        }
    }

    /// Only the tracked arguments get a gradient: a constant input with trainable weights
    /// gives the weights theirs, equal to candle's, and the input none.
    #[test]
    fn only_tracked_arguments_get_gradients() {
        let x = randn(11, &[2, 3, 8, 8], DType::F64);
        let w = Var::from_tensor(&randn(12, &[4, 3, 3, 3], DType::F64)).unwrap();
        let out = conv2d(&x, &w, None, 1, 1).unwrap();
        let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        let want = x
            .conv2d(&w, 1, 1, 1, 1)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let err = rel_err(grads.get(&w).unwrap(), want.get(&w).unwrap());
        assert!(err < 1e-12, "{err:.2e}");
    }

    /// Rectangular kernels (the kernel-row path copies `k_w` planes and runs `k_h` GEMMs;
    /// output widths below the input's take its row-by-row copy), with paddings 0-2, batches
    /// run image by image (1 thread, 3 images on 2 threads) and layer by layer (1 image on 2
    /// threads): forward and input gradient against the direct sums.
    #[test]
    fn rectangular_kernels_on_every_path() {
        let shapes = [(3, 1), (1, 3), (2, 3), (3, 5), (5, 2)];
        for (threads, b) in [(1, 2), (2, 3), (2, 1)] {
            on_threads(threads, || {
                for (i, &(kh, kw)) in shapes.iter().enumerate() {
                    for pad in 0..3 {
                        for dtype in [DType::F32, DType::F64] {
                            let seed = 7000 + 10 * i as u64 + pad as u64;
                            let x = randn(seed, &[b, 3, 6, 7], dtype);
                            let wt = randn(seed + 1, &[4, 3, kh, kw], dtype);
                            let bias = randn(seed + 2, &[4], dtype);
                            let what = format!(
                                "{kh}x{kw} pad {pad}, {b} images, {threads} threads {dtype:?}"
                            );
                            let (out, grad) = value_and_vjp(&x, seed + 3, |x| {
                                conv2d(x, &wt, Some(&bias), 1, pad)
                            });
                            let err = rel_err(&out, &stock(&x, &wt, &bias, 1, pad).unwrap());
                            assert!(err < tolerance(dtype), "{what}: forward error {err:.2e}");
                            let v = randn(seed + 3, out.dims(), dtype);
                            let want = reference_input_grad(&x, &wt, &v, 1, pad);
                            let err = rel_err(&grad, &want);
                            assert!(err < tolerance(dtype), "{what}: input grad error {err:.2e}");
                        }
                    }
                }
            });
        }
    }

    /// A layer computes its rearranged weights once (the same ones on the next call), keeps
    /// one per form and direction, and gives the same output every call.
    #[test]
    fn a_layer_keeps_its_rearranged_weights() {
        let w = randn(31, &[4, 3, 3, 3], DType::F32);
        let layer = Conv2d::new(w.clone(), None, 1, 1);
        let wide = randn(32, &[1, 3, 8, 40], DType::F32); // Winograd
        let small = randn(33, &[2, 3, 5, 6], DType::F32); // kernel rows on 1 thread
        on_threads(1, || {
            let first = layer.forward(&wide).unwrap();
            let entries = layer.cache.len();
            assert_eq!(entries, 1, "one Winograd form");
            let again = layer.forward(&wide).unwrap();
            assert_eq!(values(&first), values(&again));
            assert_eq!(layer.cache.len(), 1, "the same form is not made twice");
            layer.forward(&small).unwrap();
            let (_, grad) = value_and_vjp(&small, 34, |x| layer.forward(x));
            // Winograd, kernel rows in f32 (forward and adjoint).
            assert_eq!(layer.cache.len(), 3);
            let v = randn(34, &[2, 4, 5, 6], DType::F32);
            let err = rel_err(&grad, &reference_input_grad(&small, &w, &v, 1, 1));
            assert!(err < 1e-5, "{err:.2e}");
        });
    }

    #[test]
    fn conv2d_without_bias_and_the_layer() {
        let x = randn(1, &[2, 3, 6, 5], DType::F32);
        let w = randn(2, &[4, 3, 3, 3], DType::F32);
        let got = conv2d(&x, &w, None, 1, 1).unwrap();
        let err = rel_err(&got, &x.conv2d(&w, 1, 1, 1, 1).unwrap());
        assert!(err < 1e-5, "{err:.2e}");
        let b = randn(3, &[4], DType::F32);
        let layer = Conv2d::new(w.clone(), Some(b.clone()), 2, 1);
        let err = rel_err(
            &layer.forward(&x).unwrap(),
            &stock(&x, &w, &b, 2, 1).unwrap(),
        );
        assert!(err < 1e-5, "{err:.2e}");
    }

    #[test]
    fn non_contiguous_inputs_and_other_dtypes_take_the_same_result() {
        // A non-contiguous input (a transposed view) is made contiguous first.
        let xt = randn(5, &[2, 3, 7, 6], DType::F32);
        let x = xt.transpose(2, 3).unwrap();
        assert!(!x.is_contiguous());
        let w = randn(6, &[5, 3, 3, 3], DType::F32);
        let b = randn(7, &[5], DType::F32);
        let (out, grad) = value_and_vjp(&x, 8, |x| conv2d(x, &w, Some(&b), 1, 1));
        let (want, want_grad) = value_and_vjp(&x.contiguous().unwrap(), 8, |x| {
            conv2d(x, &w, Some(&b), 1, 1)
        });
        assert_eq!(rel_err(&out, &want), 0.0);
        assert_eq!(rel_err(&grad, &want_grad), 0.0);
        assert!(rel_err(&out, &stock(&x, &w, &b, 1, 1).unwrap()) < 1e-5);
        // f16 is not a kernel dtype: the stock op runs, with its result.
        let (xh, wh, bh) = (
            x.to_dtype(DType::F16).unwrap(),
            w.to_dtype(DType::F16).unwrap(),
            b.to_dtype(DType::F16).unwrap(),
        );
        let got = conv2d(&xh, &wh, Some(&bh), 1, 1).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(rel_err(&got, &stock(&xh, &wh, &bh, 1, 1).unwrap()), 0.0);
        // Parameters of another dtype than the input: candle's own error.
        let wd = w.to_dtype(DType::F64).unwrap();
        assert!(conv2d(&x, &wd, Some(&b), 1, 1).is_err());
    }

    #[test]
    fn mismatched_shapes_are_errors() {
        let x = randn(1, &[1, 3, 6, 6], DType::F32);
        let w = randn(2, &[4, 2, 3, 3], DType::F32);
        assert!(conv2d(&x, &w, None, 1, 1).is_err());
        let w = randn(2, &[4, 3, 3, 3], DType::F32);
        let b = randn(3, &[5], DType::F32);
        assert!(conv2d(&x, &w, Some(&b), 1, 1).is_err());
        let w = randn(2, &[4, 3, 9, 9], DType::F32);
        assert!(conv2d(&x, &w, None, 1, 1).is_err());
    }
}
