//! `mapga run --threads N`: one thread runs a pipeline to the same numbers as the default; zero
//! threads, not a number, or more than 8 per core is a usage error (exit 2) that says what is
//! expected.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::temp_dir;

/// A few MAP-GA steps on an analytic prior: tensor work, but quick.
const PIPELINE: &str = r#"
use std.solvers.mapga

model prior = gaussian_prior(zeros(shape(1, 8, 8)), ones(shape(1, 8, 8)) * 0.3)
let x_true = gaussian_like(shape(1, 8, 8), seed: 5) * 0.5
let A = inpaint(center_box_mask(8, 8, fraction: 0.5))
let y = A(x_true)
let x = mapga(y, A, 0.0, prior, prior, karras(steps: 3), iters: 2)
report norm(x - x_true) as "error"
"#;

fn mapga(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(args)
        .current_dir(dir)
        .env_remove("RAYON_NUM_THREADS")
        .output()
        .expect("run mapga")
}

fn metrics(dir: &Path, out: &str) -> String {
    std::fs::read_to_string(dir.join(out).join("metrics.json")).expect("metrics.json")
}

#[test]
fn one_thread_runs_and_gives_the_default_numbers() {
    let dir = temp_dir("threads");
    std::fs::write(dir.join("p.mapga"), PIPELINE).unwrap();
    let one = mapga(
        &dir,
        &[
            "run",
            "--quiet",
            "--threads",
            "1",
            "--out",
            "one",
            "p.mapga",
        ],
    );
    assert!(
        one.status.success(),
        "--threads 1 failed:\n{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let default = mapga(&dir, &["run", "--quiet", "--out", "all", "p.mapga"]);
    assert!(
        default.status.success(),
        "{}",
        String::from_utf8_lossy(&default.stderr)
    );
    assert_eq!(metrics(&dir, "one"), metrics(&dir, "all"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn zero_threads_is_a_usage_error() {
    let dir = temp_dir("threads0");
    std::fs::write(dir.join("p.mapga"), PIPELINE).unwrap();
    for (arg, says) in [
        ("0", "the number of threads must be at least 1"),
        ("two", "`two` is not a number of threads"),
        // Asked once: 100,000 threads took the machine's load to 2,800.
        ("100000", "100000 threads is more than this machine can use"),
    ] {
        let out = mapga(&dir, &["run", "--threads", arg, "p.mapga"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--threads {arg}: {stderr}");
        assert!(
            stderr.contains("--threads") && stderr.contains(says),
            "--threads {arg}: {stderr}"
        );
        assert!(
            !dir.join("out").exists(),
            "--threads {arg} ran the pipeline"
        );
    }
    let help = mapga(&dir, &["run", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--threads <N>") && text.contains("all cores"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
