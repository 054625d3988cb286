//! Fitting photos to a model's resolution: centre crops and antialiased resizing of image
//! tensors (`[C, H, W]` or a batch `[N, C, H, W]`, values in [-1, 1]).
//!
//! Resizing is the image crate's separable Lanczos3 filter on 32-bit float planes: when
//! shrinking, the filter's support widens with the scale, so it averages over every source
//! pixel a target pixel covers (antialiased, no aliasing of fine texture). Lanczos rings
//! slightly at sharp edges, so the result is clamped to [-1, 1]. These are data preparation
//! steps: their output is not differentiable.

use candle_core::{DType, Tensor};
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};

/// A crop or resize that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// The tensor is not an image or a batch of images.
    #[error("an image is [C, H, W] (or a batch [N, C, H, W]), not {0:?}")]
    Rank(Vec<usize>),
    /// A target size of zero, or a crop larger than the image.
    #[error("{0}")]
    Size(String),
    /// The tensor library failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// The leading dimensions, the height and width, and the `[H, W]` planes as f32 vectors.
type Planes = (Vec<usize>, usize, usize, Vec<Vec<f32>>);

/// The `[.., H, W]` planes of `x` as f32 vectors, with the leading dimensions.
fn planes(x: &Tensor) -> Result<Planes, ResizeError> {
    let dims = x.dims().to_vec();
    if !(dims.len() == 3 || dims.len() == 4) {
        return Err(ResizeError::Rank(dims));
    }
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let lead = dims[..dims.len() - 2].to_vec();
    let count: usize = lead.iter().product();
    let flat: Vec<f32> = x
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1()?;
    let planes = flat
        .chunks(h * w)
        .take(count)
        .map(<[f32]>::to_vec)
        .collect();
    Ok((lead, h, w, planes))
}

/// Planes back into a tensor of `x`'s dtype and device.
fn from_planes(
    x: &Tensor,
    lead: &[usize],
    h: usize,
    w: usize,
    planes: Vec<Vec<f32>>,
) -> Result<Tensor, ResizeError> {
    let dims: Vec<usize> = lead.iter().copied().chain([h, w]).collect();
    let data: Vec<f32> = planes.into_iter().flatten().collect();
    Ok(Tensor::from_vec(data, dims, &candle_core::Device::Cpu)?
        .to_dtype(x.dtype())?
        .to_device(x.device())?)
}

fn positive(height: usize, width: usize) -> Result<(), ResizeError> {
    if height == 0 || width == 0 {
        return Err(ResizeError::Size(format!(
            "the target size {height}x{width} has a zero side"
        )));
    }
    Ok(())
}

/// The `height x width` window at the centre of every image of `x` (when the margin is odd,
/// the extra row or column is dropped at the bottom or right).
pub fn center_crop(x: &Tensor, height: usize, width: usize) -> Result<Tensor, ResizeError> {
    positive(height, width)?;
    let rank = x.rank();
    if !(rank == 3 || rank == 4) {
        return Err(ResizeError::Rank(x.dims().to_vec()));
    }
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    if height > h || width > w {
        return Err(ResizeError::Size(format!(
            "a {height}x{width} crop does not fit in a {h}x{w} image"
        )));
    }
    Ok(x.narrow(rank - 2, (h - height) / 2, height)?
        .narrow(rank - 1, (w - width) / 2, width)?
        .contiguous()?)
}

/// Every image of `x` resized to `height x width` with the antialiased Lanczos3 filter,
/// clamped to [-1, 1].
pub fn resize(x: &Tensor, height: usize, width: usize) -> Result<Tensor, ResizeError> {
    positive(height, width)?;
    let (lead, h, w, planes) = planes(x)?;
    if (h, w) == (height, width) {
        return Ok(x.clone());
    }
    let resized = planes
        .into_iter()
        .map(|p| {
            let buffer: ImageBuffer<Luma<f32>, Vec<f32>> =
                ImageBuffer::from_raw(w as u32, h as u32, p).ok_or_else(|| {
                    ResizeError::Size(format!("a {h}x{w} plane does not fit its buffer"))
                })?;
            let out = imageops::resize(&buffer, width as u32, height as u32, FilterType::Lanczos3);
            Ok(out
                .into_raw()
                .into_iter()
                .map(|v| v.clamp(-1.0, 1.0))
                .collect())
        })
        .collect::<Result<Vec<Vec<f32>>, ResizeError>>()?;
    from_planes(x, &lead, height, width, resized)
}

/// The largest centre window of `x` with the aspect ratio of `height x width`, resized to
/// that size: how a photo of any shape becomes a model's input.
pub fn fit(x: &Tensor, height: usize, width: usize) -> Result<Tensor, ResizeError> {
    positive(height, width)?;
    let rank = x.rank();
    if !(rank == 3 || rank == 4) {
        return Err(ResizeError::Rank(x.dims().to_vec()));
    }
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    // The window is h x (h * width / height) when the image is wider than the target aspect,
    // otherwise (w * height / width) x w; rounded, at least one pixel.
    let (ch, cw) = if w * height >= h * width {
        (
            h,
            ((h * width) as f64 / height as f64).round().max(1.0) as usize,
        )
    } else {
        (
            ((w * height) as f64 / width as f64).round().max(1.0) as usize,
            w,
        )
    };
    resize(&center_crop(x, ch.min(h), cw.min(w))?, height, width)
}

/// Every image of `x` enlarged `factor` times by repeating each pixel (nearest neighbour), so
/// small images can be looked at without the blur of interpolation.
pub fn enlarge(x: &Tensor, factor: usize) -> Result<Tensor, ResizeError> {
    if factor == 0 {
        return Err(ResizeError::Size(
            "the enlargement factor must be at least 1".into(),
        ));
    }
    let rank = x.rank();
    if !(rank == 3 || rank == 4) {
        return Err(ResizeError::Rank(x.dims().to_vec()));
    }
    if factor == 1 {
        return Ok(x.clone());
    }
    let (h, w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    Ok(x.unsqueeze(rank)?
        .unsqueeze(rank - 1)?
        .broadcast_as(
            x.dims()[..rank - 2]
                .iter()
                .copied()
                .chain([h, factor, w, factor])
                .collect::<Vec<_>>(),
        )?
        .contiguous()?
        .reshape(
            x.dims()[..rank - 2]
                .iter()
                .copied()
                .chain([h * factor, w * factor])
                .collect::<Vec<_>>(),
        )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ramp(c: usize, h: usize, w: usize) -> Tensor {
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i % w) as f32 / (w - 1) as f32) * 2.0 - 1.0)
            .collect();
        Tensor::from_vec(data, (c, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn enlarging_repeats_pixels() {
        let x = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0]]], &Device::Cpu).unwrap();
        let y = enlarge(&x, 2).unwrap();
        assert_eq!(
            y.to_vec3::<f32>().unwrap(),
            vec![vec![
                vec![1.0, 1.0, 2.0, 2.0],
                vec![1.0, 1.0, 2.0, 2.0],
                vec![3.0, 3.0, 4.0, 4.0],
                vec![3.0, 3.0, 4.0, 4.0]
            ]]
        );
        let b = Tensor::zeros((2, 3, 5, 7), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(enlarge(&b, 3).unwrap().dims(), &[2, 3, 15, 21]);
        assert!(enlarge(&b, 0).is_err());
    }

    #[test]
    fn crops_at_the_centre() {
        let x = Tensor::arange(0f32, 30.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 5, 6))
            .unwrap();
        let c = center_crop(&x, 3, 2).unwrap();
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![8.0, 9.0, 14.0, 15.0, 20.0, 21.0]
        );
        assert!(center_crop(&x, 6, 2)
            .unwrap_err()
            .to_string()
            .contains("does not fit"));
    }

    #[test]
    fn shrinking_averages_and_keeps_constants() {
        // A constant image stays constant (the filter's weights sum to one).
        let x = (Tensor::ones((3, 40, 60), DType::F32, &Device::Cpu).unwrap() * 0.25).unwrap();
        let y = resize(&x, 8, 12).unwrap();
        assert_eq!(y.dims(), &[3, 8, 12]);
        for v in y.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
            assert!((v - 0.25).abs() < 1e-5, "{v}");
        }
        // A fine checkerboard shrunk 8x averages to its mean (antialiasing), where point
        // sampling would keep +1 or -1.
        let data: Vec<f32> = (0..64 * 64)
            .map(|i| {
                if (i / 64 + i % 64) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect();
        let board = Tensor::from_vec(data, (1, 64, 64), &Device::Cpu).unwrap();
        let small = resize(&board, 8, 8).unwrap();
        let interior: Vec<f32> = small
            .narrow(1, 2, 4)
            .unwrap()
            .narrow(2, 2, 4)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(interior.iter().all(|v| v.abs() < 0.05), "{interior:?}");
        // A horizontal ramp stays a monotone ramp, in [-1, 1].
        let r = resize(&ramp(1, 20, 50), 10, 25).unwrap();
        let row: Vec<f32> = r.get(0).unwrap().get(5).unwrap().to_vec1().unwrap();
        assert!(row.windows(2).all(|p| p[0] <= p[1] + 1e-6), "{row:?}");
        assert!(row.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn fit_crops_to_the_aspect_then_resizes() {
        // A 300x451 photo to 64x64: the centre 300x300, then resized.
        let x = ramp(3, 300, 451);
        let y = fit(&x, 64, 64).unwrap();
        assert_eq!(y.dims(), &[3, 64, 64]);
        let want = resize(&center_crop(&x, 300, 300).unwrap(), 64, 64).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        // A tall image keeps its full width; a batch keeps its batch.
        let tall = Tensor::zeros((2, 1, 90, 30), DType::F64, &Device::Cpu).unwrap();
        let y = fit(&tall, 16, 32).unwrap();
        assert_eq!(y.dims(), &[2, 1, 16, 32]);
        assert_eq!(y.dtype(), DType::F64);
        assert!(fit(&tall, 0, 3).is_err());
    }
}
