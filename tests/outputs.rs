//! Output folders never mix runs (issue #20): a failed run keeps the last good results and is
//! recorded apart; two runs on one folder are refused; SIGINT and SIGTERM stop a run cleanly
//! with the conventional exit code; leftovers of dead processes are removed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::temp_dir;

const BIN: &str = env!("CARGO_BIN_EXE_mapga");

/// A pipeline that saves two arrays and a report; `lr` large makes its descent diverge after
/// the first save, `steps` large makes it run for minutes.
const PIPELINE: &str = r#"
param lr = 0.1
param steps = 20

let a = ones(shape(2, 3))
save a to "first.npy"

fn settle(start: Tensor) -> Tensor {
    var x = start
    descend x with sgd(lr: lr) for steps steps {
        minimize sum(x^4)
    }
    x
}

save settle(a) to "second.npy"
report sum(settle(a)) as "total"
"#;

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["run", "-q", "--out"])
        .arg(dir.join("out"))
        .args(args)
        .arg(dir.join("p.mapga"))
        .output()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn setup(name: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("p.mapga"), PIPELINE).unwrap();
    dir
}

#[test]
fn a_failed_run_keeps_the_last_good_results_and_is_recorded_apart() {
    let dir = setup("outputs-failed");
    let good = run(&dir, &[]);
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let out = dir.join("out");
    let second = std::fs::read(out.join("second.npy")).unwrap();
    let manifest = std::fs::read_to_string(out.join("run.ron")).unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.json")).unwrap();
    // Diverges after saving first.npy: used to rewrite metrics.json to {} and run.ron with the
    // failed params beside the previous run's second.npy.
    let bad = run(&dir, &["--set", "lr=1e6"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("failed-run"), "{stderr}");
    assert_eq!(std::fs::read(out.join("second.npy")).unwrap(), second);
    assert_eq!(
        std::fs::read_to_string(out.join("run.ron")).unwrap(),
        manifest
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.json")).unwrap(),
        metrics
    );
    let failed = out.join("failed-run");
    let note = std::fs::read_to_string(failed.join("FAILED.txt")).unwrap();
    assert!(
        note.contains("the variable became NaN") || note.contains("objective became"),
        "{note}"
    );
    assert!(failed.join("first.npy").is_file());
    assert!(std::fs::read_to_string(failed.join("run.ron"))
        .unwrap()
        .contains("failed"));
    // No staging folder or temporary file is left; the next good run removes the failure.
    assert_eq!(
        names(&out),
        [
            ".mapga.lock",
            "failed-run",
            "first.npy",
            "metrics.json",
            "run.ron",
            "second.npy"
        ]
    );
    assert_eq!(run(&dir, &[]).status.code(), Some(0));
    assert!(!failed.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts a run that takes minutes and waits until it holds the folder.
fn start_long_run(dir: &Path) -> Child {
    let child = Command::new(BIN)
        .args([
            "run",
            "-q",
            "--set",
            "steps=100000000",
            "--set",
            "lr=0.0001",
            "--out",
        ])
        .arg(dir.join("out"))
        .arg(dir.join("p.mapga"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = dir.join("out/.mapga.lock");
    let start = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {}", child.id())))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run never took the folder"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The staging folder exists once the lock is written; give the run time to start.
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_second_run_on_a_busy_folder_is_refused_naming_the_first() {
    let dir = setup("outputs-busy");
    let mut first = start_long_run(&dir);
    let second = run(&dir, &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in use by another mapga"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", first.id())), "{stderr}");
    signal(&first, "TERM");
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(143), "SIGTERM exits with 128 + 15");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ctrl_c_stops_the_run_cleanly_with_exit_code_130() {
    let dir = setup("outputs-sigint");
    assert_eq!(run(&dir, &[]).status.code(), Some(0));
    let out = dir.join("out");
    let manifest = std::fs::read_to_string(out.join("run.ron")).unwrap();
    let first = start_long_run(&dir);
    signal(&first, "INT");
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    // The last good results are untouched; the interrupted run's early output is kept apart;
    // nothing temporary is left.
    assert_eq!(
        std::fs::read_to_string(out.join("run.ron")).unwrap(),
        manifest
    );
    let note = std::fs::read_to_string(out.join("failed-run/FAILED.txt")).unwrap();
    assert!(note.contains("interrupted by SIGINT"), "{note}");
    assert!(out.join("failed-run/first.npy").is_file());
    assert_eq!(
        names(&out),
        [
            ".mapga.lock",
            "failed-run",
            "first.npy",
            "metrics.json",
            "run.ron",
            "second.npy"
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn leftovers_of_a_killed_run_are_removed_by_the_next() {
    let dir = setup("outputs-leftovers");
    let out = dir.join("out");
    let mut first = start_long_run(&dir);
    // SIGKILL cannot be caught: the staging folder stays behind.
    signal(&first, "KILL");
    let _ = first.wait();
    assert!(names(&out).iter().any(|n| n.starts_with(".mapga-staging-")));
    std::fs::write(out.join(".big.npy.999999999.0.tmp"), vec![0u8; 1000]).unwrap();
    assert_eq!(run(&dir, &[]).status.code(), Some(0));
    assert_eq!(
        names(&out),
        [
            ".mapga.lock",
            "first.npy",
            "metrics.json",
            "run.ron",
            "second.npy"
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_interrupted_evaluation_exits_130_and_resumes_with_the_unfinished_cells() {
    let dir = temp_dir("outputs-eval-sigint");
    let suite = dir.join("suite.mapga");
    std::fs::write(
        &suite,
        PIPELINE.replace(
            "param steps = 20",
            "param steps = 20\ngrid steps in [100000000, 20]",
        ),
    )
    .unwrap();
    let out = dir.join("out");
    let child = Command::new(BIN)
        .args(["eval", "--out"])
        .arg(&out)
        .arg(&suite)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first cell runs for minutes: wait until it started (its folder exists).
    let start = Instant::now();
    while !out.join("cells").is_dir() || std::fs::read_dir(out.join("cells")).unwrap().count() == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the cell never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "INT");
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    // Neither cell finished, and the interrupted one is not recorded as failed.
    assert!(stdout.contains("0 run, 0 reused, 0 failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}
