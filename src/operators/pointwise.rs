//! Pointwise non-linear operators: clipping, a gamma curve and tanh saturation. Each maps
//! every pixel by the same scalar function, so its Jacobian is diagonal.

use candle_core::Tensor;

use super::error::Result;
use super::names::number;

/// A pointwise non-linear map.
#[derive(Clone, Debug, PartialEq)]
pub enum Pointwise {
    /// `x -> min(max(x, lo), hi)`.
    Clipping {
        /// The lower bound.
        lo: f64,
        /// The upper bound.
        hi: f64,
    },
    /// `x -> 2 max((clamp(x, -1, 1) + 1) / 2, 1e-12)^gamma - 1`.
    GammaCurve {
        /// The exponent (> 0).
        gamma: f64,
    },
    /// `x -> tanh(k x) / k` (the identity for `k = 0`).
    Saturation {
        /// The strength.
        k: f64,
    },
}

/// The floor on `(x + 1) / 2` where the gamma curve and its derivative are evaluated, so that
/// its derivative stays finite at the black point for `gamma < 1`.
const GAMMA_FLOOR: f64 = 1e-12;

impl Pointwise {
    /// The name as the language writes it, e.g. `"gamma_curve(2.2)"`.
    pub fn name(&self) -> String {
        match self {
            Pointwise::Clipping { lo, hi } => format!("clipping({}, {})", number(*lo), number(*hi)),
            Pointwise::GammaCurve { gamma } => format!("gamma_curve({})", number(*gamma)),
            Pointwise::Saturation { k } => format!("saturation({})", number(*k)),
        }
    }

    /// The map applied to every element of `x` (differentiable).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Pointwise::Clipping { lo, hi } => x.clamp(*lo, *hi)?,
            // u is floored as in `derivative`: at u = 0 the backward of u^gamma is
            // gamma u^(gamma - 1), infinite for gamma < 1, and 0 * inf made gradients NaN at
            // every black pixel. The floor moves the value there by 2e-12^gamma at most.
            Pointwise::GammaCurve { gamma } => x
                .clamp(-1.0, 1.0)?
                .affine(0.5, 0.5)?
                .maximum(GAMMA_FLOOR)?
                .powf(*gamma)?
                .affine(2.0, -1.0)?,
            Pointwise::Saturation { k } => {
                if *k == 0.0 {
                    x.clone()
                } else {
                    x.affine(*k, 0.0)?.tanh()?.affine(1.0 / k, 0.0)?
                }
            }
        })
    }

    /// The derivative of the map at every element of `x` (the diagonal of the Jacobian),
    /// detached from autograd. Clipping: 1 on `[lo, hi]`, 0 outside. Gamma curve:
    /// `gamma u^(gamma - 1)` with `u = max((x + 1) / 2, 1e-12)` on `[-1, 1]`, 0 outside.
    /// Saturation: `1 - tanh(k x)^2`.
    pub fn derivative(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.detach();
        let inside = |lo: f64, hi: f64| -> Result<Tensor> {
            let ge = x.ge(lo)?.to_dtype(x.dtype())?;
            let le = x.le(hi)?.to_dtype(x.dtype())?;
            Ok(ge.mul(&le)?)
        };
        Ok(match self {
            Pointwise::Clipping { lo, hi } => inside(*lo, *hi)?,
            Pointwise::GammaCurve { gamma } => {
                let u = x.clamp(-1.0, 1.0)?.affine(0.5, 0.5)?.maximum(GAMMA_FLOOR)?;
                u.powf(gamma - 1.0)?
                    .affine(*gamma, 0.0)?
                    .mul(&inside(-1.0, 1.0)?)?
            }
            Pointwise::Saturation { k } => {
                let t = x.affine(*k, 0.0)?.tanh()?;
                t.sqr()?.affine(-1.0, 1.0)?
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The central difference of `p` at `x` in f64, elementwise.
    fn finite_difference(p: &Pointwise, x: &Tensor, h: f64) -> Tensor {
        let plus = p.apply(&x.affine(1.0, h).unwrap()).unwrap();
        let minus = p.apply(&x.affine(1.0, -h).unwrap()).unwrap();
        plus.sub(&minus).unwrap().affine(0.5 / h, 0.0).unwrap()
    }

    #[test]
    fn derivatives_match_finite_differences() {
        // Points away from the kinks of clipping and of the clamped gamma curve.
        let xs = [-1.7, -0.93, -0.4, -0.05, 0.2, 0.61, 0.97, 1.3];
        let x = Tensor::new(&xs, &Device::Cpu).unwrap();
        for p in [
            Pointwise::Clipping { lo: -0.5, hi: 0.8 },
            Pointwise::GammaCurve { gamma: 2.2 },
            Pointwise::GammaCurve { gamma: 0.45 },
            Pointwise::Saturation { k: 1.7 },
            Pointwise::Saturation { k: 0.0 },
        ] {
            let d = p.derivative(&x).unwrap().to_vec1::<f64>().unwrap();
            let fd = finite_difference(&p, &x, 1e-6).to_vec1::<f64>().unwrap();
            for (a, b) in d.iter().zip(&fd) {
                assert!(
                    (a - b).abs() <= 1e-8 * (1.0 + b.abs()),
                    "{} {a} {b}",
                    p.name()
                );
            }
        }
    }

    #[test]
    fn closed_forms() {
        let x = Tensor::new(&[-2.0f64, -1.0, 0.0, 0.5, 3.0], &Device::Cpu).unwrap();
        let g = Pointwise::GammaCurve { gamma: 2.0 }.apply(&x).unwrap();
        let expect = [-1.0, -1.0, -0.5, 2.0 * 0.75f64.powi(2) - 1.0, 1.0];
        for (a, b) in g.to_vec1::<f64>().unwrap().iter().zip(expect) {
            assert!((a - b).abs() < 1e-15);
        }
        let c = Pointwise::Clipping { lo: -1.0, hi: 1.0 }.apply(&x).unwrap();
        assert_eq!(c.to_vec1::<f64>().unwrap(), vec![-1.0, -1.0, 0.0, 0.5, 1.0]);
        let s = Pointwise::Saturation { k: 2.0 }.apply(&x).unwrap();
        assert!((s.to_vec1::<f64>().unwrap()[3] - 1f64.tanh() / 2.0).abs() < 1e-15);
        // f32 stays f32.
        let x32 = x.to_dtype(DType::F32).unwrap();
        assert_eq!(
            Pointwise::GammaCurve { gamma: 2.0 }
                .derivative(&x32)
                .unwrap()
                .dtype(),
            DType::F32
        );
    }
}
