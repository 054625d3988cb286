//! `mapga run`: check a pipeline, run it, write its outputs, print its reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{print_diags, DeviceArg, MessageFormat, RunArgs};
use crate::check::{check_file, CheckOptions};
use crate::diagnostics::render_plain;
use crate::io::outdir::OutputFolder;
use crate::runtime::{self, Env, Observer, ReportValue, RunOptions};

/// A progress bar over the outermost loop, with the innermost optimization step and its
/// objective as the message.
pub struct Progress {
    pub(super) bar: ProgressBar,
}

impl Progress {
    /// The observer of `mapga run --quiet`: it formats every message, draws nothing. The
    /// interpreter-tax benchmark runs pipelines in-process with it, to pay what `mapga run` pays.
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }
}

impl Observer for Progress {
    fn loop_step(&self, depth: usize, index: usize, total: usize) {
        if depth == 0 {
            self.bar.set_length(total as u64);
            self.bar.set_position(index as u64);
        }
    }

    fn optimize_step(&self, index: usize, total: usize, objective: f64) {
        self.bar.set_message(format!(
            "iteration {}/{total}, objective {objective:.6e}",
            index + 1
        ));
    }

    /// A run stops at SIGINT or SIGTERM ([`super::signals`]).
    fn cancelled(&self) -> bool {
        super::signals::received().is_some()
    }
}

/// The device to run on.
pub(super) fn device(arg: DeviceArg) -> Result<Device, String> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => cuda(),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<Device, String> {
    Device::new_cuda(0).map_err(|e| format!("cannot use the CUDA device: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<Device, String> {
    Err("this mapga was built without CUDA support: rebuild with `cargo build --release --features cuda`".into())
}

/// Runs the pipeline; returns the exit code.
pub fn run(args: &RunArgs) -> u8 {
    if !args.sweep.is_empty() {
        return super::sweep::run(args);
    }
    let overrides = match super::overrides_for(&args.file, &args.set) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let device = match device(args.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let start = Instant::now();
    let out_dir = out_dir(args);
    let permissions = args.access.permissions(&args.file, &out_dir, &overrides);
    let checked = check_file(
        &args.file,
        &CheckOptions {
            overrides,
            permissions,
        },
    );
    print_diags(&checked.diags.0, &checked.sources, MessageFormat::Human);
    if checked.diags.has_errors() {
        eprintln!(
            "{} error{}: not running",
            checked.diags.error_count(),
            if checked.diags.error_count() == 1 {
                ""
            } else {
                "s"
            }
        );
        return 1;
    }
    let folder = match OutputFolder::open(&out_dir) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let staging = match folder.stage() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    super::signals::install();
    let bar = progress_bar(args.quiet);
    let opts = RunOptions {
        out_dir: staging.path().to_path_buf(),
        env: Env {
            device,
            dtype: args.dtype.dtype(),
            seed: args.seed,
        },
        observer: Some(Arc::new(Progress { bar: bar.clone() })),
        check_seconds: start.elapsed().as_secs_f64(),
    };
    let result = runtime::run(&checked, &args.file, &opts);
    bar.finish_and_clear();
    match result {
        Ok(summary) => match folder.publish(staging, &summary.written) {
            Ok(published) => {
                print_summary(&summary.values);
                eprintln!(
                    "wrote {} file{} to {} in {:.2} s",
                    published.len(),
                    if published.len() == 1 { "" } else { "s" },
                    out_dir.display(),
                    summary.seconds
                );
                0
            }
            Err(e) => {
                print_summary(&summary.values);
                eprintln!("error: the run finished but its outputs could not be published: {e}");
                2
            }
        },
        Err(failure) => {
            let signal = super::signals::received();
            let why = match signal {
                Some(s) => format!("interrupted by {}", super::signals::describe(s).0),
                None => {
                    print_diags(
                        &[failure.error.to_diag()],
                        &checked.sources,
                        MessageFormat::Human,
                    );
                    render_plain(&[failure.error.to_diag()], &checked.sources)
                }
            };
            if !failure.partial.values.is_empty() {
                print_summary(&failure.partial.values);
            }
            let n = failure.partial.written.len();
            match folder.keep_failed(staging, &why) {
                Ok(kept) => eprintln!(
                    "the run stopped ({}); the results in {} are those of the last run that \
                     finished, untouched; the {n} file{} this run wrote before it stopped are in {}",
                    why.lines().next().unwrap_or_default(),
                    out_dir.display(),
                    if n == 1 { "" } else { "s" },
                    kept.display()
                ),
                Err(e) => eprintln!("error: {e}"),
            }
            match signal {
                Some(s) => super::signals::describe(s).1,
                None => 1,
            }
        }
    }
}

/// The output folder: `--out`, or `out/<pipeline name>`.
pub(super) fn out_dir(args: &RunArgs) -> PathBuf {
    args.out
        .clone()
        .unwrap_or_else(|| super::default_out(&args.file))
}

/// The progress bar of a run on standard error, hidden with `--quiet`.
pub(super) fn progress_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Prints the reports as a two-column table on standard output: numbers as they are, per-item
/// reports as `mean ± standard error (n = N)`.
pub(super) fn print_summary(reports: &[(String, ReportValue)]) {
    let width = reports
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for (label, value) in reports {
        let shown = match value {
            ReportValue::Number(v) => format_number(*v),
            ReportValue::Items(xs) => format_items(xs),
        };
        println!("{label:<width$}  {shown}");
    }
}

/// Per-item values as `mean ± standard error (n = N)`; one value as `mean (n = 1)`.
pub(crate) fn format_items(xs: &[f64]) -> String {
    let (mean, se, n) = runtime::mean_and_error(xs);
    if n <= 1 || !se.is_finite() {
        return format!("{} (n = {n})", format_number(mean));
    }
    let (m, e) = runtime::mean_pm(mean, se);
    format!("{m} ± {e} (n = {n})")
}

/// A number with six significant digits, in scientific notation when very small or large.
fn format_number(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if (1e-3..1e6).contains(&v.abs()) {
        let digits = (5 - v.abs().log10().floor() as i32).clamp(0, 9) as usize;
        format!("{v:.digits$}")
    } else if v.is_finite() {
        format!("{v:.5e}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{format_items, format_number};

    #[test]
    fn per_item_reports_show_mean_and_standard_error() {
        assert_eq!(format_items(&[1.0, 2.0, 3.0]), "2.00 ± 0.58 (n = 3)");
        assert_eq!(format_items(&[4.0]), "4.00000 (n = 1)");
        assert_eq!(format_items(&[1.0, f64::INFINITY]), "inf (n = 2)");
    }

    #[test]
    fn numbers_keep_six_significant_digits() {
        assert_eq!(format_number(31.234567), "31.2346");
        assert_eq!(format_number(0.000012345), "1.23450e-5");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(f64::INFINITY), "inf");
    }
}
