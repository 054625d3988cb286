//! Blocks and statements: bindings, assignment, loops, conditionals and the optimization
//! step, with mutable variables turned into explicit region inputs and outputs.

use std::collections::BTreeSet;

use super::scope::BindKind;
use super::types::{Shape, Type};
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, Op, RegionId};
use crate::source::Span;
use crate::syntax::ast::{
    AssignOp, Block, Direction, Expr, ExprKind, Optimize, Pattern, PatternKind, Stmt, StmtKind,
};

impl Checker {
    /// Checks a block in a new scope; its value is its last expression, or `()`.
    pub(super) fn block(&mut self, b: &Block) -> Val {
        self.push_scope();
        for s in &b.stmts {
            self.stmt(s);
        }
        let v = match &b.value {
            Some(e) => self.expr(e),
            None => self.const_val(Const::Unit, Type::Unit, b.span),
        };
        self.pop_scope();
        v
    }

    /// Checks one statement.
    fn stmt(&mut self, s: &Stmt) {
        match &s.node {
            StmtKind::Doc(_) => {}
            StmtKind::Let {
                mutable,
                pattern,
                ty,
                value,
            } => {
                let v = self.expr(value);
                let v = self.annotate(v, ty.as_ref());
                if *mutable && !matches!(pattern.node, PatternKind::Name(_)) {
                    self.report(
                        Diag::error(
                            Code::Syntax,
                            pattern.span,
                            "a `var` binds one name",
                            "a pattern",
                        )
                        .with_help("use `let` to destructure, then `var` for each value to change"),
                    );
                }
                let kind = if *mutable {
                    BindKind::Var
                } else {
                    BindKind::Let
                };
                for (name, span, val) in self.destructure(pattern, v) {
                    self.bind_local(&name, kind, val, span);
                }
            }
            StmtKind::Assign { target, op, value } => self.assign(target, op.node, value, s.span),
            StmtKind::For {
                pattern,
                iter,
                body,
            } => self.for_loop(pattern, iter, body, s.span),
            StmtKind::Repeat { count, body } => self.repeat(count, body, s.span),
            StmtKind::If(e) => {
                if let ExprKind::If(c, t, o) = &e.node {
                    self.if_expr(c, t, o.as_deref(), e.span, false);
                }
            }
            StmtKind::Optimize(o) => self.optimize(o, s.span),
        }
    }

    /// Binds the parts of a value to a pattern's names: `(t, t_next)` takes a pair apart.
    pub(super) fn destructure(&mut self, p: &Pattern, v: Val) -> Vec<(String, Span, Val)> {
        match &p.node {
            PatternKind::Name(n) => vec![(n.clone(), p.span, Val { span: p.span, ..v })],
            PatternKind::Wildcard => vec![],
            PatternKind::Tuple(parts) => {
                let elems: Vec<Type> = match &v.ty {
                    Type::Tuple(ts) if ts.len() == parts.len() => ts.clone(),
                    t if t.is_open() => vec![t.clone(); parts.len()],
                    other => {
                        let other = self.dims.resolve_type(other);
                        self.report(
                            Diag::error(
                                Code::TypeMismatch,
                                p.span,
                                format!(
                                    "this pattern takes a {}-tuple apart, but the value is {other}",
                                    parts.len()
                                ),
                                "pattern",
                            )
                            .with_label(v.span, format!("this is {other}")),
                        );
                        vec![Type::Error; parts.len()]
                    }
                };
                let mut out = Vec::new();
                for (i, (part, ty)) in parts.iter().zip(elems).enumerate() {
                    let konst = match &v.konst {
                        Some(Const::Tuple(xs)) => xs.get(i).cloned(),
                        _ => None,
                    };
                    let node = self.add(Op::Project(i as u32), vec![v.node], ty.clone(), part.span);
                    out.extend(self.destructure(
                        part,
                        Val {
                            ty,
                            node,
                            konst,
                            span: part.span,
                        },
                    ));
                }
                out
            }
        }
    }

    /// `z = e`, `z += e`.
    fn assign(&mut self, target: &crate::source::Ident, op: AssignOp, value: &Expr, span: Span) {
        let Some(b) = self.lookup(&target.node).cloned() else {
            let v = self.expr(value);
            let _ = v;
            let mut d = Diag::error(
                Code::UnknownName,
                target.span,
                format!("`{}` is not defined", target.node),
                "not found",
            );
            d = d.with_help(format!("declare it first: `var {} = ...`", target.node));
            self.report(d);
            return;
        };
        if b.kind != BindKind::Var {
            let v = self.expr(value);
            let _ = v;
            self.report(
                Diag::error(
                    Code::NotMutable,
                    target.span,
                    format!("cannot assign to `{}`: it is not a `var`", target.node),
                    "assigned here",
                )
                .with_label(b.span, "declared here without `var`")
                .with_help(format!(
                    "declare it with `var {} = ...` to change it",
                    target.node
                )),
            );
            return;
        }
        let rhs = self.expr(value);
        let new = match (op.binary(), b.node) {
            (Some(bin), Some(node)) => {
                let cur = Val {
                    ty: b.ty.clone(),
                    node,
                    konst: b.konst.clone(),
                    span: target.span,
                };
                self.binary(bin, span, cur, rhs, span)
            }
            _ => rhs,
        };
        // The value must keep the variable's type (shapes included): loops carry it.
        let kept = match self.join(&b.ty, &new.ty) {
            Some(t) if !matches!((&b.ty, &new.ty), (Type::Int, Type::Float)) => t,
            _ => {
                let (have, want) = (
                    self.dims.resolve_type(&new.ty),
                    self.dims.resolve_type(&b.ty),
                );
                self.report(
                    Diag::error(
                        Code::TypeMismatch,
                        new.span,
                        format!("`{}` is {want}, but this is {have}", target.node),
                        format!("this is {have}"),
                    )
                    .with_label(b.span, format!("declared as {want}"))
                    .with_help(
                        "a `var` keeps its type; declare another variable for a different value",
                    ),
                );
                b.ty.clone()
            }
        };
        self.set_var(&target.node, new.node, kept);
    }

    /// Names of outer `var`s assigned anywhere in `stmts` (the values a loop or branch carries).
    fn assigned_vars(&self, stmts: &[Stmt], value: Option<&Expr>) -> Vec<String> {
        let mut names = BTreeSet::new();
        collect_assigned(stmts, &mut names);
        if let Some(e) = value {
            collect_assigned_expr(e, &mut names);
        }
        names
            .into_iter()
            .filter(|n| {
                self.lookup_quiet(n)
                    .is_some_and(|b| b.kind == BindKind::Var)
            })
            .collect()
    }

    /// The current node and type of each carried variable.
    fn carried_values(&self, names: &[String]) -> Vec<(crate::graph::NodeId, Type)> {
        names
            .iter()
            .filter_map(|n| {
                self.lookup_quiet(n)
                    .and_then(|b| b.node.map(|nd| (nd, b.ty.clone())))
            })
            .collect()
    }

    /// Runs `f` with nodes emitted into `region`.
    fn in_region<T>(&mut self, region: RegionId, f: impl FnOnce(&mut Self) -> T) -> T {
        let saved = std::mem::replace(&mut self.region, region);
        let out = f(self);
        self.region = saved;
        out
    }

    /// After a loop or branch: each carried variable now holds output `offset + i` of `node`.
    fn rebind_carried(
        &mut self,
        names: &[String],
        types: &[Type],
        node: crate::graph::NodeId,
        offset: u32,
        span: Span,
    ) {
        for (i, (n, t)) in names.iter().zip(types).enumerate() {
            let p = self.add(Op::Project(offset + i as u32), vec![node], t.clone(), span);
            self.set_var(n, p, t.clone());
        }
    }

    /// `for pattern in iter { body }`.
    fn for_loop(&mut self, pattern: &Pattern, iter: &Expr, body: &Block, span: Span) {
        let it = self.expr(iter);
        let elem = match &it.ty {
            Type::List(e) => (**e).clone(),
            Type::Schedule => Type::Float,
            Type::Tensor(Shape::Dims(d)) if !d.is_empty() => {
                Type::Tensor(Shape::Dims(d[1..].to_vec()))
            }
            t if t.is_open() => t.clone(),
            other => {
                let other = self.dims.resolve_type(other);
                self.report(
                    Diag::error(Code::TypeMismatch, it.span, format!("cannot loop over {}", other.kind_phrase()), format!("this is {other}"))
                        .with_help("loop over a list, a schedule (`for sigma in ts`), or pairs of levels (`for (t, t_next) in ts.pairs`)"),
                );
                Type::Error
            }
        };
        let carried = self.assigned_vars(&body.stmts, body.value.as_deref());
        let init = self.carried_values(&carried);
        let region = self
            .emit
            .graph
            .add_region("for body", 1 + carried.len() as u32);
        let types: Vec<Type> = init.iter().map(|(_, t)| t.clone()).collect();
        self.in_region(region, |cx| {
            cx.push_scope();
            let el = cx.add(Op::Input(0), vec![], elem.clone(), pattern.span);
            for (i, n) in carried.iter().enumerate() {
                let inp = cx.add(Op::Input(1 + i as u32), vec![], types[i].clone(), span);
                cx.set_var(n, inp, types[i].clone());
            }
            let ev = Val {
                ty: elem,
                node: el,
                konst: None,
                span: pattern.span,
            };
            for (name, s, v) in cx.destructure(pattern, ev) {
                cx.bind_local(&name, BindKind::Let, v, s);
            }
            let _ = cx.block(body);
            let outs: Vec<_> = cx
                .carried_values(&carried)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            cx.emit.graph.region_mut(region).outputs = outs;
            cx.pop_scope();
        });
        let mut inputs = vec![it.node];
        inputs.extend(init.iter().map(|(n, _)| *n));
        let node = self.add(
            Op::For { body: region },
            inputs,
            Type::Tuple(types.clone()),
            span,
        );
        self.rebind_carried(&carried, &types, node, 0, span);
    }

    /// `repeat n { body }`.
    fn repeat(&mut self, count: &Expr, body: &Block, span: Span) {
        let c = self.expr(count);
        self.expect_type(&c, &Type::Int, "the repeat count");
        if let Some(Const::Int(n)) = c.konst {
            if n < 0 {
                self.report(Diag::error(
                    Code::InvalidValue,
                    c.span,
                    format!("cannot repeat {n} times"),
                    "negative",
                ));
            }
        }
        let carried = self.assigned_vars(&body.stmts, body.value.as_deref());
        let init = self.carried_values(&carried);
        let types: Vec<Type> = init.iter().map(|(_, t)| t.clone()).collect();
        let region = self
            .emit
            .graph
            .add_region("repeat body", carried.len() as u32);
        self.in_region(region, |cx| {
            for (i, n) in carried.iter().enumerate() {
                let inp = cx.add(Op::Input(i as u32), vec![], types[i].clone(), span);
                cx.set_var(n, inp, types[i].clone());
            }
            let _ = cx.block(body);
            let outs: Vec<_> = cx
                .carried_values(&carried)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            cx.emit.graph.region_mut(region).outputs = outs;
        });
        let mut inputs = vec![c.node];
        inputs.extend(init.iter().map(|(n, _)| *n));
        let node = self.add(
            Op::Repeat { body: region },
            inputs,
            Type::Tuple(types.clone()),
            span,
        );
        self.rebind_carried(&carried, &types, node, 0, span);
    }

    /// Starts checking a branch that a constant condition rules out.
    fn dead_begin(&mut self) -> DeadMark {
        DeadMark {
            diags: self.diags.0.len(),
            nodes: self.emit.graph.nodes.len() as u32,
            dims: self.dims.snapshot(),
            instances: self.emit.instance_order.len(),
        }
    }

    /// Ends a dead branch: forgets the errors in it that depend on values and types (see
    /// [`depends_on_values`]), undoes what it taught the dimension table, forgets the function
    /// instances made for it (they were specialised for a run that cannot happen, and a live
    /// call must be checked afresh), and records its nodes as never run.
    fn dead_end(&mut self, mark: DeadMark) {
        let found = self.diags.0.split_off(mark.diags.min(self.diags.0.len()));
        for d in found {
            if d.is_error() && depends_on_values(d.code) {
                self.seen.remove(&(d.code, d.span()));
            } else {
                self.diags.0.push(d);
            }
        }
        self.dims.rollback(mark.dims);
        let made = self
            .emit
            .instance_order
            .split_off(mark.instances.min(self.emit.instance_order.len()));
        for key in made {
            self.emit.instances.remove(&key);
        }
        let end = self.emit.graph.nodes.len() as u32;
        if end > mark.nodes {
            self.dead_nodes.push((mark.nodes, end));
        }
    }

    /// `if c { a } else { b }`, as an expression (`want_value`) or a statement.
    pub(super) fn if_expr(
        &mut self,
        cond: &Expr,
        then: &Block,
        otherwise: Option<&Expr>,
        span: Span,
        want_value: bool,
    ) -> Val {
        let c = self.expr(cond);
        self.expect_type(&c, &Type::Bool, "an `if` condition");
        let mut carried = self.assigned_vars(&then.stmts, then.value.as_deref());
        if let Some(o) = otherwise {
            let mut more = BTreeSet::new();
            collect_assigned_expr(o, &mut more);
            for n in more {
                if !carried.contains(&n)
                    && self
                        .lookup_quiet(&n)
                        .is_some_and(|b| b.kind == BindKind::Var)
                {
                    carried.push(n);
                }
            }
        }
        let before = self.carried_values(&carried);
        let types: Vec<Type> = before.iter().map(|(_, t)| t.clone()).collect();
        let restore = |cx: &mut Self| {
            for (n, (node, t)) in carried.iter().zip(&before) {
                cx.set_var(n, *node, t.clone());
            }
        };
        // A condition known at check time (usually from a `param`) rules one branch out. Its
        // names are still resolved, but what depends on values and types there (`sigma_max`
        // must exceed `sigma_min`, shapes, `Operator[svd]`) would be about a run that cannot
        // happen: those errors are dropped, and the `if` has the live branch's type and value.
        let dead_then = matches!(c.konst, Some(Const::Bool(false)));
        let dead_else = matches!(c.konst, Some(Const::Bool(true)));
        let mark = dead_then.then(|| self.dead_begin());
        let then_r = self.emit.graph.add_region("then", 0);
        let tv = self.in_region(then_r, |cx| {
            let v = cx.block(then);
            let mut outs = vec![v.node];
            outs.extend(cx.carried_values(&carried).into_iter().map(|(n, _)| n));
            cx.emit.graph.region_mut(then_r).outputs = outs;
            v
        });
        restore(self);
        if let Some(mark) = mark {
            self.dead_end(mark);
        }
        let mark = dead_else.then(|| self.dead_begin());
        let else_r = self.emit.graph.add_region("else", 0);
        let ev = self.in_region(else_r, |cx| {
            let v = match otherwise {
                Some(e) => cx.expr(e),
                None => cx.const_val(Const::Unit, Type::Unit, span),
            };
            let mut outs = vec![v.node];
            outs.extend(cx.carried_values(&carried).into_iter().map(|(n, _)| n));
            cx.emit.graph.region_mut(else_r).outputs = outs;
            v
        });
        restore(self);
        if let Some(mark) = mark {
            self.dead_end(mark);
        }
        let ty = if !want_value {
            Type::Unit
        } else if dead_then && otherwise.is_some() {
            ev.ty.clone()
        } else if dead_else && otherwise.is_some() {
            tv.ty.clone()
        } else if otherwise.is_none() {
            if !matches!(tv.ty, Type::Unit) && !tv.ty.is_open() {
                self.report(
                    Diag::error(
                        Code::TypeMismatch,
                        span,
                        "an `if` used as a value needs an `else`",
                        "no `else`",
                    )
                    .with_help("add `else { ... }` giving a value of the same type"),
                );
            }
            Type::Unit
        } else {
            match self.join(&tv.ty, &ev.ty) {
                Some(t) => t,
                None => {
                    let (a, b) = (
                        self.dims.resolve_type(&tv.ty),
                        self.dims.resolve_type(&ev.ty),
                    );
                    self.report(
                        Diag::error(
                            Code::TypeMismatch,
                            ev.span,
                            "the branches of this `if` have different types",
                            format!("this is {b}"),
                        )
                        .with_label(tv.span, format!("this is {a}")),
                    );
                    Type::Error
                }
            }
        };
        let konst = match &c.konst {
            Some(Const::Bool(true)) => tv.konst.clone(),
            Some(Const::Bool(false)) => ev.konst.clone(),
            _ => None,
        };
        let mut all = vec![ty.clone()];
        all.extend(types.iter().cloned());
        let node = self.add(
            Op::If {
                then: then_r,
                otherwise: else_r,
            },
            vec![c.node],
            Type::Tuple(all),
            span,
        );
        self.rebind_carried(&carried, &types, node, 1, span);
        let value = self.add(Op::Project(0), vec![node], ty.clone(), span);
        Val {
            ty,
            node: value,
            konst,
            span,
        }
    }

    /// `ascend z with opt for n steps { ... maximize f }`.
    fn optimize(&mut self, o: &Optimize, span: Span) {
        let opt = self.expr(&o.optimizer);
        if !matches!(opt.ty, Type::Optimizer) && !opt.ty.is_open() {
            self.expect_type(&opt, &Type::Optimizer, "the optimizer");
        }
        let steps = self.expr(&o.steps);
        self.expect_type(&steps, &Type::Int, "the number of steps");
        if let Some(Const::Int(n)) = steps.konst {
            if n <= 0 {
                self.report(Diag::error(
                    Code::InvalidValue,
                    steps.span,
                    format!("{n} steps is not a positive number"),
                    "not positive",
                ));
            }
        }
        if o.direction.node != o.goal.node {
            let (dir, goal, want) = match o.direction.node {
                Direction::Ascend => ("ascend", "minimize", "maximize"),
                Direction::Descend => ("descend", "maximize", "minimize"),
            };
            self.report(
                Diag::error(
                    Code::TypeMismatch,
                    o.goal.span,
                    format!("`{dir}` needs `{want}`, not `{goal}`"),
                    "does not match",
                )
                .with_label(o.direction.span, format!("`{dir}` here"))
                .with_help(format!(
                    "write `{want}`, or use `{}`",
                    if dir == "ascend" { "descend" } else { "ascend" }
                )),
            );
        }
        let Some(var) = self.lookup(&o.var.node).cloned() else {
            self.report(
                Diag::error(
                    Code::UnknownName,
                    o.var.span,
                    format!("`{}` is not defined", o.var.node),
                    "not found",
                )
                .with_help(format!(
                    "declare the variable to optimize first: `var {} = ...`",
                    o.var.node
                )),
            );
            return;
        };
        if var.kind != BindKind::Var {
            self.report(
                Diag::error(
                    Code::NotMutable,
                    o.var.span,
                    format!("`{}` must be a `var` to be optimized", o.var.node),
                    "not a `var`",
                )
                .with_label(var.span, "declared here")
                .with_help(format!("declare it with `var {} = ...`", o.var.node)),
            );
        }
        if !matches!(var.ty, Type::Tensor(_) | Type::Float) && !var.ty.is_open() {
            let t = self.dims.resolve_type(&var.ty);
            self.report(Diag::error(
                Code::TypeMismatch,
                o.var.span,
                format!(
                    "only a tensor or a Float can be optimized, `{}` is {t}",
                    o.var.node
                ),
                "this variable",
            ));
        }
        // The body may not change variables from outside it: it only computes the objective.
        let mut assigned = BTreeSet::new();
        collect_assigned(&o.stmts, &mut assigned);
        for n in &assigned {
            if self.lookup_quiet(n).is_some() {
                self.report(
                    Diag::error(
                        Code::OuterAssignment,
                        o.body_span,
                        format!(
                            "the body of `{}` assigns `{n}`",
                            if o.direction.node == Direction::Ascend {
                                "ascend"
                            } else {
                                "descend"
                            }
                        ),
                        "this body",
                    )
                    .with_help(
                        "the body only computes the objective; change variables after the block",
                    ),
                );
            }
        }
        let region = self.emit.graph.add_region(
            format!("objective of {}", o.var.node),
            1 + o.index.is_some() as u32,
        );
        let Some(init) = var.node else { return };
        self.in_region(region, |cx| {
            cx.push_scope();
            let inp = cx.add(Op::Input(0), vec![], var.ty.clone(), o.var.span);
            // Inside the body the name is the optimized variable itself (not a new binding
            // that shadows it), read-only.
            let inner = super::scope::Binding::new(&o.var.node, BindKind::Let, var.ty.clone(), Some(inp), None, o.var.span);
            inner.used.set(true);
            if let Some(scope) = cx.scopes.last_mut() {
                scope.names.insert(o.var.node.clone(), inner);
            }
            // `for n steps as k`: the step index, an Int input of the body.
            if let Some(k) = &o.index {
                let node = cx.add(Op::Input(1), vec![], Type::Int, k.span);
                let index = super::scope::Binding::new(&k.node, BindKind::Let, Type::Int, Some(node), None, k.span);
                if let Some(scope) = cx.scopes.last_mut() {
                    scope.names.insert(k.node.clone(), index);
                }
            }
            for s in &o.stmts {
                cx.stmt(s);
            }
            let obj = cx.expr(&o.objective);
            if !matches!(obj.ty, Type::Float | Type::Int) && !obj.ty.is_open() {
                let t = cx.dims.resolve_type(&obj.ty);
                cx.report(
                    Diag::error(Code::NotScalar, obj.span, format!("the objective must be a scalar, found {t}"), format!("this is {t}"))
                        .with_help("reduce it to a number, e.g. `sum(...)`, `norm(...)` or `log_likelihood(...)`"),
                );
            }
            cx.emit.graph.region_mut(region).outputs = vec![obj.node];
            cx.pop_scope();
        });
        let node = self.add(
            Op::Optimize {
                direction: o.direction.node,
                body: region,
            },
            vec![init, opt.node, steps.node],
            var.ty.clone(),
            span,
        );
        self.set_var(&o.var.node, node, var.ty.clone());
    }
}

/// Every name assigned in these statements, nested blocks included.
fn collect_assigned(stmts: &[Stmt], out: &mut BTreeSet<String>) {
    for s in stmts {
        match &s.node {
            StmtKind::Assign { target, value, .. } => {
                out.insert(target.node.clone());
                collect_assigned_expr(value, out);
            }
            StmtKind::Let { value, .. } => collect_assigned_expr(value, out),
            StmtKind::For { body, iter, .. } => {
                collect_assigned_expr(iter, out);
                collect_assigned(&body.stmts, out);
                if let Some(v) = &body.value {
                    collect_assigned_expr(v, out);
                }
            }
            StmtKind::Repeat { body, .. } => {
                collect_assigned(&body.stmts, out);
                if let Some(v) = &body.value {
                    collect_assigned_expr(v, out);
                }
            }
            StmtKind::If(e) => collect_assigned_expr(e, out),
            StmtKind::Optimize(o) => {
                out.insert(o.var.node.clone());
                collect_assigned(&o.stmts, out);
            }
            StmtKind::Doc(_) => {}
        }
    }
}

/// Every name assigned inside blocks nested in this expression.
fn collect_assigned_expr(e: &Expr, out: &mut BTreeSet<String>) {
    match &e.node {
        ExprKind::If(c, t, o) => {
            collect_assigned_expr(c, out);
            collect_assigned(&t.stmts, out);
            if let Some(v) = &t.value {
                collect_assigned_expr(v, out);
            }
            if let Some(o) = o {
                collect_assigned_expr(o, out);
            }
        }
        ExprKind::Block(b) => {
            collect_assigned(&b.stmts, out);
            if let Some(v) = &b.value {
                collect_assigned_expr(v, out);
            }
        }
        ExprKind::Paren(x) | ExprKind::Unary(_, x) | ExprKind::Field(x, _) => {
            collect_assigned_expr(x, out)
        }
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            collect_assigned_expr(a, out);
            collect_assigned_expr(b, out);
        }
        ExprKind::Slice(x, from, to) => {
            collect_assigned_expr(x, out);
            for b in [from, to].into_iter().flatten() {
                collect_assigned_expr(b, out);
            }
        }
        ExprKind::Call(f, args) => {
            collect_assigned_expr(f, out);
            for a in args {
                collect_assigned_expr(&a.value, out);
            }
        }
        ExprKind::Method(r, _, args) => {
            collect_assigned_expr(r, out);
            for a in args {
                collect_assigned_expr(&a.value, out);
            }
        }
        ExprKind::List(xs) | ExprKind::Tuple(xs) => {
            for x in xs {
                collect_assigned_expr(x, out);
            }
        }
        _ => {}
    }
}

/// What [`Checker::dead_end`] needs to undo a dead branch.
struct DeadMark {
    diags: usize,
    nodes: u32,
    dims: crate::check::unify::DimSnapshot,
    /// The number of function instances made before the branch.
    instances: usize,
}

/// Errors that say a value or a type does not fit, dropped in a branch that cannot run;
/// syntax errors, unknown names, arity and argument-name mistakes, and file errors are
/// mistakes in the text whatever the values, and stay.
fn depends_on_values(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidValue
            | Code::TypeMismatch
            | Code::ShapeMismatch
            | Code::ModelMismatch
            | Code::Capability
            | Code::NotCallable
            | Code::NotScalar
            | Code::UnknownShape
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::check::{check_source, CheckOptions, Checked};
    use crate::diagnostics::Code;

    /// Checks `text` (with the repository as its folder) with these `--set` values.
    fn check(text: &str, sets: &[(&str, &str)]) -> Checked {
        let overrides: BTreeMap<String, String> = sets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check_source(
            "case.mapga",
            text,
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
            &CheckOptions {
                overrides,
                ..Default::default()
            },
        )
    }

    fn errors(c: &Checked) -> Vec<Code> {
        c.diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.code)
            .collect()
    }

    const TASKS: &str = r#"
param task = "sr2x"
let x = image("data/mnist/test/7.png")
let A = if task == "sr2x" { downsample(2) } else { inpaint(center_box_mask(28, 28)) }
let y: Tensor[1, 14, 14] = A(x)
report sum(y)
"#;

    #[test]
    fn a_constant_if_has_its_live_branch_type() {
        // The branches are operators of different shapes: only the live one counts.
        assert_eq!(errors(&check(TASKS, &[])), vec![]);
        // With the other task, A maps 28 x 28 to 28 x 28, and the annotation no longer fits.
        let other = check(TASKS, &[("task", "box25")]);
        assert_eq!(
            errors(&other),
            vec![Code::ShapeMismatch],
            "{:?}",
            other.diags
        );
        // Strings compare as constants; the branches need not even be of one kind.
        let mixed = "param s = \"a\"\nlet v = if s == \"a\" { 1 } else { \"one\" }\nreport v + 1\n";
        assert_eq!(errors(&check(mixed, &[])), vec![]);
        assert_eq!(
            errors(&check(mixed, &[("s", "b")])),
            vec![Code::TypeMismatch]
        );
    }

    const SOLVERS: &str = r#"
use std.solvers.ddrm
use std.solvers.mapga
param solver = "mapga"
model prior = gaussian_prior(load_npy("data/mnist/prior/mean.npy"), load_npy("data/mnist/prior/var.npy"))
let x = image("data/mnist/test/7.png")
let A = motion_blur(size: 5)
let ts = karras(steps: 5)
let x_hat = if solver == "ddrm" { ddrm(A(x), A, 0.05, prior, ts) } else { mapga(A(x), A, 0.05, prior, prior, ts) }
report psnr(x_hat, x)
"#;

    #[test]
    fn dead_branch_capability_errors_are_dropped_and_live_ones_kept() {
        // DDRM needs an SVD that a motion blur lacks: an error only where DDRM runs.
        assert_eq!(errors(&check(SOLVERS, &[])), vec![]);
        let ddrm = check(SOLVERS, &[("solver", "ddrm")]);
        assert_eq!(errors(&ddrm), vec![Code::Capability], "{:?}", ddrm.diags);
    }

    #[test]
    fn dead_branches_keep_name_errors_and_drop_value_errors() {
        let text = "param k = 1\nlet v = if k == 2 { karras(steps: 0).first + 1 } else { 2.0 }\nreport v\n";
        assert_eq!(errors(&check(text, &[])), vec![]);
        assert_eq!(
            errors(&check(text, &[("k", "2")])),
            vec![Code::InvalidValue]
        );
        let typed = "param k = 1\nlet v = if k == 2 { 1 + \"a\" } else { 2 }\nreport v\n";
        assert_eq!(errors(&check(typed, &[])), vec![]);
        assert_eq!(
            errors(&check(typed, &[("k", "2")])),
            vec![Code::TypeMismatch]
        );
        // A misspelt name is a mistake whatever the values.
        let named = "param k = 1\nlet v = if k == 2 { nope } else { 2 }\nreport v\n";
        assert_eq!(errors(&check(named, &[])), vec![Code::UnknownName]);
        // A condition that is not constant still joins both branches.
        let open = "let x = image(\"data/mnist/test/7.png\")\nlet v = if sum(x) > 0.0 { 1 } else { \"a\" }\nreport 1\n";
        assert_eq!(errors(&check(open, &[])), vec![Code::TypeMismatch]);
    }

    #[test]
    fn a_function_checked_for_a_dead_branch_is_checked_again_when_live() {
        // The dead call's instance of `f` (with its error) is forgotten: the live call with the
        // same argument types reports the error.
        let text = "fn f(s: Int) -> Float { karras(steps: s).first }\nparam k = 1\nlet a = if k == 2 { f(0) } else { 1.0 }\nlet b = f(0)\nreport a + b\n";
        let c = check(text, &[]);
        assert_eq!(errors(&c), vec![Code::InvalidValue], "{:?}", c.diags);
    }
}
