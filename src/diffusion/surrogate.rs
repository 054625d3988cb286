//! Differentiable surrogates of the log-densities MAP-GA climbs (ALGORITHMS.md 2.3-2.5).
//!
//! Each returns a 0-dimensional tensor whose *gradient* in x is exact; the value is the
//! log-density up to a constant that does not depend on x. Both use the stop-gradient trick:
//! a term `dot(stop_grad(g), x)` has the gradient `g` in x and no gradient through `g`.

use candle_core::Tensor;

use super::Model;
use crate::operators::{Operator, OperatorError};

/// Why a surrogate could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum SurrogateError {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The operator failed (shape, Gram solve).
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// sigma_y = eps = 0: the likelihood is a point mass.
    #[error("log_likelihood needs sigma_y > 0 or eps > 0: with both 0 the likelihood is a point mass and has no gradient")]
    Degenerate,
}

/// log p_eps(x), the prior's log-density at noise level eps, whose gradient in x is the score
/// (D(x, eps) - x) / eps^2. For an analytic prior it is the exact log-density. For a trained
/// denoiser no density is known: the value is 0 and only the gradient is meaningful, through
/// the stop-gradient trick sum(stop_grad(score) * (x - stop_grad(x))), so no gradient flows
/// through D, as in MAP-GA's Algorithm 2.
pub fn log_prior(model: &Model, x: &Tensor, eps: f64) -> Result<Tensor, SurrogateError> {
    if let Some(exact) = model.log_density(x, eps)? {
        // The exact density stands for one call of the denoiser (whose score it differentiates),
        // with no backward pass through a network.
        super::nfe::record_tensor_forward(x, model.shape());
        return Ok(exact);
    }
    let x0 = x.detach();
    let score = model.score(&x0, eps)?.detach();
    Ok((score * (x - &x0)?)?.sum_all()?)
}

/// log N(y; A x, sigma_y^2 I + eps^2 J J^T) up to a constant, with J = A for a linear A and the
/// Jacobian of A at x otherwise (the linearisation of ALGORITHMS.md 2.4).
///
/// With r = y - A(x) and w = stop_grad(K^-1 r), the value -<r, w> + <stop_grad(r), w> / 2 equals
/// -r^T K^-1 r / 2 and its gradient in x is J^T K^-1 r, the paper's Eq. 17.
pub fn log_likelihood(
    y: &Tensor,
    op: &Operator,
    x: &Tensor,
    sigma_y: f64,
    eps: f64,
) -> Result<Tensor, SurrogateError> {
    if sigma_y == 0.0 && eps == 0.0 {
        return Err(SurrogateError::Degenerate);
    }
    let r = (y - op.apply(x)?)?;
    let r0 = r.detach();
    let (a, b) = (eps * eps, sigma_y * sigma_y);
    let w = if op.is_linear() {
        op.gram_solve(&r0, a, b)?
    } else {
        op.linearise(&x.detach())?.solve(&r0, a, b)?
    }
    .detach();
    let quad = (&r * &w)?.sum_all()?;
    let half = ((&r0 * &w)?.sum_all()? * 0.5)?;
    Ok((half - quad)?)
}
