//! The standard library, compiled into the binary.
//!
//! Every `stdlib/**/*.mapga` file is embedded by `build.rs` under its module path:
//! `stdlib/solvers/mapga.mapga` is `std.solvers.mapga`. Built-ins are declared there with
//! `extern fn` (signature and doc comment); their shape rules live in `check::builtins` and
//! their behaviour in the runtime.

include!(concat!(env!("OUT_DIR"), "/stdlib_files.rs"));

/// The source of the standard-library module `path` (`std.solvers.mapga`).
pub fn module(path: &str) -> Option<&'static str> {
    FILES.iter().find(|(m, _)| *m == path).map(|(_, s)| *s)
}

/// Every module path, sorted.
pub fn module_paths() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(m, _)| *m)
}
