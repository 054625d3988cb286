//! Image metrics against scikit-image's values for the same images.
//!
//! The pairs and the expected values in `tests/fixtures/metrics/` come from
//! `scripts/metrics_fixtures.py` (scikit-image's `structural_similarity` with Gaussian weights,
//! `peak_signal_noise_ratio` and `mean_squared_error`); this test needs no Python.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use mapga::io::read_npy;
use mapga::metrics::{mse, psnr, ssim};

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    x: String,
    reference: String,
    shape: Vec<usize>,
    mse: f64,
    psnr: Option<f64>,
    ssim: f64,
}

#[derive(serde::Deserialize)]
struct Expected {
    cases: Vec<Case>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics")
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    let expected: Expected = serde_json::from_str(&text).unwrap();
    assert!(expected.cases.len() >= 5);
    expected.cases
}

fn load(name: &str, dtype: DType) -> Tensor {
    read_npy(&fixtures().join(name), dtype, &Device::Cpu).unwrap()
}

/// `got` within `tol` relative of `want` (exactly 0 when `want` is 0).
fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    if want == 0.0 {
        assert_eq!(got, 0.0, "{what}");
        return;
    }
    let rel = (got - want).abs() / want.abs();
    assert!(
        rel <= tol,
        "{what}: got {got}, scikit-image {want} (relative error {rel:e})"
    );
}

#[test]
fn f64_images_match_scikit_image() {
    for case in cases() {
        let x = load(&case.x, DType::F64);
        let r = load(&case.reference, DType::F64);
        assert_eq!(x.dims(), case.shape.as_slice(), "{}", case.name);
        assert_close(
            &format!("{} mse", case.name),
            mse(&x, &r).unwrap(),
            case.mse,
            1e-6,
        );
        match case.psnr {
            Some(want) => assert_close(
                &format!("{} psnr", case.name),
                psnr(&x, &r).unwrap(),
                want,
                1e-6,
            ),
            None => assert_eq!(psnr(&x, &r).unwrap(), f64::INFINITY, "{}", case.name),
        }
        assert_close(
            &format!("{} ssim", case.name),
            ssim(&x, &r).unwrap(),
            case.ssim,
            1e-6,
        );
    }
}

#[test]
fn f32_images_agree_to_their_precision() {
    for case in cases() {
        let x = load(&case.x, DType::F32);
        let r = load(&case.reference, DType::F32);
        assert_eq!(x.dtype(), DType::F32);
        // SSIM is near 0 for unrelated images, so compare absolutely here.
        let got = ssim(&x, &r).unwrap();
        assert!(
            (got - case.ssim).abs() < 1e-5,
            "{}: {got} vs {}",
            case.name,
            case.ssim
        );
        assert_close(
            &format!("{} mse", case.name),
            mse(&x, &r).unwrap(),
            case.mse,
            1e-5,
        );
    }
}
