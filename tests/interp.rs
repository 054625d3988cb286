//! The interpreter on small programs whose answers are known: control flow, autodiff
//! (`grad`, `vjp`, `stop_grad`), optimizers, schedules and operator algebra.

mod common;

use candle_core::DType;
use common::{report, run_ok, temp_dir};

/// Runs `source` in f64 and returns its reports.
fn reports(name: &str, source: &str) -> mapga::runtime::RunSummary {
    let dir = temp_dir(name);
    let s = run_ok(&dir, source, DType::F64, 0);
    let _ = std::fs::remove_dir_all(dir);
    s
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn control_flow_and_values() {
    let s = reports(
        "flow",
        r#"
fn collatz_steps(n: Float) -> Int {
    var k = n
    var steps = 0
    repeat 200 {
        if k != 1.0 {
            k = if k % 2.0 == 0.0 { k / 2.0 } else { 3.0 * k + 1.0 }
            steps += 1
        }
    }
    steps
}

fn sum_pairs() -> Float {
    var total = 0.0
    for (a, b) in [(1.0, 2.0), (3.0, 4.0)] {
        total += a * b
    }
    total
}

let ts = schedule([4.0, 2.0, 1.0])
let xs = [10, 20, 30]
report collatz_steps(27.0) as "collatz",
    sum_pairs() as "pairs",
    ts.first + ts.last + ts.len as "ends",
    ts.pairs.len as "npairs",
    xs[2] as "last",
    karras(sigma_min: 0.002, sigma_max: 80.0, steps: 3).sigmas[0] as "kmax",
    2 ^ 10 as "pow",
    -3.5 as "neg"
"#,
    );
    assert_eq!(report(&s, "collatz"), 111.0);
    assert_eq!(report(&s, "pairs"), 14.0);
    assert_eq!(report(&s, "ends"), 8.0);
    assert_eq!(report(&s, "npairs"), 2.0);
    assert_eq!(report(&s, "last"), 30.0);
    assert!(close(report(&s, "kmax"), 80.0, 1e-12));
    assert_eq!(report(&s, "pow"), 1024.0);
    assert_eq!(report(&s, "neg"), -3.5);
}

#[test]
fn autodiff_primitives() {
    let s = reports(
        "autodiff",
        r#"
fn brighten(x: Tensor) -> Tensor {
    0.5 * x + 0.5
}

/// Gradients of known functions at x.
fn grads(x: Tensor) -> (Tensor, Tensor, Tensor, Tensor) {
    let g = grad(0.5 * norm(x)^2, wrt: x)
    let v = vjp(brighten, x, ones_like(x))
    let fixed = grad(dot(stop_grad(x * 3.0), x), wrt: x)
    var acc = 0.0
    for c in [1.0, 2.0, 3.0] {
        acc = acc + c * sum(x)
    }
    (g, v, fixed, grad(acc, wrt: x))
}

let x = tensor([1.0, -2.0, 0.5, 4.0], shape(1, 2, 2))
let (g, v, frozen, looped) = grads(x)
report norm(g - x) as "grad of half norm squared",
    norm(v - 0.5 * ones_like(x)) as "vjp",
    norm(frozen - 3.0 * x) as "stop_grad",
    norm(looped - 6.0 * ones_like(x)) as "through a loop",
    sum(x) as "sum"
"#,
    );
    for label in [
        "grad of half norm squared",
        "vjp",
        "stop_grad",
        "through a loop",
    ] {
        assert!(report(&s, label) < 1e-12, "{label}: {}", report(&s, label));
    }
    assert_eq!(report(&s, "sum"), 3.5);
}

#[test]
fn optimizers_reach_the_minimum_of_a_quadratic() {
    let s = reports(
        "optim",
        r#"
/// Minimises |x - c|^2 / 2 from 0 with the given optimizer.
fn fit(opt: Optimizer, iters: Int) -> Tensor {
    let c = tensor([1.0, -2.0, 3.0], shape(3))
    var x = zeros(shape(3))
    descend x with opt for iters steps {
        minimize 0.5 * norm(x - c)^2
    }
    x - c
}

/// Maximises -|x|^2 from ones: ascend goes uphill.
fn climb() -> Tensor {
    var x = ones(shape(2))
    ascend x with sgd(lr: 0.25) for 60 steps {
        maximize -norm(x)^2
    }
    x
}

/// `for n steps as k` counts the steps: each step moves x onto k exactly (sgd on (x - k)^2 with
/// lr 0.5), so after steps 0, 1, 2 x is 2.
fn counted() -> Tensor {
    var x = zeros(shape(1))
    descend x with sgd(lr: 0.5) for 3 steps as k {
        minimize sum((x - k)^2)
    }
    x
}

report norm(fit(sgd(lr: 0.5), 60)) as "sgd",
    sum(counted()) as "counted",
    norm(fit(momentum(lr: 0.1, beta: 0.5), 200)) as "momentum",
    norm(fit(adam(lr: 0.05), 2000)) as "adam",
    norm(climb()) as "ascend"
"#,
    );
    assert!(report(&s, "sgd") < 1e-12);
    assert_eq!(report(&s, "counted"), 2.0);
    assert!(report(&s, "momentum") < 1e-10);
    assert!(report(&s, "adam") < 1e-3, "adam: {}", report(&s, "adam"));
    assert!(report(&s, "ascend") < 1e-12);
}

#[test]
fn operators_compose_and_have_adjoints() {
    let s = reports(
        "ops",
        r#"
fn double(x: Tensor) -> Tensor {
    2.0 * x
}

let x = gaussian_like(shape(1, 8, 8), seed: 1)
let u = gaussian_like(shape(1, 4, 4), seed: 2)
let B = gaussian_blur(1.0) >> downsample(2)
let S = 2.0 * identity() - identity()
let U = operator(double, domain: shape(1, 8, 8))
report dot(B(x), u) - dot(x, B.adjoint(u)) as "adjoint",
    norm(S(x) - x) as "algebra",
    norm(U(x) - 2.0 * x) as "user operator",
    norm(downsample(2)(downsample(2).pinv(u)) - u) as "pinv"
"#,
    );
    for label in ["adjoint", "algebra", "user operator", "pinv"] {
        assert!(
            report(&s, label).abs() < 1e-10,
            "{label}: {}",
            report(&s, label)
        );
    }
}

#[test]
fn gaussian_prior_model_calls() {
    let s = reports(
        "prior",
        r#"
/// f(x, sigma_min) = x for a consistency function.
fn at_min(cm: Consistency, x: Tensor) -> Tensor {
    cm(x, 0.002)
}

let mean = tensor([0.5, -0.5], shape(1, 1, 2))
model prior = gaussian_prior(mean, tensor([0.25, 1.0], shape(1, 1, 2)))
let x = tensor([1.5, 1.5], shape(1, 1, 2))
// D(x, 1) = mean + var / (var + 1) (x - mean) = (0.5 + 0.2, -0.5 + 1.0)
let d = prior(x, 1.0)
report dot(d, tensor([1.0, 0.0], shape(1, 1, 2))) as "d0",
    dot(d, tensor([0.0, 1.0], shape(1, 1, 2))) as "d1",
    norm(at_min(prior, x) - x) as "f at sigma_min",
    norm(score(prior, x, 1.0) - (d - x)) as "score",
    prior.sigma_min as "sigma_min"
"#,
    );
    assert!(close(report(&s, "d0"), 0.7, 1e-12));
    assert!(close(report(&s, "d1"), 0.5, 1e-12));
    assert!(report(&s, "f at sigma_min") < 1e-12);
    assert!(report(&s, "score") < 1e-12);
    assert_eq!(report(&s, "sigma_min"), 0.002);
}

#[test]
fn samplers_draw_from_a_gaussian_prior() {
    // 64 x 64 independent pixels with mean 0.1 and variance 0.04: each sample image is 4096
    // draws, so its pixel mean and variance estimate the prior's (standard errors 0.003 and
    // 0.0009). The prior's consistency function is exact; Heun with 40 levels nearly so.
    let s = reports(
        "samplers",
        r#"
use std.solvers.cm_sampling
use std.solvers.edm_sample

model prior = gaussian_prior(ones(shape(1, 64, 64)) * 0.1, ones(shape(1, 64, 64)) * 0.04)
let a = edm_sample(prior, karras(steps: 40), seed: 3)
let b = cm_sample(prior, schedule([80.0, 0.8, 0.002]), seed: 4)
report mean(a) as "edm mean", mean((a - 0.1)^2) as "edm var",
    mean(b) as "cm mean", mean((b - 0.1)^2) as "cm var"
"#,
    );
    for which in ["edm", "cm"] {
        let (m, v) = (
            report(&s, &format!("{which} mean")),
            report(&s, &format!("{which} var")),
        );
        assert!((m - 0.1).abs() < 0.012, "{which}: mean {m}");
        assert!((v - 0.04).abs() < 0.004, "{which}: variance {v}");
    }
}

#[test]
fn noise_models_have_their_moments() {
    // 64 x 64 pixels at intensity 0.5 (x = 0): Poisson counts with rate 200 per unit intensity
    // have mean 100 and variance 100, so y = 2 counts / rate - 1 has mean 0 and variance
    // 4 * 100 / 200^2 = 0.01; Gaussian noise adds variance sigma^2.
    let s = reports(
        "noise",
        r#"
let x = zeros(shape(1, 64, 64))
let p = poisson_noise(200.0, seed: 3)(x)
let g = x + gaussian_noise(0.2, seed: 4)
report mean(p) as "poisson mean", mean(p * p) as "poisson var",
    mean(g) as "gauss mean", mean(g * g) as "gauss var"
"#,
    );
    assert!(report(&s, "poisson mean").abs() < 0.01);
    assert!((report(&s, "poisson var") - 0.01).abs() < 0.001);
    assert!(report(&s, "gauss mean").abs() < 0.01);
    assert!((report(&s, "gauss var") - 0.04).abs() < 0.003);
}

#[test]
fn priors_from_safetensors_and_low_rank_covariances() {
    let dir = temp_dir("safetensors");
    let dev = candle_core::Device::Cpu;
    let mean = candle_core::Tensor::new(&[[[0.1f64, -0.2, 0.3]]], &dev).unwrap();
    let factors = candle_core::Tensor::new(&[[0.5f64], [0.2], [-0.1]], &dev).unwrap();
    let var = candle_core::Tensor::new(&[[[0.1f64, 0.2, 0.3]]], &dev).unwrap();
    let tensors = std::collections::HashMap::from([
        ("mean".to_string(), mean),
        ("factors".to_string(), factors),
        ("var".to_string(), var),
    ]);
    candle_core::safetensors::save(&tensors, dir.join("prior.safetensors")).unwrap();
    // The same covariance written out in full: F F^T + diag(var).
    let source = r#"
let mean = load_tensor("prior.safetensors", "mean")
model low = gaussian_prior_low_rank(mean, load_tensor("prior.safetensors", "factors"),
    load_tensor("prior.safetensors", "var"))
model full = gaussian_prior(mean, tensor([0.35, 0.1, -0.05, 0.1, 0.24, -0.02, -0.05, -0.02, 0.31],
    shape(3, 3)))
let x = tensor([1.0, 0.5, -0.5], shape(1, 1, 3))
report norm(low(x, 0.4) - full(x, 0.4)) as "same denoiser"
"#;
    let s = run_ok(&dir, source, DType::F64, 0);
    assert!(report(&s, "same denoiser") < 1e-12);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn captioned_grids_and_16_bit_pngs() {
    let dir = temp_dir("captions");
    let source = r#"
let a = ones(shape(1, 16, 40)) * 0.5
let b = zeros(shape(3, 12, 30))
let g = captioned_grid(["left", "right"], a, b)
save g to "grid.png"
save a to "deep.16.png"
report g.channels as "c", g.height as "h", g.width as "w"
"#;
    let s = run_ok(&dir, source, DType::F32, 0);
    // Colour because one image is; the tallest image plus the caption band; widths plus a gap.
    assert_eq!(report(&s, "c"), 3.0);
    assert_eq!(
        report(&s, "h"),
        16.0 + mapga::io::grid::CAPTION_HEIGHT as f64
    );
    assert_eq!(report(&s, "w"), 40.0 + 30.0 + mapga::io::grid::GAP as f64);
    let deep = image::open(dir.join("out/deep.16.png")).unwrap();
    assert_eq!(deep.color(), image::ColorType::L16);
    let grid = image::open(dir.join("out/grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (72, 28));
    let _ = std::fs::remove_dir_all(dir);
}

/// The failure of a program that must fail in its optimizer: the message and the help.
fn numeric_failure(name: &str, source: &str) -> (String, String) {
    let dir = temp_dir(name);
    let failure = common::run_in(&dir, source, DType::F64, 0).unwrap_err();
    let _ = std::fs::remove_dir_all(dir);
    assert_eq!(failure.error.code, mapga::diagnostics::Code::RunNumeric);
    (
        failure.error.message,
        failure.error.help.unwrap_or_default(),
    )
}

#[test]
fn a_nan_in_an_optimizer_is_blamed_on_its_real_cause() {
    // NaN at the starting point: not the step size.
    let (msg, help) = numeric_failure(
        "nan-start",
        r#"
fn f() -> Tensor {
var x = zeros(shape(2))
descend x with sgd(lr: 0.1) for 5 steps {
    minimize sum(log(x))
}
x
}
report sum(f()) as "x"
"#,
    );
    assert!(msg.contains("at the starting point"), "{msg}");
    assert!(help.contains("learning rate is not the cause"), "{help}");
    // Finite objective, NaN gradient (sqrt at 0 has no derivative): not the step size.
    let (msg, help) = numeric_failure(
        "nan-gradient",
        r#"
fn f() -> Tensor {
var x = zeros(shape(2))
descend x with sgd(lr: 0.1) for 5 steps {
    minimize sum(sqrt(x))
}
x
}
report sum(f()) as "x"
"#,
    );
    assert!(msg.contains("gradient is NaN or infinite"), "{msg}");
    assert!(help.contains("learning rate is not the cause"), "{help}");
    // A quadratic with a step far too large: the step size.
    let (msg, help) = numeric_failure(
        "nan-step",
        r#"
fn f() -> Tensor {
var x = ones(shape(2))
descend x with sgd(lr: 1e30) for 50 steps {
    minimize sum(x^2)
}
x
}
report sum(f()) as "x"
"#,
    );
    assert!(msg.contains("became"), "{msg}");
    assert!(help.contains("step is too large"), "{help}");
}
