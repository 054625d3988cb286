//! `grid` items: the cells of an evaluation suite (`mapga eval`).
//!
//! `grid solver in ["mapga", "dps"], sigma_y in [0.0, 0.05]` declares the cartesian product
//! of the listed values of the file's params. The checker only validates the grids and hands
//! them on as [`GridSpec`]s (in file order); `mapga run` ignores them, and
//! [`crate::eval::cells`] turns them into cells, each checked as the program with those params
//! set. A grid may only name `param`s of the pipeline file itself, each value is a literal of
//! the param's type (an Int literal is fine for a Float param), and a list is never empty.

use std::collections::HashMap;

use super::types::Type;
use super::Checker;
use crate::diagnostics::{Code, Diag};
use crate::graph::Const;
use crate::source::Span;
use crate::syntax::ast::{ExprKind, GridAxis, Item, ItemKind, Program, UnOp};

/// One `grid` item, checked: each param and the values it takes, in the order written.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSpec {
    /// `(param, values)` in the order written; every list has at least one value.
    pub axes: Vec<(String, Vec<Const>)>,
    /// The whole item.
    pub span: Span,
}

/// The value of a literal grid entry: `0.05`, `-1`, `"box25"`, `true`.
fn literal(e: &crate::syntax::ast::Expr) -> Option<(Const, Type)> {
    match &e.node {
        ExprKind::Int(i) => Some((Const::Int(*i), Type::Int)),
        ExprKind::Float(f, _) => Some((Const::Float(*f), Type::Float)),
        ExprKind::Str(s) => Some((Const::Str(s.clone()), Type::Str)),
        ExprKind::Bool(b) => Some((Const::Bool(*b), Type::Bool)),
        ExprKind::Unary(op, inner) if op.node == UnOp::Neg => match &inner.node {
            ExprKind::Int(i) => Some((Const::Int(i.checked_neg()?), Type::Int)),
            ExprKind::Float(f, _) => Some((Const::Float(-f), Type::Float)),
            _ => None,
        },
        _ => None,
    }
}

impl Checker {
    /// Checks every `grid` of the pipeline file (after its params are known) and records them.
    pub(super) fn check_grids(&mut self, program: &Program) {
        for item in &program.items {
            if let ItemKind::Grid(axes) = &item.kind {
                if let Some(spec) = self.check_grid(item, axes) {
                    self.grids.push(spec);
                }
            }
        }
    }

    /// One `grid` item; `None` when it has an error (reported).
    fn check_grid(&mut self, item: &Item, axes: &[GridAxis]) -> Option<GridSpec> {
        let params: HashMap<String, Type> = self
            .emit
            .graph
            .params
            .iter()
            .map(|p| (p.name.clone(), p.ty.clone()))
            .collect();
        let mut names: Vec<String> = self
            .emit
            .graph
            .params
            .iter()
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        let mut ok = true;
        let mut seen: HashMap<&str, Span> = HashMap::new();
        let mut out = Vec::new();
        for axis in axes {
            let name = axis.name.node.as_str();
            if let Some(first) = seen.get(name) {
                self.report(
                    Diag::error(
                        Code::Duplicate,
                        axis.name.span,
                        format!("`{name}` appears twice in this grid"),
                        "again here",
                    )
                    .with_label(*first, "first here")
                    .with_help(format!(
                        "list every value of `{name}` once: `{name} in [a, b, c]`; a second `grid` item adds other combinations"
                    )),
                );
                ok = false;
                continue;
            }
            seen.insert(name, axis.name.span);
            let Some(pty) = params.get(name).cloned() else {
                self.unknown_grid_param(axis, &names);
                ok = false;
                continue;
            };
            let ExprKind::List(elems) = &axis.values.node else {
                if !matches!(axis.values.node, ExprKind::Error) {
                    self.report(
                        Diag::error(
                            Code::TypeMismatch,
                            axis.values.span,
                            format!("a grid lists the values of `{name}` in brackets"),
                            "not a list",
                        )
                        .with_help(format!("write `{name} in [first, second]`")),
                    );
                }
                ok = false;
                continue;
            };
            if elems.is_empty() {
                self.report(
                    Diag::error(
                        Code::InvalidValue,
                        axis.values.span,
                        format!("the grid gives `{name}` no values"),
                        "empty list",
                    )
                    .with_help(format!(
                        "list at least one value, or remove `{name}` from the grid"
                    )),
                );
                ok = false;
                continue;
            }
            let mut values = Vec::new();
            for e in elems {
                let Some((c, t)) = literal(e) else {
                    if !matches!(e.node, ExprKind::Error) {
                        self.report(
                            Diag::error(
                                Code::InvalidValue,
                                e.span,
                                "grid values must be literals",
                                "not a literal",
                            )
                            .with_help("write the value itself, such as `0.05`, `20`, `\"box25\"` or `true`"),
                        );
                    }
                    ok = false;
                    continue;
                };
                let value = match (&c, &pty) {
                    _ if t == pty || pty.is_open() => c,
                    (Const::Int(i), Type::Float) => Const::Float(*i as f64),
                    _ => {
                        self.report(
                            Diag::error(
                                Code::TypeMismatch,
                                e.span,
                                format!(
                                    "`{name}` is {} param, but this value is {}",
                                    pty.kind_phrase(),
                                    t.kind_phrase()
                                ),
                                format!("this is {t}"),
                            )
                            .with_help(format!("give `{name}` values of type {pty}")),
                        );
                        ok = false;
                        continue;
                    }
                };
                values.push(value);
            }
            out.push((name.to_string(), values));
        }
        ok.then_some(GridSpec {
            axes: out,
            span: item.span,
        })
    }

    /// A grid names something that is not a param of the file.
    fn unknown_grid_param(&mut self, axis: &GridAxis, params: &[String]) {
        let name = axis.name.node.as_str();
        let mut d = Diag::error(
            Code::UnknownName,
            axis.name.span,
            format!("`{name}` is not a param of this pipeline"),
            "not a param",
        );
        d = match super::suggest::closest(name, params.iter().map(String::as_str)) {
            Some(s) => d.with_help(format!("did you mean `{s}`?")),
            None if params.is_empty() => d.with_help(format!(
                "a grid sets params: declare it with `param {name} = ...`"
            )),
            None => d.with_help(format!(
                "a grid sets params; this file's params are: {}",
                params.join(", ")
            )),
        };
        self.report(d);
    }
}

#[cfg(test)]
mod tests {
    use crate::check::{check_source, CheckOptions, Checked};
    use crate::diagnostics::Code;
    use crate::graph::Const;

    fn check(text: &str) -> Checked {
        check_source(
            "suite.mapga",
            text,
            std::path::Path::new("."),
            &CheckOptions::default(),
        )
    }

    fn codes(c: &Checked) -> Vec<Code> {
        c.diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.code)
            .collect()
    }

    const PARAMS: &str = "param solver = \"mapga\"\nparam sigma_y = 0.0\nparam n = 2\nparam fast = true\nreport n + sigma_y, if fast { 1 } else { 0 }, if solver == \"a\" { 1 } else { 2 }\n";

    #[test]
    fn grids_are_recorded_in_file_order_with_typed_values() {
        let c = check(&format!(
            "{PARAMS}grid solver in [\"mapga\", \"dps\"], sigma_y in [0, 0.05]\ngrid n in [-1, 3], fast in [false]\n"
        ));
        assert!(codes(&c).is_empty(), "{:?}", c.diags);
        assert_eq!(c.grids.len(), 2);
        assert_eq!(
            c.grids[0].axes,
            vec![
                (
                    "solver".to_string(),
                    vec![Const::Str("mapga".into()), Const::Str("dps".into())]
                ),
                (
                    "sigma_y".to_string(),
                    vec![Const::Float(0.0), Const::Float(0.05)]
                ),
            ]
        );
        assert_eq!(
            c.grids[1].axes[0],
            ("n".to_string(), vec![Const::Int(-1), Const::Int(3)])
        );
    }

    #[test]
    fn grid_mistakes_are_reported() {
        let cases = [
            ("grid solvr in [\"a\"]\n", Code::UnknownName),
            ("grid sigma_y in [\"a\"]\n", Code::TypeMismatch),
            ("grid n in [0.5]\n", Code::TypeMismatch),
            ("grid solver in []\n", Code::InvalidValue),
            ("grid n in [1 + 1]\n", Code::InvalidValue),
            ("grid n in 3\n", Code::TypeMismatch),
            ("grid n in [1], n in [2]\n", Code::Duplicate),
        ];
        for (grid, code) in cases {
            let c = check(&format!("{PARAMS}{grid}"));
            assert_eq!(codes(&c), vec![code], "{grid}: {:?}", c.diags);
            assert!(c.grids.is_empty(), "{grid}");
        }
        let c = check(&format!("{PARAMS}grid solvr in [\"a\"]\n"));
        assert_eq!(
            c.diags
                .iter()
                .next()
                .and_then(|d| d.help.clone())
                .as_deref(),
            Some("did you mean `solver`?")
        );
    }
}
