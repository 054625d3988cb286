//! Exact MAP estimates for a Gaussian prior and a linear operator, in dense f64: the
//! references MAP-GA is tested against (ALGORITHMS.md 6.1).
//!
//! The operator is turned into its matrix by applying it to every basis vector, so these work
//! for any linear operator, including compositions, at the cost of n applications and an
//! m x m solve; they refuse problems larger than [`MAX_ELEMENTS`].

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, DVector};

use super::gaussian::{flat_f64, GaussianPrior};
use crate::operators::{Operator, OperatorError};

/// The largest number of image elements (and of measurements) the dense reference accepts.
pub const MAX_ELEMENTS: usize = 4096;

/// Why an exact MAP could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ExactError {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// Applying the operator failed.
    #[error(transparent)]
    Operator(#[from] OperatorError),
    /// The problem is too large for a dense solve.
    #[error("the exact MAP is computed with dense matrices and supports up to {MAX_ELEMENTS} elements, but this problem has {0}")]
    TooLarge(usize),
    /// The operator is not linear.
    #[error("the exact MAP needs a linear operator, and {0} is not linear")]
    NotLinear(String),
    /// y has the wrong number of elements.
    #[error("y has {found} elements but the operator produces {expected}")]
    Measurement {
        /// What A(x) has.
        expected: usize,
        /// What y has.
        found: usize,
    },
}

/// The matrix of a linear operator on tensors of shape `domain` (m x n, row-major flattening).
pub fn operator_matrix(op: &Operator, domain: &[usize]) -> Result<DMatrix<f64>, ExactError> {
    let n: usize = domain.iter().product();
    if n > MAX_ELEMENTS {
        return Err(ExactError::TooLarge(n));
    }
    let mut columns = Vec::with_capacity(n);
    for i in 0..n {
        let mut e = vec![0.0f64; n];
        e[i] = 1.0;
        let col = op.apply(&Tensor::from_vec(e, domain, &Device::Cpu)?)?;
        columns.push(flat_f64(&col)?);
    }
    let m = columns.first().map_or(0, Vec::len);
    if m > MAX_ELEMENTS {
        return Err(ExactError::TooLarge(m));
    }
    Ok(DMatrix::from_fn(m, n, |r, c| columns[c][r]))
}

/// Solves M W = B for a symmetric positive semi-definite M (one column of W per column of B):
/// Cholesky when M is definite, the pseudo-inverse (eigenvalues below 1e-12 of the largest
/// dropped) otherwise.
fn solve_psd(m: DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    if let Some(ch) = m.clone().cholesky() {
        return ch.solve(b);
    }
    let eig = nalgebra::SymmetricEigen::new(m);
    let top = eig.eigenvalues.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let tol = 1e-12 * top;
    let q = &eig.eigenvectors;
    let mut c = q.transpose() * b;
    for (mut row, l) in c.row_iter_mut().zip(eig.eigenvalues.iter()) {
        if *l > tol {
            row /= *l;
        } else {
            row.fill(0.0);
        }
    }
    q * c
}

/// The maximiser of log N(y; A x, sigma_y^2 I + eps^2 A A^T) + log N(x; mu, S + eps^2 I):
/// x = mu + S_eps A^T (A S_eps A^T + sigma_y^2 I + eps^2 A A^T)^+ (y - A mu). With eps = 0 this is
/// the exact MAP (the posterior mean) of y = A x + N(0, sigma_y^2 I). The result has the prior's
/// shape and y's dtype and device.
pub fn exact_map_eps(
    prior: &GaussianPrior,
    op: &Operator,
    y: &Tensor,
    sigma_y: f64,
    eps: f64,
) -> Result<Tensor, ExactError> {
    if !op.is_linear() {
        return Err(ExactError::NotLinear(op.name()));
    }
    let a = operator_matrix(op, prior.shape())?;
    let yv = flat_f64(y)?;
    if yv.len() != a.nrows() {
        return Err(ExactError::Measurement {
            expected: a.nrows(),
            found: yv.len(),
        });
    }
    let x = solve_many(
        prior,
        &a,
        &DMatrix::from_column_slice(yv.len(), 1, &yv),
        sigma_y,
        eps,
    );
    Ok(
        Tensor::from_slice(x.as_slice(), prior.shape(), &Device::Cpu)?
            .to_dtype(y.dtype())?
            .to_device(y.device())?,
    )
}

/// [`exact_map_eps`] of one measurement, or of each item of a batch `[N, ...]` of measurements
/// (one more dimension than `A` produces), which gives the batch `[N, ...]` of their MAPs. The
/// operator's matrix and the solve's factorisation are computed once for the whole batch.
pub fn exact_map_eps_batch(
    prior: &GaussianPrior,
    op: &Operator,
    y: &Tensor,
    sigma_y: f64,
    eps: f64,
) -> Result<Tensor, ExactError> {
    if !op.is_linear() {
        return Err(ExactError::NotLinear(op.name()));
    }
    let range = op
        .apply(&Tensor::zeros(prior.shape(), DType::F64, &Device::Cpu)?)?
        .dims()
        .to_vec();
    let dims = y.dims();
    if dims.len() != range.len() + 1 || dims[1..] != range[..] {
        return exact_map_eps(prior, op, y, sigma_y, eps);
    }
    let a = operator_matrix(op, prior.shape())?;
    let (m, batch) = (a.nrows(), dims[0]);
    // Row-major [N, m] values are the column-major [m, N] matrix of the measurements.
    let ys = DMatrix::from_column_slice(m, batch, &flat_f64(y)?);
    let x = solve_many(prior, &a, &ys, sigma_y, eps);
    let mut shape = vec![batch];
    shape.extend_from_slice(prior.shape());
    Ok(Tensor::from_slice(x.as_slice(), shape, &Device::Cpu)?
        .to_dtype(y.dtype())?
        .to_device(y.device())?)
}

/// The maximisers of [`exact_map_eps`] for the measurements in the columns of `ys` (`m x N`),
/// as the columns of an `n x N` matrix.
fn solve_many(
    prior: &GaussianPrior,
    a: &DMatrix<f64>,
    ys: &DMatrix<f64>,
    sigma_y: f64,
    eps: f64,
) -> DMatrix<f64> {
    let (m, n) = a.shape();
    let mu = DVector::from_column_slice(prior.mean());
    let s_eps = prior.dense_covariance() + DMatrix::identity(n, n) * (eps * eps);
    let sa_t = &s_eps * a.transpose();
    let k = a * &sa_t
        + DMatrix::identity(m, m) * (sigma_y * sigma_y)
        + (a * a.transpose()) * (eps * eps);
    let amu = a * &mu;
    let mut r = ys.clone();
    for mut col in r.column_iter_mut() {
        col -= &amu;
    }
    let mut x = sa_t * solve_psd(k, &r);
    for mut col in x.column_iter_mut() {
        col += &mu;
    }
    x
}

/// The exact MAP of a Gaussian prior: [`exact_map_eps`] with eps = 0.
pub fn exact_map(
    prior: &GaussianPrior,
    op: &Operator,
    y: &Tensor,
    sigma_y: f64,
) -> Result<Tensor, ExactError> {
    exact_map_eps(prior, op, y, sigma_y, 0.0)
}
