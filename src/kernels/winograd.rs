//! Winograd's minimal filtering F(4x4, 3x3) for 3x3 stride-1 convs: the same result as im2col +
//! GEMM with 4x fewer multiplications in the GEMMs.
//!
//! The output is cut into 4x4 tiles; each reads a 6x6 patch of the (zero-padded) input. With
//! the standard matrices (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
//! 2016)
//!
//! ```text
//!       | 4  0 -5  0  1  0 |        |  1/4    0     0  |
//!       | 0 -4 -4  1  1  0 |        | -1/6  -1/6  -1/6 |        | 1  1  1  1  1  0 |
//! B^T = | 0  4 -4 -1  1  0 |    G = | -1/6   1/6  -1/6 |  A^T = | 0  1 -1  2 -2  0 |
//!       | 0 -2 -1  2  1  0 |        |  1/24  1/12  1/6 |        | 0  1  1  4  4  0 |
//!       | 0  2 -1 -2  1  0 |        |  1/24 -1/12  1/6 |        | 0  1 -1  8 -8  1 |
//!       | 0  4  0 -5  0  1 |        |  0     0     1   |
//! ```
//!
//! a tile of output channel `k` is `A^T [ sum_c (G w_kc G^T) . (B^T d_c B) ] A` (`.` the
//! elementwise product over the 36 positions). Per position `xi` of the 6x6 transformed
//! tile, the sum over the input channels is a matrix product `M_xi = U_xi V_xi` of the
//! transformed weights (`C_out x C_in`) and the transformed patches (`C_in x tiles`): 36 GEMMs
//! of depth `C_in` replace one of depth `9 C_in` over sixteen times as many columns.
//!
//! Layouts (per chunk of images, so the transformed patches stay a few megabytes): weights
//! `U[xi][k][c]`, patches `V[c][xi][tile]`, products `M[k][xi][tile]`; a tile index runs over
//! the images of the chunk, then the tile rows, then the tile columns (one spare per row, see
//! `tiles_per_image`). The patch and output transforms run in parallel over channels, the 36
//! GEMMs in parallel over `xi`. Both transforms are separable (rows, then columns) and work on
//! whole planes of tiles at once, as a few flat loops that vectorise (see [`patch_channel`]).
//!
//! Rounding: F(4x4) trades more additions with coefficients up to 8 (and weights scaled by
//! 1/6, 1/12, 1/24, computed in f64) for its fewer products. On the kernel tests its largest
//! f32 error against direct f64 sums is 3e-6 of the output's scale (F(2x2, 3x3), with
//! coefficients 0, +-1 and +-1/2: 2e-7), inside the im2col path's tolerance of 1e-5.
//!
//! F(2x2, 3x3) was the previous version. F(4x4) measured faster on the ImageNet-64-shaped
//! benchmark U-Net (2 cores, AVX-512, alternating processes, min of 3): batch-16 forward 195 ->
//! 171 ms, VJP 485 -> 435 ms, batch-1 forward 14.4 -> 13.6 ms. Its transforms write 2.25
//! values per output pixel and channel where F(2x2)'s write 4, so they cost about the same
//! although each does more arithmetic.

use rayon::prelude::*;

use super::conv2d::Geom;
use super::{vectorized_fn, Real};

/// Outputs per tile side.
const TILE: usize = 4;

/// Inputs per tile side (the tile plus the kernel's overhang).
const WINDOW: usize = TILE + 2;

/// Transformed positions per tile.
const POS: usize = WINDOW * WINDOW;

/// Scratch elements (transformed patches and products) a chunk of images aims at, so that
/// they stay in the last-level cache while the GEMMs stream them.
const CHUNK_ELEMS: usize = 1 << 21;

/// The narrowest output [`forward`] takes.
///
/// Measured on the benchmark networks (2 cores, AVX-512, alternating processes, min of 4):
/// with Winograd on MNIST's 28x28 planes (16 channels) the batch-16 forward is 24% slower and
/// the batch-16 VJP 17% slower (the GEMMs of depth `C_in` are short and the transforms'
/// memory traffic is not repaid); on the 64x64 network's 16x16 planes (64 channels) the
/// batch-16 VJP is even and the batch-1 forward 30% slower. At 32x32 and 64x64 it pays (see
/// the module doc).
const MIN_WIDTH: usize = 32;

/// Whether [`forward`] computes this conv: a 3x3 kernel, stride 1, and an output at least
/// [`MIN_WIDTH`] wide and [`TILE`] high.
pub(super) fn applies(g: &Geom) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.wo >= MIN_WIDTH && g.ho >= TILE
}

/// The tile rows and columns of the output.
fn tiles(g: &Geom) -> (usize, usize) {
    (g.ho.div_ceil(TILE), g.wo.div_ceil(TILE))
}

/// The tiles of one image in `V` and `M`: each tile row has one spare tile past the output's
/// edge, so that a whole plane transforms as a few flat vector operations (tile row `a` of a
/// phase plane and row `a + 1` are one row length apart); the spare tiles hold harmless
/// values the output transform drops.
fn tiles_per_image(g: &Geom) -> usize {
    let (ty, tx) = tiles(g);
    ty * (tx + 1)
}

/// `G f` for one column (or row) `f` of a 3x3 kernel.
#[inline(always)]
fn weight_1d(f: [f64; 3]) -> [f64; WINDOW] {
    let [a, b, c] = f;
    let (ac, ac4) = (a + c, a * (1.0 / 24.0) + c * (1.0 / 6.0));
    [
        a * 0.25,
        (ac + b) * (-1.0 / 6.0),
        (ac - b) * (-1.0 / 6.0),
        ac4 + b * (1.0 / 12.0),
        ac4 - b * (1.0 / 12.0),
        c,
    ]
}

/// `outs[.][i] = weight_1d([ins[0][i], ins[1][i], ins[2][i]])` converted by `convert`, over
/// the length of the inputs: the transform of many kernels at once, one flat loop.
fn weight_streams<O: Copy>(ins: [&[f64]; 3], outs: [&mut [O]; WINDOW], convert: impl Fn(f64) -> O) {
    let len = ins[0].len();
    let [a, b, c] = ins.map(|s| &s[..len]);
    let [o0, o1, o2, o3, o4, o5] = outs;
    let (o0, o1, o2, o3, o4, o5) = (
        &mut o0[..len],
        &mut o1[..len],
        &mut o2[..len],
        &mut o3[..len],
        &mut o4[..len],
        &mut o5[..len],
    );
    for i in 0..len {
        let r = weight_1d([a[i], b[i], c[i]]).map(&convert);
        (o0[i], o1[i], o2[i], o3[i], o4[i], o5[i]) = (r[0], r[1], r[2], r[3], r[4], r[5]);
    }
}

/// `U[xi][k][c] = (G w[k][c] G^T)[xi]` for weights `w` (`[C_out, C_in, 3, 3]`), computed in
/// f64 over planes of all `C_out C_in` kernels at once: the weights [`forward`] takes.
pub(super) fn transform_weights<T: Real>(w: &[T], g: &Geom) -> Vec<T> {
    let kc = g.cout * g.cin;
    // taps[tap][kernel], tap = 3 row + column.
    let mut taps = vec![0f64; 9 * kc];
    for (kernel, f) in w.chunks_exact(9).enumerate() {
        for (tap, &v) in f.iter().enumerate() {
            taps[tap * kc + kernel] = v.to_f64();
        }
    }
    // G f down the rows: rows[i][j] (6 x 3 planes) from column j of the kernels.
    let mut rows = vec![0f64; WINDOW * 3 * kc];
    for j in 0..3 {
        let ins = std::array::from_fn(|r| &taps[(3 * r + j) * kc..][..kc]);
        let mut planes = rows.chunks_mut(kc).skip(j).step_by(3);
        let outs = std::array::from_fn(|_| planes.next().unwrap_or(&mut []));
        weight_streams(ins, outs, |v| v);
    }
    // (G f) G^T along the columns: U[6 i + l] from row i of G f.
    let mut u = vec![T::zero(); POS * kc];
    for (i, row) in rows.chunks(3 * kc).enumerate() {
        let ins = std::array::from_fn(|j| &row[j * kc..][..kc]);
        let mut planes = u[i * WINDOW * kc..].chunks_mut(kc);
        let outs = std::array::from_fn(|_| planes.next().unwrap_or(&mut []));
        weight_streams(ins, outs, T::from_f64);
    }
    u
}

/// The forward conv of a batch `x` (`[B, C_in, H, W]`) with the transformed weights `u`
/// ([`transform_weights`] of `[C_out, C_in, 3, 3]` weights) and an optional bias:
/// `[B, C_out, H_out, W_out]`, as [`mod@super::conv2d`]'s im2col path computes it. `g` must
/// satisfy [`applies`].
pub(super) fn forward<T: Real>(x: &[T], u: &[T], bias: Option<&[T]>, g: &Geom) -> Vec<T> {
    let per_image = tiles_per_image(g);
    let chunk = (CHUNK_ELEMS / (POS * (g.cin + g.cout) * per_image)).clamp(1, g.b.max(1));
    forward_in_chunks(x, u, bias, g, chunk)
}

/// [`forward`], `chunk` images at a time.
fn forward_in_chunks<T: Real>(
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    g: &Geom,
    chunk: usize,
) -> Vec<T> {
    debug_assert!(applies(g) && chunk > 0 && u.len() == POS * g.cout * g.cin);
    let per_image = tiles_per_image(g);
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
            products(u, v, m, g, n, parallel);
            transform_outputs(m, out, bias, g, images, parallel);
        });
    }
    out
}

/// `V[c][xi][tile]` of the images `x` (`images` x `[C_in, H, W]`), every element.
fn transform_patches<T: Real>(x: &[T], v: &mut [T], g: &Geom, images: usize, parallel: bool) {
    let plane = g.h * g.w;
    let per_channel = POS * images * tiles_per_image(g);
    let fill = |scratch: &mut Vec<T>, (c, v): (usize, &mut [T])| {
        for image in 0..images {
            let x = &x[(image * g.cin + c) * plane..][..plane];
            patch_channel(x, v, g, image, scratch);
        }
    };
    let scratch = || vec![T::zero(); patch_scratch_len(g)];
    if parallel {
        let chunks = v.par_chunks_mut(per_channel).enumerate();
        chunks.for_each_init(scratch, fill);
    } else {
        let mut scratch = scratch();
        for chunk in v.chunks_mut(per_channel).enumerate() {
            fill(&mut scratch, chunk);
        }
    }
}

/// The scratch [`patch_channel`] needs: the phase planes, a padded row and the row
/// transforms. Allocated zeroed once per parallel job and reused for the planes it handles:
/// every plane writes the same elements, so the ones it never writes stay zero.
fn patch_scratch_len(g: &Geom) -> usize {
    let (ty, tx) = tiles(g);
    let w = tx + 1;
    TILE * TILE * (ty + 1) * w + TILE * w + WINDOW * TILE * (ty * w + 1)
}

/// `B^T d` for one column (or row) `d` of a 6x6 patch, with shared subexpressions.
#[inline(always)]
fn input_1d<T: Real>(d: [T; WINDOW]) -> [T; WINDOW] {
    let [d0, d1, d2, d3, d4, d5] = d;
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    let a = d2.mul_add(-four, d4);
    let b = d1.mul_add(four, -d3);
    let c = d4 - d2;
    let e = two * (d1 - d3);
    [
        d0.mul_add(four, d2.mul_add(-five, d4)),
        a - b,
        a + b,
        c - e,
        c + e,
        d1.mul_add(four, d3.mul_add(-five, d5)),
    ]
}

/// `A^T m` for one column (or row) `m` of a 6x6 product tile.
#[inline(always)]
fn output_1d<T: Real>(m: [T; WINDOW]) -> [T; TILE] {
    let [m0, m1, m2, m3, m4, m5] = m;
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let (sum12, diff12) = (m1 + m2, m1 - m2);
    let (sum34, diff34) = (m3 + m4, m3 - m4);
    [
        m0 + sum12 + sum34,
        diff34.mul_add(two, diff12),
        sum34.mul_add(four, sum12),
        diff34.mul_add(eight, diff12) + m5,
    ]
}

/// `outs[.][i] = f([ins[0][i], .., ins[5][i]])` for `N` = 6 or 4 outputs, over the length of
/// the outputs (every input at least that long): one pass over all the streams, so the shared
/// subexpressions of `f` stay in registers. Each stream is bound to its own slice of one
/// length so that the compiler drops the bounds checks and vectorises the loop.
#[inline(always)]
fn transform_streams<T: Real, const N: usize>(
    ins: [&[T]; WINDOW],
    outs: [&mut [T]; N],
    f: impl Fn([T; WINDOW]) -> [T; N],
) {
    const { assert!(N == WINDOW || N == TILE, "a transform has 6 or 4 outputs") };
    let len = outs.iter().map(|o| o.len()).min().unwrap_or(0);
    let [i0, i1, i2, i3, i4, i5] = ins;
    let (i0, i1, i2, i3, i4, i5) = (
        &i0[..len],
        &i1[..len],
        &i2[..len],
        &i3[..len],
        &i4[..len],
        &i5[..len],
    );
    let mut outs = outs.into_iter();
    let mut next = || outs.next().map_or(&mut [][..], |o| &mut o[..len]);
    let (o0, o1, o2, o3) = (next(), next(), next(), next());
    let (o4, o5) = (next(), next());
    if N == WINDOW {
        let (o4, o5) = (&mut o4[..len], &mut o5[..len]);
        for i in 0..len {
            let r = f([i0[i], i1[i], i2[i], i3[i], i4[i], i5[i]]);
            (o0[i], o1[i], o2[i], o3[i]) = (r[0], r[1], r[2], r[3]);
            (o4[i], o5[i]) = (r[4], r[5]);
        }
    } else {
        for i in 0..len {
            let r = f([i0[i], i1[i], i2[i], i3[i], i4[i], i5[i]]);
            (o0[i], o1[i], o2[i], o3[i]) = (r[0], r[1], r[2], r[3]);
        }
    }
}

vectorized_fn! {
    /// The transformed patches `B^T d B` of one input plane `x` (`H x W`) into the rows
    /// `v[xi]` (of the channel's `36 x tiles` block) at the tiles of image `image`.
    ///
    /// The zero-padded plane is split into 16 phase planes by row and column remainder mod 4,
    /// `q[ry][rx][a][j] = padded[4a + ry][4j + rx]`, each `(ty + 1) x (tx + 1)`. Tile `(a, b)`
    /// reads padded rows `4a .. 4a + 5` and columns `4b .. 4b + 5`: row `4a + i` is row
    /// `a + i / 4` of the phase planes `i % 4`, and likewise for columns, so both halves of the
    /// transform are flat operations over whole phase planes, offset by one row or one column.
    /// `scratch` is [`patch_scratch_len`] long and zero where no earlier call of the same
    /// geometry wrote.
    fn patch_channel<T: Real>(x: &[T], v: &mut [T], g: &Geom, image: usize, scratch: &mut [T]) {
        let (ty, tx) = tiles(g);
        let w = tx + 1;
        let (phase, t) = ((ty + 1) * w, ty * w);
        let (q, rest) = scratch.split_at_mut(TILE * TILE * phase);
        let (padded, s) = rest.split_at_mut(TILE * w);
        for (y, row) in x.chunks_exact(g.w).enumerate() {
            let r = y + g.pad;
            if r >= TILE * (ty + 1) {
                break;
            }
            padded.fill(T::zero());
            let lo = g.pad.min(padded.len());
            let len = g.w.min(padded.len() - lo);
            padded[lo..lo + len].copy_from_slice(&row[..len]);
            // Row r goes to row r / 4 of the phase planes (r % 4, 0..4).
            let at = (r % TILE) * TILE * phase + (r / TILE) * w;
            let (p0, rest) = q[at..].split_at_mut(phase);
            let (p1, rest) = rest.split_at_mut(phase);
            let (p2, p3) = rest.split_at_mut(phase);
            // A zip, not indices: the compiler vectorises this form (as shuffles).
            let phases = p0.iter_mut().zip(p1.iter_mut()).zip(p2.iter_mut()).zip(p3);
            for (quad, (((p0, p1), p2), p3)) in padded.chunks_exact(TILE).zip(phases) {
                (*p0, *p1, *p2, *p3) = (quad[0], quad[1], quad[2], quad[3]);
            }
        }
        // B^T d down the rows, per column phase rx: d_i = padded row 4a + i, from the phase
        // plane (i % 4, rx) at tile row a + i / 4. s[k][rx] is ty x w, plus one spare for the
        // column shift below.
        for rx in 0..TILE {
            let d: [&[T]; WINDOW] = std::array::from_fn(|i| {
                &q[((i % TILE) * TILE + rx) * phase + (i / TILE) * w..][..t]
            });
            let mut parts = s.chunks_mut(t + 1).skip(rx).step_by(TILE);
            let outs: [&mut [T]; WINDOW] =
                std::array::from_fn(|_| parts.next().map_or(&mut [][..], |p| &mut p[..t]));
            transform_streams(d, outs, input_1d);
        }
        // (B^T d) B along the columns: e_j = column 4b + j, from s[k][j % 4] at b + j / 4.
        let n = v.len() / POS;
        let mut rows = v.chunks_mut(n).map(|row| &mut row[image * t..][..t]);
        for s in s.chunks(TILE * (t + 1)) {
            let e: [&[T]; WINDOW] =
                std::array::from_fn(|j| &s[(j % TILE) * (t + 1) + j / TILE..][..t]);
            let outs: [&mut [T]; WINDOW] =
                std::array::from_fn(|_| rows.next().unwrap_or(&mut []));
            transform_streams(e, outs, input_1d);
        }
    }
}

/// A raw pointer the 36 GEMMs share: each writes its own columns of `M`.
struct SharedMut<T>(*mut T);

// SAFETY: the GEMMs that share the pointer write disjoint elements (see `products`).
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// `M[k][xi][.] = U[xi] V[.][xi][.]` for the 36 positions.
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
        // row-major inside `u`; the rhs is `k_in x n` with rows `36 n` apart starting at
        // column `xi n` of `v`, its last element `(k_in - 1) 36 n + xi n + n - 1 < 36 k_in n`;
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
    let fill = |scratch: &mut Vec<T>, (index, out): (usize, &mut [T])| {
        let (image, k) = (index / g.cout, index % g.cout);
        let b = bias.map_or(T::zero(), |b| b[k]);
        output_channel(&m[k * POS * n..][..POS * n], out, g, image, b, scratch);
    };
    let scratch = || vec![T::zero(); (TILE * WINDOW + TILE * TILE) * tiles_per_image(g)];
    if parallel {
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each_init(scratch, fill);
    } else {
        let mut scratch = scratch();
        for chunk in out.chunks_mut(plane).enumerate() {
            fill(&mut scratch, chunk);
        }
    }
}

vectorized_fn! {
    /// One output plane `out` (`H_out x W_out`) of image `image` from its products `m`
    /// (`36 x tiles`), plus `bias`: `A^T m A` over whole planes of tiles (as in
    /// [`patch_channel`]), then the 16 outputs of each tile interleaved into the plane.
    /// `scratch` holds the intermediate planes, `(4 x 6 + 4 x 4) x tiles` elements.
    fn output_channel<T: Real>(
        m: &[T],
        out: &mut [T],
        g: &Geom,
        image: usize,
        bias: T,
        scratch: &mut [T],
    ) {
        let tx = tiles(g).1;
        let (w, t) = (tx + 1, tiles_per_image(g));
        let n = m.len() / POS;
        let r = |xi: usize| &m[xi * n + image * t..][..t];
        // A^T m down the rows: p[o][l] from r[6i + l], i = 0..6.
        let (p, y) = scratch.split_at_mut(TILE * WINDOW * t);
        for l in 0..WINDOW {
            let mut parts = p.chunks_mut(t).skip(l).step_by(WINDOW);
            let outs: [&mut [T]; TILE] =
                std::array::from_fn(|_| parts.next().unwrap_or(&mut []));
            transform_streams(std::array::from_fn(|i| r(i * WINDOW + l)), outs, output_1d);
        }
        // (A^T m) A along the columns, plus the bias: y[o][o'] from p[o][0..6].
        let with_bias = |m| output_1d(m).map(|v| v + bias);
        for (p, y) in p.chunks(WINDOW * t).zip(y.chunks_mut(TILE * t)) {
            let mut parts = y.chunks_mut(t);
            let outs: [&mut [T]; TILE] =
                std::array::from_fn(|_| parts.next().unwrap_or(&mut []));
            transform_streams(std::array::from_fn(|l| &p[l * t..][..t]), outs, with_bias);
        }
        // Output row 4a + o, column 4b + o' is y[o][o'] at tile (a, b).
        for (row, dst) in out.chunks_exact_mut(g.wo).enumerate() {
            let (a, o) = (row / TILE, row % TILE);
            let y = |col: usize| &y[(o * TILE + col) * t + a * w..][..tx];
            let (y0, y1, y2, y3) = (y(0), y(1), y(2), y(3));
            let (whole, rest) = dst.split_at_mut(g.wo / TILE * TILE);
            // A zip, not indices: the compiler vectorises this form (as shuffles).
            let tiles = y0.iter().zip(y1).zip(y2).zip(y3);
            for (quad, (((&a, &b), &c), &d)) in whole.chunks_exact_mut(TILE).zip(tiles) {
                (quad[0], quad[1], quad[2], quad[3]) = (a, b, c, d);
            }
            let last = [y0[tx - 1], y1[tx - 1], y2[tx - 1], y3[tx - 1]];
            for (v, &value) in rest.iter_mut().zip(&last) {
                *v = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{on_threads, randn, rel_err, tolerance, values};
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
        let u = transform_weights(&data(w), g);
        let out = forward_in_chunks(&data(x), &u, Some(&data(b)), g, chunk);
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
            on_threads(threads, || {
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
