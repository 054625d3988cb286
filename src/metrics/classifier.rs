//! Scores from a trained classifier: predicted classes, accuracy against labels, the share of
//! confident predictions, and the Fréchet distance between feature sets (FID's formula, here
//! with the features of a small digit classifier instead of Inception's).

use candle_core::{DType, Device, Tensor, D};
use nalgebra::{DMatrix, DVector, SymmetricEigen};

use crate::models::{Classifier, ModelError};

/// Why a classifier score cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The classifier cannot run on these images.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tensor library failed.
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    /// Labels and images disagree in number.
    #[error("{labels} labels for {images} images; give one label per image")]
    LabelCount {
        /// Number of labels.
        labels: usize,
        /// Number of images.
        images: usize,
    },
    /// Features are not `[N, d]` or the two sets differ in width.
    #[error(
        "features must be [N, d] matrices of the same width d with N >= 2, not {a:?} and {b:?}"
    )]
    FeatureShape {
        /// The first set's shape.
        a: Vec<usize>,
        /// The second set's shape.
        b: Vec<usize>,
    },
}

/// A classifier's outputs on a batch, computed once and shared by every score.
#[derive(Debug, Clone)]
pub struct Scores {
    /// Class probabilities `[N, K]` (softmax of the logits).
    pub probabilities: Tensor,
    /// Penultimate-layer features `[N, d]`.
    pub features: Tensor,
}

impl Scores {
    /// Runs `classifier` on `x` (`[N, C, H, W]` or one `[C, H, W]` image).
    pub fn of(classifier: &Classifier, x: &Tensor) -> Result<Scores, ScoreError> {
        let features = classifier.features(x)?;
        let logits = classifier.logits_of_features(&features)?;
        let probabilities = candle_nn::ops::softmax(&logits, D::Minus1)?;
        Ok(Scores {
            probabilities,
            features,
        })
    }

    fn rows(&self) -> Result<Vec<Vec<f64>>, ScoreError> {
        Ok(self
            .probabilities
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?)
    }

    fn argmax_and_max(&self) -> Result<Vec<(usize, f64)>, ScoreError> {
        Ok(self
            .rows()?
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |best, (k, &p)| {
                        if p > best.1 {
                            (k, p)
                        } else {
                            best
                        }
                    })
            })
            .collect())
    }

    /// The most likely class of each image, `[N]`, as numbers in the probabilities' dtype.
    pub fn predictions(&self) -> Result<Tensor, ScoreError> {
        let classes: Vec<f64> = self
            .argmax_and_max()?
            .iter()
            .map(|&(k, _)| k as f64)
            .collect();
        let n = classes.len();
        Ok(Tensor::from_vec(classes, n, &Device::Cpu)?
            .to_dtype(self.probabilities.dtype())?
            .to_device(self.probabilities.device())?)
    }

    /// The share of images whose most likely class equals the label (`labels`: `[N]` class
    /// numbers, e.g. from `data/mnist/test/labels.npy`).
    pub fn accuracy(&self, labels: &Tensor) -> Result<f64, ScoreError> {
        let hits = self.correct(labels)?;
        Ok(hits.iter().sum::<f64>() / hits.len().max(1) as f64)
    }

    /// For each image, 1.0 when its most likely class equals its label and 0.0 otherwise.
    pub fn correct(&self, labels: &Tensor) -> Result<Vec<f64>, ScoreError> {
        let best = self.argmax_and_max()?;
        let labels = labels
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        if labels.len() != best.len() {
            return Err(ScoreError::LabelCount {
                labels: labels.len(),
                images: best.len(),
            });
        }
        Ok(best
            .iter()
            .zip(&labels)
            .map(|((k, _), &l)| if *k as f64 == l.round() { 1.0 } else { 0.0 })
            .collect())
    }

    /// The share of images whose most likely class has probability above `threshold`.
    pub fn confident_share(&self, threshold: f64) -> Result<f64, ScoreError> {
        let best = self.argmax_and_max()?;
        let sure = best.iter().filter(|(_, p)| *p > threshold).count();
        Ok(sure as f64 / best.len().max(1) as f64)
    }
}

/// Mean and (unbiased) covariance of the rows of an `[N, d]` matrix.
fn moments(x: &DMatrix<f64>) -> (DVector<f64>, DMatrix<f64>) {
    let n = x.nrows() as f64;
    let mean = x.row_mean().transpose();
    let centred = DMatrix::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / (n - 1.0);
    (mean, cov)
}

/// `V sqrt(max(L, 0)) V^T` for a symmetric positive semi-definite `m`.
fn psd_sqrt(m: &DMatrix<f64>) -> DMatrix<f64> {
    let eig = SymmetricEigen::new(m.clone());
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// The Fréchet distance between Gaussians fitted to the rows of `a` (`[N, d]`) and `b`
/// (`[M, d]`): `|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`, in f64,
/// through symmetric eigendecompositions (no complex matrix square root).
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Result<f64, ScoreError> {
    let bad = || ScoreError::FeatureShape {
        a: a.dims().to_vec(),
        b: b.dims().to_vec(),
    };
    let (a2, b2) = (a.dims(), b.dims());
    if a2.len() != 2 || b2.len() != 2 || a2[1] != b2[1] || a2[0] < 2 || b2[0] < 2 {
        return Err(bad());
    }
    let matrix = |t: &Tensor| -> Result<DMatrix<f64>, ScoreError> {
        let rows = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?;
        let (n, d) = (rows.len(), rows[0].len());
        Ok(DMatrix::from_row_iterator(n, d, rows.into_iter().flatten()))
    };
    let (ma, ca) = moments(&matrix(a)?);
    let (mb, cb) = moments(&matrix(b)?);
    let root_a = psd_sqrt(&ca);
    let middle = &root_a * &cb * &root_a;
    let middle = (&middle + middle.transpose()) / 2.0;
    let cross: f64 = SymmetricEigen::new(middle)
        .eigenvalues
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    // Rounding can leave a tiny negative value for (nearly) identical sets.
    Ok(((ma - mb).norm_squared() + ca.trace() + cb.trace() - 2.0 * cross).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(rows: &[Vec<f64>]) -> Tensor {
        let d = rows[0].len();
        Tensor::from_vec(rows.concat(), (rows.len(), d), &Device::Cpu).unwrap()
    }

    /// Seeded standard normals, `n` rows of width `d`, scaled per column and shifted.
    fn gaussian_rows(n: usize, scale: &[f64], shift: &[f64], seed: u64) -> Vec<Vec<f64>> {
        let mut rng = crate::random::generator(seed, "frechet test", 0);
        let draws = crate::random::normals(&mut rng, n * scale.len());
        draws
            .chunks(scale.len())
            .map(|r| {
                r.iter()
                    .zip(scale.iter().zip(shift))
                    .map(|(z, (s, m))| m + s * z)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn identical_sets_are_at_distance_zero() {
        let a = features(&gaussian_rows(50, &[1.0, 2.0, 0.5], &[0.0, 1.0, -1.0], 1));
        let fd = frechet_distance(&a, &a).unwrap();
        assert!(fd.abs() < 1e-9, "{fd}");
    }

    #[test]
    fn matches_the_closed_form_for_diagonal_covariances() {
        // For diagonal covariances, FD = |mu_a - mu_b|^2 + sum (s_a - s_b)^2 with the sample
        // moments; computed here independently from the sample means and variances.
        let a = gaussian_rows(400, &[1.0, 2.0], &[0.0, 0.0], 2);
        let b = gaussian_rows(400, &[3.0, 0.5], &[1.0, -2.0], 3);
        // Make the sample covariances exactly diagonal: an axis-aligned cross of points.
        let cross = |rows: &[Vec<f64>]| -> Vec<Vec<f64>> {
            rows.iter()
                .flat_map(|r| {
                    [
                        vec![r[0], 0.0],
                        vec![-r[0], 0.0],
                        vec![0.0, r[1]],
                        vec![0.0, -r[1]],
                    ]
                })
                .collect()
        };
        let (a, b) = (cross(&a), cross(&b));
        let stats = |rows: &[Vec<f64>]| {
            let n = rows.len() as f64;
            let m: Vec<f64> = (0..2)
                .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
                .collect();
            let v: Vec<f64> = (0..2)
                .map(|j| rows.iter().map(|r| (r[j] - m[j]).powi(2)).sum::<f64>() / (n - 1.0))
                .collect();
            (m, v)
        };
        let ((ma, va), (mb, vb)) = (stats(&a), stats(&b));
        let want: f64 = (0..2)
            .map(|j| (ma[j] - mb[j]).powi(2) + (va[j].sqrt() - vb[j].sqrt()).powi(2))
            .sum();
        let got = frechet_distance(&features(&a), &features(&b)).unwrap();
        assert!((got - want).abs() / want < 1e-10, "{got} vs {want}");
    }

    #[test]
    fn mismatched_widths_are_refused() {
        let a = features(&gaussian_rows(5, &[1.0, 1.0], &[0.0, 0.0], 4));
        let b = features(&gaussian_rows(5, &[1.0, 1.0, 1.0], &[0.0, 0.0, 0.0], 5));
        assert!(matches!(
            frechet_distance(&a, &b),
            Err(ScoreError::FeatureShape { .. })
        ));
    }
}
