//! Calls: matching arguments to parameters, built-in calls, and specialising user functions.

use super::annot::DimNames;
use super::scope::BindKind;
use super::types::{FnRef, Type};
use super::{Checker, Emit, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, FuncId, Function, Op};
use crate::source::{Ident, Span};
use crate::syntax::ast::{FnParam, ItemKind, TypeExpr};

/// A checked argument, with its name if it was given as `name: value`.
pub(crate) struct ArgVal {
    pub name: Option<Ident>,
    pub val: Val,
}

/// What a parameter received.
pub(crate) enum Slot {
    /// A value.
    Given(Val),
    /// Nothing: use the default.
    Default,
    /// The arguments of a variadic parameter.
    Many(Vec<Val>),
}

/// A callee's signature, borrowed from its definition.
pub(crate) struct Sig<'a> {
    pub name: &'a str,
    pub params: &'a [FnParam],
    pub ret: Option<&'a TypeExpr>,
    pub def_span: Span,
}

impl Checker {
    /// Matches arguments to parameters; `None` after reporting when they do not fit.
    pub(super) fn match_args(
        &mut self,
        sig: &Sig<'_>,
        args: Vec<ArgVal>,
        call: Span,
    ) -> Option<Vec<Slot>> {
        let n = sig.params.len();
        let mut slots: Vec<Option<Slot>> = (0..n).map(|_| None).collect();
        let mut ok = true;
        let mut pos = 0usize;
        for a in args {
            match a.name {
                None => {
                    if pos < n && sig.params[pos].variadic {
                        if let Slot::Many(v) =
                            slots[pos].get_or_insert_with(|| Slot::Many(Vec::new()))
                        {
                            v.push(a.val);
                        }
                        continue;
                    }
                    if pos >= n {
                        let d = Diag::error(
                            Code::Arity,
                            a.val.span,
                            format!(
                                "`{}` takes {} argument{}, but more were given",
                                sig.name,
                                n,
                                if n == 1 { "" } else { "s" }
                            ),
                            "extra argument",
                        )
                        .with_label(sig.def_span, "defined here")
                        .with_help(format!(
                            "remove it; the parameters are: {}",
                            param_list(sig.params)
                        ));
                        self.report(d);
                        ok = false;
                        continue;
                    }
                    slots[pos] = Some(Slot::Given(a.val));
                    pos += 1;
                }
                Some(name) => {
                    let Some(i) = sig.params.iter().position(|p| p.name.node == name.node) else {
                        let mut d = Diag::error(
                            Code::UnknownArg,
                            name.span,
                            format!("`{}` has no parameter named `{}`", sig.name, name.node),
                            "unknown argument",
                        )
                        .with_label(sig.def_span, "defined here");
                        let names = sig.params.iter().map(|p| p.name.node.as_str());
                        d = match super::suggest::closest(&name.node, names) {
                            Some(s) => d.with_help(format!("did you mean `{s}`?")),
                            None => d.with_help(format!(
                                "the parameters are: {}",
                                param_list(sig.params)
                            )),
                        };
                        self.report(d);
                        ok = false;
                        continue;
                    };
                    if let Some(prev) = &slots[i] {
                        let prev_span = match prev {
                            Slot::Given(v) => v.span,
                            Slot::Many(v) => v.first().map_or(call, |x| x.span),
                            Slot::Default => call,
                        };
                        self.report(
                            Diag::error(
                                Code::DuplicateArg,
                                name.span,
                                format!("`{}` is given twice", name.node),
                                "given again here",
                            )
                            .with_label(prev_span, "first given here")
                            .with_help("remove one of them"),
                        );
                        ok = false;
                        continue;
                    }
                    slots[i] = Some(if sig.params[i].variadic {
                        Slot::Many(vec![a.val])
                    } else {
                        Slot::Given(a.val)
                    });
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        let mut missing = Vec::new();
        for (i, s) in slots.into_iter().enumerate() {
            let p = &sig.params[i];
            out.push(match s {
                Some(s) => s,
                None if p.variadic => Slot::Many(Vec::new()),
                None if p.default.is_some() => Slot::Default,
                None => {
                    missing.push(p.name.node.clone());
                    Slot::Default
                }
            });
        }
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let example = missing
                .iter()
                .map(|m| format!("{m}: ..."))
                .collect::<Vec<_>>()
                .join(", ");
            self.report(
                Diag::error(
                    Code::Arity,
                    call,
                    format!(
                        "`{}` is missing {} {list}",
                        sig.name,
                        if missing.len() == 1 {
                            "argument"
                        } else {
                            "arguments"
                        }
                    ),
                    format!("missing {list}"),
                )
                .with_label(sig.def_span, "defined here")
                .with_help(format!("add {example}")),
            );
            ok = false;
        }
        ok.then_some(out)
    }

    /// Checks given arguments against their parameters' annotations (dimension names shared
    /// across the signature), returning the annotated result type.
    fn check_annotations(&mut self, sig: &Sig<'_>, slots: &mut [Slot]) -> Type {
        let mut names = DimNames::new();
        // Arguments checked so far, with their parameter's name and annotation text.
        let mut earlier: Vec<(&str, String, Val)> = Vec::new();
        for (p, slot) in sig.params.iter().zip(slots.iter_mut()) {
            let Some(ann) = &p.ty else { continue };
            let want = self.type_of_annotation(ann, &mut names);
            let what = format!("parameter `{}`", p.name.node);
            let ann_text = self.sources.snippet(ann.span).to_string();
            match slot {
                Slot::Given(v) => {
                    let c = match self.coerce_or_diag(v.clone(), &want, ann.span, &what) {
                        Ok(c) => c,
                        Err(e) => {
                            let (mut d, c) = *e;
                            // Two arguments that must have the same shape (`psnr(x, reference)`):
                            // show both, not the library's signature.
                            let twin = earlier.iter().find(|(_, t, _)| *t == ann_text);
                            if let (Code::ShapeMismatch, Some((q, _, w))) = (d.code, twin) {
                                let other = self.dims.resolve_type(&w.ty);
                                let this = self.dims.resolve_type(&v.ty);
                                d.message = format!(
                                    "`{}` needs `{q}` and `{}` of the same shape",
                                    sig.name, p.name.node
                                );
                                d.labels.truncate(1);
                                d.labels[0].text = format!("`{}` is {this}", p.name.node);
                                d = d.with_label(w.span, format!("`{q}` is {other}"));
                            }
                            self.report(d);
                            c
                        }
                    };
                    earlier.push((p.name.node.as_str(), ann_text, c.clone()));
                    *v = c;
                }
                Slot::Many(vs) => {
                    for v in vs.iter_mut() {
                        let c = self.coerce(v.clone(), &want, ann.span, &what);
                        *v = c;
                    }
                }
                Slot::Default => {}
            }
        }
        match sig.ret {
            Some(r) => self.type_of_annotation(r, &mut names),
            None => Type::Any,
        }
    }

    /// Calls a built-in.
    pub(super) fn call_builtin(&mut self, name: &str, args: Vec<ArgVal>, call: Span) -> Val {
        let Some(&(midx, iidx)) = self.prelude.get(name) else {
            return self.error_val(call);
        };
        let program = self.modules[midx].program.clone();
        let ItemKind::Extern(ext) = &program.items[iidx].kind else {
            return self.error_val(call);
        };
        let sig = Sig {
            name,
            params: &ext.params,
            ret: Some(&ext.ret),
            def_span: ext.name.span,
        };
        let Some(mut slots) = self.match_args(&sig, args, call) else {
            return self.error_val(call);
        };
        let poisoned = poisoned(&slots);
        let diags_before = self.diags.0.len();
        let ret = self.check_annotations(&sig, &mut slots);
        // An argument that is already wrong, or that does not fit its parameter, makes the
        // call's result unknown: no second error downstream of the first.
        if poisoned || self.diags.0.len() > diags_before {
            return self.error_val(call);
        }
        // Defaults of built-ins are constants of the standard library.
        let mut given: Vec<(String, Option<Val>)> = Vec::new();
        let mut variadic = None;
        let mut rest: Vec<Val> = Vec::new();
        for (p, slot) in ext.params.iter().zip(slots) {
            match slot {
                Slot::Given(v) => {
                    given.push((p.name.node.clone(), Some(v)));
                }
                Slot::Many(vs) => {
                    variadic = Some(vs.len() as u32);
                    rest = vs;
                    given.push((p.name.node.clone(), None));
                }
                Slot::Default => {
                    let v = match &p.default {
                        Some(d) => {
                            let saved = self.module;
                            self.module = midx;
                            let mut v = self.expr(d);
                            self.module = saved;
                            if let Some(t) = &p.ty {
                                let want = self.type_of_annotation(t, &mut DimNames::new());
                                if let Ok(ty) = self.fits(&v.ty, &want) {
                                    v.ty = ty;
                                    if let (Type::Float, Some(Const::Int(i))) = (&v.ty, &v.konst) {
                                        v.konst = Some(Const::Float(*i as f64));
                                    }
                                }
                            }
                            v
                        }
                        None => self.error_val(call),
                    };
                    given.push((p.name.node.clone(), Some(v)));
                }
            }
        }
        let mut args = super::builtins::Args {
            named: given,
            rest,
            call,
        };
        let ty = self.builtin_rule(name, &mut args, ret);
        // The inputs are read after the rule, which may replace an argument (a function value
        // becomes an `Op::Lambda`).
        let inputs = args.input_nodes();
        let node = self.add(
            Op::Builtin {
                name: name.to_string(),
                variadic,
            },
            inputs,
            ty.clone(),
            call,
        );
        let konst = self.fold_builtin(name, &args);
        Val {
            ty,
            node,
            konst,
            span: call,
        }
    }

    /// Calls a user or library function: from its annotations alone while checking a function
    /// on its own, otherwise by specialising its body for these arguments.
    pub(super) fn call_user(
        &mut self,
        module: usize,
        name: &str,
        args: Vec<ArgVal>,
        call: Span,
    ) -> Val {
        let program = self.modules[module].program.clone();
        let Some(&idx) = self.modules[module].fns.get(name) else {
            return self.error_val(call);
        };
        let ItemKind::Fn(f) = &program.items[idx].kind else {
            return self.call_builtin(name, args, call);
        };
        let sig = Sig {
            name,
            params: &f.params,
            ret: f.ret.as_ref(),
            def_span: f.name.span,
        };
        let Some(mut slots) = self.match_args(&sig, args, call) else {
            return self.error_val(call);
        };
        let poisoned = poisoned(&slots);
        let diags_before = self.diags.0.len();
        let ret = self.check_annotations(&sig, &mut slots);
        // As for built-ins: a wrong argument gives an unknown result, not the declared one
        // (DDRM called with an operator it cannot take returned `Tensor[C, H, W]`, and the
        // `psnr` of that against a batch was a second, bogus error).
        if poisoned || self.diags.0.len() > diags_before {
            return self.error_val(call);
        }
        if self.generic {
            let inputs = slots
                .iter()
                .filter_map(|s| match s {
                    Slot::Given(v) => Some(v.node),
                    _ => None,
                })
                .collect();
            let node = self.add(Op::Const(Const::Unit), inputs, ret.clone(), call);
            return Val {
                ty: ret,
                node,
                konst: None,
                span: call,
            };
        }
        if self
            .call_stack
            .iter()
            .any(|(m, n, _)| *m == module && n == name)
        {
            let chain: Vec<String> = self
                .call_stack
                .iter()
                .map(|(_, n, _)| n.clone())
                .chain(std::iter::once(name.to_string()))
                .collect();
            self.report(
                Diag::error(
                    Code::Recursion,
                    call,
                    format!("`{name}` calls itself"),
                    "recursive call",
                )
                .with_note(format!("call chain: {}", chain.join(" -> ")))
                .with_help("functions cannot be recursive; use `for` or `repeat` loops"),
            );
            return self.error_val(call);
        }
        // The specialisation key: which arguments were given, with their exact types and
        // constant values (shapes may depend on constants such as sizes).
        let mut key = format!("{module}:{name}");
        for s in &slots {
            match s {
                Slot::Given(v) => {
                    let t = self.dims.resolve_type(&v.ty);
                    key.push_str(&format!("|{t:?}={:?}", v.konst));
                }
                _ => key.push_str("|-"),
            }
        }
        let inputs: Vec<_> = slots
            .iter()
            .filter_map(|s| match s {
                Slot::Given(v) => Some(v.node),
                _ => None,
            })
            .collect();
        let (fid, ty) = match self.emit.instances.get(&key) {
            Some((fid, ty)) => (*fid, ty.clone()),
            None => {
                let (fid, ty) = self.specialise(module, f, slots, ret, call);
                self.emit.instance_order.push(key.clone());
                self.emit.instances.insert(key, (fid, ty.clone()));
                (fid, ty)
            }
        };
        let node = self.add(Op::Call(fid), inputs, ty.clone(), call);
        Val {
            ty,
            node,
            konst: None,
            span: call,
        }
    }

    /// Checks a function body for these arguments and emits it as a graph function.
    fn specialise(
        &mut self,
        module: usize,
        f: &crate::syntax::ast::FnDef,
        slots: Vec<Slot>,
        ret: Type,
        call: Span,
    ) -> (FuncId, Type) {
        let given = slots.iter().filter(|s| matches!(s, Slot::Given(_))).count() as u32;
        let region = self
            .emit
            .graph
            .add_region(format!("fn {}", f.name.node), given);
        let fid = FuncId(self.emit.graph.functions.len() as u32);
        self.emit.graph.functions.push(Function {
            name: f.name.node.clone(),
            module: self.sources.get(self.modules[module].file).name.clone(),
            body: region,
            span: f.name.span,
        });
        let saved_module = std::mem::replace(&mut self.module, module);
        let saved_region = std::mem::replace(&mut self.region, region);
        let saved_scopes = std::mem::take(&mut self.scopes);
        self.call_stack.push((module, f.name.node.clone(), call));
        self.push_scope();
        let mut input = 0u32;
        for (p, slot) in f.params.iter().zip(slots) {
            let v = match slot {
                Slot::Given(v) => {
                    let node = self.add(Op::Input(input), vec![], v.ty.clone(), p.name.span);
                    input += 1;
                    Val {
                        node,
                        span: p.name.span,
                        ..v
                    }
                }
                _ => match &p.default {
                    Some(d) => {
                        let v = self.expr(d);
                        let v = self.annotate(v, p.ty.as_ref());
                        Val {
                            span: p.name.span,
                            ..v
                        }
                    }
                    None => self.error_val(p.name.span),
                },
            };
            self.bind_local(&p.name.node, BindKind::FnParam, v, p.name.span);
        }
        let body = self.block(&f.body);
        let body = match &f.ret {
            Some(r) => self.coerce(body, &ret, r.span, "the declared result type"),
            None => body,
        };
        self.emit.graph.region_mut(region).outputs.push(body.node);
        self.pop_scope();
        self.call_stack.pop();
        self.scopes = saved_scopes;
        self.region = saved_region;
        self.module = saved_module;
        (fid, body.ty)
    }

    /// Checks a function on its own, from its annotations, before any call: reports every
    /// error that does not depend on the caller. Emits into a scratch graph.
    pub(super) fn check_fn_alone(&mut self, f: &crate::syntax::ast::FnDef) {
        let saved_emit = std::mem::replace(
            &mut self.emit,
            Emit {
                graph: crate::graph::Graph::new(),
                ..Default::default()
            },
        );
        let saved_generic = std::mem::replace(&mut self.generic, true);
        let saved_region = std::mem::replace(&mut self.region, crate::graph::Graph::MAIN);
        let saved_scopes = std::mem::take(&mut self.scopes);
        self.push_scope();
        self.check_duplicate_params(&f.params);
        let mut names = DimNames::new();
        for p in &f.params {
            let ty = match &p.ty {
                Some(t) => self.type_of_annotation(t, &mut names),
                None => Type::Any,
            };
            let v = match &p.default {
                Some(d) => {
                    let v = self.expr(d);
                    let v = self.coerce(
                        v,
                        &ty,
                        p.ty.as_ref().map_or(p.name.span, |t| t.span),
                        &format!("parameter `{}`", p.name.node),
                    );
                    if ty.is_open() {
                        v
                    } else {
                        Val {
                            ty: ty.clone(),
                            ..v
                        }
                    }
                }
                None => {
                    let node = self.add(Op::Input(0), vec![], ty.clone(), p.name.span);
                    Val {
                        ty: ty.clone(),
                        node,
                        konst: None,
                        span: p.name.span,
                    }
                }
            };
            let ty = if p.variadic {
                Type::List(Box::new(v.ty.clone()))
            } else {
                v.ty.clone()
            };
            self.bind_local(
                &p.name.node,
                BindKind::FnParam,
                Val { ty, ..v },
                p.name.span,
            );
        }
        let ret = f
            .ret
            .as_ref()
            .map(|r| (self.type_of_annotation(r, &mut names), r.span));
        let body = self.block(&f.body);
        if let Some((want, span)) = ret {
            self.coerce(body, &want, span, "the declared result type");
        }
        self.pop_scope();
        self.scopes = saved_scopes;
        self.region = saved_region;
        self.generic = saved_generic;
        self.emit = saved_emit;
    }

    /// Reports parameters declared twice in one parameter list.
    fn check_duplicate_params(&mut self, params: &[FnParam]) {
        for (i, p) in params.iter().enumerate() {
            if let Some(first) = params[..i].iter().find(|q| q.name.node == p.name.node) {
                self.report(
                    Diag::error(
                        Code::Duplicate,
                        p.name.span,
                        format!("parameter `{}` is declared twice", p.name.node),
                        "declared again here",
                    )
                    .with_label(first.name.span, "first declared here")
                    .with_help("rename one of them"),
                );
            }
        }
    }

    /// Calls a function value (a `Fn`-typed binding).
    pub(super) fn call_fn_value(&mut self, f: &FnRef, args: Vec<ArgVal>, call: Span) -> Val {
        match f {
            FnRef::Builtin(n) if n.is_empty() => {
                // An unknown function (a `Fn` parameter checked on its own).
                let node = self.add(
                    Op::Apply,
                    args.iter().map(|a| a.val.node).collect(),
                    Type::Any,
                    call,
                );
                Val {
                    ty: Type::Any,
                    node,
                    konst: None,
                    span: call,
                }
            }
            FnRef::Builtin(n) => self.call_builtin(&n.clone(), args, call),
            FnRef::User { module, name } => self.call_user(*module, &name.clone(), args, call),
        }
    }
}

/// `a, b: Float, c = 1` for help lines.
/// Whether an argument already carries an error (its type is unknown after a reported one).
fn poisoned(slots: &[Slot]) -> bool {
    slots.iter().any(|s| match s {
        Slot::Given(v) => matches!(v.ty, Type::Error),
        Slot::Many(vs) => vs.iter().any(|v| matches!(v.ty, Type::Error)),
        Slot::Default => false,
    })
}

fn param_list(params: &[FnParam]) -> String {
    params
        .iter()
        .map(|p| {
            if p.default.is_some() {
                format!("{} (optional)", p.name.node)
            } else {
                p.name.node.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
