//! Shape rules of `grid` and `captioned_grid`: the layout of [`mod@crate::io::grid`], known before
//! running. Images go side by side; when some are batches `[N, C, H, W]` (all of one `N`),
//! each of the first `rows` items (all `N` when `rows` is 0) makes one row and images without
//! a batch repeat on every row: truth | measurement | restoration for each digit of a batch.

use super::builtins::{shape_of, Args};
use super::types::{Dim, Shape, Type};
use super::Checker;
use crate::diagnostics::{Code, Diag};
use crate::graph::Const;

/// What is known of a grid before running.
enum Layout {
    /// A shape is not known yet.
    Unknown,
    /// An argument does not fit, already reported.
    Failed,
    /// The grid's channels, the height of one row, its width and its number of rows.
    Known {
        channels: u64,
        row_height: u64,
        width: u64,
        rows: u64,
    },
}

impl Checker {
    /// `grid(images..., rows)` and, with the caption band, `captioned_grid`.
    pub(super) fn grid_rule(&mut self, name: &str, args: &Args, declared: Type) -> Type {
        if name == "captioned_grid" && !self.caption_count(args) {
            return Type::Error;
        }
        let (channels, row_height, width, rows) = match self.grid_layout(args) {
            Layout::Unknown => return declared,
            Layout::Failed => return Type::Error,
            Layout::Known {
                channels,
                row_height,
                width,
                rows,
            } => (channels, row_height, width, rows),
        };
        let gap = crate::io::grid::GAP as u64;
        let mut height = rows * row_height + gap * rows.saturating_sub(1);
        if name == "captioned_grid" {
            height += crate::io::grid::CAPTION_HEIGHT as u64;
        }
        Type::Tensor(Shape::known(&[channels, height, width]))
    }

    /// One caption per image (column); false after a report.
    fn caption_count(&mut self, args: &Args) -> bool {
        let Some(Const::List(c)) = args.get("captions").and_then(|v| v.konst.clone()) else {
            return true;
        };
        if c.len() == args.rest.len() {
            return true;
        }
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        self.invalid(
            args,
            "captions",
            format!(
                "{} caption{} for {} image{}",
                c.len(),
                plural(c.len()),
                args.rest.len(),
                plural(args.rest.len())
            ),
            "give one caption per image",
        );
        false
    }

    /// The layout of the grid of `args.rest`, one column per argument.
    fn grid_layout(&mut self, args: &Args) -> Layout {
        let mut cols = Vec::new();
        let mut batch = None;
        for v in &args.rest {
            let Some(Shape::Dims(d)) = shape_of(&v.ty).map(|s| self.dims.resolve_shape(&s)) else {
                return Layout::Unknown;
            };
            // A batch of images is the only tensor of rank 4 a grid lays out.
            let (n, item) = match d.as_slice() {
                [n, rest @ ..] if rest.len() == 3 => (Some(*n), rest.to_vec()),
                _ => (None, d.clone()),
            };
            let known: Option<Vec<u64>> = item
                .iter()
                .map(|d| match d {
                    Dim::Known(n) => Some(*n),
                    Dim::Var(_) => None,
                })
                .collect();
            match known.as_deref() {
                Some([c, h, w]) if *c == 1 || *c == 3 => cols.push((*c, *h, *w)),
                Some([h, w]) if n.is_none() => cols.push((1, *h, *w)),
                Some(_) => {
                    let shown = Shape::Dims(d);
                    self.report(
                        Diag::error(
                            Code::ShapeMismatch,
                            v.span,
                            format!("`grid` lays out images [1 or 3, H, W] and batches of them [N, 1 or 3, H, W], not {shown}"),
                            "this tensor",
                        ),
                    );
                    return Layout::Failed;
                }
                None => return Layout::Unknown,
            }
            if let Some(n) = n {
                match &batch {
                    None => batch = Some((v.clone(), n)),
                    Some((first, m)) => {
                        let (first, m) = (first.clone(), *m);
                        if !self.same_batch(&first, m, v, n) {
                            return Layout::Failed;
                        }
                    }
                }
            }
        }
        if cols.is_empty() {
            return Layout::Unknown;
        }
        let n = match batch {
            None => 1,
            Some((_, n)) => match self.dims.resolve(n) {
                Dim::Known(n) => n,
                Dim::Var(_) => return Layout::Unknown,
            },
        };
        let rows = match args.int("rows") {
            Some(r) if r < 0 => {
                self.invalid(
                    args,
                    "rows",
                    format!("`rows` is 0 (all) or more, not {r}"),
                    "",
                );
                return Layout::Failed;
            }
            Some(r) if r > 0 => n.min(r as u64),
            _ => n,
        };
        let gap = crate::io::grid::GAP as u64;
        Layout::Known {
            channels: if cols.iter().any(|d| d.0 == 3) { 3 } else { 1 },
            row_height: cols.iter().map(|d| d.1).max().unwrap_or(0),
            width: cols.iter().map(|d| d.2).sum::<u64>() + gap * (cols.len() as u64 - 1),
            rows,
        }
    }
}
