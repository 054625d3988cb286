//! A consistency function made from any denoiser by integrating the probability-flow ODE:
//! `ode_consistency(denoiser, steps)`.
//!
//! f(x, t) integrates dx/dsigma = (x - D(x, sigma)) / sigma from sigma = t down to sigma_min on
//! a Karras grid (rho = 7) of `steps` steps: Heun's method for every step but the last, which
//! is an Euler step (2 steps - 1 calls of D, EDM's sampler without its final jump to 0). The
//! steps are tensor ops, so autodiff goes through the whole integration, and MAP-GA runs with
//! any denoiser and no distilled consistency model.

use candle_core::Tensor;

use super::schedule::karras;
use super::Model;

/// The flow map of a denoiser's probability-flow ODE, by Heun steps.
#[derive(Debug)]
pub struct OdeConsistency {
    denoiser: Model,
    steps: usize,
}

impl OdeConsistency {
    /// The consistency function of `denoiser` with `steps` ODE steps (at least 1).
    pub fn new(denoiser: Model, steps: usize) -> Self {
        OdeConsistency {
            denoiser,
            steps: steps.max(1),
        }
    }

    /// The denoiser it integrates.
    pub fn denoiser(&self) -> &Model {
        &self.denoiser
    }

    /// A short description.
    pub fn name(&self) -> String {
        format!(
            "ode_consistency({}, steps: {})",
            self.denoiser.name(),
            self.steps
        )
    }

    /// f(x, t): from level t down to the denoiser's sigma_min.
    pub fn consistency(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        let sigma_min = self.denoiser.sigma_min();
        if t <= sigma_min {
            return Ok(x.clone());
        }
        let grid = karras(sigma_min, t, self.steps + 1, 7.0);
        let slope = |x: &Tensor, s: f64| -> candle_core::Result<Tensor> {
            (x - self.denoiser.denoise(x, s)?)? / s
        };
        let mut x = x.clone();
        for (i, w) in grid.windows(2).enumerate() {
            let (s, next) = (w[0], w[1]);
            let d = slope(&x, s)?;
            let euler = (&x + (&d * (next - s))?)?;
            x = if i + 1 == self.steps {
                euler
            } else {
                let d_next = slope(&euler, next)?;
                (&x + ((d + d_next)? * ((next - s) / 2.0))?)?
            };
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::gaussian::{flat_f64, GaussianPrior};
    use candle_core::Device;
    use std::sync::Arc;

    fn prior() -> Model {
        let dev = Device::Cpu;
        let mean = Tensor::new(&[[[0.2f64, -0.1, 0.4]]], &dev).unwrap();
        let var = Tensor::new(&[[[0.25f64, 0.04, 0.5]]], &dev).unwrap();
        Model::Gaussian(Arc::new(GaussianPrior::new(&mean, &var).unwrap()))
    }

    #[test]
    fn converges_to_the_exact_flow_map() {
        let p = prior();
        let x = Tensor::new(&[[[1.5f64, -2.0, 0.3]]], &Device::Cpu).unwrap();
        let exact = flat_f64(&p.consistency(&x, 10.0).unwrap()).unwrap();
        let err = |steps| {
            let f = OdeConsistency::new(p.clone(), steps);
            let v = flat_f64(&f.consistency(&x, 10.0).unwrap()).unwrap();
            v.iter()
                .zip(&exact)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        };
        let (coarse, fine) = (err(18), err(72));
        assert!(fine < 1e-3, "72 steps: error {fine}");
        // Heun is second order: four times the steps, about sixteen times less error.
        assert!(coarse / fine > 8.0, "18 steps {coarse}, 72 steps {fine}");
        let same = OdeConsistency::new(p, 5).consistency(&x, 0.002).unwrap();
        assert_eq!(flat_f64(&same).unwrap(), flat_f64(&x).unwrap());
    }

    #[test]
    fn is_differentiable_through_the_steps() {
        let f = OdeConsistency::new(prior(), 6);
        let x = Tensor::new(&[[[0.5f64, -0.5, 1.0]]], &Device::Cpu).unwrap();
        let var = candle_core::Var::from_tensor(&x).unwrap();
        let out = f
            .consistency(var.as_tensor(), 3.0)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let g = flat_f64(out.backward().unwrap().get(var.as_tensor()).unwrap()).unwrap();
        for i in 0..3 {
            let mut e = [0.0f64; 3];
            e[i] = 1e-6;
            let dx = Tensor::new(&[[e]], &Device::Cpu).unwrap();
            let value = |x: &Tensor| {
                f.consistency(x, 3.0)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let fd = (value(&(&x + &dx).unwrap()) - value(&(&x - &dx).unwrap())) / 2e-6;
            assert!(
                (g[i] - fd).abs() < 1e-6 * fd.abs().max(1.0),
                "{g:?} vs {fd}"
            );
        }
    }
}
