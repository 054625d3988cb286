//! Rendering diagnostics with miette against the source they point into.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan};

use super::{Diag, Severity};
use crate::source::{LineIndex, SourceMap};

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

/// The files a diagnostic's labels point into, laid end to end in one offset space, so that
/// miette shows the snippets of several files in one report, each under its own file name.
///
/// The primary label's file comes first, so its snippet is shown first. Secondary labels in
/// that file far above the primary one go into a second copy of the file placed after it, so
/// they are shown after the primary snippet rather than before it.
struct Sources {
    parts: Vec<Part>,
}

/// One file (or a second copy of one) in [`Sources`].
struct Part {
    file: crate::source::FileId,
    copy: u8,
    base: usize,
    name: String,
    text: Arc<str>,
    lines: Arc<LineIndex>,
}

impl Sources {
    /// The offset of `span` in the joined space, in part `(file, copy)`.
    fn offset(&self, file: crate::source::FileId, copy: u8, at: usize) -> usize {
        self.parts
            .iter()
            .find(|p| p.file == file && p.copy == copy)
            .map_or(at, |p| p.base + at)
    }
}

impl miette::SourceCode for Sources {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let (off, len) = (span.offset(), span.len());
        // A span across two parts cannot be read, so miette never merges their snippets.
        let part = self
            .parts
            .iter()
            .find(|p| off >= p.base && off + len <= p.base + p.text.len())
            .ok_or(miette::MietteError::OutOfBounds)?;
        let local = off - part.base;
        // miette finds the context by scanning from the start of the text it is given, which
        // would make rendering a diagnostic cost the size of the file before it. Give it the
        // text from the first context line on instead, and add back the lines skipped: the
        // result is the same (miette also breaks lines at a lone `\r`, which the index does
        // not, so such a file is still given whole).
        let first = if part.lines.lone_cr {
            0
        } else {
            part.lines.line_of(local).saturating_sub(before)
        };
        let window = part.lines.line_start(first).min(local);
        let text = part.text.as_bytes().get(window..).unwrap_or_default();
        let c = text.read_span(
            &miette::SourceSpan::new((local - window).into(), len),
            before,
            after,
        )?;
        let at = miette::SourceSpan::new(
            (c.span().offset() + window + part.base).into(),
            c.span().len(),
        );
        Ok(Box::new(miette::MietteSpanContents::new_named(
            part.name.clone(),
            c.data(),
            at,
            c.line() + first,
            c.column(),
            c.line_count() + first,
        )))
    }
}

/// A diagnostic with its labels placed in [`Sources`], for miette.
struct Bound {
    diag: Diag,
    /// Label offsets in the joined space, in the order of `diag.labels`.
    offsets: Vec<usize>,
    sources: Sources,
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
        // Notes are rendered after the report, each on a `note:` line (see `render`).
        self.diag
            .help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.sources)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(
            self.diag
                .labels
                .iter()
                .zip(&self.offsets)
                .enumerate()
                .map(|(i, (l, &off))| {
                    let text = (!l.text.is_empty()).then(|| l.text.clone());
                    let span = (off, l.span.len());
                    if i == 0 {
                        LabeledSpan::new_primary_with_span(text, span)
                    } else {
                        LabeledSpan::new_with_span(text, span)
                    }
                }),
        ))
    }
}

/// Lines between a secondary label and the primary one beyond which miette would show them
/// in separate snippets (one line of context on each side, and the line between).
const SEPARATE_LINES: usize = 3;

/// Places a diagnostic's labels, which may point into several files, in one [`Sources`].
fn bind(diag: &Diag, sources: &SourceMap) -> Bound {
    let primary = diag.span();
    let pf = primary.file;
    let line_of = |file, at: u32| sources.get(file).line_col(at as usize).0;
    let primary_line = line_of(pf, primary.start);
    // Which part each label goes into: (file, copy).
    let keys: Vec<(crate::source::FileId, u8)> = diag
        .labels
        .iter()
        .map(|l| {
            let early =
                l.span.file == pf && line_of(pf, l.span.end) + SEPARATE_LINES < primary_line;
            (l.span.file, u8::from(early))
        })
        .collect();
    let mut order: Vec<(crate::source::FileId, u8)> = vec![(pf, 0)];
    if keys.contains(&(pf, 1)) {
        order.push((pf, 1));
    }
    for k in &keys {
        if !order.contains(k) {
            order.push(*k);
        }
    }
    let mut parts = Vec::new();
    let mut base = 0;
    for (file, copy) in order {
        let src = sources.get(file);
        let text: Arc<str> = src.text.clone();
        let len = text.len();
        parts.push(Part {
            file,
            copy,
            base,
            name: src.name.clone(),
            text,
            lines: src.lines(),
        });
        // A gap of one byte, so that a label at the end of one file is not at the start of the next.
        base += len + 1;
    }
    let sources = Sources { parts };
    let offsets = diag
        .labels
        .iter()
        .zip(&keys)
        .map(|(l, &(file, copy))| sources.offset(file, copy, l.span.start as usize))
        .collect();
    Bound {
        diag: diag.clone(),
        offsets,
        sources,
    }
}

/// Renders diagnostics as miette's graphical report, one after another; the notes of each
/// follow its help line, one `note:` line each.
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
        if on_long_line(d, sources) {
            // miette cannot draw a label that far right; the plain form names the place.
            out.push_str(&render_plain(std::slice::from_ref(d), sources));
            if let Some(h) = &d.help {
                out.push_str(&format!("  help: {h}\n"));
            }
        } else {
            let bound = bind(d, sources);
            if handler.render_report(&mut out, &bound).is_err() {
                // Rendering into a String cannot fail for I/O reasons; fall back to the plain form.
                out.push_str(&render_plain(std::slice::from_ref(d), sources));
            }
        }
        for note in &d.notes {
            let wrap = textwrap::Options::new(opts.width.saturating_sub(2))
                .initial_indent("  note: ")
                .subsequent_indent("        ");
            out.push_str(&textwrap::fill(note, wrap));
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Columns beyond which a label is not drawn under its line.
const MAX_DRAWN_COLUMN: usize = 2_000;

/// True when a label of `d` ends far right on its line (a generated one-line file).
fn on_long_line(d: &Diag, sources: &SourceMap) -> bool {
    d.labels.iter().any(|l| {
        let f = sources.get(l.span.file);
        let end = (l.span.end as usize).min(f.text.len());
        let lines = f.lines();
        end - lines.line_start(lines.line_of(end)) > MAX_DRAWN_COLUMN
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::Code;
    use crate::source::{Origin, Span};

    fn two_files() -> (SourceMap, crate::source::FileId, crate::source::FileId) {
        let mut sm = SourceMap::new();
        let a = sm.add(
            "a.mapga",
            Origin::Std("a".into()),
            "let x = f(1)\nreport x\n",
        );
        let b = sm.add(
            "<std.b>",
            Origin::Std("b".into()),
            "extern fn f(n: Float) -> Float\n",
        );
        (sm, a, b)
    }

    #[test]
    fn labels_in_another_file_are_snippets_of_the_same_report() {
        let (sm, a, b) = two_files();
        let d = Diag::error(Code::TypeMismatch, Span::new(a, 10, 11), "bad", "this")
            .with_label(Span::new(b, 15, 20), "wants Float");
        let out = render(&[d], &sm, RenderOptions::default());
        assert!(!out.contains("Error:"), "{out}");
        let first = out.find("[a.mapga:1:11]").expect("primary snippet");
        let second = out.find("[<std.b>:1:16]").expect("secondary snippet");
        assert!(first < second, "{out}");
        assert!(out.contains("wants Float"));
    }

    #[test]
    fn notes_render_as_notes_after_the_help() {
        let (sm, a, _) = two_files();
        let d = Diag::error(Code::TypeMismatch, Span::new(a, 10, 11), "bad", "this")
            .with_note("a fact");
        let out = render(std::slice::from_ref(&d), &sm, RenderOptions::default());
        assert!(
            out.contains("  note: a fact\n") && !out.contains("help:"),
            "{out}"
        );
        let out = render(&[d.with_help("change it")], &sm, RenderOptions::default());
        let help = out.find("  help: change it").expect("help");
        assert!(help < out.find("  note: a fact").expect("note"), "{out}");
    }

    /// Renders `d` the way miette would from the whole text (the index is told the file has a
    /// lone `\r`, which makes the reader hand miette every byte from the start).
    fn render_from_the_start(d: &Diag, sm: &SourceMap) -> String {
        let mut bound = bind(d, sm);
        for p in &mut bound.sources.parts {
            let mut whole = (*p.lines).clone();
            whole.lone_cr = true;
            p.lines = Arc::new(whole);
        }
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        handler
            .render_report(&mut out, &bound)
            .expect("rendering into a string");
        out
    }

    #[test]
    fn snippets_read_from_the_context_lines_match_snippets_read_from_the_start() {
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("let x_{i} = f(x, {i})\n"));
            if i % 7 == 3 {
                text.push_str("\r\n\n");
            }
        }
        let mut sm = SourceMap::new();
        let f = sm.add("lines.mapga", Origin::Std("lines".into()), text.as_str());
        let mut checked = 0;
        for (at, _) in text.match_indices("x_") {
            for back in [0, 30, 200] {
                let d = Diag::error(Code::TypeMismatch, Span::new(f, at, at + 3), "bad", "here")
                    .with_label(
                        Span::new(f, at.saturating_sub(back), at.saturating_sub(back) + 1),
                        "and here",
                    );
                let got = render(std::slice::from_ref(&d), &sm, RenderOptions::default());
                let want = render_from_the_start(&d, &sm) + "\n";
                assert_eq!(got, want);
                checked += 1;
            }
        }
        assert_eq!(checked, 120);
    }

    #[test]
    fn the_primary_snippet_comes_first_in_its_file() {
        let mut sm = SourceMap::new();
        let text = "fn g(a: Int) -> Int {\n    a\n}\n\n\n\n\nreport g(1.5)\n";
        let f = sm.add("c.mapga", Origin::Std("c".into()), text);
        let arg = text.find("1.5").unwrap_or(0);
        let d = Diag::error(
            Code::TypeMismatch,
            Span::new(f, arg, arg + 3),
            "bad",
            "here",
        )
        .with_label(Span::new(f, 8, 11), "declared");
        let out = render(&[d], &sm, RenderOptions::default());
        let primary = out.find("c.mapga:8:10").expect("primary first");
        let secondary = out.find("c.mapga:1:9").expect("secondary");
        assert!(primary < secondary, "{out}");
    }
}
