//! GroupNorm with an optional fused SiLU, constant affine weight and bias.
//!
//! Forward, per (image, group) of `n` elements: mean and biased variance in two passes with
//! f64 accumulators, then `y = (x - mean) / sqrt(var + eps) * gamma_c + beta_c` and, fused,
//! `silu(y) = y / (1 + e^-y)`. Backward: the statistics are recomputed (the op saves nothing;
//! [`super::res_block()`] passes the ones its forward kept),
//! `dy` goes through the SiLU derivative `s (1 + y (1 - s))`, `s = sigmoid(y)`, and the
//! closed-form GroupNorm input gradient
//! `dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))` with `dxhat = gamma_c dy`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::{cpu_slice, fast_path, min_items, unsupported, vectorized_fn, with_data, Real};

/// The sizes of one GroupNorm: `b` images of `c` channels of `hw` elements, `groups` groups.
#[derive(Debug, Clone, Copy)]
struct Geom {
    c: usize,
    hw: usize,
    groups: usize,
}

impl Geom {
    fn new(dims: &[usize], groups: usize, params: usize) -> Result<Geom> {
        if dims.len() < 3 {
            candle_core::bail!("input rank for GroupNorm should be at least 3")
        }
        let c = dims[1];
        if groups == 0 || c % groups != 0 {
            candle_core::bail!("GroupNorm: num_groups ({groups}) must divide num_channels ({c})")
        }
        if params != c {
            candle_core::bail!("unexpected num-channels in GroupNorm ({c} <> {params})")
        }
        Ok(Geom {
            c,
            hw: dims[2..].iter().product(),
            groups,
        })
    }

    /// Channels per group.
    fn cpg(&self) -> usize {
        self.c / self.groups
    }

    /// Elements per group.
    fn n(&self) -> usize {
        self.cpg() * self.hw
    }
}

/// Lanes of a block sum: independent chains of `T`, one AVX-512 register of f32.
const LANES: usize = 16;
/// Rows of [`LANES`] summed in `T` before the lanes go into the f64 total (so each lane adds
/// at most this many terms in `T`).
const BLOCK_ROWS: usize = 32;

/// `s` as rows of [`LANES`] elements (arrays, so the loops over them need no bounds checks),
/// and the elements left over.
#[inline(always)]
fn lane_rows<T>(s: &[T]) -> (impl Iterator<Item = &[T; LANES]>, &[T]) {
    let rows = s.chunks_exact(LANES);
    let rest = rows.remainder();
    // Every chunk has LANES elements: the conversion never fails.
    (rows.filter_map(|row| row.try_into().ok()), rest)
}

/// The sums of `f(a_i, b_i)` over `i`, two of them (`f` returns a pair): in blocks of
/// [`BLOCK_ROWS`] x [`LANES`] elements summed in lanes of `T` (fast: the loop over a row of
/// lanes is one vector add), the block sums added in f64.
#[inline(always)]
fn sums2<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (f64, f64) {
    let ((a_rows, a_rest), (b_rows, b_rest)) = (lane_rows(a), lane_rows(b));
    let mut rows = a_rows.zip(b_rows).peekable();
    let (mut t0, mut t1) = (0.0f64, 0.0f64);
    while rows.peek().is_some() {
        let (mut l0, mut l1) = ([T::zero(); LANES], [T::zero(); LANES]);
        for (a, b) in rows.by_ref().take(BLOCK_ROWS) {
            for k in 0..LANES {
                let (u, v) = f(a[k], b[k]);
                l0[k] += u;
                l1[k] += v;
            }
        }
        t0 += l0.iter().map(|v| v.to_f64()).sum::<f64>();
        t1 += l1.iter().map(|v| v.to_f64()).sum::<f64>();
    }
    for (&a, &b) in a_rest.iter().zip(b_rest) {
        let (u, v) = f(a, b);
        t0 += u.to_f64();
        t1 += v.to_f64();
    }
    (t0, t1)
}

/// Mean and 1 / sqrt(var + eps) of one group, in two passes.
#[inline(always)]
fn stats<T: Real>(x: &[T], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = sums2(x, x, |v, _| (v, T::zero())).0 / n;
    let m = T::from_f64(mean);
    let var = sums2(x, x, |v, _| ((v - m) * (v - m), T::zero())).0 / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// sigmoid(y).
#[inline(always)]
fn sigmoid<T: Real>(y: T) -> T {
    T::one() / (T::one() + (-y).exp())
}

/// Mean and `1 / sqrt(var + eps)` of every group of a batch (image-major), as the forward
/// computed them: the backward of [`super::res_block()`] reuses them instead of two more passes
/// over the input.
pub(super) type Stats = Vec<(f64, f64)>;

/// Runs `f(group index in the batch, input group, output group)` over every group of a batch,
/// in parallel, and collects its results in order.
fn per_group<T: Real, R: Send>(
    input: &[T],
    output: &mut [T],
    g: &Geom,
    f: impl Fn(usize, &[T], &mut [T]) -> R + Sync,
) -> Vec<R> {
    let n = g.n();
    if n == 0 {
        return Vec::new();
    }
    output
        .par_chunks_mut(n)
        .zip(input.par_chunks(n))
        .enumerate()
        .with_min_len(min_items(n))
        .map(|(i, (o, x))| f(i, x, o))
        .collect()
}

/// What one group's kernels need besides the data: the affine parameters of its channels,
/// the pixels per channel, epsilon and whether SiLU follows.
struct GroupParams<'a, T> {
    gamma: &'a [T],
    beta: &'a [T],
    hw: usize,
    eps: f64,
    silu: bool,
}

impl<'a, T> GroupParams<'a, T> {
    /// The parameters of group `i` of a batch (any image) with the layer's `gamma`, `beta`.
    fn of(i: usize, gamma: &'a [T], beta: &'a [T], g: &Geom, eps: f64, silu: bool) -> Self {
        let (cpg, group) = (g.cpg(), i % g.groups);
        GroupParams {
            gamma: &gamma[group * cpg..][..cpg],
            beta: &beta[group * cpg..][..cpg],
            hw: g.hw,
            eps,
            silu,
        }
    }
}

vectorized_fn! {
    /// The normalised, affine (and SiLU) output of one group `x`; its statistics go to
    /// `stats`.
    fn forward_group<T: Real>(
        x: &[T],
        out: &mut [T],
        p: &GroupParams<'_, T>,
        stats_out: &mut (f64, f64),
    ) {
        *stats_out = stats(x, p.eps);
        let (mean, rstd) = (T::from_f64(stats_out.0), T::from_f64(stats_out.1));
        let channels = out.chunks_mut(p.hw).zip(x.chunks(p.hw));
        for ((o, x), (&gm, &b)) in channels.zip(p.gamma.iter().zip(p.beta)) {
            let a = gm * rstd;
            if p.silu {
                for (o, &x) in o.iter_mut().zip(x) {
                    let y = (x - mean).mul_add(a, b);
                    *o = y * sigmoid(y);
                }
            } else {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = (x - mean).mul_add(a, b);
                }
            }
        }
    }
}

vectorized_fn! {
    /// Turns the output gradient `d` of one group `x` into its input gradient (plus `addend`
    /// when given), in place; `known` are the group's statistics if the forward kept them.
    fn backward_group<T: Real>(
        x: &[T],
        d: &mut [T],
        p: &GroupParams<'_, T>,
        known: Option<(f64, f64)>,
        addend: Option<&[T]>,
    ) {
        let (mean, rstd) = known.unwrap_or_else(|| stats(x, p.eps));
        let (mean, rstd) = (T::from_f64(mean), T::from_f64(rstd));
        // Pass 1: dxhat = gamma dy (dy through the SiLU), and its sums with 1 and with x - mean.
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        let channels = d.chunks_mut(p.hw).zip(x.chunks(p.hw));
        for ((d, x), (&gm, &b)) in channels.zip(p.gamma.iter().zip(p.beta)) {
            if p.silu {
                let a = gm * rstd;
                for (d, &x) in d.iter_mut().zip(x) {
                    let y = (x - mean).mul_add(a, b);
                    let s = sigmoid(y);
                    *d = *d * gm * s * y.mul_add(T::one() - s, T::one());
                }
            } else {
                for d in d.iter_mut() {
                    *d *= gm;
                }
            }
            let (u, v) = sums2(d, x, |d, x| (d, d * (x - mean)));
            s1 += u;
            s2 += v;
        }
        let n = x.len() as f64;
        let r = rstd.to_f64();
        // Pass 2: dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), xhat = (x - mean) rstd.
        let (m1, c) = (T::from_f64(s1 / n), T::from_f64(s2 / n * r * r));
        match addend {
            Some(add) => {
                for ((d, &x), &a) in d.iter_mut().zip(x).zip(add) {
                    *d = rstd.mul_add((x - mean).mul_add(-c, *d - m1), a);
                }
            }
            None => {
                for (d, &x) in d.iter_mut().zip(x) {
                    *d = rstd * (x - mean).mul_add(-c, *d - m1);
                }
            }
        }
    }
}

/// The forward pass and the statistics of every group.
fn forward<T: Real>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    g: &Geom,
    eps: f64,
    silu: bool,
) -> (Vec<T>, Stats) {
    let mut out = vec![T::zero(); x.len()];
    let stats = per_group(x, &mut out, g, |i, x, out| {
        let mut stats = (0.0, 0.0);
        let p = GroupParams::of(i, gamma, beta, g, eps, silu);
        forward_group(x, out, &p, &mut stats);
        stats
    });
    (out, stats)
}

/// What the backward pass takes besides the input and the output gradient.
struct BackwardExtras<'a, T> {
    /// The forward's statistics (recomputed when absent).
    stats: Option<&'a [(f64, f64)]>,
    /// A tensor of the input's shape added to the input gradient.
    addend: Option<&'a [T]>,
}

/// Turns the output gradient `d` into the input gradient (plus the addend), in place.
fn backward<T: Real>(
    x: &[T],
    d: &mut [T],
    (gamma, beta): (&[T], &[T]),
    g: &Geom,
    (eps, silu): (f64, bool),
    extras: BackwardExtras<'_, T>,
) {
    let n = g.n();
    per_group(x, d, g, |i, x, d| {
        let p = GroupParams::of(i, gamma, beta, g, eps, silu);
        let known = extras.stats.map(|s| s[i]);
        let addend = extras.addend.map(|a| &a[i * n..][..n]);
        backward_group(x, d, &p, known, addend)
    });
}

/// The parameters of a GroupNorm op and its backward.
#[derive(Clone)]
pub(super) struct GroupNormOp {
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
}

impl GroupNormOp {
    fn params<T: Real, R>(&self, f: impl FnOnce(&[T], &[T]) -> Result<R>) -> Result<R> {
        with_data::<T, _>(&self.gamma, "group_norm", |gamma| {
            with_data::<T, _>(&self.beta, "group_norm", |beta| f(gamma, beta))
        })
    }

    /// The affine weight and bias.
    pub(super) fn tensors(&self) -> [&Tensor; 2] {
        [&self.gamma, &self.beta]
    }

    /// The layer on tensors, [`group_norm()`] (with its fallbacks).
    pub(super) fn layer(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.gamma, &self.beta, self.groups, self.eps, self.silu)
    }

    /// The output and the statistics of every group for the contiguous input `x` of shape
    /// `dims`.
    pub(super) fn forward_of<T: Real>(&self, x: &[T], dims: &[usize]) -> Result<(Vec<T>, Stats)> {
        let g = Geom::new(dims, self.groups, self.gamma.elem_count())?;
        if x.len() != dims.iter().product::<usize>() {
            candle_core::bail!("group_norm: {} elements for an input of {dims:?}", x.len())
        }
        self.params::<T, _>(|gamma, beta| Ok(forward(x, gamma, beta, &g, self.eps, self.silu)))
    }

    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, _) = self.forward_of(cpu_slice::<T>(s, l, "group_norm")?, l.dims())?;
        Ok((T::to_cpu_storage_owned(out), l.shape().clone()))
    }

    /// Turns `d`, the output gradient at the contiguous input `x` of shape `dims`, into the
    /// input gradient plus `addend` (`x`'s size) when given, in place. `stats` are the
    /// forward's statistics of `x` ([`GroupNormOp::forward_of`]), recomputed when absent.
    pub(super) fn backward_of<T: Real>(
        &self,
        (x, dims): (&[T], &[usize]),
        d: &mut [T],
        stats: Option<&[(f64, f64)]>,
        addend: Option<&[T]>,
    ) -> Result<()> {
        let g = Geom::new(dims, self.groups, self.gamma.elem_count())?;
        let len = dims.iter().product::<usize>();
        for (what, n) in [("input", Some(x.len())), ("gradient", Some(d.len()))]
            .into_iter()
            .chain([("addend", addend.map(<[T]>::len))])
        {
            if n.is_some_and(|n| n != len) {
                candle_core::bail!("group_norm backward: {what} of {n:?} elements for {dims:?}")
            }
        }
        let groups = len / g.n().max(1);
        if let Some(stats) = stats.filter(|s| s.len() != groups) {
            candle_core::bail!(
                "group_norm backward: statistics of {} groups for an input of {groups}",
                stats.len()
            )
        }
        let extras = BackwardExtras { stats, addend };
        self.params::<T, _>(|gamma, beta| {
            backward(x, d, (gamma, beta), &g, (self.eps, self.silu), extras);
            Ok(())
        })
    }

    /// The input gradient of the input `s1`, `l1` for the output gradient `s2`, `l2` (both
    /// contiguous), in a new storage.
    fn run_backward<T: Real>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "group_norm backward: gradient {:?} for an input of {:?}",
                l2.dims(),
                l1.dims()
            )
        }
        let x = cpu_slice::<T>(s1, l1, "group_norm backward")?;
        // `dx` first holds a copy of the output gradient; the kernel turns it into dx.
        let mut dx = cpu_slice::<T>(s2, l2, "group_norm backward")?.to_vec();
        self.backward_of((x, l1.dims()), &mut dx, None, None)?;
        Ok((T::to_cpu_storage_owned(dx), l1.shape().clone()))
    }
}

impl CustomOp1 for GroupNormOp {
    fn name(&self) -> &'static str {
        "mapga-group-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l),
            CpuStorage::F64(_) => self.run::<f64>(s, l),
            other => Err(unsupported("group_norm", other)),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let op = GroupNormGrad(self.clone());
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &op)?))
    }
}

/// The input gradient of [`GroupNormOp`], an op on (input, output gradient).
struct GroupNormGrad(GroupNormOp);

impl CustomOp2 for GroupNormGrad {
    fn name(&self) -> &'static str {
        "mapga-group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match s1 {
            CpuStorage::F32(_) => self.0.run_backward::<f32>((s1, l1), (s2, l2)),
            CpuStorage::F64(_) => self.0.run_backward::<f64>((s1, l1), (s2, l2)),
            other => Err(unsupported("group_norm", other)),
        }
    }
}

/// GroupNorm of `x` (`[B, C, ...]`) in `groups` groups with the affine `weight` and `bias`
/// (`[C]`), followed by SiLU when `silu`: `candle_nn::GroupNorm` (then `.silu()`) in one op.
///
/// Differentiable in `x`; untracked `weight` and `bias` (loaded from a model file) are
/// constants of the fused op. Affine parameters that autograd tracks (a `Var`, or computed from
/// one) take the stock `candle_nn` layer, which differentiates them too; so does anything off
/// the fast path (see the module documentation).
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let trainable = weight.track_op() || bias.track_op();
    if fast_path(x, &[Some(weight), Some(bias)])
        && !trainable
        && x.rank() >= 3
        && x.elem_count() > 0
    {
        if weight.dims() != bias.dims() {
            candle_core::bail!(
                "GroupNorm: weight {:?} and bias {:?} differ",
                weight.dims(),
                bias.dims()
            )
        }
        let op = GroupNormOp {
            gamma: weight.clone(),
            beta: bias.clone(),
            groups,
            eps,
            silu,
        };
        return x.contiguous()?.apply_op1(op);
    }
    let channels = x.dims().get(1).copied().unwrap_or(0);
    let norm = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?;
    let y = norm.forward(x)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}

/// A GroupNorm layer with constant affine parameters and the fast kernel ([`group_norm()`]).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// A layer from its tensors.
    pub fn new(weight: Tensor, bias: Tensor, groups: usize, eps: f64) -> GroupNorm {
        GroupNorm {
            weight,
            bias,
            groups,
            eps,
        }
    }

    /// `groups` groups over `channels` channels, loaded from `vb` as `candle_nn::group_norm`
    /// does (tensors `weight` and `bias`, `[channels]`, initialised to ones and zeros).
    pub fn load(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<GroupNorm> {
        if groups == 0 || channels % groups != 0 {
            candle_core::bail!(
                "GroupNorm: num_groups ({groups}) must divide num_channels ({channels})"
            )
        }
        let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.))?;
        Ok(GroupNorm::new(weight, bias, groups, eps))
    }

    /// The layer as an op (the same tensors), followed by SiLU when `silu`.
    pub(super) fn op(&self, silu: bool) -> GroupNormOp {
        GroupNormOp {
            gamma: self.weight.clone(),
            beta: self.bias.clone(),
            groups: self.groups,
            eps: self.eps,
            silu,
        }
    }

    /// GroupNorm then SiLU, fused.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{on_threads, randn, rel_err, tolerance, value_and_vjp};
    use candle_core::DType;

    fn stock(x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, silu: bool) -> Result<Tensor> {
        let norm = candle_nn::GroupNorm::new(w.clone(), b.clone(), x.dim(1)?, groups, 1e-5)?;
        let y = norm.forward(x)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    /// (input shape, groups)
    fn cases() -> Vec<(Vec<usize>, usize)> {
        vec![
            (vec![1, 8, 7, 5], 4),
            (vec![3, 6, 9, 9], 3),
            (vec![2, 12, 5, 11], 4),
            (vec![4, 5, 3, 3], 5),
            (vec![1, 16, 14, 14], 8),
            (vec![2, 9, 13], 3),
            (vec![2, 7, 4, 6], 1),
        ]
    }

    fn check(threads: usize) {
        on_threads(threads, || {
            for (i, (shape, groups)) in cases().into_iter().enumerate() {
                for dtype in [DType::F32, DType::F64] {
                    for silu in [false, true] {
                        let seed = 10 * i as u64;
                        // An offset and a scale, as real activations have.
                        let x = ((randn(seed, &shape, dtype) * 2.5).unwrap() + 0.7).unwrap();
                        let w = (randn(seed + 1, &[shape[1]], dtype) + 1.0).unwrap();
                        let b = randn(seed + 2, &[shape[1]], dtype);
                        let what = format!("{shape:?} groups {groups} silu {silu} {dtype:?}");
                        let (out, grad) = value_and_vjp(&x, seed + 3, |x| {
                            group_norm(x, &w, &b, groups, 1e-5, silu)
                        });
                        let (want, want_grad) =
                            value_and_vjp(&x, seed + 3, |x| stock(x, &w, &b, groups, silu));
                        let err = rel_err(&out, &want);
                        assert!(err < tolerance(dtype), "{what}: forward error {err:.2e}");
                        let err = rel_err(&grad, &want_grad);
                        assert!(err < tolerance(dtype), "{what}: input grad error {err:.2e}");
                    }
                }
            }
        });
    }

    #[test]
    fn group_norm_matches_candle_on_one_thread() {
        check(1);
    }

    #[test]
    fn group_norm_matches_candle_on_two_threads() {
        check(2);
    }

    /// The input gradient with the forward's statistics is the one that recomputes them; with
    /// an addend it is that plus the addend; statistics of the wrong length and an addend of
    /// the wrong size are errors.
    #[test]
    fn kept_statistics_and_the_addend() {
        let x = ((randn(1, &[3, 6, 5, 4], DType::F64) * 2.0).unwrap() + 0.5).unwrap();
        let op = GroupNorm::new(
            randn(2, &[6], DType::F64),
            randn(3, &[6], DType::F64),
            3,
            1e-5,
        )
        .op(true);
        let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let (xv, grad, addend) = (
            values(&x),
            randn(4, x.dims(), DType::F64),
            randn(5, x.dims(), DType::F64),
        );
        let (_, stats) = op.forward_of(&xv, x.dims()).unwrap();
        assert_eq!(stats.len(), 3 * 3, "one pair per image and group");
        let run = |stats: Option<&[(f64, f64)]>, addend: Option<&[f64]>| {
            let mut d = values(&grad);
            op.backward_of((&xv, x.dims()), &mut d, stats, addend)
                .map(|()| Tensor::from_vec(d, x.dims(), &candle_core::Device::Cpu).unwrap())
        };
        let recomputed = run(None, None).unwrap();
        let kept = run(Some(&stats), None).unwrap();
        assert!(rel_err(&kept, &recomputed) < 1e-12);
        let plus = run(None, Some(&values(&addend))).unwrap();
        assert!(rel_err(&plus, &(&recomputed + &addend).unwrap()) < 1e-12);
        let err = run(Some(&stats[..2]), None).unwrap_err();
        assert!(err.to_string().contains("statistics of 2 groups"), "{err}");
        let err = run(None, Some(&[1.0; 7])).unwrap_err();
        assert!(err.to_string().contains("addend"), "{err}");
    }

    #[test]
    fn the_layer_and_the_fallback() {
        let x = randn(1, &[2, 6, 5, 4], DType::F32);
        let w = randn(2, &[6], DType::F32);
        let b = randn(3, &[6], DType::F32);
        let layer = GroupNorm::new(w.clone(), b.clone(), 3, 1e-5);
        assert!(
            rel_err(
                &layer.forward(&x).unwrap(),
                &stock(&x, &w, &b, 3, false).unwrap()
            ) < 1e-5
        );
        assert!(
            rel_err(
                &layer.forward_silu(&x).unwrap(),
                &stock(&x, &w, &b, 3, true).unwrap()
            ) < 1e-5
        );
        // Non-contiguous input: made contiguous, same result and gradient.
        let xt = x.transpose(2, 3).unwrap();
        let (out, grad) = value_and_vjp(&xt, 4, |x| layer.forward_silu(x));
        let (want, want_grad) =
            value_and_vjp(&xt.contiguous().unwrap(), 4, |x| layer.forward_silu(x));
        assert_eq!(rel_err(&out, &want), 0.0);
        assert_eq!(rel_err(&grad, &want_grad), 0.0);
        // bf16 runs the stock layer.
        let (xb, wb, bb) = (
            x.to_dtype(DType::BF16).unwrap(),
            w.to_dtype(DType::BF16).unwrap(),
            b.to_dtype(DType::BF16).unwrap(),
        );
        let got = group_norm(&xb, &wb, &bb, 3, 1e-5, true).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        assert_eq!(rel_err(&got, &stock(&xb, &wb, &bb, 3, true).unwrap()), 0.0);
        // Errors: groups not dividing the channels, wrong parameter length, rank 2.
        assert!(group_norm(&x, &w, &b, 4, 1e-5, false).is_err());
        let w5 = randn(2, &[5], DType::F32);
        assert!(group_norm(&x, &w5, &w5, 5, 1e-5, false).is_err());
        assert!(group_norm(&x.flatten_from(1).unwrap(), &w, &b, 3, 1e-5, false).is_err());
    }

    /// Trainable affine parameters get their gradients (from the stock layer).
    #[test]
    fn trainable_affine_parameters_get_gradients() {
        let x = randn(21, &[2, 6, 5, 4], DType::F64);
        let w = candle_core::Var::from_tensor(&randn(22, &[6], DType::F64)).unwrap();
        let b = candle_core::Var::from_tensor(&randn(23, &[6], DType::F64)).unwrap();
        let grads_of = |f: &dyn Fn() -> Result<Tensor>| {
            f().unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let got = grads_of(&|| group_norm(&x, &w, &b, 3, 1e-5, true));
        let want = grads_of(&|| stock(&x, &w, &b, 3, true));
        for p in [&w, &b] {
            let err = rel_err(got.get(p).expect("a gradient"), want.get(p).unwrap());
            assert!(err < 1e-12, "{err:.2e}");
        }
    }
}
