//! Lowering pest's parse tree into the AST: one `lower_<rule>` function per rule, in grammar
//! order. Children are read through `Kids`, a small cursor, so a tree that does not have the
//! shape the grammar promises becomes an internal error value, never a panic.
//!
//! Desugaring done here, each with a comment where it happens: a block's last expression
//! becomes its value; `x.f(args)` becomes a method call; `(e)` is kept as `Paren` for the
//! formatter; `(a,)` is a one-element tuple. Slips that the grammar accepts only so they can
//! be explained (`name = value` in a call, a keyword used as a name) are reported here and
//! lowered as if written correctly, so checking can go on.

use pest::iterators::{Pair, Pairs};

use super::ast::*;
use super::parser::Rule;
use crate::diagnostics::{Code, Diag, Diags};
use crate::source::{FileId, Ident, Span, Spanned};

/// Most infix operators accepted in one expression (the pre-scan refuses more first).
pub use super::scan::MAX_OPERATORS;
/// Most prefix operators or postfix accessors on one operand.
pub const MAX_AFFIXES: usize = 64;
/// Deepest nesting of expressions and blocks accepted by the lowering: a backstop that text
/// within the pre-scan's limits never reaches (a bracket adds at most 3 levels, an `else if`
/// one), so each too-deep construct gets exactly one error, the pre-scan's.
pub const MAX_DEPTH: usize = 3 * super::scan::MAX_NESTING + super::scan::MAX_ELSE_IF + 16;

/// Lowering state: the file, collected diagnostics and the current nesting depth.
pub struct Lowerer {
    file: FileId,
    /// The offset in the file of the text being lowered (a part of the file parsed alone).
    base: usize,
    /// Problems found while lowering.
    pub diags: Diags,
    depth: usize,
    /// A nesting limit was reported already.
    deep_reported: bool,
}

/// A cursor over the children of a pair.
struct Kids<'i> {
    inner: std::iter::Peekable<Pairs<'i, Rule>>,
}

impl<'i> Kids<'i> {
    fn of(pair: Pair<'i, Rule>) -> Self {
        Kids {
            inner: pair.into_inner().peekable(),
        }
    }

    /// The next child if it has rule `r`.
    fn take(&mut self, r: Rule) -> Option<Pair<'i, Rule>> {
        if self.inner.peek().is_some_and(|p| p.as_rule() == r) {
            self.inner.next()
        } else {
            None
        }
    }

    /// The next child if it has one of the rules.
    fn take_any(&mut self, rs: &[Rule]) -> Option<Pair<'i, Rule>> {
        if self.inner.peek().is_some_and(|p| rs.contains(&p.as_rule())) {
            self.inner.next()
        } else {
            None
        }
    }

    fn next(&mut self) -> Option<Pair<'i, Rule>> {
        self.inner.next()
    }

    fn peek_rule(&mut self) -> Option<Rule> {
        self.inner.peek().map(|p| p.as_rule())
    }
}

/// An internal inconsistency between grammar and lowering (a bug, reported as a diagnostic).
fn shape_bug(span: Span, what: &str) -> Diag {
    Diag::error(
        Code::Syntax,
        span,
        format!("internal error: unexpected parse tree ({what})"),
        "here",
    )
    .with_help("this is a bug in mapga; please report it with this file")
}

impl Lowerer {
    /// A lowerer for `file`.
    pub fn new(file: FileId) -> Self {
        Self::with_offset(file, 0)
    }

    /// A lowerer for a part of `file` that starts at byte `base`: spans are offsets in the file.
    pub fn with_offset(file: FileId, base: usize) -> Self {
        Lowerer {
            file,
            base,
            diags: Diags::new(),
            depth: 0,
            deep_reported: false,
        }
    }

    /// The span of a pair, without the whitespace and plain comments pest may leave at its
    /// end (after an optional or repeated part that did not match).
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = p.as_span();
        let text = s.as_str();
        let start = self.base + s.start();
        Span::new(self.file, start, start + code_len(text))
    }

    fn ident(&mut self, p: Pair<'_, Rule>) -> Ident {
        let span = self.span(&p);
        if p.as_rule() == Rule::keyword_as_name {
            let w = p.as_str();
            self.diags.push(
                Diag::error(
                    Code::KeywordAsName,
                    span,
                    format!("`{w}` is a reserved word and cannot be used as a name"),
                    "reserved word",
                )
                .with_help(format!("choose another name, such as `{w}_`")),
            );
        }
        Spanned::new(p.as_str().to_string(), span)
    }

    /// Reads a name child (an `ident` or a misused keyword).
    fn expect_ident(&mut self, kids: &mut Kids<'_>, at: Span) -> Ident {
        match kids.take_any(&[Rule::ident, Rule::keyword_as_name]) {
            Some(p) => self.ident(p),
            None => {
                self.diags.push(shape_bug(at, "expected a name"));
                Spanned::new(String::new(), at)
            }
        }
    }

    fn docs(kids: &mut Kids<'_>) -> Vec<String> {
        let mut docs = Vec::new();
        while let Some(d) = kids.take(Rule::doc) {
            docs.push(strip_doc(d.as_str(), "///"));
        }
        docs
    }

    /// `program`: the whole file.
    pub fn lower_program(&mut self, pair: Pair<'_, Rule>) -> Program {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        let mut docs = Vec::new();
        while let Some(d) = kids.take(Rule::inner_doc) {
            docs.push(strip_doc(d.as_str(), "//!"));
        }
        let mut items = Vec::new();
        while let Some(p) = kids.take(Rule::item) {
            items.push(self.lower_item(p));
        }
        Program { docs, items, span }
    }

    /// `item`: doc comments and one declaration.
    fn lower_item(&mut self, pair: Pair<'_, Rule>) -> Item {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        let docs = Self::docs(&mut kids);
        let kind = match kids.next() {
            Some(p) => match p.as_rule() {
                Rule::use_item => ItemKind::Use(self.lower_use(p)),
                Rule::param_item => self.lower_param(p),
                Rule::model_item => self.lower_model(p),
                Rule::let_item => self.lower_let_item(p),
                Rule::fn_item => ItemKind::Fn(self.lower_fn(p)),
                Rule::extern_item => ItemKind::Extern(self.lower_extern(p)),
                Rule::save_item => self.lower_save(p),
                Rule::report_item => self.lower_report(p),
                Rule::grid_item => self.lower_grid(p),
                _ => {
                    self.diags.push(shape_bug(span, "item"));
                    ItemKind::Report(Vec::new())
                }
            },
            None => {
                self.diags.push(shape_bug(span, "empty item"));
                ItemKind::Report(Vec::new())
            }
        };
        Item { docs, kind, span }
    }

    /// `use_item`.
    fn lower_use(&mut self, pair: Pair<'_, Rule>) -> UseItem {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_use);
        let source = match kids.next() {
            // A path with a bad escape (reported) imports nothing: an empty module path.
            Some(p) if p.as_rule() == Rule::string => match self.lower_string(p) {
                Some(s) => UseSource::File(s),
                None => UseSource::Module(Vec::new()),
            },
            Some(p) if p.as_rule() == Rule::module_path => {
                let mut k = Kids::of(p);
                let mut parts = Vec::new();
                while let Some(i) = k.take(Rule::ident) {
                    parts.push(self.ident(i));
                }
                UseSource::Module(parts)
            }
            _ => {
                self.diags.push(shape_bug(span, "use"));
                UseSource::Module(Vec::new())
            }
        };
        let names = kids.take(Rule::use_names).map(|p| {
            let mut k = Kids::of(p);
            let mut names = Vec::new();
            while let Some(i) = k.take(Rule::ident) {
                names.push(self.ident(i));
            }
            names
        });
        UseItem { source, names }
    }

    /// `param_item`.
    fn lower_param(&mut self, pair: Pair<'_, Rule>) -> ItemKind {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_param);
        let name = self.expect_ident(&mut kids, span);
        let ty = kids.take(Rule::type_expr).map(|t| self.lower_type(t));
        let default = self.expect_expr(&mut kids, span);
        ItemKind::Param { name, ty, default }
    }

    /// `model_item`.
    fn lower_model(&mut self, pair: Pair<'_, Rule>) -> ItemKind {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_model);
        let name = self.expect_ident(&mut kids, span);
        let value = self.expect_expr(&mut kids, span);
        ItemKind::Model { name, value }
    }

    /// `let_item`.
    fn lower_let_item(&mut self, pair: Pair<'_, Rule>) -> ItemKind {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        let public = kids.take(Rule::kw_pub).is_some();
        kids.take(Rule::kw_let);
        let (pattern, ty, value) = self.lower_binding(&mut kids, span);
        ItemKind::Let {
            public,
            pattern,
            ty,
            value,
        }
    }

    /// The `binding` part shared by `let` and `var`: pattern, optional type, value.
    fn lower_binding(
        &mut self,
        kids: &mut Kids<'_>,
        span: Span,
    ) -> (Pattern, Option<TypeExpr>, Expr) {
        let pattern = match kids.take(Rule::pattern) {
            Some(p) => self.lower_pattern(p),
            None => {
                self.diags.push(shape_bug(span, "binding pattern"));
                Spanned::new(PatternKind::Wildcard, span)
            }
        };
        let ty = kids.take(Rule::type_expr).map(|t| self.lower_type(t));
        let value = self.expect_expr(kids, span);
        (pattern, ty, value)
    }

    /// `fn_item`.
    fn lower_fn(&mut self, pair: Pair<'_, Rule>) -> FnDef {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        let public = kids.take(Rule::kw_pub).is_some();
        kids.take(Rule::kw_fn);
        let name = self.expect_ident(&mut kids, span);
        let params = match kids.take(Rule::fn_params) {
            Some(p) => self.lower_fn_params(p),
            None => Vec::new(),
        };
        let ret = kids.take(Rule::type_expr).map(|t| self.lower_type(t));
        let body = match kids.take(Rule::block) {
            Some(b) => self.lower_block(b),
            None => {
                self.diags.push(shape_bug(span, "function body"));
                Block {
                    stmts: Vec::new(),
                    value: None,
                    span,
                }
            }
        };
        FnDef {
            public,
            name,
            params,
            ret,
            body,
        }
    }

    /// `extern_item`.
    fn lower_extern(&mut self, pair: Pair<'_, Rule>) -> ExternDef {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_extern);
        kids.take(Rule::kw_fn);
        let name = self.expect_ident(&mut kids, span);
        let params = match kids.take(Rule::fn_params) {
            Some(p) => self.lower_fn_params(p),
            None => Vec::new(),
        };
        let ret = match kids.take(Rule::type_expr) {
            Some(t) => self.lower_type(t),
            None => {
                self.diags.push(shape_bug(span, "extern result type"));
                Spanned::new(TypeExprKind::Tuple(Vec::new()), span)
            }
        };
        ExternDef { name, params, ret }
    }

    /// `fn_params`.
    fn lower_fn_params(&mut self, pair: Pair<'_, Rule>) -> Vec<FnParam> {
        let mut kids = Kids::of(pair);
        let mut out = Vec::new();
        while let Some(p) = kids.take(Rule::fn_param) {
            let span = self.span(&p);
            let mut k = Kids::of(p);
            let docs = Self::docs(&mut k);
            let name = self.expect_ident(&mut k, span);
            let ty = k.take(Rule::type_expr).map(|t| self.lower_type(t));
            let variadic = k.take(Rule::variadic).is_some();
            let default = k.take(Rule::expr).map(|e| self.lower_expr(e));
            out.push(FnParam {
                docs,
                name,
                ty,
                variadic,
                default,
            });
        }
        out
    }

    /// `save_item`.
    fn lower_save(&mut self, pair: Pair<'_, Rule>) -> ItemKind {
        let span = self.span(&pair);
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_save);
        let value = self.expect_expr(&mut kids, span);
        kids.take(Rule::kw_to);
        let path = self.expect_expr(&mut kids, span);
        ItemKind::Save { value, path }
    }

    /// `report_item`.
    fn lower_report(&mut self, pair: Pair<'_, Rule>) -> ItemKind {
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_report);
        let mut entries = Vec::new();
        while let Some(e) = kids.take(Rule::report_entry) {
            let span = self.span(&e);
            let mut k = Kids::of(e);
            let value = self.expect_expr(&mut k, span);
            k.take(Rule::kw_as);
            let label = k.take(Rule::string).and_then(|s| self.lower_string(s));
            entries.push(ReportEntry { value, label });
        }
        ItemKind::Report(entries)
    }

    /// `grid_item`.
    fn lower_grid(&mut self, pair: Pair<'_, Rule>) -> ItemKind {
        let mut kids = Kids::of(pair);
        kids.take(Rule::kw_grid);
        let mut axes = Vec::new();
        while let Some(a) = kids.take(Rule::grid_axis) {
            let span = self.span(&a);
            let mut k = Kids::of(a);
            let name = self.expect_ident(&mut k, span);
            k.take(Rule::kw_in);
            let values = self.expect_expr(&mut k, span);
            axes.push(GridAxis { name, values });
        }
        ItemKind::Grid(axes)
    }

    // ── types ──

    /// `type_expr`.
    fn lower_type(&mut self, pair: Pair<'_, Rule>) -> TypeExpr {
        let span = self.span(&pair);
        let Some(inner) = Kids::of(pair).next() else {
            self.diags.push(shape_bug(span, "type"));
            return Spanned::new(TypeExprKind::Tuple(Vec::new()), span);
        };
        match inner.as_rule() {
            Rule::tuple_type => {
                let mut k = Kids::of(inner);
                let mut elems = Vec::new();
                while let Some(t) = k.take(Rule::type_expr) {
                    elems.push(self.lower_type(t));
                }
                Spanned::new(TypeExprKind::Tuple(elems), span)
            }
            _ => {
                let mut k = Kids::of(inner);
                let name = self.expect_ident(&mut k, span);
                let mut args = Vec::new();
                while let Some(a) = k.next() {
                    let aspan = self.span(&a);
                    args.push(match a.as_rule() {
                        Rule::int => match parse_int(a.as_str()) {
                            Some(n) if n >= 0 => TypeArg::Dim(Spanned::new(n as u64, aspan)),
                            _ => {
                                self.bad_literal(aspan, "this dimension is too large");
                                TypeArg::Any(aspan)
                            }
                        },
                        Rule::wildcard => TypeArg::Any(aspan),
                        _ => TypeArg::Type(self.lower_type(a)),
                    });
                }
                Spanned::new(TypeExprKind::Named { name, args }, span)
            }
        }
    }

    // ── patterns ──

    /// `pattern`.
    fn lower_pattern(&mut self, pair: Pair<'_, Rule>) -> Pattern {
        let span = self.span(&pair);
        let Some(inner) = Kids::of(pair).next() else {
            self.diags.push(shape_bug(span, "pattern"));
            return Spanned::new(PatternKind::Wildcard, span);
        };
        match inner.as_rule() {
            Rule::wildcard => Spanned::new(PatternKind::Wildcard, span),
            Rule::tuple_pattern => {
                let mut k = Kids::of(inner);
                let mut elems = Vec::new();
                while let Some(p) = k.take(Rule::pattern) {
                    elems.push(self.lower_pattern(p));
                }
                Spanned::new(PatternKind::Tuple(elems), span)
            }
            _ => {
                let id = self.ident(inner);
                Spanned::new(PatternKind::Name(id.node), span)
            }
        }
    }

    // ── expressions ──

    fn expect_expr(&mut self, kids: &mut Kids<'_>, at: Span) -> Expr {
        match kids.take(Rule::expr) {
            Some(e) => self.lower_expr(e),
            None => {
                self.diags.push(shape_bug(at, "expected an expression"));
                Spanned::new(ExprKind::Error, at)
            }
        }
    }

    fn bad_literal(&mut self, span: Span, label: &str) {
        self.diags.push(
            Diag::error(Code::BadLiteral, span, "invalid literal", label)
                .with_help("integers must fit in 64 bits; write large values as floats (`1e20`)"),
        );
    }

    /// Reports a nesting or length limit (once per parse: the parts around the first one that
    /// is too deep are too deep as well) and stands in an error value.
    fn too_deep(&mut self, span: Span, message: &str) -> Expr {
        if !self.deep_reported {
            self.deep_reported = true;
            self.diags.push(
                Diag::error(Code::TooDeep, span, message, "too long")
                    .with_help("split it into several `let` bindings"),
            );
        }
        Spanned::new(ExprKind::Error, span)
    }

    /// `expr`: the flat operand/operator sequence, folded by precedence climbing.
    fn lower_expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        if self.depth >= MAX_DEPTH {
            return self.too_deep(span, "this expression is nested too deeply");
        }
        self.depth += 1;
        let e = self.lower_expr_inner(pair, span);
        self.depth -= 1;
        e
    }

    fn lower_expr_inner(&mut self, pair: Pair<'_, Rule>, span: Span) -> Expr {
        // Split into units (prefix ops, primary, postfixes) separated by infix operators.
        let mut units: Vec<Unit<'_>> = vec![Unit::default()];
        let mut ops: Vec<Spanned<BinOp>> = Vec::new();
        for p in pair.into_inner() {
            let r = p.as_rule();
            if let Some(op) = infix(r) {
                let s = self.span(&p);
                ops.push(Spanned::new(op, s));
                units.push(Unit::default());
                continue;
            }
            let Some(u) = units.last_mut() else { continue };
            match r {
                Rule::neg | Rule::not_op => {
                    let op = if r == Rule::neg { UnOp::Neg } else { UnOp::Not };
                    let (a, b) = (p.as_span().start(), p.as_span().end());
                    let s = Span::new(self.file, self.base + a, self.base + b);
                    u.prefix.push(Spanned::new(op, s));
                }
                Rule::unit => {
                    let mut parts = p.into_inner();
                    u.primary = parts.next();
                    u.postfix.extend(parts);
                }
                _ => u.primary = Some(p),
            }
        }
        if ops.len() > MAX_OPERATORS {
            return self.too_deep(
                span,
                &format!("this expression has more than {MAX_OPERATORS} operators"),
            );
        }
        if units
            .iter()
            .any(|u| u.prefix.len() > MAX_AFFIXES || u.postfix.len() > MAX_AFFIXES)
        {
            return self.too_deep(
                span,
                &format!("an operand has more than {MAX_AFFIXES} prefix operators or accessors"),
            );
        }
        let operands: Vec<Operand> = units
            .into_iter()
            .map(|u| Operand {
                prefix: u.prefix,
                expr: Some(self.lower_unit_core(u.primary, u.postfix, span)),
            })
            .collect();
        let mut climber = Climber {
            operands,
            ops,
            next: 0,
        };
        climber.climb(0)
    }

    /// A primary with its postfix accessors applied, left to right.
    fn lower_unit_core(
        &mut self,
        primary: Option<Pair<'_, Rule>>,
        postfix: Vec<Pair<'_, Rule>>,
        at: Span,
    ) -> Expr {
        let mut e = match primary {
            Some(p) => self.lower_primary(p),
            None => {
                self.diags.push(shape_bug(at, "operand"));
                Spanned::new(ExprKind::Error, at)
            }
        };
        for p in postfix {
            let pspan = self.span(&p);
            let full = e.span.to(pspan);
            e = match p.as_rule() {
                Rule::call_args => {
                    let args = self.lower_args(p);
                    // Desugaring: `x.f(args)` is a method call, not a call of the field `x.f`.
                    match e.node {
                        ExprKind::Field(recv, name) => {
                            Spanned::new(ExprKind::Method(recv, name, args), full)
                        }
                        other => Spanned::new(
                            ExprKind::Call(Box::new(Spanned::new(other, e.span)), args),
                            full,
                        ),
                    }
                }
                Rule::index => {
                    let mut k = Kids::of(p);
                    let first = k.take(Rule::expr).map(|x| self.lower_expr(x));
                    if k.take(Rule::slice_colon).is_some() {
                        let end = k.take(Rule::expr).map(|x| Box::new(self.lower_expr(x)));
                        Spanned::new(ExprKind::Slice(Box::new(e), first.map(Box::new), end), full)
                    } else {
                        let i = first.unwrap_or_else(|| {
                            self.diags.push(shape_bug(pspan, "expected an expression"));
                            Spanned::new(ExprKind::Error, pspan)
                        });
                        Spanned::new(ExprKind::Index(Box::new(e), Box::new(i)), full)
                    }
                }
                _ => {
                    let mut k = Kids::of(p);
                    let name = self.expect_ident(&mut k, pspan);
                    Spanned::new(ExprKind::Field(Box::new(e), name), full)
                }
            };
        }
        e
    }

    /// `call_args`: positional arguments, then named ones.
    fn lower_args(&mut self, pair: Pair<'_, Rule>) -> Vec<Arg> {
        let mut out: Vec<Arg> = Vec::new();
        let mut first_named: Option<Span> = None;
        for a in pair.into_inner() {
            let aspan = self.span(&a);
            let arg = match a.as_rule() {
                Rule::named_arg | Rule::misnamed_arg => {
                    let misnamed = a.as_rule() == Rule::misnamed_arg;
                    let text = a.as_str().to_string();
                    let mut k = Kids::of(a);
                    let name = self.expect_ident(&mut k, aspan);
                    if misnamed {
                        let skip = name.node.len();
                        let off = text
                            .get(skip..)
                            .and_then(|t| t.find('='))
                            .map_or(0, |o| o + skip);
                        let at = aspan.start as usize + off;
                        let eq = Span::new(self.file, at, at + 1);
                        self.diags.push(
                            Diag::error(
                                Code::NamedArgEquals,
                                eq,
                                "named arguments use `:`, not `=`",
                                "write `:` here",
                            )
                            .with_help(format!("write `{}: ...`", name.node)),
                        );
                    }
                    let value = self.expect_expr(&mut k, aspan);
                    first_named.get_or_insert(aspan);
                    Arg {
                        name: Some(name),
                        value,
                    }
                }
                _ => {
                    let value = self.lower_expr(a);
                    if let Some(n) = first_named {
                        self.diags.push(
                            Diag::error(
                                Code::PositionalAfterNamed,
                                value.span,
                                "a positional argument cannot follow a named one",
                                "positional argument",
                            )
                            .with_label(n, "first named argument")
                            .with_help("put positional arguments first, or name this one too"),
                        );
                    }
                    Arg { name: None, value }
                }
            };
            out.push(arg);
        }
        out
    }

    /// One operand.
    fn lower_primary(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = self.span(&p);
        let node = match p.as_rule() {
            Rule::int => match parse_int(p.as_str()) {
                Some(n) => ExprKind::Int(n),
                None => {
                    self.bad_literal(span, "does not fit in a 64-bit integer");
                    ExprKind::Error
                }
            },
            Rule::float => {
                let t = p.as_str();
                match t.replace('_', "").parse::<f64>() {
                    Ok(v) if v.is_finite() => ExprKind::Float(v, t.to_string()),
                    _ => {
                        self.bad_literal(span, "this number is out of range");
                        ExprKind::Error
                    }
                }
            }
            Rule::string => match self.lower_string(p) {
                Some(s) => ExprKind::Str(s.node),
                None => ExprKind::Error,
            },
            Rule::bool => ExprKind::Bool(p.as_str() == "true"),
            Rule::ident | Rule::keyword_as_name => ExprKind::Name(self.ident(p).node),
            Rule::list => {
                let elems = p.into_inner().map(|e| self.lower_expr(e)).collect();
                ExprKind::List(elems)
            }
            Rule::paren => {
                let mut elems = Vec::new();
                let mut trailing = false;
                for e in p.into_inner() {
                    if e.as_rule() == Rule::trailing_comma {
                        trailing = true;
                    } else {
                        elems.push(self.lower_expr(e));
                    }
                }
                // Desugaring: `(e)` is grouping, `(e,)` and `(a, b)` are tuples, `()` is unit.
                if elems.len() == 1 && !trailing {
                    match elems.pop() {
                        Some(e) => ExprKind::Paren(Box::new(e)),
                        None => ExprKind::Error,
                    }
                } else {
                    ExprKind::Tuple(elems)
                }
            }
            Rule::block_expr => match Kids::of(p).take(Rule::block) {
                Some(b) => ExprKind::Block(self.lower_block(b)),
                None => ExprKind::Error,
            },
            Rule::if_expr => return self.lower_if(p),
            _ => {
                self.diags.push(shape_bug(span, "primary"));
                ExprKind::Error
            }
        };
        Spanned::new(node, span)
    }

    /// `if_expr`.
    fn lower_if(&mut self, p: Pair<'_, Rule>) -> Expr {
        let span = self.span(&p);
        if self.depth >= MAX_DEPTH {
            return self.too_deep(span, "this expression is nested too deeply");
        }
        self.depth += 1;
        let mut k = Kids::of(p);
        k.take(Rule::kw_if);
        let cond = self.expect_expr(&mut k, span);
        let then = match k.take(Rule::block) {
            Some(b) => self.lower_block(b),
            None => Block {
                stmts: Vec::new(),
                value: None,
                span,
            },
        };
        let otherwise = if k.take(Rule::kw_else).is_some() {
            match k.next() {
                Some(e) if e.as_rule() == Rule::if_expr => Some(Box::new(self.lower_if(e))),
                Some(b) => {
                    let bspan = self.span(&b);
                    Some(Box::new(Spanned::new(
                        ExprKind::Block(self.lower_block(b)),
                        bspan,
                    )))
                }
                None => None,
            }
        } else {
            None
        };
        self.depth -= 1;
        Spanned::new(ExprKind::If(Box::new(cond), then, otherwise), span)
    }

    /// A string literal with its escapes resolved; `None` (after one report naming every bad
    /// escape) when it has unknown escapes, so its value is not used as a path or a label.
    fn lower_string(&mut self, p: Pair<'_, Rule>) -> Option<Spanned<String>> {
        let span = self.span(&p);
        let raw = p.as_str();
        let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
        let mut out = String::with_capacity(inner.len());
        let mut bad: Vec<(Span, char)> = Vec::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, other)) => {
                    let at = span.start as usize + 1 + i;
                    bad.push((Span::new(self.file, at, at + 1 + other.len_utf8()), other));
                }
                None => {}
            }
        }
        let Some(&(first, c)) = bad.first() else {
            return Some(Spanned::new(out, span));
        };
        let message = if bad.len() == 1 {
            format!("unknown escape `\\{c}` in a string")
        } else {
            let list: Vec<String> = bad.iter().map(|(_, c)| format!("`\\{c}`")).collect();
            format!("unknown escapes {} in a string", list.join(", "))
        };
        let mut d = Diag::error(Code::BadLiteral, first, message, "unknown escape");
        for &(s, _) in &bad[1..] {
            d = d.with_label(s, "unknown escape");
        }
        self.diags.push(
            d.with_help("the escapes are `\\n`, `\\t`, `\\\\` and `\\\"`; write `/` in paths"),
        );
        None
    }

    // ── statements ──

    /// `block`: statements and expressions; the last expression is the value.
    fn lower_block(&mut self, pair: Pair<'_, Rule>) -> Block {
        let span = self.span(&pair);
        if self.depth >= MAX_DEPTH {
            self.too_deep(span, "these blocks are nested too deeply");
            return Block {
                stmts: Vec::new(),
                value: None,
                span,
            };
        }
        self.depth += 1;
        let entries: Vec<Pair<'_, Rule>> = pair.into_inner().collect();
        let n = entries.len();
        let mut stmts = Vec::new();
        let mut value = None;
        for (i, e) in entries.into_iter().enumerate() {
            if e.as_rule() != Rule::expr {
                stmts.push(self.lower_stmt(e));
                continue;
            }
            let ex = self.lower_expr(e);
            // Desugaring: the last expression is the block's value; an `if` before it is a
            // conditional statement; any other expression before it does nothing.
            if i + 1 == n {
                value = Some(Box::new(ex));
            } else if matches!(ex.node, ExprKind::If(..)) {
                let s = ex.span;
                stmts.push(Spanned::new(StmtKind::If(ex), s));
            } else {
                self.diags.push(
                    Diag::error(
                        Code::Syntax,
                        ex.span,
                        "this expression's value is not used",
                        "value not used",
                    )
                    .with_help("bind it with `let name = ...`, or assign it to a `var`; only the last expression of a block is its value"),
                );
            }
        }
        self.depth -= 1;
        Block { stmts, value, span }
    }

    /// One statement.
    fn lower_stmt(&mut self, p: Pair<'_, Rule>) -> Stmt {
        let span = self.span(&p);
        let rule = p.as_rule();
        let mut k = Kids::of(p);
        let node = match rule {
            Rule::doc_stmt => StmtKind::Doc(
                k.next()
                    .map(|d| strip_doc(d.as_str(), "///"))
                    .unwrap_or_default(),
            ),
            Rule::let_stmt | Rule::var_stmt => {
                k.take_any(&[Rule::kw_let, Rule::kw_var]);
                let (pattern, ty, value) = self.lower_binding(&mut k, span);
                StmtKind::Let {
                    mutable: rule == Rule::var_stmt,
                    pattern,
                    ty,
                    value,
                }
            }
            Rule::assign_stmt => {
                let target = self.expect_ident(&mut k, span);
                let op = match k.take(Rule::assign_op) {
                    Some(o) => {
                        let s = self.span(&o);
                        let op = match o.as_str().trim() {
                            "+=" => AssignOp::Add,
                            "-=" => AssignOp::Sub,
                            "*=" => AssignOp::Mul,
                            "/=" => AssignOp::Div,
                            _ => AssignOp::Set,
                        };
                        Spanned::new(op, s)
                    }
                    None => Spanned::new(AssignOp::Set, span),
                };
                let value = self.expect_expr(&mut k, span);
                StmtKind::Assign { target, op, value }
            }
            Rule::for_stmt => {
                k.take(Rule::kw_for);
                let pattern = match k.take(Rule::pattern) {
                    Some(p) => self.lower_pattern(p),
                    None => Spanned::new(PatternKind::Wildcard, span),
                };
                k.take(Rule::kw_in);
                let iter = self.expect_expr(&mut k, span);
                let body = self.expect_block(&mut k, span);
                StmtKind::For {
                    pattern,
                    iter,
                    body,
                }
            }
            Rule::repeat_stmt => {
                k.take(Rule::kw_repeat);
                let count = self.expect_expr(&mut k, span);
                let body = self.expect_block(&mut k, span);
                StmtKind::Repeat { count, body }
            }
            Rule::optimize_stmt => StmtKind::Optimize(self.lower_optimize(&mut k, span)),
            _ => {
                self.diags.push(shape_bug(span, "statement"));
                StmtKind::Doc(String::new())
            }
        };
        Spanned::new(node, span)
    }

    fn expect_block(&mut self, k: &mut Kids<'_>, at: Span) -> Block {
        match k.take(Rule::block) {
            Some(b) => self.lower_block(b),
            None => {
                self.diags.push(shape_bug(at, "block"));
                Block {
                    stmts: Vec::new(),
                    value: None,
                    span: at,
                }
            }
        }
    }

    /// `optimize_stmt`.
    fn lower_optimize(&mut self, k: &mut Kids<'_>, span: Span) -> Optimize {
        let direction = match k.take(Rule::direction) {
            Some(d) => {
                let s = self.span(&d);
                let dir = if d.as_str() == "ascend" {
                    Direction::Ascend
                } else {
                    Direction::Descend
                };
                Spanned::new(dir, s)
            }
            None => Spanned::new(Direction::Ascend, span),
        };
        let var = self.expect_ident(k, span);
        k.take(Rule::kw_with);
        let optimizer = self.expect_expr(k, span);
        k.take(Rule::kw_for);
        let steps = self.expect_expr(k, span);
        k.take(Rule::kw_steps);
        let index = k.take(Rule::kw_as).map(|_| self.expect_ident(k, span));
        let Some(body) = k.take(Rule::objective_block) else {
            self.diags.push(shape_bug(span, "optimization body"));
            return Optimize {
                direction,
                var,
                optimizer,
                steps,
                index,
                stmts: Vec::new(),
                goal: Spanned::new(Direction::Ascend, span),
                objective: Spanned::new(ExprKind::Error, span),
                body_span: span,
            };
        };
        let body_span = self.span(&body);
        if self.depth >= MAX_DEPTH {
            self.too_deep(body_span, "these blocks are nested too deeply");
        }
        self.depth += 1;
        let mut bk = Kids::of(body);
        let mut stmts = Vec::new();
        while bk.peek_rule().is_some_and(|r| r != Rule::objective) {
            if let Some(s) = bk.next() {
                stmts.push(self.lower_stmt(s));
            }
        }
        let (goal, objective) = match bk.take(Rule::objective) {
            Some(o) => {
                let mut ok = Kids::of(o);
                let goal = match ok.take(Rule::goal) {
                    Some(g) => {
                        let s = self.span(&g);
                        let dir = if g.as_str() == "maximize" {
                            Direction::Ascend
                        } else {
                            Direction::Descend
                        };
                        Spanned::new(dir, s)
                    }
                    None => Spanned::new(direction.node, body_span),
                };
                let e = self.expect_expr(&mut ok, body_span);
                (goal, e)
            }
            None => (
                Spanned::new(direction.node, body_span),
                Spanned::new(ExprKind::Error, body_span),
            ),
        };
        self.depth -= 1;
        Optimize {
            direction,
            var,
            optimizer,
            steps,
            index,
            stmts,
            goal,
            objective,
            body_span,
        }
    }
}

/// One operand while splitting an expression: prefix ops, the primary, postfix accessors.
#[derive(Default)]
struct Unit<'i> {
    prefix: Vec<Spanned<UnOp>>,
    primary: Option<Pair<'i, Rule>>,
    postfix: Vec<Pair<'i, Rule>>,
}

/// A lowered operand whose prefix operators are still to be applied.
struct Operand {
    prefix: Vec<Spanned<UnOp>>,
    expr: Option<Expr>,
}

/// Precedence climbing over lowered operands and infix operators.
///
/// Prefix operators bind at their own precedence: `-x^2` is `-(x^2)` and `not a == b` is
/// `not (a == b)`. Recursion depth is bounded by the number of precedence levels times the
/// (limited) number of prefix operators and `^` operators in one expression.
struct Climber {
    operands: Vec<Operand>,
    ops: Vec<Spanned<BinOp>>,
    /// Index of the next operand to consume.
    next: usize,
}

impl Climber {
    /// Parses operands and operators binding at least as tight as `min`.
    fn climb(&mut self, min: u8) -> Expr {
        let mut lhs = self.unary();
        // The operator after the operand consumed last is `ops[next - 1]`.
        while let Some(op) = self
            .next
            .checked_sub(1)
            .and_then(|i| self.ops.get(i))
            .copied()
        {
            let prec = op.node.precedence();
            if prec < min {
                break;
            }
            let rhs = self.climb(if op.node.right_assoc() {
                prec
            } else {
                prec + 1
            });
            let span = lhs.span.to(rhs.span);
            lhs = Spanned::new(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span);
        }
        lhs
    }

    /// The current operand with its pending prefix operators.
    fn unary(&mut self) -> Expr {
        let idx = self.next;
        let Some(operand) = self.operands.get_mut(idx) else {
            return Spanned::new(ExprKind::Error, Span::new(FileId(0), 0, 0));
        };
        if operand.prefix.is_empty() {
            self.next += 1;
            return operand
                .expr
                .take()
                .unwrap_or_else(|| Spanned::new(ExprKind::Error, Span::new(FileId(0), 0, 0)));
        }
        let op = operand.prefix.remove(0);
        let inner = self.climb(op.node.precedence());
        let span = op.span.to(inner.span);
        Spanned::new(ExprKind::Unary(op, Box::new(inner)), span)
    }
}

/// The binary operator a rule stands for.
fn infix(r: Rule) -> Option<BinOp> {
    Some(match r {
        Rule::or_op => BinOp::Or,
        Rule::and_op => BinOp::And,
        Rule::eq => BinOp::Eq,
        Rule::ne => BinOp::Ne,
        Rule::lt => BinOp::Lt,
        Rule::le => BinOp::Le,
        Rule::gt => BinOp::Gt,
        Rule::ge => BinOp::Ge,
        Rule::compose => BinOp::Compose,
        Rule::add => BinOp::Add,
        Rule::sub => BinOp::Sub,
        Rule::mul => BinOp::Mul,
        Rule::div => BinOp::Div,
        Rule::rem => BinOp::Rem,
        Rule::pow => BinOp::Pow,
        _ => return None,
    })
}

/// The length of `text` without trailing whitespace and a trailing `//` comment.
pub(crate) fn code_len(text: &str) -> usize {
    let mut end = text.trim_end().len();
    loop {
        let line_start = text[..end].rfind('\n').map_or(0, |p| p + 1);
        let line = &text[line_start..end];
        if !line.contains("//") {
            return end;
        }
        // The first `//` outside a string on this line starts a comment that runs to its end.
        match super::scan::comments(crate::source::FileId(0), line).first() {
            Some(c) if c.span.start as usize > 0 || line_start > 0 => {
                let cut = line_start + c.span.start as usize;
                let trimmed = text[..cut].trim_end().len();
                if trimmed == end {
                    return end;
                }
                end = trimmed;
            }
            _ => return end,
        }
    }
}

/// Parses an integer literal with `_` separators.
fn parse_int(text: &str) -> Option<i64> {
    text.replace('_', "").parse().ok()
}

/// The text of a doc comment without its marker and one following space.
fn strip_doc(line: &str, marker: &str) -> String {
    let rest = line.strip_prefix(marker).unwrap_or(line);
    rest.strip_prefix(' ')
        .unwrap_or(rest)
        .trim_end()
        .to_string()
}
