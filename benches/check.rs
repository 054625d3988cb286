//! Front-end speed on a realistic 2,000-line pipeline.
//!
//! The program is generated here (deterministically): about 150 functions with typed
//! parameters, loops, `ascend`/`descend` blocks, `if` expressions, `let`s and `var`s, calls to
//! built-ins and to each other; then top-level params, a model, operators and tensors built from
//! `data/mnist/test/7.png`, a call of every function, saves and reports. It is written to a
//! temporary file, checked once (the bench fails unless there are zero errors), and then
//! measured three ways: `check_file` (the whole front end: read, parse, check, lower),
//! `parse` alone, and `format_source` (parse + print).
//!
//!     cargo bench --bench check
//!
//! Set `MAPGA_BENCH_KEEP=path.mapga` to also copy the generated program there.
//!
//! A second group, `check_scaling`, checks generated programs of 16,000 and 64,000 top-level
//! statements (params, functions with a branch a param rules out, chains of `let`s, unused
//! `let`s that each get a warning, tensors, reports) and renders their diagnostics, as
//! `mapga check` does. The time must grow with the size of the file, not its square: the
//! 64,000-statement program should take about 4 times as long as the 16,000 one (criterion's
//! throughput line shows statements per second, which should stay about the same).
//!
//!     cargo bench --bench check -- check_scaling

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mapga::check::{check_file, CheckOptions};
use mapga::diagnostics::{render, RenderOptions};
use mapga::source::FileId;
use mapga::syntax::format::format_source;
use mapga::syntax::parse;

/// Functions of each kind: scalar helpers `s`, loops `l`, solvers `g`, descents `d`, metrics
/// `m`; 150 in all.
const N_S: usize = 40;
const N_L: usize = 30;
const N_G: usize = 20;
const N_D: usize = 30;
const N_M: usize = 30;

/// Calls of the functions at the top level (each followed by a `report`).
const N_CALLS: usize = 24;

/// Lines of the generated program (at least).
const TARGET_LINES: usize = 2_000;

struct Gen {
    out: String,
    data: PathBuf,
}

impl Gen {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn blank(&mut self) {
        self.out.push('\n');
    }

    /// `s{i}`: scalar arithmetic, an `if` expression, and a call of the previous `s`.
    fn scalar_fn(&mut self, i: usize) {
        let k = i + 1;
        self.line(&format!(
            "/// Scalar helper {i}: a smooth step with a bias of {k}."
        ));
        self.line(&format!(
            "fn s{i}(a: Float, b: Float = 1.0, scale: Float = 0.{k}) -> Float {{"
        ));
        self.line(&format!("    let c = a * b + {k}.0 * scale"));
        self.line(
            "    let d = if c > 1.0 { c - 1.0 } else if c < -1.0 { c + 1.0 } else { c * 0.5 }",
        );
        self.line(&format!("    let e = sqrt(abs(d) + 0.{k}) * exp(-abs(b))"));
        if i == 0 {
            self.line("    e + max(a, b) - min(a, b)");
        } else {
            let j = i - 1;
            self.line(&format!(
                "    e + s{j}(d, b: b * 0.5) - min(a, b) / (1.0 + b^2)"
            ));
        }
        self.line("}");
        self.blank();
    }

    /// `l{i}`: loops over lists and counts, with `var`s carried through them.
    fn loop_fn(&mut self, i: usize) {
        self.line(&format!(
            "/// Loop helper {i}: blends `x` with a running average."
        ));
        self.line(&format!(
            "fn l{i}(x: Tensor[C, H, W], n: Int = 3, w: Float = 0.5) -> Tensor[C, H, W] {{"
        ));
        self.line("    var acc = zeros_like(x)");
        self.line("    var count = 0");
        self.line(&format!("    for t in [0.1, 0.2, 0.{}] {{", i % 9 + 1));
        self.line("        acc += t * x");
        self.line("        count += 1");
        self.line("    }");
        self.line("    repeat n {");
        self.line("        acc = clip(w * acc + (1.0 - w) * x)");
        self.line("    }");
        if i == 0 {
            self.line("    acc / (count + 1.0)");
        } else {
            self.line(&format!(
                "    l{}(acc / (count + 1.0), n: 1, w: if count > 2 {{ s{}(w) }} else {{ w }})",
                i - 1,
                i % N_S
            ));
        }
        self.line("}");
        self.blank();
    }

    /// `g{i}`: a MAP-GA style solver: a schedule loop with an `ascend` block and re-noising.
    fn solver_fn(&mut self, i: usize) {
        self.line(&format!(
            "/// Solver {i}: gradient ascent on the posterior at each level."
        ));
        self.line(&format!("fn g{i}("));
        self.line("    y: Tensor[C, H, W],");
        self.line("    A: Operator[svd],");
        self.line("    prior: Denoiser,");
        self.line("    ts: Schedule,");
        self.line("    sigma_y: Float,");
        self.line("    iters: Int = 2,");
        self.line(&format!("    seed: Int = {i},"));
        self.line(") -> Tensor[C, H, W] {");
        self.line("    let eps = 0.002");
        self.line("    var x = A.pinv(y)");
        self.line("    for (t, t_next) in ts.pairs {");
        self.line("        ascend x with sgd(lr: sigma_y^2 + eps^2) for iters steps {");
        self.line(
            "            maximize log_likelihood(y, A, x, sigma_y, eps) + if t > 1.0 { log_prior(prior, x, eps) } else { 0.0 }",
        );
        self.line("        }");
        self.line("        x = renoise(x, from: eps, to: t_next, seed: seed)");
        self.line("    }");
        self.line(&format!("    l{}(x, n: 1)", i % N_L));
        self.line("}");
        self.blank();
    }

    /// `d{i}`: a `descend` block with Adam towards a target, and a gradient by hand.
    fn descent_fn(&mut self, i: usize) {
        self.line(&format!(
            "/// Descent {i}: the nearest point to a target under an operator."
        ));
        self.line(&format!(
            "fn d{i}(target: Tensor[C, H, W], A: Operator, iters: Int = 4) -> Tensor[C, H, W] {{"
        ));
        self.line("    var x = zeros_like(target)");
        self.line(&format!(
            "    descend x with adam(lr: 0.0{}) for iters steps {{",
            i % 9 + 1
        ));
        self.line("        let r = A(x) - A(target)");
        self.line("        minimize 0.5 * dot(r, r) + 0.01 * norm(x)^2");
        self.line("    }");
        self.line("    let g = grad(0.5 * norm(A(x))^2, wrt: x)");
        self.line("    let step = if norm(g) > 1.0 { 0.1 } else { 0.01 }");
        if i == 0 {
            self.line("    x - step * g");
        } else {
            self.line(&format!("    d{}(x - step * g, A, iters: 1)", i - 1));
        }
        self.line("}");
        self.blank();
    }

    /// `m{i}`: metrics and shapes, with a tuple binding.
    fn metric_fn(&mut self, i: usize) {
        self.line(&format!(
            "/// Metric {i}: a weighted mix of PSNR, SSIM and MSE."
        ));
        self.line(&format!(
            "fn m{i}(x: Tensor[C, H, W], reference: Tensor[C, H, W], weights: (Float, Float) = (1.0, 0.{})) -> Float {{",
            i % 9 + 1
        ));
        self.line("    let (wp, ws) = weights");
        self.line("    let sizes = [x.channels, x.height, x.width]");
        self.line("    let pixels = sizes[0] * sizes[1] * sizes[2]");
        self.line("    let quality = wp * psnr(x, reference) + ws * ssim(x, reference)");
        self.line("    let error = mse(x, reference) * pixels");
        self.line(&format!(
            "    quality - s{}(error, scale: 0.5) + mean(x - reference) * sum(x) / pixels",
            i % N_S
        ));
        self.line("}");
        self.blank();
    }

    fn program(&mut self) {
        self.line(
            "//! A generated pipeline for benchmarking the front end: many functions, loops,",
        );
        self.line("//! optimization blocks and calls, on an MNIST digit.");
        self.blank();
        for i in 0..N_S {
            self.scalar_fn(i);
        }
        for i in 0..N_L {
            self.loop_fn(i);
        }
        for i in 0..N_G {
            self.solver_fn(i);
        }
        for i in 0..N_D {
            self.descent_fn(i);
        }
        for i in 0..N_M {
            self.metric_fn(i);
        }
        let data = self.data.display().to_string();
        self.line("param sigma_y = 0.05");
        self.line("param steps = 4");
        self.line("param iters = 2");
        self.line("param seed = 0");
        self.blank();
        self.line("model prior = gaussian_prior(");
        self.line(&format!("    load_npy(\"{data}/mnist/prior/mean.npy\"),"));
        self.line(&format!("    load_npy(\"{data}/mnist/prior/var.npy\"),"));
        self.line(")");
        self.blank();
        self.line(&format!("let x_true = image(\"{data}/mnist/test/7.png\")"));
        self.line("let ts = karras(sigma_min: 0.002, sigma_max: 80.0, steps: steps + 1, rho: 7.0)");
        self.line("let noise = gaussian_noise(sigma_y, seed: 1)");
        let ops = [
            "inpaint(box_mask(28, 28, top: 10, left: 6, height: 8, width: 16))",
            "inpaint(half_mask(28, 28))",
            "inpaint(random_mask(28, 28, keep: 0.5, seed: 2))",
            "gaussian_blur(1.0)",
            "uniform_blur(3)",
            "inpaint(box_mask(28, 28, top: 2, left: 2, height: 10, width: 10))",
        ];
        for (k, op) in ops.iter().enumerate() {
            self.line(&format!("let A{k} = {op}"));
            self.line(&format!("let y{k} = A{k}(x_true) + noise"));
        }
        self.line("let composed = gaussian_blur(0.5) >> A0");
        self.line("let x_pinv = A0.pinv(y0)");
        self.line("let start = gaussian_like(shape(1, 28, 28), seed: seed) * 0.1 + x_pinv");
        self.blank();
        // Every function is used: the last of each chain calls all the others of its kind (and
        // some of the other kinds); the calls below also call functions in the middle.
        let mut results = Vec::new();
        for k in 0..N_CALLS {
            let o = k % ops.len();
            let name = format!("x_{k}");
            match k % 4 {
                0 => self.line(&format!(
                    "let {name} = g{}(y{o}, A{o}, prior, ts, sigma_y, iters: iters, seed: seed + {k})",
                    N_G - 1 - (k * 3) % N_G
                )),
                1 => self.line(&format!(
                    "let {name} = d{}(x_pinv, A{o}, iters: iters)",
                    N_D - 1 - (k * 5) % N_D
                )),
                2 => self.line(&format!(
                    "let {name} = l{}(start, n: {})",
                    N_L - 1 - (k * 7) % N_L,
                    k % 3 + 1
                )),
                _ => self.line(&format!(
                    "let {name} = if s{}(sigma_y) > 0.5 {{ l{}(y{o}) }} else {{ d{}(y{o}, composed) }}",
                    N_S - 1 - k % N_S,
                    N_L - 1 - k % N_L,
                    N_D - 1 - k % N_D
                )),
            }
            results.push(name);
        }
        self.blank();
        for (n, r) in results.iter().enumerate().step_by(4) {
            self.line(&format!("save {r} to \"out_{n}.png\""));
        }
        self.line(&format!(
            "save grid(x_true, A0.visualize(y0), {}) to \"grid.png\"",
            results[..4].join(", ")
        ));
        self.blank();
        self.line(&format!(
            "report g{}(y0, A0, prior, ts, sigma_y).width, l{}(x_true).height, d{}(x_pinv, A1).channels",
            N_G - 1,
            N_L - 1,
            N_D - 1
        ));
        for (n, r) in results.iter().enumerate() {
            self.line(&format!(
                "report psnr({r}, x_true) as \"PSNR {r}\", m{}({r}, x_true) as \"metric {r}\"",
                N_M - 1 - n % N_M
            ));
        }
    }
}

/// Generates the program, formatted canonically.
fn generate() -> String {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let mut g = Gen {
        out: String::new(),
        data,
    };
    g.program();
    // The shipped style: run it through the formatter (it is what a user would commit).
    match format_source(FileId(0), &g.out) {
        Ok(s) => s,
        Err(d) => panic!(
            "the generated program does not parse: {:?}\n{}",
            d.0.first().map(|d| &d.message),
            g.out
        ),
    }
}

fn write_program(dir: &Path) -> (PathBuf, String) {
    let text = generate();
    let path = dir.join("bench_2000_lines.mapga");
    std::fs::write(&path, &text).expect("write the generated program");
    if let Ok(keep) = std::env::var("MAPGA_BENCH_KEEP") {
        std::fs::write(&keep, &text).expect("copy the generated program");
    }
    (path, text)
}

fn bench_front_end(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let (path, text) = write_program(dir.path());
    let lines = text.lines().count();
    let fns = text.lines().filter(|l| l.starts_with("fn ")).count();
    assert!(
        (TARGET_LINES..TARGET_LINES + 200).contains(&lines),
        "{lines} lines generated, expected about {TARGET_LINES}"
    );

    // Verify once: zero errors (warnings are reported but allowed).
    let checked = check_file(&path, &CheckOptions::default());
    if checked.diags.has_errors() {
        let shown: Vec<_> = checked.diags.0.iter().take(10).cloned().collect();
        panic!(
            "the generated program has {} errors:\n{}",
            checked.diags.error_count(),
            render(&shown, &checked.sources, RenderOptions::default())
        );
    }
    eprintln!(
        "generated {lines} lines, {fns} functions, {} bytes: 0 errors, {} warnings, {} graph nodes",
        text.len(),
        checked.diags.warning_count(),
        checked.graph.nodes.len(),
    );

    let mut group = c.benchmark_group("front_end_2000_lines");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("check_file", |b| {
        b.iter(|| check_file(black_box(&path), &CheckOptions::default()))
    });
    group.bench_function("parse", |b| b.iter(|| parse(FileId(0), black_box(&text))));
    group.bench_function("format_source", |b| {
        b.iter(|| format_source(FileId(0), black_box(&text)))
    });
    group.finish();
}

/// A program of `n` top-level statements, without errors, in a repeating pattern of eight: a
/// param, a function whose `if` a param rules out, three links of a chain of `let`s, an unused
/// `let` (a warning), a tensor and a report.
fn scaling_program(n: usize) -> String {
    let mut out = String::from("param p_0 = 0.5\nlet x_0 = 1.0\n");
    let mut last = 0;
    for i in 1..n {
        let line = match i % 8 {
            0 => format!("param p_{i} = {}.5", i % 7),
            1 => {
                let p = i - 1;
                format!("fn f_{i}(a: Float) -> Float {{\n    if p_{p} > 9.0 {{ a * 2.0 }} else {{ a + 1.0 }}\n}}")
            }
            2 | 3 | 5 => {
                let l = format!("let x_{i} = x_{last} * 0.5 + 1.0");
                last = i;
                l
            }
            4 => {
                let f = i - 3;
                let l = format!("let x_{i} = f_{f}(x_{last})");
                last = i;
                l
            }
            6 => format!("let unused_{i} = x_{last} - 1.0"),
            _ => format!(
                "let t_{i} = zeros(shape(1, 4, 4)) + x_{last}\nreport mean(t_{i}) as \"t{i}\""
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str(&format!("report x_{last} as \"last\"\n"));
    out
}

fn bench_scaling(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut group = c.benchmark_group("check_scaling");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for n in [16_000, 64_000] {
        let text = scaling_program(n);
        let path = dir.path().join(format!("scaling_{n}.mapga"));
        std::fs::write(&path, &text).expect("write the generated program");
        let checked = check_file(&path, &CheckOptions::default());
        assert!(
            !checked.diags.has_errors(),
            "the generated program has errors:\n{}",
            render(
                &checked.diags.0[..checked.diags.0.len().min(5)],
                &checked.sources,
                RenderOptions::default()
            )
        );
        eprintln!(
            "{n} statements, {} lines, {} bytes: {} warnings",
            text.lines().count(),
            text.len(),
            checked.diags.warning_count()
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("check_and_render", n), &path, |b, path| {
            b.iter(|| {
                let checked = check_file(black_box(path), &CheckOptions::default());
                render(&checked.diags.0, &checked.sources, RenderOptions::default()).len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_front_end, bench_scaling);
criterion_main!(benches);
