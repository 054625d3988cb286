//! What a run writes: saved tensors (PNG, JPEG, `.npy`), `metrics.json` with the reported
//! numbers, and the `run.ron` manifest. Every file is written atomically, so an interrupted or
//! failed run never leaves half a file, and what was written before a failure stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::Serialize;

use crate::io::FileError;

/// The `run.ron` manifest: enough to know exactly what produced the outputs.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// The mapga version.
    pub version: String,
    /// The pipeline file as given.
    pub pipeline: String,
    /// SHA-256 of every source file the pipeline loaded (itself, imports, stdlib modules).
    pub sources: BTreeMap<String, String>,
    /// SHA-256 of every data or model file the pipeline reads.
    pub inputs: BTreeMap<String, String>,
    /// The params and their values.
    pub params: BTreeMap<String, String>,
    /// The root seed.
    pub seed: u64,
    /// The device, e.g. `cpu`.
    pub device: String,
    /// The tensor dtype, e.g. `f32`.
    pub dtype: String,
    /// Seconds spent checking and running.
    pub timings: BTreeMap<String, f64>,
    /// The files written, relative to the output folder.
    pub outputs: Vec<String>,
    /// `ok`, or the error that stopped the run.
    pub status: String,
    /// The denoiser and consistency-model evaluations (NFE) of the run.
    pub network_evaluations: Evaluations,
}

/// The network evaluations as `run.ron` records them.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluations {
    /// Evaluations per item: the count of a solver that restores every item of a batch with
    /// one call per step.
    pub per_item: f64,
    /// Item evaluations in all (a call on a batch of N counts N).
    pub total: u64,
    /// Model calls in all (a call on a batch counts once).
    pub calls: u64,
    /// The largest batch a call evaluated.
    pub items: u64,
    /// Backward passes (vector-Jacobian products) through the models per item.
    pub backward_per_item: f64,
}

impl Evaluations {
    /// The record of a run's count.
    pub fn of(n: &crate::diffusion::nfe::NetworkEvaluations) -> Self {
        Evaluations {
            per_item: n.per_item(),
            total: n.item_evaluations,
            calls: n.calls,
            items: n.items,
            backward_per_item: n.backward_per_item(),
        }
    }
}

pub use crate::io::hash::sha256_hex;

/// SHA-256 of a file (streamed and remembered: [`crate::io::hash::sha256_file`]), or a note
/// saying why it could not be read.
pub fn file_sha256(path: &Path) -> String {
    match crate::io::hash::sha256_file(path) {
        Ok(hash) => hash,
        Err(e) => format!("unreadable: {e}"),
    }
}

/// Saves a tensor by the path's extension: `.png` / `.jpg` images (with the text chunks on
/// PNGs; `name.16.png` for 16 bits per channel) or `.npy` arrays.
pub fn save_tensor(path: &Path, x: &Tensor, text: &[(String, String)]) -> Result<(), FileError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "npy" {
        crate::io::write_npy(path, x)
    } else {
        // `name.16.png` asks for 16 bits per channel.
        let sixteen = ext == "png"
            && path
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().to_ascii_lowercase().ends_with(".16"));
        let opts = crate::io::ImageOptions {
            bit_depth: if sixteen { 16 } else { 8 },
            text: text.to_vec(),
        };
        crate::io::write_image(path, x, &opts)
    }
}

/// A number as JSON: non-finite values as strings (`"inf"`, `"NaN"`), since JSON has none.
pub fn json_number(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
}

/// A finite number as a JSON number, NaN and infinities as `null` (JSON has neither; `null`
/// reads back as NaN in NumPy and pandas, where a string would turn a column into text).
fn json_number_or_null(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

/// The reports as `metrics.json`: `{ "label": value, ... }` in report order, a number for a
/// number and a list of numbers (one per item, in batch order) for a per-item report
/// (`null` for a NaN or infinite value; the printed summary says which).
pub fn metrics_json(reports: &[(String, crate::runtime::ReportValue)]) -> String {
    use crate::runtime::ReportValue;
    let mut map = serde_json::Map::new();
    for (label, v) in reports {
        let value = match v {
            ReportValue::Number(x) => json_number_or_null(*x),
            ReportValue::Items(xs) => {
                serde_json::Value::Array(xs.iter().map(|x| json_number_or_null(*x)).collect())
            }
        };
        map.insert(label.clone(), value);
    }
    let mut s = serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default();
    s.push('\n');
    s
}

/// Where a saved path goes: relative paths inside the output folder.
pub fn output_path(out_dir: &Path, written: &str) -> PathBuf {
    let p = Path::new(written);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        out_dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_keep_order_and_survive_nan() {
        use crate::runtime::ReportValue::{Items, Number};
        let j = metrics_json(&[
            ("b".into(), Number(1.5)),
            ("a".into(), Number(f64::NAN)),
            ("c".into(), Items(vec![1.0, f64::INFINITY])),
        ]);
        assert!(j.find("\"b\"").unwrap() < j.find("\"a\"").unwrap(), "{j}");
        // Standard JSON: NaN and infinities are null, never strings.
        assert!(!j.contains("NaN") && !j.contains("inf"), "{j}");
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["a"], serde_json::Value::Null);
        assert_eq!(v["c"], serde_json::json!([1.0, null]));
    }
}
