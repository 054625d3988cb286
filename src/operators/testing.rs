//! Test helpers: random tensors, dense matrices of operators built from basis vectors, and
//! the generic checks every linear operator must pass against dense f64 linear algebra.

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, DVector, SymmetricEigen};

use super::error::Result;
use super::operator::Operator;
use crate::random::{generator, normal_tensor};

/// A tensor of N(0, 1) draws in f64 on the CPU, seeded.
pub fn randn(shape: &[usize], seed: i64) -> Tensor {
    normal_tensor(
        &mut generator(0, "operators-test", seed),
        shape,
        DType::F64,
        &Device::Cpu,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The tensor's values in f64, flattened.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A flat vector as a tensor of `shape`.
pub fn tensor(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap_or_else(|e| panic!("{e}"))
}

/// `|a - b| / |b|` (absolute when `b` is 0).
pub fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let n: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if n == 0.0 {
        d
    } else {
        d / n
    }
}

/// Asserts `rel(a, b) <= tol`.
pub fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    let e = rel(a, b);
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}

/// The dense matrix of a linear map from tensors of shape `domain`, column by column.
pub fn dense(f: impl Fn(&Tensor) -> Result<Tensor>, domain: &[usize]) -> DMatrix<f64> {
    let n: usize = domain.iter().product();
    let mut cols = Vec::with_capacity(n);
    for j in 0..n {
        let mut e = vec![0.0; n];
        e[j] = 1.0;
        let y = f(&tensor(&e, domain)).unwrap_or_else(|e| panic!("{e}"));
        cols.push(DVector::from_vec(values(&y)));
    }
    DMatrix::from_columns(&cols)
}

/// The pseudo-inverse of a symmetric positive semi-definite matrix from its eigenvalues,
/// with relative cut-off 1e-10.
pub fn pinv_psd(g: &DMatrix<f64>) -> DMatrix<f64> {
    let e = SymmetricEigen::new(g.clone());
    let top = e.eigenvalues.amax();
    let inv = e
        .eigenvalues
        .map(|l| if l > 1e-10 * top { 1.0 / l } else { 0.0 });
    &e.eigenvectors * DMatrix::from_diagonal(&inv) * e.eigenvectors.transpose()
}

/// True when the symmetric positive semi-definite `g` is numerically invertible.
fn invertible(g: &DMatrix<f64>) -> bool {
    let e = SymmetricEigen::new(g.clone()).eigenvalues;
    e.min() > 1e-12 * e.amax()
}

/// `g^+ y` for a symmetric positive semi-definite `g`: by LU when `g` is invertible
/// (backward stable), else from the eigendecomposition.
pub fn psd_solve(g: &DMatrix<f64>, y: &DVector<f64>) -> DVector<f64> {
    if invertible(g) {
        g.clone()
            .lu()
            .solve(y)
            .unwrap_or_else(|| panic!("singular"))
    } else {
        pinv_psd(g) * y
    }
}

/// `A^+ y`: `A^-1 y`, `A^T (A A^T)^-1 y` or `(A^T A)^-1 A^T y` by LU when one is invertible, else
/// `(A^T A)^+ A^T y` from the eigendecomposition (nalgebra's SVD is occasionally
/// inaccurate, so it is not used as the reference).
pub fn pinv_apply(a: &DMatrix<f64>, y: &DVector<f64>) -> DVector<f64> {
    let aat = a * a.transpose();
    if invertible(&aat) {
        if a.is_square() {
            return a
                .clone()
                .lu()
                .solve(y)
                .unwrap_or_else(|| panic!("singular"));
        }
        return a.transpose() * psd_solve(&aat, y);
    }
    psd_solve(&(a.transpose() * a), &(a.transpose() * y))
}

/// The generic checks of a linear operator on images of shape `domain`, in f64:
/// adjointness, `gram_solve` and `pinv` against dense linear algebra, the SVD identities
/// when an SVD is known, `visualize`'s shape and f32 agreement. `b0` also checks the
/// `b = 0` Gram solve.
pub fn check_linear(op: &Operator, domain: &[usize], b0: bool) {
    let name = op.name();
    let x = randn(domain, 1);
    let ax = op.apply(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
    let range = ax.dims().to_vec();
    let y = randn(&range, 2);
    // Adjointness.
    let aty = op.adjoint(&y).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(aty.dims(), domain, "{name}: adjoint shape");
    let lhs: f64 = values(&ax).iter().zip(values(&y)).map(|(a, b)| a * b).sum();
    let rhs: f64 = values(&x)
        .iter()
        .zip(values(&aty))
        .map(|(a, b)| a * b)
        .sum();
    assert!(
        (lhs - rhs).abs() <= 1e-12 * lhs.abs().max(rhs.abs()),
        "{name}: <Ax, y> = {lhs}, <x, A^T y> = {rhs}"
    );
    // Dense matrices.
    let a = dense(|t| op.apply(t), domain);
    let at = dense(|t| op.adjoint(t), &range);
    assert_close(
        at.as_slice(),
        a.transpose().as_slice(),
        1e-14,
        &format!("{name}: dense A^T"),
    );
    let m = a.nrows();
    // Gram solves.
    let mut cases = vec![(1.0, 0.5), (0.3, 2e-3)];
    if b0 {
        cases.push((2.0, 0.0));
    }
    for (ca, cb) in cases {
        let g = &a * a.transpose() * ca + DMatrix::identity(m, m) * cb;
        let expect = psd_solve(&g, &DVector::from_vec(values(&y)));
        let got = op
            .gram_solve(&y, ca, cb)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.dims(), range.as_slice(), "{name}: gram_solve shape");
        assert_close(
            &values(&got),
            expect.as_slice(),
            1e-9,
            &format!("{name}: gram_solve({ca}, {cb})"),
        );
    }
    // Pseudo-inverse.
    let expect = pinv_apply(&a, &DVector::from_vec(values(&y)));
    let got = op.pinv(&y).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got.dims(), domain, "{name}: pinv shape");
    assert_close(
        &values(&got),
        expect.as_slice(),
        1e-9,
        &format!("{name}: pinv"),
    );
    // SVD.
    if let Some(svd) = op.svd() {
        let s = svd
            .singular_values(domain, DType::F64, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let vtx = svd.vt(&x).unwrap_or_else(|e| panic!("{name}: {e}"));
        let usv = svd
            .u(&s.mul(&vtx).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(
            &values(&usv),
            &values(&ax),
            1e-11,
            &format!("{name}: u(s vt(x)) = A x"),
        );
        let vvtx = svd.v(&vtx).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(
            &values(&vvtx),
            &values(&x),
            1e-12,
            &format!("{name}: v(vt(x)) = x"),
        );
        let v = dense(|t| svd.v(t), domain);
        let n = v.ncols();
        assert_close(
            (v.transpose() * &v).as_slice(),
            DMatrix::<f64>::identity(n, n).as_slice(),
            1e-12,
            &format!("{name}: V^T V = I"),
        );
        let u = dense(|t| svd.u(t), domain);
        let ut = dense(|t| svd.ut(t, domain), &range);
        assert_close(
            ut.as_slice(),
            u.transpose().as_slice(),
            1e-14,
            &format!("{name}: ut = u^T"),
        );
        // ut(u(c)) = c on the components with a range part (non-zero columns of U).
        let utu = &ut * &u;
        let observed: Vec<f64> = (0..n)
            .map(|j| if u.column(j).norm() > 0.5 { 1.0 } else { 0.0 })
            .collect();
        let expect = DMatrix::from_diagonal(&DVector::from_vec(observed));
        assert_close(
            utu.as_slice(),
            expect.as_slice(),
            1e-12,
            &format!("{name}: U^T U"),
        );
        // Zero singular values only where there is no range part or A is rank-deficient.
        assert!(
            values(&s).iter().all(|v| *v >= 0.0),
            "{name}: negative singular value"
        );
    }
    // visualize gives a domain-shaped picture.
    let pic = op.visualize(&y).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(pic.dims(), domain, "{name}: visualize shape");
    // f32 in, f32 out, close to f64.
    let x32 = x.to_dtype(DType::F32).unwrap_or_else(|e| panic!("{e}"));
    let ax32 = op.apply(&x32).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(ax32.dtype(), DType::F32, "{name}: dtype kept");
    assert_close(
        &values(&ax32),
        &values(&ax),
        1e-5,
        &format!("{name}: f32 apply"),
    );
    let g32 = op
        .gram_solve(
            &y.to_dtype(DType::F32).unwrap_or_else(|e| panic!("{e}")),
            1.0,
            0.5,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(g32.dtype(), DType::F32, "{name}: gram dtype kept");
}

/// Checks that candle's backward pass through `op.apply` at a random x equals the adjoint
/// applied to the output weights (to 1e-13).
pub fn check_autograd_is_adjoint(op: &Operator, domain: &[usize]) {
    let x = candle_core::Var::from_tensor(&randn(domain, 7)).unwrap_or_else(|e| panic!("{e}"));
    let out = op.apply(x.as_tensor()).unwrap_or_else(|e| panic!("{e}"));
    let w = randn(out.dims(), 8);
    let grads = out
        .mul(&w)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .unwrap_or_else(|e| panic!("{e}"));
    let g = grads
        .get(x.as_tensor())
        .unwrap_or_else(|| panic!("no gradient"));
    let adjoint = op.adjoint(&w).unwrap_or_else(|e| panic!("{e}"));
    assert_close(&values(g), &values(&adjoint), 1e-13, "autograd");
}

/// Checks that `op` treats a batch `[3, ...domain]` exactly as it treats each of its images
/// one at a time: `apply`, `visualize`, the linearisation (`J`, `J^T`, its solve), and for a
/// linear operator `adjoint`, `gram_solve`, `pinv` and the SVD maps; plus the gradient of a
/// batched objective through `apply`, which must be each image's own.
pub fn check_batched(op: &Operator, domain: &[usize]) {
    let name = op.name();
    let n = 3;
    let mut batch_shape = vec![n];
    batch_shape.extend_from_slice(domain);
    let x = randn(&batch_shape, 11);
    let item = |t: &Tensor, i: usize| t.get(i).unwrap_or_else(|e| panic!("{e}"));
    // Compares a batched result with the per-image results of `f` on `input`'s images.
    let same = |what: &str, batched: Tensor, input: &Tensor, f: &dyn Fn(&Tensor) -> Tensor| {
        assert_eq!(
            batched.dim(0).ok(),
            Some(n),
            "{name}: {what} keeps the batch"
        );
        for i in 0..n {
            let one = f(&item(input, i));
            assert_eq!(item(&batched, i).dims(), one.dims(), "{name}: {what} shape");
            assert_close(
                &values(&item(&batched, i)),
                &values(&one),
                1e-9,
                &format!("{name}: batched {what}, image {i}"),
            );
        }
    };
    let ax = op.apply(&x).unwrap_or_else(|x| panic!("{name}: {x}"));
    same("apply", ax.clone(), &x, &|t| {
        op.apply(t).unwrap_or_else(|x| panic!("{name}: {x}"))
    });
    let y = randn(ax.dims(), 12);
    let pic = op.visualize(&y).unwrap_or_else(|x| panic!("{name}: {x}"));
    same("visualize", pic, &y, &|t| {
        op.visualize(t).unwrap_or_else(|x| panic!("{name}: {x}"))
    });
    // The linearisation at each image of the batch.
    let lin = op.linearise(&x).unwrap_or_else(|x| panic!("{name}: {x}"));
    let v = randn(&batch_shape, 13);
    let jv = lin.apply_j(&v).unwrap_or_else(|x| panic!("{name}: {x}"));
    let jtw = lin.apply_jt(&y).unwrap_or_else(|x| panic!("{name}: {x}"));
    let solved = lin
        .solve(&y, 0.7, 0.05)
        .unwrap_or_else(|x| panic!("{name}: {x}"));
    for i in 0..n {
        let one = op
            .linearise(&item(&x, i))
            .unwrap_or_else(|x| panic!("{name}: {x}"));
        for (what, batched, single) in [
            ("J v", &jv, one.apply_j(&item(&v, i))),
            ("J^T w", &jtw, one.apply_jt(&item(&y, i))),
            ("solve", &solved, one.solve(&item(&y, i), 0.7, 0.05)),
        ] {
            let single = single.unwrap_or_else(|x| panic!("{name}: {x}"));
            assert_close(
                &values(&item(batched, i)),
                &values(&single),
                1e-7,
                &format!("{name}: batched {what}, image {i}"),
            );
        }
    }
    // The gradient of sum_i <w_i, A x_i> is A^T w_i (or J_i^T w_i) image by image.
    let var = candle_core::Var::from_tensor(&x).unwrap_or_else(|e| panic!("{e}"));
    let out = op
        .apply(var.as_tensor())
        .unwrap_or_else(|x| panic!("{name}: {x}"));
    let grads = out
        .mul(&y)
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .unwrap_or_else(|e| panic!("{e}"));
    let g = grads
        .get(var.as_tensor())
        .unwrap_or_else(|| panic!("{name}: no gradient"))
        .clone();
    assert_close(
        &values(&g),
        &values(&jtw),
        1e-9,
        &format!("{name}: gradient"),
    );
    if !op.is_linear() {
        return;
    }
    let aty = op.adjoint(&y).unwrap_or_else(|x| panic!("{name}: {x}"));
    same("adjoint", aty, &y, &|t| {
        op.adjoint(t).unwrap_or_else(|x| panic!("{name}: {x}"))
    });
    for (a, b) in [(1.0, 0.5), (2.0, 0.0)] {
        let got = op
            .gram_solve(&y, a, b)
            .unwrap_or_else(|x| panic!("{name}: {x}"));
        same("gram_solve", got, &y, &|t| {
            op.gram_solve(t, a, b)
                .unwrap_or_else(|x| panic!("{name}: {x}"))
        });
    }
    let p = op.pinv(&y).unwrap_or_else(|x| panic!("{name}: {x}"));
    same("pinv", p, &y, &|t| {
        op.pinv(t).unwrap_or_else(|x| panic!("{name}: {x}"))
    });
    if let Some(svd) = op.svd() {
        let vt = svd.vt(&x).unwrap_or_else(|x| panic!("{name}: {x}"));
        same("vt", vt.clone(), &x, &|t| {
            svd.vt(t).unwrap_or_else(|x| panic!("{name}: {x}"))
        });
        same(
            "v",
            svd.v(&vt).unwrap_or_else(|x| panic!("{name}: {x}")),
            &vt,
            &|t| svd.v(t).unwrap_or_else(|x| panic!("{name}: {x}")),
        );
        let ut = svd.ut(&y, domain).unwrap_or_else(|x| panic!("{name}: {x}"));
        same("ut", ut.clone(), &y, &|t| {
            svd.ut(t, domain).unwrap_or_else(|x| panic!("{name}: {x}"))
        });
        same(
            "u",
            svd.u(&ut).unwrap_or_else(|x| panic!("{name}: {x}")),
            &ut,
            &|t| svd.u(t).unwrap_or_else(|x| panic!("{name}: {x}")),
        );
        // The domain-shaped singular values broadcast over the batch.
        let s = svd
            .singular_values(domain, DType::F64, &Device::Cpu)
            .unwrap_or_else(|x| panic!("{name}: {x}"));
        let usv = svd
            .u(&vt.broadcast_mul(&s).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|x| panic!("{name}: {x}"));
        assert_close(
            &values(&usv),
            &values(&ax),
            1e-11,
            &format!("{name}: u(s vt(x))"),
        );
    }
}
