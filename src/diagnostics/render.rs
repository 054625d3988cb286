//! Rendering diagnostics with miette against the source they point into.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use super::{Diag, Severity};
use crate::source::SourceMap;

/// How to render.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Use ANSI colours.
    pub color: bool,
    /// Wrap width in columns.
    pub width: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            color: false,
            width: 100,
        }
    }
}

/// A diagnostic bound to the text of the file its labels point into, for miette.
struct Bound {
    diag: Diag,
    source: NamedSource<Arc<str>>,
    /// Labels in other files, rendered as related diagnostics.
    related: Vec<Bound>,
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound").field("diag", &self.diag).finish()
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
    }
}

impl std::error::Error for Bound {}

impl miette::Diagnostic for Bound {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diag.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        // miette has one "help" slot: the help line first, then the notes.
        let text = match (&self.diag.help, self.diag.notes.as_slice()) {
            (None, []) => return None,
            (None, [only]) => only.clone(),
            (help, notes) => {
                let mut parts: Vec<String> = help.iter().cloned().collect();
                parts.extend(notes.iter().map(|n| format!("note: {n}")));
                parts.join("\n")
            }
        };
        Some(Box::new(text))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.diag.labels.iter().enumerate().map(
            |(i, l)| {
                let text = if l.text.is_empty() {
                    None
                } else {
                    Some(l.text.clone())
                };
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, l.span)
                } else {
                    LabeledSpan::new_with_span(text, l.span)
                }
            },
        )))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.related.is_empty() {
            None
        } else {
            Some(Box::new(
                self.related.iter().map(|b| b as &dyn miette::Diagnostic),
            ))
        }
    }
}

/// Splits a diagnostic whose labels point into several files into one per file.
fn bind(diag: &Diag, sources: &SourceMap) -> Bound {
    let file = diag.span().file;
    let (here, elsewhere): (Vec<_>, Vec<_>) = diag
        .labels
        .iter()
        .cloned()
        .partition(|l| l.span.file == file);
    let src = sources.get(file);
    let related = elsewhere
        .into_iter()
        .map(|l| {
            let other = sources.get(l.span.file);
            Bound {
                diag: Diag {
                    code: diag.code,
                    severity: diag.severity,
                    message: format!("{} (in {})", l.text, other.name),
                    labels: vec![l],
                    help: None,
                    notes: Vec::new(),
                },
                source: NamedSource::new(other.name.clone(), other.text.clone()),
                related: Vec::new(),
            }
        })
        .collect();
    Bound {
        diag: Diag {
            labels: here,
            ..diag.clone()
        },
        source: NamedSource::new(src.name.clone(), src.text.clone()),
        related,
    }
}

/// Renders diagnostics as miette's graphical report, one after another.
pub fn render(diags: &[Diag], sources: &SourceMap, opts: RenderOptions) -> String {
    let theme = if opts.color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(opts.width)
        .with_links(false);
    let mut out = String::new();
    for d in diags {
        let bound = bind(d, sources);
        if handler.render_report(&mut out, &bound).is_err() {
            // Rendering into a String cannot fail for I/O reasons; fall back to the plain form.
            out.push_str(&render_plain(std::slice::from_ref(d), sources));
        }
        out.push('\n');
    }
    out
}

/// Renders diagnostics as `file:line:col: severity[code]: message` lines (for editors and CI logs).
pub fn render_plain(diags: &[Diag], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags {
        let span = d.span();
        let file = sources.get(span.file);
        let (line, col) = file.line_col(span.start as usize);
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        out.push_str(&format!(
            "{}:{line}:{col}: {sev}[{}]: {}\n",
            file.name, d.code, d.message
        ));
    }
    out
}
