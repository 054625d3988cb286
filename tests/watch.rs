//! `mapga watch` driven through real file writes in a temporary folder: the built binary runs
//! as a child process, and every step waits for the watcher's own `[watch]` status lines
//! (with a generous timeout for slow CI machines), never for a fixed time.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long any one expected line may take (a debug build on two busy cores).
const TIMEOUT: Duration = Duration::from_secs(120);

/// A running `mapga watch` and the lines it printed so far.
struct Watcher {
    child: Child,
    lines: Receiver<String>,
    log: Vec<String>,
}

impl Watcher {
    /// Starts `mapga watch pipeline.mapga --out out` in `dir`.
    fn start(dir: &Path, extra: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mapga"))
            .current_dir(dir)
            .args(["watch", "pipeline.mapga", "--out", "out", "--threads", "1"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mapga watch");
        let (tx, rx) = mpsc::channel();
        for (stream, tag) in [
            (
                Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
                "",
            ),
            (Box::new(child.stderr.take().expect("stderr")), "stderr: "),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(format!("{tag}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        Watcher {
            child,
            lines: rx,
            log: Vec::new(),
        }
    }

    /// Waits for a line for which `want` holds and returns it, with the lines before it
    /// (since the last wait).
    fn expect(&mut self, what: &str, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if want(&line) {
                        return (line, before);
                    }
                    before.push(line);
                }
                Err(_) => panic!(
                    "no line {what} within {TIMEOUT:?}; the watcher printed:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Waits for a line for which `want` holds, unless one came since line `since` of the log
    /// (standard error and standard output are read apart, so their order is not kept).
    fn seen_since(&mut self, since: usize, what: &str, want: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.log[since.min(self.log.len())..]
            .iter()
            .find(|l| want(l))
        {
            return l.clone();
        }
        self.expect(what, want).0
    }

    /// Waits for the status line that starts with `[watch] {prefix}`.
    fn status(&mut self, prefix: &str) -> (String, Vec<String>) {
        let full = format!("[watch] {prefix}");
        self.expect(&format!("starting `{full}`"), |l| l.starts_with(&full))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh folder with the data files the test pipelines read.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mapga-watch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist");
    for (from, to) in [
        ("prior/mean.npy", "mean.npy"),
        ("prior/var.npy", "var.npy"),
        ("test/3.png", "digit.png"),
    ] {
        std::fs::copy(data.join(from), dir.join(to)).expect("copy data");
    }
    dir
}

/// MAP-GA with the Gaussian prior on one digit, with its exact answer: cheap, and with parts
/// that do not depend on the solver's step size.
fn pipeline(lr: &str, iters: u32) -> String {
    format!(
        r#"use std.solvers.mapga

param sigma_y = 0.05
param iters = {iters}
param lr = {lr}

model prior = gaussian_prior(load_npy("mean.npy"), load_npy("var.npy"))
let x_true = image("digit.png")
let A = inpaint(box_mask(28, 28, top: 9, left: 8, height: 10, width: 12))
let y = A(x_true) + gaussian_noise(sigma_y, seed: 1)
let ts = schedule([1.0, 0.002])
let x_hat = mapga(y, A, sigma_y, prior, prior, ts, iters: iters, optimizer: momentum(lr: lr, beta: 0.9), seed: 0)
let x_exact = exact_map_eps(prior, A, y, sigma_y)

save x_hat to "x_hat.npy"
save x_exact to "x_exact.npy"
report psnr(x_hat, x_true) as "PSNR", psnr(x_exact, x_true) as "PSNR exact"
"#
    )
}

/// The 1-based line of the pipeline that contains `text`.
fn line_of(source: &str, text: &str) -> usize {
    source
        .lines()
        .position(|l| l.contains(text))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{text}` is not in the pipeline"))
}

/// The number before `what` in a status line: `12` in `... 12 from cache ...`.
fn number_before(line: &str, what: &str) -> usize {
    let head = &line[..line
        .find(what)
        .unwrap_or_else(|| panic!("`{what}` not in `{line}`"))];
    head.split_whitespace()
        .last()
        .and_then(|w| w.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before `{what}` in `{line}`"))
}

/// Saves like vim does: the original renamed to a backup, the new text written under the
/// original name, the backup deleted.
fn save_like_vim(path: &Path, text: &str) {
    let backup = path.with_extension("mapga~");
    std::fs::rename(path, &backup).expect("rename to backup");
    std::fs::write(path, text).expect("write new");
    std::fs::remove_file(&backup).expect("remove backup");
}

/// Saves like VS Code and JetBrains do: a temporary file renamed over the original.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_extension("mapga.tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

#[test]
fn the_authoring_loop() {
    let dir = folder("loop");
    let file = dir.join("pipeline.mapga");
    let first = pipeline("0.01", 30);
    std::fs::write(&file, &first).expect("write pipeline");
    let mut w = Watcher::start(&dir, &[]);

    // A valid pipeline: checked, run, outputs written.
    w.status("check ok");
    let (watching, _) = w.status("watching");
    assert_eq!(watching, "[watch] watching 4 files", "{}", w.log.join("\n"));
    let (ok, _) = w.status("run 1 ok");
    assert!(ok.contains(" 0 from cache (saved 0.00 s;"), "{ok}");
    assert!(ok.contains("models: 0 cached, 1 loaded"), "{ok}");
    let x_hat = dir.join("out/x_hat.npy");
    let written = std::fs::read(&x_hat).expect("x_hat.npy written");
    assert!(dir.join("out/metrics.json").is_file());

    // A syntax error: a diagnostic, the outputs stay, the watcher goes on.
    let mark = w.log.len();
    std::fs::write(&file, first.replace("let ts =", "let ts = = ")).expect("write");
    let (failed, _) = w.status("check failed");
    assert!(failed.contains("1 error"), "{failed}");
    assert!(failed.contains("outputs unchanged"), "{failed}");
    w.seen_since(mark, "with the diagnostic", |l| {
        l.starts_with("stderr: ") && l.contains("mapga::parse")
    });
    assert_eq!(std::fs::read(&x_hat).expect("x_hat.npy kept"), written);

    // Fixed: checked and run again; nothing changed, so everything comes from the cache.
    std::fs::write(&file, &first).expect("write");
    w.status("check ok");
    let (ok, _) = w.status("run 2 ok");
    assert!(ok.contains(" 0 nodes recomputed"), "{ok}");
    assert!(ok.contains("models: 1 cached, 0 loaded"), "{ok}");

    // A param change: only the solver call and what uses its result run again.
    let second = pipeline("0.02", 30);
    std::fs::write(&file, &second).expect("write");
    w.status("check ok");
    let (ok, _) = w.status("run 3 ok");
    assert!(number_before(&ok, "from cache") >= 5, "{ok}");
    assert!(ok.contains("models: 1 cached, 0 loaded"), "{ok}");
    let (recomputed, _) = w.status("recomputed:");
    let at = |text: &str| format!("pipeline.mapga:{} ", line_of(&second, text));
    let listed = format!("{recomputed} ");
    assert!(listed.contains(&at("let x_hat")), "{recomputed}");
    for unchanged in ["model prior", "let x_true", "let A", "let y", "let x_exact"] {
        assert!(
            !listed.contains(&at(unchanged)),
            "`{unchanged}` ran again: {recomputed}"
        );
    }
    assert_ne!(std::fs::read(&x_hat).expect("x_hat.npy"), written);

    // Editors that rename over the original: exactly one check and one run per save.
    for (save, lr, run) in [
        (save_like_vim as fn(&Path, &str), "0.015", 4),
        (save_by_rename, "0.012", 5),
    ] {
        save(&file, &pipeline(lr, 30));
        let (_, before) = w.status(&format!("run {run} ok"));
        let checks = before
            .iter()
            .filter(|l| l.starts_with("[watch] check"))
            .count();
        assert_eq!(checks, 1, "one save, {checks} checks: {before:?}");
    }
    // A save with the same content does nothing; the next real change is run 6.
    std::fs::write(&file, pipeline("0.012", 30)).expect("write");
    let (_, before) = w.status("unchanged");
    assert!(
        !before.iter().any(|l| l.starts_with("[watch] check")),
        "{before:?}"
    );
    std::fs::write(&file, pipeline("0.018", 30)).expect("write");
    w.status("run 6 ok");

    // A data file changes: the nodes that read it run again, the model stays loaded.
    let digit = std::fs::read(dir.join("digit.png")).expect("read digit");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist/test/7.png"),
        dir.join("digit.png"),
    )
    .expect("copy another digit");
    let (ok, _) = w.status("run 7 ok");
    assert!(ok.contains("models: 1 cached, 0 loaded"), "{ok}");
    let (recomputed, _) = w.status("recomputed:");
    let source = pipeline("0.018", 30);
    assert!(
        format!("{recomputed} ").contains(&format!(
            "pipeline.mapga:{} ",
            line_of(&source, "let x_true")
        )),
        "{recomputed}"
    );
    assert_ne!(digit, std::fs::read(dir.join("digit.png")).expect("read"));

    // A deleted input: a diagnostic, and the watcher goes on; restored, it runs again.
    std::fs::remove_file(dir.join("mean.npy")).expect("delete");
    w.status("check failed");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist/prior/mean.npy"),
        dir.join("mean.npy"),
    )
    .expect("restore");
    w.status("run 8 ok");
    drop(w);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_save_during_a_long_run_cancels_it() {
    let dir = folder("cancel");
    let file = dir.join("pipeline.mapga");
    std::fs::write(&file, pipeline("0.01", 1_000_000)).expect("write pipeline");
    let mut w = Watcher::start(&dir, &[]);
    w.status("run 1 started");
    std::fs::write(&file, pipeline("0.01", 20)).expect("write");
    let (_, before) = w.status("run 1 cancelled (newer save)");
    assert!(
        !before.iter().any(|l| l.starts_with("[watch] run 1 ok")),
        "{before:?}"
    );
    let (_, before) = w.status("run 2 ok");
    assert!(
        !before.iter().any(|l| l.starts_with("[watch] run 1 ")),
        "{before:?}"
    );
    assert!(dir.join("out/x_hat.npy").is_file());
    assert!(dir.join("out/run.ron").is_file());
    drop(w);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_imported_module_is_watched() {
    let dir = folder("import");
    let helpers = dir.join("helpers.mapga");
    let module = "pub fn brighten(x: Tensor) -> Tensor {\n    0.5 * x + 0.5\n}\n";
    std::fs::write(&helpers, module).expect("write module");
    let source = r#"use "./helpers.mapga"

let x = image("digit.png")
let y = brighten(x)
let z = x * 2.0
save y to "y.npy"
report mean(y) as "mean y", mean(z) as "mean z"
"#;
    std::fs::write(dir.join("pipeline.mapga"), source).expect("write pipeline");
    let mut w = Watcher::start(&dir, &[]);
    let (watching, _) = w.status("watching");
    assert_eq!(watching, "[watch] watching 3 files");
    w.status("run 1 ok");
    save_by_rename(&helpers, &module.replace("+ 0.5", "+ 0.25"));
    let (ok, _) = w.status("run 2 ok");
    assert!(number_before(&ok, "from cache") >= 2, "{ok}");
    let (recomputed, _) = w.status("recomputed:");
    let listed = format!("{recomputed} ");
    let at = |text: &str| format!("pipeline.mapga:{} ", line_of(source, text));
    assert!(listed.contains(&at("let y")), "{recomputed}");
    assert!(!listed.contains(&at("let x")), "{recomputed}");
    assert!(!listed.contains(&at("let z")), "{recomputed}");
    drop(w);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn watch_help_does_not_offer_sweep_which_watch_refuses() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_mapga"))
        .args(["watch", "--help"])
        .output()
        .expect("run mapga");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && text.contains("--debounce"),
        "{text}"
    );
    assert!(!text.contains("--sweep <NAME"), "{text}");
}

#[test]
fn a_pipeline_that_loads_what_it_saves_runs_once_per_edit() {
    // It used to rerun forever (72 runs in 6 s): each run's save was an edit of an input.
    let dir = folder("feedback");
    std::fs::create_dir_all(dir.join("out")).expect("out folder");
    std::fs::copy(dir.join("mean.npy"), dir.join("out/x.npy")).expect("seed x.npy");
    let file = dir.join("pipeline.mapga");
    let source = "let x = load_npy(\"out/x.npy\")\nsave x + 1.0 to \"x.npy\"\n";
    std::fs::write(&file, source).expect("write pipeline");
    let mut w = Watcher::start(&dir, &[]);
    w.status("run 1 ok");
    // A window for a rerun to start, were the save taken for an edit (the debounce is 200 ms).
    std::thread::sleep(Duration::from_millis(1500));
    while let Ok(line) = w.lines.try_recv() {
        w.log.push(line);
    }
    let runs = w.log.iter().filter(|l| l.contains(" started")).count();
    assert_eq!(runs, 1, "{}", w.log.join("\n"));
    // A real edit still reruns it.
    save_by_rename(&file, &format!("{source}// edited\n"));
    w.status("run 2 ok");
}
