//! `figure.png`: the restorations of a few items, one row per value of the suite's first grid
//! param and one column per value of its second.
//!
//! A cell contributes when it saved `restored.npy` (`[N, C, H, W]` in [0, 1], e.g.
//! `save (clip(x_hat) + 1.0) / 2.0 to "restored.npy"`): its first `items` images side by side
//! make its tile. Cells whose other params differ from their first value are left out, so the
//! figure is one slice of the grid. Rows are labelled on the left (`solver=dps`), columns under
//! each tile (`task=box25`, or just `box25` when that is too wide); a cell that failed or has
//! not run shows as an empty tile. The layout uses [`mod@crate::io::grid`].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::store::{cell_dir, CellRecord};
use crate::io::grid::{grid, GAP};

/// The array a cell saves for the figure.
pub const RESTORED: &str = "restored.npy";

/// Width of one caption character, in pixels.
const CHAR: usize = 8;

/// The distinct values of param `name` among `records`, in the order they first appear.
fn values_of(records: &[CellRecord], name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if let Some((_, v)) = r.param_texts().into_iter().find(|(n, _)| n == name) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// The value of param `name` in record `r`.
fn value(r: &CellRecord, name: &str) -> Option<String> {
    r.param_texts()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// The first `items` restorations of a cell, side by side, in [-1, 1]; `None` when the cell
/// saved none.
fn tile(dir: &Path, items: usize) -> Option<Tensor> {
    let path = dir.join(RESTORED);
    let x = crate::io::read_npy(&path, DType::F32, &Device::Cpu).ok()?;
    let x = match x.rank() {
        4 => x,
        3 => x.unsqueeze(0).ok()?,
        _ => return None,
    };
    let n = x.dim(0).ok()?.min(items.max(1));
    let parts: Vec<Tensor> = (0..n)
        .map(|i| x.get(i).and_then(|t| t.affine(2.0, -1.0)))
        .collect::<Result<_, _>>()
        .ok()?;
    grid(&parts, None).ok()
}

/// A white `[1, h, w]` image.
fn blank(h: usize, w: usize) -> Option<Tensor> {
    Tensor::ones((1, h, w), DType::F32, &Device::Cpu).ok()
}

/// Writes `figure.png` into `out` from the finished cells `records`, with the first `items`
/// items of each; `Ok(None)` when no cell saved `restored.npy`.
pub fn write_figure(
    out: &Path,
    records: &[CellRecord],
    items: usize,
) -> Result<Option<PathBuf>, String> {
    let Some(first) = records.first() else {
        return Ok(None);
    };
    let names: Vec<String> = first.param_texts().into_iter().map(|(n, _)| n).collect();
    // The slice of the grid shown: every param after the first two at its first value.
    let fixed: Vec<(String, String)> = names
        .iter()
        .skip(2)
        .filter_map(|n| value(first, n).map(|v| (n.clone(), v)))
        .collect();
    let shown: Vec<&CellRecord> = records
        .iter()
        .filter(|r| fixed.iter().all(|(n, v)| value(r, n).as_ref() == Some(v)))
        .collect();
    let owned: Vec<CellRecord> = shown.iter().map(|r| (*r).clone()).collect();
    let row_param = names.first().cloned();
    let col_param = names.get(1).cloned();
    let rows = row_param
        .as_ref()
        .map_or_else(|| vec![String::new()], |p| values_of(&owned, p));
    let cols = col_param
        .as_ref()
        .map_or_else(|| vec![String::new()], |p| values_of(&owned, p));
    let find = |rv: &str, cv: &str| -> Option<&CellRecord> {
        shown.iter().copied().find(|r| {
            row_param
                .as_ref()
                .is_none_or(|p| value(r, p).as_deref() == Some(rv))
                && col_param
                    .as_ref()
                    .is_none_or(|p| value(r, p).as_deref() == Some(cv))
        })
    };
    // Every tile, or None where a cell has no restorations.
    let mut tiles: Vec<Vec<Option<Tensor>>> = Vec::new();
    let mut size: Option<(usize, usize)> = None;
    for rv in &rows {
        let mut row = Vec::new();
        for cv in &cols {
            let t = find(rv, cv)
                .filter(|r| r.ok())
                .and_then(|r| tile(&cell_dir(out, &r.id), items));
            if let (None, Some(t)) = (size, &t) {
                if let Ok((_, h, w)) = t.dims3() {
                    size = Some((h, w));
                }
            }
            row.push(t);
        }
        tiles.push(row);
    }
    let Some((h, w)) = size else {
        return Ok(None);
    };
    let label = |p: &Option<String>, v: &str| match p {
        Some(p) => format!("{p}={v}"),
        None => String::new(),
    };
    let label_chars = rows
        .iter()
        .map(|v| label(&row_param, v).chars().count())
        .max();
    let label_w = (label_chars.unwrap_or(0) * CHAR + 4).max(3 * CHAR);
    let fail = |e: String| format!("cannot draw figure.png: {e}");
    let mut lines = Vec::new();
    for (rv, row) in rows.iter().zip(tiles) {
        let mut images = vec![blank(h, label_w).ok_or_else(|| fail("out of memory".into()))?];
        let mut captions = vec![label(&row_param, rv)];
        for (cv, t) in cols.iter().zip(row) {
            let missing = t.is_none();
            images.push(match t {
                Some(t) => t,
                None => blank(h, w).ok_or_else(|| fail("out of memory".into()))?,
            });
            let full = label(&col_param, cv);
            let caption = if missing {
                "none".to_string()
            } else if full.chars().count() * CHAR <= w {
                full
            } else {
                cv.clone()
            };
            captions.push(caption);
        }
        let line = grid(&images, Some(&captions)).map_err(|e| fail(e.to_string()))?;
        lines.push(line);
    }
    // Rows one under the other, GAP white rows apart, padded to one width.
    let width = lines
        .iter()
        .filter_map(|l| l.dims3().ok().map(|(_, _, w)| w))
        .max()
        .unwrap_or(0);
    let channels = lines
        .iter()
        .filter_map(|l| l.dims3().ok().map(|(c, _, _)| c))
        .max()
        .unwrap_or(1);
    let mut parts = Vec::new();
    for (i, l) in lines.into_iter().enumerate() {
        let (c, lh, lw) = l.dims3().map_err(|e| fail(e.to_string()))?;
        let mut l = if c < channels {
            l.repeat((channels, 1, 1))
                .map_err(|e| fail(e.to_string()))?
        } else {
            l
        };
        if lw < width {
            let pad = Tensor::ones((channels, lh, width - lw), DType::F32, &Device::Cpu)
                .map_err(|e| fail(e.to_string()))?;
            l = Tensor::cat(&[&l, &pad], 2).map_err(|e| fail(e.to_string()))?;
        }
        if i > 0 {
            parts.push(
                Tensor::ones((channels, GAP, width), DType::F32, &Device::Cpu)
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
        parts.push(l);
    }
    let figure = Tensor::cat(&parts, 1).map_err(|e| fail(e.to_string()))?;
    let path = out.join("figure.png");
    crate::io::write_image(&path, &figure, &crate::io::ImageOptions::default())
        .map_err(|e| fail(e.to_string()))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::cells::Cell;
    use crate::eval::store::write_record;
    use crate::graph::Const;
    use crate::runtime::NetworkEvaluations;

    #[test]
    fn one_row_per_first_param_and_one_column_per_second() {
        let out = tempfile::tempdir().unwrap();
        let mut records = Vec::new();
        let mut index = 0;
        for solver in ["a", "b"] {
            for task in ["x", "y", "z"] {
                for extra in [0, 1] {
                    let cell = Cell {
                        index,
                        params: vec![
                            ("solver".into(), Const::Str(solver.into())),
                            ("task".into(), Const::Str(task.into())),
                            ("extra".into(), Const::Int(extra)),
                        ],
                    };
                    index += 1;
                    let r = CellRecord::finished(
                        &cell,
                        "h",
                        0,
                        1.0,
                        &[],
                        &NetworkEvaluations::default(),
                    );
                    let dir = cell_dir(out.path(), &r.id);
                    let x = Tensor::full(0.5f32, (4, 1, 6, 5), &Device::Cpu).unwrap();
                    crate::io::write_npy(&dir.join(RESTORED), &x).unwrap();
                    write_record(&dir, &r).unwrap();
                    records.push(r);
                }
            }
        }
        let path = write_figure(out.path(), &records, 2).unwrap().unwrap();
        let img = crate::io::read_image(&path, DType::F32, &Device::Cpu).unwrap();
        let (_, h, w) = img.dims3().unwrap();
        // Two rows of (6 + caption band), GAP apart; a label column (at least 3 characters)
        // and three tiles of two 5-pixel items each.
        let band = crate::io::grid::CAPTION_HEIGHT;
        assert_eq!(h, 2 * (6 + band) + GAP);
        let label_w = "solver=a".len() * CHAR + 4;
        assert_eq!(w, label_w + 3 * (GAP + 5 + GAP + 5));
        assert!(write_figure(out.path(), &[], 2).unwrap().is_none());
    }
}
