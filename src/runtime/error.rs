//! Run-time errors: a message at the span of the graph node that failed.

use crate::diagnostics::{Code, Diag};
use crate::source::Span;

/// A failure while running, at the source of the node that failed.
#[derive(Debug, Clone)]
pub struct RunError {
    /// The kind of failure.
    pub code: Code,
    /// The node's source.
    pub span: Span,
    /// What went wrong, in plain words.
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
    /// Extra facts (the loop step where it happened).
    pub notes: Vec<String>,
}

impl RunError {
    /// A failure of kind `code` at `span`.
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        RunError {
            code,
            span,
            message: message.into(),
            help: None,
            notes: Vec::new(),
        }
    }

    /// A generic failure at `span`.
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        RunError::new(Code::RunFailure, span, message)
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The error as a diagnostic, for rendering with the sources.
    pub fn to_diag(&self) -> Diag {
        let mut d = Diag::error(
            self.code,
            self.span,
            self.message.clone(),
            "while running this",
        );
        for n in &self.notes {
            d = d.with_note(n.clone());
        }
        if let Some(h) = &self.help {
            d = d.with_help(h.clone());
        }
        d
    }
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}

/// Attaches the span of the node being run to any error that can be displayed.
pub trait AtSpan<T> {
    /// The error as a [`RunError`] at `span`.
    fn at(self, span: Span) -> Result<T, RunError>;
}

impl<T, E: std::fmt::Display> AtSpan<T> for Result<T, E> {
    fn at(self, span: Span) -> Result<T, RunError> {
        self.map_err(|e| RunError::at(span, e.to_string()))
    }
}
