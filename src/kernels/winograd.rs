//! Winograd's minimal filtering F(2x2, 3x3) for 3x3 stride-1 convs: the same result as im2col +
//! GEMM with 2.25x fewer multiplications in the GEMMs.
//!
//! The output is cut into 2x2 tiles; each reads a 4x4 patch of the (zero-padded) input. With
//! the standard matrices (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016)
//!
//! ```text
//!       | 1  0 -1  0 |        | 1    0    0  |
//! B^T = | 0  1  1  0 |    G = | 1/2  1/2  1/2|    A^T = | 1  1  1  0 |
//!       | 0 -1  1  0 |        | 1/2 -1/2  1/2|          | 0  1 -1 -1 |
//!       | 0  1  0 -1 |        | 0    0    1  |
//! ```
//!
//! a tile of output channel `k` is `A^T [ sum_c (G w_kc G^T) . (B^T d_c B) ] A` (`.` the
//! elementwise product over the 16 positions). Per position `xi` of the 4x4 transformed
//! tile, the sum over the input channels is a matrix product `M_xi = U_xi V_xi` of the
//! transformed weights (`C_out x C_in`) and the transformed patches (`C_in x tiles`): 16 GEMMs
//! of depth `C_in` replace one of depth `9 C_in` over four times as many columns.
//!
//! Layouts (per chunk of images, so the transformed patches stay a few megabytes): weights
//! `U[xi][k][c]`, patches `V[c][xi][tile]`, products `M[k][xi][tile]`; a tile index runs over
//! the images of the chunk, then the tile rows, then the tile columns (one spare per row, see
//! `tiles_per_image`). The patch and output
//! transforms run in parallel over channels, the 16 GEMMs in parallel over `xi`.
//!
//! Rounding: each output is the same sum in a different order with a few more additions; the
//! transforms' coefficients are 0, +-1 and +-1/2, so the error stays at a few units of the last
//! place of the inputs' scale (the kernel tests hold it to the im2col path's tolerance).

use rayon::prelude::*;

use super::conv2d::Geom;
use super::{vectorized_fn, Real};

/// Transformed positions per tile.
const POS: usize = 16;

/// Scratch elements (transformed patches and products) a chunk of images aims at, so that
/// they stay in the last-level cache while the GEMMs stream them.
const CHUNK_ELEMS: usize = 1 << 21;

/// The narrowest output [`forward`] takes.
///
/// Measured on the benchmark networks (2 cores, AVX-512, batch 16, forward and VJP): at
/// 64x64 and 32x32 (32-64 channels) the Winograd path is 20-30% faster than im2col, at 16x16
/// (64 channels) even, and on MNIST's 28x28 (32 channels) about 5% slower: the GEMMs of
/// depth `C_in` are short there and the transforms' memory traffic is not repaid.
const MIN_WIDTH: usize = 32;

/// Whether [`forward`] computes this conv: a 3x3 kernel, stride 1, and an output at least
/// [`MIN_WIDTH`] wide and 4 high.
pub(super) fn applies(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.wo >= MIN_WIDTH && g.ho >= 4
}

/// The tile rows and columns of the output.
fn tiles(g: &Geom) -> (usize, usize) {
    (g.ho.div_ceil(2), g.wo.div_ceil(2))
}

/// The tiles of one image in `V` and `M`: each tile row has one spare tile past the output's
/// edge, so that a whole plane transforms as a few flat vector operations (row `a` of a
/// quarter plane and row `a + 1` are one row length apart); the spare tiles hold harmless
/// values the output transform drops.
fn tiles_per_image(g: &Geom) -> usize {
    let (ty, tx) = tiles(g);
    ty * (tx + 1)
}

/// `U[xi][k][c] = (G w[k][c] G^T)[xi]` for weights `w` (`[C_out, C_in, 3, 3]`).
fn transform_weights<T: Real>(w: &[T], g: &Geom) -> Vec<T> {
    let half = T::from_f64(0.5);
    let (kc, taps) = (g.cout * g.cin, 9);
    let mut u = vec![T::zero(); POS * kc];
    for (kc_index, f) in w.chunks_exact(taps).enumerate() {
        // G f: 4 rows of 3.
        let mut t = [[T::zero(); 3]; 4];
        for j in 0..3 {
            let (a, b, c) = (f[j], f[3 + j], f[6 + j]);
            t[0][j] = a;
            t[1][j] = (a + b + c) * half;
            t[2][j] = (a - b + c) * half;
            t[3][j] = c;
        }
        // (G f) G^T: 4 x 4.
        for (i, row) in t.iter().enumerate() {
            let [a, b, c] = *row;
            let out = [a, (a + b + c) * half, (a - b + c) * half, c];
            for (l, v) in out.into_iter().enumerate() {
                u[(i * 4 + l) * kc + kc_index] = v;
            }
        }
    }
    u
}

/// The forward conv of a batch `x` (`[B, C_in, H, W]`) with weights `w` (`[C_out, C_in, 3,
/// 3]`) and an optional bias: `[B, C_out, H_out, W_out]`, as [`super::conv2d`]'s im2col path
/// computes it. `g` must satisfy [`applies`].
pub(super) fn forward<T: Real>(x: &[T], w: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let per_image = tiles_per_image(g);
    let chunk = (CHUNK_ELEMS / (POS * (g.cin + g.cout) * per_image)).clamp(1, g.b.max(1));
    forward_in_chunks(x, w, bias, g, chunk)
}

/// [`forward`], `chunk` images at a time.
fn forward_in_chunks<T: Real>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    chunk: usize,
) -> Vec<T> {
    debug_assert!(applies(g) && chunk > 0);
    let per_image = tiles_per_image(g);
    let u = transform_weights(w, g);
    let mut out = vec![T::zero(); g.b * g.out_len()];
    let parallel = rayon::current_num_threads() > 1;
    for (x, out) in x
        .chunks(chunk * g.in_len())
        .zip(out.chunks_mut(chunk * g.out_len()))
    {
        let images = out.len() / g.out_len();
        let n = images * per_image;
        T::with_scratch(POS * (g.cin + g.cout) * n, |scratch| {
            let (v, m) = scratch.split_at_mut(POS * g.cin * n);
            transform_patches(x, v, g, images, parallel);
            products(&u, v, m, g, n, parallel);
            transform_outputs(m, out, bias, g, images, parallel);
        });
    }
    out
}

/// `V[c][xi][tile]` of the images `x` (`images` x `[C_in, H, W]`), every element.
fn transform_patches<T: Real>(x: &[T], v: &mut [T], g: &Geom, images: usize, parallel: bool) {
    let plane = g.h * g.w;
    let per_channel = POS * images * tiles_per_image(g);
    let fill = |(c, v): (usize, &mut [T])| {
        for image in 0..images {
            let x = &x[(image * g.cin + c) * plane..][..plane];
            patch_channel(x, v, g, image);
        }
    };
    if parallel {
        v.par_chunks_mut(per_channel).enumerate().for_each(fill);
    } else {
        v.chunks_mut(per_channel).enumerate().for_each(fill);
    }
}

/// `out[i] = f(a[i], b[i])` over the common length.
#[inline(always)]
fn map2<T: Real>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for (o, (&a, &b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(a, b);
    }
}

vectorized_fn! {
    /// The transformed patches `B^T d B` of one input plane `x` (`H x W`) into the rows
    /// `v[xi]` (of the channel's `16 x tiles` block) at the tiles of image `image`.
    ///
    /// The zero-padded plane is split into four quarter planes by row and column parity,
    /// `q[ry][rx][a][j] = padded[2a + ry][2j + rx]`, each `(ty + 1) x (tx + 1)`. Tile `(a, b)`
    /// reads padded rows `2a .. 2a + 3` and columns `2b .. 2b + 3`, that is rows `a, a + 1` and
    /// columns `b, b + 1` of the quarter planes, so both halves of the transform are flat
    /// operations over whole quarter planes, offset by one row or one column.
    fn patch_channel<T: Real>(x: &[T], v: &mut [T], g: &Geom, image: usize) {
        let (ty, tx) = tiles(g);
        let w = tx + 1;
        let (quarter, t) = ((ty + 1) * w, ty * w);
        let mut q = vec![T::zero(); 4 * quarter];
        let mut padded = vec![T::zero(); 2 * w];
        for (y, row) in x.chunks_exact(g.w).enumerate() {
            let r = y + g.pad;
            if r >= 2 * (ty + 1) {
                break;
            }
            padded.fill(T::zero());
            let lo = g.pad.min(padded.len());
            let len = g.w.min(padded.len() - lo);
            padded[lo..lo + len].copy_from_slice(&row[..len]);
            let at = (r % 2) * 2 * quarter + (r / 2) * w;
            let (even, rest) = q[at..].split_at_mut(quarter);
            let odd = &mut rest[..w];
            for ((pair, e), o) in padded.chunks_exact(2).zip(&mut even[..w]).zip(odd) {
                *e = pair[0];
                *o = pair[1];
            }
        }
        // B^T d down the rows, per column parity rx: with d_i = padded row 2a + i,
        // s0 = d0 - d2, s1 = d1 + d2, s2 = d2 - d1, s3 = d1 - d3. Each s is ty x w, plus one
        // spare zero for the column shift below.
        let mut s = vec![T::zero(); 8 * (t + 1)];
        for rx in 0..2 {
            let even_rows = &q[rx * quarter..][..quarter];
            let odd_rows = &q[(2 + rx) * quarter..][..quarter];
            let (d0, d2) = (&even_rows[..t], &even_rows[w..]);
            let (d1, d3) = (&odd_rows[..t], &odd_rows[w..]);
            let mut parts = s.chunks_mut(t + 1).skip(rx).step_by(2);
            let mut next = || parts.next().map_or(&mut [][..], |p| &mut p[..t]);
            map2(next(), d0, d2, |a, b| a - b);
            map2(next(), d1, d2, |a, b| a + b);
            map2(next(), d2, d1, |a, b| a - b);
            map2(next(), d1, d3, |a, b| a - b);
        }
        // (B^T d) B along the columns, the same combinations: with e_j = column 2b + j,
        // e0 = even[b], e1 = odd[b], e2 = even[b + 1], e3 = odd[b + 1].
        let n = v.len() / POS;
        let mut rows = v.chunks_mut(n).map(|row| &mut row[image * t..][..t]);
        for pair in s.chunks(2 * (t + 1)) {
            let (even, odd) = pair.split_at(t + 1);
            let (e0, e1, e2, e3) = (&even[..t], &odd[..t], &even[1..], &odd[1..]);
            let mut next = || rows.next().unwrap_or(&mut []);
            map2(next(), e0, e2, |a, b| a - b);
            map2(next(), e1, e2, |a, b| a + b);
            map2(next(), e2, e1, |a, b| a - b);
            map2(next(), e1, e3, |a, b| a - b);
        }
    }
}

/// A raw pointer the 16 GEMMs share: each writes its own columns of `M`.
struct SharedMut<T>(*mut T);

// SAFETY: the GEMMs that share the pointer write disjoint elements (see `products`).
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// `M[k][xi][.] = U[xi] V[.][xi][.]` for the 16 positions.
fn products<T: Real>(u: &[T], v: &[T], m: &mut [T], g: &Geom, n: usize, parallel: bool) {
    let (k_out, k_in) = (g.cout, g.cin);
    assert!(
        u.len() == POS * k_out * k_in && v.len() == POS * k_in * n && m.len() == POS * k_out * n,
        "winograd: buffers of the wrong size"
    );
    let dst = SharedMut(m.as_mut_ptr());
    let gemm_at = |xi: usize| {
        let dst = &dst;
        // SAFETY: the assertion above sizes every buffer: the lhs `U[xi]` is `k_out x k_in`
        // row-major inside `u`; the rhs is `k_in x n` with rows `16 n` apart starting at
        // column `xi n` of `v`, its last element `(k_in - 1) 16 n + xi n + n - 1 < 16 k_in n`;
        // the destination likewise inside `m`. Different `xi` write the disjoint columns
        // `xi n .. xi n + n` of each row of `m`, so the parallel GEMMs never write the same
        // element, and `m` is borrowed mutably for the whole call. Strides are small positive
        // numbers (buffer lengths), so the casts do not wrap.
        unsafe {
            gemm::gemm(
                k_out,
                n,
                k_in,
                dst.0.add(xi * n),
                1,
                (POS * n) as isize,
                false,
                u.as_ptr().add(xi * k_out * k_in),
                1,
                k_in as isize,
                v.as_ptr().add(xi * n),
                1,
                (POS * n) as isize,
                T::zero(),
                T::one(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    if parallel {
        (0..POS).into_par_iter().for_each(gemm_at);
    } else {
        (0..POS).for_each(gemm_at);
    }
}

/// The output tiles `A^T M A` (plus the bias) of `images` images into `out`
/// (`images` x `[C_out, H_out, W_out]`), cropped to the output's size.
fn transform_outputs<T: Real>(
    m: &[T],
    out: &mut [T],
    bias: Option<&[T]>,
    g: &Geom,
    images: usize,
    parallel: bool,
) {
    let n = images * tiles_per_image(g);
    let plane = g.n();
    let fill = |(index, out): (usize, &mut [T])| {
        let (image, k) = (index / g.cout, index % g.cout);
        let b = bias.map_or(T::zero(), |b| b[k]);
        output_channel(&m[k * POS * n..][..POS * n], out, g, image, b);
    };
    if parallel {
        out.par_chunks_mut(plane).enumerate().for_each(fill);
    } else {
        out.chunks_mut(plane).enumerate().for_each(fill);
    }
}

/// `out[b] = f(a[b], b[b], c[b])` over the common length.
#[inline(always)]
fn map3<T: Real>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = f(a, b, c);
    }
}

vectorized_fn! {
    /// One output plane `out` (`H_out x W_out`) of image `image` from its products `m`
    /// (`16 x tiles`), plus `bias`: `A^T m A` over whole planes of tiles (as in
    /// [`patch_channel`]), then the four outputs of each tile interleaved into the plane.
    fn output_channel<T: Real>(m: &[T], out: &mut [T], g: &Geom, image: usize, bias: T) {
        let tx = tiles(g).1;
        let (w, t) = (tx + 1, tiles_per_image(g));
        let n = m.len() / POS;
        let r: [&[T]; POS] = std::array::from_fn(|xi| &m[xi * n + image * t..][..t]);
        // A^T m: p[l] = r0l + r1l + r2l, p[4 + l] = r1l - r2l - r3l.
        let mut p = vec![T::zero(); 8 * t];
        for (l, p) in p.chunks_mut(t).enumerate() {
            if l < 4 {
                map3(p, r[l], r[4 + l], r[8 + l], |a, b, c| a + b + c);
            } else {
                map3(p, r[l], r[4 + l], r[8 + l], |a, b, c| a - b - c);
            }
        }
        // (A^T m) A: outputs (0, 0), (0, 1) from p[0..4], (1, 0), (1, 1) from p[4..8].
        let mut y = vec![T::zero(); 4 * t];
        for (half, p) in y.chunks_mut(2 * t).zip(p.chunks(4 * t)) {
            let (even, odd) = half.split_at_mut(t);
            let q: [&[T]; 4] = std::array::from_fn(|l| &p[l * t..][..t]);
            map3(even, q[0], q[1], q[2], |a, b, c| a + b + c + bias);
            map3(odd, q[1], q[2], q[3], |a, b, c| a - b - c + bias);
        }
        for (row, dst) in out.chunks_exact_mut(g.wo).enumerate() {
            let (a, dy) = (row / 2, row % 2);
            let half = &y[dy * 2 * t..][..2 * t];
            let even = &half[a * w..][..tx];
            let odd = &half[t + a * w..][..tx];
            let mut pairs = dst.chunks_exact_mut(2);
            for (pair, (&e, &o)) in (&mut pairs).zip(even.iter().zip(odd)) {
                pair[0] = e;
                pair[1] = o;
            }
            if let [last] = pairs.into_remainder() {
                *last = even[tx - 1];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{randn, rel_err, tolerance, values};
    use candle_core::{DType, Device, Tensor};

    /// The conv by direct summation in f64.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, g: &Geom) -> Tensor {
        let (xv, wv, bv) = (values(x), values(w), values(b));
        let mut out: Vec<f64> = (0..g.b * g.out_len())
            .map(|o| bv[o / g.n() % g.cout])
            .collect();
        g.each_product(|o, i, k| out[o] += xv[i] * wv[k]);
        Tensor::from_vec(out, (g.b, g.cout, g.ho, g.wo), &Device::Cpu).unwrap()
    }

    /// [`forward_in_chunks`] on tensors of dtype `T`.
    fn in_chunks<T: Real>(x: &Tensor, w: &Tensor, b: &Tensor, g: &Geom, chunk: usize) -> Tensor {
        let data = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<T>().unwrap();
        let out = forward_in_chunks(&data(x), &data(w), Some(&data(b)), g, chunk);
        Tensor::from_vec(out, (g.b, g.cout, g.ho, g.wo), &Device::Cpu).unwrap()
    }

    /// Odd heights and widths (partial tiles on both edges), paddings 0-2, batches split into
    /// chunks of 1, 2 and all images, f32 and f64, on 1 and 2 threads: the same as the
    /// direct sum to the kernels' tolerance.
    #[test]
    fn winograd_matches_the_direct_sum() {
        // (batch, in channels, height, width, out channels, padding)
        let cases = [
            (3, 4, 6, 33, 5, 1),
            (2, 3, 9, 35, 2, 0),
            (1, 2, 5, 34, 3, 2),
            (4, 7, 5, 40, 6, 1),
        ];
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for (case, &(b, cin, h, w, cout, pad)) in cases.iter().enumerate() {
                    for dtype in [DType::F32, DType::F64] {
                        let seed = 10 * case as u64;
                        let x = randn(seed, &[b, cin, h, w], dtype);
                        let wt = randn(seed + 1, &[cout, cin, 3, 3], dtype);
                        let bias = randn(seed + 2, &[cout], dtype);
                        let g = Geom::new(x.dims(), wt.dims(), 1, pad).unwrap();
                        assert!(applies(&g), "case {case} should take the Winograd path");
                        let want = reference(&x, &wt, &bias, &g);
                        for chunk in [1, 2, b] {
                            let got = match dtype {
                                DType::F32 => in_chunks::<f32>(&x, &wt, &bias, &g, chunk),
                                _ => in_chunks::<f64>(&x, &wt, &bias, &g, chunk),
                            };
                            let err = rel_err(&got, &want);
                            assert!(
                                err < tolerance(dtype),
                                "case {case} {dtype:?}, chunks of {chunk}, {threads} threads: error {err:.2e}"
                            );
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn only_wide_3x3_stride_1_convs_apply() {
        let geom = |h: usize, w: usize, k: usize, stride: usize| {
            Geom::new(&[1, 2, h, w], &[3, 2, k, k], stride, 1).unwrap()
        };
        assert!(applies(&geom(4, 32, 3, 1)));
        assert!(applies(&geom(64, 64, 3, 1)));
        assert!(!applies(&geom(28, 28, 3, 1)), "narrower than MIN_WIDTH");
        assert!(!applies(&geom(3, 64, 3, 1)), "fewer than 4 rows");
        assert!(!applies(&geom(64, 64, 3, 2)), "strided");
        assert!(!applies(&geom(64, 64, 5, 1)), "5x5");
        assert!(!applies(&geom(64, 64, 1, 1)), "1x1");
    }
}
