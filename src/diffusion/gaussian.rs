//! The Gaussian prior N(mu, S): exact denoiser, score and consistency function.
//!
//! With S = Q diag(lambda) Q^T (Q = I for a diagonal covariance) and d = x - mu:
//!
//! * denoiser: D(x, sigma) = mu + Q diag(lambda / (lambda + sigma^2)) Q^T d (Tweedie);
//! * consistency function: the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma keeps
//!   each eigen-coordinate c of d proportional to sqrt(lambda + sigma^2), so the flow map from
//!   level t down to sigma_min is f(x, t) = mu + Q diag(sqrt((lambda + sigma_min^2) /
//!   (lambda + t^2))) Q^T d, with f(x, sigma_min) = x exactly.
//!
//! Both are affine in x and are computed with candle tensor ops, so autodiff goes through them.
//! The eigendecomposition is done once, in f64, with nalgebra.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen};

/// The consistency models' sigma_min, where f(x, t) lands.
pub const SIGMA_MIN: f64 = 0.002;
/// The most elements a dense covariance (low-rank plus diagonal) may have.
pub const MAX_DENSE: usize = 4096;
/// The largest noise level of EDM's schedules.
pub const SIGMA_MAX: f64 = 80.0;

/// A covariance matrix as the prior stores it.
#[derive(Debug, Clone)]
pub enum Covariance {
    /// Per-element variances (a diagonal matrix).
    Diagonal(Vec<f64>),
    /// A full symmetric positive semi-definite matrix, by its eigendecomposition.
    Full {
        /// Eigenvectors as columns, n x n.
        vectors: DMatrix<f64>,
        /// Eigenvalues (clamped at 0).
        values: Vec<f64>,
    },
}

/// Why a mean and covariance do not make a Gaussian prior.
#[derive(Debug, thiserror::Error)]
pub enum PriorError {
    /// The covariance has neither the mean's shape nor `[n, n]`.
    #[error("the covariance must have the mean's shape {mean:?} (a diagonal) or be a [{n}, {n}] matrix, but it is {cov:?}")]
    CovarianceShape {
        /// The mean's shape.
        mean: Vec<usize>,
        /// Its number of elements.
        n: usize,
        /// The covariance's shape.
        cov: Vec<usize>,
    },
    /// A variance or matrix entry that is negative, NaN or not symmetric.
    #[error("the covariance is not a valid covariance: {0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// The tensors of a prior in one dtype on one device.
struct Cached {
    mean: Tensor,
    lambda: Tensor,
    /// Q (n x n); `None` for a diagonal covariance.
    q: Option<Tensor>,
    qt: Option<Tensor>,
}

/// The Gaussian prior N(mean, cov) over tensors of one shape.
pub struct GaussianPrior {
    shape: Vec<usize>,
    mean: Vec<f64>,
    cov: Covariance,
    cache: Mutex<HashMap<String, std::sync::Arc<Cached>>>,
}

impl std::fmt::Debug for GaussianPrior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl GaussianPrior {
    /// The prior from a mean tensor and a covariance tensor: the mean's shape (variances) or
    /// `[n, n]` (a full matrix, symmetric to 1e-6 relative, eigenvalues clamped at 0 when
    /// they are only rounding below it).
    pub fn new(mean: &Tensor, cov: &Tensor) -> Result<Self, PriorError> {
        let shape = mean.dims().to_vec();
        let n = mean.elem_count();
        let mean_v = flat_f64(mean)?;
        let cov_dims = cov.dims().to_vec();
        let cov = if cov_dims == shape {
            let var = flat_f64(cov)?;
            if let Some(v) = var.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(PriorError::Invalid(format!(
                    "a variance is {v}; variances must be zero or positive"
                )));
            }
            Covariance::Diagonal(var)
        } else if cov_dims == [n, n] {
            let m = DMatrix::from_row_slice(n, n, &flat_f64(cov)?);
            Self::full(m)?
        } else {
            return Err(PriorError::CovarianceShape {
                mean: shape,
                n,
                cov: cov_dims,
            });
        };
        Ok(GaussianPrior {
            shape,
            mean: mean_v,
            cov,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The prior N(mean, F F^T + diag(d)) from a mean, `[n, r]` factors F and variances `d` of the
    /// mean's shape. The covariance is formed and eigendecomposed once, so n is limited to
    /// [`MAX_DENSE`] elements.
    pub fn low_rank(mean: &Tensor, factors: &Tensor, diag: &Tensor) -> Result<Self, PriorError> {
        let shape = mean.dims().to_vec();
        let n = mean.elem_count();
        let fd = factors.dims().to_vec();
        if fd.len() != 2 || fd[0] != n || diag.dims() != shape.as_slice() {
            return Err(PriorError::Invalid(format!(
                "a low-rank covariance for a {shape:?} mean needs [{n}, r] factors and {shape:?} variances, not {fd:?} and {:?}",
                diag.dims()
            )));
        }
        if n > MAX_DENSE {
            return Err(PriorError::Invalid(format!(
                "low-rank covariances are formed densely, for up to {MAX_DENSE} elements; this mean has {n}"
            )));
        }
        let d = flat_f64(diag)?;
        if let Some(v) = d.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(PriorError::Invalid(format!(
                "a variance is {v}; variances must be zero or positive"
            )));
        }
        let f = DMatrix::from_row_slice(n, fd[1], &flat_f64(factors)?);
        let m = &f * f.transpose() + DMatrix::from_diagonal(&nalgebra::DVector::from_vec(d));
        Ok(GaussianPrior {
            shape,
            mean: flat_f64(mean)?,
            cov: Self::full(m)?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Eigendecomposition of a full covariance, with its checks.
    fn full(m: DMatrix<f64>) -> Result<Covariance, PriorError> {
        let scale = m.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        if !scale.is_finite() {
            return Err(PriorError::Invalid(
                "it contains NaN or infinite entries".into(),
            ));
        }
        let asym = (&m - m.transpose())
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        if asym > 1e-6 * scale.max(f64::MIN_POSITIVE) {
            return Err(PriorError::Invalid(format!(
                "it is not symmetric (entries differ from their transposes by up to {asym:.3e})"
            )));
        }
        let sym = (&m + m.transpose()) * 0.5;
        let eig = SymmetricEigen::new(sym);
        let tol = 1e-9 * scale * m.nrows() as f64;
        if let Some(v) = eig.eigenvalues.iter().find(|v| **v < -tol) {
            return Err(PriorError::Invalid(format!(
                "it has a negative eigenvalue {v:.3e}, so it is not positive semi-definite"
            )));
        }
        Ok(Covariance::Full {
            values: eig.eigenvalues.iter().map(|v| v.max(0.0)).collect(),
            vectors: eig.eigenvectors,
        })
    }

    /// A short description, e.g. `gaussian_prior([1, 28, 28], diagonal)`.
    pub fn name(&self) -> String {
        let kind = match self.cov {
            Covariance::Diagonal(_) => "diagonal",
            Covariance::Full { .. } => "full",
        };
        format!("gaussian_prior({:?}, {kind} covariance)", self.shape)
    }

    /// The shape of the tensors the prior is over.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The mean, flattened, in f64.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The covariance.
    pub fn covariance(&self) -> &Covariance {
        &self.cov
    }

    /// The covariance as a dense f64 matrix (for exact references).
    pub fn dense_covariance(&self) -> DMatrix<f64> {
        match &self.cov {
            Covariance::Diagonal(v) => {
                DMatrix::from_diagonal(&nalgebra::DVector::from_vec(v.clone()))
            }
            Covariance::Full { vectors, values } => {
                let l = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(values.clone()));
                vectors * l * vectors.transpose()
            }
        }
    }

    /// The per-element standard deviation around the mean, sqrt(trace(S) / n): the prior's
    /// `sigma_data`.
    pub fn sigma_data(&self) -> f64 {
        let tr: f64 = match &self.cov {
            Covariance::Diagonal(v) => v.iter().sum(),
            Covariance::Full { values, .. } => values.iter().sum(),
        };
        (tr / self.mean.len().max(1) as f64).sqrt()
    }

    /// The prior's tensors in `dtype` on `device`, made once and cached.
    fn tensors(
        &self,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<std::sync::Arc<Cached>> {
        let key = format!("{dtype:?}/{:?}", device.location());
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let n = self.mean.len();
        let vec = |v: &[f64]| -> candle_core::Result<Tensor> {
            Tensor::from_slice(v, (1, v.len()), &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(device)
        };
        let (lambda, q, qt) = match &self.cov {
            Covariance::Diagonal(v) => (vec(v)?, None, None),
            Covariance::Full { vectors, values } => {
                // nalgebra is column-major: its storage is Q^T in row-major order.
                let qt = Tensor::from_slice(vectors.as_slice(), (n, n), &Device::Cpu)?
                    .to_dtype(dtype)?
                    .to_device(device)?;
                let q = qt.t()?.contiguous()?;
                (vec(values)?, Some(q), Some(qt))
            }
        };
        let c = std::sync::Arc::new(Cached {
            mean: vec(&self.mean)?,
            lambda,
            q,
            qt,
        });
        cache.insert(key, c.clone());
        Ok(c)
    }

    /// mu + Q diag(g(lambda)) Q^T (x - mu) for x of the prior's shape or a batch of them
    /// (`[B, ...shape]`), with `gain` mapping the eigenvalues to the gains.
    fn spectral(
        &self,
        x: &Tensor,
        gain: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.spectral_from(x, gain, true)
    }

    /// Q diag(g(lambda)) Q^T (x - mu), plus mu when `add_mean`.
    fn spectral_from(
        &self,
        x: &Tensor,
        gain: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        add_mean: bool,
    ) -> candle_core::Result<Tensor> {
        let c = self.tensors(x.dtype(), x.device())?;
        let n = self.mean.len();
        let dims = x.dims().to_vec();
        let batch = x.elem_count() / n.max(1);
        let d = x.reshape((batch, n))?.broadcast_sub(&c.mean)?;
        let g = gain(&c.lambda)?;
        let out = match (&c.q, &c.qt) {
            (Some(q), Some(qt)) => d.matmul(q)?.broadcast_mul(&g)?.matmul(qt)?,
            _ => d.broadcast_mul(&g)?,
        };
        let out = if add_mean {
            out.broadcast_add(&c.mean)?
        } else {
            out
        };
        out.reshape(dims)
    }

    /// The exact score of the prior smoothed to level sigma, grad log N(x; mu, S + sigma^2 I) =
    /// -Q diag(1 / (lambda + sigma^2)) Q^T (x - mu). It equals (D(x, sigma) - x) / sigma^2 but is
    /// computed without that difference, which in f32 loses most digits at small sigma.
    pub fn score(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let s2 = sigma * sigma;
        self.spectral_from(x, |l| (l + s2)?.recip()?.neg(), false)
    }

    /// log N(x; mu, S + sigma^2 I) for a batch `[B, n]` of flattened images, as `[B, 1]`;
    /// differentiable in x. Zero-variance directions are fine as long as sigma > 0.
    pub fn log_density(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let c = self.tensors(x.dtype(), x.device())?;
        let n = self.mean.len();
        let s2 = sigma * sigma;
        let lambda: Vec<f64> = match &self.cov {
            Covariance::Diagonal(v) => v.clone(),
            Covariance::Full { values, .. } => values.clone(),
        };
        let log_det: f64 = lambda.iter().map(|l| (l + s2).ln()).sum();
        let constant = -0.5 * (log_det + n as f64 * (2.0 * std::f64::consts::PI).ln());
        let d = x.broadcast_sub(&c.mean)?;
        let coeffs = match &c.q {
            Some(q) => d.matmul(q)?,
            None => d,
        };
        let quad = coeffs
            .sqr()?
            .broadcast_div(&(&c.lambda + s2)?)?
            .sum_keepdim(1)?;
        (quad * -0.5)? + constant
    }

    /// The exact denoiser D(x, sigma) = E[x0 | x0 + sigma n = x].
    pub fn denoise(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let s2 = sigma * sigma;
        self.spectral(x, |l| l.broadcast_div(&(l + s2)?))
    }

    /// The exact consistency function: the PF-ODE flow map from level `t` to `sigma_min`.
    pub fn consistency(&self, x: &Tensor, t: f64, sigma_min: f64) -> candle_core::Result<Tensor> {
        let (t2, e2) = (t * t, sigma_min * sigma_min);
        self.spectral(x, |l| ((l + e2)?.broadcast_div(&(l + t2)?))?.sqrt())
    }

    /// Checks that `x`'s trailing dimensions are the prior's shape.
    pub fn check_shape(&self, x: &Tensor) -> Result<(), String> {
        let d = x.dims();
        if d.len() < self.shape.len() || d[d.len() - self.shape.len()..] != self.shape[..] {
            return Err(format!(
                "the prior is over tensors of shape {:?}, but this one is {:?}",
                self.shape, d
            ));
        }
        Ok(())
    }
}

/// A tensor's elements in row-major order, as f64.
pub fn flat_f64(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DVector;

    fn prior_2d() -> GaussianPrior {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[[0.2f64, -0.1]]], &dev).unwrap();
        let cov = Tensor::new(&[[0.25f64, 0.2], [0.2, 0.25]], &dev).unwrap();
        GaussianPrior::new(&mean, &cov).unwrap()
    }

    #[test]
    fn denoiser_matches_the_dense_formula() {
        let p = prior_2d();
        let x = Tensor::new(&[[[1.0f64, 0.5]]], &Device::Cpu).unwrap();
        let sigma = 0.7;
        let d = flat_f64(&p.denoise(&x, sigma).unwrap()).unwrap();
        let s = p.dense_covariance();
        let mu = DVector::from_vec(vec![0.2, -0.1]);
        let xv = DVector::from_vec(vec![1.0, 0.5]);
        let k = (&s + DMatrix::identity(2, 2) * sigma * sigma)
            .try_inverse()
            .unwrap();
        let want = &mu + &s * k * (xv - &mu);
        for i in 0..2 {
            assert!((d[i] - want[i]).abs() < 1e-12, "{d:?} vs {want}");
        }
    }

    #[test]
    fn score_is_tweedie_without_cancellation() {
        let p = prior_2d();
        let x = Tensor::new(&[[[1.0f64, 0.5]]], &Device::Cpu).unwrap();
        for sigma in [0.002, 0.3, 5.0] {
            let tweedie =
                ((p.denoise(&x, sigma).unwrap() - &x).unwrap() / (sigma * sigma)).unwrap();
            let (a, b) = (
                flat_f64(&p.score(&x, sigma).unwrap()).unwrap(),
                flat_f64(&tweedie).unwrap(),
            );
            for i in 0..2 {
                assert!(
                    (a[i] - b[i]).abs() < 1e-9 * b[i].abs().max(1.0),
                    "{sigma}: {a:?} vs {b:?}"
                );
            }
        }
        // In f32 the closed form keeps its digits where D - x cancels.
        let x32 = x.to_dtype(DType::F32).unwrap();
        let s32 = flat_f64(&p.score(&x32, 0.002).unwrap()).unwrap();
        let s64 = flat_f64(&p.score(&x, 0.002).unwrap()).unwrap();
        for i in 0..2 {
            assert!(
                (s32[i] - s64[i]).abs() < 1e-5 * s64[i].abs(),
                "{s32:?} vs {s64:?}"
            );
        }
    }

    #[test]
    fn consistency_is_identity_at_sigma_min_and_follows_the_ode() {
        let p = prior_2d();
        let x = Tensor::new(&[[[1.0f64, 0.5]]], &Device::Cpu).unwrap();
        let same = flat_f64(&p.consistency(&x, SIGMA_MIN, SIGMA_MIN).unwrap()).unwrap();
        assert!((same[0] - 1.0).abs() < 1e-12 && (same[1] - 0.5).abs() < 1e-12);
        // Integrate dx/dsigma = (x - D(x, sigma)) / sigma from t = 2 down to sigma_min with
        // many RK4 steps in log sigma and compare with the closed form.
        let t = 2.0;
        let f = flat_f64(&p.consistency(&x, t, SIGMA_MIN).unwrap()).unwrap();
        let mut xs = x.clone();
        let steps = 4000;
        let (a, b) = (t.ln(), SIGMA_MIN.ln());
        let h = (b - a) / steps as f64;
        // In s = log sigma: dx/ds = x - D(x, e^s).
        let rhs = |x: &Tensor, s: f64| (x - p.denoise(x, s.exp()).unwrap()).unwrap();
        for i in 0..steps {
            let s = a + h * i as f64;
            let k1 = rhs(&xs, s);
            let k2 = rhs(&(&xs + (&k1 * (h / 2.0)).unwrap()).unwrap(), s + h / 2.0);
            let k3 = rhs(&(&xs + (&k2 * (h / 2.0)).unwrap()).unwrap(), s + h / 2.0);
            let k4 = rhs(&(&xs + (&k3 * h).unwrap()).unwrap(), s + h);
            let inc = (((k1 + (k2 * 2.0).unwrap()).unwrap() + (k3 * 2.0).unwrap()).unwrap() + k4)
                .unwrap();
            xs = (xs + (inc * (h / 6.0)).unwrap()).unwrap();
        }
        let ode = flat_f64(&xs).unwrap();
        for i in 0..2 {
            assert!((ode[i] - f[i]).abs() < 1e-9, "{ode:?} vs {f:?}");
        }
    }

    #[test]
    fn diagonal_and_full_agree_on_a_diagonal_matrix() {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[[0.1f64, 0.2, 0.3]]], &dev).unwrap();
        let var = Tensor::new(&[[[0.5f64, 0.04, 1.0]]], &dev).unwrap();
        let full = Tensor::new(
            &[[0.5f64, 0.0, 0.0], [0.0, 0.04, 0.0], [0.0, 0.0, 1.0]],
            &dev,
        )
        .unwrap();
        let (a, b) = (
            GaussianPrior::new(&mean, &var).unwrap(),
            GaussianPrior::new(&mean, &full).unwrap(),
        );
        let x = Tensor::new(&[[[1.0f64, -1.0, 0.0]]], &dev).unwrap();
        for (u, v) in [
            (a.denoise(&x, 0.3).unwrap(), b.denoise(&x, 0.3).unwrap()),
            (
                a.consistency(&x, 5.0, SIGMA_MIN).unwrap(),
                b.consistency(&x, 5.0, SIGMA_MIN).unwrap(),
            ),
        ] {
            let (u, v) = (flat_f64(&u).unwrap(), flat_f64(&v).unwrap());
            for i in 0..3 {
                assert!((u[i] - v[i]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn low_rank_plus_diagonal_equals_the_full_matrix() {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[[0.1f64, 0.2, 0.3]]], &dev).unwrap();
        let f = Tensor::new(&[[1.0f64], [0.5], [-0.5]], &dev).unwrap();
        let d = Tensor::new(&[[[0.1f64, 0.2, 0.3]]], &dev).unwrap();
        let full = Tensor::new(
            &[[1.1f64, 0.5, -0.5], [0.5, 0.45, -0.25], [-0.5, -0.25, 0.55]],
            &dev,
        )
        .unwrap();
        let (a, b) = (
            GaussianPrior::low_rank(&mean, &f, &d).unwrap(),
            GaussianPrior::new(&mean, &full).unwrap(),
        );
        let x = Tensor::new(&[[[1.0f64, -1.0, 0.0]]], &dev).unwrap();
        let (u, v) = (
            flat_f64(&a.consistency(&x, 2.0, SIGMA_MIN).unwrap()).unwrap(),
            flat_f64(&b.consistency(&x, 2.0, SIGMA_MIN).unwrap()).unwrap(),
        );
        for i in 0..3 {
            assert!((u[i] - v[i]).abs() < 1e-12);
        }
        assert!(GaussianPrior::low_rank(&mean, &d, &d).is_err());
    }

    #[test]
    fn bad_covariances_are_errors() {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[[0.0f64, 0.0]]], &dev).unwrap();
        let asym = Tensor::new(&[[1.0f64, 0.5], [0.0, 1.0]], &dev).unwrap();
        let neg = Tensor::new(&[[1.0f64, 2.0], [2.0, 1.0]], &dev).unwrap();
        let shape = Tensor::new(&[1.0f64, 2.0, 3.0], &dev).unwrap();
        assert!(GaussianPrior::new(&mean, &asym)
            .unwrap_err()
            .to_string()
            .contains("symmetric"));
        assert!(GaussianPrior::new(&mean, &neg)
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(matches!(
            GaussianPrior::new(&mean, &shape),
            Err(PriorError::CovarianceShape { .. })
        ));
    }
}
