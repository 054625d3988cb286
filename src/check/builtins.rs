//! Shape rules of the built-ins.
//!
//! A built-in's signature (`extern fn` in `stdlib/*.mapga`) gives its parameter and result
//! types. The rule here refines the result: the shape of an image read from its header, the
//! domain and range of an operator, a model's image shape from its card. Rules also check
//! argument values known before running (a box inside the image, a positive sigma) and
//! report them with the argument's span. Headers are read, never pixel data or weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::batch::{join_batch, split_batch};
use super::types::{Dim, FnRef, ModelKind, ModelType, OpType, Shape, Type};
use super::unify::Scale;
use super::{Checker, Val};
use crate::diagnostics::{Code, Diag};
use crate::graph::Const;
use crate::io::FileError;
use crate::source::Span;

/// The arguments of a built-in call, by parameter name, after defaults are filled in.
pub(crate) struct Args {
    /// Each parameter with its value (`None` for the variadic parameter).
    pub(crate) named: Vec<(String, Option<Val>)>,
    /// The variadic parameter's values.
    pub(crate) rest: Vec<Val>,
    /// The whole call.
    pub(crate) call: Span,
}

impl Args {
    /// The value of parameter `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Val> {
        self.named
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The argument nodes in parameter order, the variadic parameter's spread at its place:
    /// the inputs of the built-in's graph node.
    pub(crate) fn input_nodes(&self) -> Vec<crate::graph::NodeId> {
        let mut nodes = Vec::new();
        for (_, v) in &self.named {
            match v {
                Some(v) => nodes.push(v.node),
                None => nodes.extend(self.rest.iter().map(|r| r.node)),
            }
        }
        nodes
    }

    /// Makes parameter `name`'s argument the value of `node` (same type and span).
    fn replace_node(&mut self, name: &str, node: crate::graph::NodeId) {
        if let Some((_, Some(v))) = self.named.iter_mut().find(|(n, _)| n == name) {
            v.node = node;
        }
    }

    /// The span of parameter `name`'s argument (the call when it was defaulted).
    pub(super) fn span(&self, name: &str) -> Span {
        self.get(name).map_or(self.call, |v| {
            if v.span.file == self.call.file {
                v.span
            } else {
                self.call
            }
        })
    }

    pub(super) fn int(&self, name: &str) -> Option<i64> {
        self.get(name)?.konst.as_ref()?.as_i64()
    }

    pub(super) fn float(&self, name: &str) -> Option<f64> {
        self.get(name)?.konst.as_ref()?.as_f64()
    }

    pub(super) fn string(&self, name: &str) -> Option<&str> {
        match self.get(name)?.konst.as_ref()? {
            Const::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn ty(&self, name: &str) -> Type {
        self.get(name).map_or(Type::Error, |v| v.ty.clone())
    }
}

/// The number of elements of a shape whose dimensions are all known (`u64::MAX` for a count
/// past it, which no real shape has).
pub(super) fn element_count(dims: &[Dim]) -> Option<u64> {
    dims.iter().try_fold(1u64, |n, d| match d {
        Dim::Known(k) => Some(n.saturating_mul(*k)),
        Dim::Var(_) => None,
    })
}

/// The shape of a tensor or shape value.
pub(super) fn shape_of(t: &Type) -> Option<Shape> {
    match t {
        Type::Tensor(s) | Type::ShapeVal(s) => Some(s.clone()),
        _ => None,
    }
}

impl Checker {
    /// Reports an argument value outside what the built-in accepts.
    pub(super) fn invalid(&mut self, args: &Args, param: &str, message: String, help: &str) {
        let d = Diag::error(
            Code::InvalidValue,
            args.span(param),
            message,
            format!("`{param}` is given here"),
        );
        let d = if help.is_empty() {
            d
        } else {
            d.with_help(help)
        };
        self.report(d);
    }

    /// Checks `lo < value` (or `<=`) for a constant argument.
    fn require(&mut self, args: &Args, param: &str, ok: impl Fn(f64) -> bool, what: &str) -> bool {
        match args.float(param) {
            Some(v) if !ok(v) => {
                self.invalid(
                    args,
                    param,
                    format!("`{param}` must be {what}, but it is {v}"),
                    "",
                );
                false
            }
            _ => true,
        }
    }

    /// A file argument: resolved against the current file, reported when missing.
    fn file_arg(&mut self, args: &Args, param: &str) -> Option<PathBuf> {
        let written = args.string(param)?.to_string();
        let path = self.resolve_path(&written);
        if let Err(denied) = self.opts.permissions.check_read(&path) {
            self.report(permission_diag(&denied, args.span(param)));
            return None;
        }
        self.dependencies.push(path.clone());
        Some(path)
    }

    /// Reports a file that cannot be used.
    fn file_error(&mut self, args: &Args, param: &str, e: &FileError) {
        let span = args.span(param);
        let d = match e {
            FileError::NotFound(p) => Diag::error(
                Code::MissingFile,
                span,
                format!("file not found: `{}`", p.display()),
                "this file does not exist",
            )
            .with_note(format!("resolved to {}", absolute(p).display()))
            .with_help("paths are relative to the folder of the .mapga file"),
            other => Diag::error(Code::BadFile, span, other.to_string(), "this file"),
        };
        self.report(d);
    }

    /// The result type of built-in `name` for these arguments; `declared` is the signature's
    /// result type (already unified with the parameters' annotations).
    pub(super) fn builtin_rule(&mut self, name: &str, args: &mut Args, declared: Type) -> Type {
        if args
            .named
            .iter()
            .any(|(_, v)| v.as_ref().is_some_and(|v| matches!(v.ty, Type::Error)))
        {
            // An erroneous argument makes an erroneous result, never a guessed type: a
            // per-item metric of a bad batch would otherwise be `Float` and cascade into a
            // second, bogus error (`mean(ssim(x, bad))`: "expected Tensor, found Float").
            return Type::Error;
        }
        match name {
            "image" => {
                let Some(path) = self.file_arg(args, "path") else {
                    return declared;
                };
                match crate::io::headers::image_header(&path) {
                    Ok(h) => Type::Tensor(Shape::known(&[
                        h.channels as u64,
                        h.height as u64,
                        h.width as u64,
                    ])),
                    Err(e) => {
                        self.file_error(args, "path", &e);
                        Type::Error
                    }
                }
            }
            "mask_image" => {
                let Some(path) = self.file_arg(args, "path") else {
                    return declared;
                };
                match crate::io::headers::image_header(&path) {
                    Ok(h) => Type::Tensor(Shape::known(&[1, h.height as u64, h.width as u64])),
                    Err(e) => {
                        self.file_error(args, "path", &e);
                        Type::Error
                    }
                }
            }
            "grid" | "captioned_grid" => self.grid_rule(name, args, declared),
            "fit" | "resize" | "center_crop" => self.resize_rule(name, args),
            "enlarge" => self.enlarge_rule(args),
            "density_plot" => {
                if let Type::Model(m) = args.ty("prior") {
                    if let Shape::Dims(d) = self.dims.resolve_shape(&m.shape) {
                        let n = element_count(&d);
                        if n.is_some_and(|n| n != 2) {
                            self.invalid(
                                args,
                                "prior",
                                format!("`density_plot` draws problems with 2 unknowns, but this prior is over {} elements", n.unwrap_or(0)),
                                "use a prior over an image of 2 pixels, e.g. shape(1, 1, 2)",
                            );
                            return Type::Error;
                        }
                    }
                }
                let prior = match args.ty("prior") {
                    Type::Model(m) => m.shape.clone(),
                    _ => Shape::Unknown,
                };
                if self.check_problem(args, Some(&prior)).is_some() {
                    self.invalid(
                        args,
                        "y",
                        "`density_plot` draws one measurement, not a batch".into(),
                        "pick one item of the batch: `y[0]`",
                    );
                    return Type::Error;
                }
                let p = crate::io::plot::PANEL as u64;
                Type::Tensor(Shape::known(&[3, p, 3 * p]))
            }
            "load_npy" => {
                let Some(path) = self.file_arg(args, "path") else {
                    return declared;
                };
                match crate::io::npy::npy_header(&path) {
                    Ok(h) => Type::Tensor(Shape::known(&h.shape)),
                    Err(e) => {
                        self.file_error(args, "path", &e);
                        Type::Error
                    }
                }
            }
            "load_tensor" => {
                let Some(path) = self.file_arg(args, "path") else {
                    return declared;
                };
                let tensors = match crate::io::headers::safetensors_header(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        self.file_error(args, "path", &e);
                        return Type::Error;
                    }
                };
                let Some(name) = args.string("name").map(str::to_string) else {
                    return declared;
                };
                match tensors.get(&name) {
                    Some(info) => Type::Tensor(Shape::known(&info.shape)),
                    None => {
                        let mut d = Diag::error(
                            Code::BadFile,
                            args.span("name"),
                            format!("`{}` has no tensor named `{name}`", path.display()),
                            "this name",
                        );
                        if let Some(s) =
                            super::suggest::closest(&name, tensors.keys().map(String::as_str))
                        {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        } else {
                            let names: Vec<&str> =
                                tensors.keys().map(String::as_str).take(8).collect();
                            d = d.with_help(format!("its tensors are: {}", names.join(", ")));
                        }
                        self.report(d);
                        Type::Error
                    }
                }
            }
            "shape" => {
                let dims = args
                    .rest
                    .iter()
                    .map(|v| match v.konst.as_ref().and_then(Const::as_i64) {
                        Some(n) if n > 0 => Dim::Known(n as u64),
                        Some(n) => {
                            self.report(Diag::error(
                                Code::InvalidValue,
                                v.span,
                                format!("a dimension must be positive, not {n}"),
                                "here",
                            ));
                            self.dims.fresh()
                        }
                        None => self.dims.fresh(),
                    })
                    .collect();
                Type::ShapeVal(Shape::Dims(dims))
            }
            "zeros" | "ones" | "gaussian_like" => {
                Type::Tensor(shape_of(&args.ty("shape")).unwrap_or(Shape::Unknown))
            }
            "zeros_like" | "ones_like" | "stop_grad" | "clip" | "score" | "renoise" => args.ty("x"),
            "ddim_step" => {
                self.same_shape(args, "x", "x0");
                args.ty("x")
            }
            "grad" => args.ty("wrt"),
            "vjp" => self.vjp_rule(args),
            "sqrt" | "exp" | "log" | "abs" => self.elementwise(args, &["x"]),
            "min" | "max" => self.elementwise(args, &["a", "b"]),
            "tensor" => {
                let shape = shape_of(&args.ty("shape")).unwrap_or(Shape::Unknown);
                if let (Some(Const::List(xs)), Shape::Dims(d)) = (
                    args.get("values").and_then(|v| v.konst.clone()),
                    self.dims.resolve_shape(&shape),
                ) {
                    let known = element_count(&d);
                    if let Some(n) = known {
                        if n != xs.len() as u64 {
                            self.invalid(
                                args,
                                "values",
                                format!(
                                    "{} values cannot fill a shape of {} elements",
                                    xs.len(),
                                    n
                                ),
                                "give exactly as many values as the shape has elements",
                            );
                            return Type::Error;
                        }
                    }
                }
                Type::Tensor(shape)
            }
            "box_mask" => {
                let ty = self.mask_shape(args);
                if let (Some(h), Some(w)) = (args.int("image_height"), args.int("image_width")) {
                    for (p, lim, off) in [("height", h, "top"), ("width", w, "left")] {
                        if let (Some(size), Some(start)) = (args.int(p), args.int(off)) {
                            if start < 0 || size <= 0 || start + size > lim {
                                self.invalid(
                                    args,
                                    p,
                                    format!("the box ({off} {start}, {p} {size}) does not fit in an image {p} of {lim}"),
                                    "keep the box inside the image",
                                );
                            }
                        }
                    }
                }
                ty
            }
            "center_box_mask" => {
                self.require(args, "fraction", |f| f > 0.0 && f <= 1.0, "in (0, 1]");
                self.mask_shape(args)
            }
            "random_mask" => {
                self.require(args, "keep", |f| (0.0..=1.0).contains(&f), "in [0, 1]");
                self.mask_shape(args)
            }
            "random_boxes_mask" => {
                self.require(args, "count", |f| f >= 0.0, "zero or more");
                self.require(args, "size", |f| f >= 1.0, "at least 1");
                self.mask_shape(args)
            }
            "half_mask" => {
                if let Some(side) = args.string("side") {
                    if !matches!(side, "left" | "right" | "top" | "bottom") {
                        self.invalid(
                            args,
                            "side",
                            format!("unknown side `{side}`"),
                            "use \"left\", \"right\", \"top\" or \"bottom\"",
                        );
                    }
                }
                self.mask_shape(args)
            }
            "rows_mask" => {
                self.require(args, "every", |f| f >= 1.0, "at least 1");
                self.mask_shape(args)
            }
            "subsample_mask" => {
                self.require(args, "factor", |f| f >= 1.0, "at least 1");
                self.mask_shape(args)
            }
            "inpaint" => {
                let Some(Shape::Dims(d)) = shape_of(&args.ty("mask")) else {
                    return declared;
                };
                if d.len() != 3 {
                    self.invalid(
                        args,
                        "mask",
                        format!(
                            "a mask is [1, H, W] or [C, H, W], not {} dimensions",
                            d.len()
                        ),
                        "",
                    );
                    return Type::Error;
                }
                let c = match self.dims.resolve(d[0]) {
                    Dim::Known(1) => self.dims.fresh(),
                    other => other,
                };
                let shape = Shape::Dims(vec![c, d[1], d[2]]);
                op(shape.clone(), shape, true, true)
            }
            "gaussian_blur" => {
                self.require(args, "sigma", |s| s > 0.0, "positive");
                if let Some(size) = args.int("size") {
                    if size != 0 && (size < 0 || size % 2 == 0) {
                        self.invalid(
                            args,
                            "size",
                            format!("the kernel size must be odd (or 0 for automatic), not {size}"),
                            "",
                        );
                    }
                }
                self.same_shape_op(true, true)
            }
            "uniform_blur" => {
                self.require(args, "size", |s| s >= 1.0, "at least 1");
                self.same_shape_op(true, true)
            }
            "motion_blur" => {
                self.require(args, "size", |s| s >= 1.0, "at least 1");
                self.require(args, "intensity", |s| (0.0..=1.0).contains(&s), "in [0, 1]");
                self.same_shape_op(true, false)
            }
            "kernel_blur" => {
                if let Some(Shape::Dims(d)) = shape_of(&args.ty("kernel")) {
                    let ok =
                        d.len() == 2 || (d.len() == 3 && self.dims.resolve(d[0]) == Dim::Known(1));
                    if !ok {
                        self.invalid(
                            args,
                            "kernel",
                            "a blur kernel is a grey image or a 2-D array".into(),
                            "use a one-channel image or an [h, w] .npy",
                        );
                    }
                }
                self.same_shape_op(true, false)
            }
            "downsample" | "bicubic_downsample" => {
                let Some(k) = args.int("factor") else {
                    return self.free_op(true, name == "downsample");
                };
                if k < 1 {
                    self.invalid(
                        args,
                        "factor",
                        format!("the factor must be at least 1, not {k}"),
                        "",
                    );
                    return Type::Error;
                }
                let (c, h, w, h2, w2) = (
                    self.dims.fresh(),
                    self.dims.fresh(),
                    self.dims.fresh(),
                    self.dims.fresh(),
                    self.dims.fresh(),
                );
                let origin = args.call;
                for (big, small, what) in [(h, h2, "height"), (w, w2, "width")] {
                    // A fresh constraint between fresh variables always holds.
                    let _ = self.dims.add_scale(Scale {
                        big,
                        small,
                        factor: k as u64,
                        origin,
                        what,
                    });
                }
                op(
                    Shape::Dims(vec![c, h, w]),
                    Shape::Dims(vec![c, h2, w2]),
                    true,
                    name == "downsample",
                )
            }
            "to_grey" => {
                let (h, w) = (self.dims.fresh(), self.dims.fresh());
                op(
                    Shape::Dims(vec![Dim::Known(3), h, w]),
                    Shape::Dims(vec![Dim::Known(1), h, w]),
                    true,
                    false,
                )
            }
            "clipping" => {
                if let (Some(lo), Some(hi)) = (args.float("lo"), args.float("hi")) {
                    if lo >= hi {
                        self.invalid(
                            args,
                            "hi",
                            format!("`hi` ({hi}) must be greater than `lo` ({lo})"),
                            "",
                        );
                    }
                }
                self.same_shape_op(false, false)
            }
            "gamma_curve" => {
                self.require(args, "gamma", |g| g > 0.0, "positive");
                self.same_shape_op(false, false)
            }
            "saturation" => {
                self.require(args, "k", |k| k > 0.0, "positive");
                self.same_shape_op(false, false)
            }
            "identity" => self.same_shape_op(true, true),
            "operator" => self.user_operator(args),
            "gaussian_noise" => {
                self.require(args, "sigma", |s| s >= 0.0, "zero or more");
                Type::Noise { additive: true }
            }
            "poisson_noise" => {
                self.require(args, "rate", |s| s > 0.0, "positive");
                Type::Noise { additive: false }
            }
            "karras" | "linear_schedule" | "geometric_schedule" => {
                self.require(args, "sigma_min", |s| s > 0.0, "positive");
                // One level has no (t, t_next) pair: every solver would loop zero times and
                // return its starting point (MAP-GA: an image of zeros) as if it had run.
                if let Some(steps) = args.float("steps") {
                    if steps < 2.0 {
                        self.invalid(
                            args,
                            "steps",
                            format!(
                                "`steps` must be at least 2, but it is {steps}: solvers step from \
                                 one level to the next, so fewer than 2 levels make no step"
                            ),
                            "`steps` counts levels: `karras(steps: n + 1)` makes n solver steps",
                        );
                    }
                }
                if let (Some(lo), Some(hi)) = (args.float("sigma_min"), args.float("sigma_max")) {
                    if lo >= hi {
                        self.invalid(
                            args,
                            "sigma_max",
                            format!("`sigma_max` ({hi}) must be greater than `sigma_min` ({lo})"),
                            "",
                        );
                    }
                }
                if name == "karras" {
                    self.require(args, "rho", |r| r > 0.0, "positive");
                }
                Type::Schedule
            }
            "schedule" => {
                if let Some(Const::List(xs)) = args.get("sigmas").and_then(|v| v.konst.clone()) {
                    let v: Vec<f64> = xs.iter().filter_map(Const::as_f64).collect();
                    if v.is_empty() {
                        self.invalid(
                            args,
                            "sigmas",
                            "a schedule needs at least one noise level".into(),
                            "",
                        );
                    } else if v.windows(2).any(|p| p[1] >= p[0]) || v.iter().any(|s| *s < 0.0) {
                        self.invalid(
                            args,
                            "sigmas",
                            "noise levels must be non-negative and strictly decreasing".into(),
                            "list them from the largest to the smallest",
                        );
                    }
                }
                Type::Schedule
            }
            "sgd" => {
                self.require(args, "lr", |x| x > 0.0, "positive");
                Type::Optimizer
            }
            "momentum" => {
                self.require(args, "lr", |x| x > 0.0, "positive");
                self.require(args, "beta", |x| (0.0..1.0).contains(&x), "in [0, 1)");
                Type::Optimizer
            }
            "adam" => {
                self.require(args, "lr", |x| x > 0.0, "positive");
                self.require(args, "eps", |x| x > 0.0, "positive");
                if let Some(Const::Tuple(b)) = args.get("betas").and_then(|v| v.konst.clone()) {
                    if b.iter()
                        .filter_map(Const::as_f64)
                        .any(|x| !(0.0..1.0).contains(&x))
                    {
                        self.invalid(
                            args,
                            "betas",
                            "Adam's betas must be in [0, 1)".into(),
                            "the usual values are (0.9, 0.999)",
                        );
                    }
                }
                Type::Optimizer
            }
            "denoiser" => self.load_model(args, ModelKind::Denoiser),
            "classifier" => self.load_model(args, ModelKind::Classifier),
            "classify" | "class_probabilities" | "classifier_features" | "correct" => {
                self.check_classifier_input(args, name)
            }
            "accuracy" | "confident_share" => {
                self.check_classifier_input(args, name);
                if name == "confident_share" {
                    self.require(args, "threshold", |t| (0.0..1.0).contains(&t), "in [0, 1)");
                }
                Type::Float
            }
            "frechet_distance" => {
                for p in ["a", "b"] {
                    if let Some(Shape::Dims(d)) = shape_of(&args.ty(p)) {
                        if d.len() != 2 {
                            self.invalid(
                                args,
                                p,
                                format!(
                                    "features are [N, d] (one row per image), not rank {}",
                                    d.len()
                                ),
                                "e.g. classifier_features(clf, images)",
                            );
                        }
                    }
                }
                Type::Float
            }
            "consistency" => self.load_model(args, ModelKind::Consistency),
            "ode_consistency" => {
                self.require(args, "steps", |s| s >= 1.0, "at least 1");
                let shape = match args.ty("denoiser") {
                    Type::Model(m) => m.shape.clone(),
                    _ => Shape::Unknown,
                };
                model(ModelKind::Consistency, shape)
            }
            "gaussian_prior" => {
                let Some(mean) = shape_of(&args.ty("mean")) else {
                    return declared;
                };
                if let (Shape::Dims(m), Some(Shape::Dims(c))) = (
                    self.dims.resolve_shape(&mean),
                    shape_of(&args.ty("cov")).map(|s| self.dims.resolve_shape(&s)),
                ) {
                    let n = element_count(&m);
                    let diag = c == m;
                    let full = c.len() == 2
                        && n.is_some_and(|n| c[0] == Dim::Known(n) && c[1] == Dim::Known(n));
                    if !diag && !full {
                        let (ms, cs) = (Shape::Dims(m.clone()), Shape::Dims(c.clone()));
                        let elems = n.map_or("n".to_string(), |n| n.to_string());
                        self.report(
                            Diag::error(Code::ShapeMismatch, args.span("cov"), format!("a covariance for a {ms} mean is {ms} (diagonal) or [{elems}, {elems}] (full), not {cs}"), format!("this is {cs}"))
                                .with_label(args.span("mean"), format!("the mean is {ms}")),
                        );
                        return Type::Error;
                    }
                }
                model(ModelKind::Prior, mean)
            }
            "gaussian_prior_low_rank" => {
                let Some(mean) = shape_of(&args.ty("mean")) else {
                    return declared;
                };
                let m = self.dims.resolve_shape(&mean);
                if let Some(v) =
                    shape_of(&args.ty("variances")).map(|s| self.dims.resolve_shape(&s))
                {
                    if v != m && !matches!(v, Shape::Unknown) && !matches!(m, Shape::Unknown) {
                        self.report(
                            Diag::error(
                                Code::ShapeMismatch,
                                args.span("variances"),
                                format!("the variances must have the mean's shape {m}, not {v}"),
                                format!("this is {v}"),
                            )
                            .with_label(args.span("mean"), format!("the mean is {m}")),
                        );
                        return Type::Error;
                    }
                }
                if let (Shape::Dims(md), Some(Shape::Dims(f))) = (
                    &m,
                    shape_of(&args.ty("factors")).map(|s| self.dims.resolve_shape(&s)),
                ) {
                    let n = element_count(md);
                    let ok = f.len() == 2
                        && n.is_none_or(|n| {
                            matches!(f[0], Dim::Known(k) if k == n) || matches!(f[0], Dim::Var(_))
                        });
                    if !ok {
                        let elems = n.map_or("n".to_string(), |n| n.to_string());
                        let fs = Shape::Dims(f.clone());
                        self.report(
                            Diag::error(
                                Code::ShapeMismatch,
                                args.span("factors"),
                                format!("the factors of a {m} mean are [{elems}, r], not {fs}"),
                                format!("this is {fs}"),
                            )
                            .with_label(args.span("mean"), format!("the mean is {m}")),
                        );
                        return Type::Error;
                    }
                }
                model(ModelKind::Prior, mean)
            }
            "gmm_prior" => {
                let Some(Shape::Dims(m)) = shape_of(&args.ty("means")) else {
                    return model(ModelKind::Prior, Shape::Unknown);
                };
                if m.is_empty() {
                    self.invalid(
                        args,
                        "means",
                        "`means` must be [K, ...]: one mean per component".into(),
                        "",
                    );
                    return Type::Error;
                }
                if let Some(Shape::Dims(w)) = shape_of(&args.ty("weights")) {
                    if w.len() != 1 || self.dims.unify_dim(w[0], m[0]).is_err() {
                        self.invalid(
                            args,
                            "weights",
                            "`weights` must be [K], one weight per component of `means`".into(),
                            "",
                        );
                    }
                }
                model(ModelKind::Prior, Shape::Dims(m[1..].to_vec()))
            }
            "exact_map" | "exact_map_eps" => {
                let shape = match args.ty("prior") {
                    Type::Model(m) => m.shape.clone(),
                    _ => Shape::Unknown,
                };
                let batch = self.check_problem(args, Some(&shape));
                Type::Tensor(join_batch(batch, &shape))
            }
            "log_likelihood" => {
                self.check_problem(args, None);
                Type::Float
            }
            "data_consistency" => match self.check_problem(args, None) {
                Some(n) => Type::Tensor(Shape::Dims(vec![n])),
                None => Type::Float,
            },
            "psnr" | "ssim" | "mse" => self.metric_rule(name, args),
            "norms" => self.norms_rule(args),
            "batch_shape" => self.batch_shape_rule(args),
            "as_int64" => self.as_int64_rule(args),
            "log_prior" => {
                if let (Type::Model(m), Some(x)) = (args.ty("denoiser"), args.get("x")) {
                    let x = x.clone();
                    let span = args.span("denoiser");
                    self.apply_model(&m.shape, &x, span);
                }
                Type::Float
            }
            _ => declared,
        }
    }

    /// Folds built-ins of constants (`sqrt(2.0)`), so shapes and checks can use the value.
    pub(super) fn fold_builtin(&mut self, name: &str, args: &Args) -> Option<Const> {
        let f = |n: &str| args.float(n);
        Some(Const::Float(match name {
            "sqrt" => f("x")?.sqrt(),
            "exp" => f("x")?.exp(),
            "log" => f("x")?.ln(),
            "abs" => f("x")?.abs(),
            "min" => f("a")?.min(f("b")?),
            "max" => f("a")?.max(f("b")?),
            _ => return None,
        }))
        .filter(|c| c.as_f64().is_some_and(f64::is_finite))
    }

    /// Float in, Float out; Tensor in, Tensor out (broadcasting two arguments).
    fn elementwise(&mut self, args: &Args, params: &[&str]) -> Type {
        let mut out = Type::Float;
        for p in params {
            match args.ty(p) {
                Type::Tensor(s) => {
                    out = match out {
                        Type::Tensor(o) => match self.dims.unify_broadcast(&o, &s) {
                            Ok(r) => Type::Tensor(r),
                            Err(_) => {
                                self.invalid(
                                    args,
                                    p,
                                    "the arguments' shapes do not match".into(),
                                    "",
                                );
                                Type::Error
                            }
                        },
                        _ => Type::Tensor(s),
                    }
                }
                Type::Int | Type::Float => {}
                t if t.is_open() => return t,
                other => {
                    let other = self.dims.resolve_type(&other);
                    self.invalid(
                        args,
                        p,
                        format!("expected a number or a tensor, found {other}"),
                        "",
                    );
                    return Type::Error;
                }
            }
        }
        out
    }

    /// `[1, image_height, image_width]` from constant size arguments.
    fn mask_shape(&mut self, args: &Args) -> Type {
        let dim = |cx: &mut Self, p: &str| match args.int(p) {
            Some(n) if n > 0 => Dim::Known(n as u64),
            Some(n) => {
                cx.invalid(args, p, format!("`{p}` must be positive, not {n}"), "");
                cx.dims.fresh()
            }
            None => cx.dims.fresh(),
        };
        let h = dim(self, "image_height");
        let w = dim(self, "image_width");
        Type::Tensor(Shape::Dims(vec![Dim::Known(1), h, w]))
    }

    /// `enlarge(x, factor)`: the last two dimensions of `x` times `factor`.
    fn enlarge_rule(&mut self, args: &Args) -> Type {
        let factor = match args.int("factor") {
            Some(f) if f >= 1 => Some(f as u64),
            Some(f) => {
                self.invalid(
                    args,
                    "factor",
                    format!("`factor` must be at least 1, not {f}"),
                    "",
                );
                return Type::Error;
            }
            None => None,
        };
        let dims = match shape_of(&args.ty("x")).map(|s| self.dims.resolve_shape(&s)) {
            Some(Shape::Dims(d)) if d.len() == 3 || d.len() == 4 => d,
            Some(Shape::Dims(d)) => {
                self.invalid(
                    args,
                    "x",
                    format!(
                        "`enlarge` takes an image [C, H, W] or a batch [N, C, H, W], not {} \
                         dimensions",
                        d.len()
                    ),
                    "",
                );
                return Type::Error;
            }
            _ => return Type::Tensor(Shape::Unknown),
        };
        let n = dims.len();
        let mut out = dims;
        for d in out.iter_mut().skip(n - 2) {
            *d = match (self.dims.resolve(*d), factor) {
                (Dim::Known(d), Some(f)) => match d.checked_mul(f) {
                    Some(e) => Dim::Known(e),
                    None => {
                        self.invalid(
                            args,
                            "factor",
                            format!("enlarging a side of {d} by {f} gives more pixels than can be counted"),
                            "",
                        );
                        return Type::Error;
                    }
                },
                _ => self.dims.fresh(),
            };
        }
        Type::Tensor(Shape::Dims(out))
    }

    /// `fit` / `resize` / `center_crop(x, height, width)`: `x`'s shape with the last two
    /// dimensions replaced; a crop must fit inside the image.
    fn resize_rule(&mut self, name: &str, args: &Args) -> Type {
        let mut size = [None, None];
        for (i, p) in ["height", "width"].into_iter().enumerate() {
            match args.int(p) {
                Some(n) if n > 0 => size[i] = Some(n as u64),
                Some(n) => self.invalid(args, p, format!("`{p}` must be positive, not {n}"), ""),
                None => {}
            }
        }
        let dims = match shape_of(&args.ty("x")).map(|s| self.dims.resolve_shape(&s)) {
            Some(Shape::Dims(d)) => d,
            _ => return Type::Tensor(Shape::Unknown),
        };
        if !(dims.len() == 3 || dims.len() == 4) {
            self.invalid(
                args,
                "x",
                format!(
                    "`{name}` takes an image [C, H, W] or a batch [N, C, H, W], not {} dimensions",
                    dims.len()
                ),
                "",
            );
            return Type::Error;
        }
        let n = dims.len();
        if name == "center_crop" {
            for (i, p) in ["height", "width"].into_iter().enumerate() {
                if let (Dim::Known(have), Some(want)) =
                    (self.dims.resolve(dims[n - 2 + i]), size[i])
                {
                    if want > have {
                        self.invalid(
                            args,
                            p,
                            format!("a crop of {p} {want} does not fit in an image of {p} {have}"),
                            "`fit(x, height, width)` crops to the aspect ratio and resizes",
                        );
                    }
                }
            }
        }
        let mut out = dims;
        for i in 0..2 {
            out[n - 2 + i] = match size[i] {
                Some(v) => Dim::Known(v),
                None => self.dims.fresh(),
            };
        }
        Type::Tensor(Shape::Dims(out))
    }

    /// An operator mapping `[C, H, W]` to the same shape.
    fn same_shape_op(&mut self, linear: bool, svd: bool) -> Type {
        let s = self.dims.fresh_shape(3);
        op(s.clone(), s, linear, svd)
    }

    /// An operator whose shapes are unknown.
    fn free_op(&mut self, linear: bool, svd: bool) -> Type {
        op(Shape::Unknown, Shape::Unknown, linear, svd)
    }

    /// Reports two tensor arguments whose shapes differ.
    fn same_shape(&mut self, args: &Args, a: &str, b: &str) {
        if let (Some(Shape::Dims(x)), Some(bv)) = (shape_of(&args.ty(a)), args.get(b).cloned()) {
            if let Some(ys) = shape_of(&bv.ty) {
                let xs = Shape::Dims(x);
                if let Err(c) = self.dims.unify_shape(&ys, &xs) {
                    self.shape_error(&c, &bv, &ys, args.span(a), &xs, &format!("`{a}` is"));
                }
            }
        }
    }

    /// `y` must be in `A`'s range and `x` (or the prior's shape) in its domain, each alone or
    /// as a batch; returns the batch dimension (`y`'s, else `x`'s). A batch of estimates may
    /// share one measurement and a batch of measurements one estimate (they broadcast), but
    /// two batches must have the same size.
    fn check_problem(&mut self, args: &Args, prior: Option<&Shape>) -> Option<Dim> {
        let Type::Operator(o) = args.ty("A") else {
            return None;
        };
        let a_span = args.span("A");
        // The estimate first: its shape fixes A's domain, so a wrong `y` is the one reported.
        let mut x_batch = None;
        if let Some(x) = args.get("x").cloned() {
            if let Some(xs) = shape_of(&x.ty) {
                let (batch, item) = split_batch(&xs, &o.domain);
                if let Err(c) = self.dims.unify_shape(&item, &o.domain) {
                    self.shape_error(&c, &x, &item, a_span, &o.domain, "`A` works on");
                }
                x_batch = batch.map(|n| (x, n));
            }
        }
        let mut y_batch = None;
        if let Some(y) = args.get("y").cloned() {
            if let Some(ys) = shape_of(&y.ty) {
                let (batch, item) = split_batch(&ys, &o.range);
                if let Err(c) = self.dims.unify_shape(&item, &o.range) {
                    self.shape_error(&c, &y, &item, a_span, &o.range, "`A` produces");
                }
                y_batch = batch.map(|n| (y, n));
            }
        }
        if let (Some(ps), Some(p)) = (prior, args.get("prior").cloned()) {
            if let Err(c) = self.dims.unify_shape(ps, &o.domain) {
                self.shape_error(&c, &p, ps, a_span, &o.domain, "`A` works on");
            }
        }
        match (x_batch, y_batch) {
            (Some((x, nx)), Some((y, ny))) => {
                self.same_batch(&x, nx, &y, ny);
                Some(ny)
            }
            (x, y) => y.or(x).map(|(_, n)| n),
        }
    }

    /// Specialises the function value passed as parameter `param` for arguments of types
    /// `arg_types`, as an [`crate::graph::Op::Lambda`] region that replaces the argument, and
    /// returns what the function returns. `None` when the function is not known here (a `Fn`
    /// parameter of a function checked on its own, or an erroneous argument).
    fn lambda_arg(&mut self, args: &mut Args, param: &str, arg_types: Vec<Type>) -> Option<Val> {
        let Type::Fn(f) = args.ty(param) else {
            return None;
        };
        if matches!(&f, FnRef::Builtin(n) if n.is_empty()) || self.generic {
            return None;
        }
        let span = args.span(param);
        let saved_region = self.region;
        let body = self.emit.graph.add_region(
            format!("fn value for `{name}`", name = param),
            arg_types.len() as u32,
        );
        self.region = body;
        let call_args = arg_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| {
                let node = self.add(crate::graph::Op::Input(i as u32), vec![], ty.clone(), span);
                super::call::ArgVal {
                    name: None,
                    val: Val {
                        ty,
                        node,
                        konst: None,
                        span,
                    },
                }
            })
            .collect();
        let out = self.call_fn_value(&f, call_args, span);
        self.emit.graph.region_mut(body).outputs.push(out.node);
        self.region = saved_region;
        let lambda = self.add(
            crate::graph::Op::Lambda { body },
            vec![],
            args.ty(param),
            span,
        );
        args.replace_node(param, lambda);
        Some(out)
    }

    /// `vjp(f, x, v)`: a function value is specialised for `x`; the result has `x`'s type.
    fn vjp_rule(&mut self, args: &mut Args) -> Type {
        let x = args.ty("x");
        if let Some(out) = self.lambda_arg(args, "f", vec![x.clone()]) {
            if !out.ty.is_open() && !matches!(out.ty, Type::Tensor(_)) {
                let other = self.dims.resolve_type(&out.ty);
                self.invalid(
                    args,
                    "f",
                    format!(
                        "`vjp` needs a function that returns a tensor, this one returns {other}"
                    ),
                    "",
                );
            }
        }
        x
    }

    /// `operator(f, domain)`: the range is what `f` returns for a tensor of the domain's shape.
    fn user_operator(&mut self, args: &mut Args) -> Type {
        let domain = shape_of(&args.ty("domain")).unwrap_or(Shape::Unknown);
        if !matches!(args.ty("f"), Type::Fn(_)) {
            return self.free_op(false, false);
        }
        // The runtime calls the specialisation made here.
        let Some(out) = self.lambda_arg(args, "f", vec![Type::Tensor(domain.clone())]) else {
            return op(domain, Shape::Unknown, false, false);
        };
        match out.ty {
            Type::Tensor(range) => op(domain, range, false, false),
            t if t.is_open() => op(domain, Shape::Unknown, false, false),
            other => {
                let other = self.dims.resolve_type(&other);
                self.invalid(
                    args,
                    "f",
                    format!(
                        "an operator's function must return a tensor, this one returns {other}"
                    ),
                    "",
                );
                Type::Error
            }
        }
    }

    /// `denoiser(path)` / `consistency(path)`: the card beside the weights gives the shape.
    fn load_model(&mut self, args: &Args, kind: ModelKind) -> Type {
        let Some(weights) = self.file_arg(args, "path") else {
            return model(kind, Shape::Unknown);
        };
        if kind != ModelKind::Classifier {
            if let Some(t) = self.load_checkpoint(args, kind, &weights) {
                return t;
            }
        }
        let safetensors = !matches!(
            crate::models::formats::format_of(&weights),
            Ok(f) if f != crate::models::formats::Format::Safetensors
        );
        let tensors = if safetensors {
            match crate::io::headers::safetensors_header(&weights) {
                Ok(t) => t,
                Err(e) => {
                    self.file_error(args, "path", &e);
                    return Type::Error;
                }
            }
        } else {
            // Another format's card problem: the card is checked alone.
            Default::default()
        };
        let card_path = crate::models::card::card_path_for(&weights);
        self.dependencies.push(card_path.clone());
        let card = match crate::models::card::load_card(&card_path) {
            Ok(c) => c,
            Err(e) => {
                let span = args.span("path");
                self.report(
                    Diag::error(
                        Code::BadFile,
                        span,
                        format!("the model card cannot be used: {e}"),
                        "these weights",
                    )
                    .with_note(format!(
                        "the card is read from {}",
                        absolute(&card_path).display()
                    ))
                    .with_help(
                        "mapga's own networks need a RON model card with the same name beside \
                         them; `mapga inspect FILE` shows what mapga infers for a checkpoint",
                    ),
                );
                return Type::Error;
            }
        };
        let card_kind = match card.kind {
            crate::models::card::ModelKind::Denoiser => ModelKind::Denoiser,
            crate::models::card::ModelKind::Consistency => ModelKind::Consistency,
            crate::models::card::ModelKind::Classifier => ModelKind::Classifier,
        };
        if card_kind != kind {
            let (want, have) = (kind.name(), card_kind.name());
            self.report(
                Diag::error(
                    Code::ModelMismatch,
                    args.span("path"),
                    format!("this model is a {have} (says its card), but it is loaded as a {want}"),
                    format!("a {have}"),
                )
                .with_help(format!("load it with `{}(...)`", have.to_lowercase())),
            );
            return Type::Error;
        }
        let [c, h, w] = card.image_shape;
        let shape = [c as usize, h as usize, w as usize];
        let header: BTreeMap<String, Vec<usize>> = tensors
            .iter()
            .map(|(k, info)| (k.clone(), info.shape.iter().map(|&d| d as usize).collect()))
            .collect();
        // The card alone, then its tensor list, then the architecture it describes against the
        // header's tensors (no weight is read), then the file's bytes against its hash.
        let usable = if kind == ModelKind::Classifier {
            crate::models::classifier::check_card(&card, &card_path).map(|()| None)
        } else {
            crate::models::network::architecture_of(&card, &card_path).map(Some)
        };
        let config = match usable {
            Ok(config) => config,
            Err(e) => {
                self.report(
                    Diag::error(
                        Code::BadFile,
                        args.span("path"),
                        format!("the model card cannot be used: {e}"),
                        "these weights",
                    )
                    .with_note(format!(
                        "the card is read from {}",
                        absolute(&card_path).display()
                    )),
                );
                return Type::Error;
            }
        };
        let problems = crate::models::card::tensor_mismatches(&card, &tensors);
        if let Some(first) = problems.first() {
            self.report(
                Diag::error(
                    Code::BadFile,
                    args.span("path"),
                    format!("the weights do not match the model card: {first}"),
                    "these weights",
                )
                .with_note(format!("{} mismatch(es) in all", problems.len())),
            );
            return Type::Error;
        }
        if safetensors {
            let fits = match &config {
                None => crate::models::classifier::check_shapes(&weights, shape, &header).map(drop),
                Some(config) => crate::models::unet::UNet::tensor_shapes(config)
                    .map_err(Into::into)
                    .and_then(|needed| {
                        crate::models::network::check_shapes(&weights, &needed, &header)
                    }),
            };
            if let Err(e) = fits {
                self.report(
                    Diag::error(
                        Code::BadFile,
                        args.span("path"),
                        format!("the weights do not fit the network their card describes: {e}"),
                        "these weights",
                    )
                    .with_note(format!(
                        "the architecture is the card's (`image_shape`, `hyperparameters`), read \
                         from {}",
                        absolute(&card_path).display()
                    ))
                    .with_help(
                        "the card's hyperparameters must be the ones the weights were trained \
                         with; `mapga inspect FILE` lists the file's tensors",
                    ),
                );
                return Type::Error;
            }
        }
        if let Err(e) = crate::models::card::verify_weights(&card, &card_path, &weights) {
            self.weights_mismatch(args, &e);
            return Type::Error;
        }
        model(kind, Shape::known(&[c as u64, h as u64, w as u64]))
    }
}

impl Checker {
    /// A `save` to a path known at check time: it must stay inside the output folder (or a
    /// folder given with `--allow-write`). Relative paths resolve against the output folder.
    pub(super) fn check_save_path(&mut self, written: &str, span: Span) {
        let perms = &self.opts.permissions;
        let p = Path::new(written);
        let target = match perms.output() {
            _ if p.is_absolute() => p.to_path_buf(),
            Some(out) => out.join(p),
            None => return,
        };
        if let Err(denied) = perms.check_write(&target) {
            self.report(permission_diag(&denied, span));
        }
    }

    /// Weights that are not the file their card was written for (or cannot be read to tell).
    fn weights_mismatch(&mut self, args: &Args, e: &crate::models::card::CardError) {
        self.report(
            Diag::error(
                Code::BadFile,
                args.span("path"),
                e.to_string(),
                "these weights do not match their card",
            )
            .with_help(
                "the file is damaged, truncated, or other weights (a denoiser's under a \
                 consistency model's name, another training run), which would run and give \
                 wrong images: put the right file there; for weights you retrained yourself, \
                 write their hash into the card (`sha256sum FILE` prints it)",
            ),
        );
    }

    /// A denoiser or consistency model from a checkpoint of the field (an `adm` card, read
    /// or inferred: [`crate::models::checkpoint::describe`]): its kind, image shape and class
    /// label are checked here. `None` for mapga's own `unet` cards (and card errors), which
    /// [`Checker::load_model`] checks itself.
    fn load_checkpoint(&mut self, args: &Args, kind: ModelKind, weights: &Path) -> Option<Type> {
        use crate::models::card::{CardError, ModelKind as CardKind};
        use crate::models::network::ModelError;
        let declared = match kind {
            ModelKind::Consistency => CardKind::Consistency,
            _ => CardKind::Denoiser,
        };
        let span = args.span("path");
        let card_path = crate::models::card::card_path_for(weights);
        if card_path.is_file() {
            self.dependencies.push(card_path);
        }
        let description = match crate::models::checkpoint::describe(weights, Some(declared)) {
            Ok(d) if d.adm.is_none() => return None,
            Ok(d) => d,
            Err(ModelError::Card(
                e @ (CardError::WeightsHash { .. } | CardError::Verify { .. }),
            )) => {
                self.weights_mismatch(args, &e);
                return Some(Type::Error);
            }
            // Card problems are reported by `load_model` with the card's own diagnostics.
            Err(ModelError::Card(_) | ModelError::Architecture { .. }) => return None,
            Err(ModelError::Format(crate::models::formats::FormatError::Missing(p))) => {
                match crate::models::formats::presets::release_named(&p) {
                    Some(preset) => self.report(
                        Diag::error(
                            Code::MissingFile,
                            span,
                            format!("checkpoint not found: `{}`", p.display()),
                            "this file does not exist",
                        )
                        .with_note(format!("resolved to {}", absolute(&p).display()))
                        .with_help(format!(
                            "this is a published checkpoint ({}): download it from {} to \
                             this path, or give the path where it is (with `--set` when a \
                             param names it); the README's \"Using the paper's models\" lists \
                             every file",
                            preset.name, preset.source
                        )),
                    ),
                    None => self.file_error(args, "path", &FileError::NotFound(p)),
                }
                return Some(Type::Error);
            }
            Err(ModelError::Kind { found, .. }) => {
                let want = kind.name();
                let have = found.split(" (").next().unwrap_or(&found).to_string();
                let fix = if have.starts_with("consistency") {
                    "load it with `consistency(...)`".to_string()
                } else {
                    "load it with `denoiser(...)`".to_string()
                };
                self.report(
                    Diag::error(
                        Code::ModelMismatch,
                        span,
                        format!("this model is a {found}, but it is loaded as a {want}"),
                        format!("a {have}"),
                    )
                    .with_help(fix),
                );
                return Some(Type::Error);
            }
            Err(e) => {
                self.report(
                    Diag::error(
                        Code::BadFile,
                        span,
                        format!("the checkpoint cannot be used: {e}"),
                        "this checkpoint",
                    )
                    .with_help(
                        "`mapga inspect FILE` shows what mapga reads from a checkpoint; a \
                         model card beside it (FILE with a .ron extension) can set what \
                         cannot be inferred",
                    ),
                );
                return Some(Type::Error);
            }
        };
        let classes = description.adm.as_ref().and_then(|c| c.num_classes);
        let name = description.card.name.clone();
        match args.ty("class") {
            Type::Int | Type::Error => {}
            Type::Tensor(shape) => {
                let rank = match self.dims.resolve_shape(&shape) {
                    Shape::Dims(d) => Some(d.len()),
                    Shape::Unknown => None,
                };
                if classes.is_none() {
                    self.invalid(
                        args,
                        "class",
                        format!("model `{name}` is not class-conditional: it takes no class label"),
                        "leave `class` out",
                    );
                } else if rank.is_some_and(|r| r != 1) {
                    self.invalid(
                        args,
                        "class",
                        "class labels are an Int or a Tensor [N] of one label per image".into(),
                        "",
                    );
                }
                let [c, h, w] = description.card.image_shape;
                return Some(model(kind, Shape::known(&[c as u64, h as u64, w as u64])));
            }
            other if !other.is_open() => {
                let other = self.dims.resolve_type(&other);
                self.invalid(
                    args,
                    "class",
                    format!("a class label is an Int or a Tensor of labels, not {other}"),
                    "",
                );
            }
            _ => {}
        }
        match (classes, args.int("class")) {
            (Some(n), Some(-1)) => self.report(
                Diag::error(
                    Code::InvalidValue,
                    span,
                    format!(
                        "model `{name}` is class-conditional ({n} classes): it needs a class \
                         label"
                    ),
                    "a class-conditional model",
                )
                .with_help(format!(
                    "give the class of the images: `{}(\"...\", class: 0)` to `class: {}`",
                    if kind == ModelKind::Consistency {
                        "consistency"
                    } else {
                        "denoiser"
                    },
                    n - 1
                )),
            ),
            (Some(n), Some(c)) if c < 0 || c as usize >= n => self.invalid(
                args,
                "class",
                format!("class {c} is outside the {n} classes of model `{name}`"),
                &format!("classes are numbered 0 to {}", n - 1),
            ),
            (None, Some(c)) if c != -1 => self.invalid(
                args,
                "class",
                format!("model `{name}` is not class-conditional: it takes no class label"),
                "leave `class` out",
            ),
            _ => {}
        }
        let [c, h, w] = description.card.image_shape;
        Some(model(kind, Shape::known(&[c as u64, h as u64, w as u64])))
    }
}

/// An operator type.
fn op(domain: Shape, range: Shape, linear: bool, svd: bool) -> Type {
    Type::Operator(Box::new(OpType {
        domain,
        range,
        linear,
        svd,
    }))
}

/// A model type.
impl Checker {
    /// The images given to a classifier fit its card; the result type of `name`: `[N]` classes,
    /// `[N, K]` probabilities or `[N, d]` features (N = 1 for one image).
    fn check_classifier_input(&mut self, args: &Args, name: &str) -> Type {
        let (Type::Model(m), Some(x)) = (args.ty("classifier"), args.get("x")) else {
            return Type::Tensor(Shape::Unknown);
        };
        let x = x.clone();
        let Type::Tensor(shape) = self.apply_model(&m.shape, &x, args.span("classifier")) else {
            return Type::Error;
        };
        let n = match self.dims.resolve_shape(&shape) {
            Shape::Dims(d) if d.len() == 4 => Some(d[0]),
            Shape::Dims(_) => Some(Dim::Known(1)),
            Shape::Unknown => None,
        };
        match (name, n) {
            ("classify" | "correct", Some(n)) => Type::Tensor(Shape::Dims(vec![n])),
            _ => Type::Tensor(Shape::Unknown),
        }
    }
}

fn model(kind: ModelKind, shape: Shape) -> Type {
    Type::Model(Box::new(ModelType { kind, shape }))
}

/// The path made absolute for messages (without requiring it to exist).
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The diagnostic of a read or write the pipeline's permissions do not allow
/// ([`crate::io::permissions`]).
pub(super) fn permission_diag(denied: &crate::io::permissions::Denied, span: Span) -> Diag {
    use crate::io::permissions::Access;
    let (label, allow) = match denied.access {
        Access::Read => ("outside the folders this pipeline may read", "read"),
        Access::Write => ("outside the folders this pipeline may write", "write"),
    };
    Diag::error(Code::Permission, span, denied.to_string(), label).with_help(format!(
        "if you trust this pipeline to {allow} there, run it with `{}`",
        denied.flag()
    ))
}
