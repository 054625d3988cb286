//! Phase 2: names, types and shapes, lowered into the typed graph.
//!
//! # How checking works
//!
//! [`check_file`] loads the pipeline, parses it, and walks it once, top to bottom. The walk
//! resolves every name (locals, then the module's items and imports, then the built-ins of
//! the standard library), computes each expression's [`Type`] (with tensor shapes and the
//! constant value where one is known), and emits the node for it into the typed [`Graph`]
//! as it goes, so checking and lowering are the same pass.
//!
//! * **Modules.** `use std.x.y` loads an embedded standard-library file, `use "./f.mapga"` a
//!   file relative to the importing one. A module is checked completely when it is first
//!   imported; a stack of modules being loaded detects import cycles.
//! * **Functions** are checked twice. On their own, from their annotations alone
//!   (unannotated parameters are `Any`): this finds every error that does not depend on the
//!   caller, in every function, called or not. And, for each distinct combination of
//!   argument types, shapes and constants at a call site, the body is checked again with
//!   those exact types and emitted as a specialised [`crate::graph::Function`]. Shapes therefore
//!   flow through user functions exactly, and a shape error that only one caller triggers
//!   is reported in the body with a note naming that call. Recursion is refused.
//! * **Shapes** are lists of dimensions, each known or a variable bound by unification
//!   ([`unify::DimTable`]). Built-ins give their results shapes through the rules in
//!   [`builtins`], which read image, `.npy`, safetensors and model-card headers (never pixel
//!   data or weights) and may add scale constraints (`downsample(4)`: `h = 4 h'`).
//! * **Errors** do not stop the walk: an expression that fails gets [`Type::Error`], which
//!   fits everywhere, so each mistake is reported once and the rest of the file is still
//!   checked. Warnings report unused bindings and shadowing.
//! * **Mutable variables** become data flow: loops and branches that assign a `var` carry it
//!   explicitly through their regions (see [`crate::graph`]).

mod annot;
mod batch;
pub mod builtins;
mod call;
mod expr;
mod grid;
pub mod members;
mod modules;
mod scope;
mod slice;
mod stmt;
pub(crate) mod suggest;
pub mod suite;
pub mod types;
pub mod unify;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::diagnostics::{Code, Diag, Diags};
use crate::graph::{Const, FuncId, Graph, NodeId, Op, RegionId};
use crate::source::{FileId, Origin, SourceMap, Span};
pub use modules::parse_override;
use modules::Module;
use scope::Scope;
use types::Type;
use unify::DimTable;

/// How the note on an error found only for one call starts.
const CALL_NOTE: &str = "while checking the call of ";

/// Options of one check.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// `--set NAME=VALUE` overrides of pipeline params, as source text of a literal.
    pub overrides: BTreeMap<String, String>,
    /// What the pipeline may read and write (everything, unless the caller restricts it: the
    /// command line does). The folders of imported files are added as they are imported.
    pub permissions: crate::io::permissions::Permissions,
}

/// The result of checking a pipeline.
#[derive(Debug)]
pub struct Checked {
    /// The typed graph (complete when there are no errors).
    pub graph: Graph,
    /// Errors and warnings.
    pub diags: Diags,
    /// Every file that was loaded, for rendering diagnostics.
    pub sources: SourceMap,
    /// Every file the pipeline depends on: imports, images, arrays, models and cards.
    pub dependencies: Vec<PathBuf>,
    /// The pipeline's `grid` items that checked cleanly, in file order (for `mapga eval`).
    pub grids: Vec<suite::GridSpec>,
    /// What the run may read and write: the check's permissions with the imports' folders.
    pub permissions: crate::io::permissions::Permissions,
}

/// Checks the pipeline file at `path`.
pub fn check_file(path: &Path, opts: &CheckOptions) -> Checked {
    crate::stack::with_big_stack(|| check_file_here(path, opts))
}

fn check_file_here(path: &Path, opts: &CheckOptions) -> Checked {
    let mut cx = Checker::new(opts.clone());
    // The same rules as for imports: a file that is no pipeline is never read (a syntax error
    // would quote its first lines), nor one without end (`/dev/zero`).
    if let Some(why) = modules::unusable_module(path) {
        let file = cx.sources.add(
            path.display().to_string(),
            Origin::Path(path.to_path_buf()),
            "",
        );
        cx.diags.push(
            Diag::error(
                Code::BadFile,
                Span::new(file, 0, 0),
                format!("cannot check `{}`: {why}", path.display()),
                "",
            )
            .with_help("mapga runs pipeline files: `.mapga` text files of at most 16 MB"),
        );
        return cx.finish();
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let file = cx.sources.add(
                path.display().to_string(),
                Origin::Path(path.to_path_buf()),
                text,
            );
            if let Err(d) = crate::syntax::decode(file, &bytes) {
                cx.diags.push(d);
                return cx.finish();
            }
            cx.check_root(file);
        }
        Err(e) => {
            let file = cx.sources.add(
                path.display().to_string(),
                Origin::Path(path.to_path_buf()),
                "",
            );
            cx.diags.push(Diag::error(
                Code::MissingFile,
                Span::new(file, 0, 0),
                format!("cannot read `{}`: {e}", path.display()),
                "",
            ));
        }
    }
    cx.finish()
}

/// Checks pipeline source text given directly; relative paths resolve against `base_dir`.
pub fn check_source(name: &str, text: &str, base_dir: &Path, opts: &CheckOptions) -> Checked {
    crate::stack::with_big_stack(|| {
        let mut cx = Checker::new(opts.clone());
        let file = cx
            .sources
            .add(name, Origin::Path(base_dir.join(name)), text.to_string());
        cx.check_root(file);
        cx.finish()
    })
}

/// Checks a standard-library module on its own (used by tests and `mapga check std.x`).
pub fn check_std_module(path: &str) -> Checked {
    let mut cx = Checker::new(CheckOptions::default());
    let span = Span::new(FileId(0), 0, 0);
    match modules::ModuleKey::parse_std(path) {
        Some(key) => {
            cx.load_module(key, span);
        }
        None => cx.diags.push(Diag::error(
            Code::UnknownModule,
            span,
            format!("no module `{path}`"),
            "",
        )),
    }
    cx.finish()
}

/// A value computed by checking an expression: its type, its node, and its constant value
/// when known before running.
#[derive(Debug, Clone)]
pub(crate) struct Val {
    pub ty: Type,
    pub node: NodeId,
    pub konst: Option<Const>,
    pub span: Span,
}

/// Where emitted nodes go: the real graph, or a scratch graph while a function is checked on
/// its own.
#[derive(Debug, Default)]
pub(crate) struct Emit {
    pub graph: Graph,
    pub instances: HashMap<String, (FuncId, Type)>,
    /// The keys of `instances` in the order they were made (to forget those of a dead branch).
    pub instance_order: Vec<String>,
}

/// The checker's state for one check.
pub(crate) struct Checker {
    pub opts: CheckOptions,
    pub sources: SourceMap,
    pub diags: Diags,
    pub dims: DimTable,
    pub emit: Emit,
    pub modules: Vec<Module>,
    /// Modules being loaded, outermost first, with the `use` span that loads each.
    pub loading: Vec<(modules::ModuleKey, Span)>,
    /// Built-ins by name: (module index, item index).
    pub prelude: HashMap<String, (usize, usize)>,
    /// Public non-extern functions of the standard library: name -> module path (for hints).
    pub std_index: HashMap<String, String>,
    /// The module whose code is being checked.
    pub module: usize,
    /// The region nodes are emitted into.
    pub region: RegionId,
    /// Local scopes, innermost last.
    pub scopes: Vec<Scope>,
    /// Checking a function on its own (annotations only): user calls are not specialised.
    pub generic: bool,
    /// Functions being specialised, for recursion detection and notes.
    pub call_stack: Vec<(usize, String, Span)>,
    /// Every file read for shapes (images, arrays, models, cards, imports).
    pub dependencies: Vec<PathBuf>,
    /// Diagnostics already reported, by (code, primary span), to drop repeats.
    pub seen: std::collections::HashSet<(Code, Span)>,
    /// The pipeline has syntax errors: skip the unused-binding lint.
    pub quiet_lints: bool,
    /// The span of the `as_int64(...)` call a `save` is writing, the one place it is allowed.
    pub int64_save: Option<Span>,
    /// The pipeline's checked `grid` items.
    pub grids: Vec<suite::GridSpec>,
    /// Nodes emitted while checking a branch that a constant condition rules out (first id,
    /// end id): they never run, so nothing needs to be known about them.
    pub dead_nodes: Vec<(u32, u32)>,
    /// Name comparisons left to "did you mean" searches over every visible name.
    pub suggest_budget: usize,
    /// Where each out-of-range slice error is in `diags`, by message (see `slice.rs`).
    pub slice_errors: HashMap<String, usize>,
    /// Where each diagnostic recorded by [`Checker::report`] was put in `diags`, by code and
    /// primary span.
    pub reported_at: HashMap<(Code, Span), usize>,
}

impl Checker {
    fn new(opts: CheckOptions) -> Self {
        let mut cx = Checker {
            opts,
            sources: SourceMap::new(),
            diags: Diags::new(),
            dims: DimTable::new(),
            emit: Emit {
                graph: Graph::new(),
                ..Default::default()
            },
            modules: Vec::new(),
            loading: Vec::new(),
            prelude: HashMap::new(),
            std_index: HashMap::new(),
            module: 0,
            region: Graph::MAIN,
            scopes: Vec::new(),
            generic: false,
            call_stack: Vec::new(),
            dependencies: Vec::new(),
            seen: Default::default(),
            quiet_lints: false,
            int64_save: None,
            grids: Vec::new(),
            dead_nodes: Vec::new(),
            suggest_budget: scope::SUGGEST_BUDGET,
            slice_errors: HashMap::new(),
            reported_at: HashMap::new(),
        };
        cx.load_prelude();
        cx
    }

    fn finish(mut self) -> Checked {
        self.require_known_shapes();
        self.diags.sort_dedup();
        // Fill in dimensions learned after a node was emitted.
        let resolved: Vec<Type> = self
            .emit
            .graph
            .nodes
            .iter()
            .map(|n| self.dims.resolve_type(&n.ty))
            .collect();
        for (n, t) in self.emit.graph.nodes.iter_mut().zip(resolved) {
            n.ty = t;
        }
        for p in &mut self.emit.graph.params {
            p.ty = self.dims.resolve_type(&p.ty);
        }
        self.dependencies.sort();
        self.dependencies.dedup();
        Checked {
            graph: self.emit.graph,
            diags: self.diags,
            sources: self.sources,
            dependencies: self.dependencies,
            grids: self.grids,
            permissions: self.opts.permissions,
        }
    }

    /// Tensors made from a shape (random draws, zeros) need every dimension known before
    /// running; report those whose shape nothing determined.
    fn require_known_shapes(&mut self) {
        if self.diags.has_errors() {
            return;
        }
        // The dead ranges, sorted and merged, so that a node is looked up in them by a binary
        // search (a file may have a dead branch per function call).
        let mut dead = std::mem::take(&mut self.dead_nodes);
        dead.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(dead.len());
        for (a, b) in dead {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let is_dead = |id: u32| {
            let i = merged.partition_point(|&(a, _)| a <= id);
            i > 0 && id < merged[i - 1].1
        };
        let mut unknown = Vec::new();
        for (id, n) in self.emit.graph.nodes.iter().enumerate() {
            let crate::graph::Op::Builtin { name, .. } = &n.op else {
                continue;
            };
            if !matches!(name.as_str(), "gaussian_like" | "zeros" | "ones" | "tensor") {
                continue;
            }
            if is_dead(id as u32) {
                continue;
            }
            let open = match self.dims.resolve_type(&n.ty) {
                Type::Tensor(types::Shape::Dims(d)) => {
                    d.iter().any(|x| matches!(x, types::Dim::Var(_)))
                }
                Type::Tensor(types::Shape::Unknown) => true,
                _ => false,
            };
            if open {
                let shown = self.dims.resolve_type(&n.ty);
                unknown.push((n.span, name.clone(), shown));
            }
        }
        for (span, name, ty) in unknown {
            self.report(
                Diag::error(
                    Code::UnknownShape,
                    span,
                    format!("the shape of this `{name}` is not known before running"),
                    format!("this is {ty}; `_` marks what nothing determines"),
                )
                .with_help("give the shape explicitly, e.g. `shape(1, 28, 28)`, or take it from an image (`x.shape`)"),
            );
        }
    }

    /// Records a diagnostic unless the same problem at the same place is already recorded.
    pub fn report(&mut self, d: Diag) {
        // Warnings are about the code being checked, not the libraries it imports.
        if !d.is_error()
            && (!self.modules[self.module].root || (self.quiet_lints && d.code == Code::Unused))
        {
            return;
        }
        if self.seen.insert((d.code, d.span())) {
            let d = match self.call_stack.last() {
                Some((_, name, call)) if !self.generic => {
                    let f = self.sources.get(call.file);
                    let (line, col) = f.line_col(call.start as usize);
                    d.with_note(format!("{CALL_NOTE}`{name}` at {}:{line}:{col}", f.name))
                }
                _ => d,
            };
            self.reported_at
                .insert((d.code, d.span()), self.diags.0.len());
            self.diags.push(d);
        } else if self.generic {
            // Found again in a function checked on its own: the problem does not depend on the
            // call that found it first, so that call is not worth a note. (Where it is was
            // remembered; the list may have changed since, and then it is looked for.)
            let (code, span) = (d.code, d.span());
            let is_it = |old: &Diag| old.code == code && old.span() == span;
            let at = self
                .reported_at
                .get(&(code, span))
                .copied()
                .filter(|&i| self.diags.0.get(i).is_some_and(is_it));
            let indices: Vec<usize> = match at {
                Some(i) => vec![i],
                None => (0..self.diags.0.len())
                    .filter(|&i| is_it(&self.diags.0[i]))
                    .collect(),
            };
            for i in indices {
                self.diags.0[i].notes.retain(|n| !n.starts_with(CALL_NOTE));
            }
        }
    }

    /// Emits a node into the current region.
    pub fn add(&mut self, op: Op, inputs: Vec<NodeId>, ty: Type, span: Span) -> NodeId {
        self.emit.graph.add(self.region, op, inputs, ty, span)
    }

    /// Emits a node for a value that failed to check.
    pub fn error_val(&mut self, span: Span) -> Val {
        let node = self.add(Op::Const(Const::Unit), vec![], Type::Error, span);
        Val {
            ty: Type::Error,
            node,
            konst: None,
            span,
        }
    }

    /// A constant node.
    pub fn const_val(&mut self, c: Const, ty: Type, span: Span) -> Val {
        let node = self.add(Op::Const(c.clone()), vec![], ty.clone(), span);
        Val {
            ty,
            node,
            konst: Some(c),
            span,
        }
    }

    /// The folder relative paths in the current module resolve against.
    pub fn base_dir(&self) -> PathBuf {
        self.sources.get(self.modules[self.module].file).base_dir()
    }

    /// Resolves a path written in the current module.
    pub fn resolve_path(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }
}
