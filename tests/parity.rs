//! Parity: the Rust forward of each shipped MNIST network equals the PyTorch reference forward
//! (train/mapga_train/) on the same weights and inputs, to 1e-4 relative.
//!
//! The fixtures (`tests/fixtures/parity/*.safetensors`) are written by `train/train_mnist.py`
//! when it exports the weights: inputs and the reference outputs computed in float64. No
//! Python is needed here. The comparison runs in f32 (what mapga runs by default) and in f64.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use mapga::models::{Classifier, Network};

const TOLERANCE: f64 = 1e-4;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn fixture(name: &str) -> std::collections::HashMap<String, Tensor> {
    let path = repo(&format!("tests/fixtures/parity/{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("a tensor of numbers")
}

/// max |a - b| / max |b|: the error relative to the output's scale.
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    let (g, w) = (values(got), values(want));
    assert_eq!(g.len(), w.len(), "output sizes differ");
    let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let diff = g
        .iter()
        .zip(&w)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    diff / scale.max(f64::MIN_POSITIVE)
}

fn unet_parity(name: &str, dtype: DType) {
    let net = Network::load(
        &repo(&format!("models/mnist/{name}.safetensors")),
        dtype,
        &Device::Cpu,
    )
    .expect("the shipped network loads");
    let fx = fixture(name);
    let sigmas = values(&fx["sigmas"]);
    assert!(sigmas.len() >= 4, "the fixture covers several noise levels");
    for (i, &sigma) in sigmas.iter().enumerate() {
        let input = fx[&format!("input_{i}")].to_dtype(dtype).unwrap();
        let got = if name == "cm" {
            net.consistency(&input, sigma)
        } else {
            net.denoise(&input, sigma)
        }
        .expect("the forward runs");
        let err = rel_err(&got, &fx[&format!("output_{i}")]);
        assert!(
            err < TOLERANCE,
            "{name} at sigma {sigma} ({dtype:?}): relative error {err:.2e} >= {TOLERANCE:e}"
        );
    }
}

#[test]
fn denoiser_matches_the_reference_forward() {
    unet_parity("denoiser", DType::F32);
    unet_parity("denoiser", DType::F64);
}

#[test]
fn consistency_model_matches_the_reference_forward() {
    unet_parity("cm", DType::F32);
    unet_parity("cm", DType::F64);
}

#[test]
fn classifier_matches_the_reference_forward() {
    for dtype in [DType::F32, DType::F64] {
        let clf = Classifier::load(
            &repo("models/mnist/classifier.safetensors"),
            dtype,
            &Device::Cpu,
        )
        .expect("the shipped classifier loads");
        let fx = fixture("classifier");
        let input = fx["input"].to_dtype(dtype).unwrap();
        let err = rel_err(&clf.logits(&input).unwrap(), &fx["logits"]);
        assert!(
            err < TOLERANCE,
            "logits ({dtype:?}): relative error {err:.2e}"
        );
        let err = rel_err(&clf.features(&input).unwrap(), &fx["features"]);
        assert!(
            err < TOLERANCE,
            "features ({dtype:?}): relative error {err:.2e}"
        );
    }
}
