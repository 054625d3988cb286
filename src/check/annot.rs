//! Type annotations: turning `Tensor[C, H, W]`, `Operator[svd]`, `List[Float]` into types,
//! and checking values against them.

use std::collections::HashMap;

use super::types::{Dim, ModelKind, ModelType, OpType, Shape, Type};
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::source::Span;
use crate::syntax::ast::{TypeArg, TypeExpr, TypeExprKind};

/// The type names an annotation may use.
pub const TYPE_NAMES: [&str; 21] = [
    "Int",
    "Float",
    "Bool",
    "String",
    "Unit",
    "Tensor",
    "Image",
    "Shape",
    "Operator",
    "Denoiser",
    "Consistency",
    "Prior",
    "Classifier",
    "Model",
    "Schedule",
    "Optimizer",
    "Noise",
    "List",
    "Fn",
    "Any",
    "Tuple",
];

/// Dimension variables named in one signature (`C`, `H`, `W`), shared by its parameters.
pub type DimNames = HashMap<String, Dim>;

/// The help line when an operator without a known SVD is given where one is needed.
pub(super) const SVD_HELP: &str = "operators with a known SVD are masks (`inpaint`), `downsample`, `gaussian_blur` and `uniform_blur`; compositions of them have none";

/// The help line when a non-linear operator is given where a linear one is needed.
pub(super) const LINEAR_HELP: &str =
    "pointwise operators (`clipping`, `gamma_curve`, `saturation`) are not linear";

impl Checker {
    /// The type an annotation denotes; dimension names are looked up (or created) in `names`.
    pub(super) fn type_of_annotation(&mut self, t: &TypeExpr, names: &mut DimNames) -> Type {
        match &t.node {
            TypeExprKind::Tuple(ts) => {
                if ts.is_empty() {
                    return Type::Unit;
                }
                Type::Tuple(
                    ts.iter()
                        .map(|x| self.type_of_annotation(x, names))
                        .collect(),
                )
            }
            TypeExprKind::Named { name, args } => {
                let n = name.node.as_str();
                let no_args = |cx: &mut Checker, ty: Type| {
                    if !args.is_empty() {
                        cx.report(
                            Diag::error(
                                Code::UnknownType,
                                t.span,
                                format!("`{n}` takes no arguments in brackets"),
                                "here",
                            )
                            .with_help(format!("write `{n}`")),
                        );
                    }
                    ty
                };
                match n {
                    "Int" => no_args(self, Type::Int),
                    "Float" => no_args(self, Type::Float),
                    "Bool" => no_args(self, Type::Bool),
                    "String" => no_args(self, Type::Str),
                    "Unit" => no_args(self, Type::Unit),
                    "Schedule" => no_args(self, Type::Schedule),
                    "Optimizer" => no_args(self, Type::Optimizer),
                    "Noise" => no_args(self, Type::Noise { additive: false }),
                    "Any" => no_args(self, Type::Any),
                    "Fn" => no_args(self, Type::Fn(super::types::FnRef::Builtin(String::new()))),
                    "Tensor" | "Image" | "Shape" => {
                        let shape = if args.is_empty() {
                            if n == "Image" {
                                Shape::Dims(vec![
                                    self.dims.fresh(),
                                    self.dims.fresh(),
                                    self.dims.fresh(),
                                ])
                            } else {
                                Shape::Unknown
                            }
                        } else {
                            Shape::Dims(args.iter().map(|a| self.dim_of(a, names)).collect())
                        };
                        if n == "Image" && shape.rank() != Some(3) {
                            self.report(
                                Diag::error(Code::UnknownType, t.span, "an `Image` has three dimensions `[C, H, W]`", "here")
                                    .with_help("write `Image`, `Image[C, H, W]`, or `Tensor[...]` for other ranks"),
                            );
                        }
                        if n == "Shape" {
                            Type::ShapeVal(shape)
                        } else {
                            Type::Tensor(shape)
                        }
                    }
                    "Operator" => {
                        let mut linear = false;
                        let mut svd = false;
                        for a in args {
                            match a {
                                TypeArg::Type(ty_arg) if is_word(ty_arg, "linear") => linear = true,
                                TypeArg::Type(ty_arg) if is_word(ty_arg, "svd") => {
                                    linear = true;
                                    svd = true
                                }
                                _ => self.report(
                                    Diag::error(
                                        Code::UnknownType,
                                        t.span,
                                        "`Operator[...]` takes `linear` or `svd`",
                                        "here",
                                    )
                                    .with_help(
                                        "write `Operator`, `Operator[linear]` or `Operator[svd]`",
                                    ),
                                ),
                            }
                        }
                        Type::Operator(Box::new(OpType {
                            domain: Shape::Unknown,
                            range: Shape::Unknown,
                            linear,
                            svd,
                        }))
                    }
                    "Denoiser" | "Consistency" | "Prior" | "Classifier" | "Model" => {
                        let kind = match n {
                            "Denoiser" => ModelKind::Denoiser,
                            "Classifier" => ModelKind::Classifier,
                            "Consistency" => ModelKind::Consistency,
                            "Prior" => ModelKind::Prior,
                            _ => ModelKind::Any,
                        };
                        let shape = if args.is_empty() {
                            Shape::Unknown
                        } else {
                            Shape::Dims(args.iter().map(|a| self.dim_of(a, names)).collect())
                        };
                        Type::Model(Box::new(ModelType { kind, shape }))
                    }
                    "List" => match args.as_slice() {
                        [TypeArg::Type(inner)] => {
                            Type::List(Box::new(self.type_of_annotation(inner, names)))
                        }
                        _ => {
                            self.report(
                                Diag::error(
                                    Code::UnknownType,
                                    t.span,
                                    "`List` takes one element type",
                                    "here",
                                )
                                .with_help("write `List[Float]`"),
                            );
                            Type::Error
                        }
                    },
                    _ => {
                        let mut d = Diag::error(
                            Code::UnknownType,
                            name.span,
                            format!("unknown type `{n}`"),
                            "not a type",
                        );
                        if let Some(s) = super::suggest::closest(n, TYPE_NAMES.iter().copied()) {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        } else {
                            d = d.with_help(format!("the types are: {}", TYPE_NAMES.join(", ")));
                        }
                        self.report(d);
                        Type::Error
                    }
                }
            }
        }
    }

    /// One dimension of a shape annotation.
    fn dim_of(&mut self, a: &TypeArg, names: &mut DimNames) -> Dim {
        match a {
            TypeArg::Dim(n) => Dim::Known(n.node),
            TypeArg::Any(_) => self.dims.fresh(),
            TypeArg::Type(t) => match &t.node {
                TypeExprKind::Named { name, args } if args.is_empty() => {
                    if let Some(d) = names.get(&name.node) {
                        *d
                    } else {
                        let d = self.dims.fresh();
                        names.insert(name.node.clone(), d);
                        d
                    }
                }
                _ => {
                    self.report(
                        Diag::error(
                            Code::UnknownType,
                            t.span,
                            "a dimension must be a number, a name or `_`",
                            "here",
                        )
                        .with_help("write shapes like `Tensor[1, H, W]`"),
                    );
                    self.dims.fresh()
                }
            },
        }
    }

    /// Checks `v` against an optional annotation and returns it with the annotated type where
    /// that is more precise (an Int given where a Float is declared becomes a Float).
    pub(super) fn annotate(&mut self, v: Val, ann: Option<&TypeExpr>) -> Val {
        let Some(t) = ann else { return v };
        let want = self.type_of_annotation(t, &mut DimNames::new());
        self.coerce(v, &want, t.span, "the annotation")
    }

    /// Checks that `v` fits `want`, reporting a mismatch that points at both `v` and `decl`.
    pub(super) fn coerce(&mut self, v: Val, want: &Type, decl: Span, what: &str) -> Val {
        match self.coerce_or_diag(v, want, decl, what) {
            Ok(v) => v,
            Err(e) => {
                let (d, v) = *e;
                self.report(d);
                v
            }
        }
    }

    /// [`Self::coerce`] that returns the diagnostic (and the value as an error) instead of
    /// reporting it, so a caller can reword it.
    pub(super) fn coerce_or_diag(
        &mut self,
        v: Val,
        want: &Type,
        decl: Span,
        what: &str,
    ) -> Result<Val, Box<(Diag, Val)>> {
        match self.fits(&v.ty, want) {
            Ok(ty) => Ok(Val { ty, ..v }),
            Err(reason) => {
                let have = self.dims.resolve_type(&v.ty);
                let want_r = self.dims.resolve_type(want);
                let code = if reason.is_some() {
                    Code::ShapeMismatch
                } else {
                    Code::TypeMismatch
                };
                let mut d = Diag::error(
                    code,
                    v.span,
                    format!("expected {want_r}, found {have}"),
                    format!("this is {have}"),
                )
                .with_label(decl, format!("{what} wants {want_r}"));
                if let Some(r) = reason {
                    d = d.with_note(r);
                }
                d = match (&v.ty, want) {
                    (Type::Operator(o), Type::Operator(w)) if w.svd && !o.svd => {
                        d.with_help(SVD_HELP)
                    }
                    (Type::Operator(o), Type::Operator(w)) if w.linear && !o.linear => {
                        d.with_help(LINEAR_HELP)
                    }
                    (Type::Str, Type::Int | Type::Float) => d.with_help("remove the quotes"),
                    (Type::Int | Type::Float, Type::Str) => {
                        d.with_help("put the value in double quotes")
                    }
                    _ => d,
                };
                if let (Type::Operator(o), Type::Operator(w)) = (&v.ty, want) {
                    let lacking = if w.svd && !o.svd {
                        Some((
                            "an operator with a known SVD",
                            "this operator has no known SVD",
                        ))
                    } else if w.linear && !o.linear {
                        Some(("a linear operator", "this operator is not linear"))
                    } else {
                        None
                    };
                    if let Some((cap, label)) = lacking {
                        d.code = Code::Capability;
                        d.message = format!("{what} needs {cap}");
                        d.labels[0].text = label.to_string();
                    }
                }
                Err(Box::new((
                    d,
                    Val {
                        ty: Type::Error,
                        ..v
                    },
                )))
            }
        }
    }

    /// Whether a value of type `have` can be used where `want` is expected; returns the type
    /// the value then has. `Err(Some(reason))` is a shape problem, `Err(None)` a kind problem.
    pub(super) fn fits(&mut self, have: &Type, want: &Type) -> Result<Type, Option<String>> {
        use Type::*;
        match (have, want) {
            (h, _) if h.is_open() => Ok(if matches!(want, Any) {
                h.clone()
            } else {
                want.clone()
            }),
            (_, Any) | (_, Error) => Ok(have.clone()),
            (Int, Float) => Ok(Float),
            (Int, Int)
            | (Float, Float)
            | (Bool, Bool)
            | (Str, Str)
            | (Unit, Unit)
            | (Schedule, Schedule)
            | (Optimizer, Optimizer) => Ok(have.clone()),
            (Noise { .. }, Noise { .. }) => Ok(have.clone()),
            (Tensor(a), Tensor(b)) | (ShapeVal(a), ShapeVal(b)) => {
                match self.dims.unify_shape(a, b) {
                    Ok(()) => Ok(if matches!(b, Shape::Unknown) {
                        have.clone()
                    } else {
                        want.clone()
                    }),
                    Err(c) => Err(Some(self.describe_conflict(&c, a, b))),
                }
            }
            (Operator(o), Operator(w)) => {
                if (w.linear && !o.linear) || (w.svd && !o.svd) {
                    return Err(None);
                }
                self.dims
                    .unify_shape(&o.domain, &w.domain)
                    .map_err(|c| Some(self.describe_conflict(&c, &o.domain, &w.domain)))?;
                self.dims
                    .unify_shape(&o.range, &w.range)
                    .map_err(|c| Some(self.describe_conflict(&c, &o.range, &w.range)))?;
                Ok(have.clone())
            }
            (Model(m), Model(w)) => {
                // A Prior stands in for a Denoiser or a Consistency model, never a Classifier.
                let kind_ok = m.kind == w.kind
                    || (m.kind == ModelKind::Prior && w.kind != ModelKind::Classifier)
                    || w.kind == ModelKind::Any;
                if !kind_ok {
                    return Err(None);
                }
                self.dims
                    .unify_shape(&m.shape, &w.shape)
                    .map_err(|c| Some(self.describe_conflict(&c, &m.shape, &w.shape)))?;
                // A Prior passed as a Denoiser or a Consistency model takes that role: calling
                // it then means D(x, sigma) or f(x, t) respectively.
                let kind = match w.kind {
                    ModelKind::Denoiser | ModelKind::Consistency => w.kind,
                    _ => m.kind,
                };
                Ok(Model(Box::new(ModelType {
                    kind,
                    shape: m.shape.clone(),
                })))
            }
            (List(a), List(b)) => {
                let e = self.fits(a, b)?;
                Ok(List(Box::new(e)))
            }
            (Tuple(a), Tuple(b)) if a.len() == b.len() => {
                let mut out = Vec::new();
                for (x, y) in a.iter().zip(b) {
                    out.push(self.fits(x, y)?);
                }
                Ok(Tuple(out))
            }
            (Fn(_), Fn(super::types::FnRef::Builtin(n))) if n.is_empty() => Ok(have.clone()),
            _ => Err(None),
        }
    }

    /// Reports `v` unless it has type `want` (no coercion other than Int to Float).
    pub(super) fn expect_type(&mut self, v: &Val, want: &Type, what: &str) -> bool {
        if self.fits(&v.ty, want).is_ok() {
            return true;
        }
        let have = self.dims.resolve_type(&v.ty);
        self.report(Diag::error(
            Code::TypeMismatch,
            v.span,
            format!("{what} must be {}, found {have}", want.kind_phrase()),
            format!("this is {have}"),
        ));
        false
    }

    /// A sentence explaining a shape conflict.
    pub(super) fn describe_conflict(
        &self,
        c: &super::unify::Conflict,
        a: &Shape,
        b: &Shape,
    ) -> String {
        use super::unify::Conflict;
        let a = self.dims.resolve_shape(a);
        let b = self.dims.resolve_shape(b);
        match c {
            Conflict::Rank(x, y) => format!("{a} has {x} dimensions but {b} has {y}"),
            Conflict::Size { axis, left, right } => {
                // Images are [C, H, W]: name their dimensions, all those that differ.
                const NAMES: [&str; 3] = ["the number of channels", "height", "width"];
                if let (Shape::Dims(x), Shape::Dims(y)) = (&a, &b) {
                    // Batches are [N, C, H, W]: a different first dimension is their size.
                    if x.len() == 4 && y.len() == 4 && *axis == 0 {
                        return format!("{a} and {b} differ in the batch size ({left} vs {right})");
                    }
                    if x.len() == 3 && y.len() == 3 {
                        if let [_, Dim::Known(h1), Dim::Known(w1)] = x.as_slice() {
                            if let [_, Dim::Known(h2), Dim::Known(w2)] = y.as_slice() {
                                let channels_differ = matches!((&x[0], &y[0]), (Dim::Known(c1), Dim::Known(c2)) if c1 != c2);
                                if h1 != h2 && w1 != w2 && !channels_differ {
                                    return format!("{a} and {b} differ in height and width ({h1} x {w1} vs {h2} x {w2})");
                                }
                            }
                        }
                        let differ: Vec<String> = (0..3)
                            .filter_map(|i| match (&x[i], &y[i]) {
                                (Dim::Known(l), Dim::Known(r)) if l != r => {
                                    Some(format!("{} ({l} vs {r})", NAMES[i]))
                                }
                                _ => None,
                            })
                            .collect();
                        if !differ.is_empty() {
                            return format!("{a} and {b} differ in {}", differ.join(" and "));
                        }
                    }
                }
                format!("{a} and {b} differ in dimension {axis} ({left} vs {right})")
            }
            Conflict::Scale {
                big, factor, what, ..
            } => {
                format!("a {what} of {big} is not divisible by {factor}")
            }
            Conflict::TooLarge {
                small,
                factor,
                what,
                ..
            } => {
                format!("a {what} of {small} times {factor} is more than can be counted")
            }
        }
    }
}

/// True if a type argument is the bare word `w` (`Operator[svd]`).
fn is_word(t: &TypeExpr, w: &str) -> bool {
    matches!(&t.node, TypeExprKind::Named { name, args } if args.is_empty() && name.node == w)
}
