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
//! the images of the chunk, then the tile rows, then the tile columns. The patch and output
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

/// The narrowest output [`forward`] takes: 16 tiles per row, one AVX-512 vector of f32.
///
/// The transforms run along the tile rows, so narrow images pay their fixed cost per row
/// over few tiles. Measured on the benchmark networks (2 cores, AVX-512): at 64x64 and 32x32
/// the Winograd path made a batch-16 forward and VJP 15-20% faster than im2col, at 16x16 it
/// was even, and on MNIST's 28x28 (and 14x14, 7x7) it was 30-50% slower.
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
    let per_image = tiles(g).0 * tiles(g).1;
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
    let per_image = tiles(g).0 * tiles(g).1;
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
    let per_channel = POS * images * tiles(g).0 * tiles(g).1;
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

#[inline(always)]
/// Splits `rows` (`16 x n`, row-major) into the 16 stretches `start..start + len` of its rows.
fn stretches<T>(rows: &mut [T], n: usize, start: usize, len: usize) -> [&mut [T]; POS] {
    let mut it = rows.chunks_mut(n);
    std::array::from_fn(|_| match it.next() {
        Some(row) => &mut row[start..start + len],
        None => &mut [],
    })
}

/// Input row `y` of the plane `x` (signed: rows outside are zeros), padded with `pad` zeros
/// on the left and zeros on the right to `2 even.len()` columns, split into its even and odd
/// columns.
#[inline(always)]
fn gather_row<T: Real>(
    x: &[T],
    g: &Geom,
    y: isize,
    padded: &mut [T],
    even: &mut [T],
    odd: &mut [T],
) {
    padded.fill(T::zero());
    if y >= 0 && (y as usize) < g.h {
        let row = &x[y as usize * g.w..][..g.w];
        let lo = g.pad.min(padded.len());
        let len = g.w.min(padded.len() - lo);
        padded[lo..lo + len].copy_from_slice(&row[..len]);
    }
    for ((pair, e), o) in padded
        .chunks_exact(2)
        .zip(even.iter_mut())
        .zip(odd.iter_mut())
    {
        *e = pair[0];
        *o = pair[1];
    }
}

vectorized_fn! {
    /// The transformed patches `B^T d B` of one input plane `x` (`H x W`) into the rows
    /// `v[xi]` (of the channel's `16 x tiles` block) at the columns of image `image`.
    ///
    /// Per tile row, the 4 input rows it reads are split into their even and odd columns (of
    /// the padded row), so both halves of the transform run on unit-stride vectors: tile `b`
    /// reads the padded columns `2b .. 2b + 3`, that is `even[b], odd[b], even[b+1], odd[b+1]`.
    fn patch_channel<T: Real>(x: &[T], v: &mut [T], g: &Geom, image: usize) {
        let (ty, tx) = tiles(g);
        let n = v.len() / POS;
        let w = tx + 1;
        // Even and odd columns of the 4 rows, then of B^T d.
        let mut d = vec![T::zero(); 8 * w];
        let mut s = vec![T::zero(); 8 * w];
        let mut padded = vec![T::zero(); 2 * w];
        for a in 0..ty {
            for (i, half) in d.chunks_mut(2 * w).enumerate() {
                let (even, odd) = half.split_at_mut(w);
                let y = (2 * a + i) as isize - g.pad as isize;
                gather_row(x, g, y, &mut padded, even, odd);
            }
            // B^T d down the rows: s0 = d0 - d2, s1 = d1 + d2, s2 = d2 - d1, s3 = d1 - d3.
            let (d0, rest) = d.split_at(2 * w);
            let (d1, rest) = rest.split_at(2 * w);
            let (d2, d3) = rest.split_at(2 * w);
            let (s0, rest) = s.split_at_mut(2 * w);
            let (s1, rest) = rest.split_at_mut(2 * w);
            let (s2, s3) = rest.split_at_mut(2 * w);
            for q in 0..2 * w {
                s0[q] = d0[q] - d2[q];
                s1[q] = d1[q] + d2[q];
                s2[q] = d2[q] - d1[q];
                s3[q] = d1[q] - d3[q];
            }
            // (B^T d) B along each tile's columns: the same combinations.
            let [v00, v01, v02, v03, v10, v11, v12, v13, v20, v21, v22, v23, v30, v31, v32, v33] =
                stretches(v, n, image * ty * tx + a * tx, tx);
            let out = [
                [v00, v01, v02, v03],
                [v10, v11, v12, v13],
                [v20, v21, v22, v23],
                [v30, v31, v32, v33],
            ];
            for (s, [o0, o1, o2, o3]) in [&*s0, &*s1, &*s2, &*s3].into_iter().zip(out) {
                let (even, odd) = s.split_at(w);
                let (e0, e2, e1, e3) = (&even[..tx], &even[1..], &odd[..tx], &odd[1..]);
                for (o, (&a, &c)) in o0.iter_mut().zip(e0.iter().zip(e2)) {
                    *o = a - c;
                }
                for (o, (&b, &c)) in o1.iter_mut().zip(e1.iter().zip(e2)) {
                    *o = b + c;
                }
                for (o, (&b, &c)) in o2.iter_mut().zip(e1.iter().zip(e2)) {
                    *o = c - b;
                }
                for (o, (&b, &d)) in o3.iter_mut().zip(e1.iter().zip(e3)) {
                    *o = b - d;
                }
            }
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
    let n = images * tiles(g).0 * tiles(g).1;
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
    /// (`16 x tiles`), plus `bias`.
    fn output_channel<T: Real>(m: &[T], out: &mut [T], g: &Geom, image: usize, bias: T) {
        let (ty, tx) = tiles(g);
        let n = m.len() / POS;
        // A^T m (two rows of four, p[0..4] and p[4..8]), then the four outputs of each tile:
        // rows 0 and 1, even and odd columns.
        let mut p = vec![T::zero(); 8 * tx];
        let mut y = vec![T::zero(); 4 * tx];
        for a in 0..ty {
            let base = image * ty * tx + a * tx;
            let r: [&[T]; POS] = std::array::from_fn(|xi| &m[xi * n + base..][..tx]);
            for (l, p) in p.chunks_mut(tx).enumerate() {
                if l < 4 {
                    map3(p, r[l], r[4 + l], r[8 + l], |a, b, c| a + b + c);
                } else {
                    let l = l - 4;
                    map3(p, r[4 + l], r[8 + l], r[12 + l], |a, b, c| a - b - c);
                }
            }
            for (half, rows) in y.chunks_mut(2 * tx).zip(p.chunks(4 * tx)) {
                let (even, odd) = half.split_at_mut(tx);
                let q: Vec<&[T]> = rows.chunks(tx).collect();
                map3(even, q[0], q[1], q[2], |a, b, c| a + b + c + bias);
                map3(odd, q[1], q[2], q[3], |a, b, c| a - b - c + bias);
            }
            for (dy, half) in y.chunks(2 * tx).enumerate() {
                let row = 2 * a + dy;
                if row >= g.ho {
                    break;
                }
                let (even, odd) = half.split_at(tx);
                let dst = &mut out[row * g.wo..][..g.wo];
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{randn, rel_err, tolerance, values};
    use candle_core::{DType, Device, Tensor};

    /// The conv by direct summation in f64.
    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, g: &Geom) -> Tensor {
        let (xv, wv, bv) = (values(x), values(w), values(b));
        let mut out = vec![0.0; g.b * g.out_len()];
        for (index, o) in out.iter_mut().enumerate() {
            let (ox, oy) = (index % g.wo, index / g.wo % g.ho);
            let (k, image) = (index / g.n() % g.cout, index / g.out_len());
            *o = bv[k];
            for c in 0..g.cin {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (iy, ix) = (
                            (oy + ky) as isize - g.pad as isize,
                            (ox + kx) as isize - g.pad as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                            let xi = ((image * g.cin + c) * g.h + iy as usize) * g.w + ix as usize;
                            *o += xv[xi] * wv[((k * g.cin + c) * 3 + ky) * 3 + kx];
                        }
                    }
                }
            }
        }
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
