//! Structural similarity (Wang et al. 2004), computed as scikit-image does it.
//!
//! [`ssim`] equals `skimage.metrics.structural_similarity(x, reference, data_range=2,
//! channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`: local
//! means, variances and covariance are Gaussian-weighted (sigma 1.5, truncated at 3.5 sigma,
//! so an 11x11 window) with SciPy's `reflect` boundary (`d c b a | a b c d | d c b a`),
//! `K1 = 0.01`, `K2 = 0.03`, the SSIM map is averaged after cropping the 5-pixel border, and
//! the channels' values are averaged.

use candle_core::Tensor;

use super::{pair, MetricError, Pair};

/// Standard deviation of the Gaussian window, in pixels.
const SIGMA: f64 = 1.5;
/// The window is cut at this many standard deviations.
const TRUNCATE: f64 = 3.5;
/// Constant of the luminance term, relative to the data range.
const K1: f64 = 0.01;
/// Constant of the contrast-structure term, relative to the data range.
const K2: f64 = 0.03;
/// The data range of images in [-1, 1].
const DATA_RANGE: f64 = 2.0;
/// The window radius, `int(TRUNCATE * SIGMA + 0.5)` as SciPy computes it.
const RADIUS: usize = (TRUNCATE * SIGMA + 0.5) as usize;
/// The side of the SSIM window (11); images must be at least this tall and wide.
pub const SSIM_WINDOW: usize = 2 * RADIUS + 1;

/// The structural similarity of `x` to `reference`, averaged over channels; 1 means identical.
///
/// Both are `[C, H, W]` (or `[H, W]`) of the same shape with H and W at least
/// [`SSIM_WINDOW`] (11), like scikit-image requires.
pub fn ssim(x: &Tensor, reference: &Tensor) -> Result<f64, MetricError> {
    let Pair {
        shape,
        x: a,
        reference: b,
    } = pair(x, reference)?;
    let (channels, height, width) = match *shape.as_slice() {
        [c, h, w] => (c, h, w),
        [h, w] => (1, h, w),
        _ => {
            return Err(MetricError::NotAnImage {
                metric: "ssim",
                shape,
            })
        }
    };
    if height < SSIM_WINDOW || width < SSIM_WINDOW {
        return Err(MetricError::TooSmall {
            metric: "ssim",
            min: SSIM_WINDOW,
            height,
            width,
        });
    }
    let kernel = gaussian_kernel();
    let n = height * width;
    let total: f64 = a
        .chunks_exact(n)
        .zip(b.chunks_exact(n))
        .map(|(a, b)| channel_ssim(a, b, height, width, &kernel))
        .sum();
    Ok(total / channels as f64)
}

/// The normalised Gaussian weights at offsets `-RADIUS..=RADIUS`.
fn gaussian_kernel() -> Vec<f64> {
    let r = RADIUS as f64;
    let weights: Vec<f64> = (0..SSIM_WINDOW)
        .map(|k| {
            let d = k as f64 - r;
            (-0.5 * d * d / (SIGMA * SIGMA)).exp()
        })
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter().map(|w| w / sum).collect()
}

/// The mean of the cropped SSIM map of one channel.
fn channel_ssim(x: &[f64], y: &[f64], height: usize, width: usize, kernel: &[f64]) -> f64 {
    let filter = |img: &[f64]| gaussian_filter(img, height, width, kernel);
    let product =
        |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(a, b)| a * b).collect() };
    let ux = filter(x);
    let uy = filter(y);
    let uxx = filter(&product(x, x));
    let uyy = filter(&product(y, y));
    let uxy = filter(&product(x, y));
    let c1 = (K1 * DATA_RANGE).powi(2);
    let c2 = (K2 * DATA_RANGE).powi(2);
    let mut sum = 0.0;
    let mut count = 0usize;
    for i in RADIUS..height - RADIUS {
        for j in RADIUS..width - RADIUS {
            let k = i * width + j;
            let (mx, my) = (ux[k], uy[k]);
            let vx = uxx[k] - mx * mx;
            let vy = uyy[k] - my * my;
            let vxy = uxy[k] - mx * my;
            let a1 = 2.0 * mx * my + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = mx * mx + my * my + c1;
            let b2 = vx + vy + c2;
            sum += (a1 * a2) / (b1 * b2);
            count += 1;
        }
    }
    sum / count as f64
}

/// Correlates a `height x width` image with `kernel` along rows then columns, with SciPy's
/// `reflect` boundary.
fn gaussian_filter(img: &[f64], height: usize, width: usize, kernel: &[f64]) -> Vec<f64> {
    let r = kernel.len() / 2;
    let mut rows = vec![0.0; height * width];
    for i in 0..height {
        for j in 0..width {
            rows[i * width + j] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * img[reflect(i + k, r, height) * width + j])
                .sum();
        }
    }
    let mut out = vec![0.0; height * width];
    for i in 0..height {
        for j in 0..width {
            out[i * width + j] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * rows[i * width + reflect(j + k, r, width)])
                .sum();
        }
    }
    out
}

/// The index read for position `shifted - r` of a line of `n` samples, reflected at both
/// ends about the sample edges (`d c b a | a b c d | d c b a`).
fn reflect(shifted: usize, r: usize, n: usize) -> usize {
    let period = 2 * n;
    // `shifted - r` taken modulo the period, kept non-negative.
    let m = (shifted + period - r % period) % period;
    if m < n {
        m
    } else {
        period - 1 - m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn kernel_and_reflection() {
        assert_eq!(SSIM_WINDOW, 11);
        let k = gaussian_kernel();
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((k[5] / k[6] - (0.5 / 2.25f64).exp()).abs() < 1e-14);
        // Line of 3 samples [a b c], radius 5: c b a | a b c | c b a | a b ...
        let got: Vec<usize> = (0..13).map(|s| reflect(s, 5, 3)).collect();
        assert_eq!(got, vec![1, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1]);
    }

    /// The SSIM map by its definition, with the window weights and reflected samples spelled
    /// out as a dense 2-D sum (no separable filtering).
    fn direct(x: &[f64], y: &[f64], h: usize, w: usize) -> f64 {
        let g = gaussian_kernel();
        let at = |img: &[f64], i: isize, j: isize| {
            let fold = |v: isize, n: usize| {
                let n = n as isize;
                let m = v.rem_euclid(2 * n);
                (if m < n { m } else { 2 * n - 1 - m }) as usize
            };
            img[fold(i, h) * w + fold(j, w)]
        };
        let (c1, c2) = (0.02f64.powi(2), 0.06f64.powi(2));
        let mut total = 0.0;
        let mut count = 0.0;
        for i in 5..h - 5 {
            for j in 5..w - 5 {
                let (mut mx, mut my, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                for (a, ga) in g.iter().enumerate() {
                    for (b, gb) in g.iter().enumerate() {
                        let (ii, jj) = (i as isize + a as isize - 5, j as isize + b as isize - 5);
                        let (p, q) = (at(x, ii, jj), at(y, ii, jj));
                        let wt = ga * gb;
                        mx += wt * p;
                        my += wt * q;
                        sxx += wt * p * p;
                        syy += wt * q * q;
                        sxy += wt * p * q;
                    }
                }
                let (vx, vy, vxy) = (sxx - mx * mx, syy - my * my, sxy - mx * my);
                total += (2.0 * mx * my + c1) * (2.0 * vxy + c2)
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1.0;
            }
        }
        total / count
    }

    #[test]
    fn matches_the_definition() {
        let (h, w) = (13, 16);
        let x: Vec<f64> = (0..h * w)
            .map(|k| ((k * 37 % 101) as f64 / 50.0) - 1.0)
            .collect();
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(k, v)| v * 0.8 + (k % 7) as f64 * 0.03)
            .collect();
        let want = direct(&x, &y, h, w);
        let tx = Tensor::from_vec(x, (1, h, w), &Device::Cpu).unwrap();
        let ty = Tensor::from_vec(y, (1, h, w), &Device::Cpu).unwrap();
        let got = ssim(&tx, &ty).unwrap();
        assert!((got - want).abs() / want.abs() < 1e-12, "{got} vs {want}");
        assert!(got < 1.0);
        assert!((ssim(&tx, &tx).unwrap() - 1.0).abs() < 1e-12);
        // Colour: the mean over channels; f32 inputs agree to their precision.
        let c = Tensor::cat(&[&tx, &ty], 0).unwrap();
        let d = Tensor::cat(&[&ty, &ty], 0).unwrap();
        let mean = ssim(&c, &d).unwrap();
        assert!((mean - (want + 1.0) / 2.0).abs() < 1e-12);
        let c32 = c.to_dtype(DType::F32).unwrap();
        let d32 = d.to_dtype(DType::F32).unwrap();
        assert!((ssim(&c32, &d32).unwrap() - mean).abs() < 1e-5);
    }

    #[test]
    fn errors() {
        let small = Tensor::zeros((1, 10, 20), DType::F32, &Device::Cpu).unwrap();
        let err = ssim(&small, &small).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ssim needs images of at least 11x11 pixels (its window), but these are 10x20"
        );
        let flat = Tensor::zeros(20, DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            ssim(&flat, &flat),
            Err(MetricError::NotAnImage { .. })
        ));
        let other = Tensor::zeros((1, 20, 10), DType::F32, &Device::Cpu).unwrap();
        let big = Tensor::zeros((1, 10, 20), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            ssim(&big, &other),
            Err(MetricError::ShapeMismatch { .. })
        ));
    }
}
