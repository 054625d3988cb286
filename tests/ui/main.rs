//! UI tests: the rendered diagnostics of every case in `tests/ui/cases/`, as insta snapshots.
//!
//! Each `cases/<phase>/<name>.mapga` is checked with [`check_file`]; all its diagnostics are
//! rendered the way `mapga check` prints them (no colour, 80 columns) under a first line
//! `errors: N, warnings: M`. Files whose name starts with `_` are helper modules that cases
//! import, not cases. See `tests/ui/README.md` for the header lines and how to review.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mapga::check::{check_file, CheckOptions};
use mapga::diagnostics::{render, Diag, RenderOptions};
use mapga::source::SourceMap;

/// What replaces the absolute path of the repository in snapshots.
const ROOT: &str = "[ROOT]";

/// The header lines of a case: its description and its `--set` overrides.
struct Header {
    case: String,
    overrides: BTreeMap<String, String>,
}

/// Reads the leading `//` comment lines of a case. Only bytes are read, so a case that is
/// deliberately not UTF-8 still has a header.
fn header(path: &Path) -> Header {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = String::from_utf8_lossy(&bytes);
    let mut case = None;
    let mut overrides = BTreeMap::new();
    for line in text.lines() {
        let Some(comment) = line.trim().strip_prefix("//") else {
            break;
        };
        let comment = comment.trim();
        if let Some(what) = comment.strip_prefix("case:") {
            case = Some(what.trim().to_string());
        } else if let Some(set) = comment.strip_prefix("set:") {
            let (name, value) = set
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: `// set:` needs `name=value`", path.display()));
            overrides.insert(name.trim().to_string(), value.trim().to_string());
        }
    }
    Header {
        case: case.unwrap_or_else(|| {
            panic!(
                "{}: a case starts with `// case: <what it shows>`",
                path.display()
            )
        }),
        overrides,
    }
}

/// Replaces every spelling of the repository's absolute path with [`ROOT`].
struct Roots(Vec<String>);

impl Roots {
    fn new() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut spellings = vec![root.display().to_string()];
        if let Ok(canon) = root.canonicalize() {
            spellings.push(canon.display().to_string());
        }
        // Longest first, so a canonical path that extends the written one is replaced whole.
        spellings.sort_by_key(|s| std::cmp::Reverse(s.len()));
        spellings.dedup();
        Roots(spellings)
    }

    fn strip(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |t, root| t.replace(root.as_str(), ROOT))
    }

    /// The diagnostic with the root replaced in every text, before rendering, so line
    /// wrapping does not depend on where the repository is.
    fn strip_diag(&self, d: &Diag) -> Diag {
        let mut d = d.clone();
        d.message = self.strip(&d.message);
        for l in &mut d.labels {
            l.text = self.strip(&l.text);
        }
        d.help = d.help.as_deref().map(|h| self.strip(h));
        for n in &mut d.notes {
            *n = self.strip(n);
        }
        d
    }

    /// The same files under root-free names (same order, so the same file ids).
    fn strip_sources(&self, sources: &SourceMap) -> SourceMap {
        let mut out = SourceMap::new();
        for (_, f) in sources.files() {
            out.add(self.strip(&f.name), f.origin.clone(), f.text.clone());
        }
        out
    }
}

/// Checks one case and renders what a user would see.
fn run_case(path: &Path, roots: &Roots) -> (Header, String) {
    let header = header(path);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Check the file by its path relative to the repository, as a user would name it on the
    // command line (integration tests run in the package root).
    let shown = path.strip_prefix(root).unwrap_or(path);
    // As `mapga check` checks it: under the command line's permissions, writing to
    // `out/<case name>`.
    let stem = shown.file_stem().unwrap_or_default();
    let out = Path::new("out").join(stem);
    let opts = CheckOptions {
        permissions: mapga::io::permissions::Permissions::for_pipeline(
            shown,
            &out,
            &header.overrides,
        ),
        overrides: header.overrides.clone(),
    };
    let checked = check_file(shown, &opts);
    let diags: Vec<Diag> = checked
        .diags
        .0
        .iter()
        .map(|d| roots.strip_diag(d))
        .collect();
    let sources = roots.strip_sources(&checked.sources);
    let rendered = render(
        &diags,
        &sources,
        RenderOptions {
            color: false,
            width: 80,
        },
    );
    let text = format!(
        "errors: {}, warnings: {}\n\n{}",
        checked.diags.error_count(),
        checked.diags.warning_count(),
        roots.strip(&rendered)
    );
    (header, text)
}

#[test]
fn ui() {
    let roots = Roots::new();
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        // `[!_]`: files starting with `_` are modules imported by cases, not cases.
        insta::glob!("cases/**/[!_]*.mapga", |path| {
            let (header, text) = run_case(path, &roots);
            assert!(
                !text.contains("internal error") && !text.contains("panicked"),
                "{}: the checker failed internally:\n{text}",
                path.display()
            );
            insta::with_settings!({ description => header.case.clone() }, {
                insta::assert_snapshot!(text);
            });
        });
    });
}
