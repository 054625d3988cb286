//! The canonical formatter behind `mapga fmt`.
//!
//! [`format()`] prints a parsed [`Program`] back as text in one canonical layout, putting back
//! every plain `//` comment (which the grammar skips) by byte offset. [`format_source`] parses
//! first and refuses a file with syntax errors.
//!
//! The printer builds a small document tree (text, soft and hard line breaks, indentation and
//! groups, in the style of Wadler's "prettier printer") and renders it at [`WIDTH`] columns: a
//! group is printed on one line when it fits and with all its line breaks taken otherwise.
//! Only whitespace and comment placement change, never a token, so the output parses to the
//! same tree.
//!
//! Layout rules:
//! - 4-space indentation; one statement per line; blocks other than a short `if` are always
//!   broken over lines (`{}` when empty).
//! - One blank line between top-level items (and after the `//!` header), except that
//!   consecutive items of the same kind among `use`, `param`, `model`, `let`, `save`, `report`
//!   that each fit on one line stay together. Elsewhere (also inside blocks) at most one blank
//!   line is kept where the source had one; none after `{` or before `}`.
//! - One space around every binary operator except `^` (`sigma_y^2`, `-x^2`); `not x`, `-x`;
//!   `name: value`, `name: Type`, `name: Type = default`; `, ` between elements; `(a,)`.
//! - `if c { a } else { b }` (every branch a lone expression, `else if` too) stays on one line
//!   when it fits; otherwise every branch of the chain is broken over lines.
//! - A call, list, tuple, parameter list or `use` name list that does not fit is broken with
//!   one element per line, indented 4 more, with a trailing comma. A binary-operator chain
//!   that does not fit breaks before its operators, continuation lines indented 4 more. A
//!   `report` that does not fit puts each entry after the first on its own line, indented 4.
//!   A line break never goes before a call's `(` or an index's `[`.
//! - Parentheses as written; float and integer literals as written (`2e-3`, `1_000`); strings
//!   re-escaped (`\\`, `\"`, `\n`, `\t`).
//! - Comments: an own-line comment stays on its own line before what follows it, at that
//!   line's indentation; a trailing comment stays at the end of its line, two spaces after
//!   the code; comments at the end of a block or bracket list stay inside it; a comment
//!   right after `{` or `(` stays there. A comment where no line break can go (inside an
//!   expression or a type, between a function's name and its `(` or between its `)` and
//!   `->`, inside a `use` list or a `report`) moves to its own line before the statement or
//!   item that contains it (before its `///` lines). Comments before `else` move to the top
//!   of the `else` (or `else if`) block. Doc comments (`///`, `//!`) are printed from the tree.
//! - The output ends with exactly one newline (an empty file becomes a single newline).

use crate::diagnostics::Diags;
use crate::source::{FileId, Span};
use crate::syntax::ast::*;
use crate::syntax::scan::{self, Comment};

/// The line width the formatter aims for.
pub const WIDTH: usize = 100;

/// Spaces per indentation level.
pub const INDENT: usize = 4;

/// Parses `text` and formats it; a file with syntax errors is not formatted and its
/// diagnostics are returned instead.
pub fn format_source(file: FileId, text: &str) -> Result<String, Diags> {
    let parsed = crate::syntax::parse(file, text);
    if parsed.diags.has_errors() {
        return Err(parsed.diags);
    }
    let comments = scan::comments(file, text);
    Ok(format(&parsed.program, text, &comments))
}

/// Formats `program`, parsed from `text`, putting back the plain `comments` found in `text`
/// (see [`scan::comments`]). The result ends with exactly one newline.
pub fn format(program: &Program, text: &str, comments: &[Comment]) -> String {
    let mut sorted: Vec<&Comment> = comments.iter().collect();
    sorted.sort_by_key(|c| (c.span.start, c.span.end));
    let mut f = Fmt {
        text,
        comments: sorted,
        used: vec![false; comments.len()],
        first_unused: 0,
    };
    let mut out = f.program(program);
    while out.ends_with('\n') {
        out.pop();
    }
    out.push('\n');
    out
}

// ───────────────────────────── the document tree ─────────────────────────────

/// A layout document.
#[derive(Debug, Clone)]
enum Doc {
    /// Text without line breaks.
    Text(String),
    /// A space, or a line break when the enclosing group is broken.
    Line,
    /// Nothing, or a line break when the enclosing group is broken.
    SoftLine,
    /// Always a line break; breaks every enclosing group.
    HardLine,
    /// A sequence.
    Concat(Vec<Doc>),
    /// The contents, with line breaks indented one more level.
    Indent(Box<Doc>),
    /// Printed flat when it fits and nothing inside forces a break; the flag caches the latter.
    Group(Box<Doc>, bool),
    /// The first when the enclosing group is broken, the second when it is flat.
    IfBreak(Box<Doc>, Box<Doc>),
    /// Text put at the end of the current line (a trailing comment); breaks enclosing groups.
    Suffix(String),
    /// Breaks every enclosing group.
    BreakParent,
}

fn text(s: impl Into<String>) -> Doc {
    Doc::Text(s.into())
}

fn concat(v: Vec<Doc>) -> Doc {
    Doc::Concat(v)
}

fn indent(d: Doc) -> Doc {
    Doc::Indent(Box::new(d))
}

fn group(d: Doc) -> Doc {
    let forced = forces_break(&d);
    Doc::Group(Box::new(d), forced)
}

fn if_break(broken: Doc, flat: Doc) -> Doc {
    Doc::IfBreak(Box::new(broken), Box::new(flat))
}

fn nil() -> Doc {
    Doc::Concat(Vec::new())
}

/// True when `d` must be printed with its line breaks (a hard line or a comment inside).
fn forces_break(d: &Doc) -> bool {
    match d {
        Doc::Text(_) | Doc::Line | Doc::SoftLine => false,
        Doc::HardLine | Doc::Suffix(_) | Doc::BreakParent => true,
        Doc::Concat(v) => v.iter().any(forces_break),
        Doc::Indent(x) => forces_break(x),
        Doc::Group(_, forced) => *forced,
        Doc::IfBreak(a, b) => forces_break(a) || forces_break(b),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flat,
    Break,
}

/// Renders a document at [`WIDTH`] columns, starting at column 0.
fn render(doc: &Doc) -> String {
    let mut out = String::new();
    let mut col = 0usize;
    let mut suffixes: Vec<&str> = Vec::new();
    let mut stack: Vec<(usize, Mode, &Doc)> = vec![(0, Mode::Break, doc)];
    while let Some((ind, mode, d)) = stack.pop() {
        match d {
            Doc::Text(s) => {
                out.push_str(s);
                col += width(s);
            }
            Doc::Concat(v) => {
                for x in v.iter().rev() {
                    stack.push((ind, mode, x));
                }
            }
            Doc::Indent(x) => stack.push((ind + INDENT, mode, x)),
            Doc::Group(x, forced) => {
                let m = if *forced {
                    Mode::Break
                } else if mode == Mode::Flat
                    || fits((ind, Mode::Flat, x), &stack, WIDTH as isize - col as isize)
                {
                    Mode::Flat
                } else {
                    Mode::Break
                };
                stack.push((ind, m, x));
            }
            Doc::IfBreak(b, f) => stack.push((ind, mode, if mode == Mode::Break { b } else { f })),
            Doc::Line | Doc::SoftLine if mode == Mode::Flat => {
                if matches!(d, Doc::Line) {
                    out.push(' ');
                    col += 1;
                }
            }
            Doc::Line | Doc::SoftLine | Doc::HardLine => {
                for s in suffixes.drain(..) {
                    out.push_str(s);
                }
                newline(&mut out, ind);
                col = ind;
            }
            Doc::Suffix(s) => suffixes.push(s),
            Doc::BreakParent => {}
        }
    }
    for s in suffixes {
        out.push_str(s);
    }
    out
}

/// Ends the current line (dropping trailing spaces) and indents the next.
fn newline(out: &mut String, ind: usize) {
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
    out.push('\n');
    out.extend(std::iter::repeat_n(' ', ind));
}

/// The display width of a text (one column per character).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Does `next`, printed flat, followed by the rest of the line, fit in `room` columns?
fn fits(next: (usize, Mode, &Doc), rest: &[(usize, Mode, &Doc)], mut room: isize) -> bool {
    let mut stack = vec![next];
    let mut rest_idx = rest.len();
    loop {
        if room < 0 {
            return false;
        }
        let (ind, mode, d) = match stack.pop() {
            Some(x) => x,
            None => {
                if rest_idx == 0 {
                    return true;
                }
                rest_idx -= 1;
                rest[rest_idx]
            }
        };
        match d {
            Doc::Text(s) => room -= width(s) as isize,
            Doc::Concat(v) => {
                for x in v.iter().rev() {
                    stack.push((ind, mode, x));
                }
            }
            Doc::Indent(x) => stack.push((ind + INDENT, mode, x)),
            Doc::Group(x, forced) => stack.push((ind, if *forced { Mode::Break } else { mode }, x)),
            Doc::IfBreak(b, f) => stack.push((ind, mode, if mode == Mode::Break { b } else { f })),
            Doc::Line => {
                if mode == Mode::Break {
                    return true;
                }
                room -= 1;
            }
            Doc::SoftLine => {
                if mode == Mode::Break {
                    return true;
                }
            }
            Doc::HardLine => return true,
            Doc::Suffix(_) | Doc::BreakParent => {}
        }
    }
}

// ───────────────────────────── the formatter ─────────────────────────────

/// An entry of a block: a statement, the value, or an optimization block's objective.
#[derive(Clone, Copy)]
enum Entry<'a> {
    Stmt(&'a Stmt),
    Value(&'a Expr),
    Objective(&'a Optimize),
}

/// An element of a bracketed, comma-separated list.
#[derive(Clone, Copy)]
enum Elem<'a> {
    Expr(&'a Expr),
    Arg(&'a Arg),
    Param(&'a FnParam),
    Name(&'a crate::source::Ident),
}

/// How a list ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trailing {
    /// A trailing comma only when broken over lines.
    IfBroken,
    /// Always a trailing comma (a one-element tuple).
    Always,
}

/// Formatting state: the source text and which comments have been printed.
struct Fmt<'a> {
    text: &'a str,
    /// The comments, sorted by position.
    comments: Vec<&'a Comment>,
    /// Which comments have been printed (or placed).
    used: Vec<bool>,
    /// Every comment before this index is used.
    first_unused: usize,
}

fn comment_doc(c: &Comment) -> Doc {
    concat(vec![text(c.text.clone()), Doc::BreakParent])
}

fn suffix_doc(c: &Comment) -> Doc {
    Doc::Suffix(format!("  {}", c.text))
}

/// A string literal with its escapes written back.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn doc_line(prefix: &str, t: &str) -> String {
    if t.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix} {t}")
    }
}

/// The kind of a top-level item, for deciding which neighbours stay together.
fn item_group(k: &ItemKind) -> Option<u8> {
    match k {
        ItemKind::Use(_) => Some(0),
        ItemKind::Param { .. } => Some(1),
        ItemKind::Model { .. } => Some(2),
        ItemKind::Let { .. } => Some(3),
        ItemKind::Save { .. } => Some(4),
        ItemKind::Report(_) => Some(5),
        ItemKind::Grid(_) => Some(6),
        ItemKind::Fn(_) | ItemKind::Extern(_) => None,
    }
}

impl<'a> Fmt<'a> {
    // ── comment bookkeeping ──

    fn start_of(&self, i: usize) -> usize {
        self.comments[i].span.start as usize
    }

    fn mark(&mut self, i: usize) {
        self.used[i] = true;
        while self.first_unused < self.used.len() && self.used[self.first_unused] {
            self.first_unused += 1;
        }
    }

    /// The first unused comment starting before `pos`, if any.
    fn peek_before(&self, pos: usize) -> Option<usize> {
        (self.first_unused..self.comments.len())
            .take_while(|&i| self.start_of(i) < pos)
            .find(|&i| !self.used[i])
    }

    /// Takes every unused comment starting before `pos`, in order.
    fn take_before(&mut self, pos: usize) -> Vec<usize> {
        let found: Vec<usize> = (self.first_unused..self.comments.len())
            .take_while(|&i| self.start_of(i) < pos)
            .filter(|&i| !self.used[i])
            .collect();
        for &i in &found {
            self.mark(i);
        }
        found
    }

    /// Takes the next unused comment if it starts before `pos` and ends a line of code.
    fn take_trailing(&mut self, pos: usize) -> Option<usize> {
        let i = self.peek_before(pos)?;
        if self.comments[i].trailing {
            self.mark(i);
            Some(i)
        } else {
            None
        }
    }

    /// Takes the unused comments in `start..end` that `placeable` rejects.
    fn take_misplaced(
        &mut self,
        start: usize,
        end: usize,
        placeable: impl Fn(&Self, usize) -> bool,
    ) -> Vec<usize> {
        let found: Vec<usize> = (self.first_unused..self.comments.len())
            .take_while(|&i| self.start_of(i) < end)
            .filter(|&i| {
                !self.used[i] && self.start_of(i) >= start && !placeable(self, self.start_of(i))
            })
            .collect();
        for &i in &found {
            self.mark(i);
        }
        found
    }

    /// The end of the comment covering the offset just before `end`, if one does.
    fn comment_ending_at(&self, end: usize) -> Option<usize> {
        let idx = self
            .comments
            .partition_point(|c| (c.span.start as usize) < end);
        let c = self.comments.get(idx.checked_sub(1)?)?;
        (end <= c.span.end as usize).then_some(c.span.start as usize)
    }

    /// `end` moved back over whitespace and comments (pest spans may include them).
    fn tight_end(&self, end: usize) -> usize {
        let b = self.text.as_bytes();
        let mut end = end.min(b.len());
        loop {
            while end > 0 && b[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            match self.comment_ending_at(end) {
                Some(s) if s < end => end = s,
                _ => return end,
            }
        }
    }

    /// `pos` moved forward over whitespace and comments.
    fn skip_trivia(&self, pos: usize) -> usize {
        let b = self.text.as_bytes();
        let mut pos = pos.min(b.len());
        loop {
            while pos < b.len() && b[pos].is_ascii_whitespace() {
                pos += 1;
            }
            let idx = self
                .comments
                .partition_point(|c| (c.span.start as usize) < pos);
            match self.comments.get(idx) {
                Some(c) if c.span.start as usize == pos && (c.span.end as usize) > pos => {
                    pos = c.span.end as usize
                }
                _ => return pos,
            }
        }
    }

    /// Is `p` inside `span` (ignoring whitespace and comments that pest left at its end)?
    fn within(&self, span: Span, p: usize) -> bool {
        (span.start as usize) <= p && p < self.tight_end(span.end as usize)
    }

    /// The end of `span` without trailing whitespace and comments.
    fn end_of(&self, span: Span) -> usize {
        self.tight_end(span.end as usize).max(span.start as usize)
    }

    /// Did the source have a blank line (only whitespace) between `a` and `b`?
    fn blank_between(&self, a: usize, b: usize) -> bool {
        let Some(s) = self.text.get(a.min(b)..b) else {
            return false;
        };
        let lines: Vec<&str> = s.split('\n').collect();
        lines.len() > 2
            && lines[1..lines.len() - 1]
                .iter()
                .any(|l| l.trim().is_empty())
    }

    fn source(&self, span: Span) -> &'a str {
        self.text.get(span.range()).unwrap_or("")
    }

    // ── placement: where a comment can stay ──

    /// Can a comment at `p` (inside `e`) be printed where it is?
    fn placeable_expr(&self, e: &Expr, p: usize) -> bool {
        let inside = |x: &Expr| self.within(x.span, p);
        match &e.node {
            ExprKind::Call(callee, args) => {
                if inside(callee) {
                    self.placeable_expr(callee, p)
                } else {
                    p > self.skip_trivia(callee.span.end as usize) && self.placeable_args(args, p)
                }
            }
            ExprKind::Method(recv, name, args) => {
                if inside(recv) {
                    self.placeable_expr(recv, p)
                } else {
                    p > self.skip_trivia(name.span.end as usize) && self.placeable_args(args, p)
                }
            }
            ExprKind::List(xs) | ExprKind::Tuple(xs) => match xs.iter().find(|x| inside(x)) {
                Some(x) => self.placeable_expr(x, p),
                None => true,
            },
            ExprKind::Paren(x) | ExprKind::Unary(_, x) | ExprKind::Field(x, _) => {
                inside(x) && self.placeable_expr(x, p)
            }
            ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
                (inside(a) && self.placeable_expr(a, p)) || (inside(b) && self.placeable_expr(b, p))
            }
            ExprKind::Slice(x, from, to) => std::iter::once(&**x)
                .chain(from.as_deref())
                .chain(to.as_deref())
                .any(|y| inside(y) && self.placeable_expr(y, p)),
            ExprKind::If(c, then, els) => {
                if inside(c) {
                    self.placeable_expr(c, p)
                } else if self.within(then.span, p) {
                    true
                } else if let Some(x) = els {
                    if inside(x) {
                        match &x.node {
                            ExprKind::If(..) => self.placeable_expr(x, p),
                            _ => true,
                        }
                    } else {
                        p >= then.span.end as usize && p < x.span.start as usize
                    }
                } else {
                    false
                }
            }
            ExprKind::Block(_) => true,
            _ => false,
        }
    }

    fn placeable_args(&self, args: &[Arg], p: usize) -> bool {
        for a in args {
            let start = a.name.as_ref().map_or(a.value.span.start, |n| n.span.start) as usize;
            if p >= start && p < self.end_of(a.value.span) {
                return self.within(a.value.span, p) && self.placeable_expr(&a.value, p);
            }
        }
        true
    }

    /// The source range of a parameter, from its name to its default (or type, or `...`).
    fn param_range(&self, prm: &FnParam) -> (usize, usize) {
        let start = prm.name.span.start as usize;
        let mut end = prm.name.span.end as usize;
        if let Some(t) = &prm.ty {
            end = end.max(t.span.end as usize);
            if prm.variadic {
                let at = self.skip_trivia(end);
                if self.text.get(at..at + 3) == Some("...") {
                    end = at + 3;
                }
            }
        }
        if let Some(d) = &prm.default {
            end = end.max(self.end_of(d.span));
        }
        (start, end)
    }

    /// The offset of the `)` closing a parameter list that ends before `after` (the result
    /// type, or the body when there is none); `after` itself if it cannot be found.
    fn params_close(&self, after: usize, has_ret: bool) -> usize {
        let b = self.text.as_bytes();
        let mut at = self.tight_end(after);
        if has_ret {
            if at >= 2 && b.get(at - 2..at) == Some(b"->") {
                at = self.tight_end(at - 2);
            } else {
                return after;
            }
        }
        match at.checked_sub(1) {
            Some(c) if b.get(c) == Some(&b')') => c,
            _ => after,
        }
    }

    /// Can a comment at `p`, between a function's name and the end of its signature, stay?
    fn placeable_params(
        &self,
        name: &crate::source::Ident,
        params: &[FnParam],
        list_end: usize,
        p: usize,
    ) -> bool {
        // Only inside the parentheses (and between `)` and the result type).
        if p <= self.skip_trivia(name.span.end as usize) || p >= list_end {
            return false;
        }
        for prm in params {
            let (s, e) = self.param_range(prm);
            if p >= s && p < e {
                return match &prm.default {
                    Some(d) if self.within(d.span, p) => self.placeable_expr(d, p),
                    _ => false,
                };
            }
        }
        true
    }

    fn placeable_item(&self, item: &Item, p: usize) -> bool {
        let in_expr = |e: &Expr| self.within(e.span, p) && self.placeable_expr(e, p);
        match &item.kind {
            ItemKind::Use(_) => false,
            ItemKind::Param { default, .. } => in_expr(default),
            ItemKind::Model { value, .. } | ItemKind::Let { value, .. } => in_expr(value),
            ItemKind::Save { value, path } => in_expr(value) || in_expr(path),
            ItemKind::Report(entries) => entries.iter().any(|en| in_expr(&en.value)),
            ItemKind::Grid(axes) => axes.iter().any(|a| in_expr(&a.values)),
            ItemKind::Fn(f) => {
                if self.within(f.body.span, p) {
                    return true;
                }
                let after = f.ret.as_ref().map_or(f.body.span.start, |r| r.span.start) as usize;
                let end = self.params_close(after, f.ret.is_some());
                self.placeable_params(&f.name, &f.params, end, p)
            }
            ItemKind::Extern(x) => {
                let end = self.params_close(x.ret.span.start as usize, true);
                self.placeable_params(&x.name, &x.params, end, p)
            }
        }
    }

    fn placeable_entry(&self, e: Entry<'_>, p: usize) -> bool {
        let in_expr = |x: &Expr| self.within(x.span, p) && self.placeable_expr(x, p);
        match e {
            Entry::Value(v) => in_expr(v),
            Entry::Objective(o) => in_expr(&o.objective),
            Entry::Stmt(s) => match &s.node {
                StmtKind::Let { value, .. } | StmtKind::Assign { value, .. } => in_expr(value),
                StmtKind::For { iter, body, .. } => in_expr(iter) || self.within(body.span, p),
                StmtKind::Repeat { count, body } => in_expr(count) || self.within(body.span, p),
                StmtKind::If(x) => in_expr(x),
                StmtKind::Optimize(o) => {
                    in_expr(&o.optimizer) || in_expr(&o.steps) || self.within(o.body_span, p)
                }
                StmtKind::Doc(_) => false,
            },
        }
    }

    // ── the program ──

    /// The offsets of the `//!` lines at the top of the file, if they match the tree's.
    fn inner_doc_positions(&self, program: &Program, limit: usize) -> Option<Vec<usize>> {
        let mut found = Vec::new();
        let mut off = 0usize;
        for line in self.text.split_inclusive('\n') {
            if off >= limit {
                break;
            }
            let lead = line.len() - line.trim_start().len();
            if line.trim_start().starts_with("//!") {
                found.push(off + lead);
            }
            off += line.len();
        }
        (found.len() == program.docs.len()).then_some(found)
    }

    fn program(&mut self, program: &Program) -> String {
        let mut out = String::new();
        let first_item = program
            .items
            .first()
            .map_or(self.text.len(), |it| it.span.start as usize);
        // The header: `//!` lines, with any comments among them.
        let mut prev_end: Option<usize> = None;
        if !program.docs.is_empty() {
            let positions = self.inner_doc_positions(program, first_item);
            for (k, d) in program.docs.iter().enumerate() {
                if let Some(pos) = positions.as_ref().and_then(|v| v.get(k)) {
                    for i in self.take_before(*pos) {
                        let c = self.comments[i];
                        push_line(
                            &mut out,
                            prev_end
                                .is_some_and(|pe| self.blank_between(pe, c.span.start as usize)),
                            &c.text,
                        );
                        prev_end = Some(c.span.end as usize);
                    }
                    let blank = prev_end.is_some_and(|pe| self.blank_between(pe, *pos));
                    push_line(&mut out, blank, &doc_line("//!", d));
                    prev_end = Some(
                        pos + self
                            .text
                            .get(*pos..)
                            .and_then(|r| r.find('\n'))
                            .unwrap_or(0),
                    );
                } else {
                    push_line(&mut out, false, &doc_line("//!", d));
                }
            }
        }
        let header = !out.is_empty();
        let mut prev_group: Option<(Option<u8>, bool)> = None;
        for (k, item) in program.items.iter().enumerate() {
            let start = item.span.start as usize;
            let end = self.tight_end(item.span.end as usize).max(start);
            let next = program
                .items
                .get(k + 1)
                .map_or(self.text.len() + 1, |it| it.span.start as usize);
            let leading = self.take_before(start);
            let hoisted = self.take_misplaced(start, end, |f, p| f.placeable_item(item, p));
            let mut doc = self.item_doc(item);
            let trailing = self.take_trailing(next);
            if let Some(t) = trailing {
                doc = concat(vec![doc, suffix_doc(self.comments[t])]);
            }
            let body = render(&doc);
            let single = !body.contains('\n');
            let group_id = item_group(&item.kind);
            let forced = match prev_group {
                Some((g, s)) => !(s && single && g.is_some() && g == group_id),
                None => header,
            };
            let mut first = true;
            for i in leading {
                let c = self.comments[i];
                let blank = (forced && first)
                    || prev_end.is_some_and(|pe| self.blank_between(pe, c.span.start as usize));
                push_line(&mut out, blank, &c.text);
                prev_end = Some(c.span.end as usize);
                first = false;
            }
            let blank =
                (forced && first) || prev_end.is_some_and(|pe| self.blank_between(pe, start));
            let mut blank = blank;
            for i in hoisted {
                push_line(&mut out, blank, &self.comments[i].text);
                blank = false;
            }
            for d in &item.docs {
                push_line(&mut out, blank, &doc_line("///", d));
                blank = false;
            }
            push_line(&mut out, blank, &body);
            prev_end = Some(trailing.map_or(end, |t| self.comments[t].span.end as usize));
            prev_group = Some((group_id, single));
        }
        // Comments at the end of the file.
        for i in self.take_before(usize::MAX) {
            let c = self.comments[i];
            let blank = prev_end.is_some_and(|pe| self.blank_between(pe, c.span.start as usize));
            push_line(&mut out, blank, &c.text);
            prev_end = Some(c.span.end as usize);
        }
        out
    }

    // ── items ──

    fn item_doc(&mut self, item: &Item) -> Doc {
        match &item.kind {
            ItemKind::Use(u) => {
                let mut v = vec![text("use ")];
                match &u.source {
                    UseSource::Module(parts) => {
                        let names: Vec<&str> = parts.iter().map(|p| p.node.as_str()).collect();
                        v.push(text(names.join(".")));
                    }
                    UseSource::File(s) => v.push(text(quote(&s.node))),
                }
                if let Some(names) = &u.names {
                    v.push(text("."));
                    let elems: Vec<Elem<'_>> = names.iter().map(Elem::Name).collect();
                    v.push(self.list("{", "}", &elems, None, Trailing::IfBroken));
                }
                concat(v)
            }
            ItemKind::Param { name, ty, default } => {
                let mut v = vec![text("param "), text(name.node.clone())];
                if let Some(t) = ty {
                    v.push(text(": "));
                    v.push(text(type_str(t)));
                }
                v.push(text(" = "));
                v.push(self.expr(default));
                concat(v)
            }
            ItemKind::Model { name, value } => concat(vec![
                text("model "),
                text(name.node.clone()),
                text(" = "),
                self.expr(value),
            ]),
            ItemKind::Let {
                public,
                pattern,
                ty,
                value,
            } => {
                let kw = if *public { "pub let " } else { "let " };
                self.binding(kw, pattern, ty.as_ref(), value)
            }
            ItemKind::Fn(f) => {
                let kw = if f.public { "pub fn " } else { "fn " };
                let after = f.ret.as_ref().map_or(f.body.span.start, |r| r.span.start) as usize;
                let end = self.params_close(after, f.ret.is_some());
                let mut v = vec![
                    text(kw),
                    text(f.name.node.clone()),
                    self.params(&f.params, end),
                ];
                if let Some(r) = &f.ret {
                    v.push(text(" -> "));
                    v.push(text(type_str(r)));
                }
                v.push(text(" "));
                let body = self.block_entries(&f.body);
                v.push(self.block(&body, f.body.span, Vec::new()));
                concat(v)
            }
            ItemKind::Extern(x) => concat(vec![
                text("extern fn "),
                text(x.name.node.clone()),
                self.params(
                    &x.params,
                    self.params_close(x.ret.span.start as usize, true),
                ),
                text(" -> "),
                text(type_str(&x.ret)),
            ]),
            ItemKind::Save { value, path } => concat(vec![
                text("save "),
                self.expr(value),
                text(" to "),
                self.expr(path),
            ]),
            ItemKind::Report(entries) => {
                // `report a, b as "B"`; when too long, one entry per line after the first.
                let mut rest = Vec::new();
                let mut first = nil();
                for (k, en) in entries.iter().enumerate() {
                    let mut v = vec![self.expr(&en.value)];
                    if let Some(l) = &en.label {
                        v.push(text(" as "));
                        v.push(text(quote(&l.node)));
                    }
                    if k == 0 {
                        first = concat(v);
                    } else {
                        rest.push(text(","));
                        rest.push(Doc::Line);
                        rest.push(concat(v));
                    }
                }
                group(concat(vec![text("report "), first, indent(concat(rest))]))
            }
            ItemKind::Grid(axes) => {
                // `grid a in [..], b in [..]`; when too long, one param per line after the first.
                let mut rest = Vec::new();
                let mut first = nil();
                for (k, axis) in axes.iter().enumerate() {
                    let v = concat(vec![
                        text(axis.name.node.clone()),
                        text(" in "),
                        self.expr(&axis.values),
                    ]);
                    if k == 0 {
                        first = v;
                    } else {
                        rest.push(text(","));
                        rest.push(Doc::Line);
                        rest.push(v);
                    }
                }
                group(concat(vec![text("grid "), first, indent(concat(rest))]))
            }
        }
    }

    fn params(&mut self, params: &[FnParam], list_end: usize) -> Doc {
        let elems: Vec<Elem<'_>> = params.iter().map(Elem::Param).collect();
        self.list("(", ")", &elems, Some(list_end), Trailing::IfBroken)
    }

    fn binding(&mut self, kw: &str, pattern: &Pattern, ty: Option<&TypeExpr>, value: &Expr) -> Doc {
        let mut v = vec![text(kw), text(pattern_str(pattern))];
        if let Some(t) = ty {
            v.push(text(": "));
            v.push(text(type_str(t)));
        }
        v.push(text(" = "));
        v.push(self.expr(value));
        concat(v)
    }

    // ── lists ──

    fn elem_range(&self, e: Elem<'_>) -> (usize, usize) {
        match e {
            Elem::Expr(x) => (x.span.start as usize, self.end_of(x.span)),
            Elem::Arg(a) => (
                a.name.as_ref().map_or(a.value.span.start, |n| n.span.start) as usize,
                self.end_of(a.value.span),
            ),
            Elem::Param(p) => self.param_range(p),
            Elem::Name(n) => (n.span.start as usize, n.span.end as usize),
        }
    }

    fn elem_doc(&mut self, e: Elem<'_>) -> Doc {
        match e {
            Elem::Expr(x) => self.expr(x),
            Elem::Arg(a) => match &a.name {
                Some(n) => concat(vec![text(n.node.clone()), text(": "), self.expr(&a.value)]),
                None => self.expr(&a.value),
            },
            Elem::Param(p) => {
                let mut v = Vec::new();
                for d in &p.docs {
                    v.push(text(doc_line("///", d)));
                    v.push(Doc::HardLine);
                }
                v.push(text(p.name.node.clone()));
                if let Some(t) = &p.ty {
                    v.push(text(": "));
                    v.push(text(type_str(t)));
                    if p.variadic {
                        v.push(text("..."));
                    }
                }
                if let Some(d) = &p.default {
                    v.push(text(" = "));
                    v.push(self.expr(d));
                }
                concat(v)
            }
            Elem::Name(n) => text(n.node.clone()),
        }
    }

    /// A bracketed list. Comments between elements stay there; `close` is where the list's
    /// comments end (the closing bracket), or `None` for a list that takes no comments of
    /// its own beyond those before its elements.
    fn list(
        &mut self,
        open: &str,
        close_str: &str,
        elems: &[Elem<'_>],
        close: Option<usize>,
        trailing: Trailing,
    ) -> Doc {
        let ranges: Vec<(usize, usize)> = elems.iter().map(|&e| self.elem_range(e)).collect();
        let first = ranges.first().map(|r| r.0).or(close).unwrap_or(0);
        let head = self.take_trailing(first);
        let mut pieces: Vec<Doc> = Vec::new();
        for (k, &e) in elems.iter().enumerate() {
            let (start, _) = ranges[k];
            let mut v = Vec::new();
            for i in self.take_before(start) {
                v.push(comment_doc(self.comments[i]));
                v.push(Doc::HardLine);
            }
            v.push(self.elem_doc(e));
            let last = k + 1 == elems.len();
            v.push(match (last, trailing) {
                (false, _) => text(","),
                (true, Trailing::Always) => text(","),
                (true, Trailing::IfBroken) => if_break(text(","), nil()),
            });
            let limit = ranges.get(k + 1).map(|r| r.0).or(close);
            if let Some(limit) = limit {
                if let Some(t) = self.take_trailing(limit) {
                    v.push(suffix_doc(self.comments[t]));
                }
            }
            pieces.push(concat(v));
        }
        if let Some(close) = close {
            let dangling = self.take_before(close);
            if !dangling.is_empty() {
                let mut v = Vec::new();
                for (k, i) in dangling.into_iter().enumerate() {
                    if k > 0 {
                        v.push(Doc::HardLine);
                    }
                    v.push(comment_doc(self.comments[i]));
                }
                pieces.push(concat(v));
            }
        }
        let head = head.map(|t| suffix_doc(self.comments[t]));
        if pieces.is_empty() {
            return match head {
                Some(h) => group(concat(vec![text(open), h, Doc::SoftLine, text(close_str)])),
                None => text(format!("{open}{close_str}")),
            };
        }
        let mut inner = vec![Doc::SoftLine];
        for (k, p) in pieces.into_iter().enumerate() {
            if k > 0 {
                inner.push(Doc::Line);
            }
            inner.push(p);
        }
        group(concat(vec![
            text(open),
            head.unwrap_or_else(nil),
            indent(concat(inner)),
            Doc::SoftLine,
            text(close_str),
        ]))
    }

    // ── blocks ──

    fn block_entries<'b>(&self, b: &'b Block) -> Vec<Entry<'b>> {
        let mut v: Vec<Entry<'b>> = b.stmts.iter().map(Entry::Stmt).collect();
        if let Some(x) = &b.value {
            v.push(Entry::Value(x));
        }
        v
    }

    fn entry_range(&self, e: Entry<'_>) -> (usize, usize) {
        let (s, e) = match e {
            Entry::Stmt(s) => (s.span.start as usize, self.tight_end(s.span.end as usize)),
            Entry::Value(x) => (x.span.start as usize, self.end_of(x.span)),
            Entry::Objective(o) => (o.goal.span.start as usize, self.end_of(o.objective.span)),
        };
        (s, e.max(s))
    }

    /// A block broken over lines (`{}` when empty). `pre` are comments to print first.
    fn block(&mut self, entries: &[Entry<'_>], span: Span, pre: Vec<usize>) -> Doc {
        let close = (span.end as usize).saturating_sub(1);
        let ranges: Vec<(usize, usize)> = entries.iter().map(|&e| self.entry_range(e)).collect();
        let mut lines: Vec<(bool, Doc)> = Vec::new();
        let mut prev_end: Option<usize> = None;
        for i in pre {
            lines.push((false, comment_doc(self.comments[i])));
        }
        let first = ranges.first().map_or(close, |r| r.0);
        let head = if lines.is_empty() {
            self.take_trailing(first)
        } else {
            None
        };
        for (k, &e) in entries.iter().enumerate() {
            let (start, end) = ranges[k];
            for i in self.take_before(start) {
                let c = self.comments[i];
                let blank =
                    prev_end.is_some_and(|pe| self.blank_between(pe, c.span.start as usize));
                lines.push((blank, comment_doc(c)));
                prev_end = Some(c.span.end as usize);
            }
            let mut blank = prev_end.is_some_and(|pe| self.blank_between(pe, start));
            for i in self.take_misplaced(start, end, |f, p| f.placeable_entry(e, p)) {
                lines.push((blank, comment_doc(self.comments[i])));
                blank = false;
            }
            let mut doc = self.entry_doc(e);
            let next = ranges.get(k + 1).map_or(close, |r| r.0);
            prev_end = Some(end);
            if let Some(t) = self.take_trailing(next) {
                doc = concat(vec![doc, suffix_doc(self.comments[t])]);
                prev_end = Some(self.comments[t].span.end as usize);
            }
            lines.push((blank, doc));
        }
        for i in self.take_before(close) {
            let c = self.comments[i];
            let blank = prev_end.is_some_and(|pe| self.blank_between(pe, c.span.start as usize));
            lines.push((blank, comment_doc(c)));
            prev_end = Some(c.span.end as usize);
        }
        let head = head.map(|t| suffix_doc(self.comments[t]));
        if lines.is_empty() {
            return match head {
                Some(h) => concat(vec![text("{"), h, Doc::HardLine, text("}")]),
                None => text("{}"),
            };
        }
        let mut inner = Vec::new();
        for (blank, d) in lines {
            inner.push(Doc::HardLine);
            if blank {
                inner.push(Doc::HardLine);
            }
            inner.push(d);
        }
        concat(vec![
            text("{"),
            head.unwrap_or_else(nil),
            indent(concat(inner)),
            Doc::HardLine,
            text("}"),
        ])
    }

    fn entry_doc(&mut self, e: Entry<'_>) -> Doc {
        match e {
            Entry::Value(x) => self.expr(x),
            Entry::Objective(o) => {
                let goal = match o.goal.node {
                    Direction::Ascend => "maximize ",
                    Direction::Descend => "minimize ",
                };
                concat(vec![text(goal), self.expr(&o.objective)])
            }
            Entry::Stmt(s) => self.stmt(s),
        }
    }

    fn stmt(&mut self, s: &Stmt) -> Doc {
        match &s.node {
            StmtKind::Let {
                mutable,
                pattern,
                ty,
                value,
            } => self.binding(
                if *mutable { "var " } else { "let " },
                pattern,
                ty.as_ref(),
                value,
            ),
            StmtKind::Assign { target, op, value } => concat(vec![
                text(target.node.clone()),
                text(format!(" {} ", op.node.as_str())),
                self.expr(value),
            ]),
            StmtKind::For {
                pattern,
                iter,
                body,
            } => {
                let head = vec![
                    text("for "),
                    text(pattern_str(pattern)),
                    text(" in "),
                    self.expr(iter),
                    text(" "),
                ];
                let entries = self.block_entries(body);
                let b = self.block(&entries, body.span, Vec::new());
                concat(vec![concat(head), b])
            }
            StmtKind::Repeat { count, body } => {
                let head = vec![text("repeat "), self.expr(count), text(" ")];
                let entries = self.block_entries(body);
                let b = self.block(&entries, body.span, Vec::new());
                concat(vec![concat(head), b])
            }
            StmtKind::If(x) => self.expr(x),
            StmtKind::Optimize(o) => {
                let dir = match o.direction.node {
                    Direction::Ascend => "ascend ",
                    Direction::Descend => "descend ",
                };
                let mut head = vec![
                    text(dir),
                    text(o.var.node.clone()),
                    text(" with "),
                    self.expr(&o.optimizer),
                    text(" for "),
                    self.expr(&o.steps),
                    text(" steps "),
                ];
                if let Some(k) = &o.index {
                    head.push(text(format!("as {} ", k.node)));
                }
                let mut entries: Vec<Entry<'_>> = o.stmts.iter().map(Entry::Stmt).collect();
                entries.push(Entry::Objective(o));
                let b = self.block(&entries, o.body_span, Vec::new());
                concat(vec![concat(head), b])
            }
            StmtKind::Doc(t) => text(doc_line("///", t)),
        }
    }

    // ── expressions ──

    fn expr(&mut self, e: &Expr) -> Doc {
        match &e.node {
            ExprKind::Int(n) => {
                let src = self.source(e.span);
                let same = !src.is_empty()
                    && src.bytes().all(|b| b.is_ascii_digit() || b == b'_')
                    && src.replace('_', "").parse::<i64>().ok() == Some(*n);
                text(if same { src.to_string() } else { n.to_string() })
            }
            ExprKind::Float(v, s) => text(if s.is_empty() {
                format!("{v:?}")
            } else {
                s.clone()
            }),
            ExprKind::Str(s) => text(quote(s)),
            ExprKind::Bool(b) => text(if *b { "true" } else { "false" }),
            ExprKind::Name(n) => text(n.clone()),
            ExprKind::List(xs) => {
                let elems: Vec<Elem<'_>> = xs.iter().map(Elem::Expr).collect();
                let close = (e.span.end as usize).saturating_sub(1);
                self.list("[", "]", &elems, Some(close), Trailing::IfBroken)
            }
            ExprKind::Tuple(xs) => {
                let elems: Vec<Elem<'_>> = xs.iter().map(Elem::Expr).collect();
                let close = (e.span.end as usize).saturating_sub(1);
                let t = if xs.len() == 1 {
                    Trailing::Always
                } else {
                    Trailing::IfBroken
                };
                self.list("(", ")", &elems, Some(close), t)
            }
            ExprKind::Paren(x) => concat(vec![text("("), self.expr(x), text(")")]),
            ExprKind::Unary(op, x) => concat(vec![text(op.node.as_str()), self.expr(x)]),
            ExprKind::Binary(op, ..) if op.node == BinOp::Pow => self.pow(e),
            ExprKind::Binary(op, ..) => {
                // Flatten a left-leaning chain of operators of one precedence.
                let prec = op.node.precedence();
                let mut rights: Vec<(BinOp, &Expr)> = Vec::new();
                let mut cur = e;
                while let ExprKind::Binary(o, l, r) = &cur.node {
                    if o.node.precedence() != prec || o.node == BinOp::Pow {
                        break;
                    }
                    rights.push((o.node, r));
                    cur = l;
                }
                let first = self.expr(cur);
                let mut rest = Vec::new();
                for (o, r) in rights.into_iter().rev() {
                    rest.push(Doc::Line);
                    rest.push(text(format!("{} ", o.as_str())));
                    rest.push(self.expr(r));
                }
                group(concat(vec![first, indent(concat(rest))]))
            }
            ExprKind::Call(callee, args) => {
                let c = self.expr(callee);
                let elems: Vec<Elem<'_>> = args.iter().map(Elem::Arg).collect();
                let close = (e.span.end as usize).saturating_sub(1);
                concat(vec![
                    c,
                    self.list("(", ")", &elems, Some(close), Trailing::IfBroken),
                ])
            }
            ExprKind::Method(recv, name, args) => {
                let r = self.expr(recv);
                let elems: Vec<Elem<'_>> = args.iter().map(Elem::Arg).collect();
                let close = (e.span.end as usize).saturating_sub(1);
                concat(vec![
                    r,
                    text(format!(".{}", name.node)),
                    self.list("(", ")", &elems, Some(close), Trailing::IfBroken),
                ])
            }
            ExprKind::Field(x, name) => concat(vec![self.expr(x), text(format!(".{}", name.node))]),
            ExprKind::Index(x, i) => concat(vec![self.expr(x), text("["), self.expr(i), text("]")]),
            ExprKind::Slice(x, from, to) => {
                let mut parts = vec![self.expr(x), text("[")];
                if let Some(a) = from {
                    parts.push(self.expr(a));
                }
                parts.push(text(":"));
                if let Some(b) = to {
                    parts.push(self.expr(b));
                }
                parts.push(text("]"));
                concat(parts)
            }
            ExprKind::If(..) => self.if_chain(e),
            ExprKind::Block(b) => {
                let entries = self.block_entries(b);
                self.block(&entries, b.span, Vec::new())
            }
            ExprKind::Error => {
                let src = self.source(e.span).trim();
                text(if src.is_empty() || src.contains('\n') {
                    "_".to_string()
                } else {
                    src.to_string()
                })
            }
        }
    }

    /// `a^b^c`, no spaces, never broken (the right-leaning chain is walked in a loop).
    fn pow(&mut self, e: &Expr) -> Doc {
        let mut v = Vec::new();
        let mut cur = e;
        while let ExprKind::Binary(op, l, r) = &cur.node {
            if op.node != BinOp::Pow {
                break;
            }
            v.push(self.expr(l));
            v.push(text("^"));
            cur = r;
        }
        v.push(self.expr(cur));
        concat(v)
    }

    /// An `if` with its `else if` chain, as one group: on one line when every branch is a
    /// lone expression and it fits, otherwise every branch broken over lines.
    fn if_chain(&mut self, e: &Expr) -> Doc {
        let mut v = Vec::new();
        let mut cur = e;
        let mut pre: Vec<usize> = Vec::new();
        loop {
            let ExprKind::If(cond, then, els) = &cur.node else {
                v.push(self.expr(cur));
                break;
            };
            v.push(text("if "));
            v.push(self.expr(cond));
            v.push(text(" "));
            v.push(self.branch(then, std::mem::take(&mut pre)));
            match els {
                None => break,
                Some(x) => {
                    v.push(text(" else "));
                    match &x.node {
                        ExprKind::If(..) => {
                            // Comments before `else if` go to the top of its block.
                            pre = self.take_before(x.span.start as usize);
                            cur = x;
                        }
                        ExprKind::Block(b) => {
                            v.push(self.branch(b, Vec::new()));
                            break;
                        }
                        _ => {
                            v.push(self.expr(x));
                            break;
                        }
                    }
                }
            }
        }
        group(concat(v))
    }

    /// One branch of an `if`: `{ value }` that may stay on one line, or a broken block.
    fn branch(&mut self, b: &Block, pre: Vec<usize>) -> Doc {
        let simple = b.stmts.is_empty()
            && b.value.is_some()
            && pre.is_empty()
            && self.peek_before(b.span.end as usize).is_none();
        match (&b.value, simple) {
            (Some(x), true) => concat(vec![
                text("{"),
                indent(concat(vec![Doc::Line, self.expr(x)])),
                Doc::Line,
                text("}"),
            ]),
            _ => {
                let entries = self.block_entries(b);
                self.block(&entries, b.span, pre)
            }
        }
    }
}

/// Appends a line (with a blank line before it when asked) to the output.
fn push_line(out: &mut String, blank: bool, line: &str) {
    if !out.is_empty() {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        if blank {
            out.push('\n');
        }
    }
    out.push_str(line);
}

fn pattern_str(p: &Pattern) -> String {
    match &p.node {
        PatternKind::Name(n) => n.clone(),
        PatternKind::Wildcard => "_".to_string(),
        PatternKind::Tuple(xs) => {
            let parts: Vec<String> = xs.iter().map(pattern_str).collect();
            if parts.len() == 1 {
                format!("({},)", parts[0])
            } else {
                format!("({})", parts.join(", "))
            }
        }
    }
}

fn type_str(t: &TypeExpr) -> String {
    match &t.node {
        TypeExprKind::Named { name, args } => {
            if args.is_empty() {
                return name.node.clone();
            }
            let parts: Vec<String> = args
                .iter()
                .map(|a| match a {
                    TypeArg::Dim(d) => d.node.to_string(),
                    TypeArg::Any(_) => "_".to_string(),
                    TypeArg::Type(t) => type_str(t),
                })
                .collect();
            format!("{}[{}]", name.node, parts.join(", "))
        }
        TypeExprKind::Tuple(xs) => {
            let parts: Vec<String> = xs.iter().map(type_str).collect();
            if parts.len() == 1 {
                format!("({},)", parts[0])
            } else {
                format!("({})", parts.join(", "))
            }
        }
    }
}
