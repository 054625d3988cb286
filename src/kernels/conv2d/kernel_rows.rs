//! A stride-1 conv as `k_h` GEMMs, one per kernel row, over `k_w` column-shifted copies of
//! the input: im2col with a third of the copying (for 3x3).
//!
//! Copy `dx` of input channel `c` is the zero-padded plane read from column `dx`,
//! `s[dx][c][y][x] = x_padded[c][y][x + dx]` (`H + 2 pad` rows of `W_out` columns). Kernel
//! row `dy` then reads, for output pixel `p = y W_out + x`, `s[dx][c][y + dy][x]`: the element
//! `(dx C_in + c) (H + 2 pad) W_out + dy W_out + p` of the copies, an affine function of
//! the depth index `dx C_in + c` and of `p`. So the `dy`-th GEMM's right-hand side is a
//! strided view of the copies, no further copy:
//! `out += W_dy (C_out x k_w C_in) * S_dy (k_w C_in x H_out W_out)`, with
//! `W_dy[o][dx C_in + c] = w[o][c][dy][dx]`.
//!
//! im2col writes `k_h k_w C_in H_out W_out` elements per image, these copies
//! `k_w C_in (H + 2 pad) W_out`; the GEMMs do the same multiplications, in `k_h` passes of
//! depth `k_w C_in` instead of one of depth `k_h k_w C_in`.

use rayon::prelude::*;

use super::Geom;
use crate::kernels::{matmul, min_items, vectorized_fn, Mat, Real};

/// Whether a conv takes this path: stride 1 and a kernel taller than one row (a 1x1 conv
/// needs no copy at all).
pub(super) fn applies(g: &Geom) -> bool {
    g.stride == 1 && g.kh > 1
}

/// Rows of one shifted plane: the input's rows with the padding rows above and below.
fn padded_rows(g: &Geom) -> usize {
    g.h + 2 * g.pad
}

/// Elements of the copies of one image.
pub(super) fn copies_len(g: &Geom) -> usize {
    g.kw * g.cin * padded_rows(g) * g.wo
}

/// The weights as `k_h` row-major `C_out x k_w C_in` matrices `W_dy` (see the module
/// documentation), one after the other.
pub(super) fn weight_rows<T: Real>(w: &[T], g: &Geom) -> Vec<T> {
    let depth = g.kw * g.cin;
    let mut rows = vec![T::zero(); g.kh * g.cout * depth];
    for (dy, w_dy) in rows.chunks_mut(g.cout * depth).enumerate() {
        for (o, row) in w_dy.chunks_mut(depth).enumerate() {
            for (dx, part) in row.chunks_mut(g.cin).enumerate() {
                for (c, v) in part.iter_mut().enumerate() {
                    *v = w[((o * g.cin + c) * g.kh + dy) * g.kw + dx];
                }
            }
        }
    }
    rows
}

/// `out += conv(x)` for one image `x` (`[C_in, H, W]`) into `out` (`[C_out, H_out, W_out]`),
/// with `copies` as scratch (at least [`copies_len`] elements, every one overwritten) and the
/// weights from [`weight_rows`]. `parallel`: fill the copies in parallel (the GEMMs run with
/// `gemm_par`).
pub(super) fn forward_image<T: Real>(
    x: &[T],
    w_rows: &[T],
    out: &mut [T],
    copies: &mut [T],
    g: &Geom,
    (parallel, gemm_par): (bool, gemm::Parallelism),
) {
    let (plane, depth) = (padded_rows(g) * g.wo, g.kw * g.cin);
    let copies = &mut copies[..depth * plane];
    let fill = |(i, dst): (usize, &mut [T])| {
        let (dx, c) = (i / g.cin, i % g.cin);
        shifted_plane(&x[c * g.h * g.w..][..g.h * g.w], dst, dx, g);
    };
    if parallel {
        copies
            .par_chunks_mut(plane)
            .enumerate()
            .with_min_len(min_items(plane))
            .for_each(fill);
    } else {
        copies.chunks_mut(plane).enumerate().for_each(fill);
    }
    let (m, n) = (g.cout, g.n());
    for (dy, w_dy) in w_rows.chunks(m * depth).enumerate() {
        let rhs = Mat {
            data: &copies[dy * g.wo..],
            rs: plane,
            cs: 1,
        };
        matmul(
            out,
            Mat::rows(w_dy, depth),
            rhs,
            (m, n, depth),
            true,
            gemm_par,
        );
    }
}

vectorized_fn! {
    /// Copy `dx` of one input channel `src` (`H x W`) into `dst` (`(H + 2 pad) x W_out`):
    /// `dst[y][x] = src[y - pad][x + dx - pad]`, zero where that lies outside `src`.
    fn shifted_plane<T: Real>(src: &[T], dst: &mut [T], dx: usize, g: &Geom) {
        let (w, wo, pad) = (g.w, g.wo, g.pad);
        // The output columns `lo..hi` read inside the input row.
        let lo = pad.saturating_sub(dx).min(wo);
        let hi = (w + pad).saturating_sub(dx).min(wo).max(lo);
        let (top, rest) = dst.split_at_mut(pad * wo);
        let (body, bottom) = rest.split_at_mut(g.h * wo);
        top.fill(T::zero());
        bottom.fill(T::zero());
        if wo == w && lo < hi {
            // One flat copy of the shifted plane, then zeros where it wrapped round a row
            // edge: `body[y W + x] = src[y W + x + dx - pad]`.
            let (skip, cut) = if dx < pad { (pad - dx, 0) } else { (0, dx - pad) };
            let skip = skip.min(body.len());
            let end = body.len().saturating_sub(cut).max(skip);
            let from = (skip + dx).saturating_sub(pad);
            body[..skip].fill(T::zero());
            body[end..].fill(T::zero());
            body[skip..end].copy_from_slice(&src[from..from + (end - skip)]);
            for row in body.chunks_exact_mut(wo) {
                row[..lo].fill(T::zero());
                row[hi..].fill(T::zero());
            }
        } else {
            for (row, src) in body.chunks_exact_mut(wo).zip(src.chunks_exact(w)) {
                row[..lo].fill(T::zero());
                row[hi..].fill(T::zero());
                if lo < hi {
                    row[lo..hi].copy_from_slice(&src[lo + dx - pad..][..hi - lo]);
                }
            }
        }
    }
}
