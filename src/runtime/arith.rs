//! The language's operators on run-time values: arithmetic on numbers and tensors (with
//! broadcasting), comparisons, logic, and the algebra of forward operators.

use candle_core::Tensor;

use super::value::{NoiseSpec, Value};
use crate::operators::Operator;
use crate::syntax::ast::{BinOp, UnOp};

/// A number or tensor operand, after classifying a value.
enum Num {
    Int(i64),
    Float(f64),
    /// A 0-d tensor (a Scalar) or a full tensor.
    Tensor(Tensor),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Float(f) => Some(Num::Float(*f)),
        Value::Scalar(t) | Value::Tensor(t) => Some(Num::Tensor(t.clone())),
        _ => None,
    }
}

/// A tensor result: a Scalar when it has no dimensions.
fn wrap(t: Tensor) -> Value {
    if t.rank() == 0 {
        Value::Scalar(t)
    } else {
        Value::Tensor(t)
    }
}

/// A value as an f64 (Ints, Floats and Scalars).
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Scalar(t) => t
            .to_dtype(candle_core::DType::F64)
            .and_then(|t| t.to_scalar::<f64>())
            .ok(),
        _ => None,
    }
}

/// `-v` and `not v`.
pub fn unary(op: UnOp, v: &Value) -> Result<Value, String> {
    match (op, v) {
        (UnOp::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
        (UnOp::Neg, Value::Int(i)) => i
            .checked_neg()
            .map(Value::Int)
            .ok_or_else(|| "integer overflow".to_string()),
        (UnOp::Neg, Value::Float(f)) => Ok(Value::Float(-f)),
        (UnOp::Neg, Value::Scalar(t) | Value::Tensor(t)) => {
            t.neg().map(wrap).map_err(|e| e.to_string())
        }
        (UnOp::Neg, Value::Operator(a)) => Ok(Value::Operator(Operator::scale(-1.0, a))),
        (op, v) => Err(format!(
            "cannot apply `{}` to {}",
            op.as_str().trim(),
            v.kind()
        )),
    }
}

/// `a op b`.
pub fn binary(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    use BinOp::*;
    match op {
        And | Or => match (a, b) {
            (Value::Bool(x), Value::Bool(y)) => {
                Ok(Value::Bool(if op == And { *x && *y } else { *x || *y }))
            }
            _ => Err(mismatch(op, a, b)),
        },
        Eq | Ne => {
            let same = match (a, b) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Str(x), Value::Str(y)) => x == y,
                (Value::Int(x), Value::Int(y)) => x == y,
                _ => match (as_f64(a), as_f64(b)) {
                    (Some(x), Some(y)) => x == y,
                    _ => return Err(mismatch(op, a, b)),
                },
            };
            Ok(Value::Bool(if op == Eq { same } else { !same }))
        }
        Lt | Le | Gt | Ge => {
            let ord = match (a, b) {
                (Value::Int(x), Value::Int(y)) => x.partial_cmp(y),
                _ => match (as_f64(a), as_f64(b)) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => return Err(mismatch(op, a, b)),
                },
            };
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match (op, ord) {
                (_, None) => false,
                (Lt, Some(o)) => o == Less,
                (Le, Some(o)) => o != Greater,
                (Gt, Some(o)) => o == Greater,
                (_, Some(o)) => o != Less,
            }))
        }
        Compose => match (a, b) {
            (Value::Operator(x), Value::Operator(y)) => {
                Ok(Value::Operator(Operator::compose(x, y)))
            }
            _ => Err(mismatch(op, a, b)),
        },
        Add | Sub | Mul | Div | Rem | Pow => match (a, b) {
            (Value::Operator(x), Value::Operator(y)) if op == Add => {
                Ok(Value::Operator(Operator::sum(x, y)))
            }
            (Value::Operator(x), Value::Operator(y)) if op == Sub => {
                Ok(Value::Operator(Operator::difference(x, y)))
            }
            (Value::Operator(x), c) if op == Div => match as_f64(c) {
                Some(c) => Ok(Value::Operator(Operator::scale(1.0 / c, x))),
                None => Err(mismatch(op, a, b)),
            },
            (Value::Str(x), Value::Str(y)) if op == Add => Ok(Value::Str(format!("{x}{y}").into())),
            (Value::Operator(x), c) | (c, Value::Operator(x)) if op == Mul => match as_f64(c) {
                Some(c) => Ok(Value::Operator(Operator::scale(c, x))),
                None => Err(mismatch(op, a, b)),
            },
            (Value::Noise(_), _) | (_, Value::Noise(_)) => Err(
                "noise is applied with `+` after the measurement: `A(x) + gaussian_noise(...)`"
                    .into(),
            ),
            _ => arithmetic(op, a, b),
        },
    }
}

fn mismatch(op: BinOp, a: &Value, b: &Value) -> String {
    format!("cannot compute {} {} {}", a.kind(), op.as_str(), b.kind())
}

/// Arithmetic on numbers and tensors.
fn arithmetic(op: BinOp, a: &Value, b: &Value) -> Result<Value, String> {
    let (Some(x), Some(y)) = (num(a), num(b)) else {
        return Err(mismatch(op, a, b));
    };
    let e = |e: candle_core::Error| e.to_string();
    match (x, y) {
        // Like the checker: `/` and `^` of two Ints give a Float.
        (Num::Int(x), Num::Int(y)) if matches!(op, BinOp::Div | BinOp::Pow) => {
            Ok(Value::Float(float_op(op, x as f64, y as f64)))
        }
        (Num::Int(x), Num::Int(y)) => int_op(op, x, y).map(Value::Int),
        (Num::Int(x), Num::Float(y)) => Ok(Value::Float(float_op(op, x as f64, y))),
        (Num::Float(x), Num::Int(y)) => Ok(Value::Float(float_op(op, x, y as f64))),
        (Num::Float(x), Num::Float(y)) => Ok(Value::Float(float_op(op, x, y))),
        (Num::Tensor(t), Num::Int(c)) => tensor_scalar(op, &t, c as f64).map(wrap).map_err(e),
        (Num::Tensor(t), Num::Float(c)) => tensor_scalar(op, &t, c).map(wrap).map_err(e),
        (Num::Int(c), Num::Tensor(t)) => scalar_tensor(op, c as f64, &t).map(wrap).map_err(e),
        (Num::Float(c), Num::Tensor(t)) => scalar_tensor(op, c, &t).map(wrap).map_err(e),
        (Num::Tensor(s), Num::Tensor(t)) => tensor_tensor(op, &s, &t).map(wrap).map_err(e),
    }
}

fn int_op(op: BinOp, x: i64, y: i64) -> Result<i64, String> {
    let r = match op {
        BinOp::Add => x.checked_add(y),
        BinOp::Sub => x.checked_sub(y),
        BinOp::Mul => x.checked_mul(y),
        BinOp::Rem if y == 0 => return Err("remainder of a division by zero".into()),
        BinOp::Rem => x.checked_rem(y),
        _ => None,
    };
    r.ok_or_else(|| format!("integer overflow in {x} {} {y}", op.as_str()))
}

fn float_op(op: BinOp, x: f64, y: f64) -> f64 {
    match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div => x / y,
        BinOp::Rem => x % y,
        _ => x.powf(y),
    }
}

/// `t ^ p`: repeated products for small integer powers (exact, and defined for negative
/// bases), `powf` otherwise.
fn tensor_pow(t: &Tensor, p: f64) -> candle_core::Result<Tensor> {
    if p == 2.0 {
        return t.sqr();
    }
    if p.fract() == 0.0 && (1.0..=8.0).contains(&p) {
        let mut out = t.clone();
        for _ in 1..(p as i32) {
            out = (&out * t)?;
        }
        return Ok(out);
    }
    if p == 0.5 {
        return t.sqrt();
    }
    t.powf(p)
}

fn tensor_scalar(op: BinOp, t: &Tensor, c: f64) -> candle_core::Result<Tensor> {
    match op {
        BinOp::Add => t + c,
        BinOp::Sub => t - c,
        BinOp::Mul => t * c,
        BinOp::Div => t / c,
        BinOp::Rem => {
            let q = (t / c)?.floor()?;
            t - (q * c)?
        }
        _ => tensor_pow(t, c),
    }
}

fn scalar_tensor(op: BinOp, c: f64, t: &Tensor) -> candle_core::Result<Tensor> {
    match op {
        BinOp::Add => t + c,
        BinOp::Sub => t.affine(-1.0, c),
        BinOp::Mul => t * c,
        BinOp::Div => t.recip()? * c,
        BinOp::Rem => {
            let full = (t.ones_like()? * c)?;
            tensor_tensor(op, &full, t)
        }
        _ => (t * c.ln())?.exp(),
    }
}

fn tensor_tensor(op: BinOp, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match op {
        BinOp::Add => a.broadcast_add(b),
        BinOp::Sub => a.broadcast_sub(b),
        BinOp::Mul => a.broadcast_mul(b),
        BinOp::Div => a.broadcast_div(b),
        BinOp::Rem => {
            let q = a.broadcast_div(b)?.floor()?;
            a.broadcast_sub(&q.broadcast_mul(b)?)
        }
        _ => {
            // a^b = exp(b ln a), for positive a.
            b.broadcast_mul(&a.log()?)?.exp()
        }
    }
}

/// Adds measurement noise to `x` (`x + noise` and `noise(x)`).
pub fn apply_noise(noise: &NoiseSpec, x: &Tensor, root_seed: u64) -> Result<Tensor, String> {
    let e = |e: candle_core::Error| e.to_string();
    match *noise {
        NoiseSpec::Gaussian { sigma, seed } => {
            if sigma == 0.0 {
                return Ok(x.clone());
            }
            let mut rng = crate::random::generator(root_seed, "gaussian_noise", seed);
            let n = crate::random::normal_tensor(&mut rng, x.dims(), x.dtype(), x.device())
                .map_err(e)?;
            (x + (n * sigma).map_err(e)?).map_err(e)
        }
        NoiseSpec::Poisson { rate, seed } => {
            use rand_distr::{Distribution, Poisson};
            let mut rng = crate::random::generator(root_seed, "poisson_noise", seed);
            let values = crate::diffusion::gaussian::flat_f64(x).map_err(e)?;
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                // Intensity in [0, 1] from [-1, 1]; counts ~ Poisson(rate * intensity).
                let lambda = rate * ((v + 1.0) / 2.0).max(0.0);
                let count = if lambda > 0.0 {
                    Poisson::new(lambda)
                        .map_err(|e| e.to_string())?
                        .sample(&mut rng)
                } else {
                    0.0
                };
                out.push(2.0 * count / rate - 1.0);
            }
            Tensor::from_vec(out, x.dims(), &candle_core::Device::Cpu)
                .and_then(|t| t.to_dtype(x.dtype()))
                .and_then(|t| t.to_device(x.device()))
                .map_err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f64]) -> Value {
        Value::Tensor(Tensor::new(v, &Device::Cpu).unwrap())
    }

    fn vals(v: &Value) -> Vec<f64> {
        match v {
            Value::Tensor(t) => t.to_vec1::<f64>().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn numbers() {
        assert!(matches!(
            binary(BinOp::Add, &Value::Int(2), &Value::Int(3)),
            Ok(Value::Int(5))
        ));
        assert!(
            matches!(binary(BinOp::Pow, &Value::Int(2), &Value::Int(10)), Ok(Value::Float(f)) if f == 1024.0)
        );
        assert!(
            matches!(binary(BinOp::Div, &Value::Int(7), &Value::Int(2)), Ok(Value::Float(f)) if f == 3.5)
        );
        assert!(binary(BinOp::Rem, &Value::Int(1), &Value::Int(0)).is_err());
        assert!(
            matches!(binary(BinOp::Div, &Value::Float(1.0), &Value::Int(4)), Ok(Value::Float(f)) if f == 0.25)
        );
        assert!(binary(BinOp::Mul, &Value::Int(i64::MAX), &Value::Int(2)).is_err());
        assert!(matches!(
            binary(BinOp::Lt, &Value::Int(1), &Value::Float(1.5)),
            Ok(Value::Bool(true))
        ));
    }

    #[test]
    fn tensors_broadcast_with_numbers() {
        let x = t(&[-1.0, 2.0]);
        assert_eq!(
            vals(&binary(BinOp::Sub, &Value::Float(1.0), &x).unwrap()),
            vec![2.0, -1.0]
        );
        assert_eq!(
            vals(&binary(BinOp::Div, &Value::Float(4.0), &x).unwrap()),
            vec![-4.0, 2.0]
        );
        // Integer powers are exact for negative bases.
        assert_eq!(
            vals(&binary(BinOp::Pow, &x, &Value::Int(3)).unwrap()),
            vec![-1.0, 8.0]
        );
        assert_eq!(vals(&binary(BinOp::Mul, &x, &x).unwrap()), vec![1.0, 4.0]);
        let s = binary(BinOp::Pow, &Value::Float(2.0), &t(&[3.0])).unwrap();
        assert!((vals(&s)[0] - 8.0).abs() < 1e-12);
    }
}
