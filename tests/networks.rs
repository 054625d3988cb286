//! Trained networks in pipelines: `denoiser(...)` and `consistency(...)` load a U-Net from
//! safetensors and its card, and the run uses it (issue #4). The networks are small seeded
//! random U-Nets written by `mapga::models::fixture`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::{report, run_in, run_ok, temp_dir};
use mapga::diagnostics::Code;
use mapga::models::card::{HyperValue, ModelCard, ModelKind};
use mapga::models::fixture::{random_weights, unet_card, write_network, write_random_unet};
use mapga::models::Network;

fn card(kind: ModelKind) -> ModelCard {
    let hp = BTreeMap::from([
        ("channels".to_string(), HyperValue::Int(8)),
        (
            "channel_mult".to_string(),
            HyperValue::List(vec![HyperValue::Int(1), HyperValue::Int(2)]),
        ),
        ("num_res_blocks".to_string(), HyperValue::Int(1)),
        ("groups".to_string(), HyperValue::Int(4)),
    ]);
    unet_card(kind, [1, 28, 28], hp)
}

fn write(dir: &Path, stem: &str, kind: ModelKind) -> PathBuf {
    write_random_unet(dir, stem, &card(kind), 11).unwrap()
}

#[test]
fn denoiser_runs_in_a_pipeline() {
    let dir = temp_dir("network-denoiser");
    let weights = write(&dir, "net", ModelKind::Denoiser);
    let source = r#"
model d = denoiser("net.safetensors")
let x = gaussian_like(shape(1, 28, 28), seed: 3)
report norm(d(x, 1.0)) as "norm"
"#;
    for dtype in [DType::F32, DType::F64] {
        let summary = run_ok(&dir, source, dtype, 0);
        let got = report(&summary, "norm");
        // The same through the library, with the same seeded input.
        let net = Network::load(&weights, dtype, &Device::Cpu).unwrap();
        let mut g = mapga::random::generator(0, "gaussian_like", 3);
        let x = mapga::random::normal_tensor(&mut g, &[1, 28, 28], dtype, &Device::Cpu).unwrap();
        let d = net.denoise(&x, 1.0).unwrap().to_dtype(DType::F64).unwrap();
        let want: f64 = d
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(got.is_finite() && got > 0.0, "{got}");
        assert!(((got - want) / want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn consistency_model_runs_in_a_pipeline() {
    let dir = temp_dir("network-consistency");
    write(&dir, "cm", ModelKind::Consistency);
    let source = r#"
model f = consistency("cm.safetensors")
let x = gaussian_like(shape(1, 28, 28), seed: 4)
report norm(f(x, 0.002) - x) as "at_min"
report norm(f(x, 2.0)) as "at_two"
"#;
    let summary = run_ok(&dir, source, DType::F64, 0);
    assert_eq!(report(&summary, "at_min"), 0.0);
    assert!(report(&summary, "at_two") > 0.0);
}

/// The errors of checking `source` as `dir/pipeline.mapga`, rendered.
fn check_errors(dir: &Path, source: &str) -> (Vec<Code>, String) {
    use mapga::check::{check_source, CheckOptions};
    use mapga::diagnostics::{render, RenderOptions};
    std::fs::write(dir.join("pipeline.mapga"), source).unwrap();
    let checked = check_source("pipeline.mapga", source, dir, &CheckOptions::default());
    let text = render(
        &checked.diags.0,
        &checked.sources,
        RenderOptions {
            color: false,
            width: 200,
        },
    );
    let codes = checked.diags.0.iter().map(|d| d.code).collect();
    (codes, text)
}

const LOAD_NET: &str = r#"
model d = denoiser("net.safetensors")
report norm(d(zeros(shape(1, 28, 28)), 1.0)) as "norm"
"#;

#[test]
fn weights_that_do_not_fit_the_architecture_are_a_check_error() {
    let dir = temp_dir("network-missing");
    let card = card(ModelKind::Denoiser);
    let mut weights = random_weights(&card, 1).unwrap();
    weights.remove("up.0.res.1.conv2.weight");
    write_network(&dir, "net", &card, &weights).unwrap();
    let (codes, text) = check_errors(&dir, LOAD_NET);
    assert_eq!(codes, vec![Code::BadFile], "{text}");
    assert!(text.contains("`up.0.res.1.conv2.weight`"), "{text}");
    // A card whose hyperparameters are not the weights': found from the header, before any
    // weight is read (it used to fail only when the run loaded the network).
    let weights = random_weights(&card, 1).unwrap();
    let mut wider = card.clone();
    wider
        .hyperparameters
        .insert("channels".into(), HyperValue::Int(16));
    write_network(&dir, "net", &wider, &weights).unwrap();
    let (codes, text) = check_errors(&dir, LOAD_NET);
    assert_eq!(codes, vec![Code::BadFile], "{text}");
    assert!(
        text.contains("do not fit the network their card describes"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn weights_are_verified_against_their_cards_hash_at_check_and_at_load() {
    let dir = temp_dir("network-hash");
    let mut card = card(ModelKind::Consistency);
    let path = write_random_unet(&dir, "net", &card, 1).unwrap();
    card.weights_sha256 = Some(mapga::io::hash::sha256_file(&path).unwrap());
    write_network(&dir, "net", &card, &random_weights(&card, 1).unwrap()).unwrap();
    let source = LOAD_NET
        .replace("denoiser(", "consistency(")
        .replace(", 1.0)", ", 2.0)");
    let (codes, text) = check_errors(&dir, &source);
    assert!(codes.is_empty(), "{text}");
    // Other weights of the same architecture (a denoiser's under the consistency model's
    // name, another training run) ran to exit 0 with garbage; now refused, naming the file.
    write_network(&dir, "net", &card, &random_weights(&card, 2).unwrap()).unwrap();
    let (codes, text) = check_errors(&dir, &source);
    assert_eq!(codes, vec![Code::BadFile], "{text}");
    assert!(
        text.contains("net.safetensors") && text.contains("weights_sha256"),
        "{text}"
    );
    let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("is not the file its model card"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn weights_holding_nan_fail_at_load_naming_the_tensor() {
    let dir = temp_dir("network-nan");
    let card = card(ModelKind::Denoiser);
    let mut weights = random_weights(&card, 1).unwrap();
    let name = weights.keys().max().unwrap().clone();
    let t = &weights[&name];
    let mut values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[3] = f32::NAN;
    let broken = candle_core::Tensor::from_vec(values, t.dims(), &Device::Cpu).unwrap();
    weights.insert(name.clone(), broken);
    let path = write_network(&dir, "net", &card, &weights).unwrap();
    let err = Network::load(&path, DType::F32, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
    assert!(err.to_string().contains("NaN or infinite"), "{err}");
    let failure = run_in(&dir, LOAD_NET, DType::F32, 0).unwrap_err();
    assert!(
        failure.error.message.contains("NaN or infinite"),
        "{}",
        failure.error.message
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mapga_runs_with_networks() {
    let dir = temp_dir("network-mapga");
    write(&dir, "net", ModelKind::Denoiser);
    write(&dir, "cm", ModelKind::Consistency);
    let source = r#"
use std.solvers.mapga

model d = denoiser("net.safetensors")
model f = consistency("cm.safetensors")
let x_true = gaussian_like(shape(1, 28, 28), seed: 5) * 0.5
let A = inpaint(random_mask(28, 28, keep: 0.6, seed: 2))
let y = A(x_true) + gaussian_noise(0.1, seed: 1)
let x = mapga(y, A, 0.1, f, d, karras(steps: 3), iters: 2)
report norm(x) as "norm"
"#;
    let summary = run_ok(&dir, source, DType::F32, 0);
    let n = report(&summary, "norm");
    assert!(n.is_finite() && n > 0.0, "{n}");
}

#[test]
fn log_prior_of_a_network_has_the_score_as_gradient() {
    // No density is known for a network: log_prior's value is 0 and its gradient is the
    // Tweedie score (D(x, eps) - x) / eps^2, with no gradient through D.
    let dir = temp_dir("network-log-prior");
    write(&dir, "net", ModelKind::Denoiser);
    let source = r#"
model d = denoiser("net.safetensors")

fn prior_grad(d: Denoiser, x: Tensor) -> Tensor {
    grad(log_prior(d, x, 0.5), wrt: x)
}

let x = gaussian_like(shape(1, 28, 28), seed: 3) * 0.5
report norm(prior_grad(d, x) - score(d, x, 0.5)) / norm(score(d, x, 0.5)) as "rel",
    log_prior(d, x, 0.5) as "value"
"#;
    let s = run_ok(&dir, source, DType::F64, 0);
    assert!(report(&s, "rel") < 1e-12, "{}", report(&s, "rel"));
    assert_eq!(report(&s, "value"), 0.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn networks_take_a_batch_in_one_call() {
    // A batch [2, 1, 28, 28] goes through the U-Net in one call and gives each image's own
    // output; MAP-GA restores a batch with one network call per step.
    let dir = temp_dir("network-batch");
    write(&dir, "net", ModelKind::Denoiser);
    write(&dir, "cm", ModelKind::Consistency);
    let source = r#"
use std.solvers.mapga

model d = denoiser("net.safetensors")
model f = consistency("cm.safetensors")
let xs = gaussian_like(shape(2, 1, 28, 28), seed: 3)
let ds = d(xs, 1.0)
let fs = f(xs, 2.0)
let A = inpaint(random_mask(28, 28, keep: 0.6, seed: 2))
let x = mapga(A(xs) + gaussian_noise(0.1, seed: 1), A, 0.1, f, d, karras(steps: 3), iters: 2)
report norm(ds[0] - d(xs[0], 1.0)) + norm(ds[1] - d(xs[1], 1.0)) as "denoiser",
    norm(fs[0] - f(xs[0], 2.0)) + norm(fs[1] - f(xs[1], 2.0)) as "consistency",
    x.shape[0] as "n",
    norm(x) as "norm"
"#;
    let s = run_ok(&dir, source, DType::F64, 0);
    assert!(report(&s, "denoiser") < 1e-9, "{:?}", s.reports);
    assert!(report(&s, "consistency") < 1e-9, "{:?}", s.reports);
    assert_eq!(report(&s, "n"), 2.0);
    assert!(report(&s, "norm").is_finite());
    let _ = std::fs::remove_dir_all(dir);
}
