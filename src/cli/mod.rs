//! The command-line interface: `mapga run`, `mapga watch`, `mapga check`, `mapga graph`,
//! `mapga eval`, `mapga fmt`, `mapga doc`, and for checkpoints `mapga inspect` and
//! `mapga convert`.
//!
//! Exit codes (the contract scripts rely on): 0 when clean (warnings allowed), 1 when the
//! program has errors (or `fmt --check` finds files to reformat), 2 for usage and I/O errors
//! (a file that cannot be read, a bad `--set`).

mod check;
mod convert;
mod doc;
mod eval;
mod fmt;
mod graph;
mod inspect;
pub mod process;
mod run;
mod signals;
pub use run::Progress;
mod sweep;
mod watch;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::diagnostics::{render, render_plain, Diag, RenderOptions};
use crate::source::SourceMap;

/// mapga: solve imaging inverse problems with diffusion models, written as text files.
#[derive(Debug, Parser)]
#[command(name = "mapga", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line as clap describes it, with what the derive cannot say: `mapga watch`
    /// takes `mapga run`'s flags but refuses `--sweep`, so its help does not offer it.
    pub fn command_line() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
            .mut_subcommand("watch", |c| c.mut_arg("sweep", |a| a.hide(true)))
    }

    /// Parses the process's arguments (exiting with clap's usage error or help, as `parse`).
    pub fn parse_args() -> Cli {
        let matches = Cli::command_line().get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline, run it, and write its outputs.
    ///
    /// Saves go to the output folder (default `out/<pipeline name>/`) with `metrics.json`
    /// (the reported numbers) and `run.ron` (hashes of every source and input, params, seed,
    /// timings), published together when the run finishes; a failed or interrupted run leaves
    /// the last good results as they were and its own partial outputs in `failed-run/`. The
    /// pipeline reads only its own folders and writes only the output folder unless
    /// `--allow-read`/`--allow-write` say otherwise. Exits 0 on success, 1 when the pipeline
    /// has errors or the run fails, 2 for usage and I/O errors (a folder in use by another
    /// run), 130/143 when interrupted by SIGINT/SIGTERM.
    Run(RunArgs),
    /// Check and run a pipeline, then again on every save of it or of a file it uses.
    ///
    /// Watches the pipeline, its imports and every image, array and model it loads. Each
    /// save is checked at once (diagnostics on standard error; errors keep the last good
    /// outputs); a clean check runs again, serving unchanged parts of the graph and loaded
    /// models from a cache, and cancelling a run made stale by the newer save. Prints one
    /// `[watch] ...` status line per event on standard output. Runs until interrupted.
    Watch(watch::WatchArgs),
    /// Check pipelines for errors (names, types, shapes, files) without running them.
    ///
    /// Exits 0 when every file is clean (warnings allowed), 1 when any has errors,
    /// 2 when a file cannot be read.
    Check(CheckArgs),
    /// Print the typed graph a pipeline lowers to, as RON or Graphviz DOT.
    Graph(GraphArgs),
    /// Run every cell of an evaluation suite (a pipeline with `grid` items), resumably.
    ///
    /// Checks every cell first, then runs each into `DIR/cells/<cell>/` (finished cells of
    /// the same program are reused), and writes `results.csv`, `summary.md` and `figure.png`
    /// from every finished cell. `--shard K/N` runs a slice; `--merge DIR SHARD_DIR...`
    /// combines shard folders. Exits 0 when every cell finished, 1 on errors or a failed cell,
    /// 2 for usage and I/O errors, 130/143 when interrupted (the next run resumes).
    Eval(eval::EvalArgs),
    /// Format pipelines in the canonical style, keeping every comment.
    ///
    /// Rewrites the files in place; with --check, only reports the files that would change
    /// (exit 1 if any).
    Fmt(FmtArgs),
    /// Show the signature and doc comment of a built-in or standard-library item.
    ///
    /// Without a name, lists every module and item with its one-line summary. NAME is an
    /// item (`mapga`, `std.solvers.dps.dps`), a module (`std.solvers.dps`), a field or method
    /// of a built-in value (`A.pinv`, `ts.pairs`) or a kind of value (`Operator`). Exits 2
    /// when nothing has that name.
    Doc(DocArgs),
    /// Convert a checkpoint (safetensors, PyTorch, diffusers folder) to safetensors with its
    /// full card beside it.
    ///
    /// Writes OUT (a .safetensors file, tensors under the official names, in --dtype) and its
    /// card `OUT.ron`: the card mapga reads or infers for IN, named after OUT, with the
    /// conversion in `provenance` and the SHA-256 of the written file. The converted pair
    /// loads without inference and gives the same network. Exits 0 on success, 1 when IN is
    /// not a checkpoint mapga can use, 2 for usage and I/O errors (OUT exists without
    /// --force, OUT is IN, a file that cannot be read or written).
    Convert(convert::ConvertArgs),
    /// Show what mapga infers about a checkpoint, without building its network.
    ///
    /// Prints the format, the known release it matches (name, source, released file names),
    /// the tensor and parameter counts, the number of classes of a class-conditional model,
    /// and the card as RON: the card read from beside the checkpoint, completed from its
    /// tensors, or inferred from them. This is the way to see the card mapga infers; it is
    /// what `mapga convert` writes, less the output's name, the conversion note and the hash.
    /// Exits 1 when the checkpoint cannot be used, 2 when the path cannot be read.
    Inspect(inspect::InspectArgs),
}

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum MessageFormat {
    /// Source excerpts with labels (default).
    #[default]
    Human,
    /// One line per problem: `file:line:col: severity[code]: message`.
    Short,
}

/// What a pipeline may read and write beyond its own folders (see
/// [`crate::io::permissions`]): the flags of `run`, `watch`, `check`, `graph` and `eval`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessArgs {
    /// Also allow the pipeline to read anything under DIR (repeatable). Without it, a
    /// pipeline reads only under its own folder, its project (the folder above it holding a
    /// `.mapga-project` file), its imports' folders and files named by `--set` values.
    #[arg(long = "allow-read", value_name = "DIR")]
    pub allow_read: Vec<PathBuf>,
    /// Also allow the pipeline to write under DIR (repeatable). Without it, a pipeline writes
    /// only under its output folder.
    #[arg(long = "allow-write", value_name = "DIR")]
    pub allow_write: Vec<PathBuf>,
}

impl AccessArgs {
    /// The permissions of the pipeline `file` with output folder `out` and `--set` values
    /// `overrides`: its project and folder, the flags' folders, and each `--set` value that
    /// names an existing file (resolved as the pipeline resolves it: against its folder).
    pub fn permissions(
        &self,
        file: &std::path::Path,
        out: &std::path::Path,
        overrides: &BTreeMap<String, String>,
    ) -> crate::io::permissions::Permissions {
        let mut p = crate::io::permissions::Permissions::for_pipeline(file, out, overrides);
        for d in &self.allow_read {
            p.allow_read(d);
        }
        for d in &self.allow_write {
            p.allow_write(d);
        }
        p
    }
}

/// The output folder a pipeline writes to when none is given: `out/<pipeline name>`.
pub(crate) fn default_out(file: &std::path::Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    PathBuf::from("out").join(stem)
}

/// Arguments of `mapga check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The pipeline files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Override a pipeline param, as in `mapga run`: `--set sigma_y=0.1`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// How to print diagnostics.
    #[arg(long, value_enum, default_value_t)]
    pub message_format: MessageFormat,
    /// Treat warnings as errors (exit 1 when there are any).
    #[arg(long)]
    pub deny_warnings: bool,
    /// What the pipelines may read and write.
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Where tensors live.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum DeviceArg {
    /// The CPU (default).
    #[default]
    Cpu,
    /// The first CUDA GPU (needs a build with `--features cuda`).
    Cuda,
}

/// The floating-point type of tensors.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum DtypeArg {
    /// 32-bit floats (default).
    #[default]
    F32,
    /// 64-bit floats: slower, for exact comparisons.
    F64,
}

impl DtypeArg {
    /// The candle dtype this choice names.
    pub fn dtype(self) -> candle_core::DType {
        match self {
            DtypeArg::F32 => candle_core::DType::F32,
            DtypeArg::F64 => candle_core::DType::F64,
        }
    }
}

/// Arguments of `mapga run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// The output folder (default: `out/<pipeline name>`; with `--sweep`,
    /// `out/sweep/<pipeline name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a pipeline param: `--set sigma_y=0.1`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// The root seed of every random draw: the same file and seed give identical outputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The device to compute on.
    #[arg(long, value_enum, default_value_t)]
    pub device: DeviceArg,
    /// The floating-point type of tensors.
    #[arg(long, value_enum, default_value_t)]
    pub dtype: DtypeArg,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Threads to compute with, 1 to 8 per core [default: all cores, or RAYON_NUM_THREADS when
    /// set].
    ///
    /// Sizes the thread pool of the tensor kernels (rayon's global pool, and candle's matrix
    /// products, which read RAYON_NUM_THREADS).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
    /// Run once per value of a param: `--sweep step=0.05,0.1,0.2`. Several `--sweep`s run
    /// their cartesian product; each point writes into `OUT/cells/<point>/` (OUT defaults to
    /// `out/sweep/<pipeline name>`), then `results.csv`, `summary.md` (also printed) and
    /// `figure.png` go into OUT. Points finished by an earlier sweep of the same program are
    /// reused.
    #[arg(long = "sweep", value_name = "NAME=V1,V2,...")]
    pub sweep: Vec<String>,
    /// What the pipeline may read and write.
    #[command(flatten)]
    pub access: AccessArgs,
}

/// How many threads per core `--threads` may ask for: more only adds contention (and a
/// `--threads 100000` once tried to start 100,000 threads and took the machine down).
const MAX_THREADS_PER_CORE: usize = 8;

/// The most threads `--threads` accepts here: 8 per core this process may use.
fn max_threads() -> usize {
    MAX_THREADS_PER_CORE * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads N`: a whole number from 1 to [`max_threads`].
fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("the number of threads must be at least 1".into()),
        Ok(n) if n > max_threads() => Err(format!(
            "{n} threads is more than this machine can use: at most {} ({MAX_THREADS_PER_CORE} per \
             core, {} cores)",
            max_threads(),
            max_threads() / MAX_THREADS_PER_CORE
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(format!(
            "`{s}` is not a number of threads (a whole number of at least 1)"
        )),
    }
}

/// The thread count `mapga` computes with when `--threads` is not given: RAYON_NUM_THREADS
/// when it is set to a number of at least 1, else every core this process may use.
pub fn default_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Makes every tensor kernel of this process use `n` threads (at least 1): builds rayon's
/// global pool with `n` threads (the custom kernels of `crate::kernels` and candle's matrix
/// products) and sets RAYON_NUM_THREADS, which candle reads to split its matrix products.
/// Candle's separate pool for elementwise ops (CANDLE_NUM_THREADS) is kept at one thread
/// unless the environment says otherwise: its threads spin between ops and fight the rayon
/// workers, which measured 2-3x slower on a batch-16 U-Net VJP on 2 cores. Call it once,
/// early, before any tensor work and before other threads exist (it changes the environment).
/// A second call with the same `n` is accepted; with another `n` it is an error.
pub fn set_threads(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("the number of threads must be at least 1".into());
    }
    let value = n.to_string();
    std::env::set_var("RAYON_NUM_THREADS", &value);
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        // rayon says which failure it was only in words. Asking an existing pool its size is
        // safe; asking after a failed start would try to start the default pool and panic.
        Err(e) if e.to_string().contains("already been initialized") => {
            if rayon::current_num_threads() == n {
                Ok(())
            } else {
                Err(format!(
                    "cannot use {n} threads: the thread pool already has {} ({e})",
                    rayon::current_num_threads()
                ))
            }
        }
        Err(e) => Err(format!(
            "cannot start {n} threads: {e} (the system refused; try fewer with --threads)"
        )),
    }
}

/// Output formats of `mapga graph`.
#[derive(Debug, Clone, Copy, ValueEnum, Default)]
pub enum GraphFormat {
    /// Rust Object Notation, through serde: every node, type and span.
    #[default]
    Ron,
    /// Graphviz DOT: `mapga graph p.mapga --format dot | dot -Tsvg > p.svg`.
    Dot,
}

/// Arguments of `mapga graph`.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// The output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: GraphFormat,
    /// Override a pipeline param: `--set sigma_y=0.1`.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// What the pipeline may read.
    #[command(flatten)]
    pub access: AccessArgs,
}

/// Arguments of `mapga fmt`.
#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// The files to format.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Do not write; list the files that are not formatted and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,
}

/// Arguments of `mapga doc`.
#[derive(Debug, clap::Args)]
pub struct DocArgs {
    /// The item or module to show; omit it to list everything.
    pub name: Option<String>,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let code = match cli.command {
        Command::Run(a) => match set_threads(a.threads.unwrap_or_else(default_threads)) {
            Ok(()) => run::run(&a),
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        Command::Watch(a) => match set_threads(a.run.threads.unwrap_or_else(default_threads)) {
            Ok(()) => watch::run(&a),
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        Command::Check(a) => check::run(&a),
        Command::Graph(a) => graph::run(&a),
        Command::Fmt(a) => fmt::run(&a),
        Command::Doc(a) => doc::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Inspect(a) => inspect::run(&a),
    };
    ExitCode::from(code)
}

/// Parses `--set NAME=VALUE` arguments.
pub(crate) fn parse_sets(sets: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for s in sets {
        let (k, v) = param_assignment("--set", s, "NAME=VALUE", "sigma_y=0.1")?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Splits the argument `text` of `flag` (`--set`, `--sweep`) at its first `=` into a param
/// name (trimmed, letters, digits and `_`) and the rest; the errors show the `form` and an
/// `example`.
pub(crate) fn param_assignment<'a>(
    flag: &str,
    text: &'a str,
    form: &str,
    example: &str,
) -> Result<(&'a str, &'a str), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "`{flag} {text}`: expected {form}, e.g. `{flag} {example}`"
        ));
    };
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("`{flag} {text}`: `{name}` is not a param name"));
    }
    Ok((name, value))
}

/// The `--set` overrides of a command on one pipeline file, or the exit code 2 after saying
/// why they (or the file) cannot be used.
pub(crate) fn overrides_for(
    file: &std::path::Path,
    sets: &[String],
) -> Result<BTreeMap<String, String>, u8> {
    let overrides = parse_sets(sets).map_err(|e| {
        eprintln!("error: {e}");
        2
    })?;
    match std::fs::metadata(file) {
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", file.display());
            return Err(2);
        }
        Ok(m) if m.is_dir() => {
            eprintln!(
                "error: `{}` is a folder; give a pipeline file (`.mapga`)",
                file.display()
            );
            return Err(2);
        }
        Ok(_) => {}
    }
    Ok(overrides)
}

/// Prints diagnostics to standard error.
pub(crate) fn print_diags(diags: &[Diag], sources: &SourceMap, format: MessageFormat) {
    let stderr = std::io::stderr();
    let text = match format {
        MessageFormat::Short => render_plain(diags, sources),
        MessageFormat::Human => {
            let color = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
            render(diags, sources, RenderOptions { color, width: 100 })
        }
    };
    eprint!("{text}");
}
