//! Diagnostics: every problem the front end finds, as a value with a stable code.
//!
//! Each phase reports problems as [`Diag`]s: an error [`Code`] (stable, like
//! `mapga::type::shape`), a short lower-case message, labelled spans (the first one is the
//! primary location), an optional help line saying what to change, and notes. Phases collect
//! every problem they can find instead of stopping at the first ([`Diags`]). A `Diag` carries
//! only spans; [`render()`] attaches the source text once, when printing.

mod code;
mod render;

pub use code::Code;
pub use render::{render, render_plain, RenderOptions};

use crate::source::Span;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; the program still runs.
    Warning,
    /// The program cannot run.
    Error,
}

/// A labelled span in a diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// What is labelled.
    pub span: Span,
    /// The text shown next to it.
    pub text: String,
}

/// One problem found in a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    /// The stable code, e.g. [`Code::ShapeMismatch`].
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// The one-line message.
    pub message: String,
    /// Labelled spans; the first is the primary location.
    pub labels: Vec<Label>,
    /// What to change, in one line.
    pub help: Option<String>,
    /// Extra context (expected/found, the import chain of a cycle).
    pub notes: Vec<String>,
}

impl Diag {
    /// An error with `code`, `message` and a primary label.
    pub fn error(
        code: Code,
        span: Span,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> Self {
        Diag {
            code,
            severity: code.default_severity(),
            message: message.into(),
            labels: vec![Label {
                span,
                text: label.into(),
            }],
            help: None,
            notes: Vec::new(),
        }
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    /// Sets the help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The primary span.
    pub fn span(&self) -> Span {
        self.labels[0].span
    }

    /// True for errors (not warnings).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A collection of diagnostics from one or more phases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diags(pub Vec<Diag>);

impl Diags {
    /// No diagnostics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a diagnostic.
    pub fn push(&mut self, d: Diag) {
        self.0.push(d);
    }

    /// Records all of `other`.
    pub fn extend(&mut self, other: Diags) {
        self.0.extend(other.0);
    }

    /// True if at least one is an error.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diag::is_error)
    }

    /// Number of errors.
    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.0.len() - self.error_count()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorts by file and position, errors and warnings interleaved, and removes exact duplicates
    /// (the same problem found twice, e.g. in a function body checked once per call).
    pub fn sort_dedup(&mut self) {
        self.0
            .sort_by_key(|d| (d.span().file, d.span().start, d.span().end, d.code));
        self.0.dedup();
    }

    /// Iterates over the diagnostics.
    pub fn iter(&self) -> std::slice::Iter<'_, Diag> {
        self.0.iter()
    }
}

impl IntoIterator for Diags {
    type Item = Diag;
    type IntoIter = std::vec::IntoIter<Diag>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
