//! Batches `[N, C, H, W]` end to end: operators, reductions and metrics on a batch agree with
//! the same computations image by image; slices and `.npy` files of every dtype; grids of
//! batches; and every standard-library solver restoring (or sampling) a batch in one go.

mod common;

use std::path::Path;

use candle_core::DType;
use common::{read_npy, report, run_ok, temp_dir};

/// Runs `source` in f64 in a fresh folder and returns its reports.
fn reports(name: &str, source: &str) -> mapga::runtime::RunSummary {
    let dir = temp_dir(name);
    let s = run_ok(&dir, source, DType::F64, 0);
    let _ = std::fs::remove_dir_all(dir);
    s
}

/// Asserts that every report of `s` is at most `tol` in absolute value.
fn all_small(s: &mapga::runtime::RunSummary, tol: f64) {
    assert!(!s.reports.is_empty());
    for (label, v) in &s.reports {
        assert!(v.abs() <= tol, "{label}: {v:e}");
    }
}

/// Functions that compare an operator on a batch of 3 with the same operator on each image.
const GAPS: &str = r#"
/// |A(xs)[i] - A(xs[i])| and the same for `visualize`, summed over the 3 images.
fn gaps(A: Operator, xs: Tensor) -> Float {
    let ys = A(xs)
    var total = 0.0
    for i in [0, 1, 2] {
        total += norm(ys[i] - A(xs[i])) + norm(A.visualize(ys)[i] - A.visualize(ys[i]))
    }
    total
}

/// The same for the adjoint, the pseudo-inverse and the Gram solve of a linear operator.
fn linear_gaps(A: Operator[linear], xs: Tensor) -> Float {
    let ys = A(xs)
    var total = gaps(A, xs)
    for i in [0, 1, 2] {
        total += norm(A.adjoint(ys)[i] - A.adjoint(ys[i]))
            + norm(A.pinv(ys)[i] - A.pinv(ys[i]))
            + norm(A.gram_solve(ys, 0.5, 0.1)[i] - A.gram_solve(ys[i], 0.5, 0.1))
    }
    total
}

/// The same for the SVD maps of an operator with a known SVD.
fn svd_gaps(A: Operator[svd], xs: Tensor) -> Float {
    let ys = A(xs)
    let c = A.svd_vt(xs)
    var total = linear_gaps(A, xs)
    for i in [0, 1, 2] {
        total += norm(c[i] - A.svd_vt(xs[i]))
            + norm(A.svd_v(c)[i] - A.svd_v(c[i]))
            + norm(A.svd_ut(ys)[i] - A.svd_ut(ys[i]))
            + norm(A.svd_u(c)[i] - A.svd_u(c[i]))
    }
    // The singular values are per image and broadcast over the batch.
    total + norm(A.svd_u(A.singular_values() * c) - ys)
}

fn bend(x: Tensor) -> Tensor {
    x + 0.3 * x * x
}
"#;

#[test]
fn every_operator_kind_applies_to_a_batch_like_to_each_image() {
    let source = format!(
        r#"{GAPS}
let xs = gaussian_like(shape(3, 2, 8, 8), seed: 1)
let rgb = gaussian_like(shape(3, 3, 8, 8), seed: 2)
let mask = random_mask(8, 8, keep: 0.5, seed: 3)
let kernel = tensor([0.1, 0.5, 0.2, 0.2], shape(2, 2))
report svd_gaps(identity(), xs) as "identity",
    svd_gaps(inpaint(mask), xs) as "inpaint",
    svd_gaps(gaussian_blur(1.0), xs) as "gaussian_blur",
    svd_gaps(uniform_blur(3), xs) as "uniform_blur",
    svd_gaps(downsample(2), xs) as "downsample",
    linear_gaps(gaussian_blur(0.8) >> downsample(2), xs) as "fused separable",
    linear_gaps(motion_blur(5, seed: 1), xs) as "motion_blur",
    linear_gaps(kernel_blur(kernel), xs) as "kernel_blur",
    linear_gaps(bicubic_downsample(2), xs) as "bicubic_downsample",
    linear_gaps(to_grey(), rgb) as "to_grey",
    linear_gaps(gaussian_blur(1.0) >> inpaint(mask), xs) as "composition",
    linear_gaps(identity() + 0.5 * kernel_blur(kernel), xs) as "sum",
    linear_gaps(identity() - inpaint(mask), xs) as "difference",
    gaps(clipping(lo: -0.5, hi: 0.5), xs) as "clipping",
    gaps(gamma_curve(2.2), xs) as "gamma_curve",
    gaps(saturation(1.5), xs) as "saturation",
    gaps(gaussian_blur(1.0) >> saturation(2.0), xs) as "non-linear composition",
    gaps(operator(bend, domain: shape(2, 8, 8)), xs) as "user operator"
"#
    );
    all_small(&reports("batch-ops", &source), 1e-10);
}

#[test]
fn likelihoods_priors_and_norms_of_a_batch_sum_their_items() {
    // The gradient of a batched objective in each item is that item's own.
    let s = reports(
        "batch-grads",
        r#"
model prior = gaussian_prior(zeros(shape(1, 6, 6)), ones(shape(1, 6, 6)) * 0.3)
let A = gaussian_blur(1.0) >> saturation(2.0)
let xs = gaussian_like(shape(2, 1, 6, 6), seed: 1) * 0.5
let ys = A(gaussian_like(shape(2, 1, 6, 6), seed: 2) * 0.5)

fn lik_grad(y: Tensor, A: Operator, x: Tensor) -> Tensor {
    grad(log_likelihood(y, A, x, 0.1, 0.002), wrt: x)
}

fn prior_grad(d: Denoiser, x: Tensor) -> Tensor {
    grad(log_prior(d, x, 0.01), wrt: x)
}

fn norm_grad(y: Tensor, A: Operator, x: Tensor) -> Tensor {
    grad(sum(norms(y - A(x), A.range)), wrt: x)
}

let lik = lik_grad(ys, A, xs)
let pri = prior_grad(prior, xs)
let nrm = norm_grad(ys, A, xs)
report norm(lik[0] - lik_grad(ys[0], A, xs[0])) + norm(lik[1] - lik_grad(ys[1], A, xs[1]))
        as "log_likelihood",
    norm(pri[0] - prior_grad(prior, xs[0])) + norm(pri[1] - prior_grad(prior, xs[1]))
        as "log_prior",
    norm(nrm[0] - norm_grad(ys[0], A, xs[0])) + norm(nrm[1] - norm_grad(ys[1], A, xs[1]))
        as "norms",
    sum(norms(ys, A.range)) - norm(ys[0]) - norm(ys[1]) as "norms of a batch",
    sum(norms(ys[0], A.range)) - norm(ys[0]) as "norms of one image",
    log_likelihood(ys, A, xs, 0.1, 0.002) - log_likelihood(ys[0], A, xs[0], 0.1, 0.002)
        - log_likelihood(ys[1], A, xs[1], 0.1, 0.002) as "value"
"#,
    );
    all_small(&s, 1e-9);
}

#[test]
fn metrics_of_a_batch_are_the_metrics_of_each_item() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let digits = root.join("data/mnist/test/digits.npy");
    let source = format!(
        r#"
let x = load_npy("{digits}")[:3] / 127.5 - 1.0
let noisy = clip(x + gaussian_noise(0.2, seed: 1))
let A = inpaint(box_mask(28, 28, top: 10, left: 6, height: 8, width: 16))
let y = A(x)
let p = psnr(noisy, x)
let s = ssim(noisy, x)
let m = mse(noisy, x)
let dc = data_consistency(y, A, noisy)
save p to "psnr.npy"
report p[0] - psnr(noisy[0], x[0]) + p[1] - psnr(noisy[1], x[1]) + p[2] - psnr(noisy[2], x[2])
        as "psnr",
    s[0] - ssim(noisy[0], x[0]) + s[1] - ssim(noisy[1], x[1]) + s[2] - ssim(noisy[2], x[2])
        as "ssim",
    m[0] - mse(noisy[0], x[0]) + m[1] - mse(noisy[1], x[1]) + m[2] - mse(noisy[2], x[2])
        as "mse",
    dc[2] - data_consistency(y[2], A, noisy[2]) as "data_consistency",
    mean(p) - (p[0] + p[1] + p[2]) / 3.0 as "mean",
    p.shape[0] - 3 as "one value per item"
"#,
        digits = digits.display()
    );
    let dir = temp_dir("batch-metrics");
    let s = run_ok(&dir, &source, DType::F64, 0);
    all_small(&s, 1e-9);
    assert_eq!(read_npy(&dir.join("out/psnr.npy")).len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}

/// A hand-built `.npy` file of dtype `descr` and shape `(n,)` holding `data`.
fn npy(path: &Path, descr: &str, n: usize, data: &[u8]) {
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({n},), }}");
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// The dtype and shape in the header of the `.npy` file at `path`.
fn header(path: &Path) -> (String, Vec<u64>) {
    let h = mapga::io::npy::npy_header(path).unwrap();
    (h.dtype.as_str().to_string(), h.shape)
}

#[test]
fn npy_files_of_every_dtype_load_slice_and_save() {
    let dir = temp_dir("batch-npy");
    let values = [3i64, -7, 0, 250, 9_999];
    let bytes = |f: &dyn Fn(i64) -> Vec<u8>| values.iter().flat_map(|&v| f(v)).collect::<Vec<u8>>();
    npy(&dir.join("u1.npy"), "|u1", 3, &[0, 128, 255]);
    npy(
        &dir.join("i4.npy"),
        "<i4",
        5,
        &bytes(&|v| (v as i32).to_le_bytes().to_vec()),
    );
    npy(
        &dir.join("i8.npy"),
        "<i8",
        5,
        &bytes(&|v| v.to_le_bytes().to_vec()),
    );
    npy(
        &dir.join("f4.npy"),
        "<f4",
        5,
        &bytes(&|v| (v as f32 * 0.5).to_le_bytes().to_vec()),
    );
    npy(
        &dir.join("f8.npy"),
        "<f8",
        5,
        &bytes(&|v| (v as f64 * 0.25).to_le_bytes().to_vec()),
    );
    let source = r#"
let i8 = load_npy("i8.npy")
save load_npy("u1.npy") to "u1.npy"
save load_npy("i4.npy")[1:4] to "i4.npy"
save as_int64(i8[2:]) to "i8.npy"
save load_npy("f4.npy")[:2] to "f4.npy"
save load_npy("f8.npy") to "f8.npy"
report sum(i8) as "sum", i8.shape[0] as "len", i8[2:].shape[0] as "sliced"
"#;
    let s = run_ok(&dir, source, DType::F32, 0);
    assert_eq!(report(&s, "sum"), 10_245.0);
    assert_eq!((report(&s, "len"), report(&s, "sliced")), (5.0, 3.0));
    let out = dir.join("out");
    assert_eq!(read_npy(&out.join("u1.npy")), vec![0.0, 128.0, 255.0]);
    assert_eq!(read_npy(&out.join("i4.npy")), vec![-7.0, 0.0, 250.0]);
    assert_eq!(header(&out.join("i8.npy")), ("<i8".into(), vec![3]));
    assert_eq!(read_npy(&out.join("i8.npy")), vec![0.0, 250.0, 9_999.0]);
    assert_eq!(header(&out.join("f4.npy")), ("<f4".into(), vec![2]));
    assert_eq!(read_npy(&out.join("f4.npy")), vec![1.5, -3.5]);
    assert_eq!(
        read_npy(&out.join("f8.npy")),
        vec![0.75, -1.75, 0.0, 62.5, 2_499.75]
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_shipped_test_split_loads_as_batches() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let test = root.join("data/mnist/test");
    for (name, descr, shape) in [
        ("digits.npy", "|u1", vec![1000, 1, 28, 28]),
        ("indices.npy", "<i8", vec![1000]),
        ("labels.npy", "|u1", vec![1000]),
    ] {
        assert_eq!(header(&test.join(name)), (descr.into(), shape), "{name}");
    }
    let source = format!(
        r#"
param n = 10
let digits = load_npy("{d}/digits.npy")[:n]
let labels = load_npy("{d}/labels.npy")[:n]
save as_int64(labels) to "labels.npy"
save as_int64(load_npy("{d}/indices.npy")[:n]) to "indices.npy"
save digits[3] to "three.npy"
report mean(digits) as "mean", digits.shape[0] as "n"
"#,
        d = test.display()
    );
    let dir = temp_dir("batch-split");
    let s = run_ok(&dir, &source, DType::F32, 0);
    assert_eq!(report(&s, "n"), 10.0);
    // uint8 values stay 0..255.
    assert!(report(&s, "mean") > 10.0, "{:?}", s.reports);
    let out = dir.join("out");
    // Classes interleaved: the first 10 entries are one digit of each class, in order.
    let labels = read_npy(&out.join("labels.npy"));
    assert_eq!(labels, (0..10).map(f64::from).collect::<Vec<_>>());
    // Entry 3 is the first test digit of class 3, the one also shipped as 3.png.
    let png =
        mapga::io::read_image(&test.join("3.png"), DType::F64, &candle_core::Device::Cpu).unwrap();
    let png: Vec<f64> = png.flatten_all().unwrap().to_vec1().unwrap();
    let three = read_npy(&out.join("three.npy"));
    for (a, b) in three.iter().zip(&png) {
        assert!((a / 127.5 - 1.0 - b).abs() < 1e-6, "{a} vs {b}");
    }
    let indices = read_npy(&out.join("indices.npy"));
    assert_eq!(indices[..2], [901.0, 2028.0]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn grids_make_one_row_per_item() {
    let dir = temp_dir("batch-grid");
    let source = r#"
let xs = gaussian_like(shape(4, 1, 8, 6), seed: 1)
let one = zeros(shape(3, 8, 5))
let g = grid(xs, one, xs)
let capped = captioned_grid(["truth", "shared", "again"], xs, one, xs, rows: 2)
save g to "grid.png"
save capped to "captioned.png"
report g.channels as "c", g.height as "h", g.width as "w", capped.height as "capped h"
"#;
    let s = run_ok(&dir, source, DType::F32, 0);
    let gap = mapga::io::grid::GAP as f64;
    assert_eq!(report(&s, "c"), 3.0);
    assert_eq!(report(&s, "h"), 4.0 * 8.0 + 3.0 * gap);
    assert_eq!(report(&s, "w"), 6.0 + 5.0 + 6.0 + 2.0 * gap);
    assert_eq!(
        report(&s, "capped h"),
        2.0 * 8.0 + gap + mapga::io::grid::CAPTION_HEIGHT as f64
    );
    let png = image::open(dir.join("out/grid.png")).unwrap();
    assert_eq!((png.width(), png.height()), (21, 38));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_solver_restores_a_batch_in_one_go() {
    // A small Gaussian prior over 8 x 8 images and a batch of 2 measurements; each solver runs
    // a few steps and must give a finite batch of the right shape. Samplers draw `count`.
    let s = reports(
        "batch-solvers",
        r#"
use std.solvers.mapga.{mapga, mapga_d}
use std.solvers.mapga_pgdm
use std.solvers.dps
use std.solvers.pigdm
use std.solvers.ddrm
use std.solvers.cm_sampling.{cm_sample, ct_zsie}
use std.solvers.edm_sample
use std.solvers.diffpir
use std.solvers.reddiff

model prior = gaussian_prior(zeros(shape(1, 8, 8)), ones(shape(1, 8, 8)) * 0.3)
let x_true = gaussian_like(shape(2, 1, 8, 8), seed: 1) * 0.5
let A = inpaint(random_mask(8, 8, keep: 0.6, seed: 2))
let y = A(x_true) + gaussian_noise(0.1, seed: 3)
let ts = karras(steps: 4)

/// 0 when `x` is a finite batch of 2 images of 1 x 8 x 8.
fn bad(x: Tensor) -> Float {
    let s = x.shape
    let finite = if norm(x) < 1e9 { 0.0 } else { 1.0 }
    abs(s[0] - 2) + abs(s[1] - 1) + abs(s[2] - 8) + abs(s[3] - 8) + finite
}

report bad(mapga(y, A, 0.1, prior, prior, ts, iters: 2, optimizer: adam(lr: 0.01))) as "mapga",
    bad(mapga_d(y, A, 0.1, prior, ts, iters: 2, optimizer: adam(lr: 0.01))) as "mapga_d",
    bad(mapga_pgdm(y, A, 0.1, prior, prior, ts, iters: 2, pgdm_steps: 2)) as "mapga_pgdm",
    bad(dps(y, A, prior, ts)) as "dps",
    bad(pigdm(y, A, 0.1, prior, ts)) as "pigdm",
    bad(ddrm(y, A, 0.1, prior, ts)) as "ddrm",
    bad(diffpir(y, A, 0.1, prior, ts)) as "diffpir",
    bad(reddiff(y, A, prior, ts)) as "reddiff",
    bad(ct_zsie(A(x_true), A, prior, ts)) as "ct_zsie",
    bad(cm_sample(prior, ts, count: 2)) as "cm_sample",
    bad(edm_sample(prior, ts, count: 2)) as "edm_sample",
    cm_sample(prior, ts).shape.rank - 3 as "count 0 is one image"
"#,
    );
    for (label, v) in &s.reports {
        assert_eq!(*v, 0.0, "{label}");
    }
}

#[test]
fn models_apply_to_a_batch_like_to_each_image() {
    // Gaussian (diagonal and full covariance), mixture and ODE priors, called as denoisers and
    // as consistency functions on a batch of 3 and on each image.
    let s = reports(
        "batch-models",
        r#"
fn as_denoiser(d: Denoiser, x: Tensor, t: Float) -> Tensor {
    d(x, t)
}

fn as_consistency(f: Consistency, x: Tensor, t: Float) -> Tensor {
    f(x, t)
}

/// The consistency function on the batch against it on each image, summed.
fn cm_gaps(f: Consistency, xs: Tensor) -> Float {
    let out = as_consistency(f, xs, 1.5)
    var total = 0.0
    for i in [0, 1, 2] {
        total += norm(out[i] - as_consistency(f, xs[i], 1.5))
    }
    total
}

/// The denoiser, the score and the consistency function on the batch against them on each
/// image, summed.
fn gaps(m: Prior, xs: Tensor) -> Float {
    let d = as_denoiser(m, xs, 0.7)
    let s = score(m, xs, 0.3)
    var total = cm_gaps(m, xs)
    for i in [0, 1, 2] {
        total += norm(d[i] - as_denoiser(m, xs[i], 0.7)) + norm(s[i] - score(m, xs[i], 0.3))
    }
    total
}

let xs = gaussian_like(shape(3, 1, 1, 2), seed: 1)
let mean = tensor([0.2, -0.1], shape(1, 1, 2))
model diagonal = gaussian_prior(mean, tensor([0.3, 0.5], shape(1, 1, 2)))
model full = gaussian_prior(mean, tensor([0.3, 0.1, 0.1, 0.5], shape(2, 2)))
model mixture = gmm_prior(tensor([0.3, 0.7], shape(2)), tensor([0.5, 0.5, -0.5, 0.0], shape(2, 1, 1, 2)),
    tensor([0.1, 0.2, 0.3, 0.1], shape(2, 1, 1, 2)))
model ode = ode_consistency(full, steps: 6)
report gaps(diagonal, xs) as "diagonal", gaps(full, xs) as "full", gaps(mixture, xs) as "mixture",
    cm_gaps(ode, xs) as "ode"
"#,
    );
    all_small(&s, 1e-9);
}
