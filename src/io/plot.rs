//! Pictures of two-dimensional problems, drawn with plotters: the prior's density, the
//! likelihood of a measurement, and the posterior with a path of points on it, side by side.
//!
//! Teaching examples use 2-D problems (an image of two pixels) because everything can be seen
//! at once: where the prior puts its mass, which points explain the measurement, and how a
//! solver's estimates move to the posterior's mode.

use candle_core::{DType, Device, Tensor};
use plotters::prelude::*;

/// The side of one panel, in pixels.
pub const PANEL: usize = 240;
/// The number of grid cells per axis at which densities are evaluated.
const CELLS: usize = 96;

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The problem is not two-dimensional.
    #[error("a density plot needs a problem with 2 unknowns, but the prior has {0}")]
    NotTwoD(usize),
    /// plotters failed.
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// The square of the plane a plot shows: `[lo, hi]` on both axes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The smallest coordinate shown.
    pub lo: f64,
    /// The largest coordinate shown.
    pub hi: f64,
}

impl Window {
    /// The smallest square, with a 10% margin, that holds all these points.
    pub fn around(points: &[[f64; 2]]) -> Window {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for p in points {
            for v in p {
                if v.is_finite() {
                    lo = lo.min(*v);
                    hi = hi.max(*v);
                }
            }
        }
        if !(lo.is_finite() && hi.is_finite()) || hi - lo < 1e-9 {
            let c = if lo.is_finite() { lo } else { 0.0 };
            return Window {
                lo: c - 1.0,
                hi: c + 1.0,
            };
        }
        let m = 0.1 * (hi - lo);
        Window {
            lo: lo - m,
            hi: hi + m,
        }
    }

    /// The centre of grid cell `i` of [`CELLS`].
    fn cell(&self, i: usize) -> f64 {
        self.lo + (i as f64 + 0.5) * (self.hi - self.lo) / CELLS as f64
    }
}

/// Log-densities of the three panels on the grid, row-major with x1 along rows (left to right)
/// and x2 upwards: (prior, likelihood). The posterior is their sum.
pub struct Fields {
    /// log p(x) on the grid.
    pub prior: Vec<f64>,
    /// log p(y | x) on the grid.
    pub likelihood: Vec<f64>,
}

/// The grid points of `window` as a `[CELLS * CELLS, 2]` list, x1 varying fastest.
pub fn grid_points(window: Window) -> Vec<[f64; 2]> {
    let mut out = Vec::with_capacity(CELLS * CELLS);
    for j in 0..CELLS {
        for i in 0..CELLS {
            out.push([window.cell(i), window.cell(j)]);
        }
    }
    out
}

/// A colour for a value in [0, 1]: white through blue to dark navy.
fn shade(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let mix = |a: f64, b: f64, t: f64| (a + (b - a) * t).round() as u8;
    if v < 0.5 {
        let t = v / 0.5;
        RGBColor(
            mix(255.0, 90.0, t),
            mix(255.0, 150.0, t),
            mix(255.0, 230.0, t),
        )
    } else {
        let t = (v - 0.5) / 0.5;
        RGBColor(
            mix(90.0, 10.0, t),
            mix(150.0, 30.0, t),
            mix(230.0, 110.0, t),
        )
    }
}

/// Draws the three panels (prior, likelihood, posterior with the points joined in order) and
/// returns the picture as a `[3, PANEL, 3 * PANEL]` tensor in [-1, 1].
pub fn draw(
    fields: &Fields,
    window: Window,
    points: &[[f64; 2]],
    dtype: DType,
    device: &Device,
) -> Result<Tensor, PlotError> {
    let (w, h) = (3 * PANEL, PANEL);
    let mut buffer = vec![255u8; w * h * 3];
    {
        let root =
            BitMapBackend::with_buffer(&mut buffer, (w as u32, h as u32)).into_drawing_area();
        let panels = root.split_evenly((1, 3));
        let posterior: Vec<f64> = fields
            .prior
            .iter()
            .zip(&fields.likelihood)
            .map(|(a, b)| a + b)
            .collect();
        for (k, (panel, field)) in panels
            .iter()
            .zip([&fields.prior, &fields.likelihood, &posterior])
            .enumerate()
        {
            let draw_err = |e: DrawingAreaErrorKind<_>| PlotError::Draw(format!("{e:?}"));
            let mut chart = ChartBuilder::on(panel)
                .margin(4)
                .build_cartesian_2d(window.lo..window.hi, window.lo..window.hi)
                .map_err(draw_err)?;
            // Densities relative to their maximum, on a square-root scale so tails show.
            let top = field.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let step = (window.hi - window.lo) / CELLS as f64;
            let cells = (0..CELLS * CELLS).map(|n| {
                let (i, j) = (n % CELLS, n / CELLS);
                let (x, y) = (window.lo + i as f64 * step, window.lo + j as f64 * step);
                let v = (field[n] - top).exp().sqrt();
                Rectangle::new([(x, y), (x + step, y + step)], shade(v).filled())
            });
            chart.draw_series(cells).map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(window.lo, window.lo), (window.hi, window.hi)],
                    BLACK.stroke_width(1),
                )))
                .map_err(draw_err)?;
            if k == 2 && !points.is_empty() {
                let path: Vec<(f64, f64)> = points.iter().map(|p| (p[0], p[1])).collect();
                chart
                    .draw_series(LineSeries::new(
                        path.clone(),
                        RGBColor(230, 120, 0).stroke_width(2),
                    ))
                    .map_err(draw_err)?;
                chart
                    .draw_series(
                        path.iter()
                            .map(|&p| Circle::new(p, 3, RGBColor(230, 120, 0).filled())),
                    )
                    .map_err(draw_err)?;
                if let Some(&last) = path.last() {
                    chart
                        .draw_series(std::iter::once(Circle::new(last, 5, RED.filled())))
                        .map_err(draw_err)?;
                }
            }
        }
        root.present()
            .map_err(|e| PlotError::Draw(format!("{e:?}")))?;
    }
    // Interleaved RGB rows -> [3, H, W] in [-1, 1].
    let mut planes = vec![0f32; 3 * w * h];
    for (p, px) in buffer.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planes[c * w * h + p] = f32::from(px[c]) / 127.5 - 1.0;
        }
    }
    Ok(Tensor::from_vec(planes, (3, h, w), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_holds_the_points_with_a_margin() {
        let w = Window::around(&[[0.0, 1.0], [2.0, -1.0]]);
        assert!(w.lo < -1.0 && w.hi > 2.0);
        assert_eq!(Window::around(&[]), Window { lo: -1.0, hi: 1.0 });
    }

    #[test]
    fn draws_three_panels_with_the_path() {
        let window = Window { lo: -2.0, hi: 2.0 };
        let pts = grid_points(window);
        let prior: Vec<f64> = pts.iter().map(|p| -(p[0] * p[0] + p[1] * p[1])).collect();
        let likelihood: Vec<f64> = pts.iter().map(|p| -(p[0] - 1.0).powi(2) * 8.0).collect();
        let img = draw(
            &Fields { prior, likelihood },
            window,
            &[[-1.5, -1.5], [0.0, 0.0], [0.8, 0.1]],
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(img.dims(), &[3, PANEL, 3 * PANEL]);
        let v = img.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
        // The prior's mode (0, 0) is dark in the first panel: its centre pixel is not white.
        let centre = (PANEL / 2) * 3 * PANEL + PANEL / 2;
        assert!(v[centre] < 0.0, "{}", v[centre]);
        // The path's end point is drawn in red in the third panel.
        let reds = (0..PANEL * 3 * PANEL)
            .filter(|&p| v[p] > 0.9 && v[PANEL * 3 * PANEL + p] < -0.9)
            .count();
        assert!(reds > 10, "{reds} red pixels");
    }
}
