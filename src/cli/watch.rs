//! `mapga watch`: the authoring loop. Checks and runs a pipeline, then again on every save of
//! the pipeline or of any file it imports or loads.
//!
//! The loop:
//!
//! - The watched files are the pipeline and the dependencies its last check found (imports,
//!   images, masks, kernels, `.npy` arrays, models and their cards); after a failed check, the
//!   files of the last clean check are watched too. The folders holding them are watched, not
//!   the files, so a save that writes a temporary file and renames it over the original (vim,
//!   VS Code, JetBrains) is seen like any other.
//! - File events are debounced: a change is handled once no event came for `--debounce`
//!   milliseconds, and only when the content of a watched file differs from what the last
//!   check saw (a save that writes the same bytes, or a `touch`, does nothing).
//! - On a change the pipeline is checked again at once and its diagnostics printed (on a
//!   terminal, after clearing the screen). An error never ends the watcher, and the outputs of
//!   the last good run stay as they are.
//! - A clean check starts a run in a worker thread with the [`NodeCache`] kept across runs:
//!   top-level nodes whose content and inputs did not change come from the cache (models stay
//!   loaded unless their file changed). A run still going when a newer clean check arrives is
//!   told to stop at its next iteration, and the newest clean version runs once it has stopped;
//!   saves are checked meanwhile, never queued behind a run.
//!
//! Every event prints one status line on standard output starting with `[watch]`; the README
//! documents them and the tests synchronise on them. Diagnostics go to standard error.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};

use super::run::{device, out_dir, print_summary, progress_bar, Progress};
use super::{print_diags, MessageFormat, RunArgs};
use crate::check::{check_file, CheckOptions, Checked};
use crate::io::outdir::{OutputFolder, Staging};
use crate::runtime::{self, Env, NodeCache, Observer, RunFailure, RunOptions, RunSummary};
use crate::source::SourceMap;

/// Arguments of `mapga watch`: those of `mapga run`, and the debounce delay.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The pipeline, outputs, params, seed and device, as for `mapga run`.
    #[command(flatten)]
    pub run: RunArgs,
    /// Milliseconds without file events before a save is handled (editors save in steps).
    #[arg(long, value_name = "MS", default_value_t = 30)]
    pub debounce: u64,
    /// Only check on each save (diagnostics without running).
    #[arg(long)]
    pub check_only: bool,
}

/// What the main loop waits for.
enum Msg {
    /// A file-system event in a watched folder.
    Fs(notify::Result<notify::Event>),
    /// Run `n` ended (its worker is about to return).
    Done(u64),
}

/// The observer of a watched run: the progress bar (on a terminal) and the cancel flag.
struct WatchObserver {
    progress: Option<Progress>,
    cancel: Arc<AtomicBool>,
}

impl Observer for WatchObserver {
    fn loop_step(&self, depth: usize, index: usize, total: usize) {
        if let Some(p) = &self.progress {
            p.loop_step(depth, index, total);
        }
    }

    fn optimize_step(&self, index: usize, total: usize, objective: f64) {
        if let Some(p) = &self.progress {
            p.optimize_step(index, total, objective);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// A run in progress.
struct Running {
    number: u64,
    cancel: Arc<AtomicBool>,
    handle: JoinHandle<Result<RunSummary, Box<RunFailure>>>,
    checked: Arc<Checked>,
    progress: Option<indicatif::ProgressBar>,
}

/// Sends [`Msg::Done`] for a run when dropped, at the end of its worker.
struct DoneOnDrop(Sender<Msg>, u64);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::Done(self.1));
    }
}

/// The watcher's state between events.
struct Watch<'a> {
    args: &'a WatchArgs,
    overrides: BTreeMap<String, String>,
    env: Env,
    /// The output folder, held (locked) while watching; each run stages and publishes in it.
    folder: Arc<OutputFolder>,
    /// The output folder, normalised: changes inside it (the runs' own outputs) are not edits.
    out_dir: PathBuf,
    fs: notify::RecommendedWatcher,
    tx: Sender<Msg>,
    /// Watched folders.
    dirs: BTreeSet<PathBuf>,
    /// Watched files (normalised) and the digest of their content when last handled.
    files: BTreeMap<PathBuf, Option<[u8; 32]>>,
    /// The files of the last clean check.
    last_good: BTreeSet<PathBuf>,
    cache: Arc<NodeCache>,
    runs: u64,
    /// The run in progress.
    current: Option<Running>,
    /// A run told to stop, until its worker returns.
    cancelling: Option<Running>,
    /// The newest clean check (and its seconds), waiting for a cancelled run to stop.
    pending: Option<(Checked, f64)>,
    terminal: bool,
}

/// Runs `mapga watch`; returns only on a setup error (exit code 2).
pub fn run(args: &WatchArgs) -> u8 {
    if !args.run.sweep.is_empty() {
        eprintln!("error: `mapga watch` runs one version of the pipeline: run sweeps with `mapga run --sweep`");
        return 2;
    }
    let overrides = match super::overrides_for(&args.run.file, &args.run.set) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let device = match device(args.run.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let folder = match OutputFolder::open(&out_dir(&args.run)) {
        Ok(f) => Arc::new(f),
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (tx, rx) = mpsc::channel();
    let fs_tx = tx.clone();
    let fs = match notify::recommended_watcher(move |event| {
        let _ = fs_tx.send(Msg::Fs(event));
    }) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot watch files: {e}");
            return 2;
        }
    };
    let mut w = Watch {
        args,
        overrides,
        env: Env {
            device,
            dtype: args.run.dtype.dtype(),
            seed: args.run.seed,
        },
        out_dir: std::fs::canonicalize(folder.dir()).unwrap_or_else(|_| normalise(folder.dir())),
        folder,
        fs,
        tx,
        dirs: BTreeSet::new(),
        files: BTreeMap::new(),
        last_good: BTreeSet::new(),
        cache: Arc::new(NodeCache::new()),
        runs: 0,
        current: None,
        cancelling: None,
        pending: None,
        terminal: std::io::stdout().is_terminal(),
    };
    w.cycle();
    w.event_loop(&rx);
    0
}

impl Watch<'_> {
    /// Handles events until the channel closes (it does not while the watcher lives).
    fn event_loop(&mut self, rx: &Receiver<Msg>) {
        let debounce = Duration::from_millis(self.args.debounce);
        while let Ok(msg) = rx.recv() {
            let mut touched = BTreeSet::new();
            match msg {
                Msg::Done(n) => {
                    self.finished(n);
                    continue;
                }
                Msg::Fs(event) => self.note(event, &mut touched),
            }
            // Wait for quiet: editors save in several steps (write, rename, delete).
            loop {
                match rx.recv_timeout(debounce) {
                    Ok(Msg::Fs(event)) => self.note(event, &mut touched),
                    Ok(Msg::Done(n)) => self.finished(n),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if self.content_changed(&touched) {
                self.cycle();
            } else if !touched.is_empty() {
                status("unchanged (saved with the same content)");
            }
        }
    }

    /// Adds the watched files an event names to `touched`.
    fn note(&mut self, event: notify::Result<notify::Event>, touched: &mut BTreeSet<PathBuf>) {
        match event {
            // Reading a file (as the check and the digests here do) is not a change.
            Ok(event) if event.kind.is_access() => {}
            Ok(event) => {
                for p in event.paths {
                    let p = normalise(&p);
                    // A run's own outputs never trigger a run (a pipeline that loads what it
                    // saves reran forever).
                    if self.files.contains_key(&p) && !p.starts_with(&self.out_dir) {
                        touched.insert(p);
                    }
                }
            }
            Err(e) => status(&format!("file watching reported an error: {e}")),
        }
    }

    /// True when a touched file's content differs from when it was last handled.
    fn content_changed(&mut self, touched: &BTreeSet<PathBuf>) -> bool {
        let mut changed = false;
        for p in touched {
            let now = file_digest(p);
            if let Some(before) = self.files.get_mut(p) {
                if *before != now {
                    *before = now;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Checks the pipeline, updates the watched files, and starts a run when it is clean.
    fn cycle(&mut self) {
        if self.terminal {
            print!("\x1b[2J\x1b[H");
        }
        let start = Instant::now();
        let checked = check_file(
            &self.args.run.file,
            &CheckOptions {
                overrides: self.overrides.clone(),
                permissions: self.args.run.access.permissions(
                    &self.args.run.file,
                    self.folder.dir(),
                    &self.overrides,
                ),
            },
        );
        let ms = start.elapsed().as_secs_f64() * 1e3;
        print_diags(&checked.diags.0, &checked.sources, MessageFormat::Human);
        let errors = checked.diags.error_count();
        let warnings = checked.diags.0.len().saturating_sub(errors);
        let deps: BTreeSet<PathBuf> = std::iter::once(self.args.run.file.clone())
            .chain(checked.dependencies.iter().cloned())
            .map(|p| normalise(&p))
            .collect();
        if errors > 0 {
            status(&format!(
                "check failed in {ms:.0} ms: {} (outputs unchanged)",
                count(errors, "error")
            ));
            let all = deps.union(&self.last_good).cloned().collect();
            self.watch_files(all);
            return;
        }
        status(&format!(
            "check ok in {ms:.0} ms{}",
            if warnings > 0 {
                format!(", {}", count(warnings, "warning"))
            } else {
                String::new()
            }
        ));
        self.last_good = deps.clone();
        self.watch_files(deps);
        if !self.args.check_only {
            self.cancel_current();
            self.pending = Some((checked, ms / 1e3));
            self.start_pending();
        }
    }

    /// Watches exactly `files` (through their folders), printing the count when it changes.
    fn watch_files(&mut self, files: BTreeSet<PathBuf>) {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for d in self.dirs.difference(&dirs) {
            let _ = self.fs.unwatch(d);
        }
        let mut watched = BTreeSet::new();
        for d in &dirs {
            if self.dirs.contains(d) {
                watched.insert(d.clone());
                continue;
            }
            match self.fs.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(d.clone());
                }
                Err(e) => status(&format!("cannot watch {}: {e}", d.display())),
            }
        }
        self.dirs = watched;
        let same =
            files.len() == self.files.len() && files.iter().all(|f| self.files.contains_key(f));
        let old = std::mem::take(&mut self.files);
        for f in files {
            let digest = match old.get(&f) {
                Some(d) => *d,
                None => file_digest(&f),
            };
            self.files.insert(f, digest);
        }
        if !same {
            status(&format!("watching {}", count(self.files.len(), "file")));
        }
    }

    /// Starts a run of a cleanly checked program in a worker thread.
    fn start_run(&mut self, checked: Checked, check_seconds: f64) {
        self.runs += 1;
        let number = self.runs;
        let cancel = Arc::new(AtomicBool::new(false));
        let show_progress = !self.args.run.quiet && std::io::stderr().is_terminal();
        let staging = match self.folder.stage() {
            Ok(s) => s,
            Err(e) => return status(&format!("run {number} could not start: {e}")),
        };
        let bar = show_progress.then(|| progress_bar(false));
        let opts = RunOptions {
            out_dir: staging.path().to_path_buf(),
            env: self.env.clone(),
            observer: Some(Arc::new(WatchObserver {
                progress: bar.clone().map(|bar| Progress { bar }),
                cancel: cancel.clone(),
            })),
            check_seconds,
        };
        let checked = Arc::new(checked);
        let (file, cache, tx, work, folder, stop) = (
            self.args.run.file.clone(),
            self.cache.clone(),
            self.tx.clone(),
            checked.clone(),
            self.folder.clone(),
            cancel.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("mapga-watch-run-{number}"))
            .spawn(move || {
                // Says the run ended when the worker returns, even by a panic.
                let _done = DoneOnDrop(tx, number);
                let result = runtime::run_cached(&work, &file, &opts, &cache);
                settle(&folder, staging, result, &stop)
            });
        match spawned {
            Ok(handle) => {
                status(&format!("run {number} started"));
                self.current = Some(Running {
                    number,
                    cancel,
                    handle,
                    checked,
                    progress: bar,
                });
            }
            Err(e) => status(&format!("run {number} could not start: {e}")),
        }
    }

    /// Tells the run in progress, if any, to stop at its next iteration. The main loop does
    /// not wait for it (saves are still checked meanwhile): the next run starts once it has
    /// stopped.
    fn cancel_current(&mut self) {
        if let Some(running) = self.current.take() {
            running.cancel.store(true, Ordering::Relaxed);
            self.cancelling = Some(running);
        }
    }

    /// Starts the newest clean check's run, unless a cancelled run has not stopped yet.
    fn start_pending(&mut self) {
        if self.cancelling.is_none() && self.current.is_none() {
            if let Some((checked, check_seconds)) = self.pending.take() {
                self.start_run(checked, check_seconds);
            }
        }
    }

    /// Run `n` says it ended: reports it, and starts the run waiting for it to stop.
    fn finished(&mut self, n: u64) {
        if self.current.as_ref().is_some_and(|r| r.number == n) {
            if let Some(running) = self.current.take() {
                self.report(running, false);
            }
        } else if self.cancelling.as_ref().is_some_and(|r| r.number == n) {
            if let Some(running) = self.cancelling.take() {
                self.report(running, true);
            }
            self.start_pending();
        }
    }

    /// Waits for a run and prints its status line (and its reports or its error).
    fn report(&self, running: Running, cancelled: bool) {
        let Running {
            number,
            handle,
            checked,
            progress,
            ..
        } = running;
        let result = handle.join();
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        match result {
            Ok(Ok(summary)) => {
                print_summary(&summary.values);
                let c = &summary.cache;
                status(&format!(
                    "run {number} ok in {:.2} s: {} recomputed, {} from cache (saved {:.2} s; models: {} cached, {} loaded)",
                    summary.seconds,
                    count(c.recomputed, "node"),
                    c.from_cache,
                    c.saved_seconds,
                    c.models_cached,
                    c.models_loaded
                ));
                status(&format!(
                    "recomputed: {}",
                    locations(&c.recomputed_at, &checked.sources)
                ));
            }
            Ok(Err(_)) if cancelled => status(&format!("run {number} cancelled (newer save)")),
            Ok(Err(failure)) => {
                print_diags(
                    &[failure.error.to_diag()],
                    &checked.sources,
                    MessageFormat::Human,
                );
                status(&format!(
                    "run {number} failed after {:.2} s: {} (outputs of the last good run kept; this run's are in failed-run/)",
                    failure.partial.seconds, failure.error.message
                ));
            }
            Err(_) => status(&format!("run {number} failed: the run panicked")),
        }
    }
}

/// Publishes a finished run's outputs, keeps a failed run's apart (`failed-run/`), or drops
/// those of a run cancelled by a newer save. A run whose outputs cannot be published fails.
fn settle(
    folder: &OutputFolder,
    staging: Staging,
    result: Result<RunSummary, Box<RunFailure>>,
    cancelled: &AtomicBool,
) -> Result<RunSummary, Box<RunFailure>> {
    match result {
        Ok(mut summary) => match folder.publish(staging, &summary.written) {
            Ok(published) => {
                summary.written = published;
                Ok(summary)
            }
            Err(e) => {
                let span = crate::source::Span::new(crate::source::FileId(0), 0, 0);
                Err(Box::new(RunFailure {
                    error: runtime::RunError::new(
                        crate::diagnostics::Code::RunFile,
                        span,
                        e.to_string(),
                    ),
                    partial: summary,
                }))
            }
        },
        Err(failure) if cancelled.load(Ordering::Relaxed) => {
            folder.discard(staging);
            Err(failure)
        }
        Err(failure) => {
            let _ = folder.keep_failed(staging, &failure.error.message);
            Err(failure)
        }
    }
}

/// Prints one `[watch]` status line and flushes it (tests read it through a pipe).
fn status(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[watch] {line}");
    let _ = out.flush();
}

/// `1 error`, `2 errors`.
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The lines of recomputed nodes, as `file:line` (each line once, at most 12), or `nothing`.
fn locations(spans: &[crate::source::Span], sources: &SourceMap) -> String {
    let mut seen = Vec::new();
    for s in spans {
        let f = sources.get(s.file);
        let (line, _) = f.line_col(s.start as usize);
        let at = format!("{}:{line}", f.name);
        if !seen.contains(&at) {
            seen.push(at);
        }
    }
    if seen.is_empty() {
        return "nothing".into();
    }
    let more = seen.len().saturating_sub(12);
    seen.truncate(12);
    let mut text = seen.join(" ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// A path as the watcher compares it: absolute, with its folder resolved (links, `..`), so the
/// paths in file events (folder as watched + name) match. A folder that does not exist is
/// kept as written, made absolute.
fn normalise(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(absolute.clone()),
        _ => absolute,
    }
}

/// The SHA-256 of a file's content, or `None` when it cannot be read (deleted, a folder).
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}
