//! Source files, byte spans and spanned values.
//!
//! Every AST node and graph node carries a [`Span`]: a file id and a byte range. Spans are
//! byte offsets (not line/column) because that is what miette renders from, and they cost
//! two `u32`s. A [`SourceMap`] owns the text of every file loaded in one check, so a
//! diagnostic can be rendered against the right file even when it comes from an import.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// The file the range is in.
    pub file: FileId,
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from `start` to `end` in `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span {
            file,
            start: start as u32,
            end: end.max(start) as u32,
        }
    }

    /// The smallest span covering both `self` and `other` (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The byte range as `usize`s.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// Length in bytes.
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    /// True for an empty span (a point).
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.start as usize, s.len()).into()
    }
}

/// A value with the span it was written at. Equality ignores the span, so tests can compare
/// trees structurally.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wraps `node` with `span`.
    pub fn new(node: T, span: Span) -> Self {
        Spanned { node, span }
    }
}

impl<T: PartialEq> PartialEq for Spanned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.node == other.node
    }
}

/// An identifier with its span.
pub type Ident = Spanned<String>;

/// Where a source file came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A file on disk (absolute or as given on the command line).
    Path(PathBuf),
    /// A standard-library module compiled into the binary, by module path (`std.solvers.mapga`).
    Std(String),
    /// Text given directly (tests, benchmarks, `-` for stdin).
    Inline(String),
}

/// One loaded source file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown in diagnostics.
    pub name: String,
    /// Where it came from.
    pub origin: Origin,
    /// Its text.
    pub text: Arc<str>,
    /// Where its lines start, computed on first use (see [`SourceFile::lines`]).
    lines: OnceLock<Arc<LineIndex>>,
}

/// The byte offsets at which the lines of a text start, so that finding the line of an offset
/// takes a binary search instead of a scan from the start of the file: rendering one
/// diagnostic per line of a large file stays linear in the file's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIndex {
    /// The offset of the first byte of every line: 0, then one past every `\n`.
    pub starts: Vec<usize>,
    /// The text holds a `\r` not followed by `\n`, which some renderers (miette) count as a
    /// line break of its own, so their line numbers differ from this index's.
    pub lone_cr: bool,
    /// The number of characters before every [`CHAR_STEP`]-th byte, so that counting the
    /// characters before an offset on a long line reads at most that many bytes.
    chars: Vec<usize>,
}

/// Bytes between two checkpoints of [`LineIndex`]'s character counts.
const CHAR_STEP: usize = 4096;

/// Does byte `b` start a character (is it not a UTF-8 continuation byte)?
fn starts_char(b: u8) -> bool {
    (b as i8) >= -0x40
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        let mut lone_cr = false;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            } else if b == b'\r' && bytes.get(i + 1) != Some(&b'\n') {
                lone_cr = true;
            }
        }
        let chars = bytes
            .chunks(CHAR_STEP)
            .scan(0, |n, chunk| {
                let before = *n;
                *n += chunk.iter().filter(|&&b| starts_char(b)).count();
                Some(before)
            })
            .collect();
        LineIndex {
            starts,
            lone_cr,
            chars,
        }
    }

    /// The characters of `text` (the indexed text) before byte `offset`: every byte that does
    /// not continue a UTF-8 sequence starts one, so an offset inside a character counts it.
    pub fn chars_before(&self, text: &str, offset: usize) -> usize {
        let bytes = text.as_bytes();
        let offset = offset.min(bytes.len());
        let k = offset / CHAR_STEP;
        let base = self.chars.get(k).copied().unwrap_or(0);
        let from = if self.chars.get(k).is_some() {
            k * CHAR_STEP
        } else {
            0
        };
        base + bytes[from..offset]
            .iter()
            .filter(|&&b| starts_char(b))
            .count()
    }

    /// The 0-based line holding byte `offset` (the last line for offsets past the end).
    pub fn line_of(&self, offset: usize) -> usize {
        // `starts[0]` is 0, so at least one start is at or before any offset.
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }

    /// The offset of the first byte of 0-based line `line` (clamped to the last line).
    pub fn line_start(&self, line: usize) -> usize {
        self.starts
            .get(line)
            .or(self.starts.last())
            .copied()
            .unwrap_or(0)
    }
}

impl SourceFile {
    /// The folder relative imports and file paths in this file resolve against.
    pub fn base_dir(&self) -> PathBuf {
        match &self.origin {
            Origin::Path(p) => p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            Origin::Std(_) | Origin::Inline(_) => PathBuf::from("."),
        }
    }

    /// The index of this file's line starts (built once, on first use).
    pub fn lines(&self) -> Arc<LineIndex> {
        self.lines
            .get_or_init(|| Arc::new(LineIndex::new(&self.text)))
            .clone()
    }

    /// The 1-based line and column (in characters) of byte `offset`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let lines = self
            .lines
            .get_or_init(|| Arc::new(LineIndex::new(&self.text)));
        let line = lines.line_of(offset);
        let line_start = lines.line_start(line);
        // Characters before `offset` on its line (an offset inside a character counts that
        // character, as a lossy decoding of the prefix would).
        let col =
            lines.chars_before(&self.text, offset) - lines.chars_before(&self.text, line_start) + 1;
        (line + 1, col)
    }
}

/// All source files of one check, indexed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        origin: Origin,
        text: impl Into<Arc<str>>,
    ) -> FileId {
        let id = FileId(self.files.len() as u32);
        self.files.push(SourceFile {
            name: name.into(),
            origin,
            text: text.into(),
            lines: OnceLock::new(),
        });
        id
    }

    /// The file with id `id`.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// The id of an already loaded file with this origin.
    pub fn find(&self, origin: &Origin) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| &f.origin == origin)
            .map(|i| FileId(i as u32))
    }

    /// The source text under `span`.
    pub fn snippet(&self, span: Span) -> &str {
        let text = &self.get(span.file).text;
        text.get(span.range()).unwrap_or("")
    }

    /// All files, in load order.
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan `line_col` did before it had an index: the reference for the indexed one.
    fn scanned(text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let col = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
        (line, col)
    }

    #[test]
    fn line_col_agrees_with_a_scan_at_every_offset() {
        let long = format!("é{}\n{}x", "a€".repeat(3000), "𝄞b".repeat(2500));
        for text in [
            long.as_str(),
            "",
            "\n",
            "let x = 1\nreport x\n",
            "a\r\nb\rc\n\nd",
            "é€𝄞 x\n  ü\n",
            "no newline at the end",
        ] {
            let mut map = SourceMap::new();
            let id = map.add("t", Origin::Inline("t".into()), text);
            let f = map.get(id);
            let step = if text.len() > 1000 { 13 } else { 1 };
            let near_checkpoints = (1..8).flat_map(|k| k * CHAR_STEP - 2..k * CHAR_STEP + 3);
            for at in (0..=text.len() + 2).step_by(step).chain(near_checkpoints) {
                assert_eq!(f.line_col(at), scanned(text, at), "{text:?} at {at}");
            }
        }
    }

    #[test]
    fn the_index_notes_lone_carriage_returns() {
        assert!(!LineIndex::new("a\r\nb\n").lone_cr);
        assert!(LineIndex::new("a\rb").lone_cr);
        assert!(LineIndex::new("a\r").lone_cr);
        let idx = LineIndex::new("ab\ncd\n");
        assert_eq!(idx.starts, vec![0, 3, 6]);
        assert_eq!((idx.line_of(0), idx.line_of(3), idx.line_of(99)), (0, 1, 2));
        assert_eq!(idx.line_start(7), 6);
    }
}
