//! Images side by side in one image, optionally captioned, for `save grid(...) to "x.png"`.
//!
//! Layout, for images of heights `h_i` and widths `w_i`:
//!
//! - the result has 3 channels if any image is colour (grey ones are repeated), else 1;
//! - its height is `max h_i` (plus [`CAPTION_HEIGHT`] with captions), its width
//!   `sum w_i + GAP * (n - 1)`; images go left to right with [`GAP`] white columns between
//!   them, each at the top of its column and padded below with white (1.0);
//! - with captions, a white band of [`CAPTION_HEIGHT`] rows runs under the whole row and each
//!   caption is drawn in it in black (-1.0) with the 8x8 `font8x8` font, starting
//!   [`CAPTION_TOP`] rows down, centred under its image when it fits. A caption wider than its
//!   image is cut to the whole characters that fit, and left out when fewer than 3 fit (images
//!   narrower than 24 pixels); an empty caption draws nothing. Characters the font lacks
//!   (outside ASCII, Latin-1 and Greek) are drawn as `?`.
//!
//! The result has the dtype and device of the first image; the others are converted.
//!
//! Batches `[N, C, H, W]` (all of one `N`) make one such row per item, [`GAP`] white rows
//! apart, and images without a batch repeat on every row; captions are drawn once, under the
//! last row ([`grid_rows`]).

use candle_core::{DType, Device, Tensor};
use font8x8::{UnicodeFonts, BASIC_FONTS, GREEK_FONTS, LATIN_FONTS};

/// White columns between two images.
pub const GAP: usize = 2;
/// Rows of the caption band added under the images when captions are given.
pub const CAPTION_HEIGHT: usize = 12;
/// Row of the caption band where the 8 rows of text start.
pub const CAPTION_TOP: usize = 2;
/// Width and height of one character of the caption font, in pixels.
const GLYPH: usize = 8;
/// A caption cut to fewer characters than this is left out.
const MIN_CHARS: usize = 3;

/// Why images cannot be laid out in a grid.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// No image was given.
    #[error("grid needs at least one image")]
    Empty,
    /// An image is not `[1, H, W]`, `[3, H, W]` or `[H, W]`, nor a batch of them.
    #[error(
        "grid: image {number} has shape {shape:?}; images must be [1, H, W] (grey), \
         [3, H, W] (colour) or [H, W], or batches [N, 1 or 3, H, W] of them"
    )]
    Shape {
        /// Which image, counting from 1.
        number: usize,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// Two batches of different sizes.
    #[error("grid: image {first} is a batch of {first_size} but image {number} a batch of {size}; batches must have the same size")]
    BatchSizes {
        /// The first batched image, counting from 1.
        first: usize,
        /// Its batch size.
        first_size: usize,
        /// The image whose batch size differs, counting from 1.
        number: usize,
        /// Its batch size.
        size: usize,
    },
    /// The number of captions differs from the number of images.
    #[error("grid: {images} image(s) but {captions} caption(s); give one caption per image")]
    CaptionCount {
        /// Images given.
        images: usize,
        /// Captions given.
        captions: usize,
    },
    /// A tensor operation failed (e.g. out of device memory).
    #[error("grid: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Lays `images` out left to right in one `[C, H, W]` image, as described in the module
/// documentation; `captions`, if given, holds one caption per image (empty for none).
pub fn grid(images: &[Tensor], captions: Option<&[String]>) -> Result<Tensor, GridError> {
    grid_rows(images, captions, 0)
}

/// [`grid`] where some images may be batches `[N, C, H, W]` (all of one `N`): each of the
/// first `rows` items (all `N` when `rows` is 0) makes one row, [`GAP`] white rows apart, and
/// images without a batch repeat on every row. Captions are drawn once, under the last row.
pub fn grid_rows(
    images: &[Tensor],
    captions: Option<&[String]>,
    rows: usize,
) -> Result<Tensor, GridError> {
    let first = images.first().ok_or(GridError::Empty)?;
    if let Some(captions) = captions {
        if captions.len() != images.len() {
            return Err(GridError::CaptionCount {
                images: images.len(),
                captions: captions.len(),
            });
        }
    }
    let mut batch: Option<(usize, usize)> = None;
    for (i, img) in images.iter().enumerate() {
        if let [n, _, _, _] = *img.dims() {
            match batch {
                None => batch = Some((n, i)),
                Some((m, j)) if m != n => {
                    return Err(GridError::BatchSizes {
                        first: j + 1,
                        first_size: m,
                        number: i + 1,
                        size: n,
                    })
                }
                Some(_) => {}
            }
        }
    }
    let n = batch.map_or(1, |(n, _)| n);
    let count = if rows == 0 { n } else { rows.min(n) };
    let (dtype, device) = (first.dtype(), first.device().clone());
    let mut parts = Vec::with_capacity(2 * count);
    let mut layout = None;
    for r in 0..count {
        let items = images
            .iter()
            .map(|img| {
                if img.rank() == 4 {
                    img.get(r)
                } else {
                    Ok(img.clone())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (row, shapes) = row(&items, images)?;
        if r > 0 {
            let (c, _, w) = row.dims3()?;
            parts.push(Tensor::ones((c, GAP, w), dtype, &device)?);
        }
        parts.push(row);
        layout = Some(shapes);
    }
    let Some((channels, widths)) = layout else {
        return Err(GridError::Empty);
    };
    let all = Tensor::cat(&parts, 1)?;
    let Some(captions) = captions else {
        return Ok(all);
    };
    let band = caption_band(captions, &widths, dtype, &device)?.repeat((channels, 1, 1))?;
    Ok(Tensor::cat(&[&all, &band], 1)?)
}

/// One row of the grid: `items` (one per column; `images` are the arguments, for messages)
/// side by side, with the channel count and the columns' widths.
fn row(items: &[Tensor], images: &[Tensor]) -> Result<(Tensor, (usize, Vec<usize>)), GridError> {
    let first = items.first().ok_or(GridError::Empty)?;
    let (dtype, device) = (first.dtype(), first.device().clone());
    let shapes = items
        .iter()
        .enumerate()
        .map(|(i, img)| match *img.dims() {
            [c @ (1 | 3), h, w] => Ok((c, h, w)),
            [h, w] => Ok((1, h, w)),
            _ => Err(GridError::Shape {
                number: i + 1,
                shape: images.get(i).unwrap_or(img).dims().to_vec(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let channels = if shapes.iter().any(|&(c, _, _)| c == 3) {
        3
    } else {
        1
    };
    let height = shapes.iter().map(|&(_, h, _)| h).max().unwrap_or(0);
    let mut parts = Vec::with_capacity(2 * items.len());
    for (i, (img, &(c, h, w))) in items.iter().zip(&shapes).enumerate() {
        if i > 0 {
            parts.push(Tensor::ones((channels, height, GAP), dtype, &device)?);
        }
        let mut t = img
            .to_dtype(dtype)?
            .to_device(&device)?
            .reshape((c, h, w))?;
        if c < channels {
            t = t.repeat((channels, 1, 1))?;
        }
        if h < height {
            let pad = Tensor::ones((channels, height - h, w), dtype, &device)?;
            t = Tensor::cat(&[&t, &pad], 1)?;
        }
        parts.push(t);
    }
    let widths = shapes.iter().map(|&(_, _, w)| w).collect();
    Ok((Tensor::cat(&parts, 2)?, (channels, widths)))
}

/// The `[1, CAPTION_HEIGHT, W]` band with each caption drawn under its image's columns.
fn caption_band(
    captions: &[String],
    widths: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor, GridError> {
    let total = widths.iter().sum::<usize>() + GAP * widths.len().saturating_sub(1);
    let mut band = vec![1.0f32; CAPTION_HEIGHT * total];
    let mut left = 0;
    for (caption, &width) in captions.iter().zip(widths) {
        let chars: Vec<char> = caption.chars().collect();
        let fit = width / GLYPH;
        let (shown, start) = if chars.len() <= fit {
            (chars.len(), left + (width - GLYPH * chars.len()) / 2)
        } else if fit >= MIN_CHARS {
            (fit, left)
        } else {
            (0, left)
        };
        for (k, &ch) in chars.iter().take(shown).enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..GLYPH {
                    if bits >> col & 1 == 1 {
                        let x = start + k * GLYPH + col;
                        if let Some(p) = band.get_mut((CAPTION_TOP + r) * total + x) {
                            *p = -1.0;
                        }
                    }
                }
            }
        }
        left += width + GAP;
    }
    Ok(
        Tensor::from_vec(band, (1, CAPTION_HEIGHT, total), &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)?,
    )
}

/// The 8x8 bitmap of `ch` (row by row, least significant bit leftmost), `?` if the font lacks
/// it.
fn glyph(ch: char) -> [u8; 8] {
    BASIC_FONTS
        .get(ch)
        .or_else(|| LATIN_FONTS.get(ch))
        .or_else(|| GREEK_FONTS.get(ch))
        .or_else(|| BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn values(x: &Tensor) -> Vec<f64> {
        x.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn grey_images_side_by_side() {
        // A 2x2 and a 1x1 (given as [H, W]) grey image.
        let a = t(&[0.1, 0.2, 0.3, 0.4], &[1, 2, 2]);
        let b = t(&[-0.5], &[1, 1]);
        let g = grid(&[a, b], None).unwrap();
        assert_eq!(g.dims(), &[1, 2, 5]);
        #[rustfmt::skip]
        let want = [
            0.1, 0.2, 1.0, 1.0, -0.5,
            0.3, 0.4, 1.0, 1.0, 1.0,
        ];
        assert_eq!(values(&g), want.to_vec());
    }

    #[test]
    fn grey_is_promoted_when_any_image_is_colour() {
        let a = t(&[0.5], &[1, 1, 1]);
        let b = t(&[-0.1, -0.2, -0.3, -0.4, -0.5, -0.6], &[3, 2, 1]);
        let g = grid(&[a, b], None).unwrap();
        assert_eq!(g.dims(), &[3, 2, 4]);
        #[rustfmt::skip]
        let want = [
            // red
            0.5, 1.0, 1.0, -0.1,
            1.0, 1.0, 1.0, -0.2,
            // green
            0.5, 1.0, 1.0, -0.3,
            1.0, 1.0, 1.0, -0.4,
            // blue
            0.5, 1.0, 1.0, -0.5,
            1.0, 1.0, 1.0, -0.6,
        ];
        assert_eq!(values(&g), want.to_vec());
        // One image comes back unchanged; dtype and device follow the first image.
        let one = t(&[0.25, 0.75], &[1, 1, 2]);
        assert_eq!(
            values(&grid(std::slice::from_ref(&one), None).unwrap()),
            vec![0.25, 0.75]
        );
        let f32 = one.to_dtype(DType::F32).unwrap();
        let mixed = grid(&[f32, one], None).unwrap();
        assert_eq!(mixed.dtype(), DType::F32);
    }

    #[test]
    fn captions_are_drawn_from_the_font() {
        // A 24-pixel-wide image fits "ab" centred; a 16-wide one does not fit "long" and
        // fewer than 3 characters would remain, so it is left out.
        let a = Tensor::zeros((1, 3, 24), DType::F64, &Device::Cpu).unwrap();
        let b = Tensor::zeros((1, 3, 16), DType::F64, &Device::Cpu).unwrap();
        let captions = ["ab".to_string(), "long".to_string()];
        let g = grid(&[a, b], Some(&captions)).unwrap();
        let width = 24 + GAP + 16;
        assert_eq!(g.dims(), &[1, 3 + CAPTION_HEIGHT, width]);
        let v = values(&g);
        let band = &v[3 * width..];
        let mut want = vec![1.0; CAPTION_HEIGHT * width];
        for (k, ch) in ['a', 'b'].into_iter().enumerate() {
            let rows = BASIC_FONTS.get(ch).unwrap();
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        want[(CAPTION_TOP + r) * width + 4 + 8 * k + col] = -1.0;
                    }
                }
            }
        }
        assert_eq!(band, want.as_slice());
        assert!(band.contains(&-1.0));
    }

    #[test]
    fn long_captions_are_cut_to_whole_characters() {
        let a = Tensor::zeros((3, 1, 30), DType::F32, &Device::Cpu).unwrap();
        let cut = grid(std::slice::from_ref(&a), Some(&["abcdefgh".to_string()])).unwrap();
        let whole = grid(&[a], Some(&["abc".to_string()])).unwrap();
        // 30 pixels hold 3 characters: drawn from the left edge, the rest dropped.
        let left = Tensor::zeros((3, 1, 24), DType::F32, &Device::Cpu).unwrap();
        let centred = grid(&[left], Some(&["abc".to_string()])).unwrap();
        let band = |x: &Tensor, w: usize| x.narrow(2, 0, w).unwrap().narrow(1, 1, 12).unwrap();
        let diff = (band(&cut, 24) - band(&centred, 24))
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0);
        // "abc" fits 30 pixels and is centred 3 pixels in, so it differs from the cut one.
        assert_ne!(
            values(&cut.to_dtype(DType::F64).unwrap()),
            values(&whole.to_dtype(DType::F64).unwrap())
        );
        // Unknown characters become `?`; empty captions draw nothing.
        assert_eq!(glyph('\u{4e00}'), BASIC_FONTS.get('?').unwrap());
        assert_eq!(glyph('σ'), GREEK_FONTS.get('σ').unwrap());
        let blank = Tensor::zeros((1, 1, 8), DType::F32, &Device::Cpu).unwrap();
        let g = grid(&[blank], Some(&[String::new()])).unwrap();
        let band: Vec<f32> = g
            .narrow(1, 1, CAPTION_HEIGHT)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(band.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn batches_make_one_row_per_item() {
        // A batch of two 1x1 grey images, a 1x2 image that repeats on every row.
        let batch = t(&[0.1, 0.2], &[2, 1, 1, 1]);
        let shared = t(&[-0.5, -0.6], &[1, 1, 2]);
        let g = grid(&[batch.clone(), shared.clone()], None).unwrap();
        assert_eq!(g.dims(), &[1, 2 + GAP, 1 + GAP + 2]);
        #[rustfmt::skip]
        let want = [
            0.1, 1.0, 1.0, -0.5, -0.6,
            1.0, 1.0, 1.0, 1.0, 1.0,
            1.0, 1.0, 1.0, 1.0, 1.0,
            0.2, 1.0, 1.0, -0.5, -0.6,
        ];
        assert_eq!(values(&g), want.to_vec());
        // `rows` keeps the first items; captions go once under the last row.
        let one = grid_rows(&[batch.clone(), shared.clone()], None, 1).unwrap();
        assert_eq!(values(&one), want[..5].to_vec());
        let captions = [String::new(), String::new()];
        let c = grid_rows(&[batch, shared], Some(&captions), 0).unwrap();
        assert_eq!(c.dims(), &[1, 2 + GAP + CAPTION_HEIGHT, 5]);
    }

    #[test]
    fn errors() {
        assert!(matches!(grid(&[], None), Err(GridError::Empty)));
        let a = Tensor::zeros((2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let ok = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
        let err = grid(&[ok.clone(), a], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "grid: image 2 has shape [2, 3, 3]; images must be [1, H, W] (grey), \
             [3, H, W] (colour) or [H, W], or batches [N, 1 or 3, H, W] of them"
        );
        let four = Tensor::zeros((4, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let two = Tensor::zeros((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            grid(&[four, two], None),
            Err(GridError::BatchSizes {
                first: 1,
                first_size: 4,
                number: 2,
                size: 2
            })
        ));
        let err = grid(&[ok], Some(&[])).unwrap_err();
        assert!(matches!(
            err,
            GridError::CaptionCount {
                images: 1,
                captions: 0
            }
        ));
    }
}
