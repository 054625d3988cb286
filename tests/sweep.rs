//! `mapga run --sweep`: one output folder per point of the cartesian product, the summary
//! table, reuse of finished points, and clear errors for bad sweeps. Runs the `mapga` binary
//! on `examples/02_gaussian_images.mapga` (a Gaussian prior: each point takes well under a
//! second at these sizes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PIPELINE: &str = "examples/02_gaussian_images.mapga";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `mapga run PIPELINE --out OUT ARGS...` in the repository root.
fn sweep(out: &Path, args: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut all = vec!["run", PIPELINE, "--quiet", "--out", out.as_str()];
    all.extend_from_slice(args);
    Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(&all)
        .current_dir(root())
        .output()
        .expect("the mapga binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_sweep_runs_every_point_into_its_folder_and_prints_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let args = [
        "--sweep",
        "lr=0.01,0.02",
        "--sweep",
        "iters=10,20",
        "--set",
        "seed=3",
    ];
    let o = sweep(&out, &args);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", text(&o.stderr));
    assert!(stdout.contains("4 points checked"), "{stdout}");
    // The first axis changes slowest.
    let order: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| l.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        order,
        [
            "[1/4] lr=0.01 iters=10",
            "[2/4] lr=0.01 iters=20",
            "[3/4] lr=0.02 iters=10",
            "[4/4] lr=0.02 iters=20"
        ]
    );
    for point in [
        "lr=0.01,iters=10",
        "lr=0.01,iters=20",
        "lr=0.02,iters=10",
        "lr=0.02,iters=20",
    ] {
        let dir = out.join("cells").join(point);
        for f in ["metrics.json", "run.ron", "cell.json"] {
            assert!(dir.join(f).is_file(), "{} has no {f}", dir.display());
        }
        let ron = std::fs::read_to_string(dir.join("run.ron")).unwrap();
        let lr = point.split(',').next().unwrap().trim_start_matches("lr=");
        assert!(ron.contains(lr), "{point}: run.ron does not record lr {lr}");
    }
    // The summary is printed and written, one row per point; the CSV has the points too.
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.starts_with(
            "# Sweep of `02_gaussian_images.mapga` over lr in [0.01, 0.02], iters in [10, 20]"
        ),
        "{summary}"
    );
    let rows = summary.lines().filter(|l| l.starts_with("| 0.0")).count();
    assert_eq!(rows, 4, "{summary}");
    assert!(stdout.contains(&summary), "the table is printed:\n{stdout}");
    assert!(out.join("results.csv").is_file());

    // More iterations restore better at both step sizes: the points really differ.
    let rel = |point: &str| -> f64 {
        let m =
            std::fs::read_to_string(out.join("cells").join(point).join("metrics.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        v["rel_err_vs_exact"].as_f64().expect("a number")
    };
    assert!(rel("lr=0.01,iters=20") < rel("lr=0.01,iters=10"));
    assert!(rel("lr=0.02,iters=20") < rel("lr=0.02,iters=10"));

    // Again, with one more value: the four finished points are reused.
    let args = [
        "--sweep",
        "lr=0.01,0.02",
        "--sweep",
        "iters=10,20,30",
        "--set",
        "seed=3",
    ];
    let o = sweep(&out, &args);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", text(&o.stderr));
    assert!(
        stdout.contains("6 cells: 2 run, 4 reused, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn bad_sweeps_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let cases: [(&[&str], i32, &str); 5] = [
        (
            &["--sweep", "lrr=0.1,0.2"],
            1,
            "has no param `lrr`; did you mean `lr`?",
        ),
        (
            &["--sweep", "lr=0.1", "--set", "lr=0.2"],
            2,
            "given by both `--set` and `--sweep`",
        ),
        (
            &["--sweep", "lr=0.1", "--sweep", "lr=0.2"],
            2,
            "is given twice",
        ),
        (&["--sweep", "lr=0.1,,0.2"], 2, "an empty value"),
        (
            &["--sweep", "iters=10,many"],
            1,
            "note: in cell iters=\"many\"",
        ),
    ];
    for (args, code, message) in cases {
        let o = sweep(&out, args);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    assert!(!out.exists(), "a sweep with errors runs nothing");
}

#[test]
fn points_share_unchanged_nodes_and_still_count_their_network_evaluations() {
    // `k` only scales a report: the second point serves the denoiser call from the cache, and
    // its cell still records the one evaluation the pipeline costs.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("scaled.mapga");
    std::fs::write(
        &file,
        "param k = 1.0\n\
         model prior = gaussian_prior(zeros(shape(1, 4, 4)), ones(shape(1, 4, 4)))\n\
         let x = prior(gaussian_like(shape(1, 4, 4), seed: 1), 0.5)\n\
         report mean(x) * k as \"scaled\"\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(["run", "--quiet", "--sweep", "k=1,2", "--out"])
        .arg(&out)
        .arg(&file)
        .output()
        .expect("the mapga binary runs");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let cell = |k: &str| -> serde_json::Value {
        let path = out.join("cells").join(format!("k={k}")).join("cell.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (one, two) = (cell("1"), cell("2"));
    assert_eq!(one["network_evaluations"], two["network_evaluations"]);
    assert_eq!(one["network_evaluations"]["per_item"], 1.0, "{one}");
    let scaled = |c: &serde_json::Value| c["reports"]["scaled"].as_f64().unwrap();
    assert!((scaled(&two) - 2.0 * scaled(&one)).abs() < 1e-6 * scaled(&one).abs().max(1e-6));
}
