//! The typed graph: what the checker hands to the runtime.
//!
//! Nodes live in one arena ([`Graph::nodes`], indexed by [`NodeId`]) and are grouped into
//! [`Region`]s, each an ordered list of nodes run in sequence: the pipeline's top level, the
//! body of each specialised function, each loop body, each branch and each optimization body.
//! A node may use any node of an enclosing region that comes before it (lexical scope).
//! Mutable variables are turned into explicit data flow: a loop's body region takes the
//! loop-carried values as inputs and yields their new values as outputs, and the loop node's
//! result is the tuple of final values ([`Op::Project`] picks one). Every node keeps the span
//! of the source it came from, so a run-time error can point at the line.

mod dot;

pub use dot::to_dot;

use serde::{Deserialize, Serialize};

use crate::check::types::Type;
use crate::source::Span;
use crate::syntax::ast::{BinOp, Direction, UnOp};

/// Index of a node in [`Graph::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

/// Index of a region in [`Graph::regions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionId(pub u32);

/// Index of a specialised function in [`Graph::functions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FuncId(pub u32);

/// A constant known before running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Const {
    /// `()`.
    Unit,
    /// A Bool.
    Bool(bool),
    /// An Int.
    Int(i64),
    /// A Float.
    Float(f64),
    /// A String.
    Str(String),
    /// A list of constants.
    List(Vec<Const>),
    /// A tuple of constants.
    Tuple(Vec<Const>),
}

impl Const {
    /// The value as a float, for Ints and Floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Const::Int(i) => Some(*i as f64),
            Const::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as an integer, for Ints.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Const::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// What a node does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A constant.
    Const(Const),
    /// A pipeline parameter (`param`), overridable from the command line.
    Param(String),
    /// The `index`-th input of the enclosing region (a function argument, a loop element or a
    /// loop-carried value).
    Input(u32),
    /// A call of a built-in with its arguments in declared order (a variadic parameter's
    /// arguments are spread at its position; `variadic` says how many).
    Builtin {
        /// The built-in's name.
        name: String,
        /// How many arguments the variadic parameter received, if it has one.
        variadic: Option<u32>,
    },
    /// A call of a specialised user or library function.
    Call(FuncId),
    /// Applying a value: an operator to a tensor, a model to `(x, sigma)`, a noise model.
    Apply,
    /// A method of a value: `A.adjoint(v)`, `A.visualize(y)`; the receiver is input 0.
    Method(String),
    /// A field of a value: `A.domain`, `ts.pairs`.
    Field(String),
    /// Indexing: input 0 at input 1.
    Index,
    /// Slicing the first dimension of input 0 (a tensor or a list): `x[a:b]`. The bounds that
    /// were written follow as inputs, the start first.
    Slice {
        /// A start was written (else 0).
        start: bool,
        /// An end was written (else the length).
        end: bool,
    },
    /// Element `i` of a tuple, or output `i` of a multi-output node (loop, if).
    Project(u32),
    /// A prefix operator.
    Unary(UnOp),
    /// An infix operator (on numbers, tensors or operators).
    Binary(BinOp),
    /// A tuple of the inputs.
    Tuple,
    /// A list of the inputs.
    List,
    /// `if`: input 0 is the condition; the chosen region's outputs are the node's outputs.
    If {
        /// Run when the condition holds.
        then: RegionId,
        /// Run otherwise.
        otherwise: RegionId,
    },
    /// `for`: input 0 is the sequence, the rest are the carried values' initial values. The
    /// body's inputs are the element then the carried values; its outputs the new carried values.
    For {
        /// The loop body.
        body: RegionId,
    },
    /// `repeat`: input 0 is the count, the rest are carried values, as for `For` without element.
    Repeat {
        /// The loop body.
        body: RegionId,
    },
    /// A function value passed to a built-in (`vjp(f, x, v)`, `operator(f, domain)`): the body
    /// region takes the function's arguments as inputs and yields its result; it uses no
    /// value from outside (functions capture nothing), so it can run anywhere, any number of
    /// times.
    Lambda {
        /// The function's body, specialised for the argument types at this use.
        body: RegionId,
    },
    /// The optimization step: inputs are the variable's initial value, the optimizer and the
    /// number of steps. The body's input is the variable; its single output the objective.
    /// The node's value is the optimized variable.
    Optimize {
        /// Ascend (maximize) or descend (minimize).
        direction: Direction,
        /// The objective's body.
        body: RegionId,
    },
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// What it does.
    pub op: Op,
    /// Its operands.
    pub inputs: Vec<NodeId>,
    /// Its type, with every dimension known before running filled in.
    pub ty: Type,
    /// The source it came from.
    pub span: Span,
}

/// An ordered group of nodes with inputs and outputs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Region {
    /// What the region is, for display ("main", "fn mapga", "for body").
    pub label: String,
    /// Number of inputs (see [`Op::Input`]).
    pub inputs: u32,
    /// The nodes, in the order they run.
    pub nodes: Vec<NodeId>,
    /// The region's results.
    pub outputs: Vec<NodeId>,
}

/// A function specialised for the argument types of its call sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// The function's name.
    pub name: String,
    /// The file (module) it is defined in.
    pub module: String,
    /// Its body; inputs are the arguments given at the call site, in parameter order.
    pub body: RegionId,
    /// Where it is defined.
    pub span: Span,
}

/// A pipeline parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Type,
    /// The value used by this check (the default, or the `--set` override).
    pub value: Option<Const>,
    /// Its node.
    pub node: NodeId,
}

/// What the pipeline writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Output {
    /// `save value to path`.
    Save {
        /// The value to save.
        value: NodeId,
        /// The path (a string node).
        path: NodeId,
        /// The statement's span.
        span: Span,
    },
    /// One entry of `report`.
    Report {
        /// The value reported.
        value: NodeId,
        /// Its label (given with `as`, or the source text).
        label: String,
        /// The entry's span.
        span: Span,
    },
}

/// A checked pipeline, ready to run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Graph {
    /// Every node.
    pub nodes: Vec<Node>,
    /// Every region; region 0 is the pipeline's top level.
    pub regions: Vec<Region>,
    /// Specialised functions.
    pub functions: Vec<Function>,
    /// The pipeline's parameters.
    pub params: Vec<Param>,
    /// Saves and reports, in source order.
    pub outputs: Vec<Output>,
}

impl Graph {
    /// An empty graph with its top-level region.
    pub fn new() -> Self {
        Graph {
            regions: vec![Region {
                label: "main".into(),
                ..Region::default()
            }],
            ..Graph::default()
        }
    }

    /// The top-level region.
    pub const MAIN: RegionId = RegionId(0);

    /// Adds a region and returns its id.
    pub fn add_region(&mut self, label: impl Into<String>, inputs: u32) -> RegionId {
        self.regions.push(Region {
            label: label.into(),
            inputs,
            ..Region::default()
        });
        RegionId(self.regions.len() as u32 - 1)
    }

    /// Adds a node at the end of `region`.
    pub fn add(
        &mut self,
        region: RegionId,
        op: Op,
        inputs: Vec<NodeId>,
        ty: Type,
        span: Span,
    ) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Node {
            op,
            inputs,
            ty,
            span,
        });
        self.regions[region.0 as usize].nodes.push(id);
        id
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    /// The region with id `id`.
    pub fn region(&self, id: RegionId) -> &Region {
        &self.regions[id.0 as usize]
    }

    /// The region with id `id`, mutably.
    pub fn region_mut(&mut self, id: RegionId) -> &mut Region {
        &mut self.regions[id.0 as usize]
    }

    /// The graph as RON text.
    pub fn to_ron(&self) -> Result<String, ron::Error> {
        ron::ser::to_string_pretty(self, ron::ser::PrettyConfig::new().depth_limit(6))
    }
}
