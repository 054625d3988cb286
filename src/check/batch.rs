//! Batches: a tensor with one dimension more than an operator, a model or a metric works on is
//! a batch `[N, ...]` of such items, and what comes out has the same leading `N`.
//!
//! `A(x)`, `A.adjoint(v)` and the other operator methods, `model(x, t)`, `log_likelihood`,
//! `log_prior`, `exact_map` and the metrics all accept a batch: they split the value's shape
//! into its batch dimension and the item shape, check the item as they check one image, and put
//! the batch back on the result. Two batched values that meet (`y` and `x` of a likelihood, the
//! two images of a metric, the columns of a grid) must have the same `N`, reported with a label
//! on each. Metrics give one number per item (`Tensor[N]`), which `mean(...)` reduces for
//! `report`. Arithmetic broadcasts an image against a batch (see
//! [`super::unify::DimTable::unify_broadcast`]).
//!
//! Solvers create their unknowns with `A.domain_for(y)` (the domain with `y`'s batch) or
//! `batch_shape(shape, count)`, so one definition serves single images and batches.

use super::builtins::{shape_of, Args};
use super::types::{Dim, Shape, Type};
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::Const;

/// Splits a value's shape into a leading batch dimension and the item shape the callee
/// expects: `[N, C, H, W]` against `[C, H, W]`. A shape of any other rank has no batch and is
/// returned whole (and then fails or fits the expected shape on its own).
pub(super) fn split_batch(shape: &Shape, expected: &Shape) -> (Option<Dim>, Shape) {
    match (shape, expected) {
        (Shape::Dims(d), Shape::Dims(e)) if d.len() == e.len() + 1 => {
            (Some(d[0]), Shape::Dims(d[1..].to_vec()))
        }
        _ => (None, shape.clone()),
    }
}

/// Puts a batch dimension back in front of a shape.
pub(super) fn join_batch(batch: Option<Dim>, shape: &Shape) -> Shape {
    match (batch, shape) {
        (Some(b), Shape::Dims(d)) => {
            let mut v = vec![b];
            v.extend(d.iter().copied());
            Shape::Dims(v)
        }
        _ => shape.clone(),
    }
}

/// A tensor or shape type with the batch dimension put back in front.
pub(super) fn batched(batch: Option<Dim>, t: Type) -> Type {
    match t {
        Type::Tensor(s) => Type::Tensor(join_batch(batch, &s)),
        Type::ShapeVal(s) => Type::ShapeVal(join_batch(batch, &s)),
        other => other,
    }
}

/// "1 image", "8 images".
fn count(n: Dim, what: &str) -> String {
    match n {
        Dim::Known(1) => format!("1 {what}"),
        Dim::Known(n) => format!("{n} {what}s"),
        Dim::Var(_) => format!("several {what}s"),
    }
}

impl Checker {
    /// Makes the batch sizes `na` of `a` and `nb` of `b` equal, or reports that they differ
    /// with a label on each value (the primary one on whichever comes later in the source);
    /// false after a report.
    pub(super) fn same_batch(&mut self, a: &Val, na: Dim, b: &Val, nb: Dim) -> bool {
        if self.dims.unify_dim(na, nb).is_ok() {
            return true;
        }
        let (first, second) = if (a.span.file, a.span.start) <= (b.span.file, b.span.start) {
            ((a, na), (b, nb))
        } else {
            ((b, nb), (a, na))
        };
        let label = |cx: &Self, (v, n): (&Val, Dim)| {
            let ty = cx.dims.resolve_type(&v.ty);
            let n = count(cx.dims.resolve(n), "item");
            format!("a batch of {n}: {ty}")
        };
        let (l1, l2) = (label(self, first), label(self, second));
        let size = |cx: &Self, n: Dim| cx.dims.resolve(n).to_string();
        let (s1, s2) = (size(self, first.1), size(self, second.1));
        self.report(
            Diag::error(
                Code::ShapeMismatch,
                second.0.span,
                format!("the batch sizes differ: {s1} and {s2}"),
                l2,
            )
            .with_label(first.0.span, l1)
            .with_help("batched values that meet must hold the same number of items: slice them to one size, e.g. `x[:n]`"),
        );
        false
    }

    /// `psnr`, `ssim` and `mse`: `x` and `reference` of one shape; a Float for two images
    /// (`[C, H, W]`, or `[H, W]` for one grey channel), a `Tensor[N]` of one value per pair for
    /// two batches `[N, C, H, W]`.
    pub(super) fn metric_rule(&mut self, name: &str, args: &Args) -> Type {
        let (Some(x), Some(r)) = (args.get("x").cloned(), args.get("reference").cloned()) else {
            return Type::Any;
        };
        let (Some(xs), Some(rs)) = (shape_of(&x.ty), shape_of(&r.ty)) else {
            return Type::Any;
        };
        if let Err(c) = self.dims.unify_shape(&rs, &xs) {
            let this = self.dims.resolve_type(&r.ty);
            let other = self.dims.resolve_type(&x.ty);
            let note = self.describe_conflict(&c, &rs, &xs);
            self.report(
                Diag::error(
                    Code::ShapeMismatch,
                    r.span,
                    format!("`{name}` needs `x` and `reference` of the same shape"),
                    format!("`reference` is {this}"),
                )
                .with_label(x.span, format!("`x` is {other}"))
                .with_note(note),
            );
            return Type::Error;
        }
        match self.dims.resolve_shape(&xs) {
            Shape::Dims(d) if d.len() == 2 || d.len() == 3 => Type::Float,
            Shape::Dims(d) if d.len() == 4 => Type::Tensor(Shape::Dims(vec![d[0]])),
            Shape::Dims(d) => {
                let shown = Shape::Dims(d);
                self.report(
                    Diag::error(
                        Code::ShapeMismatch,
                        x.span,
                        format!("`{name}` compares images [C, H, W] or batches of them [N, C, H, W], not {shown}"),
                        format!("this is Tensor{shown}"),
                    ),
                );
                Type::Error
            }
            Shape::Unknown => Type::Any,
        }
    }

    /// `norms(x, item)`: the norm of each item of shape `item` in `x`, as `Tensor[N]` for a
    /// batch `[N, ...item]` and `Tensor[1]` for one item.
    pub(super) fn norms_rule(&mut self, args: &Args) -> Type {
        let (Some(x), Some(Shape::Dims(item))) = (
            args.get("x").cloned(),
            shape_of(&args.ty("item")).map(|s| self.dims.resolve_shape(&s)),
        ) else {
            return Type::tensor();
        };
        let Some(Shape::Dims(d)) = shape_of(&x.ty) else {
            return Type::tensor();
        };
        let item_shape = Shape::Dims(item.clone());
        let (batch, rest) = split_batch(&Shape::Dims(d.clone()), &item_shape);
        match self.dims.unify_shape(&rest, &item_shape) {
            Ok(()) => Type::Tensor(Shape::Dims(vec![batch.unwrap_or(Dim::Known(1))])),
            Err(c) => {
                let span = args.span("item");
                self.shape_error(&c, &x, &rest, span, &item_shape, "the items are");
                Type::Error
            }
        }
    }

    /// `batch_shape(shape, count)`: `[count, ...shape]`, or `shape` itself for a count of 0.
    pub(super) fn batch_shape_rule(&mut self, args: &Args) -> Type {
        let shape = shape_of(&args.ty("shape")).unwrap_or(Shape::Unknown);
        match args.int("count") {
            Some(0) => Type::ShapeVal(shape),
            Some(n) if n > 0 => Type::ShapeVal(join_batch(Some(Dim::Known(n as u64)), &shape)),
            Some(n) => {
                self.invalid(
                    args,
                    "count",
                    format!("a batch holds 0 or more items, not {n}"),
                    "0 means no batch: the shape itself",
                );
                Type::Error
            }
            None => Type::ShapeVal(Shape::Unknown),
        }
    }

    /// `as_int64(x)`: only the saved value of a `save`, which writes it as `<i8` integers.
    pub(super) fn as_int64_rule(&mut self, args: &Args) -> Type {
        if self.int64_save != Some(args.call) {
            self.report(
                Diag::error(
                    Code::InvalidValue,
                    args.call,
                    "`as_int64` only marks what a `save` writes",
                    "used here",
                )
                .with_help("save integers as `save as_int64(x) to \"x.npy\"`; inside a program every tensor holds floats"),
            );
            return Type::Error;
        }
        args.ty("x")
    }

    /// Reports a `save` of `as_int64(...)` to another format than `.npy`.
    pub(super) fn int64_save_path(&mut self, path: &Val) {
        if let Some(Const::Str(s)) = &path.konst {
            if !s.ends_with(".npy") {
                self.report(
                    Diag::error(
                        Code::InvalidValue,
                        path.span,
                        "integers are saved as `.npy` arrays",
                        "this path",
                    )
                    .with_help("save `as_int64(x)` to a path ending in `.npy`"),
                );
            }
        }
    }
}

/// True when `e` is a call of the function named `name`: `as_int64(x)`.
pub(super) fn is_call_of(e: &crate::syntax::ast::Expr, name: &str) -> bool {
    use crate::syntax::ast::ExprKind;
    matches!(&e.node, ExprKind::Call(callee, _) if matches!(&callee.node, ExprKind::Name(n) if n == name))
}

impl Checker {
    /// A batch saved to an image file (`.png`, `.jpg`) is an error: one file holds one image,
    /// `[1 or 3, H, W]` or `[H, W]`.
    pub(super) fn check_saved_image(&mut self, v: &Val, path: &Val) {
        let Some(Const::Str(p)) = &path.konst else {
            return;
        };
        if !(p.ends_with(".png") || p.ends_with(".jpg")) {
            return;
        }
        let Type::Tensor(s) = &v.ty else {
            return;
        };
        if let Shape::Dims(d) = self.dims.resolve_shape(s) {
            let channels_ok = d.len() != 3 || matches!(d[0], Dim::Known(1 | 3) | Dim::Var(_));
            if d.len() == 4 {
                let shown = Shape::Dims(d.clone());
                self.report(
                    Diag::error(
                        Code::ShapeMismatch,
                        v.span,
                        format!("a batch of {} cannot be saved as one image", count(d[0], "image")),
                        format!("this is Tensor{shown}"),
                    )
                    .with_label(path.span, "an image file holds one image")
                    .with_help("lay the batch out with `grid(x)` (one row per image), or save all of it as an array: `save x to \"x.npy\"`"),
                );
            } else if !(d.len() == 2 || d.len() == 3) || !channels_ok {
                let shown = Shape::Dims(d);
                self.report(
                    Diag::error(
                        Code::ShapeMismatch,
                        v.span,
                        format!(
                            "an image file holds an image [1 or 3, H, W] or [H, W], not {shown}"
                        ),
                        format!("this is Tensor{shown}"),
                    )
                    .with_label(path.span, "an image file")
                    .with_help("save other tensors as arrays: `save x to \"x.npy\"`"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check_source, CheckOptions};

    /// The type of each expression of `exprs`, written one per line after `prelude`: the type
    /// of the last node emitted for exactly that source text (the outermost expression).
    fn types_of(prelude: &str, exprs: &[&str]) -> Vec<String> {
        let mut program = prelude.to_string();
        let mut spans = Vec::new();
        for (i, e) in exprs.iter().enumerate() {
            let line = format!("let _e{i} = ");
            program.push_str(&line);
            spans.push((program.len(), program.len() + e.len()));
            program.push_str(e);
            program.push('\n');
        }
        let checked = check_source(
            "t.mapga",
            &program,
            std::path::Path::new("."),
            &CheckOptions::default(),
        );
        assert!(!checked.diags.has_errors(), "{:?}", checked.diags);
        spans
            .iter()
            .map(|&(start, end)| {
                let node = checked
                    .graph
                    .nodes
                    .iter()
                    .rev()
                    .find(|n| (n.span.start as usize, n.span.end as usize) == (start, end));
                node.map_or("?".to_string(), |n| n.ty.to_string())
            })
            .collect()
    }

    #[test]
    fn splitting_and_joining_a_batch() {
        let image = Shape::known(&[1, 28, 28]);
        let (n, item) = split_batch(&Shape::known(&[8, 1, 28, 28]), &image);
        assert_eq!((n, &item), (Some(Dim::Known(8)), &image));
        assert_eq!(join_batch(n, &item), Shape::known(&[8, 1, 28, 28]));
        // Same rank: no batch; two more dimensions: no batch either.
        assert_eq!(split_batch(&image, &image), (None, image.clone()));
        let two_more = Shape::known(&[2, 8, 1, 28, 28]);
        assert_eq!(split_batch(&two_more, &image), (None, two_more));
        assert_eq!(
            batched(Some(Dim::Known(3)), Type::ShapeVal(image)),
            Type::ShapeVal(Shape::known(&[3, 1, 28, 28]))
        );
    }

    #[test]
    fn batched_values_keep_their_batch_through_every_rule() {
        let prelude = r#"
model prior = gaussian_prior(zeros(shape(1, 8, 8)), ones(shape(1, 8, 8)))
let xs = gaussian_like(shape(5, 1, 8, 8), seed: 1)
let A = downsample(2)
let y = A(xs)
"#;
        let cases = [
            ("psnr(xs, xs)", "Tensor[5]"),
            ("psnr(xs[0], xs[0])", "Float"),
            ("data_consistency(y, A, xs)", "Tensor[5]"),
            ("mean(psnr(xs, xs))", "Float"),
            ("psnr(xs, xs)[4]", "Float"),
            ("norms(y, A.range)", "Tensor[5]"),
            ("norms(y[0], A.range)", "Tensor[1]"),
            ("A.domain_for(y)", "Shape[5, 1, 8, 8]"),
            ("A.domain_for(y[1])", "Shape[1, 8, 8]"),
            ("A.adjoint(y)", "Tensor[5, 1, 8, 8]"),
            ("exact_map(prior, A, y, 0.1)", "Tensor[5, 1, 8, 8]"),
            ("prior(xs, 1.0)", "Tensor[5, 1, 8, 8]"),
            ("batch_shape(prior.shape, 3)", "Shape[3, 1, 8, 8]"),
            ("batch_shape(prior.shape, 0)", "Shape[1, 8, 8]"),
            ("xs[1:4]", "Tensor[3, 1, 8, 8]"),
            ("xs[:2][1:]", "Tensor[1, 1, 8, 8]"),
            ("[1, 2, 3, 4][1:3]", "List[Int]"),
            ("xs - xs[0]", "Tensor[5, 1, 8, 8]"),
            ("grid(xs, A.visualize(y[0]), rows: 2)", "Tensor[1, 18, 18]"),
        ];
        let exprs: Vec<&str> = cases.iter().map(|c| c.0).collect();
        for ((expr, want), got) in cases.iter().zip(types_of(prelude, &exprs)) {
            assert_eq!(&got, want, "{expr}");
        }
    }
}
