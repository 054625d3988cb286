//! Modules: loading files and standard-library modules, imports, cycles, and the top-level
//! items of each module in order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use super::batch::is_call_of;
use super::scope::{BindKind, Binding};
use super::types::{FnRef, Shape, Type};
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::{Const, Graph, Op, Output};
use crate::source::{FileId, Origin, Span};
use crate::syntax::ast::{Item, ItemKind, PatternKind, Program, UseSource};

/// Identifies a module: a standard-library path or a canonical file path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleKey {
    /// `std.solvers.mapga`.
    Std(String),
    /// A file on disk.
    File(PathBuf),
}

impl ModuleKey {
    /// Parses `std.a.b`.
    pub fn parse_std(path: &str) -> Option<ModuleKey> {
        path.starts_with("std.")
            .then(|| ModuleKey::Std(path.to_string()))
    }

    fn display(&self) -> String {
        match self {
            ModuleKey::Std(p) => p.clone(),
            ModuleKey::File(p) => p.display().to_string(),
        }
    }
}

/// A loaded module.
pub struct Module {
    /// How it was loaded.
    pub key: ModuleKey,
    /// Its source file.
    pub file: FileId,
    /// Its syntax tree.
    pub program: Rc<Program>,
    /// Functions and externs by name: item index.
    pub fns: HashMap<String, usize>,
    /// Module-level bindings (params, models, lets, imports), as checked so far.
    pub globals: HashMap<String, Binding>,
    /// Names exported (`pub fn`, `pub let`, `extern fn`).
    pub exports: Vec<String>,
    /// True once every item has been checked.
    pub done: bool,
    /// True for the pipeline being checked (the only module that may save, report, declare
    /// params and models).
    pub root: bool,
}

impl Checker {
    /// Parses every standard-library module and registers its `extern fn`s as built-ins.
    pub(super) fn load_prelude(&mut self) {
        for path in crate::stdlib::module_paths() {
            let Some(text) = crate::stdlib::module(path) else {
                continue;
            };
            let file = self
                .sources
                .add(format!("<{path}>"), Origin::Std(path.to_string()), text);
            let parsed = crate::syntax::parse_here(file, text);
            self.diags.extend(parsed.diags);
            let idx = self.modules.len();
            let mut m = self.new_module(
                ModuleKey::Std(path.to_string()),
                file,
                parsed.program,
                false,
            );
            for (i, item) in m.program.items.iter().enumerate() {
                match &item.kind {
                    ItemKind::Extern(e) => {
                        self.prelude.insert(e.name.node.clone(), (idx, i));
                    }
                    ItemKind::Fn(f) if f.public => {
                        self.std_index.insert(f.name.node.clone(), path.to_string());
                    }
                    _ => {}
                }
            }
            // Extern-only modules are complete as parsed; others are checked when imported.
            m.done = m
                .program
                .items
                .iter()
                .all(|i| matches!(i.kind, ItemKind::Extern(_)));
            self.modules.push(m);
        }
    }

    fn new_module(&mut self, key: ModuleKey, file: FileId, program: Program, root: bool) -> Module {
        let mut fns = HashMap::new();
        let mut exports = Vec::new();
        for (i, item) in program.items.iter().enumerate() {
            match &item.kind {
                ItemKind::Fn(f) => {
                    fns.entry(f.name.node.clone()).or_insert(i);
                    if f.public {
                        exports.push(f.name.node.clone());
                    }
                }
                ItemKind::Extern(e) => {
                    fns.entry(e.name.node.clone()).or_insert(i);
                    exports.push(e.name.node.clone());
                }
                ItemKind::Let {
                    public: true,
                    pattern,
                    ..
                } => {
                    for n in pattern_names(&pattern.node) {
                        exports.push(n);
                    }
                }
                _ => {}
            }
        }
        Module {
            key,
            file,
            program: Rc::new(program),
            fns,
            globals: HashMap::new(),
            exports,
            done: false,
            root,
        }
    }

    /// Checks the pipeline in `file`.
    pub(super) fn check_root(&mut self, file: FileId) {
        let text = self.sources.get(file).text.clone();
        let parsed = crate::syntax::parse_here(file, &text);
        // With syntax errors some items are missing, so "unused" would be noise.
        self.quiet_lints = parsed.diags.has_errors();
        self.diags.extend(parsed.diags);
        let key = match &self.sources.get(file).origin {
            Origin::Path(p) => {
                let canon = p.canonicalize().unwrap_or_else(|_| p.clone());
                std_module_of(&canon).map_or(ModuleKey::File(canon), ModuleKey::Std)
            }
            _ => ModuleKey::File(PathBuf::from(self.sources.get(file).name.clone())),
        };
        let m = self.new_module(key, file, parsed.program, true);
        let idx = self.modules.len();
        self.modules.push(m);
        self.check_module(idx, Span::new(file, 0, 0));
        // Every `--set` must name a param of the pipeline.
        let params: Vec<String> = self
            .emit
            .graph
            .params
            .iter()
            .map(|p| p.name.clone())
            .collect();
        let unknown: Vec<String> = self
            .opts
            .overrides
            .keys()
            .filter(|k| !params.contains(k))
            .cloned()
            .collect();
        for name in unknown {
            let mut d = Diag::error(
                Code::UnknownName,
                Span::new(file, 0, 0),
                format!("`--set {name}=...` names no param of this pipeline"),
                "",
            );
            d = match super::suggest::closest(&name, params.iter().map(String::as_str)) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None if params.is_empty() => d.with_help("this pipeline declares no `param`"),
                None => d.with_help(format!("its params are: {}", params.join(", "))),
            };
            self.report(d);
        }
    }

    /// Loads (if needed) and checks a module; returns its index.
    pub(super) fn load_module(&mut self, key: ModuleKey, at: Span) -> Option<usize> {
        if let Some(pos) = self.loading.iter().position(|(k, _)| *k == key) {
            let chain: Vec<String> = self.loading[pos..]
                .iter()
                .map(|(k, _)| k.display())
                .chain(std::iter::once(key.display()))
                .collect();
            let mut d = Diag::error(
                Code::ImportCycle,
                at,
                "modules import each other in a cycle",
                "this import closes the cycle",
            )
            .with_note(format!("cycle: {}", chain.join(" -> ")))
            .with_help("move the shared definitions into a third file that both import");
            if let Some((_, first)) = self.loading.get(pos + 1) {
                if first.file == at.file {
                    d = d.with_label(*first, "the cycle starts here");
                }
            }
            self.report(d);
            return None;
        }
        if let Some(i) = self.modules.iter().position(|m| m.key == key) {
            if !self.modules[i].done {
                self.check_module(i, at);
            }
            return Some(i);
        }
        let (file, text) = match &key {
            ModuleKey::Std(path) => {
                let text = crate::stdlib::module(path)?;
                let file = self
                    .sources
                    .add(format!("<{path}>"), Origin::Std(path.clone()), text);
                (file, text.to_string())
            }
            ModuleKey::File(path) => {
                if let Some(label) = unusable_module(path) {
                    self.report(
                        Diag::error(
                            Code::BadFile,
                            at,
                            format!("cannot import `{}`", path.display()),
                            label,
                        )
                        .with_help(
                            "`use` imports pipeline files (`.mapga`, at most 16 MB); load data \
                             with `load_npy`, `image` or a model loader",
                        ),
                    );
                    return None;
                }
                let bytes = match std::fs::read(path) {
                    Ok(b) => b,
                    Err(e) => {
                        let (code, label) = if e.kind() == std::io::ErrorKind::NotFound {
                            (Code::MissingFile, "no such file".to_string())
                        } else {
                            (Code::BadFile, e.to_string())
                        };
                        self.report(
                            Diag::error(
                                code,
                                at,
                                format!("cannot import `{}`", path.display()),
                                label,
                            )
                            .with_note(format!("resolved to {}", path.display())),
                        );
                        return None;
                    }
                };
                self.dependencies.push(path.clone());
                // An import's folder is readable, as the pipeline's own is.
                if let Some(dir) = path.parent() {
                    self.opts.permissions.allow_read(dir);
                }
                let text = String::from_utf8_lossy(&bytes).into_owned();
                let file = self.sources.add(
                    path.display().to_string(),
                    Origin::Path(path.clone()),
                    text.clone(),
                );
                if let Err(d) = crate::syntax::decode(file, &bytes) {
                    self.report(d);
                    return None;
                }
                (file, text)
            }
        };
        let parsed = crate::syntax::parse_here(file, &text);
        self.diags.extend(parsed.diags);
        let m = self.new_module(key, file, parsed.program, false);
        let idx = self.modules.len();
        self.modules.push(m);
        self.check_module(idx, at);
        Some(idx)
    }

    /// Checks every item of module `idx`: imports, then the top-level items in order, then each
    /// function on its own.
    fn check_module(&mut self, idx: usize, at: Span) {
        let key = self.modules[idx].key.clone();
        self.loading.push((key, at));
        let saved = (
            self.module,
            self.region,
            std::mem::take(&mut self.scopes),
            self.generic,
        );
        self.module = idx;
        self.region = Graph::MAIN;
        self.generic = false;
        let program = self.modules[idx].program.clone();
        self.check_duplicates(&program);
        for item in &program.items {
            if let ItemKind::Use(u) = &item.kind {
                self.check_use(u, item.span);
            }
        }
        for item in &program.items {
            self.check_item(item);
        }
        if self.modules[idx].root {
            self.check_grids(&program);
        }
        // Functions on their own last, so module-level bindings are visible in their bodies
        // wherever the function is written.
        for item in &program.items {
            match &item.kind {
                ItemKind::Fn(f) => self.check_fn_alone(f),
                ItemKind::Extern(e) => self.check_extern_decl(e, item.span),
                _ => {}
            }
        }
        if self.modules[idx].root {
            self.warn_unused_globals(idx);
        }
        self.modules[idx].done = true;
        (self.module, self.region, self.scopes, self.generic) = saved;
        self.loading.pop();
    }

    /// Reports names declared twice at the top level.
    fn check_duplicates(&mut self, program: &Program) {
        let mut seen: HashMap<String, Span> = HashMap::new();
        for item in &program.items {
            let names: Vec<(String, Span)> = match &item.kind {
                ItemKind::Param { name, .. } | ItemKind::Model { name, .. } => {
                    vec![(name.node.clone(), name.span)]
                }
                ItemKind::Fn(f) => vec![(f.name.node.clone(), f.name.span)],
                ItemKind::Extern(e) => vec![(e.name.node.clone(), e.name.span)],
                ItemKind::Let { pattern, .. } => pattern_names(&pattern.node)
                    .into_iter()
                    .map(|n| (n, pattern.span))
                    .collect(),
                _ => vec![],
            };
            for (n, s) in names {
                if let Some(first) = seen.get(&n) {
                    self.report(
                        Diag::error(
                            Code::Duplicate,
                            s,
                            format!("`{n}` is defined twice"),
                            "defined again here",
                        )
                        .with_label(*first, "first defined here")
                        .with_help(format!("rename one of them, or remove the second `{n}`")),
                    );
                } else {
                    seen.insert(n, s);
                }
            }
        }
    }

    /// Checks that an `extern fn` is declared only in the standard library.
    fn check_extern_decl(&mut self, e: &crate::syntax::ast::ExternDef, span: Span) {
        if !matches!(self.modules[self.module].key, ModuleKey::Std(_)) {
            self.report(
                Diag::error(
                    Code::ModuleItem,
                    span,
                    "`extern fn` declares a built-in and is only allowed in the standard library",
                    "not allowed here",
                )
                .with_help(format!(
                    "write `fn {}(...) {{ ... }}` with a body instead",
                    e.name.node
                )),
            );
        }
    }

    /// Resolves a `use` and binds the imported names in the current module.
    fn check_use(&mut self, u: &crate::syntax::ast::UseItem, span: Span) {
        let (key, key_span, item_from_path) = match &u.source {
            UseSource::File(s) => {
                let path = self.resolve_path(&s.node);
                let canon = path.canonicalize().unwrap_or(path);
                (ModuleKey::File(canon), s.span, None)
            }
            // An unreadable path (a string with a bad escape), already reported.
            UseSource::Module(parts) if parts.is_empty() => return,
            UseSource::Module(parts) => {
                let names: Vec<&str> = parts.iter().map(|p| p.node.as_str()).collect();
                let full = names.join(".");
                let pspan = match (parts.first(), parts.last()) {
                    (Some(a), Some(b)) => a.span.to(b.span),
                    _ => span,
                };
                if names.first() != Some(&"std") {
                    self.report(
                        Diag::error(
                            Code::UnknownModule,
                            pspan,
                            format!("no module `{full}`"),
                            "module paths start with `std.`",
                        )
                        .with_help(
                            "import your own files by relative path: `use \"./file.mapga\"`",
                        ),
                    );
                    return;
                }
                if crate::stdlib::module(&full).is_some() {
                    (ModuleKey::Std(full), pspan, None)
                } else {
                    // `use std.a.b` may name the item `b` of module `std.a`.
                    let parent = names[..names.len().saturating_sub(1)].join(".");
                    match (crate::stdlib::module(&parent), parts.last()) {
                        (Some(_), Some(last)) if names.len() > 2 => {
                            (ModuleKey::Std(parent), pspan, Some(last.clone()))
                        }
                        _ => {
                            let known: Vec<&str> = crate::stdlib::module_paths().collect();
                            let mut d = Diag::error(
                                Code::UnknownModule,
                                pspan,
                                format!("no module `{full}` in the standard library"),
                                "unknown module",
                            );
                            if let Some(s) = super::suggest::closest(&full, known.iter().copied()) {
                                d = d.with_help(format!("did you mean `{s}`?"));
                            } else {
                                d = d.with_help(format!("the modules are: {}", known.join(", ")));
                            }
                            self.report(d);
                            return;
                        }
                    }
                }
            }
        };
        let Some(midx) = self.load_module(key, key_span) else {
            // The import failed (reported): its names are errors, not undefined.
            let names: Vec<crate::source::Ident> = u
                .names
                .iter()
                .flatten()
                .chain(item_from_path.iter())
                .cloned()
                .collect();
            for n in names {
                let v = self.error_val(n.span);
                self.bind_global(&n.node, BindKind::Import, v, n.span);
                if let Some(b) = self.modules[self.module].globals.get(&n.node) {
                    b.used.set(true);
                }
            }
            return;
        };
        let picked: Vec<crate::source::Ident> = match (&u.names, item_from_path) {
            (Some(names), _) => names.clone(),
            (None, Some(one)) => vec![one],
            (None, None) => {
                // A whole-module import brings in every export; unused ones are not worth a warning.
                let exports = self.modules[midx].exports.clone();
                for n in exports {
                    self.bind_import(&n, midx, key_span);
                    if let Some(b) = self.modules[self.module].globals.get(&n) {
                        b.used.set(true);
                    }
                }
                return;
            }
        };
        for name in picked {
            if self.modules[midx].exports.contains(&name.node) {
                self.bind_import(&name.node, midx, name.span);
            } else {
                let exists = self.modules[midx].fns.contains_key(&name.node)
                    || self.modules[midx].globals.contains_key(&name.node);
                let mname = self.modules[midx].key.display();
                let mut d = Diag::error(
                    Code::UnknownImport,
                    name.span,
                    format!("`{}` is not exported by `{mname}`", name.node),
                    if exists { "not public" } else { "not found" },
                );
                if exists {
                    d = d.with_help(format!("mark it `pub` in `{mname}` to import it"));
                } else if let Some(s) = super::suggest::closest(
                    &name.node,
                    self.modules[midx].exports.iter().map(String::as_str),
                ) {
                    d = d.with_help(format!("did you mean `{s}`?"));
                }
                self.report(d);
                // Bound as an error, so its uses are not reported as undefined.
                let v = self.error_val(name.span);
                self.bind_global(&name.node, BindKind::Import, v, name.span);
                if let Some(b) = self.modules[self.module].globals.get(&name.node) {
                    b.used.set(true);
                }
            }
        }
    }

    /// Binds `name`, exported by module `midx`, in the current module.
    fn bind_import(&mut self, name: &str, midx: usize, span: Span) {
        let src = &self.modules[midx];
        let binding = if src.fns.contains_key(name) {
            let fnref = if self.prelude.get(name).is_some_and(|(m, _)| *m == midx) {
                FnRef::Builtin(name.to_string())
            } else {
                FnRef::User {
                    module: midx,
                    name: name.to_string(),
                }
            };
            Binding::new(name, BindKind::Import, Type::Fn(fnref), None, None, span)
        } else if let Some(b) = src.globals.get(name) {
            let mut b = b.clone();
            b.kind = BindKind::Import;
            b.span = span;
            b
        } else {
            return;
        };
        // Importing a built-in by name is allowed and changes nothing; mark it used.
        binding
            .used
            .set(matches!(binding.ty, Type::Fn(FnRef::Builtin(_))));
        self.modules[self.module]
            .globals
            .insert(name.to_string(), binding);
    }

    /// Checks one top-level item (functions were checked on their own already).
    fn check_item(&mut self, item: &Item) {
        let root = self.modules[self.module].root;
        let not_here = |what: &str| {
            Diag::error(
                Code::ModuleItem,
                item.span,
                format!(
                    "`{what}` is only allowed in the pipeline being run, not in an imported module"
                ),
                "in an imported module",
            )
            .with_help("move it into the pipeline file, or turn it into a function parameter")
        };
        match &item.kind {
            ItemKind::Use(_) | ItemKind::Fn(_) | ItemKind::Extern(_) => {}
            // Checked once the file's params are all known (`check_grids`).
            ItemKind::Grid(_) => {
                if !root {
                    self.report(
                        not_here("grid")
                            .with_help("move it into the suite file that `mapga eval` runs"),
                    );
                }
            }
            ItemKind::Param { name, ty, default } => {
                if !root {
                    self.report(not_here("param"));
                    let v = self.error_val(name.span);
                    self.bind_global(&name.node, BindKind::Param, v, name.span);
                    return;
                }
                self.check_param(name, ty.as_ref(), default);
            }
            ItemKind::Model { name, value } => {
                if !root {
                    self.report(not_here("model"));
                    let v = self.error_val(name.span);
                    self.bind_global(&name.node, BindKind::Model, v, name.span);
                    return;
                }
                let v = self.expr(value);
                if !matches!(v.ty, Type::Model(_) | Type::Error) {
                    self.report(
                        Diag::error(
                            Code::TypeMismatch,
                            value.span,
                            "a `model` must be a denoiser, a consistency model or a prior",
                            format!("this is {}", v.ty.kind_phrase()),
                        )
                        .with_help("use `denoiser(\"file.safetensors\")`, `consistency(...)` or `gaussian_prior(...)`; bind other values with `let`"),
                    );
                }
                self.bind_global(&name.node, BindKind::Model, v, name.span);
            }
            ItemKind::Let {
                pattern, ty, value, ..
            } => {
                let v = self.expr(value);
                let v = self.annotate(v, ty.as_ref());
                self.bind_pattern_global(pattern, v);
            }
            ItemKind::Save { value, path } => {
                if !root {
                    self.report(not_here("save"));
                    return;
                }
                // `save as_int64(x) to "x.npy"`: the one place `as_int64` is allowed.
                let int64 = is_call_of(value, "as_int64");
                self.int64_save = int64.then_some(value.span);
                let v = self.expr(value);
                self.int64_save = None;
                let p = self.expr(path);
                self.expect_type(&p, &Type::Str, "the path to save to");
                if int64 {
                    self.int64_save_path(&p);
                } else {
                    self.check_saved_image(&v, &p);
                }
                if !matches!(v.ty, Type::Tensor(_) | Type::Error | Type::Any) {
                    self.report(
                        Diag::error(
                            Code::TypeMismatch,
                            value.span,
                            "only tensors (images) can be saved",
                            format!("this is {}", v.ty.kind_phrase()),
                        )
                        .with_help("report numbers with `report`"),
                    );
                }
                if let Some(Const::Str(s)) = &p.konst {
                    self.check_save_path(s, path.span);
                    let lower = s.to_ascii_lowercase();
                    if ![".png", ".npy", ".jpg", ".jpeg"]
                        .iter()
                        .any(|e| lower.ends_with(e))
                    {
                        self.report(
                            Diag::error(
                                Code::InvalidValue,
                                path.span,
                                "unsupported output format",
                                "this path",
                            )
                            .with_help(
                                "save images as `.png` (8-bit, or 16-bit as `name.16.png`) or \
                                 `.jpg`/`.jpeg`, or arrays as `.npy` (float32)",
                            ),
                        );
                    }
                }
                self.emit.graph.outputs.push(Output::Save {
                    value: v.node,
                    path: p.node,
                    span: item.span,
                });
            }
            ItemKind::Report(entries) => {
                if !root {
                    self.report(not_here("report"));
                    return;
                }
                for e in entries {
                    let v = self.expr(&e.value);
                    // A number, or one number per item of a batch (`Tensor[N]`, e.g.
                    // `psnr(x_hat, x_true)` of two batches): stored as a list, printed as
                    // mean ± standard error.
                    let per_item = match self.dims.resolve_type(&v.ty) {
                        Type::Tensor(Shape::Dims(d)) => d.len() == 1,
                        Type::Tensor(Shape::Unknown) => true,
                        _ => false,
                    };
                    if per_item {
                        // Fine: stored as a list.
                    } else if let Type::Tensor(_) = v.ty {
                        let shown = self.dims.resolve_type(&v.ty);
                        self.report(
                            Diag::error(
                                Code::TypeMismatch,
                                e.value.span,
                                "only numbers, or one number per item (`Tensor[N]`), can be reported, and this is a tensor",
                                format!("this is {shown}"),
                            )
                            .with_help("report a metric such as `psnr(x_hat, x_true)` (one value per item of a batch); save images and arrays with `save`"),
                        );
                    } else if !v.ty.is_number() && !v.ty.is_open() {
                        self.report(
                            Diag::error(
                                Code::TypeMismatch,
                                e.value.span,
                                "only numbers can be reported",
                                format!("this is {}", v.ty.kind_phrase()),
                            )
                            .with_help("report a metric such as `psnr(x_hat, x_true)`; save images with `save`"),
                        );
                    }
                    let label = match &e.label {
                        Some(l) => l.node.clone(),
                        None => self.sources.snippet(e.value.span).to_string(),
                    };
                    self.emit.graph.outputs.push(Output::Report {
                        value: v.node,
                        label,
                        span: e.value.span,
                    });
                }
            }
        }
    }

    /// A pipeline `param`: its default (or `--set` override) must be a literal value.
    fn check_param(
        &mut self,
        name: &crate::source::Ident,
        ty: Option<&crate::syntax::ast::TypeExpr>,
        default: &crate::syntax::ast::Expr,
    ) {
        let d = self.expr(default);
        let d = self.annotate(d, ty);
        let mut value = d.konst.clone();
        let mut pty = d.ty.clone();
        if value.is_none() && !d.ty.is_open() {
            self.report(
                Diag::error(
                    Code::InvalidValue,
                    default.span,
                    "a param's default must be a constant",
                    "not known before running",
                )
                .with_help("use a literal (`0.05`, `20`, `\"file.png\"`, `true`), or bind computed values with `let`"),
            );
        }
        if let Some(text) = self.opts.overrides.get(&name.node).cloned() {
            match parse_override(&text) {
                Some((c, t)) => {
                    let fits = t == pty || (t == Type::Int && pty == Type::Float);
                    if fits || pty.is_open() {
                        value = Some(match (&c, &pty) {
                            (Const::Int(i), Type::Float) => Const::Float(*i as f64),
                            _ => c,
                        });
                    } else {
                        self.report(
                            Diag::error(
                                Code::TypeMismatch,
                                name.span,
                                format!("`--set {}={text}` gives {} but the param is {}", name.node, t.kind_phrase(), pty.kind_phrase()),
                                "this param",
                            )
                            .with_help(format!("give a value of type {pty}")),
                        );
                    }
                    if pty.is_open() {
                        pty = t;
                    }
                }
                None => self.report(
                    Diag::error(
                        Code::InvalidValue,
                        name.span,
                        format!("`--set {}={text}` is not a literal value", name.node),
                        "this param",
                    )
                    .with_help("write numbers as `0.1` or `20`, booleans as `true`, strings as `name` or `\"name\"`"),
                ),
            }
        }
        let node = self.add(Op::Param(name.node.clone()), vec![], pty.clone(), name.span);
        self.emit.graph.params.push(crate::graph::Param {
            name: name.node.clone(),
            ty: pty.clone(),
            value: value.clone(),
            node,
        });
        let v = Val {
            ty: pty,
            node,
            konst: value,
            span: name.span,
        };
        self.bind_global(&name.node, BindKind::Param, v, name.span);
    }

    /// Binds a module-level name.
    pub(super) fn bind_global(&mut self, name: &str, kind: BindKind, v: Val, span: Span) {
        let b = Binding::new(name, kind, v.ty, Some(v.node), v.konst, span);
        self.modules[self.module]
            .globals
            .insert(name.to_string(), b);
    }

    fn bind_pattern_global(&mut self, pattern: &crate::syntax::ast::Pattern, v: Val) {
        for (name, span, val) in self.destructure(pattern, v) {
            self.bind_global(&name, BindKind::Let, val, span);
        }
    }

    /// Warns about params, models and lets of the pipeline that nothing uses.
    fn warn_unused_globals(&mut self, idx: usize) {
        let mut unused: Vec<(String, Span, BindKind)> = self.modules[idx]
            .globals
            .values()
            .filter(|b| {
                !b.used.get()
                    && !b.name.starts_with('_')
                    && !self.modules[idx].exports.contains(&b.name)
            })
            .filter(|b| {
                matches!(
                    b.kind,
                    BindKind::Let | BindKind::Model | BindKind::Param | BindKind::Import
                )
            })
            .map(|b| (b.name.clone(), b.span, b.kind))
            .collect();
        unused.sort_by_key(|(_, s, _)| s.start);
        for (name, span, kind) in unused {
            let what = match kind {
                BindKind::Param => "param",
                BindKind::Model => "model",
                BindKind::Import => "import",
                _ => "binding",
            };
            self.report(
                Diag::error(
                    Code::Unused,
                    span,
                    format!("{what} `{name}` is never used"),
                    "unused",
                )
                .with_help(format!("remove it, or name it `_{name}` to keep it quiet")),
            );
        }
    }
}

/// The standard-library module a file on disk is the source of (`.../stdlib/solvers/mapga.mapga`
/// is `std.solvers.mapga`), so checking the library's own files treats them as library code.
fn std_module_of(path: &std::path::Path) -> Option<String> {
    let comps: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let at = comps.iter().rposition(|c| c == "stdlib")?;
    let rest = &comps[at + 1..];
    let last = rest.last()?.strip_suffix(".mapga")?;
    let mut parts: Vec<&str> = rest[..rest.len() - 1].iter().map(String::as_str).collect();
    parts.push(last);
    let module = format!("std.{}", parts.join("."));
    crate::stdlib::module(&module).is_some().then_some(module)
}

/// The names a pattern binds.
pub(super) fn pattern_names(p: &PatternKind) -> Vec<String> {
    match p {
        PatternKind::Name(n) => vec![n.clone()],
        PatternKind::Wildcard => vec![],
        PatternKind::Tuple(ps) => ps.iter().flat_map(|p| pattern_names(&p.node)).collect(),
    }
}

/// Parses a `--set` value: a number, a bool, a quoted string, or a bare word as a string.
pub fn parse_override(text: &str) -> Option<(Const, Type)> {
    let t = text.trim();
    if let Ok(i) = t.replace('_', "").parse::<i64>() {
        return Some((Const::Int(i), Type::Int));
    }
    if let Ok(f) = t.parse::<f64>() {
        if f.is_finite() {
            return Some((Const::Float(f), Type::Float));
        }
        return None;
    }
    match t {
        "true" => return Some((Const::Bool(true), Type::Bool)),
        "false" => return Some((Const::Bool(false), Type::Bool)),
        _ => {}
    }
    if let Some(s) = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        return Some((Const::Str(s.to_string()), Type::Str));
    }
    if !t.is_empty() {
        return Some((Const::Str(t.to_string()), Type::Str));
    }
    None
}

/// The most bytes a `.mapga` module may have: far above any real pipeline, far below what a
/// device file or a data file could feed the parser.
const MAX_MODULE_BYTES: u64 = 16 << 20;

/// Why `path` cannot be imported before reading it, if it cannot: not a `.mapga` file (its
/// first lines would otherwise be quoted in a syntax error: never a credentials file's), not a
/// regular file (`/dev/zero` reads without end), or too large. A missing file is reported when
/// it is read.
pub(super) fn unusable_module(path: &std::path::Path) -> Option<String> {
    if path.extension().is_none_or(|e| e != "mapga") {
        return Some("not a `.mapga` file".into());
    }
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => Some("not a regular file".into()),
        Ok(m) if m.len() > MAX_MODULE_BYTES => Some(format!(
            "{:.1} MB: more than a pipeline file can be",
            m.len() as f64 / 1e6
        )),
        _ => None,
    }
}
