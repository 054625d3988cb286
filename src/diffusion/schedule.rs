//! Noise schedules: decreasing sequences of EDM noise levels.

/// Karras et al. (2022), Eq. 5: `steps` levels from `sigma_max` down to `sigma_min`, uniform in
/// sigma^(1/rho). One level is `[sigma_max]`.
pub fn karras(sigma_min: f64, sigma_max: f64, steps: usize, rho: f64) -> Vec<f64> {
    if steps <= 1 {
        return vec![sigma_max];
    }
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    (0..steps)
        .map(|i| {
            let u = i as f64 / (steps - 1) as f64;
            (hi + u * (lo - hi)).powf(rho)
        })
        .collect()
}

/// `steps` levels equally spaced in sigma, from `sigma_max` down to `sigma_min`.
pub fn linear(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    if steps <= 1 {
        return vec![sigma_max];
    }
    (0..steps)
        .map(|i| sigma_max + (sigma_min - sigma_max) * i as f64 / (steps - 1) as f64)
        .collect()
}

/// `steps` levels equally spaced in log sigma, from `sigma_max` down to `sigma_min`.
pub fn geometric(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    if steps <= 1 {
        return vec![sigma_max];
    }
    let (lo, hi) = (sigma_min.ln(), sigma_max.ln());
    (0..steps)
        .map(|i| (hi + (lo - hi) * i as f64 / (steps - 1) as f64).exp())
        .collect()
}

/// Why an explicit list of levels is not a schedule.
pub fn validate(sigmas: &[f64]) -> Result<(), String> {
    if sigmas.is_empty() {
        return Err("a schedule needs at least one noise level".into());
    }
    if let Some(s) = sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(format!("noise levels must be positive numbers, found {s}"));
    }
    if let Some(w) = sigmas.windows(2).find(|w| w[1] >= w[0]) {
        return Err(format!(
            "noise levels must be strictly decreasing, but {} is followed by {}",
            w[0], w[1]
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn karras_matches_the_formula_and_ends() {
        let s = karras(0.002, 80.0, 40, 7.0);
        assert_eq!(s.len(), 40);
        assert!((s[0] - 80.0).abs() < 1e-12 && (s[39] - 0.002).abs() < 1e-15);
        // The midpoint in sigma^(1/7) space.
        let mid = ((80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0)) / 2.0).powf(7.0);
        let s3 = karras(0.002, 80.0, 3, 7.0);
        assert!((s3[1] - mid).abs() < 1e-12 * mid);
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn linear_and_geometric_spacing() {
        assert_eq!(linear(1.0, 3.0, 3), vec![3.0, 2.0, 1.0]);
        let g = geometric(0.01, 1.0, 3);
        assert!((g[1] - 0.1).abs() < 1e-12);
        assert_eq!(karras(0.002, 80.0, 1, 7.0), vec![80.0]);
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate(&[]).is_err());
        assert!(validate(&[1.0, 1.0]).unwrap_err().contains("decreasing"));
        assert!(validate(&[1.0, -0.5]).unwrap_err().contains("positive"));
    }
}
