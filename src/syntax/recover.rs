//! Placeholders for items that failed to parse.
//!
//! When a declaration has a syntax error, the parser skips it. The names it declares would then
//! be missing, and every use of them would add a "not defined" error to the one syntax error.
//! [`placeholder`] reads the names from the head of the broken text (`let x`, `pub let (a, b)`,
//! `param p`, `model m`, `fn f`, `var v`) and declares them with an error value, which the
//! checker accepts everywhere without further reports.

use super::ast::{ExprKind, Item, ItemKind, PatternKind};
use super::parser::is_keyword;
use crate::source::{FileId, Span, Spanned};

/// A `let` item binding the names declared by the broken item `text` (which starts at byte
/// `base` of the file) to an error value; `None` when it declares no name.
pub(super) fn placeholder(file: FileId, text: &str, base: usize) -> Option<Item> {
    let mut lx = Lexer { text, pos: 0 };
    lx.skip_trivia();
    let mut public = false;
    let mut kw = lx.word()?;
    if kw == "pub" {
        public = true;
        kw = lx.word()?;
    }
    let span = |s: usize, e: usize| Span::new(file, base + s, base + e);
    let pattern = match kw {
        "let" | "var" if lx.peek() == Some('(') => {
            let open = lx.pos;
            lx.pos += 1;
            let mut names = Vec::new();
            loop {
                let (s, name) = lx.name()?;
                let e = s + name.len();
                names.push(Spanned::new(
                    PatternKind::Name(name.to_string()),
                    span(s, e),
                ));
                match lx.peek() {
                    Some(',') => lx.pos += 1,
                    Some(')') => break,
                    _ => return None,
                }
            }
            lx.pos += 1;
            Spanned::new(PatternKind::Tuple(names), span(open, lx.pos))
        }
        "let" | "var" | "param" | "model" | "fn" => {
            let (s, name) = lx.name()?;
            Spanned::new(PatternKind::Name(name.to_string()), span(s, s + name.len()))
        }
        _ => return None,
    };
    let at = pattern.span;
    Some(Item {
        docs: Vec::new(),
        kind: ItemKind::Let {
            public,
            pattern,
            ty: None,
            value: Spanned::new(ExprKind::Error, at),
        },
        span: at,
    })
}

/// A tiny cursor over the head of an item.
struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// Skips whitespace, plain comments and doc comments.
    fn skip_trivia(&mut self) {
        loop {
            let rest = &self.text[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("//") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else {
                return;
            }
        }
    }

    /// Skips spaces and tabs (a declaration's head is on one line).
    fn skip_spaces(&mut self) {
        let rest = &self.text[self.pos..];
        self.pos += rest.len() - rest.trim_start_matches([' ', '\t']).len();
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_spaces();
        self.text[self.pos..].chars().next()
    }

    /// The next identifier-like word, keyword or not.
    fn word(&mut self) -> Option<&'a str> {
        self.skip_spaces();
        let rest = &self.text[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let first = rest.chars().next()?;
        if len == 0 || first.is_ascii_digit() {
            return None;
        }
        self.pos += len;
        Some(&rest[..len])
    }

    /// The next word if it can name a binding, with its offset.
    fn name(&mut self) -> Option<(usize, &'a str)> {
        self.skip_spaces();
        let at = self.pos;
        let w = self.word()?;
        (w != "_" && !is_keyword(w)).then_some((at, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A declared name with its span.
    type Named = (String, usize, usize);

    fn names(text: &str) -> Option<(bool, Vec<Named>)> {
        let item = placeholder(FileId(0), text, 10)?;
        let ItemKind::Let {
            public, pattern, ..
        } = item.kind
        else {
            return None;
        };
        let flat = match pattern.node {
            PatternKind::Name(n) => {
                vec![(n, pattern.span.start as usize, pattern.span.end as usize)]
            }
            PatternKind::Tuple(ps) => ps
                .into_iter()
                .filter_map(|p| match p.node {
                    PatternKind::Name(n) => Some((n, p.span.start as usize, p.span.end as usize)),
                    _ => None,
                })
                .collect(),
            PatternKind::Wildcard => vec![],
        };
        Some((public, flat))
    }

    #[test]
    fn reads_the_declared_names() {
        assert_eq!(
            names("let x = 1 +\n"),
            Some((false, vec![("x".into(), 14, 15)]))
        );
        assert_eq!(
            names("/// doc\n// note\npub fn f(a: Int"),
            Some((true, vec![("f".into(), 33, 34)]))
        );
        assert_eq!(
            names("let (a, b) = f(1"),
            Some((false, vec![("a".into(), 15, 16), ("b".into(), 18, 19)]))
        );
        assert_eq!(
            names("model m = x;"),
            Some((false, vec![("m".into(), 16, 17)]))
        );
    }

    #[test]
    fn declares_nothing_for_other_items() {
        assert!(names("report x +").is_none());
        assert!(names("save x to").is_none());
        assert!(names("let for = 1;").is_none());
        assert!(names("let = 3").is_none());
        assert!(names("let (a, 1) = 3").is_none());
        assert!(names("").is_none());
    }
}
