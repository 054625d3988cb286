//! The work the benchmarks time, written once over mapga's public API and shared by the
//! worker of `bench/compare_pytorch.py` (`bench/worker.rs`) and the criterion bench
//! (`benches/network.rs`).
//!
//! A [`Problem`] is box25 inpainting of a batch (the centred hole of side 25% of the width) with
//! a consistency model `cm` and a denoiser `den`, noiseless (sigma_y = 0), eps = 0.002, at the
//! level `t = 1`. Its three timed operations are the ones MAP-GA spends its time in:
//!
//! * [`Problem::forward`]: `cm(z, t)`, no gradient tracking;
//! * [`Problem::vjp`]: the gradient in `z` of `sum(cm(z, t) * v)` (a vector-Jacobian product
//!   back to the input, the weights are constants);
//! * [`Problem::iteration`]: one inner step of `std.solvers.mapga` exactly as the interpreter
//!   runs `ascend z with sgd(lr: eps^2) for iters steps { let x = cm(z, t); maximize
//!   log_likelihood(y, A, x, 0.0, eps) + log_prior(den, x, eps) }`: the CM forward, the
//!   likelihood and the prior surrogate (one denoiser forward at eps, no gradient through it),
//!   the backward to `z`, and the optimizer step, with the same library calls.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use mapga::diffusion::surrogate::{log_likelihood, log_prior};
use mapga::diffusion::Model;
use mapga::models::Network;
use mapga::operators::{center_box_mask, inpaint, Operator};
use mapga::runtime::optim::OptimizerState;
use mapga::runtime::value::OptimizerSpec;
use mapga::syntax::ast::Direction;

/// Any error, as text.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The noise level MAP-GA targets (the CM's sigma_min).
pub const EPS: f64 = 0.002;

/// The level the timed iterations run at.
pub const T: f64 = 1.0;

/// A network loaded the way `mapga run` loads a `model ... = consistency("...")` declaration.
pub fn load(path: &Path) -> Result<Model, Error> {
    Ok(Model::Network(Arc::new(Network::load(
        path,
        DType::F32,
        &Device::Cpu,
    )?)))
}

/// A seeded standard normal tensor.
pub fn normal(shape: &[usize], seed: i64) -> Result<Tensor, Error> {
    let mut g = mapga::random::generator(0, "bench", seed);
    Ok(mapga::random::normal_tensor(
        &mut g,
        shape,
        DType::F32,
        &Device::Cpu,
    )?)
}

/// One benchmark problem: the models, the operator, a measurement and the start `z`.
pub struct Problem {
    /// The consistency model.
    pub cm: Model,
    /// The denoiser of the prior term (None: forward and VJP only).
    pub den: Option<Model>,
    /// box25 inpainting.
    pub op: Operator,
    /// The measurement `A(x_true)` of a random image batch.
    pub y: Tensor,
    /// The iterate, `N(0, T^2)`.
    pub z: Tensor,
    /// The cotangent of the VJP.
    pub v: Tensor,
}

impl Problem {
    /// The problem for a batch of `batch` images of the CM's shape.
    pub fn new(cm: Model, den: Option<Model>, batch: usize) -> Result<Problem, Error> {
        let image = cm.shape().to_vec();
        let (h, w) = (image[1], image[2]);
        let shape: Vec<usize> = std::iter::once(batch).chain(image).collect();
        let op = inpaint(&center_box_mask(h, w, 0.25, DType::F32, &Device::Cpu)?)?;
        let x_true = (normal(&shape, 1)? * 0.5)?.clamp(-1f32, 1f32)?;
        let y = op.apply(&x_true)?;
        let z = (normal(&shape, 2)? * T)?;
        let v = normal(&shape, 3)?;
        Ok(Problem {
            cm,
            den,
            op,
            y,
            z,
            v,
        })
    }

    /// `cm(z, t)`.
    pub fn forward(&self) -> Result<Tensor, Error> {
        Ok(self.cm.consistency(&self.z, T)?)
    }

    /// `d/dz sum(cm(z, t) * v)`.
    pub fn vjp(&self) -> Result<Tensor, Error> {
        let var = Var::from_tensor(&self.z)?;
        let loss = (self.cm.consistency(var.as_tensor(), T)? * &self.v)?.sum_all()?;
        let grads = loss.backward()?;
        Ok(grads
            .get(var.as_tensor())
            .ok_or("no gradient reached z")?
            .clone())
    }

    /// A fresh state of MAP-GA's optimizer, `sgd(lr: sigma_y^2 + eps^2)` with sigma_y = 0.
    pub fn optimizer() -> OptimizerState {
        OptimizerState::new(OptimizerSpec::Sgd { lr: EPS * EPS })
    }

    /// One MAP-GA inner step from `z`: returns the next `z`.
    pub fn step(&self, z: &Tensor, state: &mut OptimizerState) -> Result<Tensor, Error> {
        let den = self.den.as_ref().ok_or("the iteration needs a denoiser")?;
        let var = Var::from_tensor(z)?;
        let x = self.cm.consistency(var.as_tensor(), T)?;
        let objective =
            (log_likelihood(&self.y, &self.op, &x, 0.0, EPS)? + log_prior(den, &x, EPS)?)?;
        let grads = objective.backward()?;
        let g = grads.get(var.as_tensor()).ok_or("no gradient reached z")?;
        Ok(state.step(z, g, Direction::Ascend)?)
    }

    /// One MAP-GA inner step from the problem's `z` with a fresh optimizer.
    pub fn iteration(&self) -> Result<Tensor, Error> {
        self.step(&self.z, &mut Self::optimizer())
    }

    /// `n` MAP-GA inner steps from the problem's `z` (one `ascend` block of `n` steps).
    pub fn ascend(&self, n: usize) -> Result<Tensor, Error> {
        let mut state = Self::optimizer();
        let mut z = self.z.clone();
        for _ in 0..n {
            z = self.step(&z, &mut state)?;
        }
        Ok(z)
    }
}
