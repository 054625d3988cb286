//! The cells of a suite: which param values each run uses, their ids, and checking them all.
//!
//! A cell sets every param that some `grid` of the suite names: to its value in the cell's grid,
//! or, for a param that grid does not name, to the param's default (or `--set` value). Cells
//! come in a fixed order: the grids in file order, each row-major over its params as written
//! (the last param changes fastest); a cell already listed by an earlier grid is not repeated.
//! `--set` on a grid param narrows the grids to that one value. A suite without grids has one
//! cell, `defaults`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::check::suite::GridSpec;
use crate::check::{check_file, parse_override, CheckOptions, Checked};
use crate::diagnostics::{Diag, Diags};
use crate::graph::Const;
use crate::source::{SourceMap, Span};

/// One cell: the values of the suite's grid params for one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its position in the suite's order (0-based), which `--shard` splits.
    pub index: usize,
    /// Every grid param of the suite, in order of first appearance, with its value here.
    pub params: Vec<(String, Const)>,
}

/// A param value as text: strings as they are, numbers as Rust prints them (`0`, `0.05`).
pub fn value_text(c: &Const) -> String {
    match c {
        Const::Str(s) => s.clone(),
        Const::Int(i) => i.to_string(),
        Const::Float(f) => f.to_string(),
        Const::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// A param value as `--set` text: the literal that parses back to the same value and type.
fn override_text(c: &Const) -> String {
    match c {
        Const::Str(s) => format!("\"{s}\""),
        Const::Float(f) => format!("{f:?}"),
        other => value_text(other),
    }
}

/// Characters a cell id keeps; every other one becomes `_` (and the id gets a hash suffix).
fn safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | ',' | '+')
}

/// The longest id kept without a hash suffix.
const MAX_ID: usize = 120;

impl Cell {
    /// The cell's folder name: `solver=mapga,task=box25,sigma_y=0`. Characters a file name
    /// should not hold become `_`, and then (or when the id is very long) the first 10 hex
    /// digits of the SHA-256 of the exact text are appended, so distinct cells keep distinct
    /// ids; the same values always give the same id. A suite without grids has `defaults`.
    pub fn id(&self) -> String {
        if self.params.is_empty() {
            return "defaults".to_string();
        }
        let exact = self
            .params
            .iter()
            .map(|(n, v)| format!("{n}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(",");
        let safe: String = exact
            .chars()
            .map(|c| if safe_char(c) { c } else { '_' })
            .collect();
        if safe == exact && safe.len() <= MAX_ID {
            return safe;
        }
        let hash = crate::runtime::outputs::sha256_hex(exact.as_bytes());
        let cut: String = safe.chars().take(MAX_ID - 11).collect();
        format!("{cut}-{}", &hash[..10])
    }

    /// For progress lines: `solver=mapga task=box25 sigma_y=0`.
    pub fn label(&self) -> String {
        if self.params.is_empty() {
            return "defaults".to_string();
        }
        self.params
            .iter()
            .map(|(n, v)| format!("{n}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// For diagnostics: `solver="ddrm", task="deblur", sigma_y=0.05`.
    pub fn describe(&self) -> String {
        if self.params.is_empty() {
            return "defaults".to_string();
        }
        self.params
            .iter()
            .map(|(n, v)| match v {
                Const::Str(s) => format!("{n}={s:?}"),
                other => format!("{n}={}", value_text(other)),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The `--set` overrides that make the program this cell: `base` with the cell's values.
    pub fn overrides(&self, base: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = base.clone();
        for (n, v) in &self.params {
            out.insert(n.clone(), override_text(v));
        }
        out
    }
}

/// The cells of `grids` in the suite's order. `params` are the program's params with their
/// values (defaults with `--set` applied), which fill in grid params that a cell's grid does
/// not name; `sets` (the `--set` texts) narrow a grid param to one value.
pub fn enumerate(
    grids: &[GridSpec],
    params: &[crate::graph::Param],
    sets: &BTreeMap<String, String>,
) -> Vec<Cell> {
    if grids.is_empty() {
        return vec![Cell {
            index: 0,
            params: Vec::new(),
        }];
    }
    let mut names: Vec<String> = Vec::new();
    for g in grids {
        for (n, _) in &g.axes {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let default_of = |name: &str| -> Const {
        params
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.value.clone())
            .unwrap_or(Const::Unit)
    };
    let mut cells: Vec<Cell> = Vec::new();
    for g in grids {
        let axes: Vec<(String, Vec<Const>)> = g
            .axes
            .iter()
            .map(
                |(n, vs)| match sets.get(n).and_then(|t| parse_override(t)) {
                    Some((c, _)) => {
                        let float = vs.iter().any(|v| matches!(v, Const::Float(_)));
                        let c = match c {
                            Const::Int(i) if float => Const::Float(i as f64),
                            c => c,
                        };
                        (n.clone(), vec![c])
                    }
                    None => (n.clone(), vs.clone()),
                },
            )
            .collect();
        let total: usize = axes.iter().map(|(_, v)| v.len()).product();
        for k in 0..total {
            // Row-major: the last param changes fastest.
            let mut rest = k;
            let mut picked = vec![Const::Unit; axes.len()];
            for (a, (_, vs)) in axes.iter().enumerate().rev() {
                picked[a] = vs[rest % vs.len()].clone();
                rest /= vs.len();
            }
            let values: Vec<(String, Const)> = names
                .iter()
                .map(|n| match axes.iter().position(|(m, _)| m == n) {
                    Some(a) => (n.clone(), picked[a].clone()),
                    None => (n.clone(), default_of(n)),
                })
                .collect();
            if !cells.iter().any(|c| c.params == values) {
                cells.push(Cell {
                    index: cells.len(),
                    params: values,
                });
            }
        }
    }
    cells
}

/// A suite checked as its defaults and as every cell.
pub struct CheckedSuite {
    /// Every cell with its checked program, in the suite's order (a suite without grids has
    /// one cell, its defaults).
    pub cells: Vec<(Cell, Checked)>,
    /// The diagnostics of the defaults and of every cell, each reported once, with spans in
    /// [`Self::sources`]. A problem found only in cells has a note naming the first of them.
    pub diags: Diags,
    /// The files the diagnostics point into.
    pub sources: SourceMap,
}

impl CheckedSuite {
    /// True when the defaults or a cell has an error.
    pub fn has_errors(&self) -> bool {
        self.diags.has_errors()
    }
}

/// Checks the suite at `file` with `opts` (the `--set` values, the permissions): its defaults,
/// then each cell (the program with the cell's params set, as `--set` would).
pub fn check_suite(file: &Path, opts: &CheckOptions) -> CheckedSuite {
    let defaults = check_file(file, opts);
    let grids = defaults.grids.clone();
    check_cells(file, opts, defaults, &grids)
}

/// Why a sweep cannot be checked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    /// A swept name is no param of the pipeline: an error of the pipeline and its command
    /// line together, as `--set` of an unknown name is (exit 1).
    #[error("{0}")]
    UnknownParam(String),
    /// A malformed sweep: a value that is no literal, a name given twice (exit 2).
    #[error("{0}")]
    Usage(String),
}

/// One `--sweep NAME=V1,V2,...` of `mapga run`: a param and its values as `--set` texts.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepAxis {
    /// The param swept.
    pub name: String,
    /// Its values, each as `--set` would take it (`0.1`, `20`, `box25`, `"a b"`).
    pub values: Vec<String>,
}

/// Checks the sweep of `mapga run FILE --sweep ...`: the program at `file` with `opts`, and
/// then one cell per point of the cartesian product of `axes` (the first axis changes slowest),
/// each checked as the program with those params set. The file's own `grid` items play no
/// part. A sweep of a name that is no param of the file, of a param also given by `--set`, of
/// one param twice, or with a value that is no literal is an error naming it; errors of the
/// program itself come back as the suite's diagnostics, with no cells.
pub fn check_sweep(
    file: &Path,
    opts: &CheckOptions,
    axes: &[SweepAxis],
) -> Result<CheckedSuite, SweepError> {
    let sets = &opts.overrides;
    let defaults = check_file(file, opts);
    if defaults.diags.has_errors() {
        return Ok(CheckedSuite {
            cells: Vec::new(),
            diags: defaults.diags.clone(),
            sources: defaults.sources.clone(),
        });
    }
    let params: Vec<&str> = defaults
        .graph
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let mut grid = Vec::new();
    for (i, axis) in axes.iter().enumerate() {
        let name = axis.name.as_str();
        if !params.contains(&name) {
            let hint = match crate::check::suggest::closest(name, params.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if params.is_empty() => "it declares no `param`".to_string(),
                None => format!("its params are: {}", params.join(", ")),
            };
            return Err(SweepError::UnknownParam(format!(
                "`--sweep {name}=...`: `{}` has no param `{name}`; {hint}",
                file.display()
            )));
        }
        if sets.contains_key(name) {
            return Err(SweepError::Usage(format!(
                "`{name}` is given by both `--set` and `--sweep`: keep one"
            )));
        }
        if axes[..i].iter().any(|a| a.name == name) {
            return Err(SweepError::Usage(format!(
                "`--sweep {name}=...` is given twice: list all its values in one `--sweep`"
            )));
        }
        let mut values = Vec::new();
        for text in &axis.values {
            match parse_override(text) {
                Some((c, _)) => values.push(c),
                None => {
                    return Err(SweepError::Usage(format!(
                        "`--sweep {name}=...`: `{text}` is not a literal value (write numbers as \
                         `0.1` or `20`, booleans as `true`, strings as `name` or `\"a name\"`)"
                    )))
                }
            }
        }
        if values.is_empty() {
            return Err(SweepError::Usage(format!(
                "`--sweep {name}=` lists no values"
            )));
        }
        grid.push((name.to_string(), values));
    }
    let span = Span {
        file: crate::source::FileId(0),
        start: 0,
        end: 0,
    };
    let grids = vec![GridSpec { axes: grid, span }];
    Ok(check_cells(file, opts, defaults, &grids))
}

/// The cells of `grids` for the program at `file` with `sets`, whose defaults checked as
/// `defaults`: each checked as the program with its params set, the diagnostics of all merged
/// (each reported once, with the cells it occurs in).
fn check_cells(
    file: &Path,
    opts: &CheckOptions,
    defaults: Checked,
    grids: &[GridSpec],
) -> CheckedSuite {
    let sources = defaults.sources.clone();
    let diags = defaults.diags.clone();
    if grids.is_empty() {
        let cell = Cell {
            index: 0,
            params: Vec::new(),
        };
        return CheckedSuite {
            cells: vec![(cell, defaults)],
            diags,
            sources,
        };
    }
    let mut sources = sources;
    let mut merged: Vec<(Diag, Vec<String>)> = diags.into_iter().map(|d| (d, Vec::new())).collect();
    let mut cells = Vec::new();
    let sets = &opts.overrides;
    for cell in enumerate(grids, &defaults.graph.params, sets) {
        let checked = check_file(
            file,
            &CheckOptions {
                overrides: cell.overrides(sets),
                permissions: opts.permissions.clone(),
            },
        );
        for d in checked.diags.iter() {
            let d = remap(d, &checked.sources, &mut sources);
            match merged.iter_mut().find(|(m, _)| *m == d) {
                // Found in the defaults: reported once, as it is.
                Some((_, in_cells)) if in_cells.is_empty() => {}
                Some((_, in_cells)) => in_cells.push(cell.describe()),
                None => merged.push((d, vec![cell.describe()])),
            }
        }
        cells.push((cell, checked));
    }
    let mut diags = Diags::new();
    for (d, in_cells) in merged {
        let d = match in_cells.len() {
            0 => d,
            1 => d.with_note(format!("in cell {}", in_cells[0])),
            n => d.with_note(format!(
                "in cell {} (and {} more cell{})",
                in_cells[0],
                n - 1,
                if n == 2 { "" } else { "s" }
            )),
        };
        diags.push(d);
    }
    diags.sort_dedup();
    CheckedSuite {
        cells,
        diags,
        sources,
    }
}

/// `d` with its spans moved from `from` into `to` (files are matched by origin; a file `to`
/// lacks is added).
fn remap(d: &Diag, from: &SourceMap, to: &mut SourceMap) -> Diag {
    let mut d = d.clone();
    for l in &mut d.labels {
        let f = from.get(l.span.file);
        let id = match to.find(&f.origin) {
            Some(id) if to.get(id).text == f.text => id,
            _ => to.add(f.name.clone(), f.origin.clone(), f.text.clone()),
        };
        l.span = Span { file: id, ..l.span };
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Span;

    fn spec(axes: &[(&str, Vec<Const>)]) -> GridSpec {
        GridSpec {
            axes: axes
                .iter()
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect(),
            span: Span::new(crate::source::FileId(0), 0, 0),
        }
    }

    fn s(x: &str) -> Const {
        Const::Str(x.into())
    }

    fn param(name: &str, value: Const) -> crate::graph::Param {
        crate::graph::Param {
            name: name.into(),
            ty: crate::check::types::Type::Any,
            value: Some(value),
            node: crate::graph::NodeId(0),
        }
    }

    #[test]
    fn cells_are_row_major_over_grids_in_order_without_repeats() {
        let grids = [
            spec(&[
                ("solver", vec![s("mapga"), s("dps")]),
                ("task", vec![s("box25"), s("half")]),
            ]),
            spec(&[
                ("solver", vec![s("mapga")]),
                ("sigma_y", vec![Const::Float(0.0), Const::Float(0.05)]),
            ]),
        ];
        let params = [
            param("solver", s("mapga")),
            param("task", s("box25")),
            param("sigma_y", Const::Float(0.0)),
        ];
        let cells = enumerate(&grids, &params, &BTreeMap::new());
        let ids: Vec<String> = cells.iter().map(Cell::id).collect();
        assert_eq!(
            ids,
            [
                "solver=mapga,task=box25,sigma_y=0",
                "solver=mapga,task=half,sigma_y=0",
                "solver=dps,task=box25,sigma_y=0",
                "solver=dps,task=half,sigma_y=0",
                "solver=mapga,task=box25,sigma_y=0.05",
            ]
        );
        assert!(cells.iter().enumerate().all(|(i, c)| c.index == i));
        assert_eq!(
            cells[4].describe(),
            "solver=\"mapga\", task=\"box25\", sigma_y=0.05"
        );
        assert_eq!(cells[4].label(), "solver=mapga task=box25 sigma_y=0.05");
        let o = cells[4].overrides(&BTreeMap::from([("n".to_string(), "3".to_string())]));
        assert_eq!(o["solver"], "\"mapga\"");
        assert_eq!(o["sigma_y"], "0.05");
        assert_eq!(o["n"], "3");
        // `--set` narrows a grid param to one value.
        let sets = BTreeMap::from([("solver".to_string(), "dps".to_string())]);
        let narrowed: Vec<String> = enumerate(&grids, &params, &sets)
            .iter()
            .map(Cell::id)
            .collect();
        assert_eq!(
            narrowed,
            [
                "solver=dps,task=box25,sigma_y=0",
                "solver=dps,task=half,sigma_y=0",
                "solver=dps,task=box25,sigma_y=0.05",
            ]
        );
    }

    #[test]
    fn ids_are_file_names_and_stay_distinct() {
        let a = Cell {
            index: 0,
            params: vec![("path".into(), s("a/b"))],
        };
        let b = Cell {
            index: 1,
            params: vec![("path".into(), s("a_b"))],
        };
        assert_eq!(b.id(), "path=a_b");
        assert!(a.id().starts_with("path=a_b-") && a.id().len() == "path=a_b-".len() + 10);
        let long = Cell {
            index: 0,
            params: vec![("x".into(), s(&"y".repeat(300)))],
        };
        assert!(long.id().len() <= MAX_ID);
        assert_eq!(
            Cell {
                index: 0,
                params: vec![]
            }
            .id(),
            "defaults"
        );
    }
}
