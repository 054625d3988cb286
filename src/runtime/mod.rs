//! The runtime: executes a checked graph over candle tensors and writes its outputs.
//!
//! [`run`] prepares a [`Program`], runs the top-level region with an [`Interp`], writes each
//! `save` as soon as its value is ready, collects the `report`s, and finishes with
//! `metrics.json` and the `run.ron` manifest. A failure stops the run with a [`RunError`] at
//! the node that failed; whatever was written before stays intact.

pub mod arith;
pub mod builtins;
pub mod cache;
pub mod error;
pub mod interp;
pub mod members;
pub mod optim;
pub mod outputs;
pub mod value;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub use crate::diffusion::nfe::NetworkEvaluations;
pub use cache::{CacheStats, NodeCache};
pub use error::RunError;
pub use interp::{Env, Interp, Observer, Program, CANCELLED};
pub use value::Value;

use crate::check::Checked;
use crate::diagnostics::Code;
use crate::graph::Output;

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Where outputs go (created if missing).
    pub out_dir: PathBuf,
    /// Device, dtype and root seed.
    pub env: Env,
    /// Progress reporting.
    pub observer: Option<Arc<dyn Observer>>,
    /// Seconds spent checking, for the manifest.
    pub check_seconds: f64,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The reported numbers, in report order: a number as is, a per-item report (`Tensor[N]`)
    /// as the mean of its values (all of them are in [`RunSummary::values`]).
    pub reports: Vec<(String, f64)>,
    /// The reports in report order, each a number or the list of a per-item report.
    pub values: Vec<(String, ReportValue)>,
    /// The files written (saves, then `metrics.json` and `run.ron`).
    pub written: Vec<PathBuf>,
    /// Seconds spent running.
    pub seconds: f64,
    /// The denoiser and consistency-model evaluations the run made.
    pub network_evaluations: NetworkEvaluations,
    /// What came from the node cache and what was computed (empty without a cache).
    pub cache: CacheStats,
}

impl RunSummary {
    /// The per-item reports, in report order, with their values.
    pub fn per_item(&self) -> Vec<(String, Vec<f64>)> {
        self.values
            .iter()
            .filter_map(|(l, v)| match v {
                ReportValue::Items(xs) => Some((l.clone(), xs.clone())),
                ReportValue::Number(_) => None,
            })
            .collect()
    }
}

/// A reported value: a number, or one number per item of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportValue {
    /// `report mean(psnr(x, y))`.
    Number(f64),
    /// `report psnr(x, y)` of two batches: one value per item.
    Items(Vec<f64>),
}

/// The mean, the standard error of the mean (sample standard deviation / sqrt(n), 0 for one
/// value) and the count of per-item values.
pub fn mean_and_error(xs: &[f64]) -> (f64, f64, usize) {
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, 0);
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 || !mean.is_finite() {
        return (mean, if n == 1 { 0.0 } else { f64::NAN }, n);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt(), n)
}

/// A run that stopped: the error and what was written before it.
#[derive(Debug)]
pub struct RunFailure {
    /// What went wrong.
    pub error: RunError,
    /// What the run had produced when it stopped.
    pub partial: RunSummary,
}

/// A mean and its standard error at the precision the error supports: two significant digits
/// of the error, the mean to the same decimal place (`20.65`, `0.31`).
pub fn mean_pm(mean: f64, se: f64) -> (String, String) {
    if !mean.is_finite() {
        return (mean.to_string(), se.to_string());
    }
    let decimals = if se > 0.0 && se.is_finite() {
        (1 - se.log10().floor() as i64).clamp(0, 12) as usize
    } else {
        2
    };
    (format!("{mean:.decimals$}"), format!("{se:.decimals$}"))
}

/// Runs a checked pipeline (`checked` must have no errors) and writes its outputs.
pub fn run(
    checked: &Checked,
    pipeline: &Path,
    opts: &RunOptions,
) -> Result<RunSummary, Box<RunFailure>> {
    crate::stack::with_big_stack(|| run_here(checked, pipeline, opts, None))
}

/// Like [`run`], serving unchanged top-level nodes from `cache` and storing what this run
/// computes there (see [`cache`]). Hold one [`NodeCache`] across the runs of a front end.
///
/// A run whose observer says it was cancelled ([`Observer::cancelled`]) stops with the error
/// [`CANCELLED`] and writes neither `metrics.json` nor `run.ron`.
pub fn run_cached(
    checked: &Checked,
    pipeline: &Path,
    opts: &RunOptions,
    cache: &NodeCache,
) -> Result<RunSummary, Box<RunFailure>> {
    crate::stack::with_big_stack(|| run_here(checked, pipeline, opts, Some(cache)))
}

fn run_here(
    checked: &Checked,
    pipeline: &Path,
    opts: &RunOptions,
    cache: Option<&NodeCache>,
) -> Result<RunSummary, Box<RunFailure>> {
    let start = Instant::now();
    let prog = Arc::new(
        Program::new(
            checked.graph.clone(),
            checked.sources.clone(),
            opts.env.clone(),
            opts.observer.clone(),
        )
        .with_permissions(checked.permissions.clone()),
    );
    let mut interp = Interp::new(prog.clone());
    let mut summary = RunSummary::default();
    let mut pending: Vec<Output> = prog.graph.outputs.clone();
    let text = provenance(checked, pipeline, opts);
    crate::diffusion::nfe::reset();
    let session = cache.map(|c| c.begin(&prog));
    let result = interp.run_main_served(
        |it, n| session.as_ref().and_then(|s| s.serve(it, n)),
        |it, n| {
            if let Some(s) = &session {
                s.record(it, n);
            }
            flush(
                it,
                &mut pending,
                &mut summary,
                opts,
                &text,
                &prog.permissions,
            )
        },
    );
    if let Some(s) = session {
        summary.cache = s.finish(result.is_ok());
    }
    summary.network_evaluations = crate::diffusion::nfe::take();
    summary.seconds = start.elapsed().as_secs_f64();
    // A cancelled run leaves the records of the last finished run in place.
    if let Err(error) = &result {
        if opts.observer.as_ref().is_some_and(|o| o.cancelled()) {
            return Err(Box::new(RunFailure {
                error: error.clone(),
                partial: summary,
            }));
        }
    }
    let status = match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {} (at {})", e.message, prog.location(e.span)),
    };
    let finish = write_records(checked, pipeline, opts, &mut summary, &status);
    match (result, finish) {
        (Err(error), _) | (Ok(()), Err(error)) => Err(Box::new(RunFailure {
            error,
            partial: summary,
        })),
        (Ok(()), Ok(())) => Ok(summary),
    }
}

/// Text chunks stored in every PNG: the pipeline's source and the run's seed.
fn provenance(checked: &Checked, pipeline: &Path, opts: &RunOptions) -> Vec<(String, String)> {
    let source = checked
        .sources
        .find(&crate::source::Origin::Path(pipeline.to_path_buf()))
        .map(|id| checked.sources.get(id).text.to_string())
        .unwrap_or_default();
    vec![
        (
            "Software".into(),
            format!("mapga {}", env!("CARGO_PKG_VERSION")),
        ),
        ("mapga:pipeline".into(), pipeline.display().to_string()),
        ("mapga:seed".into(), opts.env.seed.to_string()),
        ("mapga:source".into(), source),
    ]
}

/// Writes every save and collects every report whose values are ready.
fn flush(
    it: &Interp,
    pending: &mut Vec<Output>,
    summary: &mut RunSummary,
    opts: &RunOptions,
    text: &[(String, String)],
    permissions: &crate::io::permissions::Permissions,
) -> Result<(), RunError> {
    let mut i = 0;
    while i < pending.len() {
        let ready = match &pending[i] {
            Output::Save { value, path, .. } => {
                it.value(*value).is_some() && it.value(*path).is_some()
            }
            Output::Report { value, .. } => it.value(*value).is_some(),
        };
        // Outputs keep their source order: stop at the first that is not ready.
        if !ready {
            break;
        }
        match pending.remove(i) {
            Output::Save { value, path, span } => {
                let (Some(Value::Tensor(x)), Some(Value::Str(p))) =
                    (it.value(value), it.value(path))
                else {
                    return Err(RunError::at(
                        span,
                        "only tensors can be saved, to a String path",
                    ));
                };
                let mut target = outputs::output_path(&opts.out_dir, p);
                // The run's own folder (a staging folder inside the output folder) is always
                // writable. A path that leaves it is taken from the output folder itself, as
                // the checker took it (`../x.npy` is beside the output folder, not in it), and
                // needs the permissions.
                if !lexically_inside(&target, &opts.out_dir) {
                    if let (Some(out), false) =
                        (permissions.output(), Path::new(&**p).is_absolute())
                    {
                        target = out.join(&**p);
                    }
                    permissions
                        .check_write(&target)
                        .map_err(|d| denied(span, &d))?;
                }
                outputs::save_tensor(&target, x, text)
                    .map_err(|e| RunError::new(Code::RunFile, span, e.to_string()))?;
                summary.written.push(target);
            }
            Output::Report { value, label, span } => match it.value(value) {
                Some(Value::Tensor(t)) => {
                    let xs = per_item_values(t).ok_or_else(|| {
                        RunError::at(
                            span,
                            format!(
                                "only numbers, or one number per item (a Tensor[N]), can be reported, not a tensor of shape {:?}",
                                t.dims()
                            ),
                        )
                    })?;
                    if xs.is_empty() {
                        return Err(RunError::at(
                            span,
                            format!(
                                "`{label}` has no values to report: the batch is empty (its mean \
                                 would be NaN)"
                            ),
                        )
                        .with_help("check the slice or the array that makes the batch"));
                    }
                    let (mean, _, _) = mean_and_error(&xs);
                    summary.reports.push((label.clone(), mean));
                    summary.values.push((label, ReportValue::Items(xs)));
                }
                v => {
                    let v = v
                        .and_then(arith::as_f64)
                        .ok_or_else(|| RunError::at(span, "only numbers can be reported"))?;
                    summary.reports.push((label.clone(), v));
                    summary.values.push((label, ReportValue::Number(v)));
                }
            },
        }
        i = 0;
    }
    Ok(())
}

/// The values of a `[N]` tensor, as reported per item.
/// The run-time error of an access the permissions refuse, with the flag that allows it.
pub(crate) fn denied(span: crate::source::Span, d: &crate::io::permissions::Denied) -> RunError {
    RunError::new(Code::Permission, span, d.to_string()).with_help(format!(
        "if you trust this pipeline, run it with `{}`",
        d.flag()
    ))
}

/// Whether `path` is inside `dir`, comparing their components after removing `.` and `..`
/// (no link is followed: the run's own output folder is trusted).
fn lexically_inside(path: &Path, dir: &Path) -> bool {
    fn clean(p: &Path) -> Vec<std::path::Component<'_>> {
        let mut out = Vec::new();
        for c in p.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    if out.pop().is_none() {
                        out.push(c);
                    }
                }
                other => out.push(other),
            }
        }
        out
    }
    clean(path).starts_with(&clean(dir))
}

fn per_item_values(t: &candle_core::Tensor) -> Option<Vec<f64>> {
    if t.rank() != 1 {
        return None;
    }
    t.to_dtype(candle_core::DType::F64)
        .and_then(|t| t.to_vec1::<f64>())
        .ok()
}

/// Writes `metrics.json` and `run.ron`.
fn write_records(
    checked: &Checked,
    pipeline: &Path,
    opts: &RunOptions,
    summary: &mut RunSummary,
    status: &str,
) -> Result<(), RunError> {
    let span = crate::source::Span::new(crate::source::FileId(0), 0, 0);
    let fail = |e: crate::io::FileError| RunError::new(Code::RunFile, span, e.to_string());
    let metrics = opts.out_dir.join("metrics.json");
    crate::io::atomic::write_bytes(&metrics, outputs::metrics_json(&summary.values).as_bytes())
        .map_err(fail)?;
    summary.written.push(metrics);
    let rel = |p: &Path| {
        p.strip_prefix(&opts.out_dir)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let mut timings = BTreeMap::new();
    timings.insert("check_seconds".to_string(), opts.check_seconds);
    timings.insert("run_seconds".to_string(), summary.seconds);
    let manifest = outputs::Manifest {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pipeline: pipeline.display().to_string(),
        sources: checked
            .sources
            .files()
            .map(|(_, f)| (f.name.clone(), outputs::sha256_hex(f.text.as_bytes())))
            .collect(),
        inputs: checked
            .dependencies
            .iter()
            .map(|p| (p.display().to_string(), outputs::file_sha256(p)))
            .collect(),
        params: checked
            .graph
            .params
            .iter()
            .map(|p| {
                let v = p
                    .value
                    .as_ref()
                    .map(|c| format!("{:?}", interp::const_value(c)));
                (p.name.clone(), v.unwrap_or_default())
            })
            .collect(),
        seed: opts.env.seed,
        device: format!("{:?}", opts.env.device.location()).to_lowercase(),
        dtype: format!("{:?}", opts.env.dtype).to_lowercase(),
        timings,
        outputs: summary
            .written
            .iter()
            .map(|p| rel(p))
            .chain(["run.ron".to_string()])
            .collect(),
        status: status.to_string(),
        network_evaluations: outputs::Evaluations::of(&summary.network_evaluations),
    };
    let ron = ron::ser::to_string_pretty(&manifest, ron::ser::PrettyConfig::new())
        .map_err(|e| RunError::at(span, format!("cannot write run.ron: {e}")))?;
    let path = opts.out_dir.join("run.ron");
    crate::io::atomic::write_bytes(&path, format!("{ron}\n").as_bytes()).map_err(fail)?;
    summary.written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{mean_and_error, mean_pm};

    #[test]
    fn per_item_statistics() {
        let (m, se, n) = mean_and_error(&[1.0, 2.0, 3.0]);
        assert_eq!((m, n), (2.0, 3));
        assert!((se - 1.0 / 3f64.sqrt()).abs() < 1e-15);
        assert_eq!(mean_and_error(&[5.0]), (5.0, 0.0, 1));
        assert!(mean_and_error(&[]).0.is_nan());
    }

    #[test]
    fn means_keep_two_digits_of_their_error() {
        assert_eq!(mean_pm(20.6543, 0.3123), ("20.65".into(), "0.31".into()));
        assert_eq!(mean_pm(20.6543, 3.123), ("20.7".into(), "3.1".into()));
        assert_eq!(mean_pm(1.0, 0.0), ("1.00".into(), "0.00".into()));
        assert_eq!(mean_pm(f64::INFINITY, 1.0), ("inf".into(), "1".into()));
    }
}
