//! Expressions: names, literals, operators, calls, indexing; with constant folding.

use super::batch::{join_batch, split_batch};
use super::call::ArgVal;
use super::types::{Dim, FnRef, ModelKind, OpType, Shape, Type};
use super::unify::Conflict;
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, Op};
use crate::source::Span;
use crate::syntax::ast::{Arg, BinOp, Expr, ExprKind, UnOp};

impl Checker {
    /// Checks an expression, emits its node, and returns its value.
    pub(super) fn expr(&mut self, e: &Expr) -> Val {
        let span = e.span;
        match &e.node {
            ExprKind::Int(i) => self.const_val(Const::Int(*i), Type::Int, span),
            ExprKind::Float(f, _) => self.const_val(Const::Float(*f), Type::Float, span),
            ExprKind::Str(s) => self.const_val(Const::Str(s.clone()), Type::Str, span),
            ExprKind::Bool(b) => self.const_val(Const::Bool(*b), Type::Bool, span),
            ExprKind::Name(n) => self.name(n, span),
            ExprKind::Paren(inner) => {
                let v = self.expr(inner);
                Val { span, ..v }
            }
            ExprKind::List(items) => self.list(items, span),
            ExprKind::Tuple(items) => {
                let vals: Vec<Val> = items.iter().map(|x| self.expr(x)).collect();
                if vals.is_empty() {
                    return self.const_val(Const::Unit, Type::Unit, span);
                }
                let konst = vals
                    .iter()
                    .map(|v| v.konst.clone())
                    .collect::<Option<Vec<_>>>()
                    .map(Const::Tuple);
                let ty = Type::Tuple(vals.iter().map(|v| v.ty.clone()).collect());
                let node = self.add(
                    Op::Tuple,
                    vals.iter().map(|v| v.node).collect(),
                    ty.clone(),
                    span,
                );
                Val {
                    ty,
                    node,
                    konst,
                    span,
                }
            }
            ExprKind::Unary(op, inner) => {
                let v = self.expr(inner);
                self.unary(op.node, v, span)
            }
            ExprKind::Binary(op, l, r) => {
                let lv = self.expr(l);
                let rv = self.expr(r);
                self.binary(op.node, op.span, lv, rv, span)
            }
            ExprKind::Call(callee, args) => self.call(callee, args, span),
            ExprKind::Method(recv, name, args) => {
                let rv = self.expr(recv);
                let args = self.args(args);
                self.method(rv, name, args, span)
            }
            ExprKind::Field(recv, name) => {
                let rv = self.expr(recv);
                self.field(rv, name, span)
            }
            ExprKind::Index(base, idx) => {
                let b = self.expr(base);
                let i = self.expr(idx);
                self.index(b, i, span)
            }
            ExprKind::Slice(base, from, to) => {
                let b = self.expr(base);
                let from = from.as_deref().map(|x| self.expr(x));
                let to = to.as_deref().map(|x| self.expr(x));
                self.slice(b, from, to, span)
            }
            ExprKind::If(cond, then, otherwise) => {
                self.if_expr(cond, then, otherwise.as_deref(), span, true)
            }
            ExprKind::Block(b) => self.block(b),
            ExprKind::Error => self.error_val(span),
        }
    }

    /// The function a name refers to, if it names one (a local binding of a function value, a
    /// module function, an import, or a built-in); marks the binding used.
    fn function_named(&self, n: &str) -> Option<FnRef> {
        if let Some(b) = self.lookup(n) {
            return match &b.ty {
                Type::Fn(f) if b.node.is_none() || b.kind == super::scope::BindKind::Import => {
                    Some(f.clone())
                }
                _ => None,
            };
        }
        if self.modules[self.module].fns.contains_key(n) {
            return Some(
                if self.prelude.get(n).is_some_and(|(m, _)| *m == self.module) {
                    FnRef::Builtin(n.to_string())
                } else {
                    FnRef::User {
                        module: self.module,
                        name: n.to_string(),
                    }
                },
            );
        }
        self.prelude
            .contains_key(n)
            .then(|| FnRef::Builtin(n.to_string()))
    }

    /// A name: a local, a module item, or a built-in.
    fn name(&mut self, n: &str, span: Span) -> Val {
        if let Some(b) = self.lookup(n) {
            let (ty, node, konst) = (b.ty.clone(), b.node, b.konst.clone());
            return match node {
                Some(node) => Val {
                    ty,
                    node,
                    konst,
                    span,
                },
                None => {
                    let node = self.add(Op::Const(Const::Unit), vec![], ty.clone(), span);
                    Val {
                        ty,
                        node,
                        konst: None,
                        span,
                    }
                }
            };
        }
        let fnref = if self.modules[self.module].fns.contains_key(n) {
            Some(
                if self.prelude.get(n).is_some_and(|(m, _)| *m == self.module) {
                    FnRef::Builtin(n.to_string())
                } else {
                    FnRef::User {
                        module: self.module,
                        name: n.to_string(),
                    }
                },
            )
        } else if self.prelude.contains_key(n) {
            Some(FnRef::Builtin(n.to_string()))
        } else {
            None
        };
        if let Some(f) = fnref {
            let ty = Type::Fn(f);
            let node = self.add(Op::Const(Const::Unit), vec![], ty.clone(), span);
            return Val {
                ty,
                node,
                konst: None,
                span,
            };
        }
        let mut d = Diag::error(
            Code::UnknownName,
            span,
            format!("`{n}` is not defined"),
            "not found in this scope",
        );
        if let Some(module) = self.std_index.get(n) {
            d = d.with_help(format!(
                "`{n}` is in the standard library: add `use {module}`"
            ));
        } else if !self.seen.contains(&(Code::UnknownName, span)) {
            // (A name already reported here, in a function checked again for another call,
            // needs no second search.)
            if let Some(s) = self.suggest_visible(n) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
        }
        self.report(d);
        self.error_val(span)
    }

    /// A list literal: all elements of one type (Ints widen to Float when mixed).
    fn list(&mut self, items: &[Expr], span: Span) -> Val {
        let mut vals: Vec<Val> = items.iter().map(|x| self.expr(x)).collect();
        let mut elem = Type::Any;
        for v in &vals {
            elem = match self.join(&elem, &v.ty) {
                Some(t) => t,
                None => {
                    let have = self.dims.resolve_type(&v.ty);
                    let want = self.dims.resolve_type(&elem);
                    self.report(
                        Diag::error(
                            Code::TypeMismatch,
                            v.span,
                            "list elements must all have the same type",
                            format!("this is {have}"),
                        )
                        .with_label(vals[0].span, format!("the first element is {want}")),
                    );
                    Type::Error
                }
            };
        }
        if elem == Type::Float {
            for v in &mut vals {
                if let Some(Const::Int(i)) = v.konst {
                    v.konst = Some(Const::Float(i as f64));
                }
            }
        }
        let konst = vals
            .iter()
            .map(|v| v.konst.clone())
            .collect::<Option<Vec<_>>>()
            .map(Const::List);
        let ty = Type::List(Box::new(elem));
        let node = self.add(
            Op::List,
            vals.iter().map(|v| v.node).collect(),
            ty.clone(),
            span,
        );
        Val {
            ty,
            node,
            konst,
            span,
        }
    }

    /// The common type of two values (for list elements and `if` branches).
    pub(super) fn join(&mut self, a: &Type, b: &Type) -> Option<Type> {
        match (a, b) {
            (Type::Any, t) | (t, Type::Any) => Some(t.clone()),
            (Type::Error, _) | (_, Type::Error) => Some(Type::Error),
            (Type::Int, Type::Float) | (Type::Float, Type::Int) => Some(Type::Float),
            (Type::Tensor(x), Type::Tensor(y)) => {
                self.dims.unify_shape(x, y).ok()?;
                Some(Type::Tensor(if matches!(x, Shape::Unknown) {
                    y.clone()
                } else {
                    x.clone()
                }))
            }
            _ => self.fits(a, b).ok().or_else(|| self.fits(b, a).ok()),
        }
    }

    /// Checks call arguments.
    pub(super) fn args(&mut self, args: &[Arg]) -> Vec<ArgVal> {
        args.iter()
            .map(|a| ArgVal {
                name: a.name.clone(),
                val: self.expr(&a.value),
            })
            .collect()
    }

    /// `callee(args)`.
    fn call(&mut self, callee: &Expr, args: &[Arg], span: Span) -> Val {
        // A call of a function by name needs no node for the function itself.
        if let ExprKind::Name(n) = &callee.node {
            if let Some(f) = self.function_named(n) {
                let args = self.args(args);
                return self.call_fn_value(&f, args, span);
            }
        }
        let f = self.expr(callee);
        let args = self.args(args);
        match f.ty.clone() {
            Type::Fn(r) => self.call_fn_value(&r, args, span),
            Type::Operator(op) => {
                let x = self.single_arg(args, "an operator", span);
                let Some(x) = x else {
                    return self.error_val(span);
                };
                let ty = self.apply_operator(&op, &x, f.span);
                let node = self.add(Op::Apply, vec![f.node, x.node], ty.clone(), span);
                Val {
                    ty,
                    node,
                    konst: None,
                    span,
                }
            }
            Type::Model(m) => {
                let positional: Vec<&ArgVal> = args.iter().collect();
                if positional.len() != 2 || positional.iter().any(|a| a.name.is_some()) {
                    let what = match m.kind {
                        ModelKind::Consistency => "a consistency model is called as `f(x, t)`",
                        _ => "a denoiser is called as `d(x, sigma)`",
                    };
                    self.report(
                        Diag::error(Code::Arity, span, "a model takes two arguments", what)
                            .with_help("pass the noisy image and the noise level"),
                    );
                    return self.error_val(span);
                }
                let (x, s) = (&args[0].val, &args[1].val);
                self.expect_type(s, &Type::Float, "the noise level");
                let ty = self.apply_model(&m.shape, x, f.span);
                let node = self.add(Op::Apply, vec![f.node, x.node, s.node], ty.clone(), span);
                Val {
                    ty,
                    node,
                    konst: None,
                    span,
                }
            }
            Type::Noise { .. } => {
                let Some(x) = self.single_arg(args, "a noise model", span) else {
                    return self.error_val(span);
                };
                if !matches!(x.ty, Type::Tensor(_)) && !x.ty.is_open() {
                    self.expect_type(&x, &Type::tensor(), "the value to add noise to");
                }
                let ty = x.ty.clone();
                let node = self.add(Op::Apply, vec![f.node, x.node], ty.clone(), span);
                Val {
                    ty,
                    node,
                    konst: None,
                    span,
                }
            }
            Type::Any => {
                let node = self.add(
                    Op::Apply,
                    args.iter().map(|a| a.val.node).collect(),
                    Type::Any,
                    span,
                );
                Val {
                    ty: Type::Any,
                    node,
                    konst: None,
                    span,
                }
            }
            Type::Error => self.error_val(span),
            other => {
                let other = self.dims.resolve_type(&other);
                self.report(
                    Diag::error(
                        Code::NotCallable,
                        callee.span,
                        format!("{} cannot be called", other.kind_phrase()),
                        format!("this is {other}"),
                    )
                    .with_help("only functions, operators, models and noise models can be called"),
                );
                self.error_val(span)
            }
        }
    }

    /// The one positional argument of an operator or noise application.
    fn single_arg(&mut self, args: Vec<ArgVal>, what: &str, span: Span) -> Option<Val> {
        if args.len() != 1 || args[0].name.is_some() {
            self.report(
                Diag::error(
                    Code::Arity,
                    span,
                    format!("{what} takes one argument"),
                    format!("{} given", args.len()),
                )
                .with_help("apply it to one tensor: `A(x)`"),
            );
            return None;
        }
        args.into_iter().next().map(|a| a.val)
    }

    /// The type of `A(x)`: `x` must fit the operator's domain (with an optional leading batch
    /// dimension); the result has the range's shape.
    pub(super) fn apply_operator(&mut self, op: &OpType, x: &Val, op_span: Span) -> Type {
        let shape = match &x.ty {
            Type::Tensor(s) => s.clone(),
            t if t.is_open() => return Type::Tensor(op.range.clone()),
            _ => {
                self.expect_type(x, &Type::tensor(), "an operator's input");
                return Type::Error;
            }
        };
        let (batch, item) = split_batch(&shape, &op.domain);
        match self.dims.unify_shape(&item, &op.domain) {
            Ok(()) => Type::Tensor(join_batch(batch, &op.range)),
            Err(c) => {
                self.shape_error(&c, x, &item, op_span, &op.domain, "this operator works on");
                Type::Error
            }
        }
    }

    /// The type of `model(x, sigma)`: `x` must have the model's image shape.
    pub(super) fn apply_model(&mut self, model_shape: &Shape, x: &Val, model_span: Span) -> Type {
        let shape = match &x.ty {
            Type::Tensor(s) => s.clone(),
            t if t.is_open() => return Type::Tensor(model_shape.clone()),
            _ => {
                self.expect_type(x, &Type::tensor(), "a model's input");
                return Type::Error;
            }
        };
        let (batch, item) = split_batch(&shape, model_shape);
        match self.dims.unify_shape(&item, model_shape) {
            Ok(()) => Type::Tensor(join_batch(batch, model_shape)),
            Err(_) => {
                let have = self.dims.resolve_shape(&item);
                let want = self.dims.resolve_shape(model_shape);
                let help = match &want {
                    Shape::Dims(d) if d.len() == 3 => format!(
                        "`fit(x, {}, {})` centre-crops and resizes an image (or a batch) to the \
                         model's size; the channel count must be the model's",
                        d[1], d[2]
                    ),
                    _ => "resize or convert the image, or use a model trained at this \
                          resolution and channel count"
                        .to_string(),
                };
                self.report(
                    Diag::error(
                        Code::ModelMismatch,
                        x.span,
                        format!("the model works on {want} images, but this is {have}"),
                        format!("this is {have}"),
                    )
                    .with_label(model_span, format!("this model expects {want}"))
                    .with_help(help),
                );
                Type::Error
            }
        }
    }

    /// Reports two shapes that should agree, with a label on each side.
    pub(super) fn shape_error(
        &mut self,
        c: &Conflict,
        x: &Val,
        xs: &Shape,
        other: Span,
        os: &Shape,
        other_what: &str,
    ) {
        let have = self.dims.resolve_shape(xs);
        let want = self.dims.resolve_shape(os);
        let d = match c {
            Conflict::Scale {
                big,
                factor,
                origin,
                what,
            } => Diag::error(
                Code::ShapeMismatch,
                x.span,
                format!("a {what} of {big} is not divisible by {factor}"),
                format!("this is {have}"),
            )
            .with_label(
                *origin,
                format!("this needs the {what} to be a multiple of {factor}"),
            )
            .with_help(format!(
                "use an image whose {what} is a multiple of {factor}, or another factor"
            )),
            Conflict::TooLarge {
                small,
                factor,
                origin,
                what,
            } => Diag::error(
                Code::ShapeMismatch,
                x.span,
                format!("a {what} of {small} times {factor} is more than can be counted"),
                format!("this is {have}"),
            )
            .with_label(*origin, format!("this multiplies the {what} by {factor}"))
            .with_help("use a smaller factor"),
            _ => Diag::error(
                Code::ShapeMismatch,
                x.span,
                format!("shape mismatch: {have} does not fit {want}"),
                format!("this is {have}"),
            )
            .with_label(other, format!("{other_what} {want}"))
            .with_note(self.describe_conflict(c, xs, os)),
        };
        self.report(d);
    }

    /// `-x`, `not b`.
    fn unary(&mut self, op: UnOp, v: Val, span: Span) -> Val {
        let ty = match (op, &v.ty) {
            (_, t) if t.is_open() => t.clone(),
            (UnOp::Neg, Type::Int | Type::Float | Type::Tensor(_)) => v.ty.clone(),
            (UnOp::Neg, Type::Operator(_)) => v.ty.clone(),
            (UnOp::Not, Type::Bool) => Type::Bool,
            _ => {
                let want = if op == UnOp::Neg {
                    "a number or a tensor"
                } else {
                    "a Bool"
                };
                let have = self.dims.resolve_type(&v.ty);
                self.report(Diag::error(
                    Code::TypeMismatch,
                    v.span,
                    format!("`{}` needs {want}, found {have}", op.as_str().trim()),
                    format!("this is {have}"),
                ));
                Type::Error
            }
        };
        let konst = match (op, &v.konst) {
            (UnOp::Neg, Some(Const::Int(i))) => i.checked_neg().map(Const::Int),
            (UnOp::Neg, Some(Const::Float(f))) => Some(Const::Float(-f)),
            (UnOp::Not, Some(Const::Bool(b))) => Some(Const::Bool(!b)),
            _ => None,
        };
        let node = match &konst {
            Some(c) => self.add(Op::Const(c.clone()), vec![], ty.clone(), span),
            None => self.add(Op::Unary(op), vec![v.node], ty.clone(), span),
        };
        Val {
            ty,
            node,
            konst,
            span,
        }
    }

    /// Infix operators on numbers, booleans, tensors, noise and operators.
    pub(super) fn binary(&mut self, op: BinOp, op_span: Span, l: Val, r: Val, span: Span) -> Val {
        use Type::*;
        let ty: Result<Type, &'static str> = match (op, &l.ty, &r.ty) {
            (_, Error, _) | (_, _, Error) => Ok(Error),
            (BinOp::Or | BinOp::And, Bool, Bool) => Ok(Bool),
            (BinOp::Or | BinOp::And, a, b) if a.is_open() || b.is_open() => Ok(Bool),
            (BinOp::Eq | BinOp::Ne, a, b) if a == b || (a.is_number() && b.is_number()) => Ok(Bool),
            (BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge, a, b)
                if (a.is_number() || a.is_open()) && (b.is_number() || b.is_open()) =>
            {
                Ok(Bool)
            }
            (BinOp::Compose, Operator(a), Operator(b)) => self.compose(a, b, &l, &r),
            (BinOp::Compose, a, b)
                if (a.is_open() || matches!(a, Operator(_)))
                    && (b.is_open() || matches!(b, Operator(_))) =>
            {
                Ok(Any)
            }
            (BinOp::Add | BinOp::Sub, Operator(a), Operator(b)) => self.op_sum(a, b, &l, &r),
            (BinOp::Mul, Int | Float, Operator(o))
            | (BinOp::Mul | BinOp::Div, Operator(o), Int | Float) => Ok(Operator(o.clone())),
            (BinOp::Add, Tensor(_), Noise { additive: true })
            | (BinOp::Add, Noise { additive: true }, Tensor(_)) => Ok(if let Tensor(_) = l.ty {
                l.ty.clone()
            } else {
                r.ty.clone()
            }),
            (BinOp::Add, Tensor(_), Noise { additive: false })
            | (BinOp::Add, Noise { additive: false }, Tensor(_)) => {
                Err("only Gaussian noise is additive; apply other noise models as `noise(x)`")
            }
            (
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Pow,
                Tensor(a),
                Tensor(b),
            ) => match self.dims.unify_broadcast(a, b) {
                Ok(s) => Ok(Tensor(s)),
                Err(c) => {
                    let (a, b) = (a.clone(), b.clone());
                    self.shape_error(&c, &r, &b, l.span, &a, "the other side is");
                    Ok(Error)
                }
            },
            (
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Pow,
                Tensor(_),
                Int | Float,
            ) => Ok(l.ty.clone()),
            (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div, Int | Float, Tensor(_)) => {
                Ok(r.ty.clone())
            }
            (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Rem, Int, Int) => Ok(Int),
            (BinOp::Div | BinOp::Pow, Int, Int) => Ok(Float),
            (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Pow | BinOp::Rem, a, b)
                if a.is_number() && b.is_number() =>
            {
                Ok(Float)
            }
            (BinOp::Add, Str, Str) => Ok(Str),
            (_, a, b) if a.is_open() || b.is_open() => Ok(Any),
            _ => Err(""),
        };
        let ty = match ty {
            Ok(t) => t,
            Err(help) => {
                let lt = self.dims.resolve_type(&l.ty);
                let rt = self.dims.resolve_type(&r.ty);
                let mut d = Diag::error(
                    Code::TypeMismatch,
                    op_span,
                    format!(
                        "`{}` cannot combine {} and {}",
                        op.as_str(),
                        lt.kind_phrase(),
                        rt.kind_phrase()
                    ),
                    "this operator",
                )
                .with_label(l.span, format!("this is {lt}"))
                .with_label(r.span, format!("this is {rt}"));
                if !help.is_empty() {
                    d = d.with_help(help);
                } else if op == BinOp::Compose {
                    d = d.with_help("`>>` composes operators: `blur >> downsample(4)` applies the blur, then the downsampling");
                }
                self.report(d);
                Type::Error
            }
        };
        let konst = fold_binary(op, l.konst.as_ref(), r.konst.as_ref());
        let node = match &konst {
            Some(c) => self.add(Op::Const(c.clone()), vec![], ty.clone(), span),
            None => self.add(Op::Binary(op), vec![l.node, r.node], ty.clone(), span),
        };
        Val {
            ty,
            node,
            konst,
            span,
        }
    }

    /// `A >> B`: A's range must be B's domain.
    fn compose(&mut self, a: &OpType, b: &OpType, l: &Val, r: &Val) -> Result<Type, &'static str> {
        if let Err(c) = self.dims.unify_shape(&a.range, &b.domain) {
            let (ar, bd) = (a.range.clone(), b.domain.clone());
            let lv = Val {
                span: l.span,
                ..l.clone()
            };
            let have = self.dims.resolve_shape(&ar);
            let want = self.dims.resolve_shape(&bd);
            let mut d = Diag::error(
                Code::ShapeMismatch,
                lv.span,
                format!("cannot compose: the first operator produces {have}, the second works on {want}"),
                format!("this produces {have}"),
            )
            .with_label(r.span, format!("this works on {want}"));
            d = d.with_note(self.describe_conflict(&c, &ar, &bd));
            self.report(d);
            return Ok(Type::Error);
        }
        Ok(Type::Operator(Box::new(OpType {
            domain: a.domain.clone(),
            range: b.range.clone(),
            linear: a.linear && b.linear,
            svd: false,
        })))
    }

    /// `A + B`: same domain and range.
    fn op_sum(&mut self, a: &OpType, b: &OpType, l: &Val, r: &Val) -> Result<Type, &'static str> {
        let ok = self
            .dims
            .unify_shape(&a.domain, &b.domain)
            .and_then(|_| self.dims.unify_shape(&a.range, &b.range));
        if ok.is_err() {
            let (ad, ar) = (
                self.dims.resolve_shape(&a.domain),
                self.dims.resolve_shape(&a.range),
            );
            let (bd, br) = (
                self.dims.resolve_shape(&b.domain),
                self.dims.resolve_shape(&b.range),
            );
            self.report(
                Diag::error(
                    Code::ShapeMismatch,
                    l.span,
                    "operators added together must map the same shapes",
                    format!("this maps {ad} -> {ar}"),
                )
                .with_label(r.span, format!("this maps {bd} -> {br}")),
            );
            return Ok(Type::Error);
        }
        Ok(Type::Operator(Box::new(OpType {
            domain: a.domain.clone(),
            range: a.range.clone(),
            linear: a.linear && b.linear,
            svd: false,
        })))
    }

    /// `x[i]`.
    fn index(&mut self, b: Val, i: Val, span: Span) -> Val {
        self.expect_type(&i, &Type::Int, "an index");
        let ci = i.konst.as_ref().and_then(Const::as_i64);
        // A constant index past the end of a list or shape known before running.
        let len = match (&b.konst, &b.ty) {
            (Some(Const::List(xs)), Type::List(_)) => Some(xs.len()),
            (_, Type::ShapeVal(Shape::Dims(d))) => Some(d.len()),
            _ => None,
        };
        if let (Some(n), Some(k)) = (len, ci) {
            if k < 0 || k as usize >= n {
                let what = if matches!(b.ty, Type::ShapeVal(_)) {
                    "a shape"
                } else {
                    "a list"
                };
                let valid = match n {
                    0 => "it is empty".to_string(),
                    1 => "the only valid index is 0".to_string(),
                    _ => format!("valid indices are 0 to {}", n - 1),
                };
                self.report(
                    Diag::error(
                        Code::InvalidValue,
                        i.span,
                        format!("index {k} is out of range for {what} of length {n}"),
                        "out of range",
                    )
                    .with_label(
                        b.span,
                        format!("this has {n} element{}", if n == 1 { "" } else { "s" }),
                    )
                    .with_help(valid),
                );
                return self.error_val(span);
            }
        }
        let ty = match &b.ty {
            Type::List(e) => (**e).clone(),
            Type::Tuple(ts) => match ci {
                Some(k) if k >= 0 && (k as usize) < ts.len() => ts[k as usize].clone(),
                Some(k) => {
                    self.report(Diag::error(
                        Code::InvalidValue,
                        i.span,
                        format!("index {k} is out of range for a {}-tuple", ts.len()),
                        "out of range",
                    ));
                    Type::Error
                }
                None => {
                    self.report(
                        Diag::error(
                            Code::InvalidValue,
                            i.span,
                            "a tuple is indexed by a constant",
                            "not known before running",
                        )
                        .with_help("destructure it instead: `let (a, b) = t`"),
                    );
                    Type::Error
                }
            },
            Type::Tensor(Shape::Dims(d)) if !d.is_empty() => {
                if let (Some(k), Dim::Known(n)) = (ci, self.dims.resolve(d[0])) {
                    if k < 0 || k as u64 >= n {
                        self.report(Diag::error(
                            Code::InvalidValue,
                            i.span,
                            format!("index {k} is out of range for a first dimension of {n}"),
                            "out of range",
                        ));
                    }
                }
                // An entry of a 1-D tensor (one PSNR of a batch's) is a number.
                if d.len() == 1 {
                    Type::Float
                } else {
                    Type::Tensor(Shape::Dims(d[1..].to_vec()))
                }
            }
            Type::Tensor(Shape::Unknown) => Type::tensor(),
            Type::ShapeVal(_) => Type::Int,
            t if t.is_open() => t.clone(),
            other => {
                let other = self.dims.resolve_type(other);
                self.report(Diag::error(
                    Code::TypeMismatch,
                    b.span,
                    format!("{} cannot be indexed", other.kind_phrase()),
                    format!("this is {other}"),
                ));
                Type::Error
            }
        };
        let konst = match (&b.konst, ci) {
            (Some(Const::List(xs)) | Some(Const::Tuple(xs)), Some(k)) if k >= 0 => {
                xs.get(k as usize).cloned()
            }
            _ => match (&b.ty, ci) {
                (Type::ShapeVal(s), Some(k)) if k >= 0 => match self.dims.resolve_shape(s) {
                    Shape::Dims(d) => match d.get(k as usize) {
                        Some(Dim::Known(n)) => Some(Const::Int(*n as i64)),
                        _ => None,
                    },
                    Shape::Unknown => None,
                },
                _ => None,
            },
        };
        let op = if matches!(b.ty, Type::Tuple(_)) {
            Op::Project(ci.unwrap_or(0).max(0) as u32)
        } else {
            Op::Index
        };
        let inputs = if matches!(op, Op::Project(_)) {
            vec![b.node]
        } else {
            vec![b.node, i.node]
        };
        let node = self.add(op, inputs, ty.clone(), span);
        Val {
            ty,
            node,
            konst,
            span,
        }
    }
}

/// Folds an infix operator over constants.
fn fold_binary(op: BinOp, l: Option<&Const>, r: Option<&Const>) -> Option<Const> {
    use Const::*;
    let (l, r) = (l?, r?);
    Some(match (op, l, r) {
        (BinOp::Add, Int(a), Int(b)) => Int(a.checked_add(*b)?),
        (BinOp::Sub, Int(a), Int(b)) => Int(a.checked_sub(*b)?),
        (BinOp::Mul, Int(a), Int(b)) => Int(a.checked_mul(*b)?),
        (BinOp::Rem, Int(a), Int(b)) => Int(a.checked_rem(*b)?),
        (BinOp::Add, Str(a), Str(b)) => Str(format!("{a}{b}")),
        (BinOp::And, Bool(a), Bool(b)) => Bool(*a && *b),
        (BinOp::Or, Bool(a), Bool(b)) => Bool(*a || *b),
        (BinOp::Eq, a, b) => Bool(match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        }),
        (BinOp::Ne, a, b) => Bool(match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x != y,
            _ => a != b,
        }),
        (op, a, b) => {
            let (x, y) = (a.as_f64()?, b.as_f64()?);
            match op {
                BinOp::Add => Float(x + y),
                BinOp::Sub => Float(x - y),
                BinOp::Mul => Float(x * y),
                BinOp::Div => {
                    if y == 0.0 {
                        return None;
                    }
                    Float(x / y)
                }
                BinOp::Rem => {
                    if y == 0.0 {
                        return None;
                    }
                    Float(x % y)
                }
                BinOp::Pow => Float(x.powf(y)),
                BinOp::Lt => Bool(x < y),
                BinOp::Le => Bool(x <= y),
                BinOp::Gt => Bool(x > y),
                BinOp::Ge => Bool(x >= y),
                _ => return None,
            }
        }
    })
}
