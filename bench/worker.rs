//! The mapga side of `bench/compare_pytorch.py`: a long-running process that loads networks
//! once and times what it is told, so the timings exclude process start and model loading and
//! the script can alternate mapga and PyTorch repetition by repetition.
//!
//!     cargo build --release --example bench_worker
//!     target/release/examples/bench_worker [--threads N]
//!
//! One command per line on standard input, one JSON object per line on standard output
//! (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`); times are in milliseconds.
//!
//! | command                                  | does                                              |
//! |------------------------------------------|---------------------------------------------------|
//! | `threads`                                | the thread counts in use                          |
//! | `load NAME PATH`                         | loads the network `PATH` (safetensors + card)     |
//! | `loadckpt NAME PATH LABEL`               | loads the checkpoint `PATH` of any format as a consistency model (`Network::load_as`, the card inferred when there is none), with the class label LABEL (`-`: none): `load_ms` (the `load_as` call alone), `labels_ms`, `rss_kb` after |
//! | `values CM BATCH`                        | the problem's `z` and `v`, `f = cm(z, t)` and the VJP `g`, flattened (to compare with PyTorch on the same inputs) |
//! | `time OP CM DEN BATCH REPS WARMUP`       | OP = fwd, vjp or iter (see `bench/problem.rs`); DEN may be `-` for fwd and vjp; `ms` of each rep, `median_ms` |
//! | `gemm N REPS`                            | an N x N x N f32 matmul: `ms` of each rep, `median_ms` |
//! | `mem CM BATCH`                           | peak RSS of one VJP over the RSS before it (`delta_kb`); run it first in a fresh worker |
//! | `growth CM DEN BATCH ITERS`              | ITERS MAP-GA steps: `rss_kb` after each step      |
//! | `loop CM DEN BATCH N`                    | N MAP-GA steps in a hand-written loop: `seconds`  |
//! | `pipeline PATH OUT [NAME=VALUE ...]`     | checks and runs the pipeline in this process as `mapga run --quiet --set NAME=VALUE ... --out OUT PATH` does: `run_seconds` (as in run.ron) |
//! | `rss`                                    | current and peak RSS (kB)                         |
//! | `quit`                                   | exits                                             |
//!
//! Problems (inputs) are built once per (CM, DEN, BATCH) and kept.

#[path = "problem.rs"]
mod problem;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mapga::check::{check_file, CheckOptions};
use mapga::diffusion::Model;
use mapga::models::card::ModelKind;
use mapga::models::Network;
use mapga::runtime::{self, Env, RunOptions};
use problem::{Error, Problem};
use serde_json::{json, Value};

struct Worker {
    models: HashMap<String, Model>,
    problems: HashMap<(String, String, usize), Problem>,
}

/// `VmRSS` and `VmHWM` (peak) of this process, in kB, from `/proc/self/status`.
fn rss_kb() -> Result<(u64, u64), Error> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64, Error> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no {name} in /proc/self/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("bad status line")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the peak RSS (`VmHWM`) to the current RSS; false where the kernel does not allow it.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn arg<'a>(words: &[&'a str], i: usize) -> Result<&'a str, Error> {
    words
        .get(i)
        .copied()
        .ok_or_else(|| format!("missing argument {i}").into())
}

fn num(words: &[&str], i: usize) -> Result<usize, Error> {
    Ok(arg(words, i)?.parse()?)
}

/// Milliseconds of each of `reps` runs of `f` after `warmup` untimed runs.
fn time(
    warmup: usize,
    reps: usize,
    mut f: impl FnMut() -> Result<(), Error>,
) -> Result<Value, Error> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(json!({"ok": true, "median_ms": median(&ms), "ms": ms}))
}

impl Worker {
    fn model(&self, name: &str) -> Result<Model, Error> {
        self.models
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no model `{name}` loaded").into())
    }

    fn problem(&mut self, cm: &str, den: &str, batch: usize) -> Result<&Problem, Error> {
        let key = (cm.to_string(), den.to_string(), batch);
        if !self.problems.contains_key(&key) {
            let den_model = if den == "-" {
                None
            } else {
                Some(self.model(den)?)
            };
            let p = Problem::new(self.model(cm)?, den_model, batch)?;
            self.problems.insert(key.clone(), p);
        }
        Ok(&self.problems[&key])
    }

    fn command(&mut self, words: &[&str]) -> Result<Value, Error> {
        match arg(words, 0)? {
            "threads" => Ok(json!({
                "ok": true,
                "rayon": rayon::current_num_threads(),
                "candle": candle_core::utils::get_num_threads(),
            })),
            "load" => {
                let (name, path) = (arg(words, 1)?, arg(words, 2)?);
                let model = problem::load(Path::new(path))?;
                self.models.insert(name.to_string(), model);
                Ok(json!({"ok": true}))
            }
            "loadckpt" => {
                let (name, path, label) = (arg(words, 1)?, arg(words, 2)?, arg(words, 3)?);
                let start = Instant::now();
                let net = Network::load_as(
                    Path::new(path),
                    Some(ModelKind::Consistency),
                    DType::F32,
                    &Device::Cpu,
                )?;
                let load_ms = start.elapsed().as_secs_f64() * 1e3;
                let start = Instant::now();
                let net = if label == "-" {
                    net
                } else {
                    net.with_labels(&[label.parse()?])?
                };
                let labels_ms = start.elapsed().as_secs_f64() * 1e3;
                self.models
                    .insert(name.to_string(), Model::Network(std::sync::Arc::new(net)));
                Ok(json!({
                    "ok": true,
                    "load_ms": load_ms,
                    "labels_ms": labels_ms,
                    "rss_kb": rss_kb()?.0,
                }))
            }
            "values" => {
                let (cm, batch) = (arg(words, 1)?, num(words, 2)?);
                let p = self.problem(cm, "-", batch)?;
                let flat = |t: &Tensor| -> Result<Vec<f32>, Error> {
                    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
                };
                Ok(json!({
                    "ok": true,
                    "shape": p.z.dims(),
                    "z": flat(&p.z)?,
                    "v": flat(&p.v)?,
                    "f": flat(&p.forward()?)?,
                    "g": flat(&p.vjp()?)?,
                }))
            }
            "time" => {
                let (op, cm, den) = (arg(words, 1)?, arg(words, 2)?, arg(words, 3)?);
                let (batch, reps, warmup) = (num(words, 4)?, num(words, 5)?, num(words, 6)?);
                let p = self.problem(cm, den, batch)?;
                match op {
                    "fwd" => time(warmup, reps, || p.forward().map(drop)),
                    "vjp" => time(warmup, reps, || p.vjp().map(drop)),
                    "iter" => time(warmup, reps, || p.iteration().map(drop)),
                    other => Err(format!("unknown operation `{other}`").into()),
                }
            }
            "gemm" => {
                let (n, reps) = (num(words, 1)?, num(words, 2)?);
                let a = problem::normal(&[n, n], 10)?;
                let b = problem::normal(&[n, n], 11)?;
                time(1, reps, || a.matmul(&b).map(drop).map_err(Error::from))
            }
            "mem" => {
                let (cm, batch) = (arg(words, 1)?, num(words, 2)?);
                self.problem(cm, "-", batch)?;
                let reset = reset_peak();
                let (before, peak_before) = rss_kb()?;
                let key = (cm.to_string(), "-".to_string(), batch);
                let g = self.problems[&key].vjp()?;
                let (_, peak) = rss_kb()?;
                drop(g);
                let baseline = if reset { before } else { peak_before };
                Ok(json!({
                    "ok": true,
                    "baseline_kb": baseline,
                    "peak_kb": peak,
                    "delta_kb": peak.saturating_sub(baseline),
                    "method": if reset { "VmHWM after clear_refs" } else { "VmHWM (no reset)" },
                }))
            }
            "growth" => {
                let (cm, den) = (arg(words, 1)?, arg(words, 2)?);
                let (batch, iters) = (num(words, 3)?, num(words, 4)?);
                let p = self.problem(cm, den, batch)?;
                let mut state = Problem::optimizer();
                let mut z = p.z.clone();
                let mut rss = Vec::with_capacity(iters);
                let start = Instant::now();
                for _ in 0..iters {
                    z = p.step(&z, &mut state)?;
                    rss.push(rss_kb()?.0);
                }
                let finite = z
                    .to_dtype(DType::F64)?
                    .flatten_all()?
                    .to_vec1::<f64>()?
                    .iter()
                    .all(|v| v.is_finite());
                Ok(json!({
                    "ok": true,
                    "rss_kb": rss,
                    "seconds": start.elapsed().as_secs_f64(),
                    "finite": finite,
                }))
            }
            "loop" => {
                let (cm, den) = (arg(words, 1)?, arg(words, 2)?);
                let (batch, n) = (num(words, 3)?, num(words, 4)?);
                let p = self.problem(cm, den, batch)?;
                let start = Instant::now();
                let z = p.ascend(n)?;
                // Wait for the result (the CPU backend is synchronous; this is cheap).
                let _: Tensor = z.sum_all()?;
                Ok(json!({"ok": true, "seconds": start.elapsed().as_secs_f64()}))
            }
            "pipeline" => {
                let (path, out) = (Path::new(arg(words, 1)?), arg(words, 2)?);
                let mut overrides = std::collections::BTreeMap::new();
                for set in &words[3..] {
                    let (name, value) = set
                        .split_once('=')
                        .ok_or_else(|| format!("`{set}` is not NAME=VALUE"))?;
                    overrides.insert(name.to_string(), value.to_string());
                }
                pipeline_seconds(path, out, overrides)
            }
            "rss" => {
                let (rss, peak) = rss_kb()?;
                Ok(json!({"ok": true, "rss_kb": rss, "peak_kb": peak}))
            }
            other => Err(format!("unknown command `{other}`").into()),
        }
    }
}

/// What `mapga run --quiet` does after parsing its arguments (check, then run with the quiet
/// progress observer, on the CPU in f32 with seed 0), in this process: `run_seconds`, the time
/// `run.ron` records (the run without the check).
fn pipeline_seconds(
    path: &Path,
    out: &str,
    overrides: std::collections::BTreeMap<String, String>,
) -> Result<Value, Error> {
    let start = Instant::now();
    let checked = check_file(
        path,
        &CheckOptions {
            overrides,
            ..Default::default()
        },
    );
    if checked.diags.has_errors() {
        return Err(format!("{} does not check", path.display()).into());
    }
    let opts = RunOptions {
        out_dir: out.into(),
        env: Env {
            device: Device::Cpu,
            dtype: DType::F32,
            seed: 0,
        },
        observer: Some(std::sync::Arc::new(mapga::cli::Progress::hidden())),
        check_seconds: start.elapsed().as_secs_f64(),
    };
    let summary = runtime::run(&checked, path, &opts)
        .map_err(|f| format!("the run failed: {}", f.error.to_diag().message))?;
    Ok(json!({"ok": true, "run_seconds": summary.seconds}))
}

fn main() {
    // The allocator settings of the `mapga` binary, so both time the same allocations.
    mapga::cli::process::tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let threads = match args.as_slice() {
        [] => mapga::cli::default_threads(),
        [flag, n] if flag == "--threads" => match n.parse() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("error: --threads takes a whole number, not `{n}`");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("usage: bench_worker [--threads N]");
            std::process::exit(2);
        }
    };
    if let Err(e) = mapga::cli::set_threads(threads) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let mut worker = Worker {
        models: HashMap::new(),
        problems: HashMap::new(),
    };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        if words[0] == "quit" {
            break;
        }
        let reply = worker
            .command(&words)
            .unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()}));
        if writeln!(stdout, "{reply}")
            .and_then(|_| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}
