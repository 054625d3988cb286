//! Preconditioning as data: how a raw network F becomes the denoiser D(x; σ) or the
//! consistency function f(x, σ) that every solver uses (ALGORITHMS.md sections 3-4).
//!
//! Every family is `out = c_skip x + c_out F(c_in x, c_noise)` for coefficients of σ
//! ([`Coefficients`]), so one code path serves all of them:
//!
//! * **Karras** (EDM and consistency models, σ_data = 0.5): D uses the EDM scalings
//!   `c_skip = σd²/(σ²+σd²)`, `c_out = σσd/√(σ²+σd²)`; f uses the boundary-condition ones
//!   `c_skip = σd²/((σ−σmin)²+σd²)`, `c_out = (σ−σmin)σd/√(σ²+σd²)`, so f(x, σmin) = x; both
//!   `c_in = 1/√(σ²+σd²)`, `c_noise = s · ln σ` where the network's time scale `s` is 1/4 for
//!   mapga's own U-Net (EDM's convention) and 250 for OpenAI's files (`1000 · 0.25 · ln σ`).
//! * **VP ε-prediction** (guided-diffusion ADM, DDPM): the network predicts the noise ε of
//!   `x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε` at an integer step t. In the variance-exploding scale
//!   `x = x_t / √ᾱ_t = x0 + σ_t ε` with `σ_t = √((1−ᾱ_t)/ᾱ_t)`, so
//!   `D(x; σ) = x − σ ε(x/√(1+σ²), t(σ))`: `c_skip = 1`, `c_out = −σ`, `c_in = 1/√(1+σ²)`,
//!   `c_noise = t(σ)` (NVlabs' EDM does the same for its iDDPM models). The first `C` output
//!   channels are ε (a `learn_sigma` model's other half is its variance; unused).
//!
//! **t(σ) between grid points.** The β schedule gives σ_0 < σ_1 < ... < σ_{N−1}. For σ in
//! `[σ_i, σ_{i+1})`, t = i + (ln σ − ln σ_i)/(ln σ_{i+1} − ln σ_i): linear in ln σ, so it is
//! exact at every grid point, continuous and monotone between them (the networks take real
//! time inputs through their sinusoidal embedding). Below σ_0 it is 0 and above σ_{N−1} it is
//! N − 1 (the network has never seen other levels); c_in always uses the σ asked for.
//! A VP ε-prediction model is a denoiser, not a consistency function.

use std::collections::BTreeMap;

use super::card::HyperValue;
use super::unet::ConfigError;

/// The scalings of one noise level: `out = c_skip x + c_out F(c_in x, c_noise)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coefficients {
    /// Weight of the input in the output.
    pub c_skip: f64,
    /// Weight of the network's output.
    pub c_out: f64,
    /// Scaling of the network's input.
    pub c_in: f64,
    /// The network's time input.
    pub c_noise: f64,
}

/// A discrete VP noise schedule seen in the variance-exploding scale: σ_i of every step.
#[derive(Debug, Clone, PartialEq)]
pub struct VpSchedule {
    beta_start: f64,
    beta_end: f64,
    sigmas: Vec<f64>,
}

impl VpSchedule {
    /// The schedule of `steps` betas spaced linearly from `beta_start` to `beta_end` (DDPM's
    /// and ADM's `linear` schedule: 1e-4 to 0.02 over 1000 steps), computed in f64 as numpy
    /// does (`linspace`, then the running product of `1 − β`).
    pub fn linear(beta_start: f64, beta_end: f64, steps: usize) -> VpSchedule {
        let mut alpha_bar = 1.0;
        let sigmas = (0..steps)
            .map(|i| {
                let beta = if i + 1 == steps {
                    beta_end
                } else {
                    beta_start + i as f64 * (beta_end - beta_start) / (steps - 1).max(1) as f64
                };
                alpha_bar *= 1.0 - beta;
                ((1.0 - alpha_bar) / alpha_bar).sqrt()
            })
            .collect();
        VpSchedule {
            beta_start,
            beta_end,
            sigmas,
        }
    }

    /// σ of every step, increasing.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// The (fractional) step for the noise level σ; see the module documentation.
    pub fn time(&self, sigma: f64) -> f64 {
        let s = &self.sigmas;
        match s.partition_point(|&si| si <= sigma) {
            0 => 0.0,
            n if n >= s.len() => (s.len() - 1) as f64,
            n => {
                let (lo, hi) = (s[n - 1], s[n]);
                (n - 1) as f64 + (sigma.ln() - lo.ln()) / (hi.ln() - lo.ln())
            }
        }
    }
}

/// How a network's output becomes a denoiser or a consistency function.
#[derive(Debug, Clone, PartialEq)]
pub enum Preconditioning {
    /// EDM / consistency-model scalings, time input `noise_scale · ln σ`.
    Karras {
        /// The data standard deviation σd.
        sigma_data: f64,
        /// The smallest noise level σmin (the consistency boundary).
        sigma_min: f64,
        /// The network's time input per unit of ln σ: 0.25 (EDM) or 250 (OpenAI).
        noise_scale: f64,
    },
    /// VP ε-prediction on a discrete schedule.
    VpEpsilon(VpSchedule),
}

/// The card hyperparameters that choose a preconditioning (the rest are the architecture's).
pub const HYPERPARAMETERS: &[&str] = &[
    "preconditioning",
    "noise_scale",
    "beta_start",
    "beta_end",
    "diffusion_steps",
];

fn number(key: &str, v: &HyperValue) -> Result<f64, ConfigError> {
    v.as_f64()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| ConfigError {
            key: key.into(),
            message: format!("{v:?} is not a positive number"),
        })
}

impl Preconditioning {
    /// The preconditioning a card's hyperparameters choose, starting from `default`:
    /// `preconditioning: "karras"` (with `noise_scale`) or `"vp_epsilon"` (with
    /// `beta_start`, `beta_end`, `diffusion_steps`; the linear schedule).
    pub fn from_hyperparameters(
        default: Preconditioning,
        sigma_data: f64,
        sigma_min: f64,
        hp: &BTreeMap<String, HyperValue>,
    ) -> Result<Preconditioning, ConfigError> {
        let get = |key: &str, fallback: f64| hp.get(key).map_or(Ok(fallback), |v| number(key, v));
        let family = match hp.get("preconditioning") {
            None => None,
            Some(HyperValue::Text(t)) if t == "karras" || t == "vp_epsilon" => Some(t.as_str()),
            Some(other) => {
                return Err(ConfigError {
                    key: "preconditioning".into(),
                    message: format!("{other:?} is neither \"karras\" nor \"vp_epsilon\""),
                })
            }
        };
        let vp = match (family, &default) {
            (Some(f), _) => f == "vp_epsilon",
            (None, d) => matches!(d, Preconditioning::VpEpsilon(_)),
        };
        if vp {
            let steps = match hp.get("diffusion_steps") {
                None => 1000,
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n >= 2)
                    .map(|n| n as usize)
                    .ok_or_else(|| ConfigError {
                        key: "diffusion_steps".into(),
                        message: format!("{v:?} is not a whole number of at least 2"),
                    })?,
            };
            let (start, end) = (get("beta_start", 1e-4)?, get("beta_end", 0.02)?);
            if !(start < end && end < 1.0) {
                return Err(ConfigError {
                    key: "beta_end".into(),
                    message: format!("betas from {start} to {end} must increase and stay below 1"),
                });
            }
            return Ok(Preconditioning::VpEpsilon(VpSchedule::linear(
                start, end, steps,
            )));
        }
        let default_scale = match default {
            Preconditioning::Karras { noise_scale, .. } => noise_scale,
            Preconditioning::VpEpsilon(_) => 0.25,
        };
        Ok(Preconditioning::Karras {
            sigma_data,
            sigma_min,
            noise_scale: get("noise_scale", default_scale)?,
        })
    }

    /// The card hyperparameters that describe this preconditioning.
    pub fn to_hyperparameters(&self) -> BTreeMap<String, HyperValue> {
        match self {
            Preconditioning::Karras { noise_scale, .. } => BTreeMap::from([
                ("preconditioning".into(), HyperValue::Text("karras".into())),
                ("noise_scale".into(), HyperValue::Float(*noise_scale)),
            ]),
            Preconditioning::VpEpsilon(s) => BTreeMap::from([
                (
                    "preconditioning".into(),
                    HyperValue::Text("vp_epsilon".into()),
                ),
                (
                    "diffusion_steps".into(),
                    HyperValue::Int(s.sigmas.len() as i64),
                ),
                ("beta_start".into(), HyperValue::Float(s.beta_start)),
                ("beta_end".into(), HyperValue::Float(s.beta_end)),
            ]),
        }
    }

    /// The denoiser's coefficients at noise level σ > 0.
    pub fn denoiser(&self, sigma: f64) -> Coefficients {
        match self {
            Preconditioning::Karras {
                sigma_data: sd,
                noise_scale,
                ..
            } => {
                let norm = (sigma * sigma + sd * sd).sqrt();
                Coefficients {
                    c_skip: sd * sd / (norm * norm),
                    c_out: sigma * sd / norm,
                    c_in: 1.0 / norm,
                    c_noise: noise_scale * sigma.ln(),
                }
            }
            Preconditioning::VpEpsilon(schedule) => Coefficients {
                c_skip: 1.0,
                c_out: -sigma,
                c_in: 1.0 / (1.0 + sigma * sigma).sqrt(),
                c_noise: schedule.time(sigma),
            },
        }
    }

    /// The consistency function's coefficients at σ > 0, or `None` for a family that is no
    /// consistency model (VP ε-prediction).
    pub fn consistency(&self, sigma: f64) -> Option<Coefficients> {
        match self {
            Preconditioning::Karras {
                sigma_data: sd,
                sigma_min,
                noise_scale,
            } => {
                let d = sigma - sigma_min;
                Some(Coefficients {
                    c_skip: sd * sd / (d * d + sd * sd),
                    c_out: d * sd / (sigma * sigma + sd * sd).sqrt(),
                    c_in: 1.0 / (sigma * sigma + sd * sd).sqrt(),
                    c_noise: noise_scale * sigma.ln(),
                })
            }
            Preconditioning::VpEpsilon(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_schedule_matches_its_closed_form() {
        let s = VpSchedule::linear(1e-4, 0.02, 1000);
        assert_eq!(s.sigmas().len(), 1000);
        // σ_0 = √(β_0 / (1 − β_0)).
        assert!((s.sigmas()[0] - (1e-4f64 / (1.0 - 1e-4)).sqrt()).abs() < 1e-15);
        // ᾱ_999 = Π (1 − β_i), summed in logs as an independent reference.
        let log_abar: f64 = (0..1000)
            .map(|i| (1.0 - (1e-4 + i as f64 * (0.02 - 1e-4) / 999.0)).ln())
            .sum();
        let abar = log_abar.exp();
        let want = ((1.0 - abar) / abar).sqrt();
        assert!(
            (s.sigmas()[999] / want - 1.0).abs() < 1e-10,
            "{}",
            s.sigmas()[999]
        );
        assert!(s.sigmas().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn time_is_exact_on_the_grid_and_log_linear_between() {
        let s = VpSchedule::linear(1e-4, 0.02, 1000);
        let grid = s.sigmas();
        for i in [0usize, 1, 10, 500, 998, 999] {
            assert!((s.time(grid[i]) - i as f64).abs() < 1e-9, "step {i}");
        }
        // Halfway in ln σ between steps 10 and 11.
        let mid = (grid[10].ln() * 0.5 + grid[11].ln() * 0.5).exp();
        assert!((s.time(mid) - 10.5).abs() < 1e-9);
        // Clamped outside the schedule.
        assert_eq!(s.time(grid[0] / 2.0), 0.0);
        assert_eq!(s.time(grid[999] * 2.0), 999.0);
        // Monotone.
        let ts: Vec<f64> = (1..200).map(|k| s.time(0.005 * k as f64)).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn karras_boundary_and_edm_scalings() {
        let p = Preconditioning::Karras {
            sigma_data: 0.5,
            sigma_min: 0.002,
            noise_scale: 250.0,
        };
        let f = p.consistency(0.002).unwrap();
        assert_eq!((f.c_skip, f.c_out), (1.0, 0.0));
        let d = p.denoiser(1.0);
        assert!((d.c_skip - 0.2).abs() < 1e-15);
        assert!((d.c_out - 0.5 / 1.25f64.sqrt()).abs() < 1e-15);
        assert!((d.c_noise - 0.0).abs() < 1e-15);
        assert!((p.denoiser(std::f64::consts::E).c_noise - 250.0).abs() < 1e-12);
        let vp = Preconditioning::VpEpsilon(VpSchedule::linear(1e-4, 0.02, 1000));
        assert!(vp.consistency(1.0).is_none());
        let c = vp.denoiser(3.0);
        assert_eq!((c.c_skip, c.c_out), (1.0, -3.0));
        assert!((c.c_in - 1.0 / 10f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn hyperparameters_choose_and_round_trip() {
        let karras = Preconditioning::Karras {
            sigma_data: 0.5,
            sigma_min: 0.002,
            noise_scale: 0.25,
        };
        let hp = BTreeMap::from([(
            "preconditioning".to_string(),
            HyperValue::Text("vp_epsilon".into()),
        )]);
        let vp = Preconditioning::from_hyperparameters(karras.clone(), 0.5, 0.002, &hp).unwrap();
        assert_eq!(
            vp,
            Preconditioning::VpEpsilon(VpSchedule::linear(1e-4, 0.02, 1000))
        );
        let back = Preconditioning::from_hyperparameters(
            karras.clone(),
            0.5,
            0.002,
            &vp.to_hyperparameters(),
        )
        .unwrap();
        assert_eq!(back, vp);
        let hp = BTreeMap::from([("noise_scale".to_string(), HyperValue::Int(250))]);
        let k = Preconditioning::from_hyperparameters(karras.clone(), 0.5, 0.002, &hp).unwrap();
        assert!(matches!(k, Preconditioning::Karras { noise_scale, .. } if noise_scale == 250.0));
        let bad = BTreeMap::from([(
            "preconditioning".to_string(),
            HyperValue::Text("ddim".into()),
        )]);
        let err = Preconditioning::from_hyperparameters(karras, 0.5, 0.002, &bad).unwrap_err();
        assert!(err.to_string().contains("neither"), "{err}");
    }
}
