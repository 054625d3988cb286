//! Running a suite: every cell of this shard in turn, then the tables of every finished cell.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::cells::{Cell, CheckedSuite};
use super::shard::Shard;
use super::store::{self, CellRecord};
use super::{figure, table};
use crate::diagnostics::render_plain;
use crate::runtime::{self, Env, NodeCache, Observer, RunOptions};

/// How to evaluate a suite.
#[derive(Clone)]
pub struct EvalOptions {
    /// The output folder: `cells/`, `results.csv`, `summary.md`, `figure.png`.
    pub out_dir: PathBuf,
    /// Run only this shard's cells (all cells when `None`).
    pub shard: Option<Shard>,
    /// Device, dtype and root seed of every cell.
    pub env: Env,
    /// Items per cell in the figure.
    pub figure_items: usize,
    /// Hears of the loop steps of the cell that is running (progress bars).
    pub observer: Option<Arc<dyn Observer>>,
    /// The title of `summary.md` (default: ``Evaluation of `FILE` ``).
    pub title: Option<String>,
    /// Shares the values of unchanged graph nodes (models, data, measurements) between the
    /// cells, which are then computed once ([`runtime::run_cached`]); `None` runs every cell
    /// from scratch.
    pub cache: Option<Arc<NodeCache>>,
}

/// What happened to one cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It starts running now (announced before it runs; one of the others follows).
    Running,
    /// It ran to the end in this many seconds.
    Ran(f64),
    /// It was finished already, by the same program: not run again.
    Reused,
    /// Its run stopped with this error (recorded; the evaluation went on).
    Failed(String),
    /// The evaluation was interrupted (SIGINT, SIGTERM) while it ran: nothing is recorded,
    /// so the next run of the suite runs it again, and no later cell starts.
    Interrupted,
}

/// Progress: the cell at `position` (from 1) of `total` in this run starts or ends.
#[derive(Debug)]
pub struct Progress<'a> {
    /// Which cell of this run, from 1.
    pub position: usize,
    /// How many cells this run (shard) has.
    pub total: usize,
    /// The cell.
    pub cell: &'a Cell,
    /// What happened.
    pub outcome: &'a Outcome,
}

/// What an evaluation did.
#[derive(Debug, Clone, Default)]
pub struct EvalSummary {
    /// Cells of the suite.
    pub cells: usize,
    /// Cells this run (shard) was given.
    pub mine: usize,
    /// Cells run to the end.
    pub ran: usize,
    /// Cells reused from an earlier run.
    pub reused: usize,
    /// Cells whose run failed.
    pub failed: usize,
    /// Whether the evaluation stopped early, at an interruption (the observer's
    /// [`crate::runtime::Observer::cancelled`]).
    pub interrupted: bool,
    /// Seconds in all.
    pub seconds: f64,
    /// The tables written.
    pub tables: Tables,
}

/// The tables of an evaluation folder.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// The files written.
    pub written: Vec<PathBuf>,
    /// Finished cells in the tables.
    pub finished: usize,
    /// Of those, failed ones.
    pub failed: usize,
    /// Finished cells in the folder left out (another program made them, or they are not
    /// cells of this suite).
    pub stale: usize,
}

/// Runs the cells of `suite` (checked, without errors) that this shard takes, reusing those
/// finished before, and then writes the tables from every finished cell of the suite in the
/// output folder (whichever run or shard made them). `progress` hears of each cell when it
/// starts running ([`Outcome::Running`]) and when it ends (or is reused).
pub fn evaluate(
    file: &Path,
    suite: &CheckedSuite,
    opts: &EvalOptions,
    mut progress: impl FnMut(&Progress<'_>),
) -> Result<EvalSummary, String> {
    let start = Instant::now();
    let dtype = format!("{:?}", opts.env.dtype).to_lowercase();
    let mut memo = HashMap::new();
    let hashes: Vec<String> = suite
        .cells
        .iter()
        .map(|(_, c)| store::cell_hash(c, opts.env.seed, &dtype, &mut memo))
        .collect();
    let mine: Vec<usize> = (0..suite.cells.len())
        .filter(|&i| opts.shard.is_none_or(|s| s.takes(suite.cells[i].0.index)))
        .collect();
    let mut summary = EvalSummary {
        cells: suite.cells.len(),
        mine: mine.len(),
        ..EvalSummary::default()
    };
    let interrupted = || opts.observer.as_ref().is_some_and(|o| o.cancelled());
    for (position, &i) in mine.iter().enumerate() {
        if interrupted() {
            summary.interrupted = true;
            break;
        }
        let (cell, checked) = &suite.cells[i];
        let hash = &hashes[i];
        let dir = store::cell_dir(&opts.out_dir, &cell.id());
        let outcome = match store::read_record(&dir) {
            Some(r) if r.ok() && &r.hash == hash => Outcome::Reused,
            _ => {
                progress(&Progress {
                    position: position + 1,
                    total: mine.len(),
                    cell,
                    outcome: &Outcome::Running,
                });
                run_cell(file, cell, checked, hash, &dir, opts)?
            }
        };
        match &outcome {
            Outcome::Ran(_) => summary.ran += 1,
            Outcome::Reused => summary.reused += 1,
            Outcome::Failed(_) => summary.failed += 1,
            Outcome::Interrupted => summary.interrupted = true,
            Outcome::Running => {}
        }
        progress(&Progress {
            position: position + 1,
            total: mine.len(),
            cell,
            outcome: &outcome,
        });
    }
    // The tables hold the suite's finished cells, in the suite's order.
    let all = store::finished_cells(&opts.out_dir);
    let mut records = Vec::new();
    for ((cell, _), hash) in suite.cells.iter().zip(&hashes) {
        if let Some(r) = all.iter().find(|r| r.id == cell.id() && &r.hash == hash) {
            records.push(r.clone());
        }
    }
    let title = opts.title.clone().unwrap_or_else(|| {
        format!(
            "Evaluation of `{}`",
            file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        )
    });
    let mut tables = write_tables(
        &opts.out_dir,
        &records,
        &title,
        Some(suite.cells.len()),
        opts.figure_items,
    )?;
    tables.stale = all.len() - records.len();
    summary.tables = tables;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// Runs one cell into its empty folder and records how it ended.
fn run_cell(
    file: &Path,
    cell: &Cell,
    checked: &crate::check::Checked,
    hash: &str,
    dir: &Path,
    opts: &EvalOptions,
) -> Result<Outcome, String> {
    store::clear(dir).map_err(|e| format!("cannot prepare `{}`: {e}", dir.display()))?;
    let run_opts = RunOptions {
        out_dir: dir.to_path_buf(),
        env: opts.env.clone(),
        observer: opts.observer.clone(),
        check_seconds: 0.0,
    };
    let seed = opts.env.seed;
    // A bug that panics fails its cell, not the whole evaluation.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &opts.cache {
        Some(cache) => runtime::run_cached(checked, file, &run_opts, cache),
        None => runtime::run(checked, file, &run_opts),
    }));
    let result = match result {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let message = format!("internal error (please report it): {what}");
            let record = CellRecord::failed(cell, hash, opts.env.seed, 0.0, &message, None);
            store::write_record(dir, &record).map_err(|e| e.to_string())?;
            return Ok(Outcome::Failed(message));
        }
    };
    let (outcome, record) = match result {
        Ok(s) => {
            let values = s.values.clone();
            let record =
                CellRecord::finished(cell, hash, seed, s.seconds, &values, &s.network_evaluations);
            (Outcome::Ran(s.seconds), record)
        }
        Err(_) if opts.observer.as_ref().is_some_and(|o| o.cancelled()) => {
            store::clear(dir).map_err(|e| format!("cannot clear `{}`: {e}", dir.display()))?;
            return Ok(Outcome::Interrupted);
        }
        Err(failure) => {
            let message = failure.error.message.clone();
            let located = render_plain(&[failure.error.to_diag()], &checked.sources);
            let location = located.split(": error").next().map(str::to_string);
            let record = CellRecord::failed(
                cell,
                hash,
                seed,
                failure.partial.seconds,
                &message,
                location,
            );
            (Outcome::Failed(message), record)
        }
    };
    store::write_record(dir, &record).map_err(|e| e.to_string())?;
    Ok(outcome)
}

/// Writes `results.csv`, `summary.md` and (when cells saved restorations) `figure.png` into
/// `out` from `records`, atomically.
pub fn write_tables(
    out: &Path,
    records: &[CellRecord],
    title: &str,
    total: Option<usize>,
    figure_items: usize,
) -> Result<Tables, String> {
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let path = out.join(name);
        crate::io::atomic::write_bytes(&path, text.as_bytes()).map_err(|e| e.to_string())?;
        Ok(path)
    };
    let mut written = vec![
        write("results.csv", table::results_csv(records))?,
        write("summary.md", table::summary_md(records, title, total))?,
    ];
    if let Some(p) = figure::write_figure(out, records, figure_items)? {
        written.push(p);
    }
    Ok(Tables {
        written,
        finished: records.len(),
        failed: records.iter().filter(|r| !r.ok()).count(),
        stale: 0,
    })
}

/// `mapga eval --merge DEST SHARD...`: copies the finished cells of the shard folders into
/// `dest` and writes the tables of every finished cell there.
pub fn merge(
    dest: &Path,
    shards: &[PathBuf],
    figure_items: usize,
) -> Result<(store::Merged, Tables), String> {
    std::fs::create_dir_all(dest.join("cells"))
        .map_err(|e| format!("cannot create `{}`: {e}", dest.display()))?;
    let merged = store::merge(dest, shards)?;
    let records = store::finished_cells(dest);
    let tables = write_tables(dest, &records, "Evaluation", None, figure_items)?;
    Ok((merged, tables))
}
