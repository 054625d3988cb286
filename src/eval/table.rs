//! The tables of an evaluation, built from its finished cells: `results.csv` (one row per
//! item of each cell) and `summary.md` (one row per cell).
//!
//! `results.csv` has the grid params, `item` (0 to N - 1), every per-item report, every number
//! reported once per cell (repeated on each of its rows), `seconds per item`, `evaluations per
//! item` (forward passes of the networks) and `backward passes per item`; failed cells have no
//! items and are left out. `summary.md` has the params, each per-item report as
//! `mean ± standard error`, the other reports as they are, seconds, network evaluations and
//! backward passes per item, and `failed: reason` for a failed cell. Rows come in the
//! suite's order, whichever run or shard made them, so the tables of a sharded and merged
//! evaluation equal those of one run (timings aside).

use std::fmt::Write as _;

use super::store::CellRecord;
use crate::runtime::{mean_and_error, mean_pm, ReportValue};

/// The column heads, shared by both tables: params, per-item reports, other reports.
struct Columns {
    params: Vec<String>,
    per_item: Vec<String>,
    numbers: Vec<String>,
}

impl Columns {
    fn of(records: &[CellRecord]) -> Self {
        let mut c = Columns {
            params: Vec::new(),
            per_item: Vec::new(),
            numbers: Vec::new(),
        };
        let push = |v: &mut Vec<String>, s: &str| {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_string());
            }
        };
        for r in records {
            for (n, _) in r.param_texts() {
                push(&mut c.params, &n);
            }
            for (label, v) in r.report_values() {
                match v {
                    ReportValue::Items(_) => push(&mut c.per_item, &label),
                    ReportValue::Number(_) => push(&mut c.numbers, &label),
                }
            }
        }
        c.numbers.retain(|n| !c.per_item.contains(n));
        c
    }
}

/// A number as a table shows it: Rust's shortest exact form (`0.1`, `20.5`, `inf`, `NaN`).
fn num(x: f64) -> String {
    x.to_string()
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `results.csv`: one row per item of each finished `ok` cell, in the suite's order.
pub fn results_csv(records: &[CellRecord]) -> String {
    let cols = Columns::of(records);
    let mut head: Vec<String> = cols.params.clone();
    head.push("item".into());
    head.extend(cols.per_item.iter().cloned());
    head.extend(cols.numbers.iter().cloned());
    head.push("seconds per item".into());
    head.push("evaluations per item".into());
    head.push("backward passes per item".into());
    let mut out = String::new();
    let line = |out: &mut String, fields: Vec<String>| {
        let fields: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    };
    line(&mut out, head);
    for r in records.iter().filter(|r| r.ok()) {
        let params = r.param_texts();
        let values = r.report_values();
        let items = |label: &str| {
            values.iter().find_map(|(l, v)| match v {
                ReportValue::Items(xs) if l == label => Some(xs.clone()),
                _ => None,
            })
        };
        let number = |label: &str| {
            values.iter().find_map(|(l, v)| match v {
                ReportValue::Number(x) if l == label => Some(*x),
                _ => None,
            })
        };
        let lists: Vec<Option<Vec<f64>>> = cols.per_item.iter().map(|l| items(l)).collect();
        let n = lists.iter().flatten().map(Vec::len).max().unwrap_or(0);
        for i in 0..n.max(1) {
            let mut row = param_cells(&cols.params, &params);
            row.push(if n == 0 { String::new() } else { i.to_string() });
            for list in &lists {
                row.push(
                    list.as_ref()
                        .and_then(|xs| xs.get(i))
                        .map(|x| num(*x))
                        .unwrap_or_default(),
                );
            }
            for label in &cols.numbers {
                row.push(number(label).map(num).unwrap_or_default());
            }
            row.push(num(r.seconds_per_item));
            row.push(num(r.network_evaluations.per_item));
            row.push(num(r.network_evaluations.backward_per_item));
            line(&mut out, row);
        }
    }
    out
}

/// A number for the summary: four significant digits, whole numbers as they are.
fn short(x: f64) -> String {
    if !x.is_finite() {
        return num(x);
    }
    if x == x.trunc() && x.abs() < 1e9 {
        return format!("{x}");
    }
    let digits = (3 - x.abs().log10().floor() as i64).clamp(0, 12) as usize;
    let s = format!("{x:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A table cell for Markdown: `|` escaped, line breaks as spaces.
fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `summary.md`: one row per finished cell, in the suite's order. `title` names the suite;
/// `total` is the number of cells the suite has (when known), for a line on what is missing.
pub fn summary_md(records: &[CellRecord], title: &str, total: Option<usize>) -> String {
    let cols = Columns::of(records);
    let failed = records.iter().filter(|r| !r.ok()).count();
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", md(title));
    let done = records.len();
    let _ = match total {
        Some(t) if t > done => writeln!(
            out,
            "{done} of {t} cells finished ({failed} failed); the other {} have not run yet.\n",
            t - done
        ),
        _ => writeln!(out, "{done} cells ({failed} failed).\n"),
    };
    let mut head: Vec<String> = cols.params.clone();
    head.extend(cols.per_item.iter().cloned());
    head.extend(cols.numbers.iter().cloned());
    head.push("seconds / item".into());
    head.push("evaluations / item".into());
    head.push("backward / item".into());
    let _ = writeln!(
        out,
        "| {} |",
        head.iter().map(|h| md(h)).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
    for r in records {
        let params = r.param_texts();
        let mut row = param_cells(&cols.params, &params);
        if r.ok() {
            let values = r.report_values();
            for label in &cols.per_item {
                row.push(
                    values
                        .iter()
                        .find_map(|(l, v)| match v {
                            ReportValue::Items(xs) if l == label => {
                                let (m, se, n) = mean_and_error(xs);
                                Some(if n > 1 && se.is_finite() {
                                    let (m, e) = mean_pm(m, se);
                                    format!("{m} ± {e}")
                                } else {
                                    short(m)
                                })
                            }
                            _ => None,
                        })
                        .unwrap_or_default(),
                );
            }
            for label in &cols.numbers {
                row.push(
                    values
                        .iter()
                        .find_map(|(l, v)| match v {
                            ReportValue::Number(x) if l == label => Some(short(*x)),
                            _ => None,
                        })
                        .unwrap_or_default(),
                );
            }
            row.push(short(r.seconds_per_item));
            row.push(short(r.network_evaluations.per_item));
            row.push(short(r.network_evaluations.backward_per_item));
        } else {
            let reason = r.error.as_deref().unwrap_or("unknown error");
            row.push(format!("failed: {reason}"));
            let blanks = cols.per_item.len() + cols.numbers.len() + 3;
            row.extend(std::iter::repeat_n(String::new(), blanks.saturating_sub(1)));
        }
        let _ = writeln!(
            out,
            "| {} |",
            row.iter().map(|c| md(c)).collect::<Vec<_>>().join(" | ")
        );
    }
    let n: Vec<String> = {
        let mut ns: Vec<usize> = records.iter().filter(|r| r.ok()).map(|r| r.items).collect();
        ns.sort();
        ns.dedup();
        ns.iter().map(usize::to_string).collect()
    };
    if !cols.per_item.is_empty() && !n.is_empty() {
        let _ = writeln!(
            out,
            "\nPer-item reports: mean ± standard error of the mean over the {} items of each cell. \
             Evaluations: denoiser and consistency-model calls per item. \
             Every item of every cell is in `results.csv`.",
            n.join(" or ")
        );
    }
    out
}

/// The text of each param column `names` for a cell whose params are `params` (empty where the
/// cell lacks one).
fn param_cells(names: &[String], params: &[(String, String)]) -> Vec<String> {
    names
        .iter()
        .map(|p| {
            params
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::cells::Cell;
    use crate::graph::Const;
    use crate::runtime::NetworkEvaluations;

    fn record(i: usize, solver: &str, psnr: Vec<f64>) -> CellRecord {
        let cell = Cell {
            index: i,
            params: vec![("solver".into(), Const::Str(solver.into()))],
        };
        let nfe = NetworkEvaluations {
            calls: 10,
            item_evaluations: 10 * psnr.len() as u64,
            items: psnr.len() as u64,
            backward_items: 4 * psnr.len() as u64,
        };
        let reports = vec![
            ("PSNR".to_string(), ReportValue::Items(psnr)),
            ("note, with comma".to_string(), ReportValue::Number(1.5)),
        ];
        CellRecord::finished(&cell, "h", 0, 3.0, &reports, &nfe)
    }

    #[test]
    fn csv_has_a_row_per_item_and_summary_a_row_per_cell() {
        let failed = CellRecord::failed(
            &Cell {
                index: 2,
                params: vec![("solver".into(), Const::Str("dps".into()))],
            },
            "h",
            0,
            1.0,
            "the objective became NaN",
            None,
        );
        let records = vec![
            record(0, "mapga", vec![20.0, 22.0, 24.0]),
            record(1, "ddrm", vec![10.0, 11.0, 12.0]),
            failed,
        ];
        let csv = results_csv(&records);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "solver,item,PSNR,\"note, with comma\",seconds per item,evaluations per item,backward passes per item"
        );
        assert_eq!(lines.len(), 1 + 6);
        assert_eq!(lines[1], "mapga,0,20,1.5,1,10,4");
        assert_eq!(lines[6], "ddrm,2,12,1.5,1,10,4");
        let md = summary_md(&records, "Evaluation of `suite.mapga`", Some(4));
        assert!(md.contains("3 of 4 cells finished (1 failed)"), "{md}");
        assert!(
            md.contains("| mapga | 22.0 ± 1.2 | 1.5 | 1 | 10 | 4 |"),
            "{md}"
        );
        assert!(
            md.contains("| dps | failed: the objective became NaN |  |  |  |  |"),
            "{md}"
        );
    }

    #[test]
    fn summary_numbers_keep_four_digits() {
        assert_eq!(short(0.123456), "0.1235");
        assert_eq!(short(20.0), "20");
    }
}
