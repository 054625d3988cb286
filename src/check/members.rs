//! Fields and methods of built-in values: `A.domain`, `ts.pairs`, `x.shape`, `A.adjoint(v)`.

use super::batch::{batched, split_batch};
use super::call::ArgVal;
use super::types::{Dim, OpType, Shape, Type};
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, Op};
use crate::source::{Ident, Span};

/// The fields each kind of value has, for messages and suggestions.
fn fields_of(t: &Type) -> &'static [&'static str] {
    match t {
        Type::Operator(_) => &["domain", "range"],
        Type::Model(_) => &["shape", "sigma_data", "sigma_min", "sigma_max"],
        Type::Schedule => &["sigmas", "pairs", "first", "last", "len"],
        Type::Tensor(_) => &["shape", "channels", "height", "width"],
        Type::List(_) => &["len"],
        Type::ShapeVal(_) => &["rank"],
        _ => &[],
    }
}

/// The methods each kind of value has.
fn methods_of(t: &Type) -> &'static [&'static str] {
    match t {
        Type::Operator(_) => &[
            "adjoint",
            "domain_for",
            "pinv",
            "visualize",
            "gram_solve",
            "svd_vt",
            "svd_v",
            "svd_ut",
            "svd_u",
            "singular_values",
            "singular_values_cut",
        ],
        _ => &[],
    }
}

/// The documentation of one field or method of a built-in kind of value, for `mapga doc`.
#[derive(Debug, Clone, Copy)]
pub struct MemberDoc {
    /// The kind of value that has it: `Operator`, `Schedule`, `Model`, `Tensor`, `List`, `Shape`.
    pub receiver: &'static str,
    /// The field or method name.
    pub name: &'static str,
    /// How it is written, with its type: `A.pinv(y: Tensor) -> Tensor`.
    pub signature: &'static str,
    /// What it is.
    pub doc: &'static str,
}

/// Every field and method of [`fields_of`] and [`methods_of`], documented (a unit test keeps
/// the three lists equal).
pub const MEMBER_DOCS: &[MemberDoc] = &[
    MemberDoc { receiver: "Operator", name: "domain", signature: "A.domain -> Shape", doc: "The shape of the images the operator takes (one image, without a batch dimension)." },
    MemberDoc { receiver: "Operator", name: "range", signature: "A.range -> Shape", doc: "The shape of the measurements the operator makes of one image." },
    MemberDoc { receiver: "Operator", name: "adjoint", signature: "A.adjoint(v: Tensor) -> Tensor", doc: "A^T v: the adjoint of a linear operator, range-shaped in, domain-shaped out (one measurement or a batch)." },
    MemberDoc { receiver: "Operator", name: "pinv", signature: "A.pinv(y: Tensor) -> Tensor", doc: "A^+ y = A^T (A A^T)^+ y: the pseudo-inverse of a linear operator, exact where the operator knows its Gram matrix (masks, separable operators, circular convolutions), conjugate gradients otherwise." },
    MemberDoc { receiver: "Operator", name: "visualize", signature: "A.visualize(y: Tensor) -> Tensor", doc: "A measurement shown as a domain-shaped image, for `save` and `grid`: missing pixels grey, a downsampled image enlarged, a blurred image as it is." },
    MemberDoc { receiver: "Operator", name: "domain_for", signature: "A.domain_for(y: Tensor) -> Shape", doc: "The domain shape of the operator that made the measurement `y` (with its batch dimension, when `y` has one): the shape of the image to restore." },
    MemberDoc { receiver: "Operator", name: "gram_solve", signature: "A.gram_solve(r: Tensor, a: Float, b: Float) -> Tensor", doc: "(a A A^T + b I)^+ r, range-shaped: the linear solve of Pi-GDM, DiffPIR and MAP-GA's data term; exact where known, batched conjugate gradients otherwise, with a truncated pseudo-inverse when b = 0." },
    MemberDoc { receiver: "Operator", name: "svd_vt", signature: "A.svd_vt(x: Tensor) -> Tensor", doc: "V^T x: an image in the operator's right singular basis (domain-shaped); needs an operator with a known SVD, as DDRM does." },
    MemberDoc { receiver: "Operator", name: "svd_v", signature: "A.svd_v(x: Tensor) -> Tensor", doc: "V x: back from the right singular basis to an image (the inverse of `svd_vt`)." },
    MemberDoc { receiver: "Operator", name: "svd_ut", signature: "A.svd_ut(y: Tensor) -> Tensor", doc: "U^T y: a measurement in the left singular basis, laid out domain-shaped (zeros where no singular value)." },
    MemberDoc { receiver: "Operator", name: "svd_u", signature: "A.svd_u(c: Tensor) -> Tensor", doc: "U c: domain-shaped coefficients back to a measurement (the inverse of `svd_ut` on the range)." },
    MemberDoc { receiver: "Operator", name: "singular_values", signature: "A.singular_values() -> Tensor", doc: "The singular values, domain-shaped, in the order of `svd_vt` (0 where the operator keeps nothing)." },
    MemberDoc { receiver: "Operator", name: "singular_values_cut", signature: "A.singular_values_cut(s_min: Float) -> Tensor", doc: "The singular values with the small ones set to 0: those below s_min, or, for a separable operator, each axis's values below s_min before their product (as DDRM's official code cuts its blurs)." },
    MemberDoc { receiver: "Model", name: "shape", signature: "m.shape -> Shape", doc: "The image shape the model works on, [C, H, W], from its card." },
    MemberDoc { receiver: "Model", name: "sigma_data", signature: "m.sigma_data -> Float", doc: "The data standard deviation of the model's EDM preconditioning (0.5 for the field's models)." },
    MemberDoc { receiver: "Model", name: "sigma_min", signature: "m.sigma_min -> Float", doc: "The smallest noise level the model was trained on (0.002 for the field's models)." },
    MemberDoc { receiver: "Model", name: "sigma_max", signature: "m.sigma_max -> Float", doc: "The largest noise level the model was trained on (80 for the field's models)." },
    MemberDoc { receiver: "Schedule", name: "sigmas", signature: "ts.sigmas -> List[Float]", doc: "The noise levels of the schedule, from the largest to the smallest." },
    MemberDoc { receiver: "Schedule", name: "pairs", signature: "ts.pairs -> List[(Float, Float)]", doc: "Consecutive levels (sigma, sigma_next), one pair per step of a sampler: `for (s, s_next) in ts.pairs { ... }`." },
    MemberDoc { receiver: "Schedule", name: "first", signature: "ts.first -> Float", doc: "The first (largest) noise level." },
    MemberDoc { receiver: "Schedule", name: "last", signature: "ts.last -> Float", doc: "The last (smallest) noise level." },
    MemberDoc { receiver: "Schedule", name: "len", signature: "ts.len -> Int", doc: "The number of noise levels (steps + 1 for `karras(steps: n)`)." },
    MemberDoc { receiver: "Tensor", name: "shape", signature: "x.shape -> Shape", doc: "The tensor's shape, batch dimension included." },
    MemberDoc { receiver: "Tensor", name: "channels", signature: "x.channels -> Int", doc: "C of an image [C, H, W] or a batch [N, C, H, W]." },
    MemberDoc { receiver: "Tensor", name: "height", signature: "x.height -> Int", doc: "H of an image [C, H, W] or a batch [N, C, H, W]." },
    MemberDoc { receiver: "Tensor", name: "width", signature: "x.width -> Int", doc: "W of an image [C, H, W] or a batch [N, C, H, W]." },
    MemberDoc { receiver: "List", name: "len", signature: "xs.len -> Int", doc: "The number of elements of the list." },
    MemberDoc { receiver: "Shape", name: "rank", signature: "s.rank -> Int", doc: "The number of dimensions of the shape." },
];

impl Checker {
    /// `value.name`.
    pub(super) fn field(&mut self, recv: Val, name: &Ident, span: Span) -> Val {
        let f = name.node.as_str();
        let mut konst = None;
        let ty = match (&recv.ty, f) {
            (t, _) if t.is_open() => t.clone(),
            (Type::Operator(o), "domain") => Type::ShapeVal(o.domain.clone()),
            (Type::Operator(o), "range") => Type::ShapeVal(o.range.clone()),
            (Type::Model(m), "shape") => Type::ShapeVal(m.shape.clone()),
            (Type::Model(_), "sigma_data" | "sigma_min" | "sigma_max") => Type::Float,
            (Type::Schedule, "sigmas") => Type::List(Box::new(Type::Float)),
            (Type::Schedule, "pairs") => {
                Type::List(Box::new(Type::Tuple(vec![Type::Float, Type::Float])))
            }
            (Type::Schedule, "first" | "last") => Type::Float,
            (Type::Schedule, "len") => Type::Int,
            (Type::Tensor(s), "shape") => Type::ShapeVal(s.clone()),
            (Type::Tensor(s), "channels" | "height" | "width") => {
                let from_end = match f {
                    "channels" => 3,
                    "height" => 2,
                    _ => 1,
                };
                if let Shape::Dims(d) = self.dims.resolve_shape(s) {
                    if d.len() >= 3 {
                        if let Dim::Known(n) = d[d.len() - from_end] {
                            konst = Some(Const::Int(n as i64));
                        }
                    } else {
                        self.report(Diag::error(
                            Code::UnknownField,
                            name.span,
                            format!("`{f}` needs an image `[C, H, W]`, but this tensor has {} dimensions", d.len()),
                            "here",
                        ));
                    }
                }
                Type::Int
            }
            (Type::List(_), "len") => {
                if let Some(Const::List(xs)) = &recv.konst {
                    konst = Some(Const::Int(xs.len() as i64));
                }
                Type::Int
            }
            (Type::ShapeVal(s), "rank") => {
                if let Some(r) = s.rank() {
                    konst = Some(Const::Int(r as i64));
                }
                Type::Int
            }
            (t, _) => {
                let t = self.dims.resolve_type(t);
                let fields = fields_of(&t);
                let methods = methods_of(&t);
                let mut d = Diag::error(
                    Code::UnknownField,
                    name.span,
                    format!("{} has no field `{f}`", t.kind_phrase()),
                    "unknown field",
                )
                .with_label(recv.span, format!("this is {t}"));
                if methods.contains(&f) {
                    d = d.with_help(format!("`{f}` is a method: call it, `.{f}(...)`"));
                } else if let Some(s) = super::suggest::closest(f, fields.iter().copied()) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                } else if !fields.is_empty() {
                    d = d.with_help(format!("its fields are: {}", fields.join(", ")));
                }
                self.report(d);
                Type::Error
            }
        };
        let node = self.add(Op::Field(f.to_string()), vec![recv.node], ty.clone(), span);
        Val {
            ty,
            node,
            konst,
            span,
        }
    }

    /// `value.name(args)`.
    pub(super) fn method(&mut self, recv: Val, name: &Ident, args: Vec<ArgVal>, span: Span) -> Val {
        let m = name.node.as_str();
        let mut inputs = vec![recv.node];
        inputs.extend(args.iter().map(|a| a.val.node));
        let ty = match &recv.ty {
            t if t.is_open() => t.clone(),
            Type::Operator(o) => {
                let o = (**o).clone();
                self.operator_method(&o, &recv, name, &args, span)
            }
            t => {
                let t = self.dims.resolve_type(t);
                let fields = fields_of(&t);
                let mut d = Diag::error(
                    Code::UnknownField,
                    name.span,
                    format!("{} has no method `{m}`", t.kind_phrase()),
                    "unknown method",
                )
                .with_label(recv.span, format!("this is {t}"));
                if fields.contains(&m) {
                    d = d.with_help(format!(
                        "`{m}` is a field: write `.{m}` without parentheses"
                    ));
                } else if matches!(t, Type::Model(_)) {
                    d = d.with_help("call a model directly: `d(x, sigma)`");
                }
                self.report(d);
                Type::Error
            }
        };
        let node = self.add(Op::Method(m.to_string()), inputs, ty.clone(), span);
        Val {
            ty,
            node,
            konst: None,
            span,
        }
    }

    /// The methods of operators.
    fn operator_method(
        &mut self,
        o: &OpType,
        recv: &Val,
        name: &Ident,
        args: &[ArgVal],
        span: Span,
    ) -> Type {
        let m = name.node.as_str();
        // (capability needed, parameters as (name, shape they must have), result shape)
        let (needs, params, result): (&str, Vec<(&str, Option<Shape>)>, Type) = match m {
            "adjoint" => (
                "linear",
                vec![("v", Some(o.range.clone()))],
                Type::Tensor(o.domain.clone()),
            ),
            "pinv" => (
                "linear",
                vec![("y", Some(o.range.clone()))],
                Type::Tensor(o.domain.clone()),
            ),
            "visualize" => (
                "",
                vec![("y", Some(o.range.clone()))],
                Type::Tensor(o.domain.clone()),
            ),
            "domain_for" => (
                "",
                vec![("y", Some(o.range.clone()))],
                Type::ShapeVal(o.domain.clone()),
            ),
            "gram_solve" => (
                "linear",
                vec![("r", Some(o.range.clone())), ("a", None), ("b", None)],
                Type::Tensor(o.range.clone()),
            ),
            "svd_vt" | "svd_v" => (
                "svd",
                vec![("x", Some(o.domain.clone()))],
                Type::Tensor(o.domain.clone()),
            ),
            "svd_ut" => (
                "svd",
                vec![("y", Some(o.range.clone()))],
                Type::Tensor(o.domain.clone()),
            ),
            "svd_u" => (
                "svd",
                vec![("c", Some(o.domain.clone()))],
                Type::Tensor(o.range.clone()),
            ),
            "singular_values" => ("svd", vec![], Type::Tensor(o.domain.clone())),
            "singular_values_cut" => ("svd", vec![("s_min", None)], Type::Tensor(o.domain.clone())),
            _ => {
                let methods = methods_of(&Type::Operator(Box::new(o.clone())));
                let mut d = Diag::error(
                    Code::UnknownField,
                    name.span,
                    format!("an Operator has no method `{m}`"),
                    "unknown method",
                );
                d = match super::suggest::closest(m, methods.iter().copied()) {
                    Some(s) => d.with_help(format!("did you mean `{s}`?")),
                    None => d.with_help(format!("its methods are: {}", methods.join(", "))),
                };
                self.report(d);
                return Type::Error;
            }
        };
        let lacking = match needs {
            "linear" => !o.linear,
            "svd" => !o.svd,
            _ => false,
        };
        if lacking {
            let (what, label, help) = if needs == "svd" {
                (
                    "an operator with a known SVD",
                    "this operator has no known SVD",
                    super::annot::SVD_HELP,
                )
            } else {
                (
                    "a linear operator",
                    "this operator is not linear",
                    super::annot::LINEAR_HELP,
                )
            };
            self.report(
                Diag::error(
                    Code::Capability,
                    recv.span,
                    format!("`{m}` needs {what}"),
                    label,
                )
                .with_label(name.span, format!("`{m}` needs {what}"))
                .with_help(help),
            );
            return Type::Error;
        }
        if args.len() != params.len()
            || args.iter().any(|a| {
                a.name
                    .as_ref()
                    .is_some_and(|n| !params.iter().any(|(p, _)| *p == n.node))
            })
        {
            let list = params
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ");
            self.report(
                Diag::error(
                    Code::Arity,
                    span,
                    format!(
                        "`{m}` takes {} argument{}",
                        params.len(),
                        if params.len() == 1 { "" } else { "s" }
                    ),
                    format!("{} given", args.len()),
                )
                .with_help(format!("call it as `.{m}({list})`")),
            );
            return Type::Error;
        }
        // The first argument may be a batch: the result then has its leading dimension.
        let mut batch = None;
        for (i, (a, (_, want))) in args.iter().zip(&params).enumerate() {
            match want {
                Some(shape) => {
                    if let Type::Tensor(s) = &a.val.ty {
                        let (b, item) = if i == 0 {
                            split_batch(s, shape)
                        } else {
                            (None, s.clone())
                        };
                        batch = batch.or(b);
                        if let Err(c) = self.dims.unify_shape(&item, shape) {
                            self.shape_error(
                                &c,
                                &a.val,
                                &item,
                                recv.span,
                                shape,
                                "the operator here uses",
                            );
                            return Type::Error;
                        }
                    } else if !a.val.ty.is_open() {
                        self.expect_type(&a.val, &Type::tensor(), "this argument");
                    }
                }
                None => {
                    self.expect_type(&a.val, &Type::Float, "this argument");
                }
            }
        }
        batched(batch, result)
    }
}

#[cfg(test)]
mod doc_tests {
    use super::*;

    #[test]
    fn every_member_is_documented_and_every_documented_member_exists() {
        let kinds = [
            (
                "Operator",
                Type::Operator(Box::new(OpType {
                    domain: Shape::Unknown,
                    range: Shape::Unknown,
                    linear: true,
                    svd: true,
                })),
            ),
            (
                "Model",
                Type::Model(Box::new(super::super::types::ModelType {
                    kind: super::super::types::ModelKind::Denoiser,
                    shape: Shape::Unknown,
                })),
            ),
            ("Schedule", Type::Schedule),
            ("Tensor", Type::tensor()),
            ("List", Type::List(Box::new(Type::Float))),
            ("Shape", Type::ShapeVal(Shape::Unknown)),
        ];
        let mut real = Vec::new();
        for (name, t) in &kinds {
            for m in fields_of(t).iter().chain(methods_of(t)) {
                real.push((*name, *m));
            }
        }
        let documented: Vec<(&str, &str)> =
            MEMBER_DOCS.iter().map(|d| (d.receiver, d.name)).collect();
        real.sort();
        let mut sorted = documented.clone();
        sorted.sort();
        assert_eq!(real, sorted);
        for d in MEMBER_DOCS {
            assert!(d.signature.contains(d.name), "{}", d.signature);
        }
    }
}
