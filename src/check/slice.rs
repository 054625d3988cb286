//! Slicing: `x[a:b]`, `x[:b]`, `x[a:]` take a range of the first dimension of a tensor (the
//! first `n` digits of a loaded batch: `digits[:n]`) or of a list. Bounds are Ints counted
//! from 0, the end excluded; both default to the whole length. When the bounds are constants
//! (literals, params) the result's first dimension is known before running, and a range that
//! does not fit a known length is an error here.

use super::types::{Dim, Shape, Type};
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, Op};
use crate::source::Span;

impl Checker {
    /// Reports a bad slice, unless an identical one (same bounds, same message) was reported:
    /// one wrong `--set n=...` used by four slices is one error, whose note lists the other
    /// places, not four errors.
    fn report_slice_once(&mut self, d: Diag, at: Span) {
        // Where the first such error is, remembered by message (the list may have changed
        // since: then it is looked for again). Every one reported went through here.
        let is_same = |old: &Diag| old.code == d.code && old.message == d.message;
        let index = self.slice_errors.get(&d.message).copied().and_then(|i| {
            if self.diags.0.get(i).is_some_and(is_same) {
                Some(i)
            } else {
                self.diags.0.iter().position(is_same)
            }
        });
        if let Some(i) = index {
            self.slice_errors.insert(d.message.clone(), i);
        }
        let same = index.and_then(|i| self.diags.0.get_mut(i));
        match same {
            Some(first) => {
                let file = self.sources.get(at.file);
                let (line, _) = file.line_col(at.start as usize);
                let name = file.name.clone();
                let place = format!("{name}:{line}");
                match first
                    .notes
                    .iter_mut()
                    .find(|n| n.starts_with("the same slice is also at "))
                {
                    Some(note) => {
                        note.push_str(", ");
                        note.push_str(&place);
                    }
                    None => first
                        .notes
                        .push(format!("the same slice is also at {place}")),
                }
            }
            None => {
                let (message, before) = (d.message.clone(), self.diags.0.len());
                self.report(d);
                if self.diags.0.len() > before {
                    self.slice_errors.insert(message, before);
                }
            }
        }
    }

    /// `base[from:to]`.
    pub(super) fn slice(&mut self, b: Val, from: Option<Val>, to: Option<Val>, span: Span) -> Val {
        let mut bounds_ok = true;
        for v in from.iter().chain(to.iter()) {
            bounds_ok &= self.expect_type(v, &Type::Int, "a slice bound");
        }
        let konst = |v: &Option<Val>| -> Option<Option<i64>> {
            v.as_ref().map(|v| v.konst.as_ref().and_then(Const::as_i64))
        };
        // The length of what is sliced, when known before running.
        let len = match (&b.konst, &b.ty) {
            (Some(Const::List(xs)), Type::List(_)) => Some(xs.len() as i64),
            (_, Type::Tensor(Shape::Dims(d))) if !d.is_empty() => match self.dims.resolve(d[0]) {
                Dim::Known(n) => Some(n as i64),
                Dim::Var(_) => None,
            },
            _ => None,
        };
        let start = konst(&from).unwrap_or(Some(0));
        let end = konst(&to).unwrap_or(len);
        if let (true, Some(a), Some(e)) = (bounds_ok, start, end) {
            let past_end = len.is_some_and(|n| e > n);
            if a < 0 || e < a || past_end {
                let culprit = if a < 0 || e < a { &from } else { &to };
                let at = culprit.as_ref().or(to.as_ref()).map_or(span, |v| v.span);
                let mut d = Diag::error(
                    Code::InvalidValue,
                    at,
                    format!("the slice {a}:{e} is out of range"),
                    "out of range",
                );
                d = match len {
                    Some(n) => d
                        .with_label(
                            b.span,
                            format!("this has {n} entr{}", if n == 1 { "y" } else { "ies" }),
                        )
                        .with_help(format!("a slice `a:b` needs 0 <= a <= b <= {n}")),
                    None => d.with_help("a slice `a:b` needs 0 <= a <= b"),
                };
                self.report_slice_once(d, at);
                return self.error_val(span);
            }
            // An empty tensor is no batch at all: every model, metric and saved grid of it fails,
            // only after the whole solve has run on nothing.
            if a == e && matches!(b.ty, Type::Tensor(_)) {
                let at = to.as_ref().or(from.as_ref()).map_or(span, |v| v.span);
                self.report_slice_once(
                    Diag::error(
                        Code::InvalidValue,
                        at,
                        format!("the slice {a}:{e} takes no entries"),
                        "empty",
                    )
                    .with_help(
                        "a tensor needs at least one entry along each dimension: slice `a:b` with a < b \
                         (for `x[:n]`, n of at least 1)",
                    ),
                    at,
                );
                return self.error_val(span);
            }
        }
        let ty = match &b.ty {
            Type::List(_) => b.ty.clone(),
            Type::Tensor(Shape::Dims(d)) if !d.is_empty() => {
                let count = match (start, end) {
                    (Some(a), Some(e)) => e.checked_sub(a).and_then(|n| u64::try_from(n).ok()),
                    _ => None,
                };
                let first = match count {
                    Some(n) => Dim::Known(n),
                    None => self.dims.fresh(),
                };
                let mut dims = vec![first];
                dims.extend(d[1..].iter().copied());
                Type::Tensor(Shape::Dims(dims))
            }
            Type::Tensor(Shape::Unknown) => Type::tensor(),
            t if t.is_open() => t.clone(),
            other => {
                let other = self.dims.resolve_type(other);
                let what = if matches!(other, Type::Tensor(_)) {
                    "a 0-dimensional tensor".to_string()
                } else {
                    other.kind_phrase().to_string()
                };
                self.report(
                    Diag::error(
                        Code::TypeMismatch,
                        b.span,
                        format!("{what} cannot be sliced"),
                        format!("this is {other}"),
                    )
                    .with_help(
                        "slices `x[a:b]` take a range of a tensor's first dimension or of a list",
                    ),
                );
                Type::Error
            }
        };
        let konst = match (&b.konst, start, end) {
            (Some(Const::List(xs)), Some(a), Some(e)) => {
                Some(Const::List(xs[a as usize..e as usize].to_vec()))
            }
            _ => None,
        };
        let mut inputs = vec![b.node];
        inputs.extend(from.iter().chain(to.iter()).map(|v| v.node));
        let op = Op::Slice {
            start: from.is_some(),
            end: to.is_some(),
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
