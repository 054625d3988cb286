//! Fields, methods, indexing and slicing of run-time values: `A.domain`, `A.adjoint(v)`,
//! `ts.pairs`, `xs[i]`, `x[a:b]`.

use candle_core::Tensor;

use super::arith::as_f64;
use super::error::RunError;
use super::interp::{known_dims, Interp};
use super::value::Value;
use crate::check::types::Type;
use crate::graph::NodeId;
use crate::source::Span;

fn op_err(span: Span) -> impl Fn(crate::operators::OperatorError) -> RunError {
    move |e| RunError::at(span, e.to_string())
}

/// The shape the checker computed for node `n` (a Shape or Tensor type), when fully known.
fn type_dims(it: &Interp, n: NodeId) -> Option<Vec<usize>> {
    match &it.prog.graph.node(n).ty {
        Type::ShapeVal(s) | Type::Tensor(s) => known_dims(s),
        _ => None,
    }
}

fn shape_value(span: Span, dims: Option<Vec<usize>>, what: &str) -> Result<Value, RunError> {
    dims.map(Value::Shape).ok_or_else(|| {
        RunError::at(span, format!("{what} is not known before running"))
            .with_help("apply the operator to an image first, so its shape is fixed")
    })
}

/// `recv.name`.
pub fn field(it: &Interp, n: NodeId, name: &str, recv: &Value) -> Result<Value, RunError> {
    let span = it.prog.graph.node(n).span;
    let image_dim = |t: &Tensor, from_end: usize| -> Result<Value, RunError> {
        let d = t.dims();
        if d.len() < 3 {
            return Err(RunError::at(
                span,
                format!("`{name}` needs an image [C, H, W], not {d:?}"),
            ));
        }
        Ok(Value::Int(d[d.len() - from_end] as i64))
    };
    Ok(match (recv, name) {
        (Value::Operator(_), "domain" | "range") => {
            shape_value(span, type_dims(it, n), &format!("the operator's {name}"))?
        }
        (Value::Model(m), "shape") => Value::Shape(m.shape().to_vec()),
        (Value::Model(m), "sigma_data") => Value::Float(m.sigma_data()),
        (Value::Model(m), "sigma_min") => Value::Float(m.sigma_min()),
        (Value::Model(m), "sigma_max") => Value::Float(m.sigma_max()),
        (Value::Schedule(s), "sigmas") => Value::list(s.iter().map(|x| Value::Float(*x)).collect()),
        (Value::Schedule(s), "pairs") => Value::list(
            s.windows(2)
                .map(|w| Value::tuple(vec![Value::Float(w[0]), Value::Float(w[1])]))
                .collect(),
        ),
        (Value::Schedule(s), "first") => Value::Float(*s.first().unwrap_or(&f64::NAN)),
        (Value::Schedule(s), "last") => Value::Float(*s.last().unwrap_or(&f64::NAN)),
        (Value::Schedule(s), "len") => Value::Int(s.len() as i64),
        (Value::Tensor(t), "shape") => Value::Shape(t.dims().to_vec()),
        (Value::Tensor(t), "channels") => image_dim(t, 3)?,
        (Value::Tensor(t), "height") => image_dim(t, 2)?,
        (Value::Tensor(t), "width") => image_dim(t, 1)?,
        (Value::List(xs), "len") => Value::Int(xs.len() as i64),
        (Value::Shape(s), "rank") => Value::Int(s.len() as i64),
        (other, _) => {
            return Err(RunError::at(
                span,
                format!("{} has no field `{name}`", other.kind()),
            ))
        }
    })
}

/// `recv.name(args)`: the methods of operators.
pub fn method(it: &mut Interp, n: NodeId, name: &str, a: Vec<Value>) -> Result<Value, RunError> {
    let span = it.prog.graph.node(n).span;
    let Some(Value::Operator(op)) = a.first() else {
        return Err(RunError::at(
            span,
            format!("only operators have methods, not `{name}`"),
        ));
    };
    let tensor = |i: usize| -> Result<Tensor, RunError> {
        match a.get(i) {
            Some(Value::Tensor(t)) => Ok(t.clone()),
            Some(other) => Err(RunError::at(
                span,
                format!("expected a Tensor, found {}", other.kind()),
            )),
            None => Err(RunError::at(
                span,
                format!("`{name}` is missing an argument"),
            )),
        }
    };
    let number = |i: usize| -> Result<f64, RunError> {
        a.get(i)
            .and_then(as_f64)
            .ok_or_else(|| RunError::at(span, format!("`{name}` needs a Float argument")))
    };
    let svd = || {
        op.svd()
            .ok_or_else(|| RunError::at(span, format!("{} has no known SVD", op.name())))
    };
    let e = op_err(span);
    let out = match name {
        "adjoint" => op.adjoint(&tensor(1)?).map_err(e)?,
        "pinv" => op.pinv(&tensor(1)?).map_err(e)?,
        "visualize" => op.visualize(&tensor(1)?).map_err(e)?,
        "domain_for" => {
            return shape_value(span, type_dims(it, n), "the operator's domain");
        }
        "gram_solve" => op
            .gram_solve(&tensor(1)?, number(2)?, number(3)?)
            .map_err(e)?,
        "svd_vt" => svd()?.vt(&tensor(1)?).map_err(e)?,
        "svd_v" => svd()?.v(&tensor(1)?).map_err(e)?,
        "svd_u" => svd()?.u(&tensor(1)?).map_err(e)?,
        "svd_ut" => {
            let domain = type_dims(it, n).ok_or_else(|| {
                RunError::at(span, "the operator's domain is not known before running")
            })?;
            // The result of a batch is a batch: the domain of one image follows its batch size.
            let y = tensor(1)?;
            let image = if domain.len() == 4 {
                &domain[1..]
            } else {
                &domain[..]
            };
            svd()?.ut(&y, image).map_err(e)?
        }
        "singular_values" | "singular_values_cut" => {
            let domain = type_dims(it, n).ok_or_else(|| {
                RunError::at(span, "the operator's domain is not known before running")
            })?;
            let env = &it.prog.env;
            if name == "singular_values" {
                svd()?
                    .singular_values(&domain, env.dtype, &env.device)
                    .map_err(e)?
            } else {
                svd()?
                    .singular_values_cut(&domain, env.dtype, &env.device, number(1)?)
                    .map_err(e)?
            }
        }
        other => {
            return Err(RunError::at(
                span,
                format!("operators have no method `{other}`"),
            ))
        }
    };
    Ok(Value::Tensor(out))
}

/// `base[index]`.
pub fn index(span: Span, base: &Value, idx: &Value) -> Result<Value, RunError> {
    let Value::Int(i) = *idx else {
        return Err(RunError::at(
            span,
            format!("an index must be an Int, not {}", idx.kind()),
        ));
    };
    // Like the checker: indices count from 0; there is no negative indexing.
    let pick = |len: usize| -> Result<usize, RunError> {
        let j = i;
        if j < 0 || j >= len as i64 {
            Err(RunError::at(
                span,
                format!("index {i} is out of range for a length of {len}"),
            ))
        } else {
            Ok(j as usize)
        }
    };
    Ok(match base {
        Value::List(xs) => xs[pick(xs.len())?].clone(),
        Value::Tuple(xs) => xs[pick(xs.len())?].clone(),
        Value::Schedule(s) => Value::Float(s[pick(s.len())?]),
        Value::Shape(s) => Value::Int(s[pick(s.len())?] as i64),
        Value::Tensor(t) => {
            let len = t.dims().first().copied().unwrap_or(0);
            let j = pick(len)?;
            let item = t.get(j).map_err(|e| RunError::at(span, e.to_string()))?;
            if item.rank() == 0 {
                Value::Scalar(item)
            } else {
                Value::Tensor(item)
            }
        }
        other => {
            return Err(RunError::at(
                span,
                format!("{} cannot be indexed", other.kind()),
            ))
        }
    })
}

/// `base[from:to]`: a range of a tensor's first dimension or of a list; `from` defaults to 0
/// and `to` (excluded) to the length.
pub fn slice(
    span: Span,
    base: &Value,
    from: Option<&Value>,
    to: Option<&Value>,
) -> Result<Value, RunError> {
    let bound = |v: Option<&Value>, default: usize| -> Result<i64, RunError> {
        match v {
            None => Ok(default as i64),
            Some(Value::Int(i)) => Ok(*i),
            Some(other) => Err(RunError::at(
                span,
                format!("a slice bound must be an Int, not {}", other.kind()),
            )),
        }
    };
    // The range `a..b` of a first dimension of length `len`.
    let range = |len: usize| -> Result<(usize, usize), RunError> {
        let (a, b) = (bound(from, 0)?, bound(to, len)?);
        if a < 0 || b < a || b > len as i64 {
            return Err(RunError::at(
                span,
                format!("the slice {a}:{b} is out of range for a length of {len}"),
            ));
        }
        Ok((a as usize, b as usize))
    };
    match base {
        Value::List(xs) => {
            let (a, b) = range(xs.len())?;
            Ok(Value::list(xs[a..b].to_vec()))
        }
        Value::Tensor(t) if t.rank() > 0 => {
            let (a, b) = range(t.dims()[0])?;
            let part = t
                .narrow(0, a, b - a)
                .map_err(|e| RunError::at(span, e.to_string()))?;
            Ok(Value::Tensor(part))
        }
        other => Err(RunError::at(
            span,
            format!("{} cannot be sliced", other.kind()),
        )),
    }
}
