//! Bindings and local scopes, with use tracking for the unused-binding warning.

use std::cell::Cell;
use std::collections::HashMap;

use super::types::Type;
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, NodeId};
use crate::source::Span;

/// Name comparisons that the "did you mean" searches for unknown names of one check may
/// make in all (see [`Checker::suggest_visible`]): far more than any hand-written file needs,
/// and a few tenths of a second at most.
pub(super) const SUGGEST_BUDGET: usize = 1_000_000;

/// What introduced a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindKind {
    /// `param`.
    Param,
    /// `model`.
    Model,
    /// `let` (or a loop pattern).
    Let,
    /// `var`: may be assigned.
    Var,
    /// A function parameter.
    FnParam,
    /// An imported name.
    Import,
}

/// A name bound to a value.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The name.
    pub name: String,
    /// What introduced it.
    pub kind: BindKind,
    /// Its type.
    pub ty: Type,
    /// The node holding its current value (`None` for functions).
    pub node: Option<NodeId>,
    /// Its value, when known before running.
    pub konst: Option<Const>,
    /// Where it was bound.
    pub span: Span,
    /// Whether anything refers to it.
    pub used: Cell<bool>,
}

impl Binding {
    /// A binding not used yet.
    pub fn new(
        name: &str,
        kind: BindKind,
        ty: Type,
        node: Option<NodeId>,
        konst: Option<Const>,
        span: Span,
    ) -> Self {
        Binding {
            name: name.to_string(),
            kind,
            ty,
            node,
            konst,
            span,
            used: Cell::new(false),
        }
    }
}

/// One local scope (a function body, a block, a loop body).
#[derive(Debug, Default)]
pub struct Scope {
    /// The bindings, by name.
    pub names: HashMap<String, Binding>,
}

impl Checker {
    /// Opens a local scope.
    pub(super) fn push_scope(&mut self) {
        self.scopes.push(Scope::default());
    }

    /// Closes the innermost scope, warning about bindings nothing used.
    pub(super) fn pop_scope(&mut self) {
        let Some(scope) = self.scopes.pop() else {
            return;
        };
        if self.call_stack.is_empty() {
            let mut unused: Vec<&Binding> = scope
                .names
                .values()
                .filter(|b| !b.used.get() && !b.name.starts_with('_'))
                .filter(|b| matches!(b.kind, BindKind::Let | BindKind::Var | BindKind::FnParam))
                .collect();
            unused.sort_by_key(|b| b.span.start);
            let diags: Vec<Diag> = unused
                .into_iter()
                .map(|b| {
                    let what = if b.kind == BindKind::FnParam {
                        "parameter "
                    } else {
                        ""
                    };
                    Diag::error(
                        Code::Unused,
                        b.span,
                        format!("{what}`{}` is never used", b.name),
                        "unused",
                    )
                    .with_help(format!("remove it, or name it `_{}`", b.name))
                })
                .collect();
            for d in diags {
                self.report(d);
            }
        }
    }

    /// Binds a local name in the innermost scope, warning when it hides another binding.
    pub(super) fn bind_local(&mut self, name: &str, kind: BindKind, v: Val, span: Span) {
        if self.call_stack.is_empty()
            && matches!(kind, BindKind::Let | BindKind::Var)
            && !name.starts_with('_')
        {
            let local = self.scopes.iter().any(|s| s.names.contains_key(name));
            if let Some(prev) = self.lookup_quiet(name) {
                // A function body sees only the module bindings above it: one defined later in
                // the file is not hidden.
                let later = !local && prev.span.file == span.file && prev.span.start > span.start;
                if !matches!(prev.kind, BindKind::Import) && prev.span != span && !later {
                    let d = Diag::error(
                        Code::Shadowing,
                        span,
                        format!("`{name}` hides an earlier binding with the same name"),
                        "this binding",
                    )
                    .with_label(prev.span, "hides this one")
                    .with_help("rename one of them; if you meant to change it, declare it with `var` and assign");
                    self.report(d);
                }
            }
        }
        let b = Binding::new(name, kind, v.ty, Some(v.node), v.konst, span);
        if let Some(scope) = self.scopes.last_mut() {
            scope.names.insert(name.to_string(), b);
        } else {
            self.modules[self.module]
                .globals
                .insert(name.to_string(), b);
        }
    }

    /// Finds a binding without marking it used (locals, then the module).
    pub(super) fn lookup_quiet(&self, name: &str) -> Option<&Binding> {
        for s in self.scopes.iter().rev() {
            if let Some(b) = s.names.get(name) {
                return Some(b);
            }
        }
        self.modules[self.module].globals.get(name)
    }

    /// Finds a local or module binding and marks it used.
    pub(super) fn lookup(&self, name: &str) -> Option<&Binding> {
        let b = self.lookup_quiet(name)?;
        b.used.set(true);
        Some(b)
    }

    /// Updates the node (current value) of a bound `var`.
    pub(super) fn set_var(&mut self, name: &str, node: NodeId, ty: Type) {
        for s in self.scopes.iter_mut().rev() {
            if let Some(b) = s.names.get_mut(name) {
                b.node = Some(node);
                b.ty = ty;
                b.konst = None;
                return;
            }
        }
    }

    /// The visible name closest to `word` (locals, module bindings and functions, built-ins),
    /// for "did you mean".
    ///
    /// Each search compares `word` with every visible name, so a file with many names and
    /// many unknown ones would cost their product. The searches of one check share a budget
    /// of [`SUGGEST_BUDGET`] comparisons; once it is spent, unknown names get no suggestion.
    pub(super) fn suggest_visible(&mut self, word: &str) -> Option<String> {
        let module = &self.modules[self.module];
        let count = self.scopes.iter().map(|s| s.names.len()).sum::<usize>()
            + module.globals.len()
            + module.fns.len()
            + self.prelude.len();
        if count > self.suggest_budget {
            self.suggest_budget = 0;
            return None;
        }
        self.suggest_budget -= count;
        let names = self
            .scopes
            .iter()
            .flat_map(|s| s.names.keys())
            .chain(module.globals.keys())
            .chain(module.fns.keys())
            .chain(self.prelude.keys())
            .map(String::as_str);
        super::suggest::closest(word, names).map(str::to_string)
    }
}
