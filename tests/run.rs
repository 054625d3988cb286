//! `mapga run` end to end: determinism by seed, the shipped example against its exact answer,
//! outputs and manifest, and run-time failures that name the line and keep earlier outputs.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::DType;
use common::{run_in, run_ok, temp_dir};
use mapga::diagnostics::Code;

/// A small pipeline that draws random numbers in every way a program can (a random mask,
/// measurement noise, a random start, re-noising), runs a few MAP-GA steps and saves a PNG
/// and an `.npy`.
const RANDOM_PIPELINE: &str = r#"
use std.solvers.mapga

let mean = zeros(shape(1, 8, 8))
model prior = gaussian_prior(mean, ones(shape(1, 8, 8)) * 0.3)
let x_true = gaussian_like(shape(1, 8, 8), seed: 5) * 0.5
let A = inpaint(random_mask(8, 8, keep: 0.6, seed: 2))
let y = A(x_true) + gaussian_noise(0.1, seed: 1)
let x = mapga(y, A, 0.1, prior, prior, karras(steps: 4), iters: 3)
save x to "x.npy"
save grid(x_true, A.visualize(y), x) to "grid.png"
report psnr(x, x_true) as "psnr"
"#;

fn bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join("out").join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    // The PNGs embed the pipeline's path, so both runs use the same folder.
    let dir = temp_dir("seed");
    let names = ["x.npy", "grid.png", "metrics.json"];
    run_ok(&dir, RANDOM_PIPELINE, DType::F32, 0);
    let first: Vec<Vec<u8>> = names.iter().map(|n| bytes(&dir, n)).collect();
    run_ok(&dir, RANDOM_PIPELINE, DType::F32, 0);
    for (name, before) in names.iter().zip(&first) {
        assert!(
            *before == bytes(&dir, name),
            "{name} differs between two runs with seed 0"
        );
    }
    run_ok(&dir, RANDOM_PIPELINE, DType::F32, 1);
    assert!(
        first[0] != bytes(&dir, "x.npy"),
        "seed 1 gave the same result as seed 0"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_writes_metrics_and_a_manifest() {
    let dir = temp_dir("manifest");
    let s = run_ok(&dir, RANDOM_PIPELINE, DType::F32, 0);
    assert!(s.reports[0].1.is_finite());
    let metrics: serde_json::Value =
        serde_json::from_slice(&bytes(&dir, "metrics.json")).expect("metrics.json is JSON");
    assert!(metrics["psnr"].as_f64().is_some(), "{metrics}");
    let manifest = String::from_utf8(bytes(&dir, "run.ron")).unwrap();
    for key in [
        "version",
        "sources",
        "params",
        "seed",
        "timings",
        "status: \"ok\"",
        "x.npy",
    ] {
        assert!(manifest.contains(key), "run.ron lacks {key}:\n{manifest}");
    }
    // The PNG carries the pipeline's own source.
    let png = bytes(&dir, "grid.png");
    let needle = b"gaussian_like(shape(1, 8, 8), seed: 5)";
    assert!(
        png.windows(needle.len()).any(|w| w == needle),
        "grid.png lacks the pipeline source"
    );
    // The stdlib module the pipeline imports is hashed too.
    assert!(manifest.contains("mapga"), "{manifest}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_diverging_ascent_stops_with_the_step_and_keeps_earlier_outputs() {
    let dir = temp_dir("nan");
    let source = r#"
let x0 = ones(shape(1, 4, 4))
save x0 to "before.npy"

/// Ascends x^4 with a huge step: it overflows within a few steps.
fn explode(start: Tensor) -> Tensor {
    var x = start
    ascend x with sgd(lr: 1e6) for 50 steps {
        maximize sum(x^4)
    }
    x
}

save explode(x0) to "after.npy"
"#;
    let failure = run_in(&dir, source, DType::F32, 0).expect_err("the run must fail");
    assert_eq!(failure.error.code, Code::RunNumeric);
    let notes = failure.error.notes.join("\n");
    assert!(
        notes.contains("iteration") && notes.contains("of 50"),
        "{notes}"
    );
    assert!(
        dir.join("out/before.npy").exists(),
        "the earlier output was lost"
    );
    assert!(!dir.join("out/after.npy").exists());
    let manifest = std::fs::read_to_string(dir.join("out/run.ron")).unwrap();
    assert!(manifest.contains("failed"), "{manifest}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_broken_after_the_check_is_a_run_time_error_naming_it() {
    let dir = temp_dir("broken");
    let img = image::GrayImage::from_pixel(4, 4, image::Luma([200u8]));
    img.save(dir.join("a.png")).unwrap();
    let source = "let x = image(\"a.png\")\nsave x to \"x.npy\"\n";
    std::fs::write(dir.join("pipeline.mapga"), source).unwrap();
    let checked = mapga::check::check_file(&dir.join("pipeline.mapga"), &Default::default());
    assert!(!checked.diags.has_errors());
    // The file changes between check and run.
    std::fs::write(dir.join("a.png"), b"\x89PNG\r\n\x1a\nbroken").unwrap();
    let opts = mapga::runtime::RunOptions {
        out_dir: dir.join("out"),
        env: mapga::runtime::Env {
            device: candle_core::Device::Cpu,
            dtype: DType::F32,
            seed: 0,
        },
        observer: None,
        check_seconds: 0.0,
    };
    let failure = mapga::runtime::run(&checked, &dir.join("pipeline.mapga"), &opts).unwrap_err();
    assert_eq!(failure.error.code, Code::RunFile);
    assert!(
        failure.error.message.contains("a.png"),
        "{}",
        failure.error.message
    );
    // A valid image of another size: the shape the check promised no longer holds.
    image::GrayImage::from_pixel(5, 4, image::Luma([9u8]))
        .save(dir.join("a.png"))
        .unwrap();
    let failure = mapga::runtime::run(&checked, &dir.join("pipeline.mapga"), &opts).unwrap_err();
    assert_eq!(failure.error.code, Code::RunFile);
    assert!(
        failure
            .error
            .message
            .contains("when the pipeline was checked"),
        "{}",
        failure.error.message
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn example_02_matches_the_exact_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = temp_dir("example02");
    let status = common::run_cli(&root.join("examples/02_gaussian_images.mapga"), &[], &out);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let rel = metrics["rel_err_vs_exact"]
        .as_f64()
        .expect("rel_err_vs_exact");
    assert!(rel < 1e-3, "rel_err_vs_exact = {rel}");
    assert!(out.join("x_mapga.npy").exists() && out.join("grid.png").exists());
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("rel_err_vs_exact"), "{stdout}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn run_exit_codes() {
    let dir = temp_dir("exit");
    let bin = env!("CARGO_BIN_EXE_mapga");
    std::fs::write(dir.join("bad.mapga"), "let x = nope\n").unwrap();
    let bad = Command::new(bin)
        .args(["run", "-q"])
        .arg(dir.join("bad.mapga"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "a pipeline with errors");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("mapga::name::unknown"));
    let missing = Command::new(bin)
        .args(["run", "-q", "no/such/file.mapga"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "a missing file");
    std::fs::write(
        dir.join("ok.mapga"),
        "param n = 2\nreport n * 2 as \"twice\"\n",
    )
    .unwrap();
    let ok = Command::new(bin)
        .args(["run", "-q", "--set", "n=21", "--out"])
        .arg(dir.join("out"))
        .arg(dir.join("ok.mapga"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("twice  42"));
    let unknown = Command::new(bin)
        .args(["run", "-q", "--set", "m=1"])
        .arg(dir.join("ok.mapga"))
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1), "--set of an unknown param");
    // A folder given as FILE is a usage error, like a missing file (it was 1).
    let folder = Command::new(bin)
        .args(["run", "-q"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(folder.status.code(), Some(2), "a folder as FILE");
    assert!(String::from_utf8_lossy(&folder.stderr).contains("is a folder"));
    // An output folder that cannot be one is refused before running (it was refused only when
    // the first `save` came, after the whole solve).
    std::fs::write(dir.join("a_file"), "not a folder").unwrap();
    for out in [dir.join("a_file"), dir.join("a_file").join("below")] {
        let refused = Command::new(bin)
            .args(["run", "-q", "--out"])
            .arg(&out)
            .arg(dir.join("ok.mapga"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "--out {}: {stderr}",
            out.display()
        );
        assert!(
            stderr.contains("output folder") && stderr.contains("--out"),
            "{stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&refused.stdout).contains("twice"),
            "it ran"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_shipped_pipeline_without_a_trained_model_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for folder in ["examples", "pipelines"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(folder))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "mapga"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Modules imported by others have no outputs; pipelines with networks run in
            // tests/trained.rs (MNIST) and tests/checkpoints.rs (photos, on tiny stand-ins).
            let is_pipeline = text.contains("save ") || text.contains("report ");
            if !is_pipeline || text.contains("= denoiser(") || text.contains("= consistency(") {
                continue;
            }
            let out = temp_dir(&format!(
                "shipped-{}",
                file.file_stem().unwrap().to_string_lossy()
            ));
            common::run_cli(&file, &[], &out);
            assert!(out.join("run.ron").exists());
            let _ = std::fs::remove_dir_all(out);
            ran += 1;
        }
    }
    // The pipelines with trained models run in tests/trained.rs.
    assert!(ran >= 8, "only {ran} pipelines ran");
}

#[test]
fn the_readme_pipeline_runs() {
    // The README's pipeline is pipelines/mnist_inpaint_box25.mapga, abridged: it must check and
    // run as shown (on 2 digits and a tiny budget here; paths made absolute).
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("```\nuse \"./mnist_restore.mapga\"")
        .expect("the README shows a pipeline")
        + 4;
    let end = start + readme[start..].find("```").unwrap();
    let pipelines = root.join("pipelines");
    let source = readme[start..end]
        .replace(
            "./mnist_restore.mapga",
            &pipelines.join("mnist_restore.mapga").display().to_string(),
        )
        .replace("../models", &root.join("models").display().to_string())
        .replace("param n = 10", "param n = 2")
        .replace("cm, d, 10, 5, 0)", "cm, d, 2, 1, 0)");
    assert!(source.contains("param n = 2") && source.contains("cm, d, 2, 1, 0)"));
    let dir = temp_dir("readme");
    let s = run_ok(&dir, &source, DType::F32, 0);
    // Two levels of one step restore little; the README's budget is measured in the table.
    let psnr = common::report(&s, "PSNR");
    assert!(psnr.is_finite() && psnr > 5.0, "{:?}", s.reports);
    assert!((0.0..=1.0).contains(&common::report(&s, "accuracy")));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_batched_pipeline_writes_a_batch_and_its_indices() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = temp_dir("batch-pipeline");
    common::run_cli(
        &root.join("pipelines/mnist_batch_gaussian.mapga"),
        &["--set", "n=3", "--set", "steps=10", "--set", "iters=5"],
        &out,
    );
    let header = |name: &str| common::npy_dtype_and_shape(&out.join(name));
    assert_eq!(header("restored.npy"), ("<f4".into(), vec![3, 1, 28, 28]));
    let restored = common::read_npy(&out.join("restored.npy"));
    assert!(restored.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(header("indices.npy"), ("<i8".into(), vec![3]));
    assert_eq!(
        common::read_npy(&out.join("indices.npy")),
        vec![901.0, 2028.0, 3019.0]
    );
    assert_eq!(header("psnr.npy").1, vec![3]);
    // truth | measurement | restoration, one row per digit, 2-pixel gaps.
    let grid = image::open(out.join("grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (3 * 28 + 4, 3 * 28 + 4));
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let psnr = metrics["PSNR"].as_f64().expect("PSNR");
    let per_digit = common::read_npy(&out.join("psnr.npy"));
    let mean = per_digit.iter().sum::<f64>() / 3.0;
    assert!((psnr - mean).abs() < 1e-4 * mean.abs(), "{psnr} vs {mean}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn doc_shows_items_and_lists_modules() {
    let bin = env!("CARGO_BIN_EXE_mapga");
    let out = std::process::Command::new(bin)
        .args(["doc", "reddiff"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("std.solvers.reddiff.reddiff  (function"),
        "{text}"
    );
    assert!(text.contains("pub fn reddiff(") && text.contains("lambda: Float = 0.25"));
    let out = std::process::Command::new(bin)
        .args(["doc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for module in ["std.solvers.mapga", "std.operators", "std.metrics"] {
        assert!(
            text.contains(&format!("\n{module}\n")),
            "{module} not listed"
        );
    }
    let out = std::process::Command::new(bin)
        .args(["doc", "redif"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `reddiff`?"));
}
