//! Helpers shared by the runtime tests: running pipeline text in a temporary folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use mapga::check::{check_source, CheckOptions};
use mapga::diagnostics::{render, RenderOptions};
use mapga::runtime::{self, Env, RunFailure, RunOptions, RunSummary};

/// A fresh temporary folder for one test: a new one on every call, so tests running in
/// parallel that ask for the same name (two runs of one pipeline) never share one.
pub fn temp_dir(name: &str) -> PathBuf {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("mapga-test-{name}-{pid}-{call}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Checks `source` as `dir/pipeline.mapga` (failing the test on diagnostics errors) and runs
/// it with outputs in `dir/out`.
pub fn run_in(
    dir: &Path,
    source: &str,
    dtype: DType,
    seed: u64,
) -> Result<RunSummary, Box<RunFailure>> {
    let path = dir.join("pipeline.mapga");
    std::fs::write(&path, source).expect("write pipeline");
    let checked = check_source("pipeline.mapga", source, dir, &CheckOptions::default());
    if checked.diags.has_errors() {
        panic!(
            "the pipeline does not check:\n{}",
            render(
                &checked.diags.0,
                &checked.sources,
                RenderOptions {
                    color: false,
                    width: 100
                }
            )
        );
    }
    let opts = RunOptions {
        out_dir: dir.join("out"),
        env: Env {
            device: Device::Cpu,
            dtype,
            seed,
        },
        observer: None,
        check_seconds: 0.0,
    };
    runtime::run(&checked, &path, &opts)
}

/// Like [`run_in`], failing the test when the run fails.
pub fn run_ok(dir: &Path, source: &str, dtype: DType, seed: u64) -> RunSummary {
    match run_in(dir, source, dtype, seed) {
        Ok(s) => s,
        Err(f) => panic!("the run failed: {} ({:?})", f.error.message, f.error.notes),
    }
}

/// The reported value with this label.
pub fn report(summary: &RunSummary, label: &str) -> f64 {
    summary
        .reports
        .iter()
        .find(|(l, _)| l == label)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no report `{label}` in {:?}", summary.reports))
}

/// Writes an f64 tensor as `.npy`.
pub fn write_npy(path: &Path, t: &Tensor) {
    mapga::io::write_npy(path, &t.to_dtype(DType::F64).unwrap()).expect("write npy");
}

/// Reads an `.npy` as f64 values.
pub fn read_npy(path: &Path) -> Vec<f64> {
    let t = mapga::io::read_npy(path, DType::F64, &Device::Cpu).expect("read npy");
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

/// ||a - b|| / ||b||.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Runs `mapga run --quiet --out OUT [ARGS] FILE` from the repository root (the shipped
/// pipelines' relative paths resolve as for a user), fails the test if it does not succeed, and
/// returns what it printed. The pipeline may read the repository (`--allow-read`): tests
/// write pipelines into temporary folders that name its data by absolute path.
pub fn run_cli(file: &Path, args: &[&str], out: &Path) -> std::process::Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args([
            "run",
            "--quiet",
            "--allow-read",
            env!("CARGO_MANIFEST_DIR"),
            "--out",
        ])
        .arg(out)
        .args(args)
        .arg(file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run mapga");
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The dtype and shape of an `.npy` file, e.g. `("<f4", [3, 1, 28, 28])`.
pub fn npy_dtype_and_shape(path: &Path) -> (String, Vec<u64>) {
    let h = mapga::io::npy::npy_header(path).expect("an .npy header");
    (h.dtype.as_str().to_string(), h.shape)
}

/// Copies a file, or a folder with everything in it.
pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).expect("create folder");
        for entry in std::fs::read_dir(from).expect("read folder") {
            let entry = entry.expect("folder entry");
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).expect("copy file");
    }
}

/// The model card a tiny ADM fixture of `tests/fixtures/adm/` needs (16x16 images; its
/// 16-channel heads are no release's, so the card says them), with more hyperparameters.
pub fn adm_fixture_card(
    name: &str,
    kind: mapga::models::card::ModelKind,
    hp: &[(&str, mapga::models::card::HyperValue)],
) -> mapga::models::card::ModelCard {
    use mapga::models::card::HyperValue;
    let mut hyperparameters =
        std::collections::BTreeMap::from([("num_head_channels".to_string(), HyperValue::Int(16))]);
    for (k, v) in hp {
        hyperparameters.insert(k.to_string(), v.clone());
    }
    mapga::models::card::ModelCard {
        name: name.into(),
        kind,
        architecture: "adm".into(),
        image_shape: [3, 16, 16],
        value_range: (-1.0, 1.0),
        sigma_data: 0.5,
        sigma_min: 0.002,
        sigma_max: 80.0,
        hyperparameters,
        provenance: Some("tests/fixtures/adm (scripts/make_adm_fixtures.py)".into()),
        weights_sha256: None,
        tensors: None,
    }
}
