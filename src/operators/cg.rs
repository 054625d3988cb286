//! Iterative solvers for linear operators known only through `apply` and `adjoint`:
//! conjugate gradients (CG) for `(a A A^T + b I) z = r` with `b > 0`, and CGLS (CG on the
//! normal equations, started at zero) for the minimum-norm least-squares solution `A^+ y`.
//!
//! Tolerances: the relative residual must fall to 1e-10 for f64 and 1e-6 for f32/f16/bf16
//! inputs; at most `clamp(2 n, 100, 5000)` iterations for `n` unknowns, else
//! [`OperatorError::NotConverged`]. The residuals are the recursively updated ones of CG.

use candle_core::{DType, Tensor};

use super::error::{argument_error, OperatorError, Result};
use super::tensors::{dot, norm};

/// A linear map on tensors.
pub(crate) type Map<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// The stopping rule of the iterative solvers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CgSettings {
    /// The relative residual at which to stop.
    pub tolerance: f64,
    /// The iterations after which to give up.
    pub max_iterations: usize,
}

impl CgSettings {
    /// The default rule for `unknowns` unknowns of `dtype`: relative residual 1e-10 (f64)
    /// or 1e-6 (other dtypes), at most `clamp(2 unknowns, 100, 5000)` iterations.
    pub fn for_dtype(dtype: DType, unknowns: usize) -> Self {
        Self {
            tolerance: if dtype == DType::F64 { 1e-10 } else { 1e-6 },
            max_iterations: (2 * unknowns).clamp(100, 5000),
        }
    }
}

/// `x + alpha * p`.
fn axpy(x: &Tensor, alpha: f64, p: &Tensor) -> Result<Tensor> {
    Ok(x.add(&p.affine(alpha, 0.0)?)?)
}

/// Solves `g z = r` for a symmetric positive definite `g` by CG from `z = 0`.
pub(crate) fn cg(what: &str, g: Map, r: &Tensor, settings: CgSettings) -> Result<Tensor> {
    let r0 = norm(r)?;
    let mut z = r.zeros_like()?;
    if r0 == 0.0 {
        return Ok(z);
    }
    let mut res = r.clone();
    let mut p = r.clone();
    let mut rr = r0 * r0;
    for k in 0..settings.max_iterations {
        let gp = g(&p)?;
        let pgp = dot(&p, &gp)?;
        if pgp.is_nan() || pgp <= 0.0 {
            return Err(not_converged(what, k, rr.sqrt() / r0));
        }
        let alpha = rr / pgp;
        z = axpy(&z, alpha, &p)?;
        res = axpy(&res, -alpha, &gp)?;
        let rr_new = dot(&res, &res)?;
        if rr_new.sqrt() <= settings.tolerance * r0 {
            return Ok(z);
        }
        p = axpy(&res, rr_new / rr, &p)?;
        rr = rr_new;
    }
    Err(not_converged(what, settings.max_iterations, rr.sqrt() / r0))
}

/// The minimum-norm least-squares solution of `A x = y` by CGLS from `x = 0`; stops when
/// `|A^T (y - A x)| <= tolerance |A^T y|`.
pub(crate) fn cgls(
    what: &str,
    apply: Map,
    adjoint: Map,
    y: &Tensor,
    settings: CgSettings,
) -> Result<Tensor> {
    let s = adjoint(y)?;
    let s0 = norm(&s)?;
    let mut x = s.zeros_like()?;
    if s0 == 0.0 {
        return Ok(x);
    }
    let mut r = y.clone();
    let mut p = s.clone();
    let mut gamma = s0 * s0;
    for k in 0..settings.max_iterations {
        let q = apply(&p)?;
        let qq = dot(&q, &q)?;
        if qq.is_nan() || qq <= 0.0 {
            return Err(not_converged(what, k, gamma.sqrt() / s0));
        }
        let alpha = gamma / qq;
        x = axpy(&x, alpha, &p)?;
        r = axpy(&r, -alpha, &q)?;
        let s = adjoint(&r)?;
        let gamma_new = dot(&s, &s)?;
        if gamma_new.sqrt() <= settings.tolerance * s0 {
            return Ok(x);
        }
        p = axpy(&s, gamma_new / gamma, &p)?;
        gamma = gamma_new;
    }
    Err(not_converged(
        what,
        settings.max_iterations,
        gamma.sqrt() / s0,
    ))
}

fn not_converged(what: &str, iterations: usize, residual: f64) -> OperatorError {
    OperatorError::NotConverged {
        what: what.to_string(),
        iterations,
        residual,
    }
}

/// `(a A A^T + b I)^+ r` for `A` given by `apply` and `adjoint`, computed in the dtype of `r`:
/// `r / b` when `a = 0`; CG when `b > 0`; and `(A^+)^T A^+ r / a` by two CGLS solves when
/// `b = 0` (the pseudo-inverse, also for `r` outside the range of `A`). `a` and `b` must be
/// zero or more.
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
    if b > 0.0 {
        let g = |z: &Tensor| -> Result<Tensor> {
            let azz = apply(&adjoint(z)?)?;
            Ok(azz.affine(a, 0.0)?.add(&z.affine(b, 0.0)?)?)
        };
        return cg(&what, &g, r, settings);
    }
    let w = cgls(&what, apply, adjoint, r, settings)?;
    let z = cgls(&what, adjoint, apply, &w, settings)?;
    Ok(z.affine(1.0 / a, 0.0)?)
}

/// `A^+ y` by CGLS, in the dtype of `y`.
pub(crate) fn pinv_iterative(
    name: &str,
    apply: Map,
    adjoint: Map,
    y: &Tensor,
    settings: CgSettings,
) -> Result<Tensor> {
    cgls(&format!("pinv of {name}"), apply, adjoint, y, settings)
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
/// the input's dtype; the tolerances stay those of the input's dtype.
pub(crate) fn in_f64(
    x: &Tensor,
    f: impl FnOnce(&Tensor, CgSettings) -> Result<Tensor>,
) -> Result<Tensor> {
    let settings = CgSettings::for_dtype(x.dtype(), x.elem_count());
    Ok(f(&x.to_dtype(DType::F64)?, settings)?.to_dtype(x.dtype())?)
}
