//! mapga: a declarative pipeline language for imaging inverse problems with diffusion models.
//!
//! A `.mapga` file declares the models, the forward operator, the noise schedule and the
//! optimizer steps of a solver. The library runs it in three phases, each a module with one
//! entry function:
//!
//! 1. [`syntax::parse`]: text to a spanned syntax tree ([`syntax::ast`]), with every syntax
//!    error reported as a [`diagnostics::Diag`].
//! 2. [`check::check_file`] / [`check::check_source`]: names, modules, types and tensor
//!    shapes, lowered in the same pass into a [`graph::Graph`] whose nodes keep their spans.
//! 3. [`runtime::run`]: the graph executed over candle tensors, with autodiff, writing the
//!    pipeline's saves, `metrics.json` and a `run.ron` manifest.
//!
//! Built-ins are declared in the standard library ([`stdlib`], `stdlib/*.mapga`), their
//! shape rules live in [`check::builtins`] and their run-time code in [`runtime::builtins`],
//! which calls the domain modules: [`operators`] (forward operators with adjoints, Gram
//! solves and SVDs), [`diffusion`] (schedules, priors, log-density surrogates, exact MAP
//! references), [`metrics`], [`io`] (images, arrays, grids, plots, file headers) and
//! [`models`] (model cards).
//!
//! ```
//! use mapga::check::{check_source, CheckOptions};
//!
//! let program = r#"
//! param size = 28
//! let A = inpaint(box_mask(size, size, top: 10, left: 6, height: 8, width: 16))
//! let x = gaussian_like(shape(1, size, size), seed: 1)
//! report norm(A(x) - x)
//! "#;
//! let checked = check_source("demo.mapga", program, std::path::Path::new("."), &CheckOptions::default());
//! assert!(!checked.diags.has_errors());
//! assert_eq!(checked.graph.params[0].name, "size");
//!
//! // Applying A to x fixed its domain: every node's shape is known before running.
//! let shapes: Vec<String> = checked.graph.nodes.iter().map(|n| n.ty.to_string()).collect();
//! assert!(shapes.contains(&"Operator[svd] [1, 28, 28] -> [1, 28, 28]".to_string()));
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod diagnostics;
pub mod diffusion;
pub mod eval;
pub mod graph;
pub mod io;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod operators;
pub mod random;
pub mod runtime;
pub mod source;
pub mod stack;
pub mod stdlib;
pub mod syntax;
