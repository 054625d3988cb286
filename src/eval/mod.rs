//! `mapga eval`: a grid of runs of one suite file, resumable and sharded, with tables and a
//! figure.
//!
//! A suite is an ordinary pipeline with `grid` items (`grid solver in ["mapga", "dps"], task in
//! ["box25", "half"]`). Its cells ([`cells`]) are the combinations the grids list, in a fixed
//! order; each is the program with those params set, checked before anything runs
//! ([`cells::check_suite`]) and run in-process with the interpreter of `mapga run` into
//! `DIR/cells/<id>/` ([`run::evaluate`]). A cell is finished when its `cell.json` is written
//! ([`store`]); a later run reuses finished cells of the same program, so an interrupted
//! evaluation continues where it stopped, and a failed cell (a NaN objective) is recorded and
//! retried next time while the others go on. `--shard K/N` runs a deterministic slice
//! ([`shard`]) for job arrays, and `--merge` combines shard folders ([`store::merge`]). The
//! outputs, rebuilt from every finished cell: `results.csv` and `summary.md` ([`table`]) and
//! `figure.png` ([`figure`]).
//!
//! `mapga run FILE --sweep NAME=V1,V2,...` is the same machinery with the grid given on the
//! command line ([`cells::check_sweep`]).

pub mod cells;
pub mod figure;
pub mod run;
pub mod shard;
pub mod store;
pub mod table;

pub use cells::{check_suite, check_sweep, Cell, CheckedSuite, SweepAxis, SweepError};
pub use run::{evaluate, merge, EvalOptions, EvalSummary, Outcome, Progress};
pub use shard::Shard;
