//! Small tensor helpers shared by the operators: shape checks, dense f64 matrices as tensors,
//! per-axis matrix products, inner products and nearest-neighbour resizing.

use candle_core::{DType, Device, DeviceLocation, Tensor};
use nalgebra::DMatrix;

use super::error::{shape_error, Result};

/// A key for tensors cached per (dtype, device).
pub(crate) type DeviceKey = (DType, DeviceLocation);

/// The cache key of a tensor's dtype and device.
pub(crate) fn device_key(dtype: DType, device: &Device) -> DeviceKey {
    (dtype, device.location())
}

/// A shape as `[1, 30, 30]`.
pub(crate) fn shape_str(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// The `(C, H, W)` of an image, or a shape error of `operator`.
pub(crate) fn image_dims(operator: &str, shape: &[usize]) -> Result<(usize, usize, usize)> {
    match shape {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(shape_error(
            operator,
            format!("needs a [C, H, W] image, got {}", shape_str(shape)),
        )),
    }
}

/// An image `[C, H, W]` or a batch of images `[N, C, H, W]`: the batch size (`None` for one
/// image) and the image shape; a shape error of `operator` for any other rank.
pub(crate) fn split_batch(operator: &str, shape: &[usize]) -> Result<(Option<usize>, Vec<usize>)> {
    match shape {
        [_, _, _] => Ok((None, shape.to_vec())),
        [n, rest @ ..] if rest.len() == 3 => Ok((Some(*n), rest.to_vec())),
        _ => Err(shape_error(
            operator,
            format!(
                "needs a [C, H, W] image or a [N, C, H, W] batch, got {}",
                shape_str(shape)
            ),
        )),
    }
}

/// The image shape of an image or a batch of images (see [`split_batch`]).
pub(crate) fn item_dims(operator: &str, shape: &[usize]) -> Result<Vec<usize>> {
    Ok(split_batch(operator, shape)?.1)
}

/// `shape` with a leading batch dimension when `batch` is given.
pub(crate) fn with_batch(batch: Option<usize>, shape: &[usize]) -> Vec<usize> {
    batch.into_iter().chain(shape.iter().copied()).collect()
}

/// `f` applied to each item of a batch `[N, ...]` (split along the first dimension) and the
/// results stacked; differentiable, since narrowing and stacking are. An empty batch is an
/// error: without an item, the shape of what `f` gives is not known.
pub(crate) fn per_item(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let n = x.dim(0)?;
    if n == 0 {
        return Err(shape_error(
            "a batch",
            format!("{} has no items to work on", shape_str(x.dims())),
        ));
    }
    let items = (0..n).map(|i| f(&x.get(i)?)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&items, 0)?)
}

/// A dense f64 matrix as a row-major `[rows, cols]` tensor of `dtype` on `device`.
pub(crate) fn matrix_tensor(m: &DMatrix<f64>, dtype: DType, device: &Device) -> Result<Tensor> {
    let (rows, cols) = m.shape();
    let data: Vec<f64> = m.transpose().iter().copied().collect();
    Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// A matrix and its transpose, both contiguous, applied along one axis of an image.
#[derive(Clone, Debug)]
pub(crate) struct AxisMatrix {
    /// `[out, in]`.
    pub m: Tensor,
    /// `[in, out]`.
    pub mt: Tensor,
}

impl AxisMatrix {
    /// The tensors of `m` and of its transpose.
    pub fn new(m: &DMatrix<f64>, dtype: DType, device: &Device) -> Result<Self> {
        Ok(Self {
            m: matrix_tensor(m, dtype, device)?,
            mt: matrix_tensor(&m.transpose(), dtype, device)?,
        })
    }

    /// The transposed matrix.
    pub fn transposed(&self) -> Self {
        Self {
            m: self.mt.clone(),
            mt: self.m.clone(),
        }
    }

    /// The output size.
    pub fn rows(&self) -> Result<usize> {
        Ok(self.m.dim(0)?)
    }
}

/// `x` (a `[C, H, W]` image or a `[N, C, H, W]` batch) with one matrix applied along each
/// image axis; `None` is the identity. Built from candle matmuls, so autograd goes through it.
/// The items of a batch go through the same matmuls together (the batch is folded into the
/// rows of each product).
pub(crate) fn apply_axes(x: &Tensor, mats: [Option<&AxisMatrix>; 3]) -> Result<Tensor> {
    let (batch, item) = split_batch("apply_axes", x.dims())?;
    let n = batch.unwrap_or(1);
    let (mut c, mut h, mut w) = (item[0], item[1], item[2]);
    // [N * C, H, W] while the width and the height change.
    let mut x = x.reshape((n * c, h, w))?;
    let [mc, mh, mw] = mats;
    if let Some(m) = mw {
        let w2 = m.rows()?;
        x = x
            .reshape((n * c * h, w))?
            .matmul(&m.mt)?
            .reshape((n * c, h, w2))?;
        w = w2;
    }
    if let Some(m) = mh {
        let h2 = m.rows()?;
        x = x.transpose(0, 1)?.contiguous()?.reshape((h, n * c * w))?;
        x =
            m.m.matmul(&x)?
                .reshape((h2, n * c, w))?
                .transpose(0, 1)?
                .contiguous()?;
        h = h2;
    }
    if let Some(m) = mc {
        let c2 = m.rows()?;
        x = if n == 1 {
            m.m.matmul(&x.reshape((c, h * w))?)?
        } else {
            // [C, N * H * W]: every item's channels mixed by one product.
            let cols = x
                .reshape((n, c, h * w))?
                .transpose(0, 1)?
                .contiguous()?
                .reshape((c, n * h * w))?;
            m.m.matmul(&cols)?
                .reshape((c2, n, h * w))?
                .transpose(0, 1)?
                .contiguous()?
        };
        c = c2;
    }
    Ok(x.reshape(with_batch(batch, &[c, h, w]))?)
}

/// `y` resized to `shape` (same rank) by nearest-neighbour sampling along every axis: output
/// index `i` takes input index `floor(i * in / out)`, so an integer upscaling repeats pixels.
pub(crate) fn nearest_resize(y: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let dims = y.dims().to_vec();
    if dims.len() != shape.len() {
        return Err(shape_error(
            "visualize",
            format!(
                "cannot show a {} measurement as a {} image",
                shape_str(&dims),
                shape_str(shape)
            ),
        ));
    }
    let mut out = y.clone();
    for (axis, (&from, &to)) in dims.iter().zip(shape).enumerate() {
        if from == to {
            continue;
        }
        if from == 0 {
            return Err(shape_error(
                "visualize",
                format!(
                    "cannot enlarge the empty axis {axis} of {}",
                    shape_str(&dims)
                ),
            ));
        }
        let idx: Vec<u32> = (0..to).map(|i| (i * from / to) as u32).collect();
        let idx = Tensor::from_vec(idx, to, out.device())?;
        out = out.index_select(&idx, axis)?;
    }
    Ok(out)
}

/// `1 / d` elementwise for a spectrum `d >= 0` (of a Gram matrix), with the values below
/// 10 eps(`dtype`) of the largest set to 0: a pseudo-inverse in the tensor's precision. Those
/// values are noise there (a blur's highest frequencies, in f32), and inverting them would
/// amplify rounding errors past the range of the dtype. All zeros when `d` is.
pub(crate) fn truncated_reciprocal(d: &Tensor, dtype: DType) -> Result<Tensor> {
    let top = d
        .flatten_all()?
        .max(0)?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    let floor = top * 10.0 * dtype_epsilon(dtype);
    let zero = d.zeros_like()?;
    Ok(d.gt(floor)?.where_cond(&d.recip()?, &zero)?)
}

/// The machine epsilon of a float dtype.
pub(crate) fn dtype_epsilon(dtype: candle_core::DType) -> f64 {
    use candle_core::DType;
    match dtype {
        DType::F64 => f64::EPSILON,
        DType::F16 => 9.765625e-4,
        DType::BF16 => 7.8125e-3,
        _ => f32::EPSILON as f64,
    }
}
