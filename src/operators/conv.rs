//! Circular 2-D convolution with an explicit kernel (`kernel_blur`, `motion_blur`):
//! `y[c, i, j] = sum_{p, q} k[p, q] x[c, (i - p + kh / 2) mod H, (j - q + kw / 2) mod W]`,
//! the same kernel for every channel, its centre at `(kh / 2, kw / 2)` (rounded down).
//!
//! `apply` is candle's `conv2d` (a correlation) with the flipped kernel on a circularly
//! padded input; `adjoint` is the correlation with the kernel itself, padded the other way.
//! Both are differentiable, and a batch `[N, C, H, W]` is one convolution of its `N C`
//! channels. A circulant matrix is diagonal in the Fourier basis, with eigenvalues `K`, the DFT
//! of the kernel wrapped onto the `H x W` grid, so `A A^T` has the spectrum `|K|^2` and
//! `gram_solve` and `pinv` are exact Fourier filters ([`super::fourier`]), with the spectral
//! cut of the separable operators (values below 10 eps(dtype) of the largest count as zero).
//! (There is no SVD in real arithmetic here, so DDRM does not take these operators.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;

use super::error::{argument_error, Result};
use super::fourier::Dft2;
use super::linear::LinearOperator;
use super::motion::motion_kernel;
use super::names::number;
use super::operator::Operator;
use super::tensors::{
    device_key, image_dims, shape_str, split_batch, truncated_reciprocal, DeviceKey,
};

/// Circular convolution with a fixed 2-D kernel (see the module doc).
#[derive(Debug)]
pub struct CircularConv {
    name: String,
    /// `[kh, kw]`, f64 on the CPU.
    kernel: Tensor,
    cache: Mutex<HashMap<DeviceKey, Arc<(Tensor, Tensor)>>>,
    spectra: Mutex<HashMap<(usize, usize, DeviceKey), Arc<Spectrum>>>,
}

/// What the Fourier solves need for `H x W` images: the DFT and `|K|^2`, the spectrum of
/// `A A^T` (`[H, W]`).
#[derive(Debug)]
struct Spectrum {
    dft: Dft2,
    gram: Tensor,
}

/// `x` (`[C, H, W]` or `[N, C, H, W]`) padded circularly: `before`/`after` rows and columns
/// on each side.
fn circular_pad(x: &Tensor, rows: (usize, usize), cols: (usize, usize)) -> Result<Tensor> {
    let mut out = x.clone();
    let r = x.rank();
    for (axis, (before, after)) in [(r - 2, rows), (r - 1, cols)] {
        let n = out.dim(axis)?;
        if before == 0 && after == 0 {
            continue;
        }
        let idx: Vec<u32> = (0..n + before + after)
            .map(|t| ((t + n * (before / n + 1) - before) % n) as u32)
            .collect();
        let len = idx.len();
        out = out.index_select(&Tensor::from_vec(idx, len, x.device())?, axis)?;
    }
    Ok(out)
}

impl CircularConv {
    /// Convolution with `kernel` (`[h, w]` or `[1, h, w]`, used as given: not normalised),
    /// named `name`.
    pub fn new(name: impl Into<String>, kernel: &Tensor) -> Result<Self> {
        let name = name.into();
        let kernel = match kernel.dims() {
            [_, _] => kernel.clone(),
            [1, _, _] => kernel.squeeze(0)?,
            other => {
                return Err(argument_error(
                    name,
                    format!(
                        "a blur kernel is [h, w] or [1, h, w], got {}",
                        shape_str(other)
                    ),
                ))
            }
        };
        let (kh, kw) = kernel.dims2()?;
        if kh == 0 || kw == 0 {
            return Err(argument_error(name, "the kernel is empty"));
        }
        let kernel = kernel.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let values = kernel.flatten_all()?.to_vec1::<f64>()?;
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(argument_error(
                name,
                format!("kernel values must be finite, found {bad}"),
            ));
        }
        Ok(Self {
            name,
            kernel,
            cache: Mutex::new(HashMap::new()),
            spectra: Mutex::new(HashMap::new()),
        })
    }

    /// The kernel, `[kh, kw]` in f64 on the CPU.
    pub fn kernel(&self) -> &Tensor {
        &self.kernel
    }

    /// The (flipped, plain) kernels as `[1, 1, kh, kw]` in `like`'s dtype and device.
    fn kernels(&self, like: &Tensor) -> Result<Arc<(Tensor, Tensor)>> {
        let key = device_key(like.dtype(), like.device());
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let (kh, kw) = self.kernel.dims2()?;
        let rows: Vec<u32> = (0..kh as u32).rev().collect();
        let cols: Vec<u32> = (0..kw as u32).rev().collect();
        let flipped = self
            .kernel
            .index_select(&Tensor::from_vec(rows, kh, &Device::Cpu)?, 0)?
            .index_select(&Tensor::from_vec(cols, kw, &Device::Cpu)?, 1)?;
        let convert = |t: &Tensor| -> Result<Tensor> {
            Ok(t.reshape((1, 1, kh, kw))?
                .to_dtype(like.dtype())?
                .to_device(like.device())?)
        };
        let t = Arc::new((convert(&flipped)?, convert(&self.kernel)?));
        cache.insert(key, t.clone());
        Ok(t)
    }

    /// The DFT and the spectrum `|K|^2` of `A A^T` for `h x w` images, in `like`'s dtype and
    /// device: `K` is the DFT of the kernel wrapped onto the grid (tap `(p, q)` at
    /// `((p - kh / 2) mod h, (q - kw / 2) mod w)`; taps that land on one cell add up).
    fn spectrum(&self, h: usize, w: usize, like: &Tensor) -> Result<Arc<Spectrum>> {
        let key = (h, w, device_key(like.dtype(), like.device()));
        let mut cache = self.spectra.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let (kh, kw) = self.kernel.dims2()?;
        let taps = self.kernel.flatten_all()?.to_vec1::<f64>()?;
        let mut wrapped = vec![0.0; h * w];
        for p in 0..kh {
            for q in 0..kw {
                let i = (p + h * (kh / h + 1) - kh / 2) % h;
                let j = (q + w * (kw / w + 1) - kw / 2) % w;
                wrapped[i * w + j] += taps[p * kw + q];
            }
        }
        let wrapped = Tensor::from_vec(wrapped, (h, w), &Device::Cpu)?;
        let (re, im) = Dft2::new(h, w, DType::F64, &Device::Cpu)?.forward(&wrapped)?;
        let gram = re
            .sqr()?
            .add(&im.sqr()?)?
            .to_dtype(like.dtype())?
            .to_device(like.device())?;
        let s = Arc::new(Spectrum {
            dft: Dft2::new(h, w, like.dtype(), like.device())?,
            gram,
        });
        cache.insert(key, s.clone());
        Ok(s)
    }

    /// Correlation of each channel of `x` (an image or a batch) with `k` after padding.
    fn correlate(&self, x: &Tensor, k: &Tensor, adjoint: bool) -> Result<Tensor> {
        let (batch, image) = split_batch(&self.name, x.dims())?;
        let (c, h, w) = (batch.unwrap_or(1) * image[0], image[1], image[2]);
        let (kh, kw) = self.kernel.dims2()?;
        let (ch, cw) = (kh / 2, kw / 2);
        let (rows, cols) = if adjoint {
            ((ch, kh - 1 - ch), (cw, kw - 1 - cw))
        } else {
            ((kh - 1 - ch, ch), (kw - 1 - cw, cw))
        };
        let padded = circular_pad(x, rows, cols)?;
        let (ph, pw) = (h + rows.0 + rows.1, w + cols.0 + cols.1);
        let out = padded.reshape((c, 1, ph, pw))?.conv2d(k, 0, 1, 1, 1)?;
        Ok(out.reshape(x.dims())?)
    }
}

impl LinearOperator for CircularConv {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn range_shape(&self, domain: &[usize]) -> Result<Vec<usize>> {
        image_dims(&self.name, domain)?;
        Ok(domain.to_vec())
    }

    fn domain_shape(&self, range: &[usize]) -> Result<Vec<usize>> {
        image_dims(&self.name, range)?;
        Ok(range.to_vec())
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.kernels(x)?;
        self.correlate(x, &k.0, false)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        let k = self.kernels(y)?;
        self.correlate(y, &k.1, true)
    }

    /// `(a |K|^2 + b)^+` applied in the Fourier basis; spectral values below 10 eps(dtype) of
    /// the largest count as zero, as in the separable operators' exact solve.
    fn gram_solve(&self, r: &Tensor, a: f64, b: f64) -> Result<Tensor> {
        if !(a >= 0.0 && b >= 0.0 && a.is_finite() && b.is_finite()) {
            return Err(argument_error(
                format!("{}.gram_solve", self.name),
                format!("a and b must be finite and zero or more, got a = {a}, b = {b}"),
            ));
        }
        let (_, image) = split_batch(&self.name, r.dims())?;
        let s = self.spectrum(image[1], image[2], r)?;
        let inv = truncated_reciprocal(&s.gram.affine(a, b)?, r.dtype())?;
        s.dft.filter(r, &inv)
    }

    /// `A^+ y = A^T (A A^T)^+ y`, with the cut of `gram_solve`.
    fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        self.adjoint(&self.gram_solve(y, 1.0, 0.0)?)
    }

    fn visualize(&self, y: &Tensor) -> Result<Tensor> {
        split_batch(&self.name, y.dims())?;
        Ok(y.clone())
    }
}

/// Circular blur with an explicit kernel (`[h, w]` or `[1, h, w]`, used as given).
pub fn kernel_blur(kernel: &Tensor) -> Result<Operator> {
    let dims = kernel.dims();
    let name = format!("kernel_blur({} kernel)", shape_str(dims));
    Ok(Operator::linear(CircularConv::new(name, kernel)?))
}

/// Circular motion blur along a random trajectory in a `size x size` kernel (see
/// [`motion_kernel`]), drawn from `rng`.
pub fn motion_blur(size: usize, intensity: f64, rng: &mut ChaCha8Rng) -> Result<Operator> {
    let k = motion_kernel(size, intensity, rng)?;
    let kernel = Tensor::from_vec(k, (size, size), &Device::Cpu)?;
    let name = format!("motion_blur({size}, {})", number(intensity));
    Ok(Operator::linear(CircularConv::new(name, &kernel)?))
}

#[cfg(test)]
mod tests {
    use super::super::builtin::{gaussian_blur, gaussian_kernel};
    use super::super::testing::check_autograd_is_adjoint;
    use super::super::testing::{assert_close, check_linear, randn, values};
    use super::*;
    use crate::random::generator;

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn kernel_blur_matches_the_definition() {
        // An asymmetric, even-sized kernel: y[i, j] = sum k[p, q] x[i - p + 1, j - q + 2].
        let k = [0.1, 0.2, -0.3, 0.4, 0.5, 0.6, 0.7, -0.8];
        let kernel = ok(Tensor::from_vec(k.to_vec(), (2, 4), &Device::Cpu).map_err(Into::into));
        let op = ok(kernel_blur(&kernel));
        let (h, w) = (5, 6);
        let x = randn(&[1, h, w], 1);
        let xv = values(&x);
        let y = values(&ok(op.apply(&x)));
        for i in 0..h {
            for j in 0..w {
                let mut s = 0.0;
                for p in 0..2 {
                    for q in 0..4 {
                        let r = (i + h + 1 - p) % h;
                        let c = (j + w + 2 - q) % w;
                        s += k[p * 4 + q] * xv[r * w + c];
                    }
                }
                assert!((y[i * w + j] - s).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn kernel_blur_passes_the_linear_checks() {
        // Identity plus a small random kernel: well conditioned, so CG reaches 1e-9.
        let mut k = values(&randn(&[3, 4], 2))
            .iter()
            .map(|v| 0.1 * v)
            .collect::<Vec<_>>();
        k[4 + 2] += 1.0; // the centre (1, 2)
        let kernel = ok(Tensor::from_vec(k, (1, 3, 4), &Device::Cpu).map_err(Into::into));
        let op = ok(kernel_blur(&kernel));
        check_linear(&op, &[1, 6, 8], true);
        check_linear(&op, &[3, 12, 12], true);
    }

    #[test]
    fn a_gaussian_kernel_blur_equals_the_separable_gaussian_blur() {
        let g = ok(gaussian_kernel(1.0, 0));
        let n = g.len();
        let k2: Vec<f64> = (0..n * n).map(|i| g[i / n] * g[i % n]).collect();
        let kernel = ok(Tensor::from_vec(k2, (n, n), &Device::Cpu).map_err(Into::into));
        let x = randn(&[2, 9, 10], 3);
        let a = values(&ok(ok(kernel_blur(&kernel)).apply(&x)));
        let b = values(&ok(ok(gaussian_blur(1.0, 0)).apply(&x)));
        assert_close(&a, &b, 1e-14, "kernel vs separable");
    }

    #[test]
    fn motion_blur_kernels_and_operator() {
        let draw = |seed| {
            ok(motion_kernel(
                9,
                0.5,
                &mut generator(0, "motion_blur", seed),
            ))
        };
        let k = draw(1);
        assert_eq!(k, draw(1));
        assert_ne!(k, draw(2));
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        assert!(k.iter().all(|&v| v >= 0.0));
        // The path spans the kernel: some weight on a border row or column.
        let border: f64 = (0..81)
            .filter(|i| i / 9 == 0 || i / 9 == 8 || i % 9 == 0 || i % 9 == 8)
            .map(|i| k[i])
            .sum();
        assert!(border > 0.0);
        let straight = ok(motion_kernel(5, 0.0, &mut generator(0, "motion_blur", 3)));
        assert!((straight.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        let op = ok(motion_blur(5, 0.7, &mut generator(0, "motion_blur", 4)));
        check_linear(&op, &[1, 6, 8], false);
    }

    #[test]
    fn autograd_through_apply_is_the_adjoint() {
        let op = ok(motion_blur(5, 0.5, &mut generator(0, "motion_blur", 9)));
        check_autograd_is_adjoint(&op, &[2, 7, 6]);
    }
}
