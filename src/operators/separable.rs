//! Separable linear operators `y = (M_c ⊗ M_h ⊗ M_w) x`: one dense matrix per axis of a
//! `[C, H, W]` image. Identity, the circular Gaussian and uniform blurs, block-average and
//! bicubic downsampling and `to_grey` are all of this kind, and so is any composition or
//! scaling of them (the per-axis matrices multiply), which keeps an exact SVD.
//!
//! The matrices depend on the image size, so they are built on first use for each domain
//! shape, in f64 with nalgebra, together with each axis's SVD `M = U S V^T` (full square
//! `U` and `V`). The SVD of the whole operator is the Kronecker product of the axes' SVDs;
//! it gives exact `gram_solve` and `pinv` (both cut the values that are noise in the tensor's
//! precision: squares below 10 eps(dtype) of the largest). Singular values below `max(m, n) eps s_max` on an
//! axis are set to 0 (the usual numerical rank). Tensors of the factors are cached per dtype
//! and device; `apply`, `adjoint` and the SVD maps are candle matmuls (differentiable). A
//! batch `[N, C, H, W]` goes through the same products at once, every image by the same
//! matrices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, SymmetricEigen, SVD};

use super::axis::AxisMap;
use super::error::{shape_error, Result};
use super::linear::{LinearOperator, Svd};
use super::tensors::{
    apply_axes, device_key, image_dims, item_dims, nearest_resize, shape_str, split_batch,
    with_batch, AxisMatrix, DeviceKey,
};

/// A separable linear operator on `[C, H, W]` images (see the module doc).
#[derive(Debug)]
pub struct Separable {
    name: String,
    axes: [AxisMap; 3],
    factor: f64,
    cache: Mutex<HashMap<Vec<usize>, Arc<Factors>>>,
}

/// The f64 factors of one axis for one input size.
#[derive(Debug)]
struct AxisFactors {
    /// None: the identity (no matmul, unit singular values).
    m: Option<DMatrix<f64>>,
    /// Full `[m, m]` left singular vectors.
    u: DMatrix<f64>,
    /// Full `[n, n]` right singular vectors.
    v: DMatrix<f64>,
    /// The `min(m, n)` singular values, descending, with the numerically zero ones set to 0.
    s: Vec<f64>,
}

impl AxisFactors {
    fn identity() -> Self {
        Self {
            m: None,
            u: DMatrix::zeros(0, 0),
            v: DMatrix::zeros(0, 0),
            s: Vec::new(),
        }
    }

    fn new(m: DMatrix<f64>) -> std::result::Result<Self, String> {
        let (rows, cols) = m.shape();
        let (u_thin, singular, v_thin) = thin_svd(&m)?;
        let s_max = singular.iter().copied().fold(0.0, f64::max);
        let tol = rows.max(cols) as f64 * f64::EPSILON * s_max;
        let s: Vec<f64> = singular
            .iter()
            .map(|&s| if s > tol { s } else { 0.0 })
            .collect();
        let u = complete(&u_thin);
        let v = complete(&v_thin);
        Ok(Self {
            m: Some(m),
            u,
            v,
            s,
        })
    }

    /// The singular values padded with zeros to `len`.
    fn padded(&self, len: usize) -> Vec<f64> {
        let mut s = self.s.clone();
        s.resize(len, 0.0);
        s
    }

    /// `U` restricted to the first `k` columns and padded with zero columns to `[m, n]`.
    fn u_layout(&self, n: usize) -> DMatrix<f64> {
        let (rows, _) = self.u.shape();
        let k = self.s.len();
        DMatrix::from_fn(rows, n, |i, j| if j < k { self.u[(i, j)] } else { 0.0 })
    }
}

/// `(U, s, V)` of a thin SVD.
type ThinSvd = (DMatrix<f64>, Vec<f64>, DMatrix<f64>);

/// A thin SVD `m = U diag(s) V^T` with `s` descending, accurate to rounding.
///
/// nalgebra's bidiagonal SVD is occasionally inaccurate on matrices with many tiny singular
/// values (a circulant Gaussian of sigma 3 on 64 points reconstructs to only 1e-5), so a
/// symmetric matrix (every circular blur with a symmetric kernel) goes through the
/// symmetric eigendecomposition instead (`U = Q sign(Λ)`, `V = Q`, `s = |Λ|`), and any
/// other is accepted from the SVD of `m` or of `m^T` only after checking the reconstruction
/// and the orthogonality of the factors.
fn thin_svd(m: &DMatrix<f64>) -> std::result::Result<ThinSvd, String> {
    let (rows, cols) = m.shape();
    let scale = m.amax();
    if scale == 0.0 {
        let k = rows.min(cols);
        return Ok((
            DMatrix::identity(rows, k),
            vec![0.0; k],
            DMatrix::identity(cols, k),
        ));
    }
    let tol = 1e-12 * scale * (rows.max(cols) as f64).sqrt();
    if rows == cols && (m - m.transpose()).amax() <= 1e-14 * scale {
        let e = SymmetricEigen::new((m + m.transpose()) * 0.5);
        let mut order: Vec<usize> = (0..rows).collect();
        order.sort_by(|&a, &b| e.eigenvalues[b].abs().total_cmp(&e.eigenvalues[a].abs()));
        let v = DMatrix::from_fn(rows, rows, |i, j| e.eigenvectors[(i, order[j])]);
        let u = DMatrix::from_fn(rows, rows, |i, j| {
            let l = e.eigenvalues[order[j]];
            if l < 0.0 {
                -v[(i, j)]
            } else {
                v[(i, j)]
            }
        });
        let s = order.iter().map(|&j| e.eigenvalues[j].abs()).collect();
        return Ok((u, s, v));
    }
    for transpose in [false, true] {
        let a = if transpose { m.transpose() } else { m.clone() };
        let Some(svd) = SVD::try_new(a, true, true, f64::EPSILON, 0) else {
            continue;
        };
        let (Some(u), Some(v_t)) = (svd.u, svd.v_t) else {
            continue;
        };
        let (u, v) = if transpose {
            (v_t.transpose(), u)
        } else {
            (u, v_t.transpose())
        };
        let s: Vec<f64> = svd.singular_values.iter().copied().collect();
        let rebuilt = &u * DMatrix::from_diagonal(&svd.singular_values) * v.transpose();
        let k = s.len();
        let eye = DMatrix::<f64>::identity(k, k);
        let good = (rebuilt - m).amax() <= tol
            && (u.transpose() * &u - &eye).amax() <= 1e-12
            && (v.transpose() * &v - &eye).amax() <= 1e-12;
        if good {
            return Ok((u, s, v));
        }
    }
    Err("could not compute an accurate SVD of an axis matrix".to_string())
}

/// `q` (orthonormal columns, `[n, k]`) completed to an orthogonal `[n, n]` matrix whose first
/// `k` columns are `q`'s: the extra columns are the last `n - k` columns of the Q factor of
/// `[q | I]`, which are orthogonal to the span of `q`.
fn complete(q: &DMatrix<f64>) -> DMatrix<f64> {
    let (n, k) = q.shape();
    if k >= n {
        return q.columns(0, n).into_owned();
    }
    let aug = DMatrix::from_fn(n, k + n, |i, j| {
        if j < k {
            q[(i, j)]
        } else if i == j - k {
            1.0
        } else {
            0.0
        }
    });
    let full = aug.qr().q();
    let mut out = DMatrix::zeros(n, n);
    out.columns_mut(0, k).copy_from(q);
    out.columns_mut(k, n - k).copy_from(&full.columns(k, n - k));
    out
}

/// Everything that depends on one domain shape.
#[derive(Debug)]
struct Factors {
    domain: Vec<usize>,
    range: Vec<usize>,
    axes: [AxisFactors; 3],
    tensors: Mutex<HashMap<DeviceKey, Arc<Tensors>>>,
}

/// The factors as tensors of one dtype on one device (None: identity axis).
#[derive(Debug)]
struct Tensors {
    fwd: [Option<AxisMatrix>; 3],
    /// `V` per axis; `V^T` is its transpose.
    v: [Option<AxisMatrix>; 3],
    /// `U` as `[m, n]` in the domain-shaped coefficient layout; `U^T` is its transpose.
    u_layout: [Option<AxisMatrix>; 3],
    /// The full square `U` per axis.
    u: [Option<AxisMatrix>; 3],
    /// Range-shaped squared singular values of `A A^T`.
    gram_spectrum: Tensor,
    /// Domain-shaped singular values.
    singular_values: Tensor,
}

fn outer(vectors: [Vec<f64>; 3], dtype: DType, device: &Device) -> Result<Tensor> {
    let [a, b, c] = vectors;
    let mut data = Vec::with_capacity(a.len() * b.len() * c.len());
    for &x in &a {
        for &y in &b {
            for &z in &c {
                data.push(x * y * z);
            }
        }
    }
    Ok(
        Tensor::from_vec(data, (a.len(), b.len(), c.len()), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?,
    )
}

impl Factors {
    /// The domain-shaped singular values with each axis's values below `s_min` set to 0 before
    /// the product (identity axes keep their 1s).
    fn singular_values_cut(&self, s_min: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        let per_axis: [Vec<f64>; 3] = std::array::from_fn(|i| {
            let ax = &self.axes[i];
            if ax.m.is_none() {
                vec![1.0; self.domain[i]]
            } else {
                ax.padded(self.domain[i])
                    .into_iter()
                    .map(|v| if v < s_min { 0.0 } else { v })
                    .collect()
            }
        });
        outer(per_axis, dtype, device)
    }

    fn tensors(&self, dtype: DType, device: &Device) -> Result<Arc<Tensors>> {
        let key = device_key(dtype, device);
        let mut cache = self.tensors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let each =
            |f: &dyn Fn(&AxisFactors, usize) -> DMatrix<f64>| -> Result<[Option<AxisMatrix>; 3]> {
                let mut out: [Option<AxisMatrix>; 3] = [None, None, None];
                for (i, (ax, slot)) in self.axes.iter().zip(out.iter_mut()).enumerate() {
                    if ax.m.is_some() {
                        *slot = Some(AxisMatrix::new(&f(ax, self.domain[i]), dtype, device)?);
                    }
                }
                Ok(out)
            };
        let spectrum = |len: &[usize], square: bool| -> [Vec<f64>; 3] {
            std::array::from_fn(|i| {
                let ax = &self.axes[i];
                if ax.m.is_none() {
                    vec![1.0; len[i]]
                } else {
                    let s = ax.padded(len[i]);
                    if square {
                        s.iter().map(|x| x * x).collect()
                    } else {
                        s
                    }
                }
            })
        };
        let t = Arc::new(Tensors {
            fwd: each(&|ax, _| ax.m.clone().unwrap_or_default())?,
            v: each(&|ax, _| ax.v.clone())?,
            u_layout: each(&|ax, n| ax.u_layout(n))?,
            u: each(&|ax, _| ax.u.clone())?,
            gram_spectrum: outer(spectrum(&self.range, true), dtype, device)?,
            singular_values: outer(spectrum(&self.domain, false), dtype, device)?,
        });
        cache.insert(key, t.clone());
        Ok(t)
    }
}

/// The three matrices as `apply_axes` takes them, transposed or not.
fn refs(mats: &[Option<AxisMatrix>; 3], transpose: bool) -> [Option<AxisMatrix>; 3] {
    std::array::from_fn(|i| {
        mats[i]
            .as_ref()
            .map(|m| if transpose { m.transposed() } else { m.clone() })
    })
}

fn run(x: &Tensor, mats: [Option<AxisMatrix>; 3]) -> Result<Tensor> {
    let [a, b, c] = &mats;
    apply_axes(x, [a.as_ref(), b.as_ref(), c.as_ref()])
}

const AXIS_NOUNS: [&str; 3] = ["channel count", "height", "width"];

impl Separable {
    /// The operator applying `axes[0]` to channels, `axes[1]` to rows and `axes[2]` to
    /// columns, times `factor`.
    pub(crate) fn new(name: impl Into<String>, axes: [AxisMap; 3], factor: f64) -> Self {
        Self {
            name: name.into(),
            axes,
            factor,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `self` then `next`, as one separable operator named `name`.
    pub fn then(&self, next: &Separable, name: impl Into<String>) -> Separable {
        let axes = std::array::from_fn(|i| self.axes[i].then(&next.axes[i]));
        Separable::new(name, axes, self.factor * next.factor)
    }

    /// `c` times `self`, named `name`.
    pub fn scaled(&self, c: f64, name: impl Into<String>) -> Separable {
        Separable::new(name, self.axes.clone(), self.factor * c)
    }

    fn factors(&self, domain: &[usize]) -> Result<Arc<Factors>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = cache.get(domain) {
            return Ok(f.clone());
        }
        let range = self.range_shape(domain)?;
        let mut axes = [
            AxisFactors::identity(),
            AxisFactors::identity(),
            AxisFactors::identity(),
        ];
        for (i, slot) in axes.iter_mut().enumerate() {
            let scaled = i == 0 && self.factor != 1.0;
            if self.axes[i].is_identity() && !scaled {
                continue;
            }
            let reason = |r: String| shape_error(self.name.clone(), r);
            let mut m = self.axes[i].matrix(domain[i]).map_err(reason)?;
            if i == 0 {
                m *= self.factor;
            }
            *slot = AxisFactors::new(m).map_err(reason)?;
        }
        let f = Arc::new(Factors {
            domain: domain.to_vec(),
            range,
            axes,
            tensors: Mutex::new(HashMap::new()),
        });
        cache.insert(domain.to_vec(), f.clone());
        Ok(f)
    }

    fn tensors_for(&self, domain: &[usize], like: &Tensor) -> Result<Arc<Tensors>> {
        self.factors(domain)?.tensors(like.dtype(), like.device())
    }

    /// Checks that `y` is a measurement of shape `expected` or a batch of them.
    fn check_range(&self, y: &Tensor, expected: &[usize]) -> Result<()> {
        if item_dims(&self.name, y.dims())? != expected {
            return Err(shape_error(
                self.name.clone(),
                format!(
                    "needs a measurement of shape {}, got {}",
                    shape_str(expected),
                    shape_str(y.dims())
                ),
            ));
        }
        Ok(())
    }
}

impl LinearOperator for Separable {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn range_shape(&self, domain: &[usize]) -> Result<Vec<usize>> {
        image_dims(&self.name, domain)?;
        let mut out = Vec::with_capacity(3);
        for (i, map) in self.axes.iter().enumerate() {
            out.push(map.out_size(domain[i]).map_err(|r| {
                shape_error(
                    self.name.clone(),
                    format!("needs a {} {r}, got {}", AXIS_NOUNS[i], shape_str(domain)),
                )
            })?);
        }
        Ok(out)
    }

    fn domain_shape(&self, range: &[usize]) -> Result<Vec<usize>> {
        image_dims(&self.name, range)?;
        let mut out = Vec::with_capacity(3);
        for (i, map) in self.axes.iter().enumerate() {
            out.push(map.in_size(range[i]).map_err(|r| {
                shape_error(
                    self.name.clone(),
                    format!(
                        "needs a measurement {} {r}, got {}",
                        AXIS_NOUNS[i],
                        shape_str(range)
                    ),
                )
            })?);
        }
        Ok(out)
    }

    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.tensors_for(&item_dims(&self.name, x.dims())?, x)?;
        run(x, refs(&t.fwd, false))
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        let domain = self.domain_shape(&item_dims(&self.name, y.dims())?)?;
        let t = self.tensors_for(&domain, y)?;
        run(y, refs(&t.fwd, true))
    }

    fn gram_solve(&self, r: &Tensor, a: f64, b: f64) -> Result<Tensor> {
        let domain = self.domain_shape(&item_dims(&self.name, r.dims())?)?;
        let t = self.tensors_for(&domain, r)?;
        let coeffs = run(r, refs(&t.u, true))?;
        let d = t.gram_spectrum.affine(a, b)?;
        let inv = super::tensors::truncated_reciprocal(&d, r.dtype())?;
        run(&coeffs.broadcast_mul(&inv)?, refs(&t.u, false))
    }

    fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        let domain = self.domain_shape(&item_dims(&self.name, y.dims())?)?;
        let t = self.tensors_for(&domain, y)?;
        // A^+ y = V S^+ U^T y, with the cut of `gram_solve`: singular values whose squares are
        // below 10 eps(dtype) of the largest are noise in the tensor's precision (a blur's
        // highest frequencies, in f32) and count as zero. The per-axis cut alone leaves
        // products of small per-axis values, which turned f32 rounding into values of 1e4.
        let coeffs = run(y, refs(&t.u_layout, true))?;
        let s = &t.singular_values;
        let top = s
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        let floor = top * (10.0 * super::tensors::dtype_epsilon(y.dtype())).sqrt();
        let inv = s.gt(floor)?.where_cond(&s.recip()?, &s.zeros_like()?)?;
        run(&coeffs.broadcast_mul(&inv)?, refs(&t.v, false))
    }

    fn svd(&self) -> Option<&dyn Svd> {
        Some(self)
    }

    fn separable(&self) -> Option<&Separable> {
        Some(self)
    }

    fn visualize(&self, y: &Tensor) -> Result<Tensor> {
        let (batch, range) = split_batch(&self.name, y.dims())?;
        let domain = self.domain_shape(&range)?;
        nearest_resize(y, &with_batch(batch, &domain))
    }
}

impl Svd for Separable {
    fn singular_values(&self, domain: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(self
            .factors(domain)?
            .tensors(dtype, device)?
            .singular_values
            .clone())
    }

    fn singular_values_cut(
        &self,
        domain: &[usize],
        dtype: DType,
        device: &Device,
        s_min: f64,
    ) -> Result<Tensor> {
        self.factors(domain)?
            .singular_values_cut(s_min, dtype, device)
    }

    fn vt(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.tensors_for(&item_dims(&self.name, x.dims())?, x)?;
        run(x, refs(&t.v, true))
    }

    fn v(&self, c: &Tensor) -> Result<Tensor> {
        let t = self.tensors_for(&item_dims(&self.name, c.dims())?, c)?;
        run(c, refs(&t.v, false))
    }

    fn ut(&self, y: &Tensor, domain: &[usize]) -> Result<Tensor> {
        let f = self.factors(domain)?;
        self.check_range(y, &f.range)?;
        let t = f.tensors(y.dtype(), y.device())?;
        run(y, refs(&t.u_layout, true))
    }

    fn u(&self, c: &Tensor) -> Result<Tensor> {
        let t = self.tensors_for(&item_dims(&self.name, c.dims())?, c)?;
        run(c, refs(&t.u_layout, false))
    }
}

#[cfg(test)]
mod tests {
    use super::super::builtin::{
        bicubic_downsample, downsample, gaussian_blur, gaussian_kernel, identity, to_grey,
        uniform_blur,
    };
    use super::super::operator::Operator;
    use super::super::testing::check_autograd_is_adjoint;
    use super::super::testing::{assert_close, check_linear, randn, values};
    use super::*;

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn blurs_pass_the_linear_checks() {
        for domain in [[1, 6, 8], [3, 12, 12]] {
            check_linear(&identity(), &domain, true);
            check_linear(&ok(gaussian_blur(0.7, 0)), &domain, true);
            check_linear(&ok(gaussian_blur(1.5, 5)), &domain, false);
            check_linear(&ok(uniform_blur(3)), &domain, true);
            check_linear(&ok(uniform_blur(2)), &domain, true);
        }
    }

    #[test]
    fn downsamplers_and_grey_pass_the_linear_checks() {
        for domain in [[1, 6, 8], [3, 12, 12]] {
            check_linear(&ok(downsample(2)), &domain, true);
            check_linear(&ok(bicubic_downsample(2)), &domain, true);
        }
        check_linear(&ok(downsample(3)), &[3, 12, 12], true);
        check_linear(&ok(bicubic_downsample(3)), &[1, 12, 6], true);
        check_linear(&to_grey(), &[3, 6, 8], true);
        check_linear(&to_grey(), &[3, 12, 12], true);
    }

    #[test]
    fn fused_compositions_and_scalings_stay_separable() {
        let down = ok(downsample(2));
        let blur = ok(gaussian_blur(0.7, 0));
        let fused = Operator::compose(&down, &blur);
        assert!(matches!(&fused, Operator::Linear(l) if l.separable().is_some()));
        assert!(fused.svd().is_some());
        assert_eq!(fused.name(), "downsample(2) >> gaussian_blur(0.7)");
        let x = randn(&[3, 12, 12], 4);
        let one_by_one = ok(blur.apply(&ok(down.apply(&x))));
        assert_close(
            &values(&ok(fused.apply(&x))),
            &values(&one_by_one),
            1e-14,
            "fused",
        );
        check_linear(&fused, &[3, 12, 12], true);
        let grey_blur = Operator::compose(&ok(gaussian_blur(0.8, 0)), &to_grey());
        check_linear(&grey_blur, &[3, 6, 8], true);
        let scaled = Operator::scale(-2.5, &ok(downsample(2)));
        assert!(scaled.svd().is_some());
        assert_close(
            &values(&ok(scaled.apply(&x))),
            &values(&ok(down.apply(&x)))
                .iter()
                .map(|v| -2.5 * v)
                .collect::<Vec<_>>(),
            1e-15,
            "scaled",
        );
        check_linear(&scaled, &[1, 6, 8], true);
    }

    #[test]
    fn gaussian_singular_values_are_the_kernel_fourier_magnitudes() {
        let sigma = 1.2;
        let k = ok(gaussian_kernel(sigma, 0));
        let c = (k.len() / 2) as f64;
        let spectrum = |n: usize| -> Vec<f64> {
            (0..n)
                .map(|f| {
                    let (mut re, mut im) = (0.0, 0.0);
                    for (q, g) in k.iter().enumerate() {
                        let angle =
                            2.0 * std::f64::consts::PI * f as f64 * (q as f64 - c) / n as f64;
                        re += g * angle.cos();
                        im += g * angle.sin();
                    }
                    (re * re + im * im).sqrt()
                })
                .collect()
        };
        let (h, w) = (6, 8);
        let mut expect: Vec<f64> = spectrum(h)
            .iter()
            .flat_map(|a| spectrum(w).into_iter().map(move |b| a * b))
            .collect();
        let op = ok(gaussian_blur(sigma, 0));
        let svd = op.svd().unwrap_or_else(|| panic!("no svd"));
        let mut got = values(&ok(svd.singular_values(
            &[1, h, w],
            DType::F64,
            &Device::Cpu,
        )));
        expect.sort_by(f64::total_cmp);
        got.sort_by(f64::total_cmp);
        assert_close(&got, &expect, 1e-13, "singular values");
    }

    #[test]
    fn the_cut_is_per_axis_for_separable_operators_and_on_the_value_otherwise() {
        let s_min = 0.3;
        let op = ok(gaussian_blur(1.2, 0));
        let svd = op.svd().unwrap_or_else(|| panic!("no svd"));
        let domain = [1, 6, 8];
        let all = values(&ok(svd.singular_values(&domain, DType::F64, &Device::Cpu)));
        let cut = values(&ok(svd.singular_values_cut(
            &domain,
            DType::F64,
            &Device::Cpu,
            s_min,
        )));
        // The per-axis values, descending: the first row and column of the outer product, over
        // the largest value of the other axis (the same kernel on both axes, so sqrt(top)).
        let (h, w) = (6, 8);
        let top = all[0];
        let row = |i: usize| all[i * w] / top.sqrt();
        let col = |j: usize| all[j] / top.sqrt();
        let mut kept_below = 0;
        for i in 0..h {
            for j in 0..w {
                let v = all[i * w + j];
                let want = if row(i) < s_min || col(j) < s_min {
                    0.0
                } else {
                    v
                };
                assert!((cut[i * w + j] - want).abs() < 1e-12, "({i}, {j})");
                if want > 0.0 && v < s_min {
                    kept_below += 1;
                }
            }
        }
        assert!(
            kept_below > 0,
            "no product below the cut was kept: the case shows nothing"
        );
    }

    #[test]
    fn kernels_constants_and_shape_errors() {
        let k = ok(gaussian_kernel(2.0, 0));
        assert_eq!(k.len(), 13);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        let constant = ok(Tensor::full(0.37f64, (3, 8, 8), &Device::Cpu).map_err(Into::into));
        let y = ok(ok(downsample(2)).apply(&constant));
        assert_eq!(y.dims(), &[3, 4, 4]);
        assert!(values(&y).iter().all(|v| (v - 0.37).abs() < 1e-15));
        let blurred = ok(ok(gaussian_blur(1.0, 0)).apply(&constant));
        assert!(values(&blurred).iter().all(|v| (v - 0.37).abs() < 1e-14));
        let err = ok(downsample(4))
            .apply(&ok(
                Tensor::zeros((1, 30, 30), DType::F32, &Device::Cpu).map_err(Into::into)
            ))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("downsample(4): needs a height divisible by 4, got [1, 30, 30]".to_string())
        );
        let err = to_grey()
            .apply(&ok(
                Tensor::zeros((1, 4, 4), DType::F64, &Device::Cpu).map_err(Into::into)
            ))
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("to_grey(): needs a channel count of 3, got [1, 4, 4]".to_string())
        );
        assert!(ok(gaussian_blur(1.0, 0)).apply(&randn(&[4, 4], 0)).is_err());
    }

    #[test]
    fn downsample_visualizes_by_pixel_repetition_and_grey_by_channel_repetition() {
        let y = randn(&[1, 2, 3], 5);
        let pic = ok(ok(downsample(2)).visualize(&y));
        assert_eq!(pic.dims(), &[1, 4, 6]);
        let (yv, pv) = (values(&y), values(&pic));
        for r in 0..4 {
            for c in 0..6 {
                assert_eq!(pv[r * 6 + c], yv[(r / 2) * 3 + c / 2]);
            }
        }
        let grey = randn(&[1, 2, 2], 6);
        let pic = values(&ok(to_grey().visualize(&grey)));
        let g = values(&grey);
        assert_eq!(pic, [g.clone(), g.clone(), g].concat());
    }

    #[test]
    fn autograd_through_apply_is_the_adjoint() {
        let op = Operator::compose(&ok(gaussian_blur(1.0, 0)), &ok(downsample(2)));
        check_autograd_is_adjoint(&op, &[3, 8, 8]);
    }
}
