//! Safe to run a file someone sent you (issue #20): the command line's permissions, end to end.
//! A pipeline reads only under its folder, its project, its imports' folders and files named
//! on the command line, and writes only under its output folder; `--allow-read` and
//! `--allow-write` widen that.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use common::temp_dir;

fn mapga(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapga"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `dir/sent/p.mapga` (the pipeline) and `dir/elsewhere/data.npy` (a file outside its folder).
fn layout(name: &str, pipeline: &str) -> std::path::PathBuf {
    let dir = temp_dir(name);
    std::fs::create_dir_all(dir.join("sent")).unwrap();
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], (3,), &Device::Cpu).unwrap();
    common::write_npy(&dir.join("elsewhere/data.npy"), &t);
    std::fs::write(dir.join("sent/p.mapga"), pipeline).unwrap();
    dir
}

#[test]
fn reads_outside_the_pipelines_folders_need_a_flag() {
    let dir = layout(
        "perm-read",
        "param data = \"../elsewhere/data.npy\"\nreport sum(load_npy(data)) as \"sum\"\n",
    );
    let out = dir.join("out").display().to_string();
    let denied = mapga(&dir, &["run", "-q", "--out", &out, "sent/p.mapga"]);
    assert_eq!(denied.status.code(), Some(1));
    let e = stderr(&denied);
    assert!(e.contains("mapga::io::permission"), "{e}");
    assert!(e.contains("elsewhere/data.npy` is not allowed"), "{e}");
    assert!(e.contains("--allow-read"), "{e}");
    // `check` says the same, before anything runs.
    assert_eq!(
        mapga(&dir, &["check", "sent/p.mapga"]).status.code(),
        Some(1)
    );
    // Allowed by a flag naming the folder, or by naming the file in `--set`.
    let elsewhere = dir.join("elsewhere").display().to_string();
    for extra in [
        vec!["--allow-read", elsewhere.as_str()],
        vec!["--set", "data=../elsewhere/data.npy"],
    ] {
        let mut args = vec!["run", "-q", "--out", &out];
        args.extend(extra.iter().copied());
        args.push("sent/p.mapga");
        let ok = mapga(&dir, &args);
        assert_eq!(ok.status.code(), Some(0), "{extra:?}: {}", stderr(&ok));
        assert!(String::from_utf8_lossy(&ok.stdout).contains("sum  6"));
    }
    // A project marker above the pipeline makes the whole project readable.
    std::fs::write(dir.join(".mapga-project"), "").unwrap();
    let ok = mapga(&dir, &["run", "-q", "--out", &out, "sent/p.mapga"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn writes_outside_the_output_folder_need_a_flag_even_when_computed() {
    // A save path computed while running is checked when it is met.
    let dir = layout(
        "perm-write",
        "let x = ones(shape(2))\nlet name = if sum(x) > 0.0 { \"../escaped.npy\" } else { \"x.npy\" }\nsave x to name\n",
    );
    let out = dir.join("out").display().to_string();
    let denied = mapga(&dir, &["run", "-q", "--out", &out, "sent/p.mapga"]);
    assert_eq!(denied.status.code(), Some(1), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("mapga::io::permission"),
        "{}",
        stderr(&denied)
    );
    assert!(!dir.join("escaped.npy").exists(), "the file was written");
    let allowed = mapga(
        &dir,
        &[
            "run",
            "-q",
            "--out",
            &out,
            "--allow-write",
            &dir.display().to_string(),
            "sent/p.mapga",
        ],
    );
    assert_eq!(allowed.status.code(), Some(0), "{}", stderr(&allowed));
    assert!(dir.join("escaped.npy").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_empty_batch_is_an_error_and_non_finite_reports_are_null_in_metrics() {
    let dir = layout(
        "perm-empty",
        "let v = load_npy(\"v.npy\")\nreport v as \"per item\"\n",
    );
    let empty = Tensor::from_vec(Vec::<f32>::new(), (0,), &Device::Cpu).unwrap();
    common::write_npy(&dir.join("sent/v.npy"), &empty);
    let out = dir.join("out").display().to_string();
    let o = mapga(&dir, &["run", "-q", "--out", &out, "sent/p.mapga"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "an empty batch reported NaN with exit 0"
    );
    assert!(stderr(&o).contains("the batch is empty"), "{}", stderr(&o));
    // NaN and infinities are null in metrics.json (standard JSON), not strings.
    std::fs::write(
        dir.join("sent/p.mapga"),
        "let z = zeros(shape(1))\nreport sum(z) / sum(z) as \"nan\"\n",
    )
    .unwrap();
    let o = mapga(&dir, &["run", "-q", "--out", &out, "sent/p.mapga"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.join("out/metrics.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    assert_eq!(v["nan"], serde_json::Value::Null, "{metrics}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_that_is_no_pipeline_is_never_read_or_quoted() {
    let dir = temp_dir("perm-not-pipeline");
    std::fs::write(
        dir.join("credentials"),
        "[default]\naws_secret_access_key = abc123\n",
    )
    .unwrap();
    let o = mapga(&dir, &["check", "credentials"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("not a `.mapga` file"), "{e}");
    assert!(!e.contains("abc123") && !e.contains("default"), "{e}");
    // A device without end is refused before any read (it used to read forever).
    let o = mapga(&dir, &["check", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_image_pixel_limit_is_configurable() {
    let dir = temp_dir("perm-pixels");
    let digit = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist/test/7.png");
    std::fs::copy(digit, dir.join("7.png")).unwrap();
    std::fs::write(
        dir.join("p.mapga"),
        "report sum(image(\"7.png\")) as \"s\"\n",
    )
    .unwrap();
    let default = mapga(&dir, &["check", "p.mapga"]);
    assert_eq!(default.status.code(), Some(0), "{}", stderr(&default));
    let limited = Command::new(env!("CARGO_BIN_EXE_mapga"))
        .current_dir(&dir)
        .env("MAPGA_MAX_IMAGE_PIXELS", "500")
        .args(["check", "p.mapga"])
        .output()
        .unwrap();
    assert_eq!(limited.status.code(), Some(1));
    let e = stderr(&limited);
    assert!(
        e.contains("28x28 pixels") && e.contains("MAPGA_MAX_IMAGE_PIXELS"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
