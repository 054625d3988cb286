//! Where cells keep their results, and how an evaluation resumes.
//!
//! Cell `<id>` runs in `DIR/cells/<id>/` exactly like `mapga run --out` (its saves,
//! `metrics.json`, `run.ron`). The cell is finished when its `cell.json` ([`CellRecord`])
//! exists: it is written atomically, last, and holds the cell's params, the hash of what made
//! it ([`cell_hash`]), its time, its network evaluations, its status and its reports. On a
//! new run, a finished cell whose status is `ok` and whose hash matches is reused; any other
//! cell (not finished, failed, or made by a different program) is run again from an empty
//! folder. Shards of one evaluation in different folders are combined by [`merge`].

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cells::{value_text, Cell};
use crate::check::Checked;
use crate::graph::Const;
use crate::runtime::outputs::{file_sha256, json_number, sha256_hex};
use crate::runtime::{NetworkEvaluations, ReportValue};

/// The name of the file that marks a finished cell.
pub const RECORD: &str = "cell.json";

/// A finished cell, as `cell.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// The cell's folder name.
    pub id: String,
    /// Its position in the suite's order.
    pub index: usize,
    /// Its grid params and their values, in the suite's order.
    pub params: Map<String, Value>,
    /// The hash of everything that determines its results ([`cell_hash`]).
    pub hash: String,
    /// The root seed it ran with.
    pub seed: u64,
    /// `ok`, or `failed` (the run stopped: a NaN objective, an error).
    pub status: String,
    /// Why it failed: the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where it failed, `file:line:col`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Seconds the run took (checking excluded).
    pub seconds: f64,
    /// The number of items (images) it worked on: the length of its per-item reports, else the
    /// largest batch a model evaluated, else 1.
    pub items: usize,
    /// `seconds / items`.
    pub seconds_per_item: f64,
    /// Network evaluations (denoiser and consistency-model calls).
    pub network_evaluations: Evaluations,
    /// The reports in order: a number, or a list with one number per item (non-finite numbers
    /// as strings, `"inf"`, `"NaN"`).
    pub reports: Map<String, Value>,
}

/// The network evaluations of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluations {
    /// Per item: what tables show.
    pub per_item: f64,
    /// Item evaluations in all.
    pub total: u64,
    /// Model calls in all.
    pub calls: u64,
    /// Backward passes (vector-Jacobian products) through the models, per item (0 in records
    /// written before they were counted).
    #[serde(default)]
    pub backward_per_item: f64,
}

impl CellRecord {
    /// True for a cell that ran to the end.
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }

    /// The record of a cell that ran: its reports, time and evaluations.
    pub fn finished(
        cell: &Cell,
        hash: &str,
        seed: u64,
        seconds: f64,
        reports: &[(String, ReportValue)],
        nfe: &NetworkEvaluations,
    ) -> Self {
        let longest = reports
            .iter()
            .filter_map(|(_, v)| match v {
                ReportValue::Items(xs) => Some(xs.len()),
                ReportValue::Number(_) => None,
            })
            .max();
        let items = longest.unwrap_or(nfe.items as usize).max(1);
        let mut map = Map::new();
        for (label, v) in reports {
            let value = match v {
                ReportValue::Number(x) => json_number(*x),
                ReportValue::Items(xs) => {
                    Value::Array(xs.iter().map(|x| json_number(*x)).collect())
                }
            };
            map.insert(label.clone(), value);
        }
        CellRecord {
            id: cell.id(),
            index: cell.index,
            params: params_json(cell),
            hash: hash.to_string(),
            seed,
            status: "ok".to_string(),
            error: None,
            location: None,
            seconds,
            items,
            seconds_per_item: seconds / items as f64,
            network_evaluations: Evaluations {
                per_item: if nfe.items == 0 {
                    0.0
                } else {
                    nfe.item_evaluations as f64 / items as f64
                },
                total: nfe.item_evaluations,
                calls: nfe.calls,
                backward_per_item: nfe.backward_items as f64 / items as f64,
            },
            reports: map,
        }
    }

    /// The record of a cell whose run stopped with `error` at `location`.
    pub fn failed(
        cell: &Cell,
        hash: &str,
        seed: u64,
        seconds: f64,
        error: &str,
        location: Option<String>,
    ) -> Self {
        CellRecord {
            id: cell.id(),
            index: cell.index,
            params: params_json(cell),
            hash: hash.to_string(),
            seed,
            status: "failed".to_string(),
            error: Some(error.to_string()),
            location,
            seconds,
            items: 0,
            seconds_per_item: 0.0,
            network_evaluations: Evaluations {
                per_item: 0.0,
                total: 0,
                calls: 0,
                backward_per_item: 0.0,
            },
            reports: Map::new(),
        }
    }

    /// The reports read back: numbers and per-item lists.
    pub fn report_values(&self) -> Vec<(String, ReportValue)> {
        self.reports
            .iter()
            .map(|(label, v)| {
                let value = match v {
                    Value::Array(xs) => ReportValue::Items(xs.iter().map(number).collect()),
                    other => ReportValue::Number(number(other)),
                };
                (label.clone(), value)
            })
            .collect()
    }

    /// The params as `(name, text)`, in order.
    pub fn param_texts(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(n, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(x) => match x.as_i64() {
                        Some(i) if !x.is_f64() => i.to_string(),
                        _ => x.as_f64().map_or_else(|| x.to_string(), |f| f.to_string()),
                    },
                    other => other.to_string(),
                };
                (n.clone(), text)
            })
            .collect()
    }
}

/// A JSON number (or a string such as `"inf"`) as an f64; NaN for anything else.
fn number(v: &Value) -> f64 {
    match v {
        Value::Number(x) => x.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// A cell's params as a JSON object, in order.
fn params_json(cell: &Cell) -> Map<String, Value> {
    let mut map = Map::new();
    for (n, v) in &cell.params {
        let value = match v {
            Const::Str(s) => Value::String(s.clone()),
            Const::Int(i) => Value::from(*i),
            Const::Float(f) => json_number(*f),
            Const::Bool(b) => Value::Bool(*b),
            other => Value::String(value_text(other)),
        };
        map.insert(n.clone(), value);
    }
    map
}

/// The hash of everything that determines a cell's results: the text of every source file
/// (the suite, its imports, the standard-library modules it uses), the contents of every file
/// it reads (data, models, cards; hashed once per path in `memo`), the value of every param,
/// the seed and the dtype. File names are left out, so moving the suite or running it from
/// another folder keeps its cells.
pub fn cell_hash(
    checked: &Checked,
    seed: u64,
    dtype: &str,
    memo: &mut HashMap<PathBuf, String>,
) -> String {
    let mut sources: Vec<String> = checked
        .sources
        .files()
        .map(|(_, f)| sha256_hex(f.text.as_bytes()))
        .collect();
    sources.sort();
    let mut inputs: Vec<String> = checked
        .dependencies
        .iter()
        .map(|p| {
            memo.entry(p.clone())
                .or_insert_with(|| file_sha256(p))
                .clone()
        })
        .collect();
    inputs.sort();
    let mut params: Vec<String> = checked
        .graph
        .params
        .iter()
        .map(|p| format!("{}={:?}", p.name, p.value))
        .collect();
    params.sort();
    let text = format!(
        "mapga {}\nsources {}\ninputs {}\nparams {}\nseed {seed}\ndtype {dtype}\n",
        env!("CARGO_PKG_VERSION"),
        sources.join(" "),
        inputs.join(" "),
        params.join(" "),
    );
    sha256_hex(text.as_bytes())
}

/// The folder of cell `id` under the output folder.
pub fn cell_dir(out: &Path, id: &str) -> PathBuf {
    out.join("cells").join(id)
}

/// The record of the cell in `dir`, if it is finished (`None` when `cell.json` is missing or
/// unreadable).
pub fn read_record(dir: &Path) -> Option<CellRecord> {
    let text = std::fs::read_to_string(dir.join(RECORD)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes `cell.json` into `dir`, atomically: the last thing a cell writes.
pub fn write_record(dir: &Path, record: &CellRecord) -> Result<(), crate::io::FileError> {
    let mut text = serde_json::to_string_pretty(record).unwrap_or_default();
    text.push('\n');
    crate::io::atomic::write_bytes(&dir.join(RECORD), text.as_bytes())
}

/// Empties a cell's folder before it runs again: its old record goes first, so an interrupted
/// rerun never looks finished.
pub fn clear(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(RECORD)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)
}

/// Every finished cell under `out/cells/`, in the suite's order (index, then id).
pub fn finished_cells(out: &Path) -> Vec<CellRecord> {
    let mut records: Vec<CellRecord> = match std::fs::read_dir(out.join("cells")) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| read_record(&e.path()))
            .collect(),
        Err(_) => Vec::new(),
    };
    records.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.id.cmp(&b.id)));
    records
}

/// What [`merge`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// Cells copied into the destination.
    pub copied: usize,
    /// Finished cells the destination already had (the same, or finished where the shard's
    /// failed).
    pub kept: usize,
}

/// Copies the finished cells of each shard folder into `dest/cells/`. A cell the destination
/// already has finished is kept when it is the same (same hash and status) or when it is `ok`
/// and the shard's failed; otherwise the shard's replaces it. Each cell is copied into a
/// temporary folder first and renamed into place, its `cell.json` written last.
///
/// Cells of another program are never mixed: when a cell's hash (program, inputs, params,
/// seed, dtype) differs between the destination and a shard, or between two shards, nothing is
/// copied and the error names the cells (it once replaced them: "4 cells copied").
pub fn merge(dest: &Path, shards: &[PathBuf]) -> Result<Merged, String> {
    let mut merged = Merged::default();
    let dest_canon = dest.canonicalize().ok();
    let mut plan: Vec<(&PathBuf, CellRecord)> = Vec::new();
    for shard in shards {
        if !shard.join("cells").is_dir() {
            return Err(format!(
                "`{}` holds no evaluation (no `cells` folder)",
                shard.display()
            ));
        }
        if dest_canon.is_some() && shard.canonicalize().ok() == dest_canon {
            continue;
        }
        plan.extend(finished_cells(shard).into_iter().map(|r| (shard, r)));
    }
    let mut seen: std::collections::HashMap<String, (String, String)> = finished_cells(dest)
        .into_iter()
        .map(|r| (r.id.clone(), (r.hash, dest.display().to_string())))
        .collect();
    let mut conflicts = Vec::new();
    for (shard, record) in &plan {
        match seen.get(&record.id) {
            Some((hash, from)) if *hash != record.hash => conflicts.push(format!(
                "`{}` ({} and {})",
                record.id,
                from,
                shard.display()
            )),
            Some(_) => {}
            None => {
                seen.insert(
                    record.id.clone(),
                    (record.hash.clone(), shard.display().to_string()),
                );
            }
        }
    }
    if !conflicts.is_empty() {
        let n = conflicts.len();
        conflicts.truncate(5);
        return Err(format!(
            "{n} cell{} computed by different programs (or inputs, seed or dtype), so \
             merging would mix two evaluations; nothing was copied: {}{}. Merge into an empty \
             folder, or rerun the stale cells with `mapga eval`",
            if n == 1 { " was" } else { "s were" },
            conflicts.join(", "),
            if n > 5 { ", ..." } else { "" }
        ));
    }
    for (shard, record) in plan {
        let target = cell_dir(dest, &record.id);
        if let Some(have) = read_record(&target) {
            let same = have.hash == record.hash && have.status == record.status;
            if same || (have.ok() && !record.ok()) {
                merged.kept += 1;
                continue;
            }
        }
        copy_cell(&cell_dir(shard, &record.id), &target, &record)
            .map_err(|e| format!("cannot copy cell `{}`: {e}", record.id))?;
        merged.copied += 1;
    }
    Ok(merged)
}

/// Copies a finished cell's folder to `to` through a temporary sibling.
fn copy_cell(from: &Path, to: &Path, record: &CellRecord) -> io::Result<()> {
    let parent = to.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".{}.merging.{}", record.id, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(from, &tmp, true)?;
    write_record(&tmp, record).map_err(|e| io::Error::other(e.to_string()))?;
    clear(to)?;
    std::fs::remove_dir(to)?;
    std::fs::rename(&tmp, to)
}

/// Copies a folder recursively (leaving out `cell.json` at the top when `skip_record`).
fn copy_tree(from: &Path, to: &Path, skip_record: bool) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip_record && name == RECORD {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &to.join(&name), false)?;
        } else {
            std::fs::copy(&path, to.join(&name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(i: usize, v: &str) -> Cell {
        Cell {
            index: i,
            params: vec![
                ("solver".into(), Const::Str(v.into())),
                ("sigma_y".into(), Const::Float(0.0)),
            ],
        }
    }

    #[test]
    fn records_round_trip_with_lists_and_infinities() {
        let nfe = NetworkEvaluations {
            calls: 5,
            item_evaluations: 20,
            items: 4,
            backward_items: 8,
        };
        let reports = vec![
            (
                "PSNR".to_string(),
                ReportValue::Items(vec![20.0, f64::INFINITY, 18.5, 19.0]),
            ),
            ("time".to_string(), ReportValue::Number(2.5)),
        ];
        let r = CellRecord::finished(&cell(1, "dps"), "abc", 7, 2.0, &reports, &nfe);
        assert_eq!(r.items, 4);
        assert_eq!(r.seconds_per_item, 0.5);
        assert_eq!(r.network_evaluations.per_item, 5.0);
        assert_eq!(r.network_evaluations.backward_per_item, 2.0);
        let dir = tempfile::tempdir().unwrap();
        write_record(dir.path(), &r).unwrap();
        let back = read_record(dir.path()).unwrap();
        assert_eq!(back.report_values(), reports);
        assert_eq!(
            back.param_texts(),
            vec![
                ("solver".to_string(), "dps".to_string()),
                ("sigma_y".to_string(), "0".to_string())
            ]
        );
        assert!(back.ok());
        let text = std::fs::read_to_string(dir.path().join(RECORD)).unwrap();
        assert!(text.find("\"solver\"").unwrap() < text.find("\"sigma_y\"").unwrap());
    }

    #[test]
    fn merge_copies_finished_cells_and_keeps_better_ones() {
        let (a, b, dest) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let nfe = NetworkEvaluations::default();
        let ok = CellRecord::finished(&cell(0, "x"), "h", 0, 1.0, &[], &nfe);
        let dir = cell_dir(a.path(), &ok.id);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/restored.npy"), b"data").unwrap();
        write_record(&dir, &ok).unwrap();
        // An unfinished cell (no cell.json) is not copied.
        std::fs::create_dir_all(cell_dir(a.path(), "solver=y,sigma_y=0")).unwrap();
        let failed = CellRecord::failed(&cell(0, "x"), "h", 0, 1.0, "NaN", None);
        write_record(&cell_dir(b.path(), &failed.id), &failed).unwrap();
        let m = merge(
            dest.path(),
            &[a.path().to_path_buf(), b.path().to_path_buf()],
        )
        .unwrap();
        assert_eq!(m, Merged { copied: 1, kept: 1 });
        let target = cell_dir(dest.path(), &ok.id);
        assert_eq!(
            std::fs::read(target.join("sub/restored.npy")).unwrap(),
            b"data"
        );
        assert!(read_record(&target).unwrap().ok());
        assert_eq!(finished_cells(dest.path()).len(), 1);
        assert!(merge(dest.path(), &[dest.path().join("nope")]).is_err());
        // A shard whose cell comes from another program is refused, and nothing is copied.
        let c = tempfile::tempdir().unwrap();
        let other = CellRecord::finished(&cell(0, "x"), "other", 0, 1.0, &[], &nfe);
        write_record(&cell_dir(c.path(), &other.id), &other).unwrap();
        let extra = CellRecord::finished(&cell(1, "z"), "h", 0, 1.0, &[], &nfe);
        write_record(&cell_dir(c.path(), &extra.id), &extra).unwrap();
        let e = merge(dest.path(), &[c.path().to_path_buf()]).unwrap_err();
        assert!(
            e.contains(&other.id) && e.contains("nothing was copied"),
            "{e}"
        );
        assert_eq!(read_record(&target).unwrap().hash, "h");
        assert_eq!(finished_cells(dest.path()).len(), 1);
    }
}
