//! Nearest-neighbour 2x upsampling; its backward sums each 2x2 block of the gradient.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_slice, fast_path, min_items, unsupported, Real};

/// `[B, C, H, W]` to `[B, C, 2H, 2W]`, each pixel repeated in a 2x2 block.
fn forward<T: Real>(x: &[T], h: usize, w: usize) -> Vec<T> {
    let mut out = vec![T::zero(); 4 * x.len()];
    out.par_chunks_mut(4 * h * w)
        .zip(x.par_chunks(h * w))
        .with_min_len(min_items(4 * h * w))
        .for_each(|(o, x)| {
            for (rows, src) in o.chunks_mut(4 * w).zip(x.chunks(w)) {
                let (top, bottom) = rows.split_at_mut(2 * w);
                for (pair, &v) in top.chunks_mut(2).zip(src) {
                    pair.fill(v);
                }
                bottom.copy_from_slice(top);
            }
        });
    out
}

/// The adjoint of [`forward`]: `[B, C, 2H, 2W]` to `[B, C, H, W]` by 2x2 box sums.
fn backward<T: Real>(grad: &[T], h: usize, w: usize) -> Vec<T> {
    let mut dx = vec![T::zero(); grad.len() / 4];
    dx.par_chunks_mut(h * w)
        .zip(grad.par_chunks(4 * h * w))
        .with_min_len(min_items(4 * h * w))
        .for_each(|(d, g)| {
            for (d, rows) in d.chunks_mut(w).zip(g.chunks(4 * w)) {
                let (top, bottom) = rows.split_at(2 * w);
                for ((d, t), b) in d.iter_mut().zip(top.chunks(2)).zip(bottom.chunks(2)) {
                    *d = (t[0] + t[1]) + (b[0] + b[1]);
                }
            }
        });
    dx
}

/// Which way the op runs: forward (upsampling) or the backward box sum.
struct Upsample2x {
    backward: bool,
}

impl Upsample2x {
    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = l.shape().dims4()?;
        let x = cpu_slice::<T>(s, l, "upsample_nearest2x")?;
        if self.backward {
            if h % 2 != 0 || w % 2 != 0 {
                candle_core::bail!("upsample_nearest2x backward: odd gradient size {h}x{w}")
            }
            let dx = backward(x, h / 2, w / 2);
            Ok((
                T::to_cpu_storage_owned(dx),
                Shape::from((b, c, h / 2, w / 2)),
            ))
        } else {
            let out = forward(x, h, w);
            Ok((
                T::to_cpu_storage_owned(out),
                Shape::from((b, c, 2 * h, 2 * w)),
            ))
        }
    }
}

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        if self.backward {
            "mapga-upsample-nearest2x-grad"
        } else {
            "mapga-upsample-nearest2x"
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l),
            CpuStorage::F64(_) => self.run::<f64>(s, l),
            other => Err(unsupported("upsample", other)),
        }
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = Upsample2x { backward: true };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// Nearest-neighbour upsampling of `x` (`[B, C, H, W]`) to `[B, C, 2H, 2W]`: candle's
/// `x.upsample_nearest2d(2 H, 2 W)`, differentiable in `x`.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if fast_path(x, &[]) && x.elem_count() > 0 {
        return x.contiguous()?.apply_op1(Upsample2x { backward: false });
    }
    x.upsample_nearest2d(2 * h, 2 * w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{randn, rel_err, value_and_vjp};
    use candle_core::DType;

    #[test]
    fn upsampling_matches_candle() {
        for (i, shape) in [[1, 1, 1, 1], [1, 3, 5, 7], [2, 4, 6, 3], [16, 8, 7, 7]]
            .into_iter()
            .enumerate()
        {
            for dtype in [DType::F32, DType::F64] {
                let x = randn(i as u64, &shape, dtype);
                let (out, grad) = value_and_vjp(&x, 50 + i as u64, upsample_nearest2x);
                let (want, want_grad) = value_and_vjp(&x, 50 + i as u64, |x| {
                    let (_, _, h, w) = x.dims4()?;
                    x.upsample_nearest2d(2 * h, 2 * w)
                });
                // Copies and sums of four: equal to the last bit or nearly.
                assert_eq!(rel_err(&out, &want), 0.0, "{shape:?} {dtype:?}");
                let err = rel_err(&grad, &want_grad);
                assert!(err < 1e-6, "{shape:?} {dtype:?}: grad error {err:.2e}");
            }
        }
    }

    #[test]
    fn non_contiguous_and_fallback() {
        let xt = randn(3, &[2, 3, 4, 5], DType::F32);
        let x = xt.transpose(2, 3).unwrap();
        let (out, grad) = value_and_vjp(&x, 4, upsample_nearest2x);
        let (want, want_grad) = value_and_vjp(&x, 4, |x| x.upsample_nearest2d(10, 8));
        assert_eq!(rel_err(&out, &want), 0.0);
        assert!(rel_err(&grad, &want_grad) < 1e-6);
        let xh = x.to_dtype(DType::F16).unwrap();
        let got = upsample_nearest2x(&xh).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(rel_err(&got, &xh.upsample_nearest2d(10, 8).unwrap()), 0.0);
    }
}
