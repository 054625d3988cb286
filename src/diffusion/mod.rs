//! Diffusion building blocks: noise schedules, models of the image distribution (analytic
//! priors and trained networks, [`crate::models::Network`]), the differentiable log-density
//! surrogates MAP-GA climbs, and the exact MAP references used by the tests.
//!
//! Conventions are EDM's (Karras et al. 2022): x_sigma = x_0 + sigma n, images in [-1, 1].

pub mod exact;
pub mod gaussian;
pub mod gmm;
pub mod nfe;
pub mod ode;
pub mod schedule;
pub mod surrogate;

use std::sync::Arc;

use candle_core::Tensor;

use crate::models::Network;
pub use gaussian::GaussianPrior;
pub use gmm::GmmPrior;
pub use ode::OdeConsistency;

/// A model of the image distribution, as the language's `Denoiser`, `Consistency` and `Prior`
/// values hold it. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Model {
    /// A Gaussian prior: exact denoiser and consistency function.
    Gaussian(Arc<GaussianPrior>),
    /// A Gaussian mixture: exact denoiser, consistency function by ODE integration.
    Mixture(Arc<GmmPrior>),
    /// A consistency function made from a denoiser by integrating its PF-ODE.
    Ode(Arc<OdeConsistency>),
    /// A trained network (EDM denoiser or consistency model) loaded with its card.
    Network(Arc<Network>),
}

/// A network error as a tensor-library error, for the `candle_core::Result` methods.
fn net_err(e: crate::models::ModelError) -> candle_core::Error {
    match e {
        crate::models::ModelError::Tensor(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

impl Model {
    /// Counts a call on `x` as network evaluations ([`nfe`]); a consistency function made from
    /// a denoiser's ODE counts the denoiser calls it makes instead.
    fn count(&self, x: &Tensor) {
        if !matches!(self, Model::Ode(_)) {
            nfe::record_tensor(x, self.shape());
        }
    }

    /// A short description for messages.
    pub fn name(&self) -> String {
        match self {
            Model::Gaussian(p) => p.name(),
            Model::Mixture(p) => p.name(),
            Model::Ode(f) => f.name(),
            Model::Network(n) => format!("network `{}`", n.card().name),
        }
    }

    /// The shape of the images the model works on.
    pub fn shape(&self) -> &[usize] {
        match self {
            Model::Gaussian(p) => p.shape(),
            Model::Mixture(p) => p.shape(),
            Model::Ode(f) => f.denoiser().shape(),
            Model::Network(n) => n.shape(),
        }
    }

    /// The data's standard deviation (EDM's sigma_data).
    pub fn sigma_data(&self) -> f64 {
        match self {
            Model::Gaussian(p) => p.sigma_data(),
            Model::Mixture(p) => p.sigma_data(),
            Model::Ode(f) => f.denoiser().sigma_data(),
            Model::Network(n) => n.sigma_data(),
        }
    }

    /// The smallest noise level: where a consistency function lands.
    pub fn sigma_min(&self) -> f64 {
        match self {
            Model::Gaussian(_) | Model::Mixture(_) => gaussian::SIGMA_MIN,
            Model::Ode(f) => f.denoiser().sigma_min(),
            Model::Network(n) => n.sigma_min(),
        }
    }

    /// The largest noise level the model is meant for.
    pub fn sigma_max(&self) -> f64 {
        match self {
            Model::Gaussian(_) | Model::Mixture(_) => gaussian::SIGMA_MAX,
            Model::Ode(f) => f.denoiser().sigma_max(),
            Model::Network(n) => n.sigma_max(),
        }
    }

    /// Checks that `x` is an image (or a batch of images) of the model's shape.
    pub fn check_input(&self, x: &Tensor) -> Result<(), String> {
        match self {
            Model::Gaussian(p) => p.check_shape(x),
            Model::Mixture(p) => p.check_shape(x),
            Model::Ode(f) => f.denoiser().check_input(x),
            Model::Network(n) => n.check_input(x).map_err(|e| e.to_string()),
        }
    }

    /// The denoiser D(x, sigma), differentiable in x.
    pub fn denoise(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        self.count(x);
        match self {
            Model::Gaussian(p) => p.denoise(x, sigma),
            Model::Mixture(p) => p.denoise(x, sigma),
            Model::Ode(f) => f.denoiser().denoise(x, sigma),
            Model::Network(n) => n.denoise(x, sigma).map_err(net_err),
        }
    }

    /// The score grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2 (Tweedie), differentiable in x.
    /// Analytic priors compute it in closed form, free of the cancellation in D - x.
    pub fn score(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Tensor> {
        self.count(x);
        match self {
            Model::Gaussian(p) => p.score(x, sigma),
            Model::Mixture(p) => p.score(x, sigma),
            Model::Ode(f) => f.denoiser().score(x, sigma),
            Model::Network(n) => {
                let d = n.denoise(x, sigma).map_err(net_err)?;
                (d - x)? / (sigma * sigma)
            }
        }
    }

    /// log p_sigma(x), the log-density of the model's images noised to level sigma, summed
    /// over a batch; differentiable in x. Known in closed form for analytic priors only
    /// (`None` for trained networks).
    pub fn log_density(&self, x: &Tensor, sigma: f64) -> candle_core::Result<Option<Tensor>> {
        if let Model::Network(_) = self {
            return Ok(None);
        }
        let n: usize = self.shape().iter().product();
        let flat = x.reshape((x.elem_count() / n.max(1), n))?;
        Ok(Some(match self {
            Model::Gaussian(p) => p.log_density(&flat, sigma)?.sum_all()?,
            Model::Mixture(p) => p.log_density(&flat, sigma)?.sum_all()?,
            Model::Ode(f) => return f.denoiser().log_density(x, sigma),
            Model::Network(_) => return Ok(None),
        }))
    }

    /// log p_sigma(x) of each row of a `[B, n]` batch of flattened images, as `[B, 1]`;
    /// `None` for trained networks.
    pub fn log_density_each(
        &self,
        flat: &Tensor,
        sigma: f64,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match self {
            Model::Gaussian(p) => p.log_density(flat, sigma)?,
            Model::Mixture(p) => p.log_density(flat, sigma)?,
            Model::Ode(f) => return f.denoiser().log_density_each(flat, sigma),
            Model::Network(_) => return Ok(None),
        }))
    }

    /// The analytic Gaussian components of the model (one for a Gaussian prior), for
    /// references and plots; empty for trained networks.
    pub fn gaussians(&self) -> Vec<&GaussianPrior> {
        match self {
            Model::Gaussian(p) => vec![p.as_ref()],
            Model::Mixture(p) => p.components().iter().collect(),
            Model::Ode(f) => f.denoiser().gaussians(),
            Model::Network(_) => Vec::new(),
        }
    }

    /// The consistency function f(x, t), differentiable in x.
    pub fn consistency(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        self.count(x);
        match self {
            Model::Gaussian(p) => p.consistency(x, t, self.sigma_min()),
            Model::Mixture(p) => p.consistency(x, t, self.sigma_min()),
            Model::Ode(f) => f.consistency(x, t),
            Model::Network(n) => n.consistency(x, t).map_err(net_err),
        }
    }

    /// The Gaussian prior, when the model is one (for exact references).
    pub fn as_gaussian(&self) -> Option<&GaussianPrior> {
        match self {
            Model::Gaussian(p) => Some(p),
            Model::Mixture(_) | Model::Ode(_) => None,
            Model::Network(_) => None,
        }
    }
}
