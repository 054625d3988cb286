//! `mapga eval`: cells, tables, figure, shards and merging, resuming after a kill, failed
//! cells, per-item reports, and checking every cell. Runs the `mapga` binary on the example
//! suite `examples/07_evaluate.mapga` (a Gaussian prior: each cell takes well under a second).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SUITE: &str = "examples/07_evaluate.mapga";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `mapga ARGS` in the repository root. `check` and `eval` may read the repository: the suites
/// these tests write into temporary folders read its data by absolute path, which a user
/// allows the same way.
fn mapga(args: &[&str]) -> Output {
    let repo = root().display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    if matches!(args.first(), Some(&"check" | &"eval")) && !args.contains(&"--merge") {
        all.splice(1..1, ["--allow-read", repo.as_str()]);
    }
    Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(all)
        .current_dir(root())
        .output()
        .expect("the mapga binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `mapga eval SUITE --out OUT EXTRA...` and returns (exit code, stdout).
fn eval(out: &Path, extra: &[&str]) -> (i32, String) {
    let out = out.display().to_string();
    let mut args = vec!["eval", SUITE, "--out", out.as_str()];
    args.extend_from_slice(extra);
    let o = mapga(&args);
    let stdout = text(&o.stdout);
    assert!(
        o.status.code().is_some(),
        "mapga eval was killed: {}",
        text(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), stdout)
}

/// The CSV without its `seconds per item` column (timings differ between runs).
fn without_timings(csv: &str) -> Vec<String> {
    let head: Vec<&str> = csv.lines().next().unwrap_or("").split(',').collect();
    let drop = head.iter().position(|h| *h == "seconds per item");
    csv.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| Some(*i) != drop)
                .map(|(_, f)| f)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

const CELLS: [&str; 4] = [
    "solver=mapga,task=box25",
    "solver=mapga,task=sr2x",
    "solver=ddrm,task=box25",
    "solver=ddrm,task=sr2x",
];

#[test]
fn every_cell_runs_and_the_tables_and_figure_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout) = eval(dir.path(), &[]);
    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("[1/4] solver=mapga task=box25: done in "),
        "{stdout}"
    );
    assert!(
        lines[3].starts_with("[4/4] solver=ddrm task=sr2x: done in "),
        "{stdout}"
    );
    for id in CELLS {
        assert!(
            dir.path()
                .join("cells")
                .join(id)
                .join("cell.json")
                .is_file(),
            "{id}"
        );
    }
    // results.csv: one row per digit (4) and cell (4).
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "solver,task,item,PSNR,SSIM,data consistency,seconds per item,evaluations per item,backward passes per item"
    );
    assert_eq!(rows.len(), 1 + 4 * 4, "{csv}");
    assert!(rows[1].starts_with("mapga,box25,0,"), "{csv}");
    assert!(rows[16].starts_with("ddrm,sr2x,3,"), "{csv}");
    // MAP-GA: 10 levels x 5 steps x (consistency + prior) + 10 final estimates, and a backward
    // pass through the consistency model per step; DDRM: 11 forward passes, no backward pass.
    assert!(rows[1].ends_with(",110,50"), "{csv}");
    assert!(rows[16].ends_with(",11,0"), "{csv}");
    // summary.md: one row per cell, per-item reports as mean ± standard error.
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("| solver | task | PSNR | SSIM | data consistency | seconds / item | evaluations / item | backward / item |"), "{md}");
    let table_rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(table_rows.len(), 1 + 4, "{md}");
    assert!(
        table_rows[1].starts_with("| mapga | box25 | ") && table_rows[1].contains(" ± "),
        "{md}"
    );
    assert!(
        table_rows[4].starts_with("| ddrm | sr2x | ") && table_rows[4].ends_with(" | 11 | 0 |"),
        "{md}"
    );
    // figure.png: 2 solvers (rows) x 2 tasks (columns) of 3 digits, with labels.
    let figure = mapga::io::read_image(
        &dir.path().join("figure.png"),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let (_, h, w) = figure.dims3().unwrap();
    assert!(h > 2 * 28 && w > 2 * 3 * 28, "{h} x {w}");

    // Run again: every cell is reused, the tables are the same.
    let (code, again) = eval(dir.path(), &[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again.matches(": reused").count(), 4, "{again}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("results.csv")).unwrap(),
        csv
    );
    // A changed setting (here the number of levels) is a different program: every cell reruns.
    let (code, changed) = eval(dir.path(), &["--set", "steps=4"]);
    assert_eq!(code, 0, "{changed}");
    assert_eq!(changed.matches(": done in").count(), 4, "{changed}");
}

#[test]
fn two_shards_merged_give_the_table_of_one_run() {
    let (one, a, b, merged) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    assert_eq!(eval(one.path(), &[]).0, 0);
    let (code, first) = eval(a.path(), &["--shard", "1/2"]);
    assert_eq!(code, 0, "{first}");
    assert!(first.contains("shard 1/2 runs 2 of them"), "{first}");
    assert!(
        first.contains("solver=mapga task=box25: done")
            && first.contains("solver=ddrm task=box25: done"),
        "{first}"
    );
    let (code, second) = eval(b.path(), &["--shard", "2/2"]);
    assert_eq!(code, 0, "{second}");
    assert!(second.contains("solver=mapga task=sr2x: done"), "{second}");
    let m = mapga(&[
        "eval",
        "--merge",
        &merged.path().display().to_string(),
        &a.path().display().to_string(),
        &b.path().display().to_string(),
    ]);
    assert_eq!(m.status.code(), Some(0), "{}", text(&m.stderr));
    assert!(
        text(&m.stdout).contains("4 cells copied"),
        "{}",
        text(&m.stdout)
    );
    let read = |d: &Path| std::fs::read_to_string(d.join("results.csv")).unwrap();
    assert_eq!(
        without_timings(&read(merged.path())),
        without_timings(&read(one.path()))
    );
    assert!(merged.path().join("figure.png").is_file());
    assert!(std::fs::read_to_string(merged.path().join("summary.md"))
        .unwrap()
        .contains("4 cells (0 failed)"));
    // A shard's own tables hold the cells it made.
    assert_eq!(read(a.path()).lines().count(), 1 + 2 * 4);
}

#[test]
fn bad_shards_are_usage_errors() {
    for bad in ["3/2", "0/2", "two"] {
        let o = mapga(&["eval", SUITE, "--shard", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o.stderr));
    }
    let o = mapga(&["eval", SUITE, "--threads", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let o = mapga(&["eval", "--merge", "only_one_folder"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// Lines of the child's stdout, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn a_killed_evaluation_resumes_without_recomputing_finished_cells() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().display().to_string();
    // 300 levels make each MAP-GA cell take seconds: the kill lands inside the second cell.
    let args = ["eval", SUITE, "--out", out.as_str(), "--set", "steps=300"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.starts_with('[') && line.contains(": done in");
                seen.push(line);
                if done {
                    break;
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!("no `done` line ({e:?}); saw {seen:?}");
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What was finished when it was killed, byte for byte and with its time stamp.
    let record = |id: &str| dir.path().join("cells").join(id).join("cell.json");
    let before: Vec<(&str, Vec<u8>, std::time::SystemTime)> = CELLS
        .iter()
        .filter(|id| record(id).is_file())
        .map(|id| {
            let p = record(id);
            (
                *id,
                std::fs::read(&p).unwrap(),
                std::fs::metadata(&p).unwrap().modified().unwrap(),
            )
        })
        .collect();
    assert!(
        !before.is_empty() && before.len() < 4,
        "finished before the kill: {:?}",
        before.iter().map(|b| b.0).collect::<Vec<_>>()
    );
    assert_eq!(before[0].0, CELLS[0]);
    // The second cell was interrupted: its folder may exist, but it is not finished.
    let o = mapga(&args);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", text(&o.stderr));
    for (k, id) in CELLS.iter().enumerate() {
        let label = id.replace(',', " ");
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("[{}/4] {label}: ", k + 1)))
            .unwrap_or_else(|| panic!("no line for {id}: {stdout}"));
        match before.iter().find(|b| b.0 == *id) {
            Some((_, bytes, time)) => {
                assert!(line.ends_with(": reused"), "{line}");
                assert_eq!(&std::fs::read(record(id)).unwrap(), bytes, "{id}");
                assert_eq!(
                    &std::fs::metadata(record(id)).unwrap().modified().unwrap(),
                    time,
                    "{id}"
                );
            }
            None => assert!(line.contains(": done in "), "{line}"),
        }
    }
    let csv = std::fs::read_to_string(dir.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 4, "{csv}");
}

/// A suite in `dir` whose second cell diverges: plain gradient ascent with a huge step.
fn diverging_suite(dir: &Path) -> PathBuf {
    let data = root().join("data/mnist");
    let text = format!(
        r#"use std.solvers.mapga

param lr = 0.000001

grid lr in [0.000001, 1000000.0]

model prior = gaussian_prior(load_npy("{d}/prior/mean.npy"), load_npy("{d}/prior/var.npy"))

let x_true = load_npy("{d}/test/digits.npy")[:3] / 127.5 - 1.0
let A = inpaint(center_box_mask(28, 28, fraction: 0.25))
let y = A(x_true)
let x_hat = mapga(y, A, 0.0, prior, prior, schedule([1.0, 0.002]), iters: 10, optimizer: sgd(lr: lr))

report psnr(x_hat, x_true) as "PSNR"
"#,
        d = data.display()
    );
    let path = dir.join("diverging.mapga");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_failing_cell_is_recorded_and_the_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = diverging_suite(dir.path());
    let out = dir.path().join("out");
    let o = mapga(&[
        "eval",
        &suite.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}{}", text(&o.stderr));
    assert!(stdout.contains("[1/2] lr=0.000001: done in"), "{stdout}");
    assert!(stdout.contains("[2/2] lr=1000000: failed: "), "{stdout}");
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("cells/lr=1000000/cell.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "failed");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("NaN") || error.contains("inf"), "{error}");
    assert!(
        record["location"].as_str().unwrap().contains(":"),
        "{record}"
    );
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains(&format!("| 1000000 | failed: {error} |")),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3, "{csv}");
    // A failed cell is retried on the next run; the finished one is reused.
    let again = text(
        &mapga(&[
            "eval",
            &suite.display().to_string(),
            "--out",
            &out.display().to_string(),
        ])
        .stdout,
    );
    assert!(again.contains("[1/2] lr=0.000001: reused"), "{again}");
    assert!(again.contains("[2/2] lr=1000000: failed: "), "{again}");
}

#[test]
fn per_item_reports_print_mean_and_error_and_store_lists() {
    let dir = tempfile::tempdir().unwrap();
    let o = mapga(&[
        "run",
        SUITE,
        "-q",
        "--out",
        &dir.path().display().to_string(),
    ]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", text(&o.stderr));
    let psnr = stdout.lines().find(|l| l.starts_with("PSNR")).unwrap();
    assert!(psnr.contains(" ± ") && psnr.ends_with("(n = 4)"), "{psnr}");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(
        metrics["PSNR"].as_array().map(Vec::len),
        Some(4),
        "{metrics}"
    );
    assert!(metrics["PSNR"][0].as_f64().unwrap() > 5.0);
    // run.ron counts network evaluations: 110 per digit for this MAP-GA.
    let ron = std::fs::read_to_string(dir.path().join("run.ron")).unwrap();
    assert!(ron.contains("network_evaluations"), "{ron}");
    assert!(ron.contains("per_item: 110.0"), "{ron}");
}

/// A suite where one cell is wrong: DDRM given a motion blur, which has no known SVD.
fn suite_with_a_bad_cell(dir: &Path) -> PathBuf {
    let data = root().join("data/mnist");
    let text = format!(
        r#"use std.solvers.ddrm
use std.solvers.mapga

param solver = "mapga"
param task = "box25"

grid solver in ["mapga", "ddrm"], task in ["box25", "blur"]

model prior = gaussian_prior(load_npy("{d}/prior/mean.npy"), load_npy("{d}/prior/var.npy"))

let x = image("{d}/test/7.png")
let A = if task == "blur" {{ motion_blur(size: 5) }} else {{ inpaint(center_box_mask(28, 28)) }}
let ts = karras(steps: 5)
let x_hat = if solver == "ddrm" {{ ddrm(A(x), A, 0.05, prior, ts) }} else {{ mapga(A(x), A, 0.05, prior, prior, ts) }}

report psnr(x_hat, x)
"#,
        d = data.display()
    );
    let path = dir.join("bad_cell.mapga");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_and_eval_check_every_cell_and_name_the_one_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let suite = suite_with_a_bad_cell(dir.path()).display().to_string();
    // The defaults are fine on their own; `mapga run` runs them.
    let o = mapga(&["check", &suite]);
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("mapga::type::capability").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(r#"in cell solver="ddrm", task="blur""#),
        "{stderr}"
    );
    assert!(stderr.contains("1 error, 0 warnings"), "{stderr}");
    // `--set` narrows the grid: without the bad cell, the suite checks.
    let o = mapga(&["check", &suite, "--set", "task=box25"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // eval refuses to run anything.
    let out = dir.path().join("out").display().to_string();
    let o = mapga(&["eval", &suite, "--out", &out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("1 error: not running"),
        "{}",
        text(&o.stderr)
    );
    assert!(!dir.path().join("out").exists());
}
