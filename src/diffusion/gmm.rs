//! The Gaussian mixture prior sum_k w_k N(mu_k, S_k): exact denoiser, and a consistency
//! function by integrating the probability-flow ODE.
//!
//! At noise level sigma the density is sum_k w_k N(mu_k, S_k + sigma^2 I), so Tweedie's formula
//! gives the exact denoiser D(x, sigma) = sum_k r_k(x) D_k(x, sigma), where D_k is component k's
//! Gaussian denoiser and r_k(x) its posterior responsibility (a softmax of the components' log
//! densities). The consistency function has no closed form: f(x, t) integrates
//! dx/dsigma = (x - D(x, sigma)) / sigma from t down to sigma_min with classical RK4 steps
//! uniform in log sigma (at most [`ODE_STEP`] long), built from tensor ops, so autodiff goes
//! through the whole integration.

use candle_core::{Tensor, D};

use super::gaussian::{flat_f64, GaussianPrior, PriorError};

/// The largest RK4 step of the consistency function's ODE integration, in log sigma (4
/// denoiser calls per step): 43 steps from 80 down to 0.002, 25 from 1. In log sigma the flow
/// is smooth, and the tests compare with a 4096-step reference.
pub const ODE_STEP: f64 = 0.25;

/// A Gaussian mixture prior.
pub struct GmmPrior {
    weights: Vec<f64>,
    components: Vec<GaussianPrior>,
}

impl std::fmt::Debug for GmmPrior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl GmmPrior {
    /// The mixture from `[K]` weights, `[K, ...shape]` means and `[K, ...shape]` variances or
    /// `[K, n, n]` covariance matrices. Weights must be positive and sum to 1 (within 1e-6).
    pub fn new(weights: &Tensor, means: &Tensor, covs: &Tensor) -> Result<Self, PriorError> {
        let w = flat_f64(weights)?;
        let k = w.len();
        if weights.rank() != 1 || k == 0 {
            return Err(PriorError::Invalid(format!(
                "the weights must be a [K] tensor with K >= 1, not {:?}",
                weights.dims()
            )));
        }
        if let Some(bad) = w.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            return Err(PriorError::Invalid(format!(
                "a mixture weight is {bad}; weights must be positive"
            )));
        }
        let total: f64 = w.iter().sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(PriorError::Invalid(format!(
                "the mixture weights sum to {total}, not 1"
            )));
        }
        if means.dims().first() != Some(&k) || covs.dims().first() != Some(&k) {
            return Err(PriorError::Invalid(format!(
                "{k} weights, but the means are {:?} and the covariances {:?}: both must start with {k}",
                means.dims(),
                covs.dims()
            )));
        }
        let components = (0..k)
            .map(|i| GaussianPrior::new(&means.get(i)?, &covs.get(i)?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(GmmPrior {
            weights: w,
            components,
        })
    }

    /// The components, in order.
    pub fn components(&self) -> &[GaussianPrior] {
        &self.components
    }

    /// A short description.
    pub fn name(&self) -> String {
        format!(
            "gmm_prior({} components over {:?})",
            self.weights.len(),
            self.shape()
        )
    }

    /// The shape of the tensors the prior is over.
    pub fn shape(&self) -> &[usize] {
        self.components[0].shape()
    }

    /// sqrt of the mixture's mean per-element variance around its overall mean.
    pub fn sigma_data(&self) -> f64 {
        let n = self.components[0].mean().len().max(1) as f64;
        let mut overall = vec![0.0; n as usize];
        for (w, c) in self.weights.iter().zip(&self.components) {
            for (o, m) in overall.iter_mut().zip(c.mean()) {
                *o += w * m;
            }
        }
        let mut var = 0.0;
        for (w, c) in self.weights.iter().zip(&self.components) {
            let spread: f64 = c
                .mean()
                .iter()
                .zip(&overall)
                .map(|(m, o)| (m - o).powi(2))
                .sum();
            var += w * (c.sigma_data().powi(2) * n + spread);
        }
        (var / n).sqrt()
    }

    /// Checks that `x`'s trailing dimensions are the prior's shape.
    pub fn check_shape(&self, x: &Tensor) -> Result<(), String> {
        self.components[0].check_shape(x)
    }

    /// log w_k + log N(x; mu_k, S_k + sigma^2 I) of each component for a batch `[B, n]`, as
    /// `[B, K]`.
    fn component_logs(&self, flat: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let logs = self
            .weights
            .iter()
            .zip(&self.components)
            .map(|(w, c)| c.log_density(flat, sigma)? + w.ln())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&logs, 1)
    }

    /// sum_k r_k(x) g_k(x): a per-component field `g` weighted by the components' posterior
    /// responsibilities r_k(x) at level sigma, for x of the prior's shape or a batch of them.
    fn responsibility_weighted(
        &self,
        x: &Tensor,
        sigma: f64,
        g: impl Fn(&GaussianPrior, &Tensor) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let n = self.components[0].mean().len();
        let dims = x.dims().to_vec();
        let flat = x.reshape((x.elem_count() / n.max(1), n))?;
        let r = candle_nn_softmax(&self.component_logs(&flat, sigma)?)?; // [B, K]
        let fields = self
            .components
            .iter()
            .map(|c| g(c, &flat)?.unsqueeze(1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let out = r
            .unsqueeze(2)?
            .broadcast_mul(&Tensor::cat(&fields, 1)?)?
            .sum(1)?;
        out.reshape(dims)
    }

    /// The exact denoiser: responsibilities times the components' denoisers.
    pub fn denoise(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        self.responsibility_weighted(x, sigma, |c, flat| c.denoise(flat, sigma))
    }

    /// log sum_k w_k N(x; mu_k, S_k + sigma^2 I) for a batch `[B, n]`, as `[B, 1]`;
    /// differentiable in x (its gradient is the score).
    pub fn log_density(&self, flat: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        let logs = self.component_logs(flat, sigma)?;
        let max = logs.max_keepdim(D::Minus1)?.detach();
        logs.broadcast_sub(&max)?
            .exp()?
            .sum_keepdim(D::Minus1)?
            .log()?
            + max
    }

    /// The exact score sum_k r_k(x) score_k(x, sigma) (the gradient of the log of a mixture),
    /// computed without the cancellation of (D - x) / sigma^2.
    pub fn score(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        self.responsibility_weighted(x, sigma, |c, flat| c.score(flat, sigma))
    }

    /// The consistency function: RK4 in log sigma from t down to `sigma_min`.
    pub fn consistency(&self, x: &Tensor, t: f64, sigma_min: f64) -> candle_core::Result<Tensor> {
        if t <= sigma_min {
            return Ok(x.clone());
        }
        let (a, b) = (t.ln(), sigma_min.ln());
        let steps = ((a - b) / ODE_STEP).ceil().max(4.0) as usize;
        let h = (b - a) / steps as f64;
        // In s = log sigma: dx/ds = x - D(x, e^s).
        let rhs =
            |x: &Tensor, s: f64| -> candle_core::Result<Tensor> { x - self.denoise(x, s.exp())? };
        let mut x = x.clone();
        for i in 0..steps {
            let s = a + h * i as f64;
            let k1 = rhs(&x, s)?;
            let k2 = rhs(&(&x + (&k1 * (h / 2.0))?)?, s + h / 2.0)?;
            let k3 = rhs(&(&x + (&k2 * (h / 2.0))?)?, s + h / 2.0)?;
            let k4 = rhs(&(&x + (&k3 * h)?)?, s + h)?;
            let inc = (((k1 + (k2 * 2.0)?)? + (k3 * 2.0)?)? + k4)?;
            x = (x + (inc * (h / 6.0))?)?;
        }
        Ok(x)
    }
}

/// Softmax over the last dimension, stable: exp(l - max) / sum, with the max held constant
/// (it cancels, so no gradient is lost).
fn candle_nn_softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let e = logits.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn mixture() -> GmmPrior {
        let dev = Device::Cpu;
        let w = Tensor::new(&[0.3f64, 0.7], &dev).unwrap();
        let means = Tensor::new(&[[[[-1.0f64, 0.5]]], [[[1.0, -0.5]]]], &dev).unwrap();
        let covs = Tensor::new(
            &[[[0.2f64, 0.05], [0.05, 0.1]], [[0.1, 0.0], [0.0, 0.3]]],
            &dev,
        )
        .unwrap();
        GmmPrior::new(&w, &means, &covs).unwrap()
    }

    /// The exact posterior mean by brute-force quadrature on a fine grid.
    fn quadrature_denoiser(p: &GmmPrior, x: [f64; 2], sigma: f64) -> [f64; 2] {
        // (weight / (2 pi sqrt(det S)), S^-1, mean) per component, computed once.
        let parts: Vec<_> = p
            .weights
            .iter()
            .zip(&p.components)
            .map(|(w, c)| {
                let s = c.dense_covariance();
                let scale = w / (2.0 * std::f64::consts::PI * s.determinant().sqrt());
                (scale, s.try_inverse().unwrap(), [c.mean()[0], c.mean()[1]])
            })
            .collect();
        let dens = |u: f64, v: f64| -> f64 {
            parts
                .iter()
                .map(|(scale, inv, m)| {
                    let (a, b) = (u - m[0], v - m[1]);
                    let q = a * a * inv[(0, 0)] + 2.0 * a * b * inv[(0, 1)] + b * b * inv[(1, 1)];
                    scale * (-0.5 * q).exp()
                })
                .sum()
        };
        let (mut z, mut mu, mut mv) = (0.0, 0.0, 0.0);
        let steps = 600;
        let (lo, hi) = (-4.0, 4.0);
        let h = (hi - lo) / steps as f64;
        for i in 0..steps {
            for j in 0..steps {
                let (u, v) = (lo + (i as f64 + 0.5) * h, lo + (j as f64 + 0.5) * h);
                let lik =
                    (-((x[0] - u).powi(2) + (x[1] - v).powi(2)) / (2.0 * sigma * sigma)).exp();
                let wgt = dens(u, v) * lik;
                z += wgt;
                mu += wgt * u;
                mv += wgt * v;
            }
        }
        [mu / z, mv / z]
    }

    #[test]
    fn denoiser_is_the_posterior_mean() {
        let p = mixture();
        for (x, sigma) in [([0.3, 0.2], 0.5), ([-1.5, 1.0], 0.3), ([2.0, -2.0], 1.0)] {
            let xt = Tensor::new(&[[x]], &Device::Cpu).unwrap();
            let d = flat_f64(&p.denoise(&xt, sigma).unwrap()).unwrap();
            let want = quadrature_denoiser(&p, x, sigma);
            for i in 0..2 {
                assert!(
                    (d[i] - want[i]).abs() < 1e-5,
                    "{x:?} {sigma}: {d:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn consistency_matches_a_fine_integration_and_is_differentiable() {
        let p = mixture();
        let x = Tensor::new(&[[[0.4f64, -0.3]]], &Device::Cpu).unwrap();
        let t = 3.0;
        let f = flat_f64(&p.consistency(&x, t, 0.002).unwrap()).unwrap();
        // Reference: 4096 Euler-Heun steps in log sigma.
        let steps = 4096;
        let (a, b) = (t.ln(), 0.002f64.ln());
        let h = (b - a) / steps as f64;
        let mut xs = x.clone();
        for i in 0..steps {
            let s = a + h * i as f64;
            let k1 = (&xs - p.denoise(&xs, s.exp()).unwrap()).unwrap();
            let pred = (&xs + (&k1 * h).unwrap()).unwrap();
            let k2 = (&pred - p.denoise(&pred, (s + h).exp()).unwrap()).unwrap();
            xs = (xs + ((k1 + k2).unwrap() * (h / 2.0)).unwrap()).unwrap();
        }
        let r = flat_f64(&xs).unwrap();
        // RK4 with steps of at most 0.25 in log sigma integrates to about 1e-6.
        for i in 0..2 {
            assert!((f[i] - r[i]).abs() < 5e-6, "{f:?} vs {r:?}");
        }
        // The gradient of sum(f) through the integration equals a central difference.
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let out = p
            .consistency(var.as_tensor(), t, 0.002)
            .unwrap()
            .sum_all()
            .unwrap();
        let g = out.backward().unwrap();
        let g = flat_f64(g.get(var.as_tensor()).unwrap()).unwrap();
        for i in 0..2 {
            let mut e = [0.0f64; 2];
            e[i] = 1e-5;
            let dx = Tensor::new(&[[e]], &Device::Cpu).unwrap();
            let plus = p
                .consistency(&(&x + &dx).unwrap(), t, 0.002)
                .unwrap()
                .sum_all()
                .unwrap();
            let minus = p
                .consistency(&(&x - &dx).unwrap(), t, 0.002)
                .unwrap()
                .sum_all()
                .unwrap();
            let fd = (plus.to_scalar::<f64>().unwrap() - minus.to_scalar::<f64>().unwrap()) / 2e-5;
            assert!(
                (g[i] - fd).abs() < 1e-6 * fd.abs().max(1.0),
                "{g:?} vs {fd}"
            );
        }
    }

    #[test]
    fn bad_weights_are_errors() {
        let dev = Device::Cpu;
        let means = Tensor::zeros((2, 1, 1, 2), DType::F64, &dev).unwrap();
        let covs = Tensor::ones((2, 1, 1, 2), DType::F64, &dev).unwrap();
        let w = Tensor::new(&[0.5f64, 0.6], &dev).unwrap();
        assert!(GmmPrior::new(&w, &means, &covs)
            .unwrap_err()
            .to_string()
            .contains("sum"));
        let w = Tensor::new(&[1.0f64], &dev).unwrap();
        assert!(GmmPrior::new(&w, &means, &covs).is_err());
    }
}
