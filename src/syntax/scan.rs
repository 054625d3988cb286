//! A lexical pre-pass over the raw text, aware of strings and comments.
//!
//! It runs before pest for three reasons: to refuse input nested so deeply that a recursive
//! parser would exhaust the stack ([`check_limits`]), to find which bracket a parse error
//! leaves unclosed ([`open_delimiters`]), and to collect plain `//` comments, which the
//! grammar skips, so the formatter can put them back ([`comments`]).

use crate::diagnostics::{Code, Diag};
use crate::source::{FileId, Span};

/// Deepest bracket nesting accepted. Real pipelines stay under 10.
pub const MAX_NESTING: usize = 128;

/// Longest `else if` chain accepted.
pub const MAX_ELSE_IF: usize = 256;

/// Most infix operators in one expression (at one bracket level), checked here so that a huge
/// expression (`1+1+1+...` over megabytes) is refused before the parser spends time on it.
pub const MAX_OPERATORS: usize = 1000;

/// A plain `//` comment (not a doc comment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// From `//` to the end of the line (the line break, `\n`, `\r\n` or `\r`, excluded).
    pub span: Span,
    /// The text, `//` included.
    pub text: String,
    /// True when code precedes the comment on its line (`let a = 1 // note`).
    pub trailing: bool,
}

/// What the scanner sees at one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Open(u8, usize),
    Close(u8, usize),
    Word(usize, usize),
    /// An operator or punctuation character: one of `+-*/%^<>=!,`.
    Punct(u8, usize),
}

/// Walks the text yielding brackets and words outside strings and comments, and comments.
fn walk(text: &str, mut on_tok: impl FnMut(Tok) -> bool, mut on_comment: impl FnMut(usize, usize)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            // Strings and comments end at a line break as the grammar's `NEWLINE` has it:
            // `\n`, `\r\n` or a lone `\r`.
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' && b[i] != b'\r' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let start = i;
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                on_comment(start, i);
            }
            c @ (b'(' | b'[' | b'{') => {
                if !on_tok(Tok::Open(c, i)) {
                    return;
                }
                i += 1;
            }
            c @ (b')' | b']' | b'}') => {
                if !on_tok(Tok::Close(c, i)) {
                    return;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if !on_tok(Tok::Word(start, i)) {
                    return;
                }
            }
            c @ (b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'<' | b'>' | b'=' | b'!' | b',') => {
                if !on_tok(Tok::Punct(c, i)) {
                    return;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
}

/// Refuses text nested deeper than [`MAX_NESTING`] or with an `else if` chain longer than
/// [`MAX_ELSE_IF`], so the recursive-descent parser and the passes after it stay within the stack.
pub fn check_limits(file: FileId, text: &str) -> Result<(), Diag> {
    let mut depth = 0usize;
    let mut err = None;
    // Per bracket depth: the length of the `} else if` chain running at that depth.
    let mut chain: Vec<usize> = vec![0];
    // The last token was a closing bracket / the word `else` right after one.
    let mut after_close = false;
    let mut pending_else = false;
    // Per bracket depth: infix operators since the expression at that depth began.
    let mut ops: Vec<usize> = vec![0];
    let b = text.as_bytes();
    walk(
        text,
        |t| {
            // Count the operators of the expression running at this depth; a `,`, an
            // assignment or a keyword that starts a statement ends it.
            let count = match t {
                Tok::Punct(c, at) => {
                    let next = b.get(at + 1).copied();
                    let prev = at.checked_sub(1).and_then(|p| b.get(p)).copied();
                    match c {
                        b',' => None,
                        b'+' | b'-' | b'*' | b'/' if next == Some(b'=') => None,
                        b'=' if matches!(prev, Some(b'<' | b'>' | b'+' | b'-' | b'*' | b'/')) => {
                            Some(0)
                        }
                        b'=' if prev == Some(b'!') || next == Some(b'=') => Some(1),
                        b'=' if prev == Some(b'=') => Some(0),
                        b'=' => None,
                        b'!' => Some(0),
                        b'-' if next == Some(b'>') => Some(0),
                        b'>' if prev == Some(b'-') || prev == Some(b'>') => Some(0),
                        _ => Some(1),
                    }
                }
                Tok::Word(s, e) => match &text[s..e] {
                    "and" | "or" => Some(1),
                    w if super::parser::is_keyword(w) && !matches!(w, "not" | "true" | "false") => {
                        None
                    }
                    _ => Some(0),
                },
                _ => Some(0),
            };
            if let Some(top) = ops.last_mut() {
                match count {
                    None => *top = 0,
                    Some(n) => *top += n,
                }
                if *top > MAX_OPERATORS {
                    let at = match t {
                        Tok::Punct(_, at)
                        | Tok::Word(at, _)
                        | Tok::Open(_, at)
                        | Tok::Close(_, at) => at,
                    };
                    let len = if let Tok::Word(s, e) = t { e - s } else { 1 };
                    err = Some(
                        Diag::error(
                            Code::TooDeep,
                            Span::new(file, at, at + len),
                            format!("this expression has more than {MAX_OPERATORS} operators"),
                            "the limit is reached here",
                        )
                        .with_help("split the expression into several `let` bindings"),
                    );
                    return false;
                }
            }
            match t {
                Tok::Punct(..) => {}
                Tok::Open(_, at) => {
                    if after_close {
                        if let Some(top) = chain.last_mut() {
                            *top = 0;
                        }
                    }
                    depth += 1;
                    if depth > MAX_NESTING {
                        err = Some(
                            Diag::error(
                                Code::TooDeep,
                                Span::new(file, at, at + 1),
                                format!("brackets are nested more than {MAX_NESTING} deep"),
                                "this bracket is too deep",
                            )
                            .with_help("split the expression into several `let` bindings"),
                        );
                        return false;
                    }
                    chain.push(0);
                    ops.push(0);
                    after_close = false;
                    pending_else = false;
                }
                Tok::Close(_, _) => {
                    depth = depth.saturating_sub(1);
                    if chain.len() > 1 {
                        chain.pop();
                    }
                    if ops.len() > 1 {
                        ops.pop();
                    }
                    after_close = true;
                    pending_else = false;
                }
                Tok::Word(s, e) => {
                    let w = &text[s..e];
                    let Some(top) = chain.last_mut() else {
                        return true;
                    };
                    if after_close {
                        if w == "else" {
                            pending_else = true;
                        } else {
                            *top = 0;
                        }
                    } else if pending_else {
                        if w == "if" {
                            *top += 1;
                            if *top > MAX_ELSE_IF {
                                err = Some(
                                    Diag::error(
                                        Code::TooDeep,
                                        Span::new(file, s, e),
                                        format!("an `else if` chain is longer than {MAX_ELSE_IF}"),
                                        "this `if` is too far down the chain",
                                    )
                                    .with_help("look the value up in a list instead"),
                                );
                                return false;
                            }
                        }
                        pending_else = false;
                    }
                    after_close = false;
                }
            }
            true
        },
        |_, _| {},
    );
    match err {
        Some(d) => Err(d),
        None => Ok(()),
    }
}

/// The help line of every misplaced `///` comment.
pub const DOC_HELP: &str = "a `///` doc comment documents the declaration or parameter right below it; use `//` for a plain comment";

/// Doc comments that document nothing: a `///` after code on its line, or with nothing below
/// it but a closing bracket or the end of the file; a `//!` after the top of the file. Returns
/// one diagnostic per group of consecutive doc lines, and the byte ranges of every such comment
/// (so the caller can read them as plain comments and parse the rest normally).
pub fn misplaced_docs(file: FileId, text: &str) -> (Vec<Diag>, Vec<(usize, usize)>) {
    let mut all: Vec<(usize, usize)> = Vec::new();
    walk(text, |_| true, |s, e| all.push((s, e)));
    // The first byte of code (not blank, not in a comment), to tell the file header from a
    // later `//!`.
    let b = text.as_bytes();
    let mut first_code = None;
    let (mut i, mut ci) = (0, 0);
    while i < b.len() {
        if let Some(&(s, e)) = all.get(ci) {
            if i == s {
                i = e;
                ci += 1;
                continue;
            }
        }
        if !b[i].is_ascii_whitespace() {
            first_code = Some(i);
            break;
        }
        i += 1;
    }
    let is_doc = |s: usize, e: usize| {
        let t = &text[s..e];
        t.starts_with("///") && !t.starts_with("////")
    };
    let mut diags = Vec::new();
    let mut blank = Vec::new();
    let mut k = 0;
    while k < all.len() {
        let (s, e) = all[k];
        if text[s..e].starts_with("//!") {
            if first_code.is_some_and(|f| f < s) {
                diags.push(
                    Diag::error(
                        Code::MisplacedDoc,
                        Span::new(file, s, s + 3),
                        "a `//!` comment documents the whole file and must come before everything else",
                        "not at the top of the file",
                    )
                    .with_help("move it to the top of the file, or use `//` for a plain comment"),
                );
                blank.push((s, e));
            }
            k += 1;
            continue;
        }
        if !is_doc(s, e) {
            k += 1;
            continue;
        }
        let line_start = text[..s].rfind('\n').map_or(0, |p| p + 1);
        if !text[line_start..s].trim().is_empty() {
            diags.push(
                Diag::error(
                    Code::MisplacedDoc,
                    Span::new(file, s, s + 3),
                    "a `///` doc comment cannot follow code on the same line",
                    "this documents nothing",
                )
                .with_help(DOC_HELP),
            );
            blank.push((s, e));
            k += 1;
            continue;
        }
        // A group of doc lines one below the other (plain comments may sit between them).
        let mut group = vec![(s, e)];
        let mut j = k + 1;
        let mut prev_end = e;
        while let Some(&(s2, e2)) = all.get(j) {
            if !text[prev_end..s2].trim().is_empty() {
                break;
            }
            if is_doc(s2, e2) {
                group.push((s2, e2));
            }
            prev_end = e2;
            j += 1;
        }
        // What follows the group, skipping blanks and comments.
        let mut after = group[group.len() - 1].1;
        let mut cj = k + 1;
        loop {
            while all.get(cj).is_some_and(|&(s2, _)| s2 < after) {
                cj += 1;
            }
            let rest = &text[after..];
            let skip = rest.len() - rest.trim_start().len();
            after += skip;
            match all.get(cj) {
                Some(&(s2, e2)) if s2 == after => {
                    after = e2;
                    cj += 1;
                }
                _ => break,
            }
        }
        let next = text[after..].chars().next();
        if matches!(next, None | Some(')' | ']' | '}')) {
            let what = match next {
                None => "at the end of the file",
                Some(')') => "before `)`",
                Some(']') => "before `]`",
                _ => "before `}`",
            };
            diags.push(
                Diag::error(
                    Code::MisplacedDoc,
                    Span::new(file, s, s + 3),
                    format!("a `///` doc comment {what} has nothing to document"),
                    "nothing below this to document",
                )
                .with_help(DOC_HELP),
            );
            blank.extend(group.iter().copied());
        }
        k = j;
    }
    (diags, blank)
}

/// The brackets still open at byte `pos`, innermost last, as `(bracket, offset)`.
/// Mismatched closers pop nothing, so the result is the best guess at what is unclosed.
pub fn open_delimiters(text: &str, pos: usize) -> Vec<(u8, usize)> {
    let mut stack = Vec::new();
    walk(
        text,
        |t| match t {
            Tok::Open(c, at) => {
                if at >= pos {
                    return false;
                }
                stack.push((c, at));
                true
            }
            Tok::Close(c, at) => {
                if at >= pos {
                    return false;
                }
                if let Some(&(o, _)) = stack.last() {
                    if matching(o) == c {
                        stack.pop();
                    }
                }
                true
            }
            Tok::Word(s, _) => s < pos,
            Tok::Punct(_, at) => at < pos,
        },
        |_, _| {},
    );
    stack
}

/// The closing bracket for an opening one.
pub fn matching(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

/// Every plain `//` comment in the text (doc comments `///` and `//!` are not included:
/// they are part of the syntax tree).
pub fn comments(file: FileId, text: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    walk(
        text,
        |_| true,
        |s, e| {
            let t = &text[s..e];
            let is_doc = (t.starts_with("///") && !t.starts_with("////")) || t.starts_with("//!");
            if !is_doc {
                let line_start = text[..s].rfind('\n').map_or(0, |p| p + 1);
                let trailing = !text[line_start..s].trim().is_empty();
                out.push(Comment {
                    span: Span::new(file, s, e),
                    text: t.trim_end().to_string(),
                    trailing,
                });
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: FileId = FileId(0);

    #[test]
    fn deep_nesting_is_refused() {
        let text = format!("let x = {}1{}", "(".repeat(200), ")".repeat(200));
        let d = check_limits(F, &text).unwrap_err();
        assert_eq!(d.code, Code::TooDeep);
        assert!(check_limits(F, "let x = ((1))").is_ok());
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let text = format!("let x = \"{}\" // {}\n", "(".repeat(300), "[".repeat(300));
        assert!(check_limits(F, &text).is_ok());
        assert!(open_delimiters(&text, text.len()).is_empty());
    }

    #[test]
    fn long_else_if_chains_are_refused() {
        let mut text = String::from("fn f(x: Int) -> Int { if x == 0 { 0 }");
        for i in 0..300 {
            text.push_str(&format!(" else if x == {i} {{ {i} }}"));
        }
        text.push_str(" else { 1 } }");
        assert!(check_limits(F, &text).is_err());
        // Many short chains one after another are fine.
        let short =
            "fn f(x: Int) -> Int { if x == 0 { 0 } else if x == 1 { 1 } else { 2 } }\n".repeat(400);
        assert!(check_limits(F, &short).is_ok());
    }

    #[test]
    fn finds_doc_comments_that_document_nothing() {
        let starts = |text: &str| -> Vec<usize> {
            let (d, blank) = misplaced_docs(F, text);
            assert!(d.iter().all(|d| d.code == Code::MisplacedDoc));
            blank.into_iter().map(|(s, _)| s).collect()
        };
        // Well placed: before an item, a parameter, a statement; the file header.
        let ok = "//! file\n/// item\nfn f(\n    /// p\n    a: Int,\n) -> Int {\n    /// s\n    let b = a\n    b\n}\n";
        assert!(starts(ok).is_empty());
        // After code on its line; before `}` (a group of two lines); at the end of the file.
        assert_eq!(starts("let x = 1 /// w\n"), vec![10]);
        assert_eq!(
            starts("fn f() -> Int {\n    1\n    /// a\n    // plain\n    /// b\n}\n"),
            vec![26, 49]
        );
        assert_eq!(starts("let x = 1\n/// end\n// plain\n"), vec![10]);
        // A `//!` after code; `////` is a plain comment; `///` in a string is text.
        assert_eq!(starts("let x = 1\n//! late\n"), vec![10]);
        assert!(starts("let x = 1\n//// plain\nlet s = \"///\"\n").is_empty());
    }

    #[test]
    fn huge_expressions_are_refused_before_parsing() {
        let text = format!("let x = {}1\n", "1+".repeat(5_000_000));
        let started = std::time::Instant::now();
        let d = check_limits(F, &text).unwrap_err();
        assert!(started.elapsed().as_secs() < 5);
        assert_eq!(d.code, Code::TooDeep);
        // The error points at the operator past the limit, not the whole line.
        assert_eq!(d.span().start as usize, 8 + 2 * MAX_OPERATORS + 1);
        assert_eq!(d.span().len(), 1);
        let ok = format!("let x = {}1\n", "1 + ".repeat(MAX_OPERATORS));
        assert!(check_limits(F, &ok).is_ok());
        // Statements, arguments and brackets each start a new count.
        let body = "    z += 1\n    let w = z * 2 - 1\n".repeat(800);
        assert!(check_limits(
            F,
            &format!("fn f() -> Int {{\n    var z = 0\n{body}    z\n}}\n")
        )
        .is_ok());
        let args = format!("let y = f({})\n", vec!["1 + 1"; 1500].join(", "));
        assert!(check_limits(F, &args).is_ok());
        let cmp = format!("let c = {}1\n", "1 == 1 and ".repeat(600));
        assert!(check_limits(F, &cmp).is_err());
    }

    #[test]
    fn finds_the_unclosed_bracket() {
        let text = "let a = f(1, [2, 3]\nlet b = 2";
        assert_eq!(open_delimiters(text, text.len()), vec![(b'(', 9)]);
    }

    #[test]
    fn collects_plain_comments_only() {
        let text = "//! module\n/// doc\nlet a = 1 // trailing\n// own line\n//// also plain\n";
        let c = comments(F, text);
        let texts: Vec<_> = c.iter().map(|c| (c.text.as_str(), c.trailing)).collect();
        assert_eq!(
            texts,
            vec![
                ("// trailing", true),
                ("// own line", false),
                ("//// also plain", false)
            ]
        );
    }
}
