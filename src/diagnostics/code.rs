//! Stable error codes. Each variant's doc shows a minimal program that triggers it; the same
//! program is a case in `tests/ui/cases/`.

use super::Severity;

/// A stable diagnostic code, rendered as `mapga::<phase>::<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    // ── parse ──
    /// Text that fits no rule: `let x = 1 +`.
    Syntax,
    /// A bracket that is never closed: `let x = f(1, 2`.
    Unclosed,
    /// A closing bracket with no opening one, or the wrong one: `let x = (1]`.
    Mismatched,
    /// Two arguments or elements with no comma between: `f(a b)`.
    MissingComma,
    /// `=` where a named argument needs `:`: `box_mask(28, 28, top = 10)`.
    NamedArgEquals,
    /// A reserved word used as a name: `let for = 1`.
    KeywordAsName,
    /// A file that is not UTF-8 text.
    InvalidUtf8,
    /// Brackets or operators nested past the limit: `((((((...))))))`.
    TooDeep,
    /// A malformed literal: `let n = 99999999999999999999`, `"\q"`.
    BadLiteral,
    /// A positional argument after a named one: `f(a: 1, 2)`.
    PositionalAfterNamed,
    /// A `///` doc comment with nothing to document: `let x = 1 /// trailing`.
    MisplacedDoc,

    // ── names ──
    /// A name that is not defined: `let x = y_true`.
    UnknownName,
    /// A name defined twice in the same scope: two `param sigma_y`.
    Duplicate,
    /// `use std.nothing`.
    UnknownModule,
    /// `use std.operators.{no_such_thing}`.
    UnknownImport,
    /// Modules that import each other.
    ImportCycle,
    /// Assigning to a `let` binding: `let z = 1  z = 2`.
    NotMutable,
    /// A function that calls itself, directly or through others.
    Recursion,
    /// A field or method the value does not have: `A.domian`.
    UnknownField,
    /// An unknown type name in an annotation: `x: Flaot`.
    UnknownType,
    /// An item not allowed where it is: `save` in an imported module, `extern fn` outside the
    /// standard library.
    ModuleItem,

    // ── types ──
    /// A value of the wrong type: `box_mask("28", 28)`.
    TypeMismatch,
    /// Too many or too few arguments: `psnr(x)`.
    Arity,
    /// A named argument the function does not have: `karras(stpes: 10)`.
    UnknownArg,
    /// The same argument given twice: `f(x, x: 1)`.
    DuplicateArg,
    /// Tensor shapes that do not fit: `downsample(4)` of a 30x30 image.
    ShapeMismatch,
    /// A model whose card does not match the images it is used on.
    ModelMismatch,
    /// An operator without a capability the caller needs: `ddrm` with a non-linear operator.
    Capability,
    /// Calling something that is not a function: `let a = 3  a(1)`.
    NotCallable,
    /// A value outside what the argument accepts: `karras(steps: 0)`.
    InvalidValue,
    /// An objective that is not a scalar: `maximize x` with `x` an image.
    NotScalar,
    /// A tensor created from a shape that is never fully known:
    /// `gaussian_like(inpaint(mask).domain)` when nothing fixes the channel count.
    UnknownShape,
    /// An optimization body that assigns a variable from outside it.
    OuterAssignment,

    // ── files ──
    /// A file named in the program that does not exist: `image("nope.png")`.
    MissingFile,
    /// A file whose header cannot be read: a truncated PNG, a bad `.npy`, a model card with errors.
    BadFile,
    /// A file the pipeline may not read or write: outside its folders (see
    /// `crate::io::permissions`), allowed with `--allow-read` / `--allow-write`.
    Permission,

    // ── run time ──
    /// A value that became NaN or infinite while running: a diverging ascent.
    RunNumeric,
    /// A file that could not be read or written while running, or whose data differ from what
    /// the check was told (a file changed in between).
    RunFile,
    /// Any other failure while running: a tensor operation the data do not allow.
    RunFailure,

    // ── warnings ──
    /// A binding that is never used.
    Unused,
    /// A binding that hides an earlier one with the same name.
    Shadowing,
}

impl Code {
    /// The stable string, e.g. `mapga::type::shape`.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            Syntax => "mapga::parse::syntax",
            Unclosed => "mapga::parse::unclosed",
            Mismatched => "mapga::parse::mismatched",
            MissingComma => "mapga::parse::missing_comma",
            NamedArgEquals => "mapga::parse::named_arg_equals",
            KeywordAsName => "mapga::parse::keyword_as_name",
            InvalidUtf8 => "mapga::parse::invalid_utf8",
            TooDeep => "mapga::parse::too_deep",
            BadLiteral => "mapga::parse::bad_literal",
            PositionalAfterNamed => "mapga::parse::positional_after_named",
            MisplacedDoc => "mapga::parse::misplaced_doc",
            UnknownName => "mapga::name::unknown",
            Duplicate => "mapga::name::duplicate",
            UnknownModule => "mapga::name::unknown_module",
            UnknownImport => "mapga::name::unknown_import",
            ImportCycle => "mapga::name::import_cycle",
            NotMutable => "mapga::name::not_mutable",
            Recursion => "mapga::name::recursion",
            UnknownField => "mapga::name::unknown_field",
            UnknownType => "mapga::name::unknown_type",
            ModuleItem => "mapga::name::module_item",
            TypeMismatch => "mapga::type::mismatch",
            Arity => "mapga::type::arity",
            UnknownArg => "mapga::type::unknown_arg",
            DuplicateArg => "mapga::type::duplicate_arg",
            ShapeMismatch => "mapga::type::shape",
            ModelMismatch => "mapga::type::model",
            Capability => "mapga::type::capability",
            NotCallable => "mapga::type::not_callable",
            InvalidValue => "mapga::type::invalid_value",
            NotScalar => "mapga::type::not_scalar",
            UnknownShape => "mapga::type::unknown_shape",
            OuterAssignment => "mapga::type::outer_assignment",
            MissingFile => "mapga::io::missing_file",
            BadFile => "mapga::io::bad_file",
            Permission => "mapga::io::permission",
            RunNumeric => "mapga::run::numeric",
            RunFile => "mapga::run::file",
            RunFailure => "mapga::run::failure",
            Unused => "mapga::lint::unused",
            Shadowing => "mapga::lint::shadowing",
        }
    }

    /// Warnings for lints, errors for everything else.
    pub fn default_severity(self) -> Severity {
        match self {
            Code::Unused | Code::Shadowing => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
