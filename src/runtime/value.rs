//! Run-time values: what a node of the typed graph evaluates to.
//!
//! Numbers come in two forms. A [`Value::Float`] is a plain `f64` (a literal, a param, a noise
//! level from a schedule). A [`Value::Scalar`] is a number computed from tensors (`sum(x)`,
//! `log_likelihood(...)`), kept as a 0-dimensional tensor so that gradients flow through it;
//! arithmetic with a Scalar gives a Scalar. Everything is cheap to clone: tensors, operators
//! and models are reference-counted.

use std::fmt;
use std::sync::Arc;

use candle_core::Tensor;

use crate::diffusion::Model;
use crate::graph::RegionId;
use crate::operators::Operator;

/// An optimizer recipe; each `ascend`/`descend` block starts it with fresh state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerSpec {
    /// `sgd(lr)`.
    Sgd {
        /// Step size.
        lr: f64,
    },
    /// `momentum(lr, beta)`: v <- beta v + g; z <- z +/- lr v.
    Momentum {
        /// Step size.
        lr: f64,
        /// Momentum coefficient.
        beta: f64,
    },
    /// `adam(lr, betas, eps)` with PyTorch's bias correction.
    Adam {
        /// Step size.
        lr: f64,
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Added to the denominator.
        eps: f64,
    },
}

/// A measurement noise model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseSpec {
    /// Additive N(0, sigma^2 I).
    Gaussian {
        /// Standard deviation.
        sigma: f64,
        /// The draw's seed.
        seed: i64,
    },
    /// Poisson shot noise with `rate` photons per unit intensity.
    Poisson {
        /// Photons per unit intensity.
        rate: f64,
        /// The draw's seed.
        seed: i64,
    },
}

/// A value of the language.
#[derive(Clone)]
pub enum Value {
    /// `()`.
    Unit,
    /// A Bool.
    Bool(bool),
    /// An Int.
    Int(i64),
    /// A Float known as a plain number.
    Float(f64),
    /// A Float computed from tensors: a 0-dimensional tensor that carries gradients.
    Scalar(Tensor),
    /// Text.
    Str(Arc<str>),
    /// A tensor.
    Tensor(Tensor),
    /// A shape as a value.
    Shape(Vec<usize>),
    /// A tuple.
    Tuple(Arc<[Value]>),
    /// A list.
    List(Arc<[Value]>),
    /// A forward operator.
    Operator(Operator),
    /// A model: a trained network or an analytic prior.
    Model(Model),
    /// An image classifier, for scoring samples and restorations.
    Classifier(Arc<crate::models::Classifier>),
    /// A schedule: decreasing noise levels.
    Schedule(Arc<[f64]>),
    /// An optimizer recipe.
    Optimizer(OptimizerSpec),
    /// A noise model.
    Noise(NoiseSpec),
    /// A function value, as the region that computes it.
    Fn(RegionId),
}

impl Value {
    /// The kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Unit => "()",
            Value::Bool(_) => "a Bool",
            Value::Int(_) => "an Int",
            Value::Float(_) | Value::Scalar(_) => "a Float",
            Value::Str(_) => "a String",
            Value::Tensor(_) => "a Tensor",
            Value::Shape(_) => "a Shape",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a List",
            Value::Operator(_) => "an Operator",
            Value::Model(_) => "a Model",
            Value::Classifier(_) => "a Classifier",
            Value::Schedule(_) => "a Schedule",
            Value::Optimizer(_) => "an Optimizer",
            Value::Noise(_) => "a Noise model",
            Value::Fn(_) => "a function",
        }
    }

    /// A tuple from its elements.
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(items.into())
    }

    /// A list from its elements.
    pub fn list(items: Vec<Value>) -> Value {
        Value::List(items.into())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Unit => write!(f, "()"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Scalar(t) => match t.to_dtype(candle_core::DType::F64) {
                Ok(t) => match t.to_scalar::<f64>() {
                    Ok(x) => write!(f, "{x}"),
                    Err(_) => write!(f, "Scalar{:?}", t.dims()),
                },
                Err(_) => write!(f, "Scalar"),
            },
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Tensor(t) => write!(f, "Tensor{:?}", t.dims()),
            Value::Shape(s) => write!(f, "shape{s:?}"),
            Value::Tuple(xs) => f.debug_tuple("").field(xs).finish(),
            Value::List(xs) => f.debug_list().entries(xs.iter()).finish(),
            Value::Operator(o) => write!(f, "{}", o.name()),
            Value::Model(m) => write!(f, "{}", m.name()),
            Value::Classifier(c) => write!(f, "classifier {}", c.card().name),
            Value::Schedule(s) => write!(f, "schedule({} levels)", s.len()),
            Value::Optimizer(o) => write!(f, "{o:?}"),
            Value::Noise(n) => write!(f, "{n:?}"),
            Value::Fn(r) => write!(f, "fn #{}", r.0),
        }
    }
}
