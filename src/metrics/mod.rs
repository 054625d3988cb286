//! Image quality metrics for `report`: [`mse`], [`psnr`] and [`ssim()`].
//!
//! Images are `[C, H, W]` tensors (a `[H, W]` tensor is one grey channel) with values in
//! [-1, 1], of any float dtype and device; every metric copies both to the CPU and computes
//! in `f64`. The image under test comes first, the reference second, and both must have the
//! same shape. NaN values are not refused: they make the result NaN. [`per_item`] computes a
//! metric for each pair of items of two batches `[N, C, H, W]`.

pub mod classifier;
mod ssim;

pub use self::ssim::{ssim, SSIM_WINDOW};

use candle_core::{DType, Tensor};

/// Why a metric cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// The two images differ in shape.
    #[error(
        "cannot compare an image of shape {x:?} with a reference of shape {reference:?}; \
         they must have the same shape"
    )]
    ShapeMismatch {
        /// The shape of the image under test.
        x: Vec<usize>,
        /// The shape of the reference.
        reference: Vec<usize>,
    },
    /// The images hold no values.
    #[error("cannot compare empty images (shape {shape:?})")]
    Empty {
        /// Their shape.
        shape: Vec<usize>,
    },
    /// The metric needs `[C, H, W]` or `[H, W]` images.
    #[error("{metric} needs images of shape [C, H, W] or [H, W], not {shape:?}")]
    NotAnImage {
        /// The metric, e.g. `ssim`.
        metric: &'static str,
        /// The shape given.
        shape: Vec<usize>,
    },
    /// The images are smaller than the metric's window.
    #[error(
        "{metric} needs images of at least {min}x{min} pixels (its window), \
         but these are {height}x{width}"
    )]
    TooSmall {
        /// The metric, e.g. `ssim`.
        metric: &'static str,
        /// The smallest height and width allowed.
        min: usize,
        /// The images' height.
        height: usize,
        /// The images' width.
        width: usize,
    },
    /// Copying a tensor to the CPU failed.
    #[error("cannot read the image values: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The mean squared error between `x` and `reference`, in [-1, 1] units.
pub fn mse(x: &Tensor, reference: &Tensor) -> Result<f64, MetricError> {
    let Pair {
        x: a, reference: b, ..
    } = pair(x, reference)?;
    let sum: f64 = a.iter().zip(&b).map(|(p, q)| (p - q) * (p - q)).sum();
    Ok(sum / a.len() as f64)
}

/// Peak signal-to-noise ratio in dB for images in [-1, 1] (peak-to-peak 2):
/// `10 log10(4 / mse)`. Identical images give `f64::INFINITY`.
pub fn psnr(x: &Tensor, reference: &Tensor) -> Result<f64, MetricError> {
    let mse = mse(x, reference)?;
    Ok(10.0 * (4.0 / mse).log10())
}

/// `metric` of each pair of items of two batches `[N, ...]` of one shape, in order: the
/// per-item values a program gets from `psnr(x, reference)` on batches.
pub fn per_item(
    x: &Tensor,
    reference: &Tensor,
    metric: impl Fn(&Tensor, &Tensor) -> Result<f64, MetricError>,
) -> Result<Vec<f64>, MetricError> {
    if x.dims() != reference.dims() {
        return Err(MetricError::ShapeMismatch {
            x: x.dims().to_vec(),
            reference: reference.dims().to_vec(),
        });
    }
    let n = x.dims().first().copied().unwrap_or(0);
    (0..n)
        .map(|i| metric(&x.get(i)?, &reference.get(i)?))
        .collect()
}

/// Two images of one shape, as `f64` values on the CPU in row-major order.
struct Pair {
    shape: Vec<usize>,
    x: Vec<f64>,
    reference: Vec<f64>,
}

/// Both tensors' shape and values, after checking the shapes agree and are not empty.
fn pair(x: &Tensor, reference: &Tensor) -> Result<Pair, MetricError> {
    if x.dims() != reference.dims() {
        return Err(MetricError::ShapeMismatch {
            x: x.dims().to_vec(),
            reference: reference.dims().to_vec(),
        });
    }
    if x.elem_count() == 0 {
        return Err(MetricError::Empty {
            shape: x.dims().to_vec(),
        });
    }
    Ok(Pair {
        shape: x.dims().to_vec(),
        x: host_f64(x)?,
        reference: host_f64(reference)?,
    })
}

/// The values of `x` in row-major order, as `f64` on the CPU.
fn host_f64(x: &Tensor) -> Result<Vec<f64>, MetricError> {
    Ok(x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(values: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn mse_and_psnr_closed_form() {
        let x = t(&[0.0, 0.5, -1.0, 1.0], &[1, 2, 2]);
        let r = t(&[0.1, 0.5, -0.8, 1.0], &[1, 2, 2]);
        // (0.01 + 0 + 0.04 + 0) / 4
        let want = 0.0125;
        assert!(rel(mse(&x, &r).unwrap(), want) < 1e-14);
        assert!(rel(psnr(&x, &r).unwrap(), 10.0 * (4.0f64 / want).log10()) < 1e-14);
        // f32 inputs give the same value up to their rounding.
        let x32 = x.to_dtype(DType::F32).unwrap();
        let r32 = r.to_dtype(DType::F32).unwrap();
        assert!(rel(mse(&x32, &r32).unwrap(), want) < 1e-6);
        assert_eq!(psnr(&x, &x).unwrap(), f64::INFINITY);
        assert_eq!(mse(&x, &x).unwrap(), 0.0);
    }

    #[test]
    fn batches_give_one_value_per_item() {
        let x = t(&[0.0, 0.5, -1.0, 1.0, 0.2, 0.2, 0.2, 0.2], &[2, 1, 2, 2]);
        let r = t(&[0.1, 0.5, -0.8, 1.0, 0.2, 0.2, 0.2, 0.0], &[2, 1, 2, 2]);
        let each = per_item(&x, &r, mse).unwrap();
        assert_eq!(each.len(), 2);
        for (i, v) in each.iter().enumerate() {
            let one = mse(&x.get(i).unwrap(), &r.get(i).unwrap()).unwrap();
            assert_eq!(*v, one);
        }
        assert!(rel(each[0], 0.0125) < 1e-14 && rel(each[1], 0.01) < 1e-14);
        assert!(per_item(&x, &r.get(0).unwrap(), psnr).is_err());
    }

    #[test]
    fn shape_errors_name_both_shapes() {
        let a = t(&[0.0; 6], &[1, 2, 3]);
        let b = t(&[0.0; 6], &[1, 3, 2]);
        let err = mse(&a, &b).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot compare an image of shape [1, 2, 3] with a reference of shape [1, 3, 2]; \
             they must have the same shape"
        );
        let empty = t(&[], &[1, 0, 3]);
        assert!(matches!(
            psnr(&empty, &empty),
            Err(MetricError::Empty { .. })
        ));
    }
}
