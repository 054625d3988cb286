//! Forward operators `A`: how a measurement `y = A(x) + noise` was made from an image `x`.
//!
//! Operators act on `[C, H, W]` tensors (f32 or f64, any device) and are shape-polymorphic:
//! what depends on the shape (per-axis matrices, their SVDs, mask tensors) is computed on
//! first use for each shape, dtype and device and cached inside the operator.
//!
//! - [`Operator`] is what the language's `Operator` values hold: a [`LinearOperator`], a
//!   [`Pointwise`] map, a user function, or compositions, sums, differences and scalings.
//! - [`Separable`] operators (identity, circular Gaussian/uniform blur, block and bicubic
//!   downsampling, to_grey, and their fused compositions) apply one dense matrix per axis
//!   and have an exact SVD; [`Inpaint`] is diagonal; [`CircularConv`] (kernel and motion
//!   blur) solves exactly in the Fourier basis; anything else (compositions that do not
//!   fuse, user operators' Jacobians) solves with batched conjugate gradients.
//! - [`Linearisation`] is the Jacobian of any operator at a point.
//! - The built-ins are functions named as in the language ([`gaussian_blur`], [`inpaint`],
//!   [`box_mask`], ...).

mod axis;
mod builtin;
mod cg;
mod conv;
mod diagonal;
mod error;
mod fourier;
mod linear;
mod linearise;
mod mask;
mod motion;
mod names;
mod operator;
mod pointwise;
mod separable;
mod tensors;

#[cfg(test)]
mod testing;

pub use builtin::{
    bicubic_downsample, clipping, downsample, gamma_curve, gaussian_blur, gaussian_kernel,
    identity, inpaint, saturation, to_grey, uniform_blur, user, LUMA,
};
pub use cg::CgSettings;
pub use conv::{kernel_blur, motion_blur, CircularConv};
pub use diagonal::Inpaint;
pub use error::{OperatorError, Result};
pub use linear::{LinearOperator, Svd};
pub use linearise::Linearisation;
pub use mask::{
    box_mask, center_box_mask, half_mask, random_boxes_mask, random_mask, rows_mask, subsample_mask,
};
pub use motion::motion_kernel;
pub use operator::{Operator, TensorFn};
pub use pointwise::Pointwise;
pub use separable::Separable;
