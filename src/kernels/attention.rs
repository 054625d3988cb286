//! Multi-head self-attention over the pixels of an image as one op with a hand-written
//! backward, and the scaled softmax it runs on.
//!
//! The ADM / consistency-model U-Net ([`crate::models::adm`]) attends over 1,024 tokens at
//! 32x32 pixels. As separate candle ops the block was the largest cost of the ImageNet-64
//! forward (672 of about 1,250 ms at batch 1: the transposed copy of the `heads x T x T`
//! weights and candle_nn's five-op softmax) and its backward zeroed and accumulated a
//! gradient per graph node; as one op it is about 150 ms forward. `candle_nn::ops::
//! softmax_last_dim` is not used: it has no backward pass, so it would silently drop
//! gradients on a tracked path.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Multi-head self-attention over the pixels from the `qkv` projection `[B, 3C, H, W]` (rows
/// in flash order): per head `softmax(q^T k / sqrt(d))` weights `v`, the heads' outputs
/// concatenated, `[B, C, H, W]`.
///
/// On the CPU in f32 and f64 this is one op ([`AttentionOp`]) with a hand-written backward.
/// As separate candle ops (the fallback below) the graph has about a dozen nodes per block,
/// and candle's backward pass zeroes an accumulator for every node's input and adds the
/// gradient into it: at 32x32 pixels twice over the `heads x 1024 x 1024` logits and weights
/// per image, plus the zero padding of the three `narrow`s of `qkv`.
pub fn attention(qkv: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    if qkv.device().is_cpu() && matches!(qkv.dtype(), DType::F32 | DType::F64) {
        return qkv.contiguous()?.apply_op1(AttentionOp {
            heads,
            saved: Mutex::new(None),
        });
    }
    attention_ops(qkv, heads)
}

/// [`attention`] as separate candle ops (any device and float dtype).
fn attention_ops(qkv: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, c3, h, w) = qkv.dims4()?;
    let (q, k, v) = split_qkv(qkv, heads)?;
    let d = q.dim(1)?;
    let logits = (q.transpose(1, 2)?.matmul(&k)? * (1.0 / (d as f64).sqrt()))?;
    // `softmax_last_dim` would be faster but has no backward pass.
    let weights = candle_nn::ops::softmax(&logits, D::Minus1)?;
    weights
        .matmul(&v.transpose(1, 2)?)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, c3 / 3, h, w))
}

/// q, k and v, each `[B heads, d, T]`, of a `qkv` projection `[B, 3C, H, W]` in flash order.
fn split_qkv(qkv: &Tensor, heads: usize) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let (b, c3, h, w) = qkv.dims4()?;
    let (c, t) = (c3 / 3, h * w);
    let qkv = qkv.reshape((b, 3, c, t))?;
    let part = |i: usize| -> candle_core::Result<Tensor> {
        qkv.narrow(1, i, 1)?
            .contiguous()?
            .reshape((b * heads, c / heads, t))
    };
    Ok((part(0)?, part(1)?, part(2)?))
}

/// What [`AttentionOp`]'s backward needs: q, k, v (`[N, d, T]`, `N = B heads`) and the
/// attention weights (`[N, T, T]`).
type AttentionSaved = (Tensor, Tensor, Tensor, Tensor);

/// The op of [`attention`] on the CPU. The forward runs candle's matmuls and
/// [`ScaledSoftmax`] on untracked tensors made from the op's input and keeps q, k, v and the
/// weights for the backward. With `L = q^T k` (`[N, T, T]`), `W = softmax(L / sqrt(d))` and
/// `out = v W^T` (computed as `(W v^T)^T`, so the `T x T` matrices are never transposed in
/// memory; the GEMMs read transposed operands in place), the backward from `g = dout`:
/// `dW = g^T v`, `dv = g W`, `dL = W (dW - rowsum(dW W)) / sqrt(d)` ([`ScaledSoftmaxBackward`]),
/// `dq = k dL^T`, `dk = q dL`, concatenated back into the `[B, 3C, H, W]` layout of `qkv`.
struct AttentionOp {
    heads: usize,
    saved: Mutex<Option<AttentionSaved>>,
}

impl AttentionOp {
    /// q, k, v and the attention weights of the contiguous `qkv` tensor, and the output
    /// `[N, d, T]`.
    fn attend(&self, qkv: &Tensor) -> candle_core::Result<(AttentionSaved, Tensor)> {
        let (q, k, v) = split_qkv(qkv, self.heads)?;
        let scale = 1.0 / (q.dim(1)? as f64).sqrt();
        let weights = q
            .transpose(1, 2)?
            .matmul(&k)?
            .apply_op1_no_bwd(&ScaledSoftmax(scale))?;
        let out = weights
            .matmul(&v.transpose(1, 2)?)?
            .transpose(1, 2)?
            .contiguous()?;
        Ok(((q, k, v, weights), out))
    }
}

/// A tensor holding a copy of the contiguous data of a CPU storage (f32 or f64).
fn tensor_of(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<Tensor> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("attention: the input is not contiguous".into()))?;
    match storage {
        CpuStorage::F32(v) => Tensor::from_slice(&v[start..end], layout.shape(), &Device::Cpu),
        CpuStorage::F64(v) => Tensor::from_slice(&v[start..end], layout.shape(), &Device::Cpu),
        other => candle_core::bail!("attention: unsupported dtype {:?}", other.dtype()),
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "adm-attention"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c3, h, w) = layout.shape().dims4()?;
        let (saved, out) = self.attend(&tensor_of(storage, layout)?)?;
        let out = out.flatten_all()?;
        let data = match out.dtype() {
            DType::F32 => CpuStorage::F32(out.to_vec1()?),
            DType::F64 => CpuStorage::F64(out.to_vec1()?),
            other => candle_core::bail!("attention: unsupported dtype {other:?}"),
        };
        *self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned state".into()))? =
            Some(saved);
        Ok((data, Shape::from((b, c3 / 3, h, w))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let saved = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("attention: poisoned state".into()))?
            .clone();
        let (q, k, v, weights) = match saved {
            Some(saved) => saved,
            None => self.attend(&qkv.detach().contiguous()?)?.0,
        };
        let (n, d, t) = q.dims3()?;
        let (b, c3, h, w) = qkv.dims4()?;
        let g = grad.detach().contiguous()?.reshape((n, d, t))?;
        let d_weights = g.transpose(1, 2)?.matmul(&v)?;
        let d_logits = weights
            .apply_op2_no_bwd(&d_weights, &ScaledSoftmaxBackward(1.0 / (d as f64).sqrt()))?;
        let dv = g.matmul(&weights)?;
        // dq as (dL k^T)^T: the GEMM then reads dL row-major; `k dL^T` reads it column-major,
        // measured 2x slower at T = 1024. dk = q dL reads it row-major as it is.
        let dq = d_logits
            .matmul(&k.transpose(1, 2)?)?
            .transpose(1, 2)?
            .contiguous()?;
        let dk = q.matmul(&d_logits)?;
        let c = c3 / 3;
        let parts = [dq, dk, dv]
            .iter()
            .map(|p| p.reshape((b, c, t)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Some(Tensor::cat(&parts, 1)?.reshape((b, c3, h, w))?))
    }
}

/// `softmax(scale x)` over the last dimension: the max, the exponentials, the sum and the
/// division row by row (a row stays in cache), parallel over the rows. (`candle_nn::ops::softmax` is five
/// ops, each a pass over the `heads x T x T` logits.) [`AttentionOp`] runs it on untracked
/// tensors and its backward with [`ScaledSoftmaxBackward`].
struct ScaledSoftmax(f64);

/// The input gradient of [`ScaledSoftmax`] from its output `y` and the output's gradient `dy`:
/// `dx = scale y (dy - sum(dy y))` per row, one pass.
struct ScaledSoftmaxBackward(f64);

/// Rows of a softmax handed to one rayon task at least (32 Ki elements of 1024-long rows).
fn softmax_rows_per_task(row: usize) -> usize {
    (32 * 1024 / row.max(1)).max(1)
}

/// The float types of the softmax kernels.
trait SoftmaxFloat: candle_core::WithDType + Copy + Send + Sync {
    /// e^x (for f32 a polynomial that vectorises, see [`exp_plain_f32`]).
    fn exp_(self) -> Self;
}

impl SoftmaxFloat for f32 {
    #[inline(always)]
    fn exp_(self) -> f32 {
        exp_plain_f32(self)
    }
}

impl SoftmaxFloat for f64 {
    #[inline(always)]
    fn exp_(self) -> f64 {
        self.exp()
    }
}

/// e^x for f32 in plain multiplies and adds, so a loop over it vectorises in the baseline
/// build (`f32::exp` is one libm call per element): `crate::kernels::exp_f32`'s argument
/// reduction `x = n ln2 + r` and degree-7 polynomial written without `mul_add` (which without
/// an FMA target feature is a software routine). A few f32 ulps; arguments clamped to
/// [-87, 88] (softmax arguments are <= 0, and e^-87 ~ 1.6e-38 is 0 to a softmax).
#[inline(always)]
fn exp_plain_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p: f32 = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    p * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

/// Lanes of the row sums (independent accumulators, so the sums vectorise).
const SOFTMAX_LANES: usize = 16;

/// The sum of `f(i)` over `0..n` in [`SOFTMAX_LANES`] interleaved partial sums.
#[inline(always)]
fn lane_sum<T: SoftmaxFloat>(n: usize, f: impl Fn(usize) -> T) -> T {
    let mut lanes = [T::zero(); SOFTMAX_LANES];
    let full = n - n % SOFTMAX_LANES;
    for base in (0..full).step_by(SOFTMAX_LANES) {
        for (l, lane) in lanes.iter_mut().enumerate() {
            *lane += f(base + l);
        }
    }
    let mut total = T::zero();
    for lane in lanes {
        total += lane;
    }
    for i in full..n {
        total += f(i);
    }
    total
}

/// The largest element of `x` (-inf for an empty row), in [`SOFTMAX_LANES`] interleaved
/// partial maxima so the loop vectorises.
#[inline(always)]
fn lane_max<T: SoftmaxFloat>(x: &[T]) -> T {
    let max = |a: T, b: T| if b > a { b } else { a };
    let mut lanes = [T::from_f64(f64::NEG_INFINITY); SOFTMAX_LANES];
    let mut rows = x.chunks_exact(SOFTMAX_LANES);
    for row in &mut rows {
        for (lane, &v) in lanes.iter_mut().zip(row) {
            *lane = max(*lane, v);
        }
    }
    rows.remainder()
        .iter()
        .chain(lanes.iter())
        .fold(T::from_f64(f64::NEG_INFINITY), |m, &v| max(m, v))
}

/// One row: `y = softmax(scale x)`.
#[inline(always)]
fn softmax_row<T: SoftmaxFloat>(x: &[T], y: &mut [T], scale: T) {
    let max = lane_max(x);
    let shift = max * scale;
    for (o, &v) in y.iter_mut().zip(x) {
        *o = (v * scale - shift).exp_();
    }
    let inv = T::one() / lane_sum(y.len(), |i| y[i]);
    for o in y.iter_mut() {
        *o *= inv;
    }
}

/// One row of the backward: `dx = scale y (dy - sum(dy y))`.
#[inline(always)]
fn softmax_row_backward<T: SoftmaxFloat>(y: &[T], dy: &[T], dx: &mut [T], scale: T) {
    let dot = lane_sum(y.len(), |i| dy[i] * y[i]);
    for ((o, &yi), &gi) in dx.iter_mut().zip(y).zip(dy) {
        *o = scale * yi * (gi - dot);
    }
}

/// The contiguous elements of `storage` seen through `layout`.
fn contiguous_data<'a, T: SoftmaxFloat>(
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [T]> {
    let data = T::cpu_storage_as_slice(storage)?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("softmax: the kernel needs a contiguous tensor"),
    }
}

impl ScaledSoftmax {
    fn run<T: SoftmaxFloat>(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_data::<T>(storage, layout)?;
        let row = layout.dims().last().copied().unwrap_or(1).max(1);
        let scale = T::from_f64(self.0);
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(row)
            .zip(x.par_chunks(row))
            .with_min_len(softmax_rows_per_task(row))
            .for_each(|(y, x)| softmax_row(x, y, scale));
        Ok((T::to_cpu_storage_owned(y), layout.shape().clone()))
    }
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "adm-scaled-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match storage {
            CpuStorage::F32(_) => self.run::<f32>(storage, layout),
            CpuStorage::F64(_) => self.run::<f64>(storage, layout),
            _ => candle_core::bail!("softmax: unsupported dtype {:?}", storage.dtype()),
        }
    }
}

impl ScaledSoftmaxBackward {
    fn run<T: SoftmaxFloat>(
        &self,
        (ys, yl): (&CpuStorage, &Layout),
        (gs, gl): (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, dy) = (contiguous_data::<T>(ys, yl)?, contiguous_data::<T>(gs, gl)?);
        if y.len() != dy.len() {
            candle_core::bail!("softmax backward: {:?} against {:?}", yl.dims(), gl.dims())
        }
        let row = yl.dims().last().copied().unwrap_or(1).max(1);
        let scale = T::from_f64(self.0);
        let mut dx = vec![T::zero(); y.len()];
        dx.par_chunks_mut(row)
            .zip(y.par_chunks(row).zip(dy.par_chunks(row)))
            .with_min_len(softmax_rows_per_task(row))
            .for_each(|(dx, (y, dy))| softmax_row_backward(y, dy, dx, scale));
        Ok((T::to_cpu_storage_owned(dx), yl.shape().clone()))
    }
}

impl CustomOp2 for ScaledSoftmaxBackward {
    fn name(&self) -> &'static str {
        "adm-scaled-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => self.run::<f32>((s1, l1), (s2, l2)),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => self.run::<f64>((s1, l1), (s2, l2)),
            _ => candle_core::bail!(
                "softmax backward: unsupported dtypes {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{randn, rel_err, tolerance, value_and_vjp};

    /// The attention op against the same attention in separate candle ops: values and the
    /// VJP to `qkv`, with rows whose length is not a multiple of the lanes and logits large
    /// enough that the max subtraction matters.
    #[test]
    fn attention_op_matches_the_candle_ops() {
        // (batch, heads, channels, height, width, input scale)
        let cases = [
            (1, 2, 8, 3, 5, 1.0),
            (2, 3, 12, 5, 7, 3.0),
            (2, 1, 4, 4, 4, 10.0),
            (1, 4, 16, 8, 8, 1.0),
        ];
        for dtype in [DType::F32, DType::F64] {
            for (i, &(b, heads, c, h, w, scale)) in cases.iter().enumerate() {
                let qkv = (randn(i as u64, &[b, 3 * c, h, w], dtype) * scale).unwrap();
                let (y, g) = value_and_vjp(&qkv, 99, |x| attention(x, heads));
                let (y_ref, g_ref) = value_and_vjp(&qkv, 99, |x| attention_ops(x, heads));
                let (ey, eg) = (rel_err(&y, &y_ref), rel_err(&g, &g_ref));
                let tol = tolerance(dtype);
                assert!(
                    ey < tol && eg < tol,
                    "{dtype:?} case {i}: value {ey:e}, VJP {eg:e}"
                );
            }
        }
    }
}
