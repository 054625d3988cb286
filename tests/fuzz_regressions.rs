//! The fuzzer's findings and kept corpus, run as a test (see `fuzz/check.rs`).
//!
//! Every `.mapga` file under `tests/fuzz/regressions/` (inputs that once panicked, hung or
//! broke the formatter, each fixed since) and `tests/fuzz/corpus/` (inputs the fuzzer kept
//! because they reached something new) goes through what the fuzzer does to an input: parse,
//! format (when that succeeds, the output must format again to itself), check (relative paths
//! resolve against the folder named by the file's `// fuzz-base:` line, relative to the
//! crate, or the file's own folder; with the command line's permissions when its
//! `// fuzz-found:` line says `(restricted)`, and with the `--set` overrides of its
//! `// fuzz-set: NAME=VALUE` lines) and the rendering of the diagnostics, plain and
//! graphical. Nothing may panic, and no file may take more than [`LIMIT`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use mapga::check::{check_source, CheckOptions};
use mapga::diagnostics::{render, render_plain, RenderOptions};
use mapga::io::permissions::Permissions;
use mapga::source::FileId;
use mapga::syntax::format::format_source;
use mapga::syntax::parse;

/// The longest one file may take (the fuzzer's limit is 2 s in a release build; this is a
/// debug build, on a machine that may be busy).
const LIMIT: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "mapga"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// What went wrong with one file, if anything.
fn run(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let base = text
        .lines()
        .take(4)
        .find_map(|l| l.strip_prefix("// fuzz-base: "))
        .map(|b| root().join(b.trim()))
        .or_else(|| path.parent().map(Path::to_path_buf))
        .unwrap_or_else(root);
    // Found with the command line's permissions (`// fuzz-found: ... (restricted): ...`).
    let restricted = text
        .lines()
        .take(4)
        .any(|l| l.starts_with("// fuzz-found: ") && l.contains(" (restricted): "));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _ = parse(FileId(0), &text);
        if let Ok(formatted) = format_source(FileId(0), &text) {
            match format_source(FileId(0), &formatted) {
                Ok(again) if again == formatted => {}
                Ok(_) => return Err("formatting twice changes the text".to_string()),
                Err(d) => {
                    return Err(format!(
                        "the formatter's output does not parse: {:?}",
                        d.0.first().map(|d| &d.message)
                    ))
                }
            }
        }
        let mut opts = CheckOptions::default();
        let sets = text
            .lines()
            .take_while(|l| l.starts_with("// fuzz-"))
            .filter_map(|l| l.strip_prefix("// fuzz-set: "))
            .filter_map(|kv| kv.split_once('='));
        for (k, v) in sets {
            opts.overrides.insert(k.to_string(), v.to_string());
        }
        if restricted {
            let out = root().join("target/fuzz/out");
            opts.permissions = Permissions::for_pipeline(&base.join(&name), &out, &opts.overrides);
        }
        let checked = check_source(&name, &text, &base, &opts);
        let _ = render(&checked.diags.0, &checked.sources, RenderOptions::default());
        let _ = render_plain(&checked.diags.0, &checked.sources);
        Ok(())
    }));
    match outcome {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

#[test]
fn fuzz_findings_and_corpus_run_cleanly() {
    let regressions = files(&root().join("tests/fuzz/regressions"));
    let corpus = files(&root().join("tests/fuzz/corpus"));
    assert!(!regressions.is_empty(), "no regression inputs found");
    assert!(!corpus.is_empty(), "no corpus inputs found");
    let mut failures = Vec::new();
    for path in regressions.iter().chain(&corpus) {
        let (tx, rx) = mpsc::channel();
        let p = path.clone();
        // A thread per file, so that one that never ends fails the test instead of hanging it.
        std::thread::spawn(move || {
            let _ = tx.send(run(&p));
        });
        match rx.recv_timeout(LIMIT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{}: {e}", path.display())),
            Err(_) => failures.push(format!(
                "{}: took more than {} s",
                path.display(),
                LIMIT.as_secs()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} files failed:\n{}",
        failures.len(),
        regressions.len() + corpus.len(),
        failures.join("\n")
    );
}
