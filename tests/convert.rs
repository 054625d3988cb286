//! `mapga convert` and `mapga inspect`, through the built binary, on the ADM fixtures
//! (`tests/fixtures/adm/`, copied into a temporary folder) and the shipped MNIST models: the
//! converted safetensors file and card load as the same network, the card's hash is the
//! file's, and the usage errors exit 2 and unusable checkpoints 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};
use mapga::models::card::{self, HyperValue, ModelCard, ModelKind};
use mapga::models::Network;
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adm")
}

/// `mapga ARGS...`.
fn mapga(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(args)
        .output()
        .expect("the mapga binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `mapga convert IN OUT EXTRA...`, which must succeed; returns what it printed.
fn convert_ok(input: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args: Vec<&Path> = vec![Path::new("convert"), input, out];
    args.extend(extra.iter().map(Path::new));
    let o = mapga(&args);
    assert!(
        o.status.success(),
        "convert {} failed ({:?}):\n{}",
        input.display(),
        o.status.code(),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn fixture_card(name: &str, kind: ModelKind, hp: &[(&str, HyperValue)]) -> ModelCard {
    common::adm_fixture_card(name, kind, hp)
}

fn copy(from: &Path, to: &Path) {
    common::copy_tree(from, to)
}

/// A copy of `from` in the fresh folder `dir` with `card` beside it (when given).
fn staged(dir: &Path, from: &Path, card: Option<&ModelCard>) -> PathBuf {
    let to = dir.join(from.file_name().unwrap());
    copy(from, &to);
    if let Some(card) = card {
        std::fs::write(to.with_extension("ron"), card.to_ron().unwrap()).unwrap();
    }
    to
}

/// A seeded batch of two images of `shape`.
fn input(shape: [usize; 3]) -> Tensor {
    let mut g = mapga::random::generator(7, "convert test", 0);
    mapga::random::normal_tensor(
        &mut g,
        &[2, shape[0], shape[1], shape[2]],
        DType::F32,
        &Device::Cpu,
    )
    .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn load(path: &Path, kind: ModelKind) -> Network {
    Network::load_as(path, Some(kind), DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The card beside the converted file, checked: it parses, has no tensor list, is named
/// after the file, notes the conversion from `from`, and its hash is the file's.
fn converted_card(out: &Path, from: &str) -> ModelCard {
    let card = card::load_card(&out.with_extension("ron")).unwrap();
    let bytes = std::fs::read(out).unwrap();
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(card.weights_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(card.tensors, None);
    assert_eq!(card.name, out.file_stem().unwrap().to_str().unwrap());
    let provenance = card.provenance.clone().unwrap_or_default();
    assert!(
        provenance.ends_with(&format!("converted by mapga convert from {from}")),
        "{provenance}"
    );
    card
}

#[test]
fn a_pytorch_checkpoint_converts_to_the_same_network() {
    let dir = common::temp_dir("convert-pt");
    let card = fixture_card("cm_cond", ModelKind::Consistency, &[]);
    let input_path = staged(&dir, &fixtures().join("cm_cond.pt"), Some(&card));
    let out = dir.join("converted/cm_cond.safetensors");
    let summary = convert_ok(&input_path, &out, &[]);
    assert!(summary.contains("PyTorch checkpoint"), "{summary}");
    assert!(summary.contains("355235 parameters"), "{summary}");
    let bytes = std::fs::metadata(&out).unwrap().len();
    assert!(summary.contains(&format!("{bytes} bytes")), "{summary}");

    let card = converted_card(&out, "cm_cond.pt");
    assert_eq!(card.kind, ModelKind::Consistency);
    assert_eq!(card.architecture, "adm");
    assert_eq!(card.hyperparameters["num_classes"], HyperValue::Int(10));
    let header = mapga::io::headers::safetensors_header(&out).unwrap();
    assert_eq!(header.len(), 143);
    assert!(header.values().all(|t| t.dtype == "F32"));

    let x = input([3, 16, 16]);
    let run = |path: &Path| {
        load(path, ModelKind::Consistency)
            .with_labels(&[3])
            .unwrap()
            .consistency(&x, 0.7)
            .unwrap()
    };
    assert_eq!(bits(&run(&input_path)), bits(&run(&out)));
}

#[test]
fn a_diffusers_folder_converts_without_a_card() {
    let dir = common::temp_dir("convert-diffusers");
    let folder = staged(&dir, &fixtures().join("diffusers_cm_uncond"), None);
    let out = dir.join("cm_uncond.safetensors");
    convert_ok(&folder, &out, &["--kind", "consistency"]);
    let card = converted_card(&out, "diffusers_cm_uncond");
    assert_eq!(card.architecture, "adm");
    assert_eq!(card.image_shape, [3, 16, 16]);
    assert_eq!(card.kind, ModelKind::Consistency);
    // Official names: diffusers' are mapped back, q, k and v into one `qkv`.
    let header = mapga::io::headers::safetensors_header(&out).unwrap();
    assert_eq!(header.len(), 142);
    assert!(header.contains_key("input_blocks.0.0.weight"), "{header:?}");
    assert!(header.keys().all(|k| !k.contains("to_q")));

    let x = input([3, 16, 16]);
    let run = |path: &Path| {
        load(path, ModelKind::Consistency)
            .consistency(&x, 2.0)
            .unwrap()
    };
    assert_eq!(bits(&run(&folder)), bits(&run(&out)));
}

#[test]
fn a_legacy_qkv_vp_model_converts_with_its_schedule() {
    // guided-diffusion layout: legacy qkv order, 1-D attention convs, VP ε-prediction, here on
    // a schedule other than the default (which the card must keep).
    let dir = common::temp_dir("convert-adm");
    let card = fixture_card(
        "adm",
        ModelKind::Denoiser,
        &[("beta_end", HyperValue::Float(0.012))],
    );
    let input_path = staged(&dir, &fixtures().join("adm.safetensors"), Some(&card));
    let out = dir.join("adm_converted.safetensors");
    convert_ok(&input_path, &out, &[]);
    let card = converted_card(&out, "adm.safetensors");
    let hp = &card.hyperparameters;
    assert_eq!(hp["qkv_order"], HyperValue::Text("legacy".into()));
    assert_eq!(hp["attention_1d"], HyperValue::Bool(true));
    assert_eq!(hp["preconditioning"], HyperValue::Text("vp_epsilon".into()));
    assert_eq!(hp["beta_end"], HyperValue::Float(0.012));
    // The stored tensors are the input's, bit for bit.
    let read = |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (a, b) = (read(&input_path), read(&out));
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(bits(t), bits(&b[name]), "{name}");
        assert_eq!(t.dims(), b[name].dims(), "{name}");
    }

    let x = input([3, 16, 16]);
    let run = |path: &Path| load(path, ModelKind::Denoiser).denoise(&x, 0.5).unwrap();
    let want = run(&input_path);
    assert_eq!(bits(&want), bits(&run(&out)));

    // In float16: half the size, the same network up to rounding.
    let half = dir.join("adm_f16.safetensors");
    let summary = convert_ok(&input_path, &half, &["--dtype", "f16"]);
    assert!(summary.contains("as f16"), "{summary}");
    let header = mapga::io::headers::safetensors_header(&half).unwrap();
    assert!(header.values().all(|t| t.dtype == "F16"));
    let got = run(&half);
    let diff = (&got - &want).unwrap().sqr().unwrap().sum_all().unwrap();
    let norm = want.sqr().unwrap().sum_all().unwrap();
    let rel = (diff.to_scalar::<f32>().unwrap() / norm.to_scalar::<f32>().unwrap()).sqrt();
    assert!(rel < 1e-2 && rel > 0.0, "relative error {rel}");
}

#[test]
fn mapgas_own_unet_converts_as_a_copy() {
    let dir = common::temp_dir("convert-unet");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/mnist");
    let input_path = staged(&dir, &models.join("denoiser.safetensors"), None);
    copy(
        &models.join("denoiser.ron"),
        &input_path.with_extension("ron"),
    );
    let out = dir.join("edm.safetensors");
    let summary = convert_ok(&input_path, &out, &["--kind", "denoiser"]);
    assert!(summary.contains("`unet`"), "{summary}");
    let card = converted_card(&out, "denoiser.safetensors");
    let original = card::load_card(&input_path.with_extension("ron")).unwrap();
    assert_eq!(card.hyperparameters, original.hyperparameters);
    assert_eq!(card.kind, original.kind);
    let x = input([1, 28, 28]);
    let run = |path: &Path| load(path, ModelKind::Denoiser).denoise(&x, 1.3).unwrap();
    assert_eq!(bits(&run(&input_path)), bits(&run(&out)));
    // Declared as something else, it is refused.
    let o = mapga(&[
        Path::new("convert"),
        &input_path,
        &dir.join("cm.safetensors"),
        Path::new("--kind"),
        Path::new("consistency"),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("not a consistency model"));
}

#[test]
fn usage_errors_exit_2_and_unusable_checkpoints_1() {
    let dir = common::temp_dir("convert-errors");
    let card = fixture_card("cm_cond", ModelKind::Consistency, &[]);
    let input_path = staged(&dir, &fixtures().join("cm_cond.safetensors"), Some(&card));
    let out = dir.join("out.safetensors");
    let convert = |to: &Path, extra: &[&str]| {
        let mut args: Vec<&Path> = vec![Path::new("convert"), &input_path, to];
        args.extend(extra.iter().map(Path::new));
        mapga(&args)
    };

    // An existing OUT is kept unless --force.
    std::fs::write(&out, b"keep me").unwrap();
    let o = convert(&out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--force"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    assert!(!out.with_extension("ron").exists());
    let o = convert(&out, &["--force"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    converted_card(&out, "cm_cond.safetensors");
    // Also when only its card is in the way.
    std::fs::remove_file(&out).unwrap();
    let o = convert(&out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(!out.exists());
    // `x.pt` -> `x.safetensors` would replace IN's own card `x.ron`: that too needs --force.
    let sub = dir.join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let pt = staged(&sub, &fixtures().join("cm_cond.pt"), Some(&card));
    let o = mapga(&[Path::new("convert"), &pt, &sub.join("cm_cond.safetensors")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("the card of"),
        "{}",
        text(&o.stderr)
    );

    // OUT must be a .safetensors file, and not IN (even with --force).
    let o = convert(&dir.join("out.pt"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains(".safetensors"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dir.join("out.pt").exists());
    let o = convert(&input_path, &["--force"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("is the input"),
        "{}",
        text(&o.stderr)
    );
    // A missing IN is an I/O error.
    let o = mapga(&[
        Path::new("convert"),
        &dir.join("nothing.pt"),
        &dir.join("n.safetensors"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));

    // A checkpoint mapga cannot use: exit 1, the file named, and how to fix it.
    let legacy = staged(&dir, &fixtures().join("legacy_format.pt"), None);
    let o = mapga(&[Path::new("convert"), &legacy, &dir.join("l.safetensors")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("legacy_format.pt") && err.contains("torch.save"),
        "{err}"
    );
    assert!(!dir.join("l.safetensors").exists());
    // Without a card, the 16-channel heads cannot be told.
    let bare_dir = dir.join("bare");
    std::fs::create_dir_all(&bare_dir).unwrap();
    let bare = staged(&bare_dir, &fixtures().join("cm_cond.pt"), None);
    let o = mapga(&[Path::new("convert"), &bare, &dir.join("b.safetensors")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("num_head_channels"));
}

#[test]
fn inspect_prints_the_inferred_card() {
    let dir = common::temp_dir("inspect");
    let folder = staged(&dir, &fixtures().join("diffusers_cm_uncond"), None);
    let o = mapga(&[
        Path::new("inspect"),
        &folder,
        Path::new("--kind"),
        Path::new("consistency"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for line in [
        "format: diffusers folder",
        "tensors: 142",
        "parameters: 312675",
        "architecture: \"adm\"",
        "image_shape: (3, 16, 16)",
        "kind: Consistency",
        "card: inferred",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    assert!(!out.contains("classes:"), "{out}");
    // The card part is what convert writes, less name, conversion note and hash.
    let ron = &out[out.find("ModelCard(").unwrap()..];
    let inferred = card::parse_card(ron, Path::new("inspect.ron")).unwrap();
    let converted = dir.join("c.safetensors");
    convert_ok(&folder, &converted, &["--kind", "consistency"]);
    let written = card::load_card(&converted.with_extension("ron")).unwrap();
    assert_eq!(inferred.hyperparameters, written.hyperparameters);
    assert_eq!(inferred.weights_sha256, None);

    // A class-conditional checkpoint with a card beside it.
    let card = fixture_card("cm_cond", ModelKind::Consistency, &[]);
    let pt = staged(&dir, &fixtures().join("cm_cond.pt"), Some(&card));
    let o = mapga(&[Path::new("inspect"), &pt]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for line in [
        "format: PyTorch checkpoint",
        "classes: 10",
        "parameters: 355235",
        "tensors: 143",
        "completed from the tensors",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    // Unusable: exit 1.
    let legacy = staged(&dir, &fixtures().join("legacy_format.pt"), None);
    let o = mapga(&[Path::new("inspect"), &legacy]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
}
