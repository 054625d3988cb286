//! The shipped MNIST models (`models/mnist/`) in the shipped pipelines and examples: every one
//! runs end to end on a tiny budget (2 digits, 2 levels, 1 ascent step) and writes what its
//! header promises; the classifier is accurate on the held-out digits; the noisy branch
//! (MAP-GA-PGDM) runs too. Quality itself is measured by `scripts/mnist_quality.py`, not here.

mod common;

use std::path::{Path, PathBuf};

use common::{npy_dtype_and_shape, run_cli, temp_dir};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `--set` flags that shrink a pipeline to a smoke run, for the params it declares.
fn tiny_budget(text: &str) -> Vec<String> {
    let tiny = [
        ("n", "2"),
        ("count", "2"),
        ("rows", "2"),
        ("steps", "2"),
        ("iters", "1"),
        ("nfe", "4"),
    ];
    tiny.iter()
        .filter(|(name, _)| text.contains(&format!("param {name} =")))
        .flat_map(|(name, value)| ["--set".to_string(), format!("{name}={value}")])
        .collect()
}

/// Runs `file` with the tiny budget and `extra` flags; returns the output folder.
fn run_tiny(file: &Path, extra: &[&str]) -> PathBuf {
    let text = std::fs::read_to_string(file).unwrap();
    let out = temp_dir(&format!(
        "trained-{}",
        file.file_stem().unwrap().to_string_lossy()
    ));
    let tiny = tiny_budget(&text);
    let args: Vec<&str> = tiny
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
        .collect();
    run_cli(file, &args, &out);
    assert!(out.join("run.ron").exists());
    out
}

#[test]
fn every_pipeline_with_the_trained_models_runs() {
    let mut ran = 0;
    for folder in ["pipelines", "examples"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(folder))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "mapga"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let trained = text.contains("models/mnist/");
            let is_pipeline = text.contains("save ") || text.contains("report ");
            if !trained || !is_pipeline {
                continue;
            }
            let suite = text.contains("\ngrid ");
            let out = run_tiny(&file, &[]);
            if text.contains("\"restored.npy\"") {
                assert_eq!(
                    npy_dtype_and_shape(&out.join("restored.npy")),
                    ("<f4".into(), vec![2, 1, 28, 28]),
                    "{}",
                    file.display()
                );
                assert_eq!(
                    npy_dtype_and_shape(&out.join("indices.npy")),
                    ("<i8".into(), vec![2]),
                    "{}",
                    file.display()
                );
                let metrics = std::fs::read_to_string(out.join("metrics.json")).unwrap();
                // An evaluation suite (with `grid` items) compares solvers, not a baseline, and
                // `mapga eval` draws its figure.
                let keys: &[&str] = if suite {
                    &["PSNR", "SSIM", "accuracy"]
                } else {
                    &["PSNR", "SSIM", "accuracy", "baseline accuracy"]
                };
                for key in keys {
                    assert!(metrics.contains(&format!("\"{key}\"")), "{metrics}");
                }
            }
            if !suite {
                assert!(out.join("grid.png").exists(), "{}", file.display());
            }
            let _ = std::fs::remove_dir_all(out);
            ran += 1;
        }
    }
    assert!(ran >= 11, "only {ran} pipelines with trained models ran");
}

#[test]
fn noisy_inpainting_takes_the_pgdm_branch() {
    let file = root().join("pipelines/mnist_inpaint_box50.mapga");
    let out = run_tiny(&file, &["--set", "sigma_y=0.05"]);
    let manifest = std::fs::read_to_string(out.join("run.ron")).unwrap();
    assert!(manifest.contains("0.05"), "{manifest}");
    assert!(out.join("restored.npy").exists());
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn the_shipped_classifier_recognises_held_out_digits() {
    let dir = temp_dir("trained-classifier");
    let file = dir.join("acc.mapga");
    let data = root().join("data/mnist/test");
    let model = root().join("models/mnist/classifier.safetensors");
    std::fs::write(
        &file,
        format!(
            "model clf = classifier({model:?})\n\
             let x = load_npy({digits:?}) / 127.5 - 1.0\n\
             report accuracy(clf, x, load_npy({labels:?})) as \"accuracy\"\n",
            digits = data.join("digits.npy"),
            labels = data.join("labels.npy"),
        ),
    )
    .unwrap();
    let out = run_tiny(&file, &[]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let accuracy = metrics["accuracy"].as_f64().unwrap();
    assert!(
        accuracy >= 0.98,
        "accuracy {accuracy} on the 1,000 held-out digits"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mapga_runs_with_a_consistency_function_integrated_from_the_trained_denoiser() {
    let dir = temp_dir("trained-ode-consistency");
    let file = dir.join("ode.mapga");
    let digits = root().join("data/mnist/test/digits.npy");
    let model = root().join("models/mnist/denoiser.safetensors");
    std::fs::write(
        &file,
        format!(
            "use std.solvers.mapga\n\
             use std.operators.{{inpaint, center_box_mask}}\n\
             model d = denoiser({model:?})\n\
             let cm = ode_consistency(d, steps: 2)\n\
             let x = (load_npy({digits:?}) / 127.5 - 1.0)[:2]\n\
             let A = inpaint(center_box_mask(28, 28, fraction: 0.25))\n\
             let ts = karras(sigma_min: 0.002, sigma_max: 80.0, steps: 3, rho: 7.0)\n\
             let x_hat = mapga(A(x), A, 0.0, cm: cm, prior: d, schedule: ts, iters: 1)\n\
             save x_hat to \"x_hat.npy\"\n\
             report mean(psnr(x_hat, x)) as \"PSNR\"\n",
        ),
    )
    .unwrap();
    let out = run_tiny(&file, &[]);
    let (dtype, shape) = npy_dtype_and_shape(&out.join("x_hat.npy"));
    assert_eq!((dtype.as_str(), shape), ("<f4", vec![2, 1, 28, 28]));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let psnr = metrics["PSNR"].as_f64().unwrap();
    assert!(psnr.is_finite() && psnr > 5.0, "PSNR {psnr}");
    let _ = std::fs::remove_dir_all(dir);
}
