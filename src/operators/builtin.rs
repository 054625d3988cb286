//! The built-in operators of the language (`stdlib/operators.mapga`), by their language
//! names. Mask tensors are in [`super::mask`].

use std::sync::Arc;

use candle_core::Tensor;

use super::axis::AxisMap;
use super::diagonal::Inpaint;
use super::error::{argument_error, Result};
use super::names::number;
use super::operator::{Operator, TensorFn};
use super::pointwise::Pointwise;
use super::separable::Separable;
use super::tensors::per_item;

/// ITU-R BT.601 luma weights of R, G and B.
pub const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

fn separable(name: String, axes: [AxisMap; 3]) -> Operator {
    Operator::linear(Separable::new(name, axes, 1.0))
}

fn finite(name: &str, what: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(argument_error(
            name,
            format!("{what} must be finite, got {v}"),
        ))
    }
}

/// The identity operator.
pub fn identity() -> Operator {
    separable(
        "identity()".into(),
        [AxisMap::Identity, AxisMap::Identity, AxisMap::Identity],
    )
}

/// Inpainting with `mask` (`[1, H, W]` or `[C, H, W]`, 1 = observed).
pub fn inpaint(mask: &Tensor) -> Result<Operator> {
    Ok(Operator::linear(Inpaint::new(mask)?))
}

/// The normalised 1-D Gaussian kernel of `sigma` with `size` taps (`size` 0: `2 ceil(3
/// sigma) + 1`), centred at `size / 2`. `sigma = 0` gives the unit impulse.
pub fn gaussian_kernel(sigma: f64, size: usize) -> Result<Vec<f64>> {
    let sigma = finite("gaussian_blur", "sigma", sigma)?;
    if sigma < 0.0 {
        return Err(argument_error(
            "gaussian_blur",
            format!("sigma must be 0 or more, got {sigma}"),
        ));
    }
    let size = if size == 0 {
        2 * (3.0 * sigma).ceil() as usize + 1
    } else {
        size
    };
    let centre = (size / 2) as f64;
    let mut k: Vec<f64> = (0..size)
        .map(|i| {
            let d = i as f64 - centre;
            if sigma == 0.0 {
                if d == 0.0 {
                    1.0
                } else {
                    0.0
                }
            } else {
                (-d * d / (2.0 * sigma * sigma)).exp()
            }
        })
        .collect();
    let total: f64 = k.iter().sum();
    if total.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return Err(argument_error(
            "gaussian_blur",
            "an even-sized kernel with sigma 0 has no centre tap",
        ));
    }
    k.iter_mut().for_each(|v| *v /= total);
    Ok(k)
}

/// Circular Gaussian blur: a normalised `size x size` kernel of standard deviation `sigma`
/// (`size` 0: `2 ceil(3 sigma) + 1`), separable, so it has an exact SVD.
pub fn gaussian_blur(sigma: f64, size: usize) -> Result<Operator> {
    let k = gaussian_kernel(sigma, size)?;
    let name = if size == 0 {
        format!("gaussian_blur({})", number(sigma))
    } else {
        format!("gaussian_blur({}, size: {size})", number(sigma))
    };
    Ok(separable(
        name,
        [
            AxisMap::Identity,
            AxisMap::Circulant(k.clone()),
            AxisMap::Circulant(k),
        ],
    ))
}

/// Circular box blur: the mean over a `size x size` window (centred at `size / 2`).
pub fn uniform_blur(size: usize) -> Result<Operator> {
    if size == 0 {
        return Err(argument_error("uniform_blur", "size must be at least 1"));
    }
    let k = vec![1.0 / size as f64; size];
    Ok(separable(
        format!("uniform_blur({size})"),
        [
            AxisMap::Identity,
            AxisMap::Circulant(k.clone()),
            AxisMap::Circulant(k),
        ],
    ))
}

fn check_factor(name: &str, factor: usize) -> Result<()> {
    if factor == 0 {
        Err(argument_error(name, "factor must be at least 1"))
    } else {
        Ok(())
    }
}

/// Block-average downsampling by `factor`.
pub fn downsample(factor: usize) -> Result<Operator> {
    check_factor("downsample", factor)?;
    Ok(separable(
        format!("downsample({factor})"),
        [
            AxisMap::Identity,
            AxisMap::BlockAverage(factor),
            AxisMap::BlockAverage(factor),
        ],
    ))
}

/// Bicubic antialiased downsampling by `factor`, as MATLAB's `imresize(x, 1 / factor)`
/// (see the `axis` module for the exact kernel and boundary).
pub fn bicubic_downsample(factor: usize) -> Result<Operator> {
    check_factor("bicubic_downsample", factor)?;
    Ok(separable(
        format!("bicubic_downsample({factor})"),
        [
            AxisMap::Identity,
            AxisMap::Bicubic(factor),
            AxisMap::Bicubic(factor),
        ],
    ))
}

/// Colour to grey: `[3, H, W]` -> `[1, H, W]` with the BT.601 luma weights [`LUMA`].
pub fn to_grey() -> Operator {
    separable(
        "to_grey()".into(),
        [
            AxisMap::Weights(LUMA.to_vec()),
            AxisMap::Identity,
            AxisMap::Identity,
        ],
    )
}

/// Pointwise clipping to `[lo, hi]`.
pub fn clipping(lo: f64, hi: f64) -> Result<Operator> {
    if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
        return Err(argument_error(
            "clipping",
            format!("hi ({hi}) must be greater than lo ({lo})"),
        ));
    }
    Ok(Operator::Pointwise(Pointwise::Clipping { lo, hi }))
}

/// The pointwise gamma curve `x -> 2 ((x + 1) / 2)^gamma - 1` on `x` clamped to [-1, 1].
pub fn gamma_curve(gamma: f64) -> Result<Operator> {
    if !(gamma > 0.0 && gamma.is_finite()) {
        return Err(argument_error(
            "gamma_curve",
            format!("gamma must be positive, got {gamma}"),
        ));
    }
    Ok(Operator::Pointwise(Pointwise::GammaCurve { gamma }))
}

/// Pointwise saturation `x -> tanh(k x) / k`.
pub fn saturation(k: f64) -> Result<Operator> {
    let k = finite("saturation", "k", k)?;
    Ok(Operator::Pointwise(Pointwise::Saturation { k }))
}

/// A user function as an operator on images of shape `domain`. A batch (one more dimension
/// than `domain`) goes through `f` one image at a time, since `f` was written for one.
pub fn user(f: TensorFn, name: impl Into<String>, domain: &[usize]) -> Operator {
    let rank = domain.len();
    let batched: TensorFn = Arc::new(move |x: &Tensor| {
        if x.rank() == rank + 1 {
            per_item(x, |item| f(item))
        } else {
            f(x)
        }
    });
    Operator::User {
        f: batched,
        name: name.into(),
        domain: domain.to_vec(),
    }
}
