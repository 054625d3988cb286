//! `mapga eval`: run every cell of a suite (or this shard's), then write its tables and figure;
//! `mapga eval --merge DIR SHARD_DIR...` combines shard folders.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{print_diags, DeviceArg, DtypeArg, MessageFormat};
use crate::eval::{self, EvalOptions, Outcome, Shard};
use crate::runtime::{Env, Observer};

/// Arguments of `mapga eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The suite: a pipeline file with `grid` items.
    #[arg(required_unless_present = "merge")]
    pub suite: Option<PathBuf>,
    /// The output folder (default: `out/eval/<suite name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a param in every cell: `--set n=100`. On a grid param, it narrows the grid to
    /// that value.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Run only shard K of N (1-based): the cells whose index i has i % N == K - 1.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// The root seed of every random draw, in every cell.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The device to compute on.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceArg,
    /// The floating-point type of tensors.
    #[arg(long, value_enum, default_value_t)]
    pub dtype: DtypeArg,
    /// Threads to compute with, 1 to 8 per core [default: all cores, or RAYON_NUM_THREADS when
    /// set].
    #[arg(long, value_name = "N", value_parser = super::parse_threads)]
    pub threads: Option<usize>,
    /// Items of each cell shown in figure.png.
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub figure_items: usize,
    /// Copy the finished cells of shard folders into DIR and write its tables, running nothing:
    /// `--merge DIR SHARD_DIR...`.
    #[arg(long, num_args = 2.., value_names = ["DIR", "SHARD_DIR"], conflicts_with_all = ["suite", "shard", "set", "out", "threads"])]
    pub merge: Vec<PathBuf>,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t)]
    pub message_format: MessageFormat,
    /// What the suite may read and write.
    #[command(flatten)]
    pub access: super::AccessArgs,
}

/// On a terminal, a progress bar for the cell that is running (its outer loop, and the ascent
/// step and objective); the lines on standard output are the record of each cell.
#[derive(Default)]
pub(super) struct CellBar(Mutex<Option<ProgressBar>>);

impl CellBar {
    /// A new bar for the cell `head` (`[2/4] solver=dps task=half`).
    fn start(&self, head: String) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} {elapsed} [{bar:30}] step {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(head);
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(bar);
        }
    }

    /// Removes the bar of the cell that ended.
    fn stop(&self) {
        if let Some(bar) = self.0.lock().ok().and_then(|mut s| s.take()) {
            bar.finish_and_clear();
        }
    }

    fn with(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.0.lock().ok().as_ref().and_then(|s| s.as_ref()) {
            f(bar);
        }
    }
}

impl Observer for CellBar {
    /// An evaluation stops at SIGINT or SIGTERM ([`super::signals`]).
    fn cancelled(&self) -> bool {
        super::signals::received().is_some()
    }

    fn loop_step(&self, depth: usize, index: usize, total: usize) {
        if depth == 0 {
            self.with(|b| {
                b.set_length(total as u64);
                b.set_position(index as u64);
            });
        }
    }

    fn optimize_step(&self, index: usize, total: usize, objective: f64) {
        self.with(|b| {
            b.set_message(format!(
                "iteration {}/{total}, objective {objective:.6e}",
                index + 1
            ));
        });
    }
}

/// `--shard K/N`.
fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

/// Runs `mapga eval`; returns the exit code: 0 when every cell finished, 1 when the suite has
/// errors or a cell failed (its reason is in the tables; the next run retries it), 2 for usage
/// and I/O errors.
pub fn run(args: &EvalArgs) -> u8 {
    if !args.merge.is_empty() {
        return merge(args);
    }
    let Some(file) = &args.suite else {
        eprintln!("error: give a suite file, or --merge DIR SHARD_DIR...");
        return 2;
    };
    let sets = match super::overrides_for(file, &args.set) {
        Ok(o) => o,
        Err(code) => return code,
    };
    if let Err(e) = super::set_threads(args.threads.unwrap_or_else(super::default_threads)) {
        eprintln!("error: {e}");
        return 2;
    }
    let device = match super::run::device(args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let out_dir = args.out.clone().unwrap_or_else(|| {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "suite".into());
        PathBuf::from("out").join("eval").join(stem)
    });
    let check = crate::check::CheckOptions {
        permissions: args.access.permissions(file, &out_dir, &sets),
        overrides: sets,
    };
    let suite = eval::check_suite(file, &check);
    print_diags(&suite.diags.0, &suite.sources, args.message_format);
    if suite.has_errors() {
        let n = suite.diags.error_count();
        eprintln!("{n} error{}: not running", if n == 1 { "" } else { "s" });
        return 1;
    }
    if let Err(e) = crate::io::atomic::ensure_writable_dir(&out_dir) {
        eprintln!("error: {e} (choose another with --out)");
        return 2;
    }
    let bar = Arc::new(CellBar::default());
    super::signals::install();
    let opts = EvalOptions {
        out_dir: out_dir.clone(),
        shard: args.shard,
        env: Env {
            device,
            dtype: args.dtype.dtype(),
            seed: args.seed,
        },
        figure_items: args.figure_items,
        observer: Some(bar.clone()),
        title: None,
        cache: None,
    };
    let cells = suite.cells.len();
    match args.shard {
        Some(s) => println!(
            "{cells} cell{} checked; shard {s} runs {} of them",
            if cells == 1 { "" } else { "s" },
            suite.cells.iter().filter(|(c, _)| s.takes(c.index)).count()
        ),
        None => println!("{cells} cell{} checked", if cells == 1 { "" } else { "s" }),
    }
    run_cells(file, &suite, &opts, &bar)
}

/// Runs the cells of a checked suite (or sweep) with a line per cell on standard output and
/// `bar` for the running one, then writes and names the tables; returns the exit code: 0 when
/// every cell finished, 1 when one failed, 2 when the outputs cannot be written.
pub(super) fn run_cells(
    file: &std::path::Path,
    suite: &eval::CheckedSuite,
    opts: &EvalOptions,
    bar: &CellBar,
) -> u8 {
    let result = eval::evaluate(file, suite, opts, |p| {
        let head = format!("[{}/{}] {}", p.position, p.total, p.cell.label());
        let what = match p.outcome {
            Outcome::Running => return bar.start(head),
            Outcome::Ran(s) => format!("done in {s:.1} s"),
            Outcome::Reused => "reused".to_string(),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::Interrupted => "interrupted (not recorded: it runs again next time)".into(),
        };
        bar.stop();
        println!("{head}: {what}");
    });
    match result {
        Ok(s) => {
            println!(
                "{} cell{}: {} run, {} reused, {} failed, in {:.1} s",
                s.mine,
                if s.mine == 1 { "" } else { "s" },
                s.ran,
                s.reused,
                s.failed,
                s.seconds
            );
            print_tables(&opts.out_dir, &s.tables, Some(s.cells));
            if let Some(signal) = super::signals::received().filter(|_| s.interrupted) {
                let (name, code) = super::signals::describe(signal);
                eprintln!("interrupted by {name}: the next `mapga eval` of this suite resumes with the cells not finished");
                return code;
            }
            if s.failed > 0 {
                1
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

/// Prints where the tables went and what they hold.
fn print_tables(out: &std::path::Path, t: &eval::run::Tables, cells: Option<usize>) {
    let names: Vec<String> = t
        .written
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let of = cells.map_or_else(String::new, |c| format!(" of {c}"));
    println!(
        "tables of {} finished cell{}{of} ({} failed) in {}: {}",
        t.finished,
        if t.finished == 1 { "" } else { "s" },
        t.failed,
        out.display(),
        names.join(", ")
    );
    if t.stale > 0 {
        println!(
            "left out {} cell{} in {} made by another version of the suite",
            t.stale,
            if t.stale == 1 { "" } else { "s" },
            out.join("cells").display()
        );
    }
}

/// `mapga eval --merge DIR SHARD_DIR...`.
fn merge(args: &EvalArgs) -> u8 {
    let (dest, shards) = match args.merge.split_first() {
        Some((d, s)) if !s.is_empty() => (d, s),
        _ => {
            eprintln!("error: --merge needs the destination and at least one shard folder");
            return 2;
        }
    };
    match eval::merge(dest, shards, args.figure_items) {
        Ok((m, t)) => {
            println!(
                "merged {} shard folder{}: {} cell{} copied, {} already there",
                shards.len(),
                if shards.len() == 1 { "" } else { "s" },
                m.copied,
                if m.copied == 1 { "" } else { "s" },
                m.kept
            );
            print_tables(dest, &t, None);
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
