//! The interface of linear operators ([`LinearOperator`]) and of their SVD ([`Svd`]).

use candle_core::{DType, Device, Tensor};

use super::cg::{gram_solve_f64, pinv_f64};
use super::error::Result;
use super::separable::Separable;

/// A linear operator with its adjoint (trait object; built-ins implement it).
///
/// Images are `[C, H, W]` tensors of any float dtype on any device; the operator is
/// shape-polymorphic (a blur takes any H and W) and caches what depends on the shape. Every
/// method also takes a batch `[N, C, H, W]` of images (or measurements) and treats each item
/// on its own, with the same leading `N` in the result; shapes passed as `&[usize]`
/// (`range_shape`, `domain_shape`) are those of one image.
pub trait LinearOperator: Send + Sync + std::fmt::Debug {
    /// The name as the language writes it, e.g. `"downsample(4)"`.
    fn name(&self) -> String;

    /// The shape of `A x` for an `x` of shape `domain`, or a shape error.
    fn range_shape(&self, domain: &[usize]) -> Result<Vec<usize>>;

    /// The shape of the `x` whose image `A x` has shape `range`, or a shape error.
    fn domain_shape(&self, range: &[usize]) -> Result<Vec<usize>>;

    /// `A x`, built from candle operations (differentiable).
    fn apply(&self, x: &Tensor) -> Result<Tensor>;

    /// `A^T y`, built from candle operations (differentiable).
    fn adjoint(&self, y: &Tensor) -> Result<Tensor>;

    /// `(a A A^T + b I)^+ r`, range-shaped; exact where known (diagonal, separable SVD,
    /// Fourier), conjugate gradients otherwise (this default: batched, in f64 on the tensor's
    /// device, with the tolerance of `r`'s dtype; see `cg.rs` for the truncated pseudo-inverse
    /// when `b = 0`). The pseudo-inverse where singular (a mask with `b = 0`: zero on missing
    /// pixels).
    fn gram_solve(&self, r: &Tensor, a: f64, b: f64) -> Result<Tensor> {
        gram_solve_f64(
            &self.name(),
            &|z| self.apply(z),
            &|z| self.adjoint(z),
            r,
            (a, b),
        )
    }

    /// `A^+ y`, the minimum-norm least-squares solution of `A x = y`, domain-shaped. This
    /// default is `A^T (A A^T)^+ y` by the iterative Gram solve, in f64 on the tensor's device.
    fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        pinv_f64(&self.name(), &|z| self.apply(z), &|z| self.adjoint(z), y)
    }

    /// The SVD, when known.
    fn svd(&self) -> Option<&dyn Svd> {
        None
    }

    /// The operator as a separable one, when it is (so that compositions can fuse).
    fn separable(&self) -> Option<&Separable> {
        None
    }

    /// A measurement `y` shown as a domain-shaped image (for `save`).
    fn visualize(&self, y: &Tensor) -> Result<Tensor>;
}

/// `A = U S V^T` with the spectral coefficients stored in a DOMAIN-shaped tensor.
///
/// `vt(x)` (domain -> domain), `v(c)` (domain -> domain), `ut(y)` (range -> domain-shaped,
/// zero where a coefficient has no range component), `u(c)` (domain-shaped -> range), and
/// `singular_values(domain)` (domain-shaped, 0 for unobserved components), such that
/// `A x = u(singular_values * vt(x))`, `v(vt(x)) = x`, `ut(u(c)) = c` on the observed
/// components. This is the layout the stdlib's DDRM (`stdlib/solvers/ddrm.mapga`) relies on.
/// The maps take one image or a batch `[N, ...]` of them; `domain` is the shape of one image.
pub trait Svd {
    /// The singular values for images of shape `domain`, domain-shaped, in `dtype` on `device`.
    fn singular_values(&self, domain: &[usize], dtype: DType, device: &Device) -> Result<Tensor>;
    /// The singular values with the small ones set to 0: those below `s_min` (this default). A
    /// separable operator cuts each AXIS's values below `s_min` before multiplying them, as
    /// DDRM's official code does for its separable blurs (a product of two values above the
    /// cut is kept even when it is below it).
    fn singular_values_cut(
        &self,
        domain: &[usize],
        dtype: DType,
        device: &Device,
        s_min: f64,
    ) -> Result<Tensor> {
        let s = self.singular_values(domain, dtype, device)?;
        Ok(s.ge(s_min)?.where_cond(&s, &s.zeros_like()?)?)
    }
    /// `V^T x`: image to coefficients.
    fn vt(&self, x: &Tensor) -> Result<Tensor>;
    /// `V c`: coefficients to image.
    fn v(&self, c: &Tensor) -> Result<Tensor>;
    /// `U^T y`: a measurement to domain-shaped coefficients, for images of shape `domain`.
    fn ut(&self, y: &Tensor, domain: &[usize]) -> Result<Tensor>;
    /// `U c`: domain-shaped coefficients to a measurement.
    fn u(&self, c: &Tensor) -> Result<Tensor>;
}
