//! The abstract syntax tree: what a `.mapga` file says, with a span on every node and no
//! types yet. Produced by [`crate::syntax::parse`], consumed by the checker and the formatter.

use serde::{Deserialize, Serialize};

use crate::source::{Ident, Span, Spanned};

/// A whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Program {
    /// `//!` lines at the top of the file, without the `//!`.
    pub docs: Vec<String>,
    /// The top-level items in source order.
    pub items: Vec<Item>,
    /// The span of the whole file.
    pub span: Span,
}

/// A top-level item with its `///` doc lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// Doc comment lines, without the `///`.
    pub docs: Vec<String>,
    /// What the item declares.
    pub kind: ItemKind,
    /// From the first doc line (or keyword) to the end.
    pub span: Span,
}

/// The kinds of top-level item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ItemKind {
    /// `use std.solvers.mapga`, `use "./x.mapga".{a, b}`.
    Use(UseItem),
    /// `param sigma_y = 0.05`.
    Param {
        /// Its name.
        name: Ident,
        /// An optional type annotation.
        ty: Option<TypeExpr>,
        /// The default value.
        default: Expr,
    },
    /// `model cm = consistency("cm.safetensors")`.
    Model {
        /// Its name.
        name: Ident,
        /// The constructor expression.
        value: Expr,
    },
    /// `let y = A(x)`, `pub let K = 3`.
    Let {
        /// Exported from the module.
        public: bool,
        /// What is bound.
        pattern: Pattern,
        /// An optional type annotation.
        ty: Option<TypeExpr>,
        /// The value.
        value: Expr,
    },
    /// `fn f(a: T) -> R { ... }`.
    Fn(FnDef),
    /// `extern fn f(a: T) -> R`: a built-in's signature (standard library only).
    Extern(ExternDef),
    /// `save x to "out.png"`.
    Save {
        /// What to save.
        value: Expr,
        /// Where to, relative to the output folder.
        path: Expr,
    },
    /// `report psnr(x, y), ssim(x, y) as "SSIM"`.
    Report(Vec<ReportEntry>),
    /// `grid solver in ["mapga", "dps"], sigma_y in [0.0, 0.05]`: cells of an evaluation suite.
    Grid(Vec<GridAxis>),
}

/// One param of a `grid` and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridAxis {
    /// The param.
    pub name: Ident,
    /// The values, as written: a list of literals in a program that checks.
    pub values: Expr,
}

/// Where a `use` imports from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UseSource {
    /// A dotted path: `std.solvers.mapga`.
    Module(Vec<Ident>),
    /// A relative file: `"./helpers.mapga"`.
    File(Spanned<String>),
}

/// An import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UseItem {
    /// The module or file.
    pub source: UseSource,
    /// Names picked with `.{a, b}`; `None` imports every public item.
    pub names: Option<Vec<Ident>>,
}

/// A function definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FnDef {
    /// `pub fn`: exported from the module.
    pub public: bool,
    /// The function's name.
    pub name: Ident,
    /// Its parameters, in order.
    pub params: Vec<FnParam>,
    /// The declared result type.
    pub ret: Option<TypeExpr>,
    /// The body; its value is the result.
    pub body: Block,
}

/// A built-in's declared signature; its behaviour and shape rule live in Rust.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternDef {
    /// The built-in's name.
    pub name: Ident,
    /// Its parameters.
    pub params: Vec<FnParam>,
    /// Its declared result type.
    pub ret: TypeExpr,
}

/// A function parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FnParam {
    /// `///` lines before it.
    pub docs: Vec<String>,
    /// Its name.
    pub name: Ident,
    /// Its declared type.
    pub ty: Option<TypeExpr>,
    /// `T...`: collects the remaining positional arguments.
    pub variadic: bool,
    /// Its default value (the parameter is then optional).
    pub default: Option<Expr>,
}

/// One entry of a `report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportEntry {
    /// The value reported.
    pub value: Expr,
    /// The label given with `as "..."`.
    pub label: Option<Spanned<String>>,
}

/// A type annotation.
pub type TypeExpr = Spanned<TypeExprKind>;

/// The forms of type annotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TypeExprKind {
    /// `Float`, `Tensor[1, 28, 28]`, `List[Float]`.
    Named {
        /// The type's name.
        name: Ident,
        /// Bracketed arguments.
        args: Vec<TypeArg>,
    },
    /// `(Float, Int)`.
    Tuple(Vec<TypeExpr>),
}

/// An argument of a named type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TypeArg {
    /// A fixed dimension: `28`.
    Dim(Spanned<u64>),
    /// Any dimension: `_`.
    Any(Span),
    /// A type, or a dimension variable such as `H`.
    Type(TypeExpr),
}

/// A binding pattern.
pub type Pattern = Spanned<PatternKind>;

/// The forms of pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PatternKind {
    /// A name.
    Name(String),
    /// `_`: ignore the value.
    Wildcard,
    /// `(a, b)`.
    Tuple(Vec<Pattern>),
}

/// A block: statements, then an optional value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block {
    /// The statements.
    pub stmts: Vec<Stmt>,
    /// The value of the block (the last expression), if any.
    pub value: Option<Box<Expr>>,
    /// From `{` to `}`.
    pub span: Span,
}

/// A statement.
pub type Stmt = Spanned<StmtKind>;

/// The kinds of statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StmtKind {
    /// `let p = e` (`mutable: false`) or `var p = e` (`mutable: true`).
    Let {
        /// `var` rather than `let`.
        mutable: bool,
        /// What is bound.
        pattern: Pattern,
        /// An optional type annotation.
        ty: Option<TypeExpr>,
        /// The value.
        value: Expr,
    },
    /// `z = e`, `z += e`.
    Assign {
        /// The variable.
        target: Ident,
        /// `=` or a compound operator.
        op: Spanned<AssignOp>,
        /// The value.
        value: Expr,
    },
    /// `for p in e { ... }`.
    For {
        /// The loop pattern.
        pattern: Pattern,
        /// What is iterated.
        iter: Expr,
        /// The body.
        body: Block,
    },
    /// `repeat n { ... }`.
    Repeat {
        /// How many times.
        count: Expr,
        /// The body.
        body: Block,
    },
    /// `if c { ... } else { ... }` whose value is not used.
    If(Expr),
    /// `ascend z with opt for n steps { ...  maximize e }`.
    Optimize(Optimize),
    /// `/// text` before a statement: kept for the formatter, ignored by the checker.
    Doc(String),
}

/// `=` and the compound assignments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignOp {
    /// `=`
    Set,
    /// `+=`
    Add,
    /// `-=`
    Sub,
    /// `*=`
    Mul,
    /// `/=`
    Div,
}

impl AssignOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AssignOp::Set => "=",
            AssignOp::Add => "+=",
            AssignOp::Sub => "-=",
            AssignOp::Mul => "*=",
            AssignOp::Div => "/=",
        }
    }

    /// The binary operator a compound assignment applies.
    pub fn binary(self) -> Option<BinOp> {
        match self {
            AssignOp::Set => None,
            AssignOp::Add => Some(BinOp::Add),
            AssignOp::Sub => Some(BinOp::Sub),
            AssignOp::Mul => Some(BinOp::Mul),
            AssignOp::Div => Some(BinOp::Div),
        }
    }
}

/// Ascend (maximize) or descend (minimize).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Gradient ascent; the body says `maximize`.
    Ascend,
    /// Gradient descent; the body says `minimize`.
    Descend,
}

/// The optimization step construct.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Optimize {
    /// Ascend or descend.
    pub direction: Spanned<Direction>,
    /// The `var` being optimized.
    pub var: Ident,
    /// The optimizer expression (`sgd(lr: 0.1)`).
    pub optimizer: Expr,
    /// The number of steps.
    pub steps: Expr,
    /// The name of the step index in `for n steps as k`, if any (0, 1, ..., n - 1).
    pub index: Option<Ident>,
    /// Statements computing the objective.
    pub stmts: Vec<Stmt>,
    /// `maximize` (true) or `minimize` (false) as written.
    pub goal: Spanned<Direction>,
    /// The scalar objective.
    pub objective: Expr,
    /// The body, `{` to `}`.
    pub body_span: Span,
}

/// An expression.
pub type Expr = Spanned<ExprKind>;

/// The forms of expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// An integer literal.
    Int(i64),
    /// A float literal; the text is kept so formatting reproduces it.
    Float(f64, String),
    /// A string literal (escapes resolved).
    Str(String),
    /// `true` / `false`.
    Bool(bool),
    /// A name.
    Name(String),
    /// `[a, b]`.
    List(Vec<Expr>),
    /// `(a, b)`; `()` is the empty tuple.
    Tuple(Vec<Expr>),
    /// `(e)`: kept so the formatter reproduces the parentheses.
    Paren(Box<Expr>),
    /// `-e`, `not e`.
    Unary(Spanned<UnOp>, Box<Expr>),
    /// `a + b` and the other infix operators.
    Binary(Spanned<BinOp>, Box<Expr>, Box<Expr>),
    /// `f(a, b, name: c)`.
    Call(Box<Expr>, Vec<Arg>),
    /// `x.name(a, b)`: a method call.
    Method(Box<Expr>, Ident, Vec<Arg>),
    /// `x.name`.
    Field(Box<Expr>, Ident),
    /// `x[i]`.
    Index(Box<Expr>, Box<Expr>),
    /// `x[a:b]`, `x[:b]`, `x[a:]`: a range of the first dimension (start, end excluded).
    Slice(Box<Expr>, Option<Box<Expr>>, Option<Box<Expr>>),
    /// `if c { a } else { b }`.
    If(Box<Expr>, Block, Option<Box<Expr>>),
    /// `{ stmts  value }`.
    Block(Block),
    /// A placeholder for a part that failed to parse (never in a program that parsed cleanly).
    Error,
}

/// A call argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arg {
    /// The name, for `name: value`.
    pub name: Option<Ident>,
    /// The value.
    pub value: Expr,
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnOp {
    /// `-x`
    Neg,
    /// `not b`
    Not,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `>>`: operator composition.
    Compose,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
    /// `^`
    Pow,
}

impl BinOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        use BinOp::*;
        match self {
            Or => "or",
            And => "and",
            Eq => "==",
            Ne => "!=",
            Lt => "<",
            Le => "<=",
            Gt => ">",
            Ge => ">=",
            Compose => ">>",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Rem => "%",
            Pow => "^",
        }
    }

    /// Binding strength, loosest = 1; prefix `not` sits at 3 and prefix `-` at 8.
    pub fn precedence(self) -> u8 {
        use BinOp::*;
        match self {
            Or => 1,
            And => 2,
            Eq | Ne | Lt | Le | Gt | Ge => 4,
            Compose => 5,
            Add | Sub => 6,
            Mul | Div | Rem => 7,
            Pow => 9,
        }
    }

    /// True for right-associative operators (`^`).
    pub fn right_assoc(self) -> bool {
        self == BinOp::Pow
    }
}

impl UnOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Not => "not ",
        }
    }

    /// Binding strength on the scale of [`BinOp::precedence`].
    pub fn precedence(self) -> u8 {
        match self {
            UnOp::Not => 3,
            UnOp::Neg => 8,
        }
    }
}

// Equality of trees ignores spans everywhere (as `Spanned` does), so tests can compare the
// structure of two parses of differently laid-out text.

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.docs == other.docs && self.items == other.items
    }
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        self.docs == other.docs && self.kind == other.kind
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Self) -> bool {
        self.stmts == other.stmts && self.value == other.value
    }
}

impl PartialEq for Optimize {
    fn eq(&self, other: &Self) -> bool {
        self.direction == other.direction
            && self.var == other.var
            && self.optimizer == other.optimizer
            && self.steps == other.steps
            && self.index == other.index
            && self.stmts == other.stmts
            && self.goal == other.goal
            && self.objective == other.objective
    }
}

impl PartialEq for TypeArg {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (TypeArg::Dim(a), TypeArg::Dim(b)) => a == b,
            (TypeArg::Any(_), TypeArg::Any(_)) => true,
            (TypeArg::Type(a), TypeArg::Type(b)) => a == b,
            _ => false,
        }
    }
}
