//! Inpainting: the diagonal operator `y = m ⊙ x` of a mask `m` (`[1, H, W]`, broadcast over
//! the channels, or `[C, H, W]`). Its range is its domain (missing pixels are 0 in `y`);
//! `A A^T = diag(m²)`, so `gram_solve` and `pinv` are exact elementwise divisions, and its
//! SVD is `U = V = I` with singular values `m`.
//!
//! Masks are usually 0/1; any finite non-negative values are accepted (a soft mask). A batch
//! `[N, C, H, W]` is masked in one broadcast product.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};

use super::error::{argument_error, shape_error, Result};
use super::linear::{LinearOperator, Svd};
use super::tensors::{device_key, shape_str, DeviceKey};

/// The inpainting operator of a mask (see the module doc).
#[derive(Debug)]
pub struct Inpaint {
    /// The mask in f64 on the CPU, `[1 or C, H, W]`.
    mask: Tensor,
    cache: Mutex<HashMap<DeviceKey, Arc<MaskTensors>>>,
}

/// The mask's tensors in one dtype on one device.
#[derive(Debug)]
struct MaskTensors {
    /// `m`.
    m: Tensor,
    /// `m²`.
    m2: Tensor,
    /// `1 / m` where `m > 0`, else 0.
    m_pinv: Tensor,
}

impl Inpaint {
    /// The operator keeping the pixels where `mask` (`[1, H, W]` or `[C, H, W]`, finite
    /// values >= 0) is non-zero.
    pub fn new(mask: &Tensor) -> Result<Self> {
        if mask.rank() != 3 {
            return Err(argument_error(
                "inpaint",
                format!(
                    "a mask is [1, H, W] or [C, H, W], got {}",
                    shape_str(mask.dims())
                ),
            ));
        }
        let mask = mask.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
        let values = mask.flatten_all()?.to_vec1::<f64>()?;
        if let Some(bad) = values.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
            return Err(argument_error(
                "inpaint",
                format!("mask values must be finite and 0 or more, found {bad}"),
            ));
        }
        Ok(Self {
            mask,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn tensors(&self, like: &Tensor) -> Result<Arc<MaskTensors>> {
        let key = device_key(like.dtype(), like.device());
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let m = &self.mask;
        let zero = m.zeros_like()?;
        let m_pinv = m.gt(&zero)?.where_cond(&m.recip()?, &zero)?;
        let convert = |t: &Tensor| -> Result<Tensor> {
            Ok(t.to_dtype(like.dtype())?.to_device(like.device())?)
        };
        let t = Arc::new(MaskTensors {
            m: convert(m)?,
            m2: convert(&m.sqr()?)?,
            m_pinv: convert(&m_pinv)?,
        });
        cache.insert(key, t.clone());
        Ok(t)
    }

    /// Checks that `shape` is an image shape this mask applies to, or a batch of them.
    fn check(&self, shape: &[usize], what: &str) -> Result<()> {
        let m = self.mask.dims();
        let image = if shape.len() == 4 { &shape[1..] } else { shape };
        let ok = image.len() == 3 && image[1..] == m[1..] && (m[0] == 1 || m[0] == image[0]);
        if ok {
            Ok(())
        } else {
            Err(shape_error(
                "inpaint",
                format!(
                    "a {} mask needs {what} of shape {}, got {}",
                    shape_str(m),
                    if m[0] == 1 {
                        format!("[C, {}, {}]", m[1], m[2])
                    } else {
                        shape_str(m)
                    },
                    shape_str(shape)
                ),
            ))
        }
    }

    fn scale(&self, x: &Tensor, pick: impl Fn(&MaskTensors) -> &Tensor) -> Result<Tensor> {
        self.check(x.dims(), "an image")?;
        let t = self.tensors(x)?;
        Ok(x.broadcast_mul(pick(&t))?)
    }
}

impl LinearOperator for Inpaint {
    fn name(&self) -> String {
        "inpaint".to_string()
    }

    fn range_shape(&self, domain: &[usize]) -> Result<Vec<usize>> {
        self.check(domain, "an image")?;
        Ok(domain.to_vec())
    }

    fn domain_shape(&self, range: &[usize]) -> Result<Vec<usize>> {
        self.check(range, "a measurement")?;
        Ok(range.to_vec())
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        self.scale(x, |t| &t.m)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.scale(y, |t| &t.m)
    }

    fn gram_solve(&self, r: &Tensor, a: f64, b: f64) -> Result<Tensor> {
        self.check(r.dims(), "a measurement")?;
        let t = self.tensors(r)?;
        let d = t.m2.affine(a, b)?;
        let zero = d.zeros_like()?;
        let inv = d.ne(&zero)?.where_cond(&d.recip()?, &zero)?;
        Ok(r.broadcast_mul(&inv)?)
    }

    fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        self.scale(y, |t| &t.m_pinv)
    }

    fn svd(&self) -> Option<&dyn Svd> {
        Some(self)
    }

    fn visualize(&self, y: &Tensor) -> Result<Tensor> {
        self.check(y.dims(), "a measurement")?;
        Ok(y.clone())
    }
}

impl Svd for Inpaint {
    fn singular_values(&self, domain: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        self.check(domain, "an image")?;
        Ok(self
            .mask
            .broadcast_as(domain)?
            .contiguous()?
            .to_dtype(dtype)?
            .to_device(device)?)
    }

    fn vt(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x.dims(), "an image")?;
        Ok(x.clone())
    }

    fn v(&self, c: &Tensor) -> Result<Tensor> {
        self.check(c.dims(), "coefficients")?;
        Ok(c.clone())
    }

    fn ut(&self, y: &Tensor, domain: &[usize]) -> Result<Tensor> {
        self.check(y.dims(), "a measurement")?;
        let image = if y.rank() == 4 {
            &y.dims()[1..]
        } else {
            y.dims()
        };
        if image != domain {
            return Err(shape_error(
                "inpaint",
                format!(
                    "a measurement of shape {} does not come from images of shape {}",
                    shape_str(y.dims()),
                    shape_str(domain)
                ),
            ));
        }
        Ok(y.clone())
    }

    fn u(&self, c: &Tensor) -> Result<Tensor> {
        self.check(c.dims(), "coefficients")?;
        Ok(c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::builtin::inpaint;
    use super::super::mask::{random_mask, rows_mask};
    use super::super::testing::{check_linear, randn, values};
    use super::*;
    use crate::random::generator;

    #[test]
    fn masks_pass_the_linear_checks() {
        let cpu = &Device::Cpu;
        let m = random_mask(6, 8, 0.6, &mut generator(0, "t", 1), DType::F64, cpu);
        let op = inpaint(&m.unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
        check_linear(&op, &[1, 6, 8], true);
        check_linear(&op, &[3, 6, 8], true);
        let m3 = randn(&[3, 12, 12], 3)
            .abs()
            .unwrap_or_else(|e| panic!("{e}"));
        let soft = inpaint(&m3).unwrap_or_else(|e| panic!("{e}"));
        check_linear(&soft, &[3, 12, 12], true);
    }

    #[test]
    fn gram_solve_with_b_zero_is_zero_on_missing_pixels() {
        let cpu = &Device::Cpu;
        let m = rows_mask(4, 3, 2, 1, DType::F64, cpu).unwrap_or_else(|e| panic!("{e}"));
        let op = inpaint(&m).unwrap_or_else(|e| panic!("{e}"));
        let r = randn(&[2, 4, 3], 4);
        let z = values(
            &op.gram_solve(&r, 4.0, 0.0)
                .unwrap_or_else(|e| panic!("{e}")),
        );
        let rv = values(&r);
        for (i, (zi, ri)) in z.iter().zip(&rv).enumerate() {
            let row = (i / 3) % 4;
            let expect = if row % 2 == 1 { 0.0 } else { ri / 4.0 };
            assert!((zi - expect).abs() < 1e-15);
        }
        assert!(op.apply(&randn(&[1, 4, 4], 0)).is_err());
        assert!(inpaint(&randn(&[4, 4], 0)).is_err());
    }
}
