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
