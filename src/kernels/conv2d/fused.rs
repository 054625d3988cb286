//! A conv with two additions folded in: a bias per image and output channel (a U-Net residual
//! block's noise embedding, broadcast over the pixels) and a residual of the output's shape
//! (the block's skip connection).
//!
//! As separate candle ops those are two more full passes over the activation, each with its
//! own allocation, and in the backward pass two more graph nodes whose gradients candle
//! accumulates into fresh zero tensors. Folded, the forward adds both in one pass over the
//! conv's output and the backward hands the output gradient to the residual as it is.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use std::sync::Arc;

use super::{conv2d_cached, Conv2dOp, Geom, WeightCache};
use crate::kernels::{cpu_slice, fast_path, min_items, unsupported, with_data, Real};

/// `conv2d(x, weight, bias, stride, padding)` plus `image_bias` (`[B, C_out]`, added to every
/// pixel of its image and channel) plus `residual` (the output's shape `[B, C_out, H_out,
/// W_out]`), each when given.
///
/// The same values and gradients as the separate ops (`conv2d`, then `broadcast_add` of the
/// image bias, then `+ residual`), which this takes when the fused op does not apply: off the
/// CPU fast path, or when the weights, the bias or the image bias are tracked by autograd
/// (only the input and the residual are differentiated here).
pub fn conv2d_fused(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    image_bias: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let conv = (weight, bias, stride, padding);
    conv2d_fused_cached(x, conv, image_bias, residual, None)
}

/// [`conv2d_fused`] with the weight cache of the layer the weights belong to, if any.
pub(super) fn conv2d_fused_cached(
    x: &Tensor,
    (weight, bias, stride, padding): (&Tensor, Option<&Tensor>, usize, usize),
    image_bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    cache: Option<&Arc<WeightCache>>,
) -> Result<Tensor> {
    let constants = [Some(weight), bias, image_bias];
    let fused = fast_path(x, &[Some(weight), bias, image_bias, residual])
        && constants.iter().flatten().all(|t| !t.track_op())
        && x.rank() == 4
        && x.elem_count() > 0
        && weight.elem_count() > 0;
    if !fused {
        let conv = (weight, bias, stride, padding);
        return separate(x, conv, image_bias, residual, cache);
    }
    // The bias is checked by the op, as for `conv2d`.
    let g = Geom::new(x.dims(), weight.dims(), stride, padding)?;
    if let Some(e) = image_bias {
        if e.dims() != [g.b, g.cout] {
            candle_core::bail!(
                "conv2d: image bias {:?} for {} images of {} channels",
                e.dims(),
                g.b,
                g.cout
            )
        }
    }
    let op = FusedConv {
        conv: Conv2dOp::new(weight, bias, stride, padding, cache),
        image_bias: image_bias.cloned(),
    };
    let x = x.contiguous()?;
    match residual {
        Some(r) => {
            g.check_output(r.dims(), "conv2d: residual")?;
            x.apply_op2(&r.contiguous()?, op)
        }
        None => x.apply_op1(op),
    }
}

/// The unfused ops.
fn separate(
    x: &Tensor,
    (weight, bias, stride, padding): (&Tensor, Option<&Tensor>, usize, usize),
    image_bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    cache: Option<&Arc<WeightCache>>,
) -> Result<Tensor> {
    let mut y = conv2d_cached(x, weight, bias, stride, padding, cache)?;
    if let Some(e) = image_bias {
        y = y.broadcast_add(&e.unsqueeze(2)?.unsqueeze(3)?)?;
    }
    match residual {
        Some(r) => r + y,
        None => Ok(y),
    }
}

/// The fused conv: [`Conv2dOp`] (constant weights and bias) plus a constant image bias.
pub(in crate::kernels) struct FusedConv {
    conv: Conv2dOp,
    image_bias: Option<Tensor>,
}

impl FusedConv {
    /// `conv` plus `image_bias` (`[B, C_out]`; not checked here, see [`conv2d_fused`]).
    pub(in crate::kernels) fn new(conv: Conv2dOp, image_bias: Option<Tensor>) -> FusedConv {
        FusedConv { conv, image_bias }
    }

    /// The conv without the image bias.
    pub(in crate::kernels) fn conv(&self) -> &Conv2dOp {
        &self.conv
    }

    /// The output for the input `xs`, `xl` (contiguous) plus the residual, if given
    /// (contiguous, of the output's shape).
    pub(in crate::kernels) fn run<T: Real>(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_slice::<T>(xs, xl, "conv2d")?;
        let residual = match residual {
            Some((rs, rl)) => Some(cpu_slice::<T>(rs, rl, "conv2d residual")?),
            None => None,
        };
        let (out, g) = self.output_of(x, xl.dims(), 0, residual)?;
        Ok((T::to_cpu_storage_owned(out), g.out_shape()))
    }

    /// The output for the contiguous input `x` of shape `dims` plus the residual, if given
    /// (contiguous, of the output's shape). `x` holds the images `first..` of the batch the
    /// image bias was given for.
    pub(in crate::kernels) fn output_of<T: Real>(
        &self,
        x: &[T],
        dims: &[usize],
        first: usize,
        residual: Option<&[T]>,
    ) -> Result<(Vec<T>, Geom)> {
        let (mut out, g) = self.conv.output_of(x, dims)?;
        if residual.is_some_and(|r| r.len() != out.len()) {
            candle_core::bail!(
                "conv2d: a residual not of the output's size {:?}",
                g.out_shape()
            )
        }
        match &self.image_bias {
            Some(e) => {
                with_data::<T, _>(e, "conv2d image bias", |e| match e.get(first * g.cout..) {
                    Some(e) if e.len() >= g.b * g.cout => {
                        add_extras(&mut out, g.n(), Some(e), residual);
                        Ok(())
                    }
                    _ => candle_core::bail!("conv2d: no image bias for images {first}.."),
                })?
            }
            None => add_extras(&mut out, g.n(), None, residual),
        }
        Ok((out, g))
    }
}

/// Adds `image_bias[i]` and the plane `i` of `residual` to every plane `i` (`n` elements) of
/// `out`.
fn add_extras<T: Real>(out: &mut [T], n: usize, image_bias: Option<&[T]>, residual: Option<&[T]>) {
    if n == 0 || (image_bias.is_none() && residual.is_none()) {
        return;
    }
    out.par_chunks_mut(n)
        .with_min_len(min_items(n))
        .enumerate()
        .for_each(|(i, plane)| {
            let e = image_bias.map_or(T::zero(), |e| e[i]);
            match residual {
                Some(r) => {
                    for (o, &r) in plane.iter_mut().zip(&r[i * n..(i + 1) * n]) {
                        *o += r + e;
                    }
                }
                None => plane.iter_mut().for_each(|o| *o += e),
            }
        });
}

impl CustomOp1 for FusedConv {
    fn name(&self) -> &'static str {
        "mapga-conv2d-fused"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>((s, l), None),
            CpuStorage::F64(_) => self.run::<f64>((s, l), None),
            other => Err(unsupported("conv2d", other)),
        }
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.conv.input_grad(x, grad)?))
    }
}

impl CustomOp2 for FusedConv {
    fn name(&self) -> &'static str {
        "mapga-conv2d-fused-residual"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (xs, rs) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>((xs, xl), Some((rs, rl))),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>((xs, xl), Some((rs, rl))),
            (other, _) => Err(unsupported("conv2d", other)),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(self.conv.input_grad(x, grad)?)
        } else {
            None
        };
        let dr = residual.track_op().then(|| grad.clone());
        Ok((dx, dr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{randn, rel_err, tolerance};
    use candle_core::{DType, Var};

    /// The fused op against the separate ops: the output, and the gradients of
    /// `sum(out * v)` with respect to the input and the residual, with and without each
    /// addition, on the im2col and the Winograd paths, in f32 and f64.
    #[test]
    fn fused_conv_matches_the_separate_ops() {
        // (batch, in, height, width, out, stride, padding): im2col, strided, Winograd.
        let cases = [
            (2, 3, 7, 6, 4, 1, 1),
            (3, 2, 9, 8, 5, 2, 1),
            (2, 3, 5, 33, 4, 1, 1),
        ];
        for (case, &(b, cin, h, w, cout, stride, pad)) in cases.iter().enumerate() {
            for dtype in [DType::F32, DType::F64] {
                let seed = 20 * case as u64;
                let x = Var::from_tensor(&randn(seed, &[b, cin, h, w], dtype)).unwrap();
                let weight = randn(seed + 1, &[cout, cin, 3, 3], dtype);
                let bias = randn(seed + 2, &[cout], dtype);
                let g = Geom::new(x.dims(), weight.dims(), stride, pad).unwrap();
                let e = randn(seed + 3, &[b, cout], dtype);
                let r = Var::from_tensor(&randn(seed + 4, &[b, cout, g.ho, g.wo], dtype)).unwrap();
                let v = randn(seed + 5, &[b, cout, g.ho, g.wo], dtype);
                for (with_e, with_r) in [(true, false), (false, true), (true, true), (false, false)]
                {
                    let (e, r) = (with_e.then_some(&e), with_r.then(|| r.as_tensor()));
                    let run = |fused: bool| {
                        let out = if fused {
                            conv2d_fused(&x, &weight, Some(&bias), stride, pad, e, r)
                        } else {
                            separate(&x, (&weight, Some(&bias), stride, pad), e, r, None)
                        }
                        .unwrap();
                        let grads = (&out * &v).unwrap().sum_all().unwrap().backward().unwrap();
                        let dr = grads.get(r.unwrap_or(x.as_tensor())).unwrap().clone();
                        (out, grads.get(&x).unwrap().clone(), dr)
                    };
                    let (got, want) = (run(true), run(false));
                    let what =
                        format!("case {case} {dtype:?} image bias {with_e} residual {with_r}");
                    for (name, got, want) in [
                        ("output", got.0, want.0),
                        ("dx", got.1, want.1),
                        ("dr", got.2, want.2),
                    ] {
                        let err = rel_err(&got, &want);
                        assert!(err < tolerance(dtype), "{what}: {name} error {err:.2e}");
                    }
                }
            }
        }
    }

    /// A tracked image bias takes the separate ops, so it gets its gradient.
    #[test]
    fn a_tracked_image_bias_gets_its_gradient() {
        let x = randn(1, &[2, 3, 6, 6], DType::F64);
        let weight = randn(2, &[4, 3, 3, 3], DType::F64);
        let e = Var::from_tensor(&randn(3, &[2, 4], DType::F64)).unwrap();
        let out = conv2d_fused(&x, &weight, None, 1, 1, Some(&e), None).unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        let de = grads.get(&e).expect("a gradient for the image bias");
        // d/de sum(out) = the number of pixels, for every image and channel.
        let want = Tensor::full(36f64, (2, 4), &candle_core::Device::Cpu).unwrap();
        assert!(rel_err(de, &want) < 1e-12);
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let x = randn(1, &[2, 3, 6, 6], DType::F32);
        let weight = randn(2, &[4, 3, 3, 3], DType::F32);
        let bad_e = randn(3, &[1, 4], DType::F32);
        let err = conv2d_fused(&x, &weight, None, 1, 1, Some(&bad_e), None).unwrap_err();
        assert!(err.to_string().contains("image bias"), "{err}");
        let bad_r = randn(4, &[2, 4, 5, 6], DType::F32);
        let err = conv2d_fused(&x, &weight, None, 1, 1, None, Some(&bad_r)).unwrap_err();
        assert!(err.to_string().contains("residual"), "{err}");
    }
}
