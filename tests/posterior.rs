//! Posterior sampling statistics of the sampling baselines (DDRM, Pi-GDM, DPS) with the exact
//! denoiser of a Gaussian prior, in f64, against the closed-form posterior.
//!
//! The case where these samplers are exact in the limit of many steps: an isotropic prior
//! N(mu, s^2 I) observed through a noiseless inpainting mask. The posterior factorises per
//! pixel: an observed pixel is y (variance 0), a missing one is N(mu, s^2), and pixels are
//! uncorrelated. 4,000 samples are drawn as one batch with a fixed seed; the tolerances are
//! stated with each assertion (a few standard errors of the estimates plus the discretisation
//! of a 100-level schedule). With a correlated prior none of the three is exact (Pi-GDM's r_t
//! and DDRM's replacement of the observed components are approximations), so no such test is
//! made there.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{read_npy, run_ok, temp_dir, write_npy};

const SIDE: usize = 4;
const PIXELS: usize = SIDE * SIDE;
const SAMPLES: usize = 4000;
const S2: f64 = 0.25;

/// Per-pixel sample mean and variance, and the largest absolute sample correlation between two
/// missing pixels.
fn moments(samples: &[f64], missing: &[usize]) -> (Vec<f64>, Vec<f64>, f64) {
    assert_eq!(samples.len(), SAMPLES * PIXELS);
    let px = |k: usize, p: usize| samples[k * PIXELS + p];
    let mean: Vec<f64> = (0..PIXELS)
        .map(|p| (0..SAMPLES).map(|k| px(k, p)).sum::<f64>() / SAMPLES as f64)
        .collect();
    let var: Vec<f64> = (0..PIXELS)
        .map(|p| {
            (0..SAMPLES)
                .map(|k| (px(k, p) - mean[p]).powi(2))
                .sum::<f64>()
                / (SAMPLES - 1) as f64
        })
        .collect();
    let mut corr: f64 = 0.0;
    for (i, &a) in missing.iter().enumerate() {
        for &b in &missing[i + 1..] {
            let c = (0..SAMPLES)
                .map(|k| (px(k, a) - mean[a]) * (px(k, b) - mean[b]))
                .sum::<f64>()
                / (SAMPLES - 1) as f64;
            corr = corr.max((c / (var[a] * var[b]).sqrt()).abs());
        }
    }
    (mean, var, corr)
}

#[test]
fn samplers_draw_the_closed_form_posterior_of_an_isotropic_prior() {
    let dir = temp_dir("posterior");
    let mu: Vec<f64> = (0..PIXELS)
        .map(|p| 0.3 * ((p as f64) * 0.7).sin())
        .collect();
    let x: Vec<f64> = (0..PIXELS)
        .map(|p| 0.5 * ((p as f64) * 1.3).cos())
        .collect();
    let mask: Vec<f64> = (0..PIXELS)
        .map(|p| ((p * 7) % 3 != 0) as u8 as f64)
        .collect();
    let t = |v: &Vec<f64>| Tensor::from_slice(v, (1, SIDE, SIDE), &Device::Cpu).unwrap();
    write_npy(&dir.join("mu.npy"), &t(&mu));
    write_npy(&dir.join("x.npy"), &t(&x));
    write_npy(&dir.join("mask.npy"), &t(&mask));
    let source = format!(
        r#"use std.solvers.ddrm
use std.solvers.pigdm
use std.solvers.dps
model prior = gaussian_prior(load_npy("mu.npy"), ones(shape(1, {SIDE}, {SIDE})) * {S2})
let A = inpaint(load_npy("mask.npy"))
let y = zeros(batch_shape(shape(1, {SIDE}, {SIDE}), {SAMPLES})) + A(load_npy("x.npy"))
let ts = karras(sigma_max: 20.0, steps: 101)
save ddrm(y, A, 0.0, prior, ts, eta: 0.0, seed: 1) to "ddrm.npy"
save ddrm(y, A, 0.0, prior, ts, seed: 4) to "ddrm_default.npy"
save pigdm(y, A, 0.0, prior, ts, seed: 2) to "pigdm.npy"
save dps(y, A, prior, ts, zeta: 0.05, clip_x0: false, seed: 3) to "dps.npy"
"#
    );
    run_ok(&dir, &source, DType::F64, 0);
    let missing: Vec<usize> = (0..PIXELS).filter(|&p| mask[p] == 0.0).collect();
    let observed: Vec<usize> = (0..PIXELS).filter(|&p| mask[p] == 1.0).collect();
    // Standard errors of a missing pixel's mean and variance: s / sqrt(n), s^2 sqrt(2 / n).
    let se_mean = (S2 / SAMPLES as f64).sqrt();
    let se_var = S2 * (2.0 / SAMPLES as f64).sqrt();
    let load = |solver: &str| read_npy(&dir.join("out").join(format!("{solver}.npy")));
    // DPS runs with clip_x0: false (this prior's samples leave [-1, 1]). It does not project: its guidance only pulls the observed pixels towards y, to within
    // about 0.1 here (the prior's sd is 0.5), so it is not an exact sampler of this posterior.
    for (solver, observed_tolerance) in [("ddrm", 1e-2), ("pigdm", 1e-2), ("dps", 0.2)] {
        let (mean, var, corr) = moments(&load(solver), &missing);
        for &p in &missing {
            // 5 standard errors plus 0.01 of discretisation bias.
            assert!(
                (mean[p] - mu[p]).abs() < 5.0 * se_mean + 0.01,
                "{solver}: pixel {p} mean {:.4} vs prior mean {:.4}",
                mean[p],
                mu[p]
            );
            assert!(
                (var[p] - S2).abs() < 5.0 * se_var + 0.02,
                "{solver}: pixel {p} variance {:.4} vs {S2}",
                var[p]
            );
        }
        // Independent pixels: sample correlations of about 1 / sqrt(n) = 0.016.
        assert!(
            corr < 0.08,
            "{solver}: correlation {corr:.3} between missing pixels"
        );
        for &p in &observed {
            assert!(
                (mean[p] - x[p]).abs() < observed_tolerance && var[p].sqrt() < observed_tolerance,
                "{solver}: observed pixel {p}: mean {:.4} sd {:.4} vs y = {:.4}",
                mean[p],
                var[p].sqrt(),
                x[p]
            );
        }
    }
    // DDRM's default eta = 0.85 mixes fresh noise in with weight eta sigma_s, without DDIM's
    // sqrt(1 - sigma_s^2 / sigma_t^2) factor (as the official code does): over many steps the
    // missing pixels come out under-dispersed, about 0.7 of the prior's variance here.
    let (_, var, _) = moments(&load("ddrm_default"), &missing);
    let ratio = missing.iter().map(|&p| var[p]).sum::<f64>() / (missing.len() as f64 * S2);
    assert!(
        (0.6..0.8).contains(&ratio),
        "DDRM, eta 0.85: variance ratio {ratio:.3}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
