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
pub(crate) fn parse_here(file: FileId, text: &str) -> Parsed {
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
    // Parse the whole file; on an error, keep the items before it, report it, and resume at
    // the next line that starts a declaration.
    let mut start = 0usize;
    loop {
        let rest = &text[start..];
        match MapgaParser::parse(Rule::program, rest) {
            Ok(mut pairs) => {
                if let Some(p) = pairs.next() {
                    let mut part = lower::Lowerer::new(file);
                    let mut prog = part.lower_program(p);
                    shift_program(&mut prog, start);
                    shift_diags(&mut part.diags, start);
                    lowerer.diags.extend(part.diags);
                    if start == 0 {
                        program.docs = prog.docs;
                    }
                    program.items.extend(prog.items);
                }
                break;
            }
            Err(e) => {
                let err_pos = match e.location {
                    pest::error::InputLocation::Pos(p) => p,
                    pest::error::InputLocation::Span((s, _)) => s,
                };
                let mut d = parser::convert_error(file, rest, e);
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
                            let mut part = lower::Lowerer::new(file);
                            let mut prog = part.lower_program(p);
                            shift_program(&mut prog, start);
                            shift_diags(&mut part.diags, start);
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

fn shift_diags(ds: &mut Diags, by: usize) {
    for d in &mut ds.0 {
        shift_diag(d, by);
    }
}

/// Moves every span of a program parsed from a suffix of the file by `by` bytes.
fn shift_program(p: &mut Program, by: usize) {
    if by == 0 {
        return;
    }
    // Spans are plain data inside a serde tree; shifting through a generic walk keeps this
    // independent of the AST's shape.
    let mut v = match serde_json::to_value(&*p) {
        Ok(v) => v,
        Err(_) => return,
    };
    shift_json(&mut v, by as u64);
    if let Ok(q) = serde_json::from_value(v) {
        *p = q;
    }
}

fn shift_json(v: &mut serde_json::Value, by: u64) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let is_span = m.len() == 3
                && m.contains_key("file")
                && m.contains_key("start")
                && m.contains_key("end");
            if is_span {
                for k in ["start", "end"] {
                    if let Some(Value::Number(n)) = m.get(k) {
                        if let Some(x) = n.as_u64() {
                            m.insert(k.to_string(), Value::from(x + by));
                        }
                    }
                }
            } else {
                for (_, x) in m.iter_mut() {
                    shift_json(x, by);
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                shift_json(x, by);
            }
        }
        _ => {}
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
