//! Random motion-blur kernels: a camera-shake trajectory in the spirit of Boracchi & Foi
//! (2012), rasterised into a `size x size` kernel. This is our own generator (not the
//! `motionblur` package DPS uses), defined as follows.
//!
//! 1. The trajectory has `8 size` unit steps from the origin. Its heading starts uniform
//!    in `[0, 2 pi)`; before each step it turns by `intensity pi / sqrt(8 size)` times a
//!    standard normal (so the heading's total drift has standard deviation
//!    `intensity pi`), and with probability `2 intensity / (8 size)` also jerks by a
//!    uniform angle in `[-intensity pi, intensity pi]` (about `2 intensity` jerks per path).
//! 2. The path is scaled so that its bounding box's larger side is `size - 1` pixels and
//!    centred in the kernel: intensity 0 gives a straight line through the centre.
//! 3. Each step is sampled at 8 evenly spaced points, each splatted bilinearly with weight
//!    proportional to the step's length; the kernel is normalised to sum 1.
//!
//! Draws come from the given ChaCha8 generator in a fixed order (heading, then per step a
//! normal, a jerk test and, on a jerk, its angle), so a seed fixes the kernel.

use std::f64::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::error::{argument_error, Result};

/// A `size x size` motion-blur kernel (row-major, sums to 1) whose path bends more for a
/// larger `intensity` in `[0, 1]` (see the module doc).
pub fn motion_kernel(size: usize, intensity: f64, rng: &mut ChaCha8Rng) -> Result<Vec<f64>> {
    if size == 0 {
        return Err(argument_error("motion_blur", "size must be at least 1"));
    }
    if !(0.0..=1.0).contains(&intensity) {
        return Err(argument_error(
            "motion_blur",
            format!("intensity must be in [0, 1], got {intensity}"),
        ));
    }
    if size == 1 {
        return Ok(vec![1.0]);
    }
    let steps = 8 * size;
    let turn = intensity * PI / (steps as f64).sqrt();
    let jerk_probability = 2.0 * intensity / steps as f64;
    let mut heading = 2.0 * PI * rng.random::<f64>();
    let mut points = vec![(0.0f64, 0.0f64)];
    for _ in 0..steps {
        let normal: f64 = StandardNormal.sample(rng);
        heading += turn * normal;
        if rng.random::<f64>() < jerk_probability {
            heading += intensity * PI * (2.0 * rng.random::<f64>() - 1.0);
        }
        let (x, y) = points[points.len() - 1];
        points.push((x + heading.cos(), y + heading.sin()));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let extent = (x1 - x0).max(y1 - y0).max(f64::EPSILON);
    let last = (size - 1) as f64;
    let scale = last / extent;
    let (cx, cy) = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
    let place = |(x, y): (f64, f64)| {
        (
            ((x - cx) * scale + last / 2.0).clamp(0.0, last),
            ((y - cy) * scale + last / 2.0).clamp(0.0, last),
        )
    };
    let mut kernel = vec![0.0; size * size];
    let mut splat = |x: f64, y: f64, weight: f64| {
        let (c, r) = (x.floor().min(last - 1.0), y.floor().min(last - 1.0));
        let (fx, fy) = (x - c, y - r);
        let (c, r) = (c as usize, r as usize);
        for (dr, wr) in [(0, 1.0 - fy), (1, fy)] {
            for (dc, wc) in [(0, 1.0 - fx), (1, fx)] {
                kernel[(r + dr) * size + c + dc] += weight * wr * wc;
            }
        }
    };
    const SAMPLES: usize = 8;
    for pair in points.windows(2) {
        let (a, b) = (place(pair[0]), place(pair[1]));
        let length = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        for j in 0..SAMPLES {
            let t = (j as f64 + 0.5) / SAMPLES as f64;
            splat(
                a.0 + t * (b.0 - a.0),
                a.1 + t * (b.1 - a.1),
                length / SAMPLES as f64,
            );
        }
    }
    let total: f64 = kernel.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return Err(argument_error(
            "motion_blur",
            "the trajectory left no trace",
        ));
    }
    kernel.iter_mut().for_each(|v| *v /= total);
    Ok(kernel)
}
