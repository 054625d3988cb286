//! Inpainting masks as `[1, H, W]` tensors: 1 = observed, 0 = missing. Each constructor
//! takes the image size, its own parameters, and the dtype and device of the result; the
//! random ones take a generator from [`crate::random::generator`].

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::error::{argument_error, Result};

/// The `[1, h, w]` mask whose pixel `(r, c)` is `observed(r, c)`.
fn build(
    h: usize,
    w: usize,
    dtype: DType,
    device: &Device,
    observed: impl Fn(usize, usize) -> bool,
) -> Result<Tensor> {
    let data: Vec<f64> = (0..h * w)
        .map(|i| if observed(i / w, i % w) { 1.0 } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(data, (1, h, w), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)?)
}

/// 1 everywhere except the box `[top, top + height) x [left, left + width)`, which must fit
/// inside the `h x w` image.
#[allow(clippy::too_many_arguments)] // the language's own parameters
pub fn box_mask(
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    height: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if top + height > h || left + width > w {
        return Err(argument_error(
            "box_mask",
            format!(
                "the box rows {top}..{} and columns {left}..{} do not fit in a {h} x {w} image",
                top + height,
                left + width
            ),
        ));
    }
    build(h, w, dtype, device, |r, c| {
        !(r >= top && r < top + height && c >= left && c < left + width)
    })
}

/// A centred square hole whose side is `fraction` of the width (rounded to the nearest
/// pixel); its top-left corner is at `((h - side) / 2, (w - side) / 2)`, rounded down.
pub fn center_box_mask(
    h: usize,
    w: usize,
    fraction: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(argument_error(
            "center_box_mask",
            format!("fraction must be in [0, 1], got {fraction}"),
        ));
    }
    let side = (fraction * w as f64).round() as usize;
    if side > h {
        return Err(argument_error(
            "center_box_mask",
            format!("a hole of side {side} does not fit in a {h} x {w} image"),
        ));
    }
    box_mask(
        h,
        w,
        (h - side) / 2,
        (w - side) / 2,
        side,
        side,
        dtype,
        device,
    )
}

/// Each pixel observed with probability `keep` (independent uniform draws, row by row).
pub fn random_mask(
    h: usize,
    w: usize,
    keep: f64,
    rng: &mut ChaCha8Rng,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&keep) {
        return Err(argument_error(
            "random_mask",
            format!("keep must be in [0, 1], got {keep}"),
        ));
    }
    let draws: Vec<bool> = (0..h * w).map(|_| rng.random::<f64>() < keep).collect();
    build(h, w, dtype, device, |r, c| draws[r * w + c])
}

/// `count` square holes of side `size` with top-left corners drawn uniformly among the
/// positions where they fit (they may overlap).
pub fn random_boxes_mask(
    h: usize,
    w: usize,
    count: usize,
    size: usize,
    rng: &mut ChaCha8Rng,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if size > h || size > w {
        return Err(argument_error(
            "random_boxes_mask",
            format!("holes of side {size} do not fit in a {h} x {w} image"),
        ));
    }
    let boxes: Vec<(usize, usize)> = (0..count)
        .map(|_| {
            (
                rng.random_range(0..=h - size),
                rng.random_range(0..=w - size),
            )
        })
        .collect();
    build(h, w, dtype, device, |r, c| {
        !boxes
            .iter()
            .any(|&(t, l)| r >= t && r < t + size && c >= l && c < l + size)
    })
}

/// Half of the image missing: `side` is "right", "left", "top" or "bottom". The missing
/// half is `floor(w / 2)` columns (or `floor(h / 2)` rows) on that side.
pub fn half_mask(h: usize, w: usize, side: &str, dtype: DType, device: &Device) -> Result<Tensor> {
    let observed: Box<dyn Fn(usize, usize) -> bool> = match side {
        "right" => Box::new(move |_, c| c < w - w / 2),
        "left" => Box::new(move |_, c| c >= w / 2),
        "bottom" => Box::new(move |r, _| r < h - h / 2),
        "top" => Box::new(move |r, _| r >= h / 2),
        other => {
            return Err(argument_error(
                "half_mask",
                format!("side must be \"right\", \"left\", \"top\" or \"bottom\", got {other:?}"),
            ))
        }
    };
    build(h, w, dtype, device, observed)
}

/// Rows `offset, offset + every, ...` missing (`offset < every`).
pub fn rows_mask(
    h: usize,
    w: usize,
    every: usize,
    offset: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if every == 0 || offset >= every {
        return Err(argument_error(
            "rows_mask",
            format!(
                "needs every >= 1 and 0 <= offset < every, got every = {every}, offset = {offset}"
            ),
        ));
    }
    build(h, w, dtype, device, |r, _| r % every != offset)
}

/// One pixel observed in each `factor x factor` block: the block's top-left pixel.
pub fn subsample_mask(
    h: usize,
    w: usize,
    factor: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if factor == 0 {
        return Err(argument_error(
            "subsample_mask",
            "factor must be at least 1",
        ));
    }
    build(h, w, dtype, device, |r, c| {
        r % factor == 0 && c % factor == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::generator;

    fn pixels(t: Result<Tensor>) -> Vec<Vec<u8>> {
        let t = t.unwrap_or_else(|e| panic!("{e}"));
        let v = t
            .squeeze(0)
            .and_then(|t| t.to_vec2::<f64>())
            .unwrap_or_else(|e| panic!("{e}"));
        v.iter()
            .map(|r| r.iter().map(|&x| x as u8).collect())
            .collect()
    }

    fn rows(text: &[&str]) -> Vec<Vec<u8>> {
        text.iter()
            .map(|r| r.bytes().map(|b| b - b'0').collect())
            .collect()
    }

    const F: DType = DType::F64;

    #[test]
    fn deterministic_masks_have_the_expected_pixels() {
        let cpu = &Device::Cpu;
        assert_eq!(
            pixels(box_mask(4, 5, 1, 2, 2, 3, F, cpu)),
            rows(&["11111", "11000", "11000", "11111"])
        );
        assert_eq!(
            pixels(center_box_mask(4, 4, 0.5, F, cpu)),
            rows(&["1111", "1001", "1001", "1111"])
        );
        assert_eq!(
            pixels(half_mask(2, 5, "right", F, cpu)),
            rows(&["11100", "11100"])
        );
        assert_eq!(
            pixels(half_mask(2, 4, "left", F, cpu)),
            rows(&["0011", "0011"])
        );
        assert_eq!(
            pixels(half_mask(3, 2, "top", F, cpu)),
            rows(&["00", "11", "11"])
        );
        assert_eq!(
            pixels(half_mask(3, 2, "bottom", F, cpu)),
            rows(&["11", "11", "00"])
        );
        assert_eq!(
            pixels(rows_mask(5, 2, 2, 1, F, cpu)),
            rows(&["11", "00", "11", "00", "11"])
        );
        assert_eq!(
            pixels(subsample_mask(4, 4, 2, F, cpu)),
            rows(&["1010", "0000", "1010", "0000"])
        );
        assert!(box_mask(4, 4, 3, 0, 2, 1, F, cpu).is_err());
        assert!(rows_mask(4, 4, 2, 2, F, cpu).is_err());
        assert!(half_mask(4, 4, "middle", F, cpu).is_err());
    }

    #[test]
    fn random_masks_are_fixed_by_the_seed() {
        let cpu = &Device::Cpu;
        let draw = |seed| {
            pixels(random_mask(
                16,
                16,
                0.3,
                &mut generator(0, "random_mask", seed),
                F,
                cpu,
            ))
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let kept: usize = draw(3).iter().flatten().map(|&p| p as usize).sum();
        // 256 draws with p = 0.3: mean 76.8, standard deviation 7.3.
        assert!((40..115).contains(&kept), "{kept}");
        let boxes = |seed| {
            pixels(random_boxes_mask(
                12,
                12,
                3,
                4,
                &mut generator(0, "random_boxes_mask", seed),
                F,
                cpu,
            ))
        };
        assert_eq!(boxes(5), boxes(5));
        assert_ne!(boxes(5), boxes(6));
        let missing = boxes(5).iter().flatten().filter(|&&p| p == 0).count();
        assert!((16..=48).contains(&missing), "{missing}");
    }
}
