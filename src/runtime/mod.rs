//! The runtime: executes a checked graph over candle tensors and writes its outputs.
//!
//! [`run`] prepares a [`Program`], runs the top-level region with an [`Interp`], writes each
//! `save` as soon as its value is ready, collects the `report`s, and finishes with
//! `metrics.json` and the `run.ron` manifest. A failure stops the run with a [`RunError`] at
//! the node that failed; whatever was written before stays intact.

pub mod arith;
pub mod builtins;
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

pub use error::RunError;
pub use interp::{Env, Interp, Observer, Program};
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
    /// The reported numbers, in report order.
    pub reports: Vec<(String, f64)>,
    /// The files written (saves, then `metrics.json` and `run.ron`).
    pub written: Vec<PathBuf>,
    /// Seconds spent running.
    pub seconds: f64,
}

/// A run that stopped: the error and what was written before it.
#[derive(Debug)]
pub struct RunFailure {
    /// What went wrong.
    pub error: RunError,
    /// What the run had produced when it stopped.
    pub partial: RunSummary,
}

/// Runs a checked pipeline (`checked` must have no errors) and writes its outputs.
pub fn run(
    checked: &Checked,
    pipeline: &Path,
    opts: &RunOptions,
) -> Result<RunSummary, Box<RunFailure>> {
    crate::stack::with_big_stack(|| run_here(checked, pipeline, opts))
}

fn run_here(
    checked: &Checked,
    pipeline: &Path,
    opts: &RunOptions,
) -> Result<RunSummary, Box<RunFailure>> {
    let start = Instant::now();
    let prog = Arc::new(Program::new(
        checked.graph.clone(),
        checked.sources.clone(),
        opts.env.clone(),
        opts.observer.clone(),
    ));
    let mut interp = Interp::new(prog.clone());
    let mut summary = RunSummary::default();
    let mut pending: Vec<Output> = prog.graph.outputs.clone();
    let text = provenance(checked, pipeline, opts);
    let result = interp.run_main(|it, _node| flush(it, &mut pending, &mut summary, opts, &text));
    summary.seconds = start.elapsed().as_secs_f64();
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
                let target = outputs::output_path(&opts.out_dir, p);
                outputs::save_tensor(&target, x, text)
                    .map_err(|e| RunError::new(Code::RunFile, span, e.to_string()))?;
                summary.written.push(target);
            }
            Output::Report { value, label, span } => {
                let v = it
                    .value(value)
                    .and_then(arith::as_f64)
                    .ok_or_else(|| RunError::at(span, "only numbers can be reported"))?;
                summary.reports.push((label, v));
            }
        }
        i = 0;
    }
    Ok(())
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
    crate::io::atomic::write_bytes(&metrics, outputs::metrics_json(&summary.reports).as_bytes())
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
    };
    let ron = ron::ser::to_string_pretty(&manifest, ron::ser::PrettyConfig::new())
        .map_err(|e| RunError::at(span, format!("cannot write run.ron: {e}")))?;
    let path = opts.out_dir.join("run.ron");
    crate::io::atomic::write_bytes(&path, format!("{ron}\n").as_bytes()).map_err(fail)?;
    summary.written.push(path);
    Ok(())
}
