//! Iterative solvers for linear operators known only through `apply` and `adjoint`: batched
//! conjugate gradients (CG) for `(a A A^T + b I) z = r`, and from it the pseudo-inverse.
//!
//! - **Batches.** `r` is one item or a batch `[N, ...]` (rank 4: a batch of images or
//!   measurements). All items iterate together, one operator call per iteration for the whole
//!   batch, each with its own step sizes and its own stopping test: an item stops (its iterate
//!   frozen) once its relative residual is small enough.
//! - **Tolerances.** Relative residual 1e-10 for f64 and 1e-6 for f32/f16/bf16 inputs; at most
//!   `clamp(2 n, 100, 5000)` iterations for `n` unknowns per item, else
//!   [`OperatorError::NotConverged`]. The residuals are the recursively updated ones of CG.
//! - **Small `b` (noiseless data) is a truncated pseudo-inverse.** Where `G = a A A^T + b I`
//!   has eigenvalues far below its largest (a blur's high frequencies under a mask, with
//!   `b = 0` or tiny), CG on it converges arbitrarily slowly (1,568 iterations did not reach
//!   1e-6 on `gaussian_blur(1.0) >> inpaint`), and those components carry only rounding noise
//!   of an f32 measurement. So the spectrum is floored at `delta = floor * lambda`, `lambda`
//!   the largest eigenvalue of `G` (power iteration) and `floor` the
//!   [`CgSettings::spectral_floor`] (1e-4 for f32, 10 eps for f64; per item of a batch, whose
//!   items may have their own maps, as a linearisation at a batch of points has). When
//!   `b >= delta > 0`, `G` is well conditioned and solved as it is; else the result is
//!   `(a A A^T + delta I)^-2 G r`, two CG solves of condition number at most `1 / floor`. Each
//!   eigen-component `d = a l + b` of `G` is scaled by `d / (a l + delta)^2`: `1 / d` to a
//!   relative error of about `2 delta / d` where `d >> delta`, and about 0 where `d << delta`, as
//!   the exact solves' hard cut does (so with `b = 0`, an `r` outside the range of `A` gets the
//!   pseudo-inverse's answer, never `1 / delta`, and a zero `A` gives zero).
//! - **`A^+ y`** is `A^T (A A^T)^+ y` through that solve.

use candle_core::{DType, Device, Tensor};

use super::error::{argument_error, OperatorError, Result};
use super::tensors::dtype_epsilon;
use crate::random::{generator, normal_tensor};

/// A linear map on tensors (one item or a batch `[N, ...]`).
pub(crate) type Map<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// The stopping rule of the iterative solvers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgSettings {
    /// The relative residual at which an item stops.
    pub tolerance: f64,
    /// The iterations after which to give up.
    pub max_iterations: usize,
    /// The relative level, of the largest eigenvalue of `a A A^T + b I`, below which the Gram
    /// solve damps the spectrum (see the module doc): 10 eps for f64, 1e-4 otherwise.
    pub spectral_floor: f64,
}

/// The spectral floor of f32 (and f16/bf16) solves: Gram eigenvalues below 1e-4 of the largest
/// (singular values below 1% of the largest) are damped. Measured on `gaussian_blur(1.0) >>
/// inpaint(box)` (28 x 28, noiseless): CG needs about 400 iterations at 1e-4, 750 at 1e-5 and
/// does not finish 1,568 at 1e-6, while MAP-GA's PSNR moves by 0.2 dB between 1e-4 and 1e-5.
/// The condition number is at most 1e4, so CG needs at most about 700 iterations. (DDRM's
/// official deblurring code cuts singular values below 3% outright.)
pub const F32_SPECTRAL_FLOOR: f64 = 1e-4;

impl CgSettings {
    /// The default rule for items of `unknowns` unknowns of `dtype`: relative residual 1e-10
    /// (f64) or 1e-6 (other dtypes), at most `clamp(2 unknowns, 100, 5000)` iterations, the
    /// spectrum floored at 10 eps (f64) or [`F32_SPECTRAL_FLOOR`] (other dtypes).
    pub fn for_dtype(dtype: DType, unknowns: usize) -> Self {
        Self {
            tolerance: if dtype == DType::F64 { 1e-10 } else { 1e-6 },
            max_iterations: (2 * unknowns).clamp(100, 5000),
            spectral_floor: if dtype == DType::F64 {
                10.0 * dtype_epsilon(dtype)
            } else {
                F32_SPECTRAL_FLOOR
            },
        }
    }
}

/// A batch view: `x` itself when it is a batch (rank 4), else `x` with a leading axis of 1.
fn as_batch(x: &Tensor) -> Result<(Tensor, bool)> {
    Ok(if x.rank() == 4 {
        (x.clone(), true)
    } else {
        (x.unsqueeze(0)?, false)
    })
}

/// The inner products `<a_i, b_i>` of the items of two batches, in f64.
fn item_dots(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let p = a.to_dtype(DType::F64)?.mul(&b.to_dtype(DType::F64)?)?;
    Ok(p.flatten_from(1)?.sum(1)?.to_vec1::<f64>()?)
}

/// Each item `x_i` of a batch times its own coefficient `c_i`.
fn scale_items(x: &Tensor, c: &[f64]) -> Result<Tensor> {
    let mut shape = vec![1usize; x.rank()];
    shape[0] = c.len();
    let c = Tensor::from_vec(c.to_vec(), shape, &Device::Cpu)?
        .to_dtype(x.dtype())?
        .to_device(x.device())?;
    Ok(x.broadcast_mul(&c)?)
}

/// `x_i + c_i p_i` for every item.
fn axpy_items(x: &Tensor, c: &[f64], p: &Tensor) -> Result<Tensor> {
    Ok(x.add(&scale_items(p, c)?)?)
}

/// Solves `g z_i = r_i` for every item of the batch `r` (`[N, ...]`), `g` symmetric positive
/// definite, by CG from `z = 0`; item `i` stops when `|r_i - g z_i| <= tolerance |r_i|`.
pub(crate) fn cg(what: &str, g: Map, r: &Tensor, settings: CgSettings) -> Result<Tensor> {
    let r0: Vec<f64> = item_dots(r, r)?.into_iter().map(f64::sqrt).collect();
    let mut active: Vec<bool> = r0.iter().map(|&v| v > 0.0).collect();
    let mut z = r.zeros_like()?;
    let mut res = r.clone();
    let mut p = r.clone();
    let mut rr: Vec<f64> = r0.iter().map(|v| v * v).collect();
    for k in 0..settings.max_iterations {
        if !active.contains(&true) {
            return Ok(z);
        }
        let gp = g(&p)?;
        let pgp = item_dots(&p, &gp)?;
        let mut alpha = vec![0.0; r0.len()];
        for i in 0..r0.len() {
            if !active[i] {
                continue;
            }
            if pgp[i].is_nan() || pgp[i] <= 0.0 {
                return Err(not_converged(what, k, rr[i].sqrt() / r0[i]));
            }
            alpha[i] = rr[i] / pgp[i];
        }
        z = axpy_items(&z, &alpha, &p)?;
        let minus: Vec<f64> = alpha.iter().map(|a| -a).collect();
        res = axpy_items(&res, &minus, &gp)?;
        let rr_new = item_dots(&res, &res)?;
        let mut beta = vec![0.0; r0.len()];
        for i in 0..r0.len() {
            if !active[i] {
                continue;
            }
            if rr_new[i].sqrt() <= settings.tolerance * r0[i] {
                active[i] = false;
            } else {
                beta[i] = rr_new[i] / rr[i];
            }
            rr[i] = rr_new[i];
        }
        p = axpy_items(&res, &beta, &p)?;
    }
    if !active.contains(&true) {
        return Ok(z);
    }
    let worst = (0..r0.len())
        .filter(|&i| active[i])
        .map(|i| rr[i].sqrt() / r0[i])
        .fold(0.0, f64::max);
    Err(not_converged(what, settings.max_iterations, worst))
}

fn not_converged(what: &str, iterations: usize, residual: f64) -> OperatorError {
    OperatorError::NotConverged {
        what: what.to_string(),
        iterations,
        residual,
    }
}

/// The iterations of the power method that estimates the largest eigenvalue of `a A A^T`.
const POWER_ITERATIONS: usize = 30;

/// Estimates (from below, typically within a few percent) of the largest eigenvalue of the
/// positive semi-definite `h` for every item of a batch shaped like `like` (each item may have
/// its own map, as a linearisation at a batch of points does), by the power method from a fixed
/// pseudo-random start, the same for every item: an item gets the same answer alone or in any
/// batch.
fn largest_eigenvalues(h: Map, like: &Tensor) -> Result<Vec<f64>> {
    let mut rng = generator(0, "gram_solve power iteration", 0);
    let item = normal_tensor(&mut rng, &like.dims()[1..], like.dtype(), like.device())?;
    let mut v = item.unsqueeze(0)?.broadcast_as(like.dims())?.contiguous()?;
    let mut lambda = vec![0.0; like.dim(0)?];
    for _ in 0..POWER_ITERATIONS {
        let vv = item_dots(&v, &v)?;
        let hv = h(&v)?;
        let vhv = item_dots(&v, &hv)?;
        let norms = item_dots(&hv, &hv)?;
        let mut scale = vec![0.0; lambda.len()];
        for i in 0..lambda.len() {
            if vv[i] > 0.0 && vv[i].is_finite() {
                lambda[i] = (vhv[i] / vv[i]).max(0.0);
            }
            if norms[i] > 0.0 && norms[i].is_finite() {
                scale[i] = 1.0 / norms[i].sqrt();
            }
        }
        v = scale_items(&hv, &scale)?;
    }
    Ok(lambda)
}

/// `(a A A^T + b I)^+ r` for `A` given by `apply` and `adjoint` (one item or a batch), in the
/// dtype of `r`: `r / b` when `a = 0`; CG when `b` is above the spectral floor; else the
/// truncated pseudo-inverse of the module doc. `a` and `b` must be zero or more.
pub(crate) fn gram_solve_iterative(
    name: &str,
    apply: Map,
    adjoint: Map,
    r: &Tensor,
    (a, b): (f64, f64),
    settings: CgSettings,
) -> Result<Tensor> {
    if !(a >= 0.0 && b >= 0.0 && a.is_finite() && b.is_finite()) {
        return Err(argument_error(
            format!("{name}.gram_solve"),
            format!("a and b must be finite and zero or more, got a = {a}, b = {b}"),
        ));
    }
    let what = format!("gram_solve of {name}");
    if a == 0.0 {
        if b == 0.0 {
            return Ok(r.zeros_like()?);
        }
        return Ok(r.affine(1.0 / b, 0.0)?);
    }
    let (batch, was_batch) = as_batch(r)?;
    let unbatch = |z: Tensor| -> Result<Tensor> { Ok(if was_batch { z } else { z.squeeze(0)? }) };
    // The maps take what the caller's `r` was: a batch, or one item.
    let h = |z: &Tensor| -> Result<Tensor> {
        let z_in = if was_batch { z.clone() } else { z.squeeze(0)? };
        let azz = apply(&adjoint(&z_in)?)?.affine(a, 0.0)?;
        Ok(if was_batch { azz } else { azz.unsqueeze(0)? })
    };
    // G = a A A^T + b I; each item's spectrum is floored at delta_i = floor * (its top).
    let g = |z: &Tensor| -> Result<Tensor> { Ok(h(z)?.add(&z.affine(b, 0.0)?)?) };
    let delta: Vec<f64> = largest_eigenvalues(&h, &batch)?
        .into_iter()
        .map(|l| settings.spectral_floor * (l + b))
        .collect();
    if b > 0.0 && delta.iter().all(|&d| b >= d) {
        return unbatch(cg(&what, &g, &batch, settings)?);
    }
    let damped = |z: &Tensor| -> Result<Tensor> {
        let shift: Vec<f64> = delta.iter().map(|&d| (d - b).max(0.0)).collect();
        Ok(g(z)?.add(&scale_items(z, &shift)?)?)
    };
    let v = cg(&what, &damped, &g(&batch)?, settings)?;
    unbatch(cg(&what, &damped, &v, settings)?)
}

/// `A^+ y = A^T (A A^T)^+ y`, through [`gram_solve_iterative`] with `b = 0`, in the dtype of `y`.
pub(crate) fn pinv_iterative(
    name: &str,
    apply: Map,
    adjoint: Map,
    y: &Tensor,
    settings: CgSettings,
) -> Result<Tensor> {
    let z = gram_solve_iterative(name, apply, adjoint, y, (1.0, 0.0), settings).map_err(
        |e| match e {
            OperatorError::NotConverged {
                what,
                iterations,
                residual,
            } => not_converged(
                &what.replacen("gram_solve", "pinv", 1),
                iterations,
                residual,
            ),
            other => other,
        },
    )?;
    adjoint(&z)
}
/// [`gram_solve_iterative`] in f64, with the tolerance of `r`'s dtype (in f32 the CG
/// recurrences lose orthogonality before reaching 1e-6 on stiff problems). The maps' results
/// are converted to f64, so a map that keeps its own dtype (a user function) works too.
pub(crate) fn gram_solve_f64(
    name: &str,
    apply: Map,
    adjoint: Map,
    r: &Tensor,
    ab: (f64, f64),
) -> Result<Tensor> {
    let apply64 = |z: &Tensor| -> Result<Tensor> { Ok(apply(z)?.to_dtype(DType::F64)?) };
    let adjoint64 = |z: &Tensor| -> Result<Tensor> { Ok(adjoint(z)?.to_dtype(DType::F64)?) };
    in_f64(r, |r, settings| {
        gram_solve_iterative(name, &apply64, &adjoint64, r, ab, settings)
    })
}

/// [`pinv_iterative`] in f64, with the tolerance of `y`'s dtype.
pub(crate) fn pinv_f64(name: &str, apply: Map, adjoint: Map, y: &Tensor) -> Result<Tensor> {
    let apply64 = |z: &Tensor| -> Result<Tensor> { Ok(apply(z)?.to_dtype(DType::F64)?) };
    let adjoint64 = |z: &Tensor| -> Result<Tensor> { Ok(adjoint(z)?.to_dtype(DType::F64)?) };
    in_f64(y, |y, settings| {
        pinv_iterative(name, &apply64, &adjoint64, y, settings)
    })
}

/// `f` computed in f64: the input is converted to f64 on its device and the result back to
/// the input's dtype; the tolerances stay those of the input's dtype, the iteration cap that
/// of one item (of a batch `[N, ...]`, or of `x` itself).
pub(crate) fn in_f64(
    x: &Tensor,
    f: impl FnOnce(&Tensor, CgSettings) -> Result<Tensor>,
) -> Result<Tensor> {
    let items = if x.rank() == 4 { x.dim(0)?.max(1) } else { 1 };
    let settings = CgSettings::for_dtype(x.dtype(), x.elem_count() / items);
    Ok(f(&x.to_dtype(DType::F64)?, settings)?.to_dtype(x.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::super::builtin::{gaussian_blur, inpaint};
    use super::super::mask::rows_mask;
    use super::super::operator::Operator;
    use super::super::testing::{dense, randn, values};
    use super::*;
    use nalgebra::{DVector, SymmetricEigen};

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `gaussian_blur(1.0) >> inpaint(rows)` on 16 x 16: non-zero Gram eigenvalues from 1 down
    /// to below the f32 floor, the kind of case that stalled CG at 1,568 iterations.
    fn blur_then_mask() -> Operator {
        let mask = ok(rows_mask(16, 16, 3, 1, DType::F64, &Device::Cpu));
        Operator::compose(&ok(gaussian_blur(1.0, 0)), &ok(inpaint(&mask)))
    }

    #[test]
    fn an_ill_conditioned_f32_solve_finishes_and_is_exact_above_the_floor() {
        let op = blur_then_mask();
        let a = dense(|t| op.apply(t), &[1, 16, 16]);
        let (alpha, b) = (2.0, 0.0);
        let h = &a * a.transpose() * alpha;
        let e = SymmetricEigen::new(h.clone());
        let top = e.eigenvalues.max();
        let smallest = e
            .eigenvalues
            .iter()
            .filter(|&&l| l > 1e-12 * top)
            .fold(top, |m, &l| m.min(l));
        assert!(smallest < 1e-4 * top, "the case is not ill-conditioned");
        // The mask keeps the shape; the dropped rows are the null space of A^T.
        let range = [1, 16, 16];
        let r = ok(randn(&range, 4).to_dtype(DType::F32).map_err(Into::into));
        let got = ok(op.gram_solve(&r, alpha, b));
        assert_eq!(got.dtype(), DType::F32);
        let (rv, gv) = (
            DVector::from_vec(values(&r)),
            DVector::from_vec(values(&got)),
        );
        let floor = F32_SPECTRAL_FLOOR * top;
        for (k, &l) in e.eigenvalues.iter().enumerate() {
            let u = e.eigenvectors.column(k);
            let (rk, zk) = (u.dot(&rv), u.dot(&gv));
            if l > 100.0 * floor {
                // Well above the floor: the pseudo-inverse damped by l^2 / (l + floor)^2, a
                // relative change of at most 2%, to f32 accuracy.
                let want = rk * l / (l + floor).powi(2);
                assert!(
                    (zk - want).abs() <= 3e-3 * want.abs() + 1e-4 * rv.norm() / l,
                    "component {k} (eigenvalue {l:.3e}): {zk} vs {want}"
                );
            } else if l < floor / 100.0 {
                // Far below: damped towards zero, never amplified by 1 / l.
                assert!(
                    zk.abs() <= 2.0 * rk.abs() * l / (floor * floor) + 1e-3 * rv.norm() / floor,
                    "component {k} (eigenvalue {l:.3e}) amplified: {zk}"
                );
            }
        }
    }

    #[test]
    fn a_noiseless_solve_ignores_what_lies_outside_the_range() {
        // r in the null space of A^T (pixels the mask drops are not in the range here, so use
        // a rank-deficient sum: A = blur - blur has A^T = 0): the pseudo-inverse gives 0.
        let blur = ok(gaussian_blur(1.0, 0));
        let zero = Operator::difference(&blur, &blur);
        let r = randn(&[1, 8, 8], 5);
        let got = values(&ok(zero.gram_solve(&r, 1.0, 0.0)));
        assert!(got.iter().all(|v| v.abs() < 1e-12), "{got:?}");
        let x = values(&ok(zero.pinv(&r)));
        assert!(x.iter().all(|v| v.abs() < 1e-12));
    }

    #[test]
    fn a_batch_solves_each_item_on_its_own() {
        let op = blur_then_mask();
        let batch = ok(randn(&[3, 1, 16, 16], 6)
            .to_dtype(DType::F32)
            .map_err(Into::into));
        let together = values(&ok(op.gram_solve(&batch, 1e-3, 0.0)));
        for i in 0..3 {
            let item = ok(batch.get(i).map_err(Into::into));
            let alone = values(&ok(op.gram_solve(&item, 1e-3, 0.0)));
            let part = &together[i * alone.len()..(i + 1) * alone.len()];
            let scale = alone.iter().map(|v| v.abs()).fold(0.0, f64::max);
            for (p, q) in part.iter().zip(&alone) {
                assert!((p - q).abs() <= 1e-5 * scale, "item {i}: {p} vs {q}");
            }
        }
    }
}
