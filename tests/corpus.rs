//! The shipped corpus: every `.mapga` file under `stdlib/`, `pipelines/` and `examples/`
//! parses cleanly, checks without errors (pipelines also without warnings), is canonically
//! formatted, and the standard library embedded in the binary is the one on disk.
//!
//! Each test collects every failing file before asserting, so one run names them all.

use std::path::{Path, PathBuf};

use mapga::check::{check_file, CheckOptions};
use mapga::diagnostics::{render, RenderOptions};
use mapga::source::{FileId, Origin, SourceMap};
use mapga::syntax::format::format_source;
use mapga::syntax::parse;

const ROOTS: [&str; 3] = ["stdlib", "pipelines", "examples"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.mapga` file under `dir`, recursively, sorted.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|e| e == "mapga") {
            out.push(p);
        }
    }
}

/// Every shipped `.mapga` file, as (path relative to the crate root, absolute path).
fn corpus() -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    for r in ROOTS {
        walk(&root().join(r), &mut files);
    }
    assert!(
        files.len() >= 10,
        "expected the shipped corpus under {ROOTS:?}, found {} files",
        files.len()
    );
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(root())
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            (rel, p)
        })
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn report(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} file(s) {what}:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_file_parses_without_diagnostics() {
    let mut failures = Vec::new();
    for (rel, path) in corpus() {
        let text = read(&path);
        let parsed = parse(FileId(0), &text);
        if !parsed.diags.is_empty() {
            let mut sources = SourceMap::new();
            sources.add(rel.clone(), Origin::Path(path.clone()), text.as_str());
            failures.push(format!(
                "== {rel}: {} diagnostic(s)\n{}",
                parsed.diags.0.len(),
                render(&parsed.diags.0, &sources, RenderOptions::default())
            ));
        }
    }
    report("have syntax diagnostics", &failures);
}

/// Whether every diagnostic only says that a published checkpoint is not on this machine.
/// The photo pipelines (`imagenet64_*`, `lsun_cat256_*`) need the paper's released models,
/// which cannot ship (0.4-2 GB each); `tests/checkpoints.rs` checks and runs each of them
/// completely, without a warning, on tiny stand-ins.
fn only_missing_releases(diags: &mapga::diagnostics::Diags) -> bool {
    !diags.is_empty()
        && diags.0.iter().all(|d| {
            d.code == mapga::diagnostics::Code::MissingFile
                && d.message.starts_with("checkpoint not found")
                && d.help
                    .as_deref()
                    .is_some_and(|h| h.contains("published checkpoint"))
        })
}

#[test]
fn every_file_checks_without_errors() {
    let mut failures = Vec::new();
    for (rel, path) in corpus() {
        let checked = check_file(&path, &CheckOptions::default());
        if rel.starts_with("pipelines/") && only_missing_releases(&checked.diags) {
            continue;
        }
        let strict = rel.starts_with("pipelines/");
        let bad = if strict {
            !checked.diags.is_empty()
        } else {
            checked.diags.has_errors()
        };
        if bad {
            failures.push(format!(
                "== {rel}: {} error(s), {} warning(s){}\n{}",
                checked.diags.error_count(),
                checked.diags.warning_count(),
                if strict {
                    " (pipelines must have no warnings either)"
                } else {
                    ""
                },
                render(&checked.diags.0, &checked.sources, RenderOptions::default())
            ));
        }
    }
    report("do not check cleanly", &failures);
}

/// A unified-style listing of the first lines where `a` and `b` differ.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la
        .iter()
        .zip(&lb)
        .position(|(x, y)| x != y)
        .unwrap_or(la.len().min(lb.len()));
    let from = i.saturating_sub(2);
    let mut out = format!("first difference at line {}:\n", i + 1);
    for (n, l) in la.iter().enumerate().skip(from).take(6) {
        out.push_str(&format!("  file {:>4} | {l}\n", n + 1));
    }
    for (n, l) in lb.iter().enumerate().skip(from).take(6) {
        out.push_str(&format!("  fmt  {:>4} | {l}\n", n + 1));
    }
    if la.len() != lb.len() {
        out.push_str(&format!(
            "  ({} lines on disk, {} formatted)\n",
            la.len(),
            lb.len()
        ));
    }
    out
}

#[test]
fn every_file_is_canonically_formatted() {
    let mut failures = Vec::new();
    for (rel, path) in corpus() {
        let text = read(&path);
        match format_source(FileId(0), &text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => failures.push(format!(
                "== {rel}: not canonically formatted (run `mapga fmt {rel}`)\n{}",
                first_difference(&text, &formatted)
            )),
            Err(diags) => {
                let mut sources = SourceMap::new();
                sources.add(rel.clone(), Origin::Path(path.clone()), text.as_str());
                failures.push(format!(
                    "== {rel}: the formatter refused it\n{}",
                    render(&diags.0, &sources, RenderOptions::default())
                ));
            }
        }
    }
    report("are not canonically formatted", &failures);
}

#[test]
fn embedded_stdlib_matches_disk() {
    let std_dir = root().join("stdlib");
    let mut on_disk = Vec::new();
    walk(&std_dir, &mut on_disk);
    let mut failures = Vec::new();
    let mut disk_modules = Vec::new();
    for path in &on_disk {
        let rel = path.strip_prefix(&std_dir).expect("under stdlib/");
        let module = format!(
            "std.{}",
            rel.with_extension("")
                .to_string_lossy()
                .replace(['/', '\\'], ".")
        );
        disk_modules.push(module.clone());
        let text = read(path);
        match mapga::stdlib::FILES.iter().find(|(m, _)| *m == module) {
            None => failures.push(format!(
                "== {module} (stdlib/{}) is on disk but not embedded (rebuild?)",
                rel.display()
            )),
            Some((_, embedded)) if *embedded != text => failures.push(format!(
                "== {module}: the embedded text differs from stdlib/{} (rebuild?)\n{}",
                rel.display(),
                first_difference(&text, embedded)
            )),
            Some(_) => {}
        }
    }
    for (m, _) in mapga::stdlib::FILES {
        if !disk_modules.iter().any(|d| d == m) {
            failures.push(format!("== {m} is embedded but has no file on disk"));
        }
    }
    let mut sorted: Vec<&str> = mapga::stdlib::module_paths().collect();
    let listed = sorted.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted != listed {
        failures.push(format!(
            "== stdlib::module_paths() is not sorted and unique: {listed:?}"
        ));
    }
    report("differ between the binary and disk", &failures);
}
