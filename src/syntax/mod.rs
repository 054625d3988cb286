//! Phase 1: text to syntax tree.
//!
//! [`parse`] runs three steps: a lexical pre-pass that refuses input nested too deeply for a
//! recursive parser ([`scan`]); the pest parser generated from `grammar/mapga.pest`
//! ([`parser`]); and the lowering of pest's pairs into the [`ast`] ([`lower`]). A syntax error
//! stops the parse of the item it is in, and parsing resumes at the next line that starts a
//! declaration, so one run reports the errors of every broken item.

pub mod ast;
pub mod format;
pub mod lower;
pub mod parser;
mod recover;
pub mod scan;

use pest::Parser as _;

use crate::diagnostics::{Code, Diag, Diags};
use crate::source::{FileId, Span};
use ast::Program;
use parser::{MapgaParser, Rule};

/// The result of parsing one file: the tree (possibly partial) and the problems found.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The items that parsed; items with syntax errors are left out.
    pub program: Program,
    /// Syntax errors and lowering errors.
    pub diags: Diags,
}

/// Words that start a top-level declaration; parsing resumes at a line starting with one.
const ITEM_STARTS: [&str; 11] = [
    "use", "param", "model", "let", "fn", "pub", "extern", "save", "report", "grid", "///",
];

/// Guards pest against pathological backtracking: at most this many rule calls per parse.
const CALL_LIMIT: usize = 200_000_000;

/// Parses `text` (the contents of file `file`) into a program, reporting every syntax error.
pub fn parse(file: FileId, text: &str) -> Parsed {
    crate::stack::with_big_stack(|| parse_here(file, text))
}

/// [`parse`] on the current thread (the checker calls it from its own big-stack thread).
///
/// The modules of the standard library, which every check parses, are parsed once per process
/// and per file id (the checker loads them first, so they have the same ids in every check):
/// a check of a small file then costs a fraction of a millisecond instead of about five.
pub(crate) fn parse_here(file: FileId, text: &str) -> Parsed {
    let is_std = crate::stdlib::module_paths()
        .filter_map(crate::stdlib::module)
        .any(|m| std::ptr::eq(m, text));
    if !is_std {
        return parse_in_parts(file, text, FIRST_WINDOW, MIN_WINDOW);
    }
    let key = (file, text.as_ptr() as usize);
    if let Some(p) = STD_PARSES.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return p;
    }
    let parsed = parse_in_parts(file, text, FIRST_WINDOW, MIN_WINDOW);
    if let Ok(mut m) = STD_PARSES.lock() {
        // Bounded: a handful of file ids per module in practice.
        if m.len() < 4096 {
            m.insert(key, parsed.clone());
        }
    }
    parsed
}

/// The parses of standard-library modules, by file id and text address (see [`parse_here`]).
type StdParses = std::collections::HashMap<(FileId, usize), Parsed>;

static STD_PARSES: std::sync::LazyLock<std::sync::Mutex<StdParses>> =
    std::sync::LazyLock::new(Default::default);

/// [`parse_here`] with the sizes of the parts parsed alone given (see [`parse_part`]): the
/// first part's, and the least after a syntax error. The result does not depend on them.
fn parse_in_parts(file: FileId, text: &str, first_window: usize, min_window: usize) -> Parsed {
    let mut diags = Diags::new();
    let whole = Span::new(file, 0, text.len());
    if let Err(d) = scan::check_limits(file, text) {
        diags.push(d);
        return Parsed {
            program: Program {
                docs: Vec::new(),
                items: Vec::new(),
                span: whole,
            },
            diags,
        };
    }
    // Doc comments that document nothing are reported, then read as plain comments.
    let (misplaced, blank) = scan::misplaced_docs(file, text);
    diags.0.extend(misplaced);
    let cleaned;
    let text = if blank.is_empty() {
        text
    } else {
        let mut bytes = text.as_bytes().to_vec();
        for (s, _) in blank {
            // `///` and `//!` become `// ` and `// `: ASCII for ASCII, so offsets stay.
            if let Some(b) = bytes.get_mut(s + 2) {
                *b = b' ';
            }
        }
        cleaned = String::from_utf8(bytes).unwrap_or_else(|_| text.to_string());
        cleaned.as_str()
    };
    pest::set_call_limit(std::num::NonZeroUsize::new(CALL_LIMIT));
    let mut lowerer = lower::Lowerer::new(file);
    let mut program = Program {
        docs: Vec::new(),
        items: Vec::new(),
        span: whole,
    };
    // Parse the file a part at a time (see `parse_part`); on an error, keep the items before
    // it, report it, and resume at the next line that starts a declaration.
    let mut start = 0usize;
    let mut window = first_window;
    loop {
        let rest = &text[start..];
        let (end, result) = parse_part(rest, &mut window);
        match result {
            Ok(mut pairs) => {
                if let Some(p) = pairs.next() {
                    let mut part = lower::Lowerer::with_offset(file, start);
                    let prog = part.lower_program(p);
                    lowerer.diags.extend(part.diags);
                    if start == 0 {
                        program.docs = prog.docs;
                    }
                    program.items.extend(prog.items);
                }
                if end >= rest.len() {
                    break;
                }
                start += end;
            }
            Err(e) => {
                let err_pos = match e.location {
                    pest::error::InputLocation::Pos(p) => p,
                    pest::error::InputLocation::Span((s, _)) => s,
                };
                let mut d = parser::convert_error(file, rest, *e);
                shift_diag(&mut d, start);
                diags.push(d);
                // When the error is at the start of a line that starts a declaration, the
                // item above is incomplete (`let x = 1 +`, an unclosed `(`) and the
                // declaration on the error's line is fine: resume there. Otherwise resume at
                // the next line that starts a declaration.
                let line = rest[..err_pos.min(rest.len())]
                    .rfind('\n')
                    .map_or(0, |p| p + 1);
                let at_decl = line == err_pos && line > 0 && starts_item(&rest[line..]);
                let good_end = last_item_boundary(rest, if at_decl { line - 1 } else { err_pos });
                let at_decl = at_decl && !rest[good_end..line].trim().is_empty();
                let resume = if at_decl {
                    Some(line)
                } else {
                    next_item_start(rest, err_pos)
                };
                // Keep the items that parse before the error.
                if good_end > 0 {
                    if let Ok(mut pairs) = MapgaParser::parse(Rule::program, &rest[..good_end]) {
                        if let Some(p) = pairs.next() {
                            let mut part = lower::Lowerer::with_offset(file, start);
                            let prog = part.lower_program(p);
                            lowerer.diags.extend(part.diags);
                            if start == 0 {
                                program.docs = prog.docs;
                            }
                            program.items.extend(prog.items);
                        }
                    }
                }
                // The broken item still declares its names, as errors, so that its uses do
                // not report them as undefined.
                let broken_end = resume.unwrap_or(rest.len());
                if let Some(item) =
                    recover::placeholder(file, &rest[good_end..broken_end], start + good_end)
                {
                    program.items.push(item);
                }
                // The next part starts about twice as long as this broken one: short where
                // errors are dense, so each error's part stays short.
                window = min_window.max(2 * broken_end);
                match resume {
                    Some(next) => start += next,
                    None => break,
                }
            }
        }
    }
    diags.extend(lowerer.diags);
    Parsed { program, diags }
}

/// Parses text that must be free of errors (the standard library, tests).
pub fn parse_clean(file: FileId, text: &str) -> Result<Program, Diags> {
    let p = parse(file, text);
    if p.diags.has_errors() {
        Err(p.diags)
    } else {
        Ok(p.program)
    }
}

/// Bytes of text the first part parsed alone holds (about 100 lines); later parts grow.
const FIRST_WINDOW: usize = 4096;

/// The fewest bytes a part holds after a syntax error.
const MIN_WINDOW: usize = 256;

/// Parses the text at the start of `rest`: a prefix of about `window` bytes that ends before
/// a line starting with a declaration keyword, or all of `rest`. Returns the prefix's length
/// and pest's result, which is the same as for all of `rest`:
///
/// * A prefix that parses is a run of whole items. No item can continue onto a line that
///   starts with `use`, `param`, `model`, `let`, `fn`, `pub`, `extern`, `save` or `report`
///   (reserved words that continue nothing: an unfinished item, such as an open `{`, fails at
///   the end of the prefix instead), so the whole text parses the same items up to there.
/// * A prefix that fails before its end fails there in the whole text too: pest reports the
///   furthest position it tried, so nothing read the text beyond the cut.
/// * A prefix that fails at its end may have failed because of the cut: it is tried again,
///   twice as long, up to all of `rest`.
///
/// Parsing a part, and building pest's error for it (which scans from the error to the end of
/// the input), costs the part's length, so a file of many items or many errors costs its
/// length in all, not its length times the number of errors. `window` grows after each part
/// that parses (so a clean file is parsed in a few large parts).
fn parse_part<'i>(
    rest: &'i str,
    window: &mut usize,
) -> (
    usize,
    Result<pest::iterators::Pairs<'i, Rule>, Box<pest::error::Error<Rule>>>,
) {
    loop {
        let end = if *window >= rest.len() {
            rest.len()
        } else {
            part_end(rest, *window).unwrap_or(rest.len())
        };
        match MapgaParser::parse(Rule::program, &rest[..end]) {
            Ok(pairs) => {
                *window = window.saturating_mul(2);
                return (end, Ok(pairs));
            }
            Err(e) => {
                let pos = match e.location {
                    pest::error::InputLocation::Pos(p) => p,
                    pest::error::InputLocation::Span((s, _)) => s,
                };
                if pos < end || end >= rest.len() {
                    return (end, Err(Box::new(e)));
                }
                *window = end.saturating_mul(2);
            }
        }
    }
}

/// The start of the first line at or after byte `from` of `text` that starts with a
/// declaration keyword which can only begin an item (see [`parse_part`]).
fn part_end(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut off = from;
    loop {
        // The start of the next line at or after `off`.
        if off > 0 && bytes.get(off - 1) != Some(&b'\n') {
            off += bytes.get(off..)?.iter().position(|&b| b == b'\n')? + 1;
        }
        let line = text.get(off..)?;
        if line.is_empty() {
            return None;
        }
        let keyword = PART_STARTS.iter().any(|w| {
            line.strip_prefix(w)
                .is_some_and(|r| r.starts_with([' ', '\t']))
        });
        if keyword {
            return Some(off);
        }
        off += 1;
    }
}

/// Reserved words that start a top-level item and continue nothing before them.
const PART_STARTS: [&str; 9] = [
    "use", "param", "model", "let", "fn", "pub", "extern", "save", "report",
];

/// Is this line the start of a top-level declaration (at column 0)?
fn starts_item(line: &str) -> bool {
    ITEM_STARTS.iter().any(|w| {
        line.strip_prefix(w)
            .is_some_and(|r| w == &"///" || r.starts_with([' ', '\t']) || r.is_empty())
    })
}

/// The byte offset of the first line after `pos` that starts a declaration at column 0.
fn next_item_start(text: &str, pos: usize) -> Option<usize> {
    let mut off = text[..pos.min(text.len())].rfind('\n').map_or(0, |p| p + 1);
    // Skip the line holding the error.
    off += text[off..].find('\n')? + 1;
    while off < text.len() {
        let line = &text[off..];
        if starts_item(line) {
            return Some(off);
        }
        off += line.find('\n')? + 1;
    }
    None
}

/// The start of the last declaration line at or before `pos` (so `text[..result]` holds only
/// complete items that precede the broken one).
fn last_item_boundary(text: &str, pos: usize) -> usize {
    let mut best = 0;
    let mut off = 0;
    while off <= pos.min(text.len()) {
        let line = &text[off..];
        if starts_item(line) {
            best = off;
        }
        match line.find('\n') {
            Some(n) => off += n + 1,
            None => break,
        }
    }
    // Doc lines belong to the item below them: back up over them.
    let mut start = best;
    while start > 0 {
        let prev_end = start - 1;
        let prev_start = text[..prev_end].rfind('\n').map_or(0, |p| p + 1);
        if text[prev_start..prev_end].starts_with("///") {
            start = prev_start;
        } else {
            break;
        }
    }
    start
}

fn shift_span(s: &mut Span, by: usize) {
    s.start += by as u32;
    s.end += by as u32;
}

fn shift_diag(d: &mut Diag, by: usize) {
    for l in &mut d.labels {
        shift_span(&mut l.span, by);
    }
}

/// Reports text that is not UTF-8 as a diagnostic on the first bad byte.
pub fn decode(file: FileId, bytes: &[u8]) -> Result<&str, Diag> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        Diag::error(
            Code::InvalidUtf8,
            Span::new(file, at, at),
            format!("the file is not UTF-8 text (bad byte at offset {at})"),
            "here",
        )
        .with_help("save the file as UTF-8; .mapga files are text")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's docs and each item, as JSON (spans included), for exact comparison.
    fn items(p: &Parsed) -> (String, Vec<String>) {
        let docs = serde_json::to_string(&p.program.docs).unwrap_or_default();
        let items = p
            .program
            .items
            .iter()
            .map(|i| serde_json::to_string(i).unwrap_or_default())
            .collect();
        (docs, items)
    }

    /// Every shipped `.mapga` file under the crate's folders, as text.
    fn shipped() -> Vec<(String, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        let mut dirs: Vec<std::path::PathBuf> = ["stdlib", "pipelines", "examples", "tests/ui"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "mapga") {
                    if let Ok(t) = std::fs::read_to_string(&p) {
                        out.push((p.display().to_string(), t));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Broken variants of `text`: lines dropped, an unfinished expression, an open bracket
    /// and a stray closer put in, at positions picked by a fixed formula.
    fn variants(text: &str) -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        let n = lines.len().max(1);
        let mut out = vec![text.to_string()];
        let inserts = [
            "let broken = 1 +",
            "fn half(a: Float) -> Float {",
            "report (1.0, 2.0",
            "}",
            "let",
            "/// dangling doc",
        ];
        for (k, ins) in inserts.iter().enumerate() {
            for j in 0..3 {
                let at = (k * 7 + j * 13 + 1) % n;
                let mut v: Vec<&str> = lines.clone();
                v.insert(at, ins);
                out.push(v.join("\n"));
            }
        }
        for j in 0..4 {
            let at = (j * 11 + 3) % n;
            let mut v = lines.clone();
            if at < v.len() {
                v.remove(at);
            }
            out.push(v.join("\n"));
        }
        out
    }

    /// Parsing in small parts gives what parsing each rest of the file whole gives (the
    /// algorithm before parts existed) on every shipped file and broken variants of it: the
    /// same tree and diagnostics, or more items, each with its problems. The items of parts
    /// that parsed before a broken item stay, where the whole parse dropped them when the
    /// text from its start up to the broken item did not parse on its own (an open bracket
    /// before the error), along with the file's `//!` docs.
    #[test]
    fn parsing_in_parts_changes_nothing() {
        let files = shipped();
        assert!(files.len() > 50, "found only {} files", files.len());
        let mut compared = 0;
        for (name, text) in &files {
            for v in variants(text) {
                let whole = parse_in_parts(FileId(0), &v, usize::MAX, usize::MAX);
                let (want_docs, want_items) = items(&whole);
                for (first, min) in [(1, 1), (64, 16), (FIRST_WINDOW, MIN_WINDOW)] {
                    let parts = parse_in_parts(FileId(0), &v, first, min);
                    let what = format!("{name}: parts of {first}/{min} bytes, on\n{v}");
                    let (docs, got) = items(&parts);
                    if got.len() == want_items.len() {
                        assert_eq!(parts.diags, whole.diags, "{what}");
                        assert_eq!(&got, &want_items, "{what}");
                    }
                    // Items kept add the problems found in them.
                    let mut more = parts.diags.iter();
                    for d in whole.diags.iter() {
                        assert!(more.any(|g| g == d), "{what}\nlost {d:?}");
                    }
                    assert!(want_docs == "[]" || docs == want_docs, "{what}");
                    let mut rest = got.iter();
                    for item in &want_items {
                        assert!(rest.any(|g| g == item), "{what}\nlost item {item}");
                    }
                }
                compared += 1;
            }
        }
        assert!(compared > 1000, "{compared}");
    }

    #[test]
    fn parts_end_before_lines_that_only_start_items() {
        let text = "let a = 1\n  let b = 2\ngrid n in [1]\nreport a\nletter = 3\nfn f() {}\n";
        assert_eq!(part_end(text, 1), Some(text.find("report").unwrap_or(0)));
        let after = text.find("letter").unwrap_or(0);
        assert_eq!(part_end(text, after), Some(text.find("fn f").unwrap_or(0)));
        assert_eq!(part_end(text, text.len() - 1), None);
        assert_eq!(part_end("let a = 1", 0), Some(0));
    }
}
