//! The one-dimensional linear maps that separable operators apply along each axis, and
//! their dense f64 matrices for a given input size.
//!
//! - circular convolution with a 1-D kernel (a circulant matrix; the kernel's centre is at
//!   index `len / 2`, rounded down, as for the 2-D kernels of `kernel_blur`);
//! - block averaging by a factor;
//! - bicubic antialiased downscaling by a factor, matching MATLAB's `imresize(x, 1/f,
//!   'bicubic')` (Keys cubic with a = -0.5 widened by `f`, weights normalised to sum 1,
//!   symmetric boundary: `x[-1] = x[0]`). PIL's `resize(BICUBIC)` agrees in the interior and
//!   differs within `2 f` pixels of the border, where PIL drops the outside taps instead;
//! - a single row of weights (channel mixing, e.g. luma);
//! - a chain of the above, applied in order (composition of separable operators).

use nalgebra::DMatrix;

/// A linear map along one axis of an image, defined for every input size it accepts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum AxisMap {
    /// The identity.
    Identity,
    /// Circular convolution with this kernel, centred at index `len / 2`.
    Circulant(Vec<f64>),
    /// The mean over consecutive blocks of this many entries.
    BlockAverage(usize),
    /// Bicubic antialiased downscaling by this factor (see the module doc).
    Bicubic(usize),
    /// One output entry: this weighted sum of the (exactly `len`) inputs.
    Weights(Vec<f64>),
    /// These maps one after the other.
    Chain(Vec<AxisMap>),
}

impl AxisMap {
    /// True when the map is the identity for every size.
    pub fn is_identity(&self) -> bool {
        match self {
            AxisMap::Identity => true,
            AxisMap::Chain(maps) => maps.iter().all(AxisMap::is_identity),
            _ => false,
        }
    }

    /// `self` then `next`, flattened, without identities.
    pub fn then(&self, next: &AxisMap) -> AxisMap {
        let mut maps = Vec::new();
        for m in [self, next] {
            match m {
                AxisMap::Chain(inner) => maps.extend(inner.iter().cloned()),
                other => maps.push(other.clone()),
            }
        }
        maps.retain(|m| !m.is_identity());
        match maps.len() {
            0 => AxisMap::Identity,
            1 => maps.remove(0),
            _ => AxisMap::Chain(maps),
        }
    }

    /// The output size for input size `n`, or why `n` is not accepted (a phrase completing
    /// "needs a height ...").
    pub fn out_size(&self, n: usize) -> Result<usize, String> {
        match self {
            AxisMap::Identity | AxisMap::Circulant(_) => Ok(n),
            AxisMap::BlockAverage(f) | AxisMap::Bicubic(f) => {
                if *f == 0 || n == 0 || n % f != 0 {
                    Err(format!("divisible by {f}"))
                } else {
                    Ok(n / f)
                }
            }
            AxisMap::Weights(w) => {
                if n == w.len() {
                    Ok(1)
                } else {
                    Err(format!("of {}", w.len()))
                }
            }
            AxisMap::Chain(maps) => maps.iter().try_fold(n, |n, m| m.out_size(n)),
        }
    }

    /// The input size whose output size is `m`, or why no input gives `m`.
    pub fn in_size(&self, m: usize) -> Result<usize, String> {
        match self {
            AxisMap::Identity | AxisMap::Circulant(_) => Ok(m),
            AxisMap::BlockAverage(f) | AxisMap::Bicubic(f) => Ok(m * f),
            AxisMap::Weights(w) => {
                if m == 1 {
                    Ok(w.len())
                } else {
                    Err("of 1 in the measurement".to_string())
                }
            }
            AxisMap::Chain(maps) => maps.iter().rev().try_fold(m, |m, map| map.in_size(m)),
        }
    }

    /// The `[out_size(n), n]` matrix of the map for input size `n`.
    pub fn matrix(&self, n: usize) -> Result<DMatrix<f64>, String> {
        let m = self.out_size(n)?;
        Ok(match self {
            AxisMap::Identity => DMatrix::identity(n, n),
            AxisMap::Circulant(kernel) => circulant(kernel, n),
            AxisMap::BlockAverage(f) => {
                DMatrix::from_fn(m, n, |i, j| if j / f == i { 1.0 / *f as f64 } else { 0.0 })
            }
            AxisMap::Bicubic(f) => bicubic(*f, n),
            AxisMap::Weights(w) => DMatrix::from_row_slice(1, n, w),
            AxisMap::Chain(maps) => {
                let mut acc = DMatrix::identity(n, n);
                let mut size = n;
                for map in maps {
                    acc = map.matrix(size)? * acc;
                    size = map.out_size(size)?;
                }
                acc
            }
        })
    }
}

/// The circulant matrix of circular convolution with `kernel` centred at `len / 2`:
/// `y[i] = sum_q kernel[q] x[(i - q + len / 2) mod n]`.
fn circulant(kernel: &[f64], n: usize) -> DMatrix<f64> {
    let mut m = DMatrix::zeros(n, n);
    if n == 0 {
        return m;
    }
    let centre = kernel.len() / 2;
    for i in 0..n {
        for (q, &k) in kernel.iter().enumerate() {
            let j = (i + centre + q * (n - 1)) % n; // i - q + centre, mod n, without underflow
            m[(i, j)] += k;
        }
    }
    m
}

/// Keys' cubic convolution kernel with a = -0.5.
fn cubic(x: f64) -> f64 {
    let a = x.abs();
    if a <= 1.0 {
        (1.5 * a - 2.5) * a * a + 1.0
    } else if a < 2.0 {
        ((-0.5 * a + 2.5) * a - 4.0) * a + 2.0
    } else {
        0.0
    }
}

/// The `[n / f, n]` matrix of antialiased bicubic downscaling by `f` (see the module doc).
fn bicubic(f: usize, n: usize) -> DMatrix<f64> {
    let m = n / f;
    let scale = f as f64;
    let mut out = DMatrix::zeros(m, n);
    let period = 2 * n as i64;
    for i in 0..m {
        // The output sample's centre in input coordinates (pixel centres at integers).
        let c = scale * (i as f64 + 0.5) - 0.5;
        let first = (c - 2.0 * scale).floor() as i64;
        let last = (c + 2.0 * scale).ceil() as i64;
        let mut total = 0.0;
        for j in first..=last {
            let w = cubic((c - j as f64) / scale);
            if w == 0.0 {
                continue;
            }
            let t = j.rem_euclid(period);
            let jj = if t < n as i64 { t } else { period - 1 - t } as usize;
            out[(i, jj)] += w;
            total += w;
        }
        for j in 0..n {
            out[(i, j)] /= total;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circulant_matches_the_definition() {
        let k = [0.2, 0.5, 0.3];
        let m = circulant(&k, 5);
        // y[i] = 0.2 x[i+1] + 0.5 x[i] + 0.3 x[i-1]
        for i in 0..5 {
            assert_eq!(m[(i, (i + 1) % 5)], 0.2);
            assert_eq!(m[(i, i)], 0.5);
            assert_eq!(m[(i, (i + 4) % 5)], 0.3);
        }
        // A kernel longer than the signal wraps around.
        let wide = circulant(&[1.0; 7], 3);
        for i in 0..3 {
            assert_eq!(wide.row(i).sum(), 7.0);
        }
    }

    #[test]
    fn bicubic_rows_sum_to_one_and_factor_one_is_identity() {
        let m = bicubic(3, 12);
        for i in 0..4 {
            assert!((m.row(i).sum() - 1.0).abs() < 1e-14);
        }
        assert_eq!(bicubic(1, 6), DMatrix::identity(6, 6));
        // Interior row of factor 2: taps at offsets -3.5..3.5 / 2 around the centre.
        let m = bicubic(2, 16);
        let c = 2.0 * 4.0 + 0.5; // output 4
        let w: Vec<f64> = (0..16).map(|j| cubic((c - j as f64) / 2.0)).collect();
        let s: f64 = w.iter().sum();
        for j in 0..16 {
            assert!((m[(4, j)] - w[j] / s).abs() < 1e-15);
        }
    }

    #[test]
    fn bicubic_mirrors_at_the_border() {
        let m = bicubic(2, 8);
        // Output 0, centre 0.5: taps at -3..4; -1 -> 0, -2 -> 1, -3 -> 2.
        let c = 0.5;
        let tap = |j: f64| cubic((c - j) / 2.0);
        let s: f64 = (-3..=4).map(|j| tap(j as f64)).sum();
        assert!((m[(0, 0)] - (tap(0.0) + tap(-1.0)) / s).abs() < 1e-15);
        assert!((m[(0, 2)] - (tap(2.0) + tap(-3.0)) / s).abs() < 1e-15);
    }

    #[test]
    fn sizes_and_chains() {
        let chain = AxisMap::BlockAverage(2).then(&AxisMap::Bicubic(3));
        assert_eq!(chain.out_size(12), Ok(2));
        assert_eq!(chain.in_size(2), Ok(12));
        assert_eq!(chain.out_size(10), Err("divisible by 3".to_string()));
        assert_eq!(
            chain.matrix(12).ok(),
            Some(bicubic(3, 6) * AxisMap::BlockAverage(2).matrix(12).unwrap_or_default())
        );
        assert!(AxisMap::Identity.then(&AxisMap::Identity).is_identity());
        assert_eq!(
            AxisMap::Weights(vec![0.5; 3]).out_size(1),
            Err("of 3".to_string())
        );
    }
}
