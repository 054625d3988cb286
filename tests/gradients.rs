//! Finite-difference checks of the gradient of every differentiable built-in, through the
//! interpreter in f64: for a scalar function f of a tensor x and a random direction v,
//! <grad f(x), v> must equal (f(x + h v) - f(x - h v)) / 2h.
//!
//! `grad` and `vjp` themselves are first-order: their results carry no gradient (no second
//! derivatives), so they are checked by value in tests/interp.rs.
//!
//! Each case is a `.mapga` function `f(x: Tensor) -> Float`; the pipeline computes both sides
//! and reports them. Central differences with h = 1e-5 have an error of order h^2 |f'''|, so
//! the tolerance is 1e-6 relative.

mod common;

use candle_core::DType;
use common::{report, run_ok, temp_dir};

/// The functions under test, each a scalar of x ([1, 4, 4], entries in about (-1.5, 1.5)).
const CASES: &[(&str, &str)] = &[
    ("sum", "sum(x * x * x)"),
    ("mean", "mean(exp(x))"),
    ("norm", "norm(x) * norm(x + 1.0)"),
    ("dot", "dot(x, x * 2.0 + 1.0)"),
    ("sqrt", "sum(sqrt(x * x + 1.0))"),
    ("log", "sum(log(x * x + 0.5))"),
    ("abs", "sum(abs(x + 0.05))"),
    ("clip", "sum(clip(x, lo: -0.7, hi: 0.9) * x)"),
    ("min_max", "sum(min(x, 0.3) + max(x, x * 0.5))"),
    ("pow", "sum((x + 3.0)^2.5)"),
    ("prior_denoiser", "sum(prior(x, 0.7) * x)"),
    ("prior_consistency", "sum(f_of(prior, x) * x)"),
    ("mixture_denoiser", "sum(mix(x, 0.5) * x)"),
    ("mixture_consistency", "sum(f_of(mix, x) * x)"),
    ("score", "sum(score(prior, x, 0.3) * x)"),
    ("blur", "norm(gaussian_blur(1.0)(x))^2"),
    (
        "downsample_pinv",
        "sum(downsample(2).adjoint(downsample(2)(x)) * x)",
    ),
    ("user_operator", "sum(U(x) * x)"),
    (
        "nonlinear",
        "sum((gaussian_blur(0.8) >> saturation(1.5))(x))",
    ),
    (
        "log_likelihood_linear",
        "log_likelihood(y, gaussian_blur(1.0), x, 0.1, 0.002)",
    ),
    // A non-linear A is linearised: with eps > 0 the covariance eps^2 J J^T is held fixed at x
    // (MAP-GA's Eq. 17), so only eps = 0 has the exact gradient of the value.
    (
        "log_likelihood_nonlinear",
        "log_likelihood(y, gaussian_blur(1.0) >> saturation(1.5), x, 0.1, 0.0)",
    ),
    ("log_prior", "log_prior(prior, x, 0.05)"),
];

#[test]
fn directional_derivatives_match_central_differences() {
    let mut source = String::from(
        r#"
/// The consistency function of a model, called in its consistency role.
fn f_of(cm: Consistency, x: Tensor) -> Tensor {
    cm(x, 1.3)
}

fn wiggle(x: Tensor) -> Tensor {
    x * exp(x * 0.3)
}

let U = operator(wiggle, domain: shape(1, 4, 4))
model prior = gaussian_prior(gaussian_like(shape(1, 4, 4), seed: 7) * 0.2,
    ones(shape(1, 4, 4)) * 0.3 + abs(gaussian_like(shape(1, 4, 4), seed: 8)) * 0.2)
model mix = gmm_prior(tensor([0.4, 0.6], shape(2)),
    gaussian_like(shape(2, 1, 4, 4), seed: 9) * 0.5,
    ones(shape(2, 1, 4, 4)) * 0.2)
let y = gaussian_like(shape(1, 4, 4), seed: 10) * 0.5
let x0 = gaussian_like(shape(1, 4, 4), seed: 11) * 0.5
let v = gaussian_like(shape(1, 4, 4), seed: 12)
let h = 1e-5
"#,
    );
    for (name, body) in CASES {
        source.push_str(&format!(
            r#"
fn f_{name}(x: Tensor) -> Float {{
    {body}
}}

fn grad_{name}(x: Tensor) -> Tensor {{
    grad(f_{name}(x), wrt: x)
}}

report dot(grad_{name}(x0), v) as "{name} autodiff",
    (f_{name}(x0 + h * v) - f_{name}(x0 - h * v)) / (2.0 * h) as "{name} difference"
"#
        ));
    }
    let dir = temp_dir("gradients");
    let s = run_ok(&dir, &source, DType::F64, 0);
    let mut failures = Vec::new();
    for (name, _) in CASES {
        let ad = report(&s, &format!("{name} autodiff"));
        let fd = report(&s, &format!("{name} difference"));
        if (ad - fd).abs() > 1e-6 * fd.abs().max(1.0) {
            failures.push(format!("{name}: autodiff {ad}, central difference {fd}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(dir);
}
