//! The interpreter: runs the regions of a typed graph over candle tensors.
//!
//! Values live in a table indexed by node id. A region runs its nodes in order; a node reads
//! its inputs from the table (nodes of enclosing regions included, which is lexical scope).
//! The checker rejects recursion, so a region is never active twice at once and one table
//! serves every call. Loops and optimization blocks re-run their body region with new inputs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};

use super::arith;
use super::error::{AtSpan, RunError};
use super::optim::OptimizerState;
use super::value::Value;
use crate::check::types::{Dim, ModelKind, Shape, Type};
use crate::diagnostics::Code;
use crate::graph::{Const, Graph, NodeId, Op, RegionId};
use crate::source::{SourceMap, Span};

/// Where and how a run computes.
#[derive(Debug, Clone)]
pub struct Env {
    /// The device tensors live on.
    pub device: Device,
    /// The floating-point type of tensors (f32 by default, f64 for exact tests).
    pub dtype: DType,
    /// The root seed every random draw derives from.
    pub seed: u64,
}

/// What a running program reports as it goes (progress bars, logs).
pub trait Observer: Send + Sync {
    /// A loop started step `index` (0-based) of `total`; `depth` 0 is the outermost loop.
    fn loop_step(&self, depth: usize, index: usize, total: usize);
    /// An optimization block finished step `index` of `total` with this objective value.
    fn optimize_step(&self, index: usize, total: usize, objective: f64);
    /// True once the run should stop (`mapga watch` cancels a run made stale by a newer save).
    /// The interpreter asks between top-level nodes, before each loop step and before each
    /// optimization step, and stops with [`CANCELLED`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// The message of the error a cancelled run stops with (see [`Observer::cancelled`]).
pub const CANCELLED: &str = "the run was cancelled";

/// A checked graph ready to run, shared by the interpreter and the functions it hands out
/// (user operators run their region in a fresh interpreter).
pub struct Program {
    /// The graph.
    pub graph: Graph,
    /// The sources, for paths relative to a file and for messages.
    pub sources: SourceMap,
    /// Where and how to compute.
    pub env: Env,
    params: HashMap<String, Value>,
    region_of: Vec<RegionId>,
    /// For each region: the nodes outside it (and outside its nested regions) that it uses.
    free: Vec<Vec<NodeId>>,
    observer: Option<Arc<dyn Observer>>,
    /// What the run may read and write (paths computed while running are checked here; those
    /// known before were checked by the checker).
    pub permissions: crate::io::permissions::Permissions,
}

impl Program {
    /// Prepares `graph` for running.
    pub fn new(
        graph: Graph,
        sources: SourceMap,
        env: Env,
        observer: Option<Arc<dyn Observer>>,
    ) -> Self {
        let mut region_of = vec![RegionId(0); graph.nodes.len()];
        for (r, region) in graph.regions.iter().enumerate() {
            for n in &region.nodes {
                region_of[n.0 as usize] = RegionId(r as u32);
            }
        }
        let params = graph
            .params
            .iter()
            .filter_map(|p| Some((p.name.clone(), const_value(p.value.as_ref()?))))
            .collect();
        let free = free_nodes(&graph);
        Program {
            graph,
            sources,
            env,
            params,
            region_of,
            free,
            observer,
            permissions: crate::io::permissions::Permissions::default(),
        }
    }

    /// The same program under `permissions`.
    pub fn with_permissions(mut self, permissions: crate::io::permissions::Permissions) -> Self {
        self.permissions = permissions;
        self
    }

    /// The folder paths written in the file of `span` are relative to.
    pub fn base_dir(&self, span: Span) -> PathBuf {
        self.sources.get(span.file).base_dir()
    }

    /// The line of `span`, as `file:line`.
    pub fn location(&self, span: Span) -> String {
        let f = self.sources.get(span.file);
        let (line, _) = f.line_col(span.start as usize);
        format!("{}:{line}", f.name)
    }
}

/// The regions owned by a node: loop bodies, branches, optimization and function bodies.
pub(super) fn owned_regions(op: &Op) -> Vec<RegionId> {
    match op {
        Op::If { then, otherwise } => vec![*then, *otherwise],
        Op::For { body }
        | Op::Repeat { body }
        | Op::Optimize { body, .. }
        | Op::Lambda { body } => {
            vec![*body]
        }
        _ => vec![],
    }
}

/// For each region, the nodes of other regions that its nodes (or its nested regions' nodes)
/// read. Function bodies count through `Call` nodes.
fn free_nodes(graph: &Graph) -> Vec<Vec<NodeId>> {
    fn visit(
        r: RegionId,
        graph: &Graph,
        memo: &mut Vec<Option<Vec<NodeId>>>,
        visiting: &mut Vec<bool>,
    ) -> Vec<NodeId> {
        if let Some(f) = &memo[r.0 as usize] {
            return f.clone();
        }
        if visiting[r.0 as usize] {
            return Vec::new();
        }
        visiting[r.0 as usize] = true;
        let region = graph.region(r);
        let inside: std::collections::HashSet<NodeId> = region.nodes.iter().copied().collect();
        let mut out = Vec::new();
        let add = |n: NodeId, out: &mut Vec<NodeId>| {
            if !inside.contains(&n) && !out.contains(&n) {
                out.push(n);
            }
        };
        for &n in &region.nodes {
            let node = graph.node(n);
            for &i in &node.inputs {
                add(i, &mut out);
            }
            let mut subs = owned_regions(&node.op);
            if let Op::Call(f) = node.op {
                if let Some(func) = graph.functions.get(f.0 as usize) {
                    subs.push(func.body);
                }
            }
            for s in subs {
                for m in visit(s, graph, memo, visiting) {
                    add(m, &mut out);
                }
            }
        }
        memo[r.0 as usize] = Some(out.clone());
        out
    }
    let mut memo = vec![None; graph.regions.len()];
    let mut visiting = vec![false; graph.regions.len()];
    (0..graph.regions.len())
        .map(|r| visit(RegionId(r as u32), graph, &mut memo, &mut visiting))
        .collect()
}

/// A constant as a value.
pub fn const_value(c: &Const) -> Value {
    match c {
        Const::Unit => Value::Unit,
        Const::Bool(b) => Value::Bool(*b),
        Const::Int(i) => Value::Int(*i),
        Const::Float(f) => Value::Float(*f),
        Const::Str(s) => Value::Str(s.as_str().into()),
        Const::List(xs) => Value::list(xs.iter().map(const_value).collect()),
        Const::Tuple(xs) => Value::tuple(xs.iter().map(const_value).collect()),
    }
}

/// The known dimensions of a shape type, if all are known.
pub fn known_dims(s: &Shape) -> Option<Vec<usize>> {
    match s {
        Shape::Dims(d) => d
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Some(*n as usize),
                Dim::Var(_) => None,
            })
            .collect(),
        Shape::Unknown => None,
    }
}

/// One active loop, for progress and for error notes.
#[derive(Debug, Clone)]
struct LoopFrame {
    span: Span,
    index: usize,
    total: usize,
    what: &'static str,
}

/// The interpreter's state for one run (or one call of a function value).
pub struct Interp {
    /// The program being run.
    pub prog: Arc<Program>,
    values: Vec<Option<Value>>,
    inputs: Vec<Vec<Value>>,
    active: Vec<RegionId>,
    loops: Vec<LoopFrame>,
    /// Active calls of user and library functions: name, call site, and how many loops were
    /// active when it was made (to order the notes of an error).
    calls: Vec<(String, Span, usize)>,
    /// The nodes `grad` re-runs, by (wrt, value): the same for every run of a `grad` node,
    /// since a path never leaves the regions that enclose it.
    paths: HashMap<(NodeId, NodeId), Vec<NodeId>>,
}

impl Interp {
    /// A fresh interpreter for `prog`.
    pub fn new(prog: Arc<Program>) -> Self {
        let (n, r) = (prog.graph.nodes.len(), prog.graph.regions.len());
        Interp {
            prog,
            values: vec![None; n],
            inputs: vec![Vec::new(); r],
            active: Vec::new(),
            loops: Vec::new(),
            calls: Vec::new(),
            paths: HashMap::new(),
        }
    }

    /// The value of a node that has run.
    pub fn value(&self, n: NodeId) -> Option<&Value> {
        self.values.get(n.0 as usize).and_then(Option::as_ref)
    }

    /// The value of input `n` of the node being run (it has always run before).
    pub(crate) fn get(&self, n: NodeId, span: Span) -> Result<Value, RunError> {
        self.value(n).cloned().ok_or_else(|| {
            RunError::at(
                span,
                format!("internal error: node {} used before it ran", n.0),
            )
        })
    }

    /// Runs the top-level region, calling `after` with each node once it has run (to write
    /// outputs as soon as they are ready).
    pub fn run_main(
        &mut self,
        after: impl FnMut(&Interp, NodeId) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        self.run_main_served(|_, _| None, after)
    }

    /// Like [`Interp::run_main`], but first offers each top-level node to `serve`: a value it
    /// returns is taken as the node's value and the node does not run (values kept from an
    /// earlier run by [`super::cache::NodeCache`]).
    pub fn run_main_served(
        &mut self,
        mut serve: impl FnMut(&Interp, NodeId) -> Option<Value>,
        mut after: impl FnMut(&Interp, NodeId) -> Result<(), RunError>,
    ) -> Result<(), RunError> {
        let main = Graph::MAIN;
        self.active.push(main);
        let nodes = self.prog.graph.region(main).nodes.clone();
        for n in nodes {
            self.check_cancelled(self.prog.graph.node(n).span)?;
            match serve(self, n) {
                Some(v) => self.values[n.0 as usize] = Some(v),
                None => self.eval_node(n)?,
            }
            after(self, n)?;
        }
        self.active.pop();
        Ok(())
    }

    /// Stops with [`CANCELLED`] once the observer asks to.
    fn check_cancelled(&self, span: Span) -> Result<(), RunError> {
        match &self.prog.observer {
            Some(o) if o.cancelled() => Err(RunError::at(span, CANCELLED)),
            _ => Ok(()),
        }
    }

    /// Runs region `r` with these inputs and returns its outputs.
    pub fn eval_region(&mut self, r: RegionId, inputs: Vec<Value>) -> Result<Vec<Value>, RunError> {
        let prog = self.prog.clone();
        let region = prog.graph.region(r);
        self.inputs[r.0 as usize] = inputs;
        self.active.push(r);
        for &n in &region.nodes {
            if let Err(e) = self.eval_node(n) {
                self.active.pop();
                return Err(e);
            }
        }
        self.active.pop();
        region
            .outputs
            .iter()
            .map(|&o| {
                let span = prog.graph.node(o).span;
                self.get(o, span)
            })
            .collect()
    }

    /// Notes naming the function calls and loop steps being run, outermost first, for error
    /// messages: where in the user's pipeline a failure deep inside a solver comes from.
    fn loop_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for depth in 0..=self.loops.len() {
            for (name, span, _) in self.calls.iter().filter(|c| c.2 == depth) {
                notes.push(format!(
                    "in `{name}`, called at {}",
                    self.prog.location(*span)
                ));
            }
            if let Some(l) = self.loops.get(depth) {
                notes.push(format!(
                    "at {} {} of {} of the {} at {}",
                    if l.what == "ascend" || l.what == "descend" {
                        "iteration"
                    } else {
                        "step"
                    },
                    l.index + 1,
                    l.total,
                    l.what,
                    self.prog.location(l.span)
                ));
            }
        }
        notes
    }

    /// Runs one node and stores its value.
    pub(crate) fn eval_node(&mut self, n: NodeId) -> Result<(), RunError> {
        let v = match self.eval_op(n) {
            Ok(v) => v,
            Err(mut e) => {
                if e.notes.is_empty() {
                    e.notes = self.loop_notes();
                }
                return Err(e);
            }
        };
        self.values[n.0 as usize] = Some(v);
        Ok(())
    }

    fn eval_op(&mut self, n: NodeId) -> Result<Value, RunError> {
        let prog = self.prog.clone();
        let node = prog.graph.node(n);
        let span = node.span;
        let args = |it: &Interp| -> Result<Vec<Value>, RunError> {
            node.inputs.iter().map(|&i| it.get(i, span)).collect()
        };
        Ok(match &node.op {
            Op::Const(c) => const_value(c),
            Op::Param(name) => prog.params.get(name).cloned().ok_or_else(|| {
                RunError::at(span, format!("the param `{name}` has no value"))
                    .with_help(format!("give it one with --set {name}=VALUE"))
            })?,
            Op::Input(i) => {
                let r = prog.region_of[n.0 as usize];
                self.inputs[r.0 as usize]
                    .get(*i as usize)
                    .cloned()
                    .ok_or_else(|| RunError::at(span, "internal error: missing region input"))?
            }
            Op::Lambda { body } => Value::Fn(*body),
            Op::Builtin { name, variadic } => {
                let a = args(self)?;
                super::builtins::call(self, n, name, *variadic, a)?
            }
            Op::Call(f) => {
                let a = args(self)?;
                let func = prog
                    .graph
                    .functions
                    .get(f.0 as usize)
                    .ok_or_else(|| RunError::at(span, "internal error: unknown function"))?;
                // The frame is active while the body runs, so the node where an error starts
                // names this call in its notes.
                self.calls.push((func.name.clone(), span, self.loops.len()));
                let out = self.eval_region(func.body, a);
                self.calls.pop();
                out?.pop().unwrap_or(Value::Unit)
            }
            Op::Apply => {
                let a = args(self)?;
                self.apply(n, a)?
            }
            Op::Method(m) => {
                let a = args(self)?;
                super::members::method(self, n, m, a)?
            }
            Op::Field(f) => {
                let a = args(self)?;
                super::members::field(self, n, f, &a[0])?
            }
            Op::Index => {
                let a = args(self)?;
                super::members::index(span, &a[0], &a[1])?
            }
            Op::Slice { start, end } => {
                let a = args(self)?;
                let mut bounds = a[1..].iter();
                let from = if *start { bounds.next() } else { None };
                let to = if *end { bounds.next() } else { None };
                super::members::slice(span, &a[0], from, to)?
            }
            Op::Project(i) => {
                let a = args(self)?;
                match &a[0] {
                    Value::Tuple(xs) => xs.get(*i as usize).cloned().ok_or_else(|| {
                        RunError::at(span, format!("a tuple of {} has no element {i}", xs.len()))
                    })?,
                    other => {
                        return Err(RunError::at(
                            span,
                            format!("{} is not a tuple", other.kind()),
                        ))
                    }
                }
            }
            Op::Unary(u) => {
                let a = args(self)?;
                arith::unary(*u, &a[0]).map_err(|e| RunError::at(span, e))?
            }
            Op::Binary(b) => {
                let a = args(self)?;
                match (&a[0], &a[1], b) {
                    (Value::Tensor(x), Value::Noise(noise), crate::syntax::ast::BinOp::Add)
                    | (Value::Noise(noise), Value::Tensor(x), crate::syntax::ast::BinOp::Add) => {
                        Value::Tensor(
                            arith::apply_noise(noise, x, prog.env.seed)
                                .map_err(|e| RunError::at(span, e))?,
                        )
                    }
                    _ => arith::binary(*b, &a[0], &a[1]).map_err(|e| RunError::at(span, e))?,
                }
            }
            Op::Tuple => Value::tuple(args(self)?),
            Op::List => Value::list(args(self)?),
            Op::If { then, otherwise } => {
                let a = args(self)?;
                let branch = match a[0] {
                    Value::Bool(true) => *then,
                    Value::Bool(false) => *otherwise,
                    ref other => {
                        return Err(RunError::at(
                            span,
                            format!("the condition is {}, not a Bool", other.kind()),
                        ))
                    }
                };
                Value::tuple(self.eval_region(branch, Vec::new())?)
            }
            Op::For { body } => {
                let a = args(self)?;
                let items = sequence(&a[0]).map_err(|e| RunError::at(span, e))?;
                self.run_loop(
                    *body,
                    span,
                    "for loop",
                    items.into_iter().map(Some),
                    a[1..].to_vec(),
                )?
            }
            Op::Repeat { body } => {
                let a = args(self)?;
                let count = match a[0] {
                    Value::Int(c) if c >= 0 => c as usize,
                    ref other => {
                        return Err(RunError::at(
                            span,
                            format!("a repeat count must be an Int of at least 0, not {other:?}"),
                        ))
                    }
                };
                self.run_loop(
                    *body,
                    span,
                    "repeat",
                    (0..count).map(|_| None),
                    a[1..].to_vec(),
                )?
            }
            Op::Optimize { direction, body } => {
                let a = args(self)?;
                self.optimize(span, *direction, *body, &a)?
            }
        })
    }

    /// Runs a loop body once per item (`None` for `repeat`), threading the carried values.
    fn run_loop(
        &mut self,
        body: RegionId,
        span: Span,
        what: &'static str,
        items: impl ExactSizeIterator<Item = Option<Value>>,
        mut carried: Vec<Value>,
    ) -> Result<Value, RunError> {
        let total = items.len();
        let depth = self.loops.len();
        self.loops.push(LoopFrame {
            span,
            index: 0,
            total,
            what,
        });
        for (index, item) in items.enumerate() {
            if let Some(l) = self.loops.last_mut() {
                l.index = index;
            }
            if let Some(o) = &self.prog.observer {
                o.loop_step(depth, index, total);
            }
            if let Err(e) = self.check_cancelled(span) {
                self.loops.pop();
                return Err(e);
            }
            let mut inputs = Vec::with_capacity(carried.len() + 1);
            inputs.extend(item);
            inputs.append(&mut carried);
            match self.eval_region(body, inputs) {
                Ok(out) => carried = out,
                Err(e) => {
                    self.loops.pop();
                    return Err(e);
                }
            }
        }
        self.loops.pop();
        Ok(Value::tuple(carried))
    }

    /// `ascend|descend z with opt for n steps { ... maximize|minimize f }`.
    fn optimize(
        &mut self,
        span: Span,
        direction: crate::syntax::ast::Direction,
        body: RegionId,
        a: &[Value],
    ) -> Result<Value, RunError> {
        let mut z = match &a[0] {
            Value::Tensor(t) => t.detach(),
            other => {
                return Err(RunError::at(
                    span,
                    format!("the variable to optimize is {}, not a Tensor", other.kind()),
                ))
            }
        };
        let spec = match &a[1] {
            Value::Optimizer(o) => *o,
            other => {
                return Err(RunError::at(
                    span,
                    format!("{} is not an optimizer", other.kind()),
                ))
            }
        };
        let steps = match a[2] {
            Value::Int(s) if s >= 0 => s as usize,
            ref other => {
                return Err(RunError::at(
                    span,
                    format!("the number of steps must be an Int of at least 0, not {other:?}"),
                ))
            }
        };
        let what = match direction {
            crate::syntax::ast::Direction::Ascend => "ascend",
            crate::syntax::ast::Direction::Descend => "descend",
        };
        let mut state = OptimizerState::new(spec);
        // `for n steps as k` gives the body the step index as a second input.
        let with_index = self.prog.graph.region(body).inputs > 1;
        self.loops.push(LoopFrame {
            span,
            index: 0,
            total: steps,
            what,
        });
        let result = (|| {
            // The objective of the last step, for the diagnosis of a NaN.
            let mut last: Option<f64> = None;
            for k in 0..steps {
                if let Some(l) = self.loops.last_mut() {
                    l.index = k;
                }
                self.check_cancelled(span)?;
                let var = Var::from_tensor(&z).at(span)?;
                let mut inputs = vec![Value::Tensor(var.as_tensor().clone())];
                if with_index {
                    inputs.push(Value::Int(k as i64));
                }
                let out = self.eval_region(body, inputs)?;
                let objective = out.into_iter().next().unwrap_or(Value::Float(0.0));
                let (value, grad) = match &objective {
                    Value::Scalar(t) => {
                        let value = arith::as_f64(&objective).unwrap_or(f64::NAN);
                        let grads = t.backward().at(span)?;
                        let g = match grads.get(var.as_tensor()) {
                            Some(g) => g.clone(),
                            None => z.zeros_like().at(span)?,
                        };
                        (value, g)
                    }
                    Value::Float(f) => (*f, z.zeros_like().at(span)?),
                    Value::Int(i) => (*i as f64, z.zeros_like().at(span)?),
                    other => {
                        return Err(RunError::at(
                            span,
                            format!("the objective is {}, not a Float", other.kind()),
                        ))
                    }
                };
                if !value.is_finite() {
                    return Err(non_finite_objective(span, value, k, last));
                }
                last = Some(value);
                if let Some(o) = &self.prog.observer {
                    o.optimize_step(k, steps, value);
                }
                let next = state.step(&z, &grad, direction).at(span)?;
                if !all_finite(&next).at(span)? {
                    let gradient_finite = all_finite(&grad).at(span)?;
                    return Err(non_finite_step(span, value, gradient_finite));
                }
                z = next;
            }
            Ok(())
        })();
        if let Err(mut e) = result {
            if e.notes.is_empty() {
                e.notes = self.loop_notes();
            }
            self.loops.pop();
            return Err(e);
        }
        self.loops.pop();
        Ok(Value::Tensor(z))
    }

    /// Applying a value: an operator to a tensor, a model to (x, sigma), a noise model.
    fn apply(&mut self, n: NodeId, a: Vec<Value>) -> Result<Value, RunError> {
        let prog = self.prog.clone();
        let node = prog.graph.node(n);
        let span = node.span;
        let tensor = |v: &Value| match v {
            Value::Tensor(t) => Ok(t.clone()),
            other => Err(RunError::at(
                span,
                format!("expected a Tensor, found {}", other.kind()),
            )),
        };
        match &a[0] {
            Value::Operator(op) => {
                let x = tensor(&a[1])?;
                Ok(Value::Tensor(
                    op.apply(&x)
                        .map_err(|e| RunError::at(span, e.to_string()))?,
                ))
            }
            Value::Model(m) => {
                let x = tensor(&a[1])?;
                let sigma = arith::as_f64(&a[2])
                    .ok_or_else(|| RunError::at(span, "the noise level must be a Float"))?;
                m.check_input(&x).map_err(|e| RunError::at(span, e))?;
                if !(sigma.is_finite() && sigma > 0.0) {
                    return Err(RunError::at(
                        span,
                        format!("the noise level must be positive, but it is {sigma}"),
                    ));
                }
                let callee = prog.graph.node(node.inputs[0]);
                let consistency =
                    matches!(&callee.ty, Type::Model(t) if t.kind == ModelKind::Consistency);
                let out = if consistency {
                    m.consistency(&x, sigma)
                } else {
                    m.denoise(&x, sigma)
                };
                Ok(Value::Tensor(out.at(span)?))
            }
            Value::Noise(noise) => {
                let x = tensor(&a[1])?;
                Ok(Value::Tensor(
                    arith::apply_noise(noise, &x, prog.env.seed)
                        .map_err(|e| RunError::at(span, e))?,
                ))
            }
            Value::Fn(body) => {
                let mut out = self.eval_region(*body, a[1..].to_vec())?;
                Ok(out.pop().unwrap_or(Value::Unit))
            }
            other => Err(RunError::at(
                span,
                format!("{} cannot be called", other.kind()),
            )),
        }
    }

    /// The gradient of the Scalar at `value` with respect to the tensor at `wrt`: the nodes
    /// on a path from `wrt` to `value` are run again with `wrt` as a variable, differentiated,
    /// and restored. Values carried into a loop iteration from an earlier one count as
    /// constants.
    pub(crate) fn grad(
        &mut self,
        span: Span,
        value: NodeId,
        wrt: NodeId,
    ) -> Result<Tensor, RunError> {
        let x = match self.get(wrt, span)? {
            Value::Tensor(t) => t,
            other => {
                return Err(RunError::at(
                    span,
                    format!("`wrt` must be a Tensor, not {}", other.kind()),
                ))
            }
        };
        let path = match self.paths.get(&(wrt, value)) {
            Some(p) => p.clone(),
            None => {
                let p = self.path_between(wrt, value);
                self.paths.insert((wrt, value), p.clone());
                p
            }
        };
        let saved: Vec<(NodeId, Option<Value>)> = std::iter::once(wrt)
            .chain(path.iter().copied())
            .map(|n| (n, self.values[n.0 as usize].clone()))
            .collect();
        let var = Var::from_tensor(&x.detach()).at(span)?;
        self.values[wrt.0 as usize] = Some(Value::Tensor(var.as_tensor().clone()));
        // The forward pass run again here was counted when it first ran.
        let _again = crate::diffusion::nfe::pause();
        let result = (|| {
            for &n in &path {
                self.eval_node(n)?;
            }
            match self.get(value, span)? {
                Value::Scalar(t) => {
                    let grads = t.backward().at(span)?;
                    match grads.get(var.as_tensor()) {
                        Some(g) => Ok(g.detach()),
                        None => x.zeros_like().at(span),
                    }
                }
                Value::Float(_) | Value::Int(_) => x.zeros_like().at(span),
                other => Err(RunError::at(
                    span,
                    format!("`grad` needs a Float value, not {}", other.kind()),
                )),
            }
        })();
        for (n, v) in saved {
            self.values[n.0 as usize] = v;
        }
        result
    }

    /// The nodes of the active regions that depend on `from` and that `to` depends on, in
    /// the order they run (node ids are emitted in a topological order within scopes).
    fn path_between(&self, from: NodeId, to: NodeId) -> Vec<NodeId> {
        let prog = &self.prog;
        let active: std::collections::HashSet<RegionId> = self.active.iter().copied().collect();
        let deps = |n: NodeId| -> Vec<NodeId> {
            let node = prog.graph.node(n);
            let mut d = node.inputs.clone();
            let mut subs = owned_regions(&node.op);
            if let Op::Call(f) = node.op {
                if let Some(func) = prog.graph.functions.get(f.0 as usize) {
                    subs.push(func.body);
                }
            }
            for s in subs {
                d.extend(prog.free[s.0 as usize].iter().copied());
            }
            d
        };
        // Backward from `to`: everything it depends on, within active regions.
        let mut ancestors = std::collections::HashSet::new();
        let mut stack = vec![to];
        while let Some(n) = stack.pop() {
            if n == from || !ancestors.insert(n) {
                continue;
            }
            if !active.contains(&prog.region_of[n.0 as usize]) {
                continue;
            }
            stack.extend(deps(n));
        }
        // Forward from `from`, in id order, among those ancestors.
        let mut candidates: Vec<NodeId> = ancestors
            .into_iter()
            .filter(|n| active.contains(&prog.region_of[n.0 as usize]))
            .collect();
        candidates.sort();
        let mut depends: std::collections::HashSet<NodeId> = std::iter::once(from).collect();
        let mut path = Vec::new();
        for n in candidates {
            if deps(n).iter().any(|d| depends.contains(d)) {
                depends.insert(n);
                path.push(n);
            }
        }
        path
    }
}

/// The items a `for` loop runs over.
fn sequence(v: &Value) -> Result<Vec<Value>, String> {
    match v {
        Value::List(xs) => Ok(xs.to_vec()),
        Value::Schedule(s) => Ok(s.iter().map(|x| Value::Float(*x)).collect()),
        Value::Tensor(t) => {
            let n = t.dims().first().copied().unwrap_or(0);
            (0..n)
                .map(|i| t.get(i).map(Value::Tensor).map_err(|e| e.to_string()))
                .collect()
        }
        other => Err(format!("cannot loop over {}", other.kind())),
    }
}

/// The help every NaN diagnosis ends with: what was already ruled out.
const FINITE_SOURCES: &str = "model weights are checked finite when they are loaded, and so \
     are images and .npy data";

/// An objective that is NaN or infinite at step `k`, told apart by whether any step had been
/// taken: at the starting point the step size cannot be the cause.
fn non_finite_objective(span: Span, value: f64, k: usize, last: Option<f64>) -> RunError {
    match last {
        None => RunError::new(
            Code::RunNumeric,
            span,
            format!("the objective is {value} at the starting point, before any step was taken"),
        )
        .with_help(format!(
            "the learning rate is not the cause: look at what the objective computes from its \
             starting value (a log or division at 0, a square root of a negative number, a \
             value that overflows); {FINITE_SOURCES}"
        )),
        Some(previous) => RunError::new(
            Code::RunNumeric,
            span,
            format!(
                "the objective became {value} at step {} (it was {previous:.6e} one step before)",
                k + 1
            ),
        )
        .with_help(format!(
            "the last step took the variable where the objective is undefined or overflows: \
             the step is too large for this problem; lower the learning rate, or use adam \
             ({FINITE_SOURCES})"
        )),
    }
}

/// A step that made the variable NaN or infinite: from a NaN gradient (a function with no
/// derivative where the objective is evaluated) or from a finite gradient times a step too
/// large.
fn non_finite_step(span: Span, value: f64, gradient_finite: bool) -> RunError {
    if gradient_finite {
        RunError::new(
            Code::RunNumeric,
            span,
            format!("the variable became NaN or infinite (objective {value:.6e})"),
        )
        .with_help(format!(
            "the gradient was finite, so the step is too large for this problem: lower the \
             learning rate, or use adam ({FINITE_SOURCES})"
        ))
    } else {
        RunError::new(
            Code::RunNumeric,
            span,
            format!("the gradient is NaN or infinite where the objective is finite ({value:.6e})"),
        )
        .with_help(
            "the learning rate is not the cause: the objective uses a function with no \
             derivative at this point (a square root or a power below 1 at 0, a norm of a zero \
             vector); add a small constant inside it",
        )
    }
}

/// True when every element of `t` is finite.
pub fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let s = t
        .to_dtype(DType::F64)?
        .abs()?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}
