//! A U-Net residual block's body as one op: GroupNorm+SiLU, a conv plus the noise embedding,
//! GroupNorm+SiLU, a conv plus the skip connection.
//!
//! Built from the separate kernels the block is five or six nodes of candle's autograd graph,
//! and candle's backward pass sums the gradient reaching every node's input into a fresh zero
//! tensor: per edge an allocation, a memset and an add over the activation, whatever the
//! graph (on the 64x64 benchmark network's VJP, about 7% of the time). As one op the forward
//! runs the same kernels on the CPU storages one after the other and keeps what the backward
//! needs: the first conv's output `h` (the block's input is the op's argument) and the
//! statistics of both GroupNorms, so their backward passes do not recompute them. The
//! backward chains the layers' input gradients directly, the skip connection's gradient added
//! in the first GroupNorm's last pass: one node, one accumulation. It also holds fewer
//! activations for the backward than the separate ops (`h` instead of both GroupNorm outputs
//! and `h`).
//!
//! When the batch has at least as many images as the pool has threads, forward and backward
//! run image by image in parallel: all of a block's layers for one image as one rayon task
//! (the layers' own parallel loops then mostly run inline), with no hand-off between the
//! layers and the image's activations in that core's cache (MNIST
//! batch-16 forward 7% and MAP-GA iteration 9-10% faster than layer by layer over the batch;
//! the 64x64 network even). Smaller batches run layer by layer, each layer parallel inside.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv2d::{Conv2d, Conv2dOp, FusedConv};
use super::group_norm::{GroupNorm, GroupNormOp, Stats};
use super::{cpu_slice, fast_path, image_task, unsupported, with_storage, Real};

/// `conv2(silu(norm2(h))) + skip(x)` with `h = conv1(silu(norm1(x))) + image_bias`, where
/// `skip` is the given 1x1 conv or the identity and `image_bias` (`[B, C_out]`) is added to
/// every pixel of its image and channel: a U-Net residual block with its noise embedding
/// already projected.
///
/// Differentiable in `x`. The same values and gradients as the separate layers, which this
/// takes off the CPU fast path (see the module documentation of `kernels`) or when any
/// parameter or the image bias is tracked by autograd.
pub fn res_block(
    x: &Tensor,
    image_bias: &Tensor,
    norm1: &GroupNorm,
    conv1: &Conv2d,
    norm2: &GroupNorm,
    conv2: &Conv2d,
    skip: Option<&Conv2d>,
) -> Result<Tensor> {
    let (norm1, norm2) = (norm1.op(true), norm2.op(true));
    let (conv1, conv2, skip) = (conv1.op(), conv2.op(), skip.map(Conv2d::op));
    let mut params = vec![image_bias];
    params.extend(norm1.tensors().into_iter().chain(norm2.tensors()));
    for conv in [Some(&conv1), Some(&conv2), skip.as_ref()]
        .into_iter()
        .flatten()
    {
        params.extend(conv.tensors());
    }
    let one_op = fast_path(x, &params.iter().map(|&p| Some(p)).collect::<Vec<_>>())
        && params.iter().all(|p| !p.track_op())
        && x.rank() == 4
        && x.elem_count() > 0;
    if !one_op {
        let h = conv1.layer_with(&norm1.layer(x)?, Some(image_bias), None)?;
        let skip = match &skip {
            Some(conv) => conv.layer_with(x, None, None)?,
            None => x.clone(),
        };
        return conv2.layer_with(&norm2.layer(&h)?, None, Some(&skip));
    }
    let (b, c_out) = (x.dim(0)?, conv1.tensors()[0].dim(0)?);
    if image_bias.dims() != [b, c_out] {
        candle_core::bail!(
            "res_block: image bias {:?} for {b} images of {c_out} channels",
            image_bias.dims()
        )
    }
    let op = ResBlockOp {
        norm1,
        conv1: FusedConv::new(conv1, Some(image_bias.clone())),
        norm2,
        conv2: FusedConv::new(conv2, None),
        skip,
        keep: x.track_op(),
        saved: Mutex::new(None),
    };
    x.contiguous()?.apply_op1(op)
}

/// The block as a custom op on its input; every parameter is a constant.
struct ResBlockOp {
    norm1: GroupNormOp,
    /// The first conv with the image bias.
    conv1: FusedConv,
    norm2: GroupNormOp,
    /// The second conv (its residual, the skip connection, comes at run time).
    conv2: FusedConv,
    skip: Option<Conv2dOp>,
    /// Whether the forward keeps what the backward needs (when the input is tracked).
    keep: bool,
    /// What the forward kept.
    saved: Mutex<Option<Saved>>,
}

/// What [`ResBlockOp`]'s forward keeps for its backward.
#[derive(Clone)]
struct Saved {
    /// The first conv's output (plus the image bias): the second GroupNorm's input.
    h: Tensor,
    /// The statistics of the first and the second GroupNorm.
    stats: Arc<[Stats; 2]>,
}

/// The block's forward over some images: its output, and `h` and the GroupNorms' statistics
/// for the backward.
struct Forward<T> {
    out: Vec<T>,
    out_dims: Vec<usize>,
    h: Vec<T>,
    h_dims: Vec<usize>,
    stats: [Stats; 2],
}

/// `dims` with the batch size `images`.
fn with_batch(dims: &[usize], images: usize) -> Vec<usize> {
    std::iter::once(images)
        .chain(dims[1..].iter().copied())
        .collect()
}

/// The elements of the images `images` in a batch of `b` images stored in `data`.
fn images_of<'a, T>(data: &'a [T], b: usize, images: &Range<usize>) -> &'a [T] {
    let per = data.len() / b.max(1);
    &data[images.start * per..images.end * per]
}

/// `f` over the images `0..b`: one image per rayon task when there are at least as many
/// images as threads (see the module documentation), otherwise once over all of them (each
/// layer parallel inside).
fn by_images<R: Send>(b: usize, f: impl Fn(Range<usize>) -> Result<R> + Sync) -> Result<Vec<R>> {
    let n = rayon::current_num_threads();
    if n > 1 && b >= n {
        (0..b)
            .into_par_iter()
            .map(|i| image_task(|| f(i..i + 1)))
            .collect()
    } else {
        Ok(vec![f(0..b)?])
    }
}

/// The parts' vectors one after the other (the one part itself when there is one).
fn concat<T: Clone>(parts: Vec<Vec<T>>) -> Vec<T> {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    parts.concat()
}

impl ResBlockOp {
    /// The block on the contiguous images `x` of shape `dims`, the images `first..` of the
    /// batch.
    fn forward_images<T: Real>(&self, x: &[T], dims: &[usize], first: usize) -> Result<Forward<T>> {
        let (n1, stats1) = self.norm1.forward_of(x, dims)?;
        let (h, g1) = self.conv1.output_of(&n1, dims, first, None)?;
        drop(n1);
        let h_dims = g1.out_shape().dims().to_vec();
        let (n2, stats2) = self.norm2.forward_of(&h, &h_dims)?;
        let skip = match &self.skip {
            Some(conv) => Some(conv.output_of(x, dims)?.0),
            None => None,
        };
        let residual = skip.as_deref().unwrap_or(x);
        let (out, g2) = self.conv2.output_of(&n2, &h_dims, first, Some(residual))?;
        Ok(Forward {
            out,
            out_dims: g2.out_shape().dims().to_vec(),
            h,
            h_dims,
            stats: [stats1, stats2],
        })
    }

    /// The block's output for the input `xs`, `xl` (contiguous).
    fn run<T: Real>(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, dims) = (cpu_slice::<T>(xs, xl, "res_block")?, xl.dims());
        let b = dims[0];
        let parts = by_images(b, |images| {
            let x = images_of(x, b, &images);
            self.forward_images(x, &with_batch(dims, images.len()), images.start)
        })?;
        let (out_dims, h_dims) = match parts.first() {
            Some(p) => (with_batch(&p.out_dims, b), with_batch(&p.h_dims, b)),
            None => candle_core::bail!("res_block: an empty batch"),
        };
        let (mut outs, mut hs, mut stats1, mut stats2) = (vec![], vec![], vec![], vec![]);
        for part in parts {
            let [s1, s2] = part.stats;
            outs.push(part.out);
            hs.push(part.h);
            stats1.extend(s1);
            stats2.extend(s2);
        }
        if self.keep {
            let h = Tensor::from_vec(concat(hs), h_dims, &Device::Cpu)?;
            let stats = Arc::new([stats1, stats2]);
            *self.lock_saved()? = Some(Saved { h, stats });
        }
        Ok((T::to_cpu_storage_owned(concat(outs)), out_dims.into()))
    }

    fn lock_saved(&self) -> Result<std::sync::MutexGuard<'_, Option<Saved>>> {
        self.saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("res_block: a backward pass panicked".into()))
    }

    /// `h` for the input `x` and the GroupNorms' statistics: what the forward kept, or `h`
    /// computed again (and no statistics: the GroupNorm backward recomputes them).
    fn saved(&self, x: &Tensor) -> Result<(Tensor, Option<Arc<[Stats; 2]>>)> {
        if let Some(saved) = self.lock_saved()?.as_ref() {
            return Ok((saved.h.clone(), Some(saved.stats.clone())));
        }
        let h = x
            .apply_op1_no_bwd(&self.norm1)?
            .apply_op1_no_bwd(&self.conv1)?;
        Ok((h, None))
    }

    /// The input gradient of the images `x` (shape `dims`) with first-conv outputs `h` (shape
    /// `h_dims`) for the block's output gradient `grad`: back through the second conv, the
    /// second GroupNorm+SiLU (at `h`, in place), the first conv and the first GroupNorm+SiLU
    /// (at `x`, in place, the gradient through the skip connection added in its last pass).
    fn backward_images<T: Real>(
        &self,
        (x, dims): (&[T], &[usize]),
        (h, h_dims): (&[T], &[usize]),
        grad: &[T],
        stats: [Option<&[(f64, f64)]>; 2],
    ) -> Result<Vec<T>> {
        let mut d = self.conv2.conv().input_grad_of(grad, h_dims)?;
        self.norm2
            .backward_of((h, h_dims), &mut d, stats[1], None)?;
        let mut dx = self.conv1.conv().input_grad_of(&d, dims)?;
        drop(d);
        let skip = match &self.skip {
            Some(conv) => Some(conv.input_grad_of(grad, dims)?),
            None => None,
        };
        let addend = skip.as_deref().unwrap_or(grad);
        self.norm1
            .backward_of((x, dims), &mut dx, stats[0], Some(addend))?;
        Ok(dx)
    }

    /// The input gradient for the input `x`, the first conv's output `h`, the output gradient
    /// `grad` (all contiguous CPU tensors of dtype `T`) and the kept statistics, image by image
    /// as the forward ran.
    fn backward<T: Real>(
        &self,
        x: &Tensor,
        h: &Tensor,
        grad: &Tensor,
        stats: Option<&[Stats; 2]>,
    ) -> Result<Tensor> {
        with_storage(x, "res_block", |xs, xl| {
            with_storage(h, "res_block", |hs, hl| {
                with_storage(grad, "res_block", |gs, gl| {
                    let (xv, hv) = (
                        cpu_slice::<T>(xs, xl, "res_block")?,
                        cpu_slice(hs, hl, "res_block")?,
                    );
                    let gv = cpu_slice::<T>(gs, gl, "res_block")?;
                    let (dims, h_dims, b) = (xl.dims(), hl.dims(), xl.dims()[0]);
                    let parts = by_images(b, |images| {
                        let n = images.len();
                        let stats = stats.map_or([None, None], |[s1, s2]| {
                            [
                                Some(images_of(s1, b, &images)),
                                Some(images_of(s2, b, &images)),
                            ]
                        });
                        self.backward_images(
                            (images_of(xv, b, &images), &with_batch(dims, n)),
                            (images_of(hv, b, &images), &with_batch(h_dims, n)),
                            images_of(gv, b, &images),
                            stats,
                        )
                    })?;
                    Tensor::from_vec(concat(parts), xl.shape().clone(), &Device::Cpu)
                })
            })
        })
    }
}

impl CustomOp1 for ResBlockOp {
    fn name(&self) -> &'static str {
        "mapga-res-block"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l),
            CpuStorage::F64(_) => self.run::<f64>(s, l),
            other => Err(unsupported("res_block", other)),
        }
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (h, stats) = self.saved(x)?;
        let (x, h, grad) = (x.contiguous()?, h.contiguous()?, grad.contiguous()?);
        let stats = stats.as_deref();
        let dx = match x.dtype() {
            DType::F32 => self.backward::<f32>(&x, &h, &grad, stats)?,
            DType::F64 => self.backward::<f64>(&x, &h, &grad, stats)?,
            other => candle_core::bail!("res_block kernel: unsupported dtype {other:?}"),
        };
        Ok(Some(dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{on_threads, randn, rel_err, tolerance};
    use candle_core::{DType, Var};

    /// The layers of a block from `i` to `o` channels in `groups` groups, random parameters.
    fn layers(
        seed: u64,
        i: usize,
        o: usize,
        groups: usize,
        dtype: DType,
    ) -> (GroupNorm, Conv2d, GroupNorm, Conv2d, Option<Conv2d>) {
        let norm = |s: u64, c: usize| {
            let weight = ((randn(s, &[c], dtype) * 0.2).unwrap() + 1.0).unwrap();
            GroupNorm::new(weight, randn(s + 1, &[c], dtype), groups, 1e-5)
        };
        let conv = |s: u64, i: usize, o: usize, k: usize| {
            let w = (randn(s, &[o, i, k, k], dtype) * (1.0 / (i * k * k) as f64).sqrt()).unwrap();
            Conv2d::new(w, Some(randn(s + 1, &[o], dtype)), 1, k / 2)
        };
        let skip = (i != o).then(|| conv(seed + 6, i, o, 1));
        (
            norm(seed, i),
            conv(seed + 2, i, o, 3),
            norm(seed + 4, o),
            conv(seed + 5, o, o, 3),
            skip,
        )
    }

    /// The block as one op against the separate layers: the output and the gradient of
    /// `sum(out * v)` in `x`, with and without a skip conv, on im2col- and Winograd-sized
    /// images, f32 and f64, on 1 and 2 threads.
    #[test]
    fn one_op_matches_the_separate_layers() {
        // (batch, in, out, groups, height, width)
        let cases = [(2, 4, 4, 2, 7, 5), (3, 4, 6, 2, 6, 9), (2, 6, 4, 2, 5, 34)];
        for threads in [1, 2] {
            on_threads(threads, || {
                for (case, &(b, i, o, groups, h, w)) in cases.iter().enumerate() {
                    for dtype in [DType::F32, DType::F64] {
                        let seed = 30 * case as u64;
                        let (n1, c1, n2, c2, skip) = layers(seed, i, o, groups, dtype);
                        let x = Var::from_tensor(&randn(seed + 10, &[b, i, h, w], dtype)).unwrap();
                        let e = randn(seed + 11, &[b, o], dtype);
                        let v = randn(seed + 12, &[b, o, h, w], dtype);
                        let run = |separate: bool| {
                            let out = if separate {
                                let h = c1
                                    .forward_with(&n1.forward_silu(&x).unwrap(), Some(&e), None)
                                    .unwrap();
                                let s = match &skip {
                                    Some(conv) => candle_core::Module::forward(conv, &x).unwrap(),
                                    None => x.as_tensor().clone(),
                                };
                                c2.forward_with(&n2.forward_silu(&h).unwrap(), None, Some(&s))
                                    .unwrap()
                            } else {
                                res_block(&x, &e, &n1, &c1, &n2, &c2, skip.as_ref()).unwrap()
                            };
                            let grads = (&out * &v).unwrap().sum_all().unwrap().backward().unwrap();
                            (out, grads.get(&x).unwrap().clone())
                        };
                        let (got, want) = (run(false), run(true));
                        let what = format!("case {case} {dtype:?} {threads} threads");
                        let err = rel_err(&got.0, &want.0);
                        assert!(err < tolerance(dtype), "{what}: output error {err:.2e}");
                        let err = rel_err(&got.1, &want.1);
                        assert!(err < tolerance(dtype), "{what}: dx error {err:.2e}");
                    }
                }
            });
        }
    }

    /// An untracked input keeps nothing for a backward pass; a tracked image bias takes the
    /// separate layers and gets its gradient.
    #[test]
    fn untracked_inputs_and_tracked_parameters() {
        let (n1, c1, n2, c2, skip) = layers(1, 4, 6, 2, DType::F64);
        let x = randn(2, &[2, 4, 5, 5], DType::F64);
        let e = randn(3, &[2, 6], DType::F64);
        let plain = res_block(&x, &e, &n1, &c1, &n2, &c2, skip.as_ref()).unwrap();
        assert!(!plain.track_op());
        let tracked_e = Var::from_tensor(&e).unwrap();
        let out = res_block(&x, &tracked_e, &n1, &c1, &n2, &c2, skip.as_ref()).unwrap();
        assert!(rel_err(&out, &plain) < 1e-12);
        let grads = out.sum_all().unwrap().backward().unwrap();
        assert!(
            grads.get(&tracked_e).is_some(),
            "no gradient for the image bias"
        );
    }

    #[test]
    fn an_image_bias_of_the_wrong_shape_is_an_error() {
        let (n1, c1, n2, c2, skip) = layers(1, 4, 6, 2, DType::F32);
        let x = randn(2, &[2, 4, 5, 5], DType::F32);
        let e = randn(3, &[1, 6], DType::F32);
        let err = res_block(&x, &e, &n1, &c1, &n2, &c2, skip.as_ref()).unwrap_err();
        assert!(err.to_string().contains("image bias"), "{err}");
    }
}
