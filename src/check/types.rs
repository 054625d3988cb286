//! The checker's types: scalars, tensors with shapes, operators, models and the rest.
//!
//! Shapes are lists of [`Dim`]s. A dimension is either known or a variable ([`DimVar`]) that
//! the [`super::unify::DimTable`] binds as uses are checked: `inpaint(mask)` has the domain
//! `[?c, 28, 28]`, and applying it to a `[1, 28, 28]` image binds `?c = 1` for every later use.
//! [`Type::Error`] stands for a value whose type could not be computed because of an error
//! already reported: it is compatible with everything, so one mistake gives one message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A dimension variable, bound by unification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DimVar(pub u32);

/// One dimension of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dim {
    /// A size known before running.
    Known(u64),
    /// A size still to be found out.
    Var(DimVar),
}

/// A tensor shape: a known rank with (possibly unknown) dimensions, or nothing known.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shape {
    /// Rank and dimensions, e.g. `[C, H, W]`.
    Dims(Vec<Dim>),
    /// Not known (a `Tensor` annotation without dimensions).
    Unknown,
}

impl Shape {
    /// A shape of known sizes.
    pub fn known(dims: &[u64]) -> Shape {
        Shape::Dims(dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    /// The rank, when known.
    pub fn rank(&self) -> Option<usize> {
        match self {
            Shape::Dims(d) => Some(d.len()),
            Shape::Unknown => None,
        }
    }
}

/// The kind of a model value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelKind {
    /// An EDM denoiser D(x, sigma).
    Denoiser,
    /// A consistency function f(x, t).
    Consistency,
    /// An analytic prior: both a denoiser and a consistency function.
    Prior,
    /// An image classifier, for evaluation.
    Classifier,
    /// Any of the above (the `Model` annotation).
    Any,
}

impl ModelKind {
    /// The type name as written in annotations.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Denoiser => "Denoiser",
            ModelKind::Consistency => "Consistency",
            ModelKind::Prior => "Prior",
            ModelKind::Classifier => "Classifier",
            ModelKind::Any => "Model",
        }
    }
}

/// What is known of a model before running: its kind and image shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelType {
    /// Denoiser, consistency model or analytic prior.
    pub kind: ModelKind,
    /// The image shape it works on (`[C, H, W]`).
    pub shape: Shape,
}

/// What is known of a forward operator before running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpType {
    /// The shape of what it applies to.
    pub domain: Shape,
    /// The shape of what it produces.
    pub range: Shape,
    /// Linear: has an adjoint, a pseudo-inverse and a Gram solve.
    pub linear: bool,
    /// Has a known singular value decomposition (needed by DDRM).
    pub svd: bool,
}

/// A reference to a function value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FnRef {
    /// A user or library function: module index and item index.
    User {
        /// Module (file) index in the checker's module table.
        module: usize,
        /// The function's name.
        name: String,
    },
    /// A built-in, by name.
    Builtin(String),
}

/// A type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Type {
    /// Anything (an unannotated parameter while a function is checked on its own).
    Any,
    /// The type of an expression that already failed to check.
    Error,
    /// `()`.
    Unit,
    /// `true` / `false`.
    Bool,
    /// A 64-bit integer.
    Int,
    /// A floating-point number.
    Float,
    /// Text.
    Str,
    /// A tensor (an image is a `[C, H, W]` tensor, a batch `[N, C, H, W]`).
    Tensor(Shape),
    /// A shape as a value (`A.domain`, `shape(1, 28, 28)`).
    ShapeVal(Shape),
    /// A forward operator.
    Operator(Box<OpType>),
    /// A model (denoiser, consistency model or analytic prior).
    Model(Box<ModelType>),
    /// A list of noise levels.
    Schedule,
    /// An optimizer (SGD, momentum, Adam) with its hyper-parameters.
    Optimizer,
    /// A measurement noise model; `additive` ones can be added to a tensor.
    Noise {
        /// True for Gaussian noise, which `x + noise` applies.
        additive: bool,
    },
    /// A homogeneous list.
    List(Box<Type>),
    /// A tuple.
    Tuple(Vec<Type>),
    /// A function value.
    Fn(FnRef),
}

impl Type {
    /// True for `Error` and `Any`, which are compatible with everything.
    pub fn is_open(&self) -> bool {
        matches!(self, Type::Error | Type::Any)
    }

    /// True for `Int` and `Float`.
    pub fn is_number(&self) -> bool {
        matches!(self, Type::Int | Type::Float)
    }

    /// A tensor of unknown shape.
    pub fn tensor() -> Type {
        Type::Tensor(Shape::Unknown)
    }

    /// The name of the type's kind, for messages ("a tensor", "an operator").
    pub fn kind_phrase(&self) -> &'static str {
        match self {
            Type::Any => "any value",
            Type::Error => "an erroneous value",
            Type::Unit => "`()`",
            Type::Bool => "a Bool",
            Type::Int => "an Int",
            Type::Float => "a Float",
            Type::Str => "a String",
            Type::Tensor(_) => "a Tensor",
            Type::ShapeVal(_) => "a Shape",
            Type::Operator(_) => "an Operator",
            Type::Model(m) => match m.kind {
                ModelKind::Denoiser => "a Denoiser",
                ModelKind::Consistency => "a Consistency model",
                ModelKind::Prior => "a Prior",
                ModelKind::Classifier => "a Classifier",
                ModelKind::Any => "a Model",
            },
            Type::Schedule => "a Schedule",
            Type::Optimizer => "an Optimizer",
            Type::Noise { .. } => "a Noise model",
            Type::List(_) => "a List",
            Type::Tuple(_) => "a tuple",
            Type::Fn(_) => "a function",
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Var(_) => f.write_str("_"),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Unknown => f.write_str("[..]"),
            Shape::Dims(d) => {
                f.write_str("[")?;
                for (i, x) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => f.write_str("Any"),
            Type::Error => f.write_str("{error}"),
            Type::Unit => f.write_str("()"),
            Type::Bool => f.write_str("Bool"),
            Type::Int => f.write_str("Int"),
            Type::Float => f.write_str("Float"),
            Type::Str => f.write_str("String"),
            Type::Tensor(Shape::Unknown) => f.write_str("Tensor"),
            Type::Tensor(s) => write!(f, "Tensor{s}"),
            Type::ShapeVal(s) => write!(f, "Shape{s}"),
            Type::Operator(o) => {
                let cap = if o.svd {
                    "[svd] "
                } else if o.linear {
                    "[linear] "
                } else {
                    " "
                };
                let known = |s: &Shape| matches!(s, Shape::Dims(d) if d.iter().any(|x| matches!(x, Dim::Known(_))));
                if known(&o.domain) || known(&o.range) {
                    write!(f, "Operator{cap}{} -> {}", o.domain, o.range)
                } else {
                    write!(f, "Operator{}", cap.trim_end())
                }
            }
            Type::Model(m) => match &m.shape {
                Shape::Unknown => f.write_str(m.kind.name()),
                s => write!(f, "{}{s}", m.kind.name()),
            },
            Type::Schedule => f.write_str("Schedule"),
            Type::Optimizer => f.write_str("Optimizer"),
            Type::Noise { .. } => f.write_str("Noise"),
            Type::List(t) => write!(f, "List[{t}]"),
            Type::Tuple(ts) => {
                f.write_str("(")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                if ts.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Type::Fn(FnRef::User { name, .. }) | Type::Fn(FnRef::Builtin(name)) => {
                write!(f, "fn {name}")
            }
        }
    }
}
