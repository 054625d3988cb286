//! Every solver finishes on every shipped operator and on compositions of them, noiseless and
//! noisy (issue #19): no iterative solve may stall at step 1 ("did not converge") or run for
//! ever, and a solver that cannot take an operator is refused by the checker with a help line.
//!
//! Each case restores two validation digits with the trained MNIST models on a tiny budget
//! (two levels, one ascent step each), so the test measures that the linear algebra finishes,
//! not the quality.

mod common;

use std::path::Path;

use candle_core::DType;
use common::{report, run_in, temp_dir};
use mapga::check::{check_source, CheckOptions};

/// The operators, as the language writes them, on 28 x 28 digits.
const OPERATORS: &[(&str, &str)] = &[
    ("box", "inpaint(center_box_mask(28, 28, fraction: 0.5))"),
    ("gaussian_blur", "gaussian_blur(1.5)"),
    ("uniform_blur", "uniform_blur(3)"),
    ("motion_blur", "motion_blur(9)"),
    ("downsample", "downsample(4)"),
    ("bicubic", "bicubic_downsample(2)"),
    // Compositions without a fused form: the iterative solves.
    (
        "blur_then_box",
        "gaussian_blur(1.0) >> inpaint(center_box_mask(28, 28, fraction: 0.5))",
    ),
    (
        "motion_then_box",
        "motion_blur(9) >> inpaint(center_box_mask(28, 28, fraction: 0.5))",
    ),
    (
        "box_then_blur",
        "inpaint(center_box_mask(28, 28, fraction: 0.5)) >> gaussian_blur(2.0)",
    ),
    (
        "blur_plus_identity",
        "0.5 * gaussian_blur(2.0) + 0.5 * identity()",
    ),
    // Non-linear: linearised by log_likelihood.
    ("blur_then_gamma", "gaussian_blur(1.0) >> gamma_curve(0.8)"),
    ("gamma_then_blur", "gamma_curve(0.8) >> gaussian_blur(1.0)"),
];

fn is_linear(op: &str) -> bool {
    !op.contains("gamma_curve")
}

fn has_svd(name: &str) -> bool {
    matches!(
        name,
        "box" | "gaussian_blur" | "uniform_blur" | "downsample"
    )
}

/// The solvers: name, import, call (`A`, `y`, `sigma_y`, `cm`, `d`, `ts` come from the
/// template).
const SOLVERS: &[(&str, &str, &str)] = &[
    (
        "mapga",
        "std.solvers.mapga",
        "mapga(y, A, sigma_y, cm, d, ts, iters: 1)",
    ),
    (
        "mapga_np",
        "std.solvers.mapga",
        "mapga(y, A, sigma_y, cm, d, ts, iters: 1, use_prior: false)",
    ),
    (
        "mapga_d",
        "std.solvers.mapga.mapga_d",
        "mapga_d(y, A, sigma_y, d, ts, iters: 1)",
    ),
    (
        "mapga_pgdm",
        "std.solvers.mapga_pgdm",
        "mapga_pgdm(y, A, 0.05, cm, d, ts, iters: 1, pgdm_steps: 2)",
    ),
    ("pigdm", "std.solvers.pigdm", "pigdm(y, A, sigma_y, d, ts)"),
    ("ddrm", "std.solvers.ddrm", "ddrm(y, A, sigma_y, d, ts)"),
    ("dps", "std.solvers.dps", "dps(y, A, d, ts)"),
    (
        "diffpir",
        "std.solvers.diffpir",
        "diffpir(y, A, sigma_y, d, ts)",
    ),
    ("reddiff", "std.solvers.reddiff", "reddiff(y, A, d, ts)"),
    (
        "ct_zsie",
        "std.solvers.cm_sampling.ct_zsie",
        "ct_zsie(y, A, cm, ts)",
    ),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn pipeline(op: &str, import: &str, solver: &str, sigma_y: f64) -> String {
    let models = root().join("models/mnist");
    let digits = root().join("data/mnist/validation/digits.npy");
    format!(
        "use {import}\n\
         {masks}\n\
         {cm}\n\
         {d}\n\
         let sigma_y = {sigma_y:?}\n\
         let x_true = load_npy({digits:?})[:2] / 127.5 - 1.0\n\
         let A = {op}\n\
         let y = A(x_true) + gaussian_noise(sigma_y, seed: 7)\n\
         let ts = karras(sigma_min: 0.002, sigma_max: 80.0, steps: 3, rho: 7.0)\n\
         let x_hat = {solver}\n\
         report psnr(x_hat, x_true) as \"PSNR\"\n",
        cm = if solver.contains("cm,") {
            format!(
                "model cm = consistency({:?})",
                models.join("cm.safetensors").display().to_string()
            )
        } else {
            String::new()
        },
        d = if solver.contains(" d,") {
            format!(
                "model d = denoiser({:?})",
                models.join("denoiser.safetensors").display().to_string()
            )
        } else {
            String::new()
        },
        digits = digits.display().to_string(),
        masks = if op.contains("inpaint") {
            "use std.operators.{inpaint, center_box_mask}"
        } else {
            ""
        },
    )
}

/// The check-time refusal of a solver that cannot take an operator, if it should be refused.
fn refusal(op_name: &str, op: &str, solver: &str) -> Option<&'static str> {
    let needs_linear = matches!(solver, "pigdm" | "ddrm" | "diffpir" | "reddiff" | "ct_zsie");
    if solver == "ddrm" && !has_svd(op_name) {
        return Some("svd");
    }
    if needs_linear && !is_linear(op) {
        return Some("linear");
    }
    None
}

fn run_case(
    op_name: &str,
    op: &str,
    (solver_name, import, solver): (&str, &str, &str),
    sigma_y: f64,
) {
    let source = pipeline(op, import, solver, sigma_y);
    let dir = temp_dir(&format!("finish-{op_name}-{solver_name}"));
    if let Some(why) = refusal(op_name, op, solver_name) {
        let checked = check_source("pipeline.mapga", &source, &dir, &CheckOptions::default());
        assert!(
            checked.diags.has_errors(),
            "{solver_name} on {op_name}: the checker should refuse ({why})"
        );
        let text = format!("{:?}", checked.diags.0);
        assert!(
            text.contains(why) && text.contains("help"),
            "{solver_name} on {op_name}: the refusal should name `{why}` and help: {text}"
        );
        return;
    }
    match run_in(&dir, &source, DType::F32, 0) {
        Ok(summary) => {
            let psnr = report(&summary, "PSNR");
            assert!(
                psnr.is_finite(),
                "{solver_name} on {op_name}, sigma_y = {sigma_y}: PSNR {psnr}"
            );
        }
        Err(f) => panic!(
            "{solver_name} on {op_name}, sigma_y = {sigma_y}: {} ({:?})",
            f.error.message, f.error.notes
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_solver_finishes_every_operator_noiseless() {
    for (op_name, op) in OPERATORS {
        for &solver in SOLVERS {
            if solver.0 == "mapga_pgdm" {
                continue;
            }
            run_case(op_name, op, solver, 0.0);
        }
    }
}

#[test]
fn every_solver_finishes_every_operator_noisy() {
    for (op_name, op) in OPERATORS {
        for &solver in SOLVERS {
            run_case(op_name, op, solver, 0.05);
        }
    }
}
