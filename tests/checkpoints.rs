//! The field's checkpoints: tiny random-weight ADM / consistency-model networks of every
//! structural variant, written by PyTorch (`scripts/make_adm_fixtures.py`, with the
//! independent reference module `scripts/adm_reference.py`), load in every format and match
//! the reference outputs: the raw network, the preconditioned denoiser or consistency
//! function, and their vector-Jacobian products (relative error < 1e-4 in f32, < 1e-9 in f64).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use mapga::models::card::{HyperValue, ModelCard, ModelKind};
use mapga::models::checkpoint;
use mapga::models::precond::Preconditioning;
use mapga::models::{ModelError, Network};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adm")
}

/// The reference tensors of a variant.
fn reference(name: &str) -> BTreeMap<String, Tensor> {
    let path = fixtures().join(format!("{name}.ref.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// The variant's settings from `variants.json`.
fn variant(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("variants.json")).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all["variants"][name].clone()
}

/// The card a tiny fixture needs (its 16-channel heads, or head count, are no release's), and
/// the kind its preconditioning says.
fn card_for(name: &str) -> ModelCard {
    let v = variant(name);
    let kind = match v["preconditioning"].as_str().unwrap() {
        "consistency" => ModelKind::Consistency,
        _ => ModelKind::Denoiser,
    };
    let mut card = common::adm_fixture_card(name, kind, &[]);
    if v["num_head_channels"].as_i64().is_none_or(|c| c <= 0) {
        card.hyperparameters.clear();
        let heads = v["num_heads"].as_i64().unwrap();
        card.hyperparameters
            .insert("num_heads".to_string(), HyperValue::Int(heads));
    } else {
        let c = v["num_head_channels"].as_i64().unwrap();
        card.hyperparameters
            .insert("num_head_channels".to_string(), HyperValue::Int(c));
    }
    card
}

/// A copy of the fixture `file` in a fresh folder with `card` beside it (when given).
fn staged(file: &str, card: Option<&ModelCard>) -> PathBuf {
    let dir = common::temp_dir("checkpoints");
    let from = fixtures().join(file);
    let to = dir.join(file);
    common::copy_tree(&from, &to);
    if let Some(card) = card {
        std::fs::write(to.with_extension("ron"), card.to_ron().unwrap()).unwrap();
    }
    to
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.dims(), want.dims());
    let (a, b) = (values(got), values(want));
    let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-9
    } else {
        1e-4
    }
}

fn labels_of(r: &BTreeMap<String, Tensor>) -> Option<Vec<i64>> {
    r.get("labels").map(|l| l.to_vec1::<i64>().unwrap())
}

/// `f(x)` and `d<w, f(x)>/dx` for the reference's `x`.
fn value_and_vjp(x: &Tensor, w: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let var = Var::from_tensor(x).unwrap();
    let out = f(var.as_tensor());
    let grads = (&out * &w.to_dtype(out.dtype()).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let g = grads.get(var.as_tensor()).unwrap().clone();
    (out, g)
}

/// The network at `path` against the reference `ref_name`: raw output and VJP, then the
/// preconditioned function at every reference noise level and its VJP.
fn check_against_reference(path: &Path, ref_name: &str, kind: ModelKind, dtype: DType) {
    let r = reference(ref_name);
    let net = Network::load_as(path, Some(kind), dtype, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let labels = labels_of(&r);
    let net = match &labels {
        Some(l) => net.with_labels(l).unwrap(),
        None => net,
    };
    let tol = tolerance(dtype);
    let x = r["x"].to_dtype(dtype).unwrap();
    let times: Vec<f64> = r["timesteps"].to_vec1().unwrap();
    let adm = net.adm().expect("an ADM network");
    let label_tensor = labels.as_ref().map(|l| {
        Tensor::from_vec(
            l.iter().map(|&v| v as u32).collect::<Vec<_>>(),
            l.len(),
            &Device::Cpu,
        )
        .unwrap()
    });
    let (out, vjp) = value_and_vjp(&x, &r["raw_cotangent"], |x| {
        adm.forward(x, &times, label_tensor.as_ref()).unwrap()
    });
    let what = format!("{} as {ref_name} ({dtype:?})", path.display());
    let e = rel_err(&out, &r["raw_out"]);
    assert!(e < tol, "{what}: raw output relative error {e:e}");
    let e = rel_err(&vjp, &r["raw_vjp"]);
    assert!(e < tol, "{what}: raw VJP relative error {e:e}");

    let sigmas: Vec<f64> = r["sigmas"].to_vec1().unwrap();
    let coefficients: Vec<Vec<f64>> = r["pre_coefficients"].to_vec2().unwrap();
    for (k, &sigma) in sigmas.iter().enumerate() {
        let c = match kind {
            ModelKind::Consistency => net.preconditioning().consistency(sigma).unwrap(),
            _ => net.preconditioning().denoiser(sigma),
        };
        let got = [c.c_skip, c.c_out, c.c_in, c.c_noise];
        for (g, w) in got.iter().zip(&coefficients[k]) {
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                "{what}: coefficients {got:?} vs {:?} at sigma {sigma}",
                coefficients[k]
            );
        }
        let (out, vjp) = value_and_vjp(&x, &r[&format!("pre_cotangent_{k}")], |x| match kind {
            ModelKind::Consistency => net.consistency(x, sigma).unwrap(),
            _ => net.denoise(x, sigma).unwrap(),
        });
        let e = rel_err(&out, &r[&format!("pre_out_{k}")]);
        assert!(
            e < tol,
            "{what}: output at sigma {sigma}: relative error {e:e}"
        );
        let e = rel_err(&vjp, &r[&format!("pre_vjp_{k}")]);
        assert!(
            e < tol,
            "{what}: VJP at sigma {sigma}: relative error {e:e}"
        );
    }
}

fn kind_of(name: &str) -> ModelKind {
    card_for(name).kind
}

#[test]
fn every_variant_matches_the_pytorch_reference_in_f32_and_f64() {
    for name in ["cm_cond", "cm_uncond", "edm_cond", "adm", "adm_resample"] {
        let path = staged(&format!("{name}.safetensors"), Some(&card_for(name)));
        for dtype in [DType::F32, DType::F64] {
            check_against_reference(&path, name, kind_of(name), dtype);
        }
    }
}

#[test]
fn every_pytorch_layout_loads_the_same_network() {
    // Plain, nested under 'model', views into two flat storages saved under a 21-character
    // name (the zip reader bug case), and float16.
    for (file, reference) in [
        ("cm_cond.pt", "cm_cond"),
        ("cm_cond_nested.pt", "cm_cond"),
        ("abcdefghijklmnopqrstu.pt", "cm_cond"),
        ("cm_cond_half.pt", "cm_cond_half"),
    ] {
        let path = staged(file, Some(&card_for("cm_cond")));
        check_against_reference(&path, reference, ModelKind::Consistency, DType::F32);
    }
}

#[test]
fn diffusers_exports_load_without_a_card() {
    // The heads and the image size come from config.json; the kind from the declaration.
    for name in ["cm_cond", "cm_uncond"] {
        let folder = format!("diffusers_{name}");
        let path = staged(&folder, None);
        check_against_reference(&path, name, ModelKind::Consistency, DType::F32);
        let described = checkpoint::describe(&path, Some(ModelKind::Consistency)).unwrap();
        assert_eq!(described.card.image_shape, [3, 16, 16]);
        assert_eq!(described.card.architecture, "adm");
        assert!(matches!(
            described.precond,
            Preconditioning::Karras { noise_scale, .. } if noise_scale == 250.0
        ));
    }
}

#[test]
fn a_legacy_pytorch_file_says_how_to_resave_it() {
    let err = Network::load_as(
        &fixtures().join("legacy_format.pt"),
        Some(ModelKind::Denoiser),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("legacy_format.pt"), "{err}");
    assert!(err.contains("torch.save"), "{err}");
}

#[test]
fn without_a_card_the_heads_must_be_known() {
    // 32-channel attention blocks: 64-channel heads do not divide them.
    let path = staged("cm_cond.safetensors", None);
    let err = Network::load_as(
        &path,
        Some(ModelKind::Consistency),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Layout { .. }), "{err}");
    assert!(err.to_string().contains("num_head_channels"), "{err}");
}

#[test]
fn class_labels_are_required_checked_and_broadcast() {
    let path = staged("cm_cond.safetensors", Some(&card_for("cm_cond")));
    let net = Network::load_as(&path, None, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.num_classes(), Some(10));
    let x = reference("cm_cond")["x"].to_dtype(DType::F32).unwrap();
    let err = net.consistency(&x, 1.0).unwrap_err().to_string();
    assert!(err.contains("class-conditional"), "{err}");
    let err = net.with_labels(&[10]).unwrap_err().to_string();
    assert!(err.contains("class 10 is outside the 10 classes"), "{err}");
    // One label for the whole batch is the same as that label per image.
    let one = net.with_labels(&[3]).unwrap().consistency(&x, 1.0).unwrap();
    let each = net
        .with_labels(&[3, 3])
        .unwrap()
        .consistency(&x, 1.0)
        .unwrap();
    assert!(rel_err(&one, &each) < 1e-7);
    let other = net
        .with_labels(&[4, 4])
        .unwrap()
        .consistency(&x, 1.0)
        .unwrap();
    assert!(
        rel_err(&one, &other) > 1e-4,
        "the label must change the output"
    );
    let err = net
        .with_labels(&[1, 2, 3])
        .unwrap()
        .consistency(&x, 1.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 class labels for a batch of 2"), "{err}");
    let uncond = staged("cm_uncond.safetensors", Some(&card_for("cm_uncond")));
    let net = Network::load_as(&uncond, None, DType::F32, &Device::Cpu).unwrap();
    let err = net.with_labels(&[1]).unwrap_err().to_string();
    assert!(err.contains("not class-conditional"), "{err}");
}

#[test]
fn the_kind_must_fit_the_family() {
    // An ε-prediction ADM model is a denoiser: declaring it a consistency model is an error.
    let path = staged("adm.safetensors", Some(&card_for("adm")));
    let err = Network::load_as(
        &path,
        Some(ModelKind::Consistency),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Kind { .. }), "{err}");
    // A release's file name says what it is: `cd_*` and `ct_*` are consistency models,
    // `edm_*` denoisers (also inside a diffusers folder's name).
    assert_eq!(
        checkpoint::kind_from_file_name(Path::new("x/cd_imagenet64_lpips.pt")),
        Some(ModelKind::Consistency)
    );
    assert_eq!(
        checkpoint::kind_from_file_name(Path::new("models/diffusers-edm_imagenet64_ema")),
        Some(ModelKind::Denoiser)
    );
    assert_eq!(
        checkpoint::kind_from_file_name(Path::new("ffhq_10m.pt")),
        None
    );
}

/// The tiny fixtures with the cards a pipeline needs, in a fresh folder: a class-conditional
/// consistency model and EDM denoiser, an unconditional consistency model and a VP ε denoiser.
fn staged_models() -> PathBuf {
    let dir = common::temp_dir("checkpoints-pipelines");
    for (name, kind) in [
        ("cm_cond", ModelKind::Consistency),
        ("edm_cond", ModelKind::Denoiser),
        ("cm_uncond", ModelKind::Consistency),
        ("adm", ModelKind::Denoiser),
    ] {
        std::fs::copy(
            fixtures().join(format!("{name}.safetensors")),
            dir.join(format!("{name}.safetensors")),
        )
        .unwrap();
        let card = ModelCard {
            kind,
            ..card_for(name)
        };
        std::fs::write(dir.join(format!("{name}.ron")), card.to_ron().unwrap()).unwrap();
    }
    dir
}

fn mapga(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// Every photo pipeline runs end to end (fit the photo, measure, MAP-GA and three baselines,
/// captioned grid, metrics) on the tiny checkpoints at 16x16.
#[test]
fn photo_pipelines_run_on_tiny_checkpoints() {
    let models = staged_models();
    let m = |n: &str| format!("{}", models.join(n).display());
    for task in ["box", "half", "expand", "sr4x", "deblur"] {
        for (dataset, cm, d, class) in [
            ("imagenet64", "cm_cond", "edm_cond", Some("class=3")),
            ("lsun_cat256", "cm_uncond", "adm", None),
        ] {
            let pipeline = format!("pipelines/{dataset}_{task}.mapga");
            let out = models.join(format!("out-{dataset}-{task}"));
            let (cm, d) = (
                format!("cm_file={}", m(&format!("{cm}.safetensors"))),
                format!("edm_file={}", m(&format!("{d}.safetensors"))),
            );
            let out_arg = out.display().to_string();
            let mut args = vec![
                "run", &pipeline, "--out", &out_arg, "--set", &cm, "--set", &d, "--set", "size=16",
            ];
            if let Some(c) = class {
                args.extend(["--set", c]);
            }
            // Clean, warnings included, before running.
            let mut check = vec!["check", "--deny-warnings", &pipeline];
            check.extend(args[4..].iter().copied());
            let o = mapga(&check);
            assert!(
                o.status.success(),
                "{pipeline}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let o = mapga(&args);
            assert!(
                o.status.success(),
                "{pipeline}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let metrics = std::fs::read_to_string(out.join("metrics.json")).unwrap();
            let metrics: serde_json::Value = serde_json::from_str(&metrics).unwrap();
            for solver in ["MAP-GA", "DPS", "Pi-GDM", "DDRM"] {
                let psnr = &metrics[format!("PSNR {solver}")];
                assert!(
                    psnr.as_f64().is_some_and(f64::is_finite),
                    "{pipeline}: {metrics}"
                );
            }
            assert!(out.join("grid.png").is_file(), "{pipeline}");
        }
    }
}

/// Without the checkpoints, checking stops at once and says which file to get and where.
#[test]
fn photo_pipelines_without_checkpoints_name_the_files() {
    for pipeline in [
        "pipelines/imagenet64_box.mapga",
        "pipelines/lsun_cat256_deblur.mapga",
    ] {
        let o = mapga(&[
            "check",
            pipeline,
            "--set",
            "cm_file=no/cd_imagenet64_lpips.pt",
        ]);
        assert_eq!(o.status.code(), Some(1), "{pipeline}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("checkpoint not found"), "{err}");
        assert!(err.contains("cd_imagenet64_lpips.pt"), "{err}");
        assert!(err.contains("consistency_models"), "{err}");
        assert!(err.contains("download it"), "{err}");
    }
}

/// `class:` takes one label per image as a tensor: each image of the batch is the same as
/// with its label alone.
#[test]
fn a_batch_takes_one_label_per_image() {
    let dir = common::temp_dir("checkpoints-labels");
    common::copy_tree(
        &fixtures().join("diffusers_cm_cond"),
        &dir.join("diffusers_cm_cond"),
    );
    let pipeline = dir.join("labels.mapga");
    std::fs::write(
        &pipeline,
        r#"model both = consistency("diffusers_cm_cond", class: tensor([3.0, 7.0], shape(2)))
model three = consistency("diffusers_cm_cond", class: 3)
model seven = consistency("diffusers_cm_cond", class: 7)
let z = gaussian_like(batch_shape(both.shape, 2), seed: 1) * 20.0
let x = both(z, 20.0)
report norm(x[0] - three(z[0], 20.0)) / norm(x[0]) as "first",
    norm(x[1] - seven(z[1], 20.0)) / norm(x[1]) as "second",
    norm(x[1] - three(z[1], 20.0)) / norm(x[1]) as "other label"
"#,
    )
    .unwrap();
    let out = dir.join("out");
    let o = mapga(&[
        "run",
        &pipeline.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(metrics["first"].as_f64().unwrap() < 1e-5, "{metrics}");
    assert!(metrics["second"].as_f64().unwrap() < 1e-5, "{metrics}");
    assert!(metrics["other label"].as_f64().unwrap() > 1e-2, "{metrics}");
}
