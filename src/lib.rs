//! mapga: a declarative pipeline language for imaging inverse problems with diffusion models.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
pub mod cli;
pub mod diagnostics;
pub mod graph;
pub mod io;
pub mod models;
pub mod source;
pub mod stdlib;
pub mod syntax;
