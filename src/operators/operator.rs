//! [`Operator`]: any forward operator a program can hold, built from linear operators,
//! pointwise maps and user functions by composition, sums, differences and scaling.
//!
//! Build compositions and scalings with [`Operator::compose`] and [`Operator::scale`]
//! rather than the variants: they fuse separable operators (so `downsample(2) >>
//! gaussian_blur(1.0)` stays one separable operator with an exact SVD and Gram solve).
//!
//! `visualize(y)` of a composition `A >> B` is `A.visualize(B.visualize(y))`: each stage
//! that changes the shape maps its measurement back to its domain (pixel repetition for
//! downsampling, channel repetition for `to_grey`), and stages that keep the shape (blurs,
//! masks, pointwise maps) show their measurement as it is. Sums, differences and scalings
//! show it as their first operand does; a user operator resizes to its domain by
//! nearest-neighbour sampling.
//!
//! Every method takes one image or a batch `[N, ...]` of them (one more dimension than the
//! operator's images) and returns the same leading `N`: masks, pointwise maps, separable
//! operators and convolutions treat the whole batch in one go, iterative solves and user
//! functions go one image at a time.

use std::sync::Arc;

use candle_core::Tensor;

use super::cg::{gram_solve_f64, pinv_f64};
use super::error::{shape_error, OperatorError, Result};
use super::linear::{LinearOperator, Svd};
use super::linearise::Linearisation;
use super::names::number;
use super::pointwise::Pointwise;
use super::tensors::{nearest_resize, shape_str, with_batch};

/// A user function Tensor -> Tensor, supplied by the interpreter (a `fn` of the language).
pub type TensorFn = Arc<dyn Fn(&Tensor) -> Result<Tensor> + Send + Sync>;

/// Any forward operator: what the language's `Operator` values hold. Cheap to clone (Arcs).
#[derive(Clone)]
pub enum Operator {
    /// A linear operator with its adjoint.
    Linear(Arc<dyn LinearOperator>),
    /// A pointwise non-linear map: clipping, gamma_curve, saturation.
    Pointwise(Pointwise),
    /// `A >> B`: A first, then B.
    Compose(Arc<Operator>, Arc<Operator>),
    /// `A + B`.
    Sum(Arc<Operator>, Arc<Operator>),
    /// `A - B`.
    Difference(Arc<Operator>, Arc<Operator>),
    /// `c * A`.
    Scale(f64, Arc<Operator>),
    /// `operator(f, domain)`: a user function on images of shape `domain`.
    User {
        /// The function.
        f: TensorFn,
        /// Its name in the program, shown in messages.
        name: String,
        /// The shape of the images it takes (used by `visualize`).
        domain: Vec<usize>,
    },
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Operator({})", self.name())
    }
}

impl Operator {
    /// A linear operator as an `Operator`.
    pub fn linear(op: impl LinearOperator + 'static) -> Operator {
        Operator::Linear(Arc::new(op))
    }

    /// `a >> b` (a first, then b); two separable operators fuse into one.
    pub fn compose(a: &Operator, b: &Operator) -> Operator {
        if let (Operator::Linear(la), Operator::Linear(lb)) = (a, b) {
            if let (Some(sa), Some(sb)) = (la.separable(), lb.separable()) {
                return Operator::linear(sa.then(sb, compose_name(a, b)));
            }
        }
        Operator::Compose(Arc::new(a.clone()), Arc::new(b.clone()))
    }

    /// `a + b`.
    pub fn sum(a: &Operator, b: &Operator) -> Operator {
        Operator::Sum(Arc::new(a.clone()), Arc::new(b.clone()))
    }

    /// `a - b`.
    pub fn difference(a: &Operator, b: &Operator) -> Operator {
        Operator::Difference(Arc::new(a.clone()), Arc::new(b.clone()))
    }

    /// `c * a`; a scaled separable operator stays separable.
    pub fn scale(c: f64, a: &Operator) -> Operator {
        if let Operator::Linear(l) = a {
            if let Some(s) = l.separable() {
                return Operator::linear(s.scaled(c, scale_name(c, a)));
            }
        }
        Operator::Scale(c, Arc::new(a.clone()))
    }

    /// How tightly the name binds, as the language's precedence (`>>` 5, `+ -` 6, `*` 7).
    fn precedence(&self) -> u8 {
        match self {
            Operator::Compose(..) => 5,
            Operator::Sum(..) | Operator::Difference(..) => 6,
            Operator::Scale(..) => 7,
            // A fused separable operator keeps the name of the expression it came from.
            Operator::Linear(l) => {
                let name = l.name();
                if name.contains(" >> ") {
                    5
                } else if name.contains(" * ") {
                    7
                } else {
                    10
                }
            }
            _ => 10,
        }
    }

    /// The name as the language writes it, e.g. `"gaussian_blur(2.0) >> downsample(4)"`.
    pub fn name(&self) -> String {
        match self {
            Operator::Linear(l) => l.name(),
            Operator::Pointwise(p) => p.name(),
            Operator::Compose(a, b) => compose_name(a, b),
            Operator::Sum(a, b) => format!("{} + {}", paren(a, 6), paren(b, 7)),
            Operator::Difference(a, b) => format!("{} - {}", paren(a, 6), paren(b, 7)),
            Operator::Scale(c, a) => scale_name(*c, a),
            Operator::User { name, .. } => name.clone(),
        }
    }

    /// True for linear operators and compositions, sums, differences and scalings of them.
    pub fn is_linear(&self) -> bool {
        match self {
            Operator::Linear(_) => true,
            Operator::Pointwise(_) | Operator::User { .. } => false,
            Operator::Compose(a, b) | Operator::Sum(a, b) | Operator::Difference(a, b) => {
                a.is_linear() && b.is_linear()
            }
            Operator::Scale(_, a) => a.is_linear(),
        }
    }

    /// `A(x)`, built from candle operations (differentiable).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Operator::Linear(l) => l.apply(x),
            Operator::Pointwise(p) => p.apply(x),
            Operator::Compose(a, b) => b.apply(&a.apply(x)?),
            Operator::Sum(a, b) => self.combine(&a.apply(x)?, &b.apply(x)?, false),
            Operator::Difference(a, b) => self.combine(&a.apply(x)?, &b.apply(x)?, true),
            Operator::Scale(c, a) => Ok(a.apply(x)?.affine(*c, 0.0)?),
            Operator::User { f, .. } => f(x),
        }
    }

    /// `p + q` or `p - q`, which must have the same shape.
    fn combine(&self, p: &Tensor, q: &Tensor, minus: bool) -> Result<Tensor> {
        if p.dims() != q.dims() {
            return Err(shape_error(
                self.name(),
                format!(
                    "the two operators give shapes {} and {}, which differ",
                    shape_str(p.dims()),
                    shape_str(q.dims())
                ),
            ));
        }
        Ok(if minus { p.sub(q)? } else { p.add(q)? })
    }

    fn require_linear(&self, what: &'static str) -> Result<()> {
        if self.is_linear() {
            Ok(())
        } else {
            Err(OperatorError::NotLinear {
                operator: self.name(),
                what,
            })
        }
    }

    /// `A^T y` (differentiable); a `NotLinear` error when `A` is not linear.
    pub fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.require_linear("adjoint")?;
        match self {
            Operator::Linear(l) => l.adjoint(y),
            Operator::Compose(a, b) => a.adjoint(&b.adjoint(y)?),
            Operator::Sum(a, b) => self.combine(&a.adjoint(y)?, &b.adjoint(y)?, false),
            Operator::Difference(a, b) => self.combine(&a.adjoint(y)?, &b.adjoint(y)?, true),
            Operator::Scale(c, a) => Ok(a.adjoint(y)?.affine(*c, 0.0)?),
            Operator::Pointwise(_) | Operator::User { .. } => Err(OperatorError::NotLinear {
                operator: self.name(),
                what: "adjoint",
            }),
        }
    }

    /// `(a A A^T + b I)^+ r`: exact for built-ins that know it (masks, separable operators,
    /// circular convolutions, and scalings of them), batched conjugate gradients in f64
    /// otherwise (a truncated pseudo-inverse when `b = 0`, see `cg.rs`).
    pub fn gram_solve(&self, r: &Tensor, a: f64, b: f64) -> Result<Tensor> {
        self.require_linear("Gram solve")?;
        match self {
            Operator::Linear(l) => l.gram_solve(r, a, b),
            Operator::Scale(c, inner) => inner.gram_solve(r, a * c * c, b),
            _ => gram_solve_f64(
                &self.name(),
                &|z| self.apply(z),
                &|z| self.adjoint(z),
                r,
                (a, b),
            ),
        }
    }

    /// `A^+ y`, the minimum-norm least-squares solution of `A x = y`: exact for built-ins
    /// that know it, `A^T (A A^T)^+ y` by the iterative Gram solve otherwise.
    pub fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        self.require_linear("pseudo-inverse")?;
        match self {
            Operator::Linear(l) => l.pinv(y),
            Operator::Scale(c, inner) => {
                let p = inner.pinv(y)?;
                Ok(if *c == 0.0 {
                    p.zeros_like()?
                } else {
                    p.affine(1.0 / c, 0.0)?
                })
            }
            _ => pinv_f64(&self.name(), &|z| self.apply(z), &|z| self.adjoint(z), y),
        }
    }

    /// The SVD: only for a linear operator with a known one (masks, separable operators and
    /// their fused compositions and scalings).
    pub fn svd(&self) -> Option<&dyn Svd> {
        match self {
            Operator::Linear(l) => l.svd(),
            _ => None,
        }
    }

    /// The SVD, or a `NoSvd` error naming the operator.
    pub fn require_svd(&self) -> Result<&dyn Svd> {
        self.svd().ok_or_else(|| OperatorError::NoSvd {
            operator: self.name(),
        })
    }

    /// A measurement shown as a domain-shaped image (see the module doc).
    pub fn visualize(&self, y: &Tensor) -> Result<Tensor> {
        match self {
            Operator::Linear(l) => l.visualize(y),
            Operator::Pointwise(_) => Ok(y.clone()),
            Operator::Compose(a, b) => a.visualize(&b.visualize(y)?),
            Operator::Sum(a, _) | Operator::Difference(a, _) | Operator::Scale(_, a) => {
                a.visualize(y)
            }
            Operator::User { domain, .. } => {
                let batch = (y.rank() == domain.len() + 1).then(|| y.dims()[0]);
                nearest_resize(y, &with_batch(batch, domain))
            }
        }
    }

    /// The Jacobian of the operator at `x` (see [`Linearisation`]).
    pub fn linearise(&self, x: &Tensor) -> Result<Linearisation> {
        Linearisation::at(self, x)
    }
}

/// `op`'s name, in parentheses when it binds more loosely than `min`.
fn paren(op: &Operator, min: u8) -> String {
    if op.precedence() < min {
        format!("({})", op.name())
    } else {
        op.name()
    }
}

fn compose_name(a: &Operator, b: &Operator) -> String {
    format!("{} >> {}", paren(a, 5), paren(b, 6))
}

fn scale_name(c: f64, a: &Operator) -> String {
    format!("{} * {}", number(c), paren(a, 8))
}

#[cfg(test)]
mod tests {
    use super::super::builtin::{downsample, gaussian_blur, identity, inpaint, saturation, user};
    use super::super::mask::rows_mask;
    use super::super::testing::{assert_close, check_linear, randn, values};
    use super::*;
    use candle_core::{DType, Device};

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    fn mask_op(h: usize, w: usize) -> Operator {
        ok(inpaint(&ok(rows_mask(
            h,
            w,
            3,
            1,
            DType::F64,
            &Device::Cpu,
        ))))
    }

    #[test]
    fn generic_compositions_pass_the_linear_checks() {
        let blur = ok(gaussian_blur(0.7, 0));
        let blur_mask = Operator::compose(&blur, &mask_op(6, 8));
        assert!(matches!(blur_mask, Operator::Compose(..)));
        assert!(blur_mask.svd().is_none());
        check_linear(&blur_mask, &[1, 6, 8], true);
        let sum = Operator::sum(&identity(), &blur);
        check_linear(&sum, &[2, 6, 8], true);
        let diff = Operator::difference(&Operator::scale(2.0, &identity()), &blur);
        check_linear(&diff, &[1, 6, 8], true);
        let scaled = Operator::scale(-0.5, &blur_mask);
        assert!(matches!(scaled, Operator::Scale(..)));
        check_linear(&scaled, &[1, 6, 8], true);
        let down_mask = Operator::compose(&ok(downsample(2)), &mask_op(3, 4));
        check_linear(&down_mask, &[1, 6, 8], true);
        // visualize: the mask keeps the shape, downsampling repeats pixels.
        let pic = ok(down_mask.visualize(&randn(&[1, 3, 4], 1)));
        assert_eq!(pic.dims(), &[1, 6, 8]);
    }

    #[test]
    fn every_operator_kind_batches_like_one_image_at_a_time() {
        use super::super::builtin::{
            bicubic_downsample, clipping, gamma_curve, to_grey, uniform_blur,
        };
        use super::super::conv::{kernel_blur, motion_blur};
        use super::super::testing::check_batched;
        let blur = ok(gaussian_blur(0.7, 0));
        let kernel = randn(&[3, 2], 5).abs().unwrap_or_else(|e| panic!("{e}"));
        let mut g = crate::random::generator(0, "batch-test", 1);
        let soft = randn(&[2, 6, 8], 6).abs().unwrap_or_else(|e| panic!("{e}"));
        let f: TensorFn = Arc::new(|x: &Tensor| Ok(x.sqr()?.sum_keepdim(0)?.tanh()?));
        let cases: Vec<(Operator, Vec<usize>)> = vec![
            (identity(), vec![2, 6, 8]),
            (mask_op(6, 8), vec![2, 6, 8]),
            (ok(inpaint(&soft)), vec![2, 6, 8]),
            (blur.clone(), vec![1, 6, 8]),
            (ok(uniform_blur(3)), vec![2, 6, 8]),
            (ok(kernel_blur(&kernel)), vec![2, 6, 8]),
            (ok(motion_blur(3, 0.5, &mut g)), vec![1, 6, 8]),
            (ok(downsample(2)), vec![2, 6, 8]),
            (ok(bicubic_downsample(2)), vec![1, 6, 8]),
            (to_grey(), vec![3, 6, 8]),
            (ok(clipping(-0.5, 0.5)), vec![1, 4, 4]),
            (ok(gamma_curve(2.2)), vec![1, 4, 4]),
            (ok(saturation(1.5)), vec![2, 4, 4]),
            (user(f, "square_sum", &[3, 4, 4]), vec![3, 4, 4]),
            (Operator::compose(&ok(downsample(2)), &blur), vec![2, 6, 8]),
            (Operator::compose(&blur, &mask_op(6, 8)), vec![1, 6, 8]),
            (
                Operator::compose(&blur, &ok(saturation(1.5))),
                vec![1, 6, 8],
            ),
            (Operator::sum(&identity(), &blur), vec![1, 6, 8]),
            (Operator::difference(&blur, &mask_op(6, 8)), vec![2, 6, 8]),
            (Operator::scale(-2.0, &mask_op(6, 8)), vec![1, 6, 8]),
            (
                Operator::scale(0.5, &ok(kernel_blur(&kernel))),
                vec![1, 6, 8],
            ),
        ];
        for (op, domain) in &cases {
            check_batched(op, domain);
        }
    }

    #[test]
    fn names_follow_the_language() {
        let blur = ok(gaussian_blur(2.0, 0));
        let sat = ok(saturation(3.0));
        let m = mask_op(4, 4);
        assert_eq!(
            Operator::compose(&blur, &sat).name(),
            "gaussian_blur(2.0) >> saturation(3.0)"
        );
        assert_eq!(
            Operator::sum(&Operator::compose(&blur, &m), &sat).name(),
            "(gaussian_blur(2.0) >> inpaint) + saturation(3.0)"
        );
        assert_eq!(
            Operator::scale(2.0, &Operator::sum(&m, &sat)).name(),
            "2.0 * (inpaint + saturation(3.0))"
        );
        assert_eq!(
            Operator::compose(&m, &Operator::compose(&m, &sat)).name(),
            "inpaint >> (inpaint >> saturation(3.0))"
        );
    }

    #[test]
    fn non_linear_operators_refuse_linear_methods() {
        let op = Operator::compose(&ok(gaussian_blur(1.0, 0)), &ok(saturation(2.0)));
        assert!(!op.is_linear());
        let y = randn(&[1, 4, 4], 0);
        let err = op.adjoint(&y).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("gaussian_blur(1.0) >> saturation(2.0) is not linear, so it has no adjoint".into())
        );
        assert!(op.gram_solve(&y, 1.0, 1.0).is_err());
        assert!(op.pinv(&y).is_err());
        assert!(matches!(op.require_svd(), Err(OperatorError::NoSvd { .. })));
        // apply still works and is tanh(2 blur(x)) / 2.
        let x = randn(&[1, 4, 4], 1);
        let expect: Vec<f64> = values(&ok(ok(gaussian_blur(1.0, 0)).apply(&x)))
            .iter()
            .map(|v| (2.0 * v).tanh() / 2.0)
            .collect();
        assert_close(&values(&ok(op.apply(&x))), &expect, 1e-15, "apply");
    }

    #[test]
    fn user_operators_apply_their_function_and_resize_to_show() {
        let f: TensorFn = Arc::new(|x: &Tensor| Ok(x.sqr()?.sum_keepdim(0)?));
        let op = user(f, "square_sum", &[3, 4, 4]);
        assert!(!op.is_linear());
        let x = randn(&[3, 4, 4], 2);
        let y = ok(op.apply(&x));
        assert_eq!(y.dims(), &[1, 4, 4]);
        assert_eq!(ok(op.visualize(&y)).dims(), &[3, 4, 4]);
        let failing: TensorFn = Arc::new(|_: &Tensor| Err(OperatorError::Callback("boom".into())));
        assert_eq!(
            user(failing, "bad", &[1])
                .apply(&x)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err("boom".into())
        );
    }
}
