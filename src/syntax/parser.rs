//! The pest parser generated from `grammar/mapga.pest`, and the translation of pest's
//! failures into plain-language diagnostics.

use pest::error::{ErrorVariant, InputLocation};

use super::scan;
use crate::diagnostics::{Code, Diag};
use crate::source::{FileId, Span};

/// The code pest generates from the grammar. `Rule` has one variant per grammar rule, each
/// documented with the rule's `///` comment; pest's own helper functions have no docs.
#[allow(missing_docs)]
mod generated {
    use pest_derive::Parser;

    /// The generated parser.
    #[derive(Parser)]
    #[grammar = "grammar/mapga.pest"]
    pub struct MapgaParser;
}

pub use generated::{MapgaParser, Rule};

/// A phrase for each rule that pest may say it expected, so messages read as English.
fn phrase(rule: Rule) -> Option<&'static str> {
    use Rule::*;
    Some(match rule {
        EOI => "the end of the file",
        ident | keyword_as_name => "a name",
        item | use_item | param_item | model_item | let_item | fn_item | extern_item
        | save_item | report_item | grid_item => {
            "a declaration (`use`, `param`, `model`, `let`, `fn`, `save` or `report`)"
        }
        doc => "a `///` doc comment",
        expr | unit | primary | if_expr | paren | list | block_expr => "an expression",
        float | int => "a number",
        string | string_inner => "a string",
        bool => "`true` or `false`",
        type_expr | named_type | tuple_type => "a type",
        pattern | tuple_pattern => "a name or a tuple pattern",
        call_args => "`(`",
        index => "`[`",
        slice_colon => "`:`",
        field => "`.`",
        named_arg | misnamed_arg => "an argument",
        infix_op | or_op | and_op | eq | ne | le | ge | lt | gt | compose | add | sub | mul
        | div | rem | pow => "an operator",
        neg | not_op => "an expression",
        block => "a block `{ ... }`",
        stmt | let_stmt | var_stmt | for_stmt | repeat_stmt | optimize_stmt | assign_stmt
        | doc_stmt => "a statement",
        assign_op => "`=`",
        objective => "`maximize` or `minimize` with the objective",
        goal => "`maximize` or `minimize`",
        direction => "`ascend` or `descend`",
        objective_block => "`{`",
        fn_params => "`(` and the parameter list",
        fn_param => "a parameter",
        variadic => "`...`",
        module_path => "a module path such as `std.solvers.mapga`",
        use_names => "`.{names}`",
        report_entry => "a value to report",
        grid_axis => "a param and its values (`name in [a, b]`)",
        kw_grid => "`grid`",
        kw_use => "`use`",
        kw_param => "`param`",
        kw_model => "`model`",
        kw_let => "`let`",
        kw_var => "`var`",
        kw_fn => "`fn`",
        kw_pub => "`pub`",
        kw_extern => "`extern`",
        kw_if => "`if`",
        kw_else => "`else`",
        kw_for => "`for`",
        kw_in => "`in`",
        kw_repeat => "`repeat`",
        kw_with => "`with`",
        kw_save => "`save`",
        kw_report => "`report`",
        kw_as => "`as`",
        kw_to => "`to`",
        kw_steps => "`steps`",
        trailing_comma => "`,`",
        wildcard => "`_`",
        _ => return None,
    })
}

/// The token at `pos` as the user sees it: a word, a symbol, or "the end of the file".
fn found_at(text: &str, pos: usize) -> (String, usize) {
    let rest = &text[pos.min(text.len())..];
    let Some(c) = rest.chars().next() else {
        return ("the end of the file".to_string(), 0);
    };
    if c.is_alphanumeric() || c == '_' {
        let len = rest
            .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '.'))
            .unwrap_or(rest.len());
        let word = rest[..len].trim_end_matches('.');
        return (format!("`{word}`"), word.len());
    }
    if c == '"' {
        return (
            "a string".to_string(),
            rest.find('\n').unwrap_or(rest.len()).min(40),
        );
    }
    if c == '\n' || c == '\r' {
        return ("the end of the line".to_string(), 0);
    }
    for op in [
        "...", "->", ">>", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "//",
    ] {
        if rest.starts_with(op) {
            return (format!("`{op}`"), op.len());
        }
    }
    (format!("`{c}`"), c.len_utf8())
}

/// Does the string whose opening quote is at `pos` close on its line?
fn string_closes(text: &str, pos: usize) -> bool {
    let b = text.as_bytes();
    let mut i = pos + 1;
    while i < b.len() && b[i] != b'\n' {
        match b[i] {
            b'"' => return true,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    false
}

/// Infix operators and `=`, longest first, as they may end the code before an error.
const TRAILING_OPERATORS: [&str; 20] = [
    ">>", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "and", "or", "+", "-", "*", "/", "%",
    "^", "<", ">", "=",
];

/// The operator that ends the code before `pos` (skipping whitespace and plain comments), as
/// `(offset, operator)`; `None` when the code before ends otherwise (`->` is no operator).
fn operator_before(text: &str, pos: usize) -> Option<(usize, &'static str)> {
    let before = &text[..pos.min(text.len())];
    let end = super::lower::code_len(before);
    let code = &before[..end];
    let op = TRAILING_OPERATORS
        .into_iter()
        .find(|op| code.ends_with(op))?;
    let at = end - op.len();
    let prev = code[..at].chars().next_back();
    let word_op = op.starts_with(|c: char| c.is_ascii_alphabetic());
    if word_op && prev.is_some_and(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    if op == ">" && prev == Some('-') {
        return None;
    }
    Some((at, op))
}

/// Joins phrases as "a, b or c".
fn one_of(mut items: Vec<&'static str>) -> String {
    items.sort();
    items.dedup();
    match items.len() {
        0 => "something else".to_string(),
        1 => items[0].to_string(),
        n => format!("{} or {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// Is `word` a reserved keyword?
pub fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "use"
            | "param"
            | "model"
            | "let"
            | "var"
            | "fn"
            | "pub"
            | "extern"
            | "if"
            | "else"
            | "for"
            | "in"
            | "repeat"
            | "ascend"
            | "descend"
            | "with"
            | "maximize"
            | "minimize"
            | "save"
            | "report"
            | "true"
            | "false"
            | "and"
            | "or"
            | "not"
            | "as"
            | "return"
            | "while"
            | "break"
    )
}

/// Turns a pest failure into a diagnostic in plain words, with a help line for common slips.
pub fn convert_error(file: FileId, text: &str, err: pest::error::Error<Rule>) -> Diag {
    let pos = match err.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let (found, len) = found_at(text, pos);
    let here = Span::new(file, pos, pos + len);
    let positives = match &err.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { message } => {
            return Diag::error(Code::Syntax, here, message.clone(), "here");
        }
    };
    let phrases: Vec<&'static str> = positives.iter().filter_map(|r| phrase(*r)).collect();
    let wants = |r: Rule| positives.contains(&r);
    let word = found.trim_matches('`');

    // A doc comment where nothing can be documented: inside an expression, before `else`.
    let at = &text[pos.min(text.len())..];
    if at.starts_with("///") && !at.starts_with("////") {
        return Diag::error(
            Code::MisplacedDoc,
            Span::new(file, pos, pos + 3),
            "a `///` doc comment cannot go here",
            "nothing here can be documented",
        )
        .with_help(scan::DOC_HELP);
    }

    // A string whose closing quote is missing: pest stops at its opening `"`.
    if text[pos.min(text.len())..].starts_with('"') && !string_closes(text, pos) {
        return Diag::error(
            Code::Unclosed,
            Span::new(file, pos, pos + 1),
            "this string is never closed",
            "this `\"` has no closing `\"` on its line",
        )
        .with_help("add the closing `\"`; a string cannot span lines");
    }

    // An operator at the end of a line with nothing after it: `let x = 1 +` followed by a new
    // statement, a closing bracket or the end of the file.
    let wants_operand = phrases.contains(&"an expression");
    let ends_here = len == 0 || is_keyword(word) || matches!(word, ")" | "]" | "}");
    if wants_operand && ends_here {
        if let Some((at, op)) = operator_before(text, pos) {
            return Diag::error(
                Code::Syntax,
                Span::new(file, at, at + op.len()),
                format!("expected an expression after `{op}`"),
                format!("nothing follows this `{op}`"),
            )
            .with_help(format!(
                "complete the expression after `{op}` on this line, or remove the `{op}`"
            ));
        }
    }

    // Reserved words of statements the language does not have.
    if (wants(Rule::ident) || wants_operand) && matches!(word, "return" | "while" | "break") {
        let help = match word {
            "return" => "a function's result is the last expression of its body: remove `return`",
            "while" => "loop with `for x in list { ... }` or `repeat n { ... }`",
            _ => "loops run to the end: `for` over a list or `repeat n` times",
        };
        return Diag::error(
            Code::Syntax,
            here,
            format!("mapga has no `{word}` statement"),
            format!("`{word}` is reserved but not used"),
        )
        .with_help(help);
    }

    let open = scan::open_delimiters(text, pos);
    let expected = one_of(phrases.clone());
    let closing_wanted = [b')', b']', b'}']
        .into_iter()
        .find(|c| open.last().is_some_and(|&(o, _)| scan::matching(o) == *c));

    // An unclosed bracket reaching the end of the file, or a wrong closer.
    if let Some(&(o, at)) = open.last() {
        let close = scan::matching(o) as char;
        let what = match o {
            b'(' => "the parentheses",
            b'[' => "the brackets",
            _ => "the block",
        };
        let opened = Span::new(file, at, at + 1);
        let is_call = o == b'('
            && text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ')');
        let what = if is_call { "the call" } else { what };
        // A new declaration starts on a later line while a bracket is still open: the
        // bracket was never closed.
        let line_start = text[..pos.min(text.len())]
            .trim_end_matches([' ', '\t'])
            .ends_with('\n');
        let starts_decl = line_start
            && matches!(
                word,
                "let"
                    | "param"
                    | "model"
                    | "fn"
                    | "pub"
                    | "use"
                    | "save"
                    | "report"
                    | "extern"
                    | "var"
                    | "for"
                    | "repeat"
                    | "ascend"
                    | "descend"
            );
        if starts_decl {
            return Diag::error(
                Code::Unclosed,
                opened,
                format!("expected `{close}` to close {what} opened here"),
                format!("this `{}` is never closed", o as char),
            )
            .with_label(
                here,
                format!("a new statement starts here before `{close}`"),
            )
            .with_help(if close == '}' {
                "add the missing `}` on a line of its own before this one".to_string()
            } else {
                format!("add the missing `{close}` at the end of the previous line")
            });
        }
        if pos >= text.trim_end().len() {
            return Diag::error(
                Code::Unclosed,
                here,
                format!("expected `{close}` to close {what} opened here"),
                format!("the file ends before `{close}`"),
            )
            .with_label(opened, format!("`{}` opened here", o as char))
            .with_help(format!("add the missing `{close}`"));
        }
        if matches!(word, ")" | "]" | "}") && word.as_bytes()[0] != close as u8 {
            return Diag::error(
                Code::Mismatched,
                here,
                format!("`{word}` does not match the `{}` opened here", o as char),
                format!("expected `{close}`"),
            )
            .with_label(opened, format!("`{}` opened here", o as char))
            .with_help(format!("close with `{close}` first"));
        }
    }

    // A keyword where a name was expected: `let for = 1`, `report for`.
    if (wants(Rule::ident) || wants_operand) && is_keyword(word) {
        return Diag::error(
            Code::KeywordAsName,
            here,
            format!("`{word}` is a reserved word and cannot be used as a name"),
            "reserved word",
        )
        .with_help(format!("choose another name, such as `{word}_`"));
    }

    // A missing comma between arguments or elements: `f(a b)`.
    let starts_value = word
        .chars()
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '"' || c == '(' || c == '[')
        && !is_keyword(word);
    if closing_wanted.is_some()
        && starts_value
        && (wants(Rule::call_args) || wants(Rule::infix_op) || phrases.contains(&"an operator"))
    {
        if let Some(&(o, at)) = open.last() {
            if o != b'{' {
                return Diag::error(
                    Code::MissingComma,
                    here,
                    format!(
                        "expected `,` or `{}` before {found}",
                        scan::matching(o) as char
                    ),
                    "a comma is probably missing before this",
                )
                .with_label(Span::new(file, at, at + 1), "in the list opened here")
                .with_help("separate arguments and elements with commas");
            }
        }
    }

    let mut d = Diag::error(
        Code::Syntax,
        here,
        format!("expected {expected}, found {found}"),
        format!("unexpected {found}"),
    );
    if let Some(&(o, at)) = open.last() {
        if o == b'(' && closing_wanted.is_some() {
            d.message =
                format!("expected {expected} or `)` to close the call opened here, found {found}");
            d = d.with_label(Span::new(file, at, at + 1), "opened here");
        }
    }
    if word == ";" {
        d = d.with_help("statements end at the end of the line; remove the `;`");
    } else if word == "=" && wants(Rule::objective) {
        d = d.with_help(
            "the body of `ascend`/`descend` must end with `maximize EXPR` or `minimize EXPR`",
        );
    } else if phrases
        .contains(&"a declaration (`use`, `param`, `model`, `let`, `fn`, `save` or `report`)")
    {
        d = d.with_help("at the top level, every line starts a declaration: `let name = ...`, `fn`, `save`, `report`, ...");
    }
    d
}
