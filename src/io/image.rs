//! Images as tensors: PNG and JPEG files to `[C, H, W]` tensors in [-1, 1] and back.
//!
//! Reading maps a sample `s` of a file with maximum `max` (255, or 65535 for 16-bit PNG) to
//! `2 s / max - 1`, computed in `f64`. Grey files (with or without alpha) give one channel,
//! colour files (RGB, RGBA, palette) three; alpha is dropped, not composited. This is the
//! rule [`super::headers::image_header`] gives the checker, so the shapes always agree.
//!
//! Writing clamps to [-1, 1], maps to [0, max] and rounds half away from zero; a value read
//! from a file of the same bit depth is written back to the same sample exactly.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::atomic::write_atomically;
use super::headers::{channels, check_pixels, decode_error, open_image};
use super::FileError;

/// How [`write_image`] writes a file. The format comes from the file's extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOptions {
    /// Bits per sample: 8 (the default) or 16; 16 is for PNG only.
    pub bit_depth: u8,
    /// `(keyword, text)` pairs stored in a PNG: as `tEXt` chunks when the text is Latin-1, as
    /// uncompressed `iTXt` (UTF-8) chunks otherwise. Keywords are 1 to 79 printable Latin-1
    /// characters without leading, trailing or double spaces. JPEG files ignore them.
    pub text: Vec<(String, String)>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            bit_depth: 8,
            text: Vec::new(),
        }
    }
}

/// Reads a PNG or JPEG file (format told from its content) as a `[C, H, W]` tensor with values
/// in [-1, 1], of `dtype` (a float type) on `device`.
///
/// C is 1 for grey files and 3 for colour ones, as [`super::headers::image_header`] says.
/// 8- and 16-bit PNG (grey, grey+alpha, RGB, RGBA, palette, and lower bit depths) and 8-bit
/// JPEG are read; 0 maps to -1 and the largest sample to 1.
pub fn read_image(path: &Path, dtype: DType, device: &Device) -> Result<Tensor, FileError> {
    check_float(path, dtype)?;
    let planes = decode(path)?;
    let values: Vec<f64> = planes.data.iter().map(|&v| 2.0 * v - 1.0).collect();
    to_tensor(
        path,
        values,
        [planes.channels, planes.height, planes.width],
        dtype,
        device,
    )
}

/// Reads a grey or colour image as a `[1, H, W]` mask of 0s and 1s: a pixel whose value
/// (the mean of its colour channels, alpha dropped) is at least half the range is observed (1),
/// any other is missing (0). White is observed, black missing.
pub fn read_mask(path: &Path, dtype: DType, device: &Device) -> Result<Tensor, FileError> {
    check_float(path, dtype)?;
    let planes = decode(path)?;
    let n = planes.height * planes.width;
    let values: Vec<f64> = (0..n)
        .map(|i| {
            let sum: f64 = (0..planes.channels)
                .filter_map(|c| planes.data.get(c * n + i))
                .sum();
            if sum / planes.channels as f64 >= 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    to_tensor(
        path,
        values,
        [1, planes.height, planes.width],
        dtype,
        device,
    )
}

/// Writes a `[C, H, W]` (C = 1 or 3) or `[H, W]` tensor of any float dtype and device as an
/// image, chosen by extension: `.png` (8 or 16 bit, with `opts.text` chunks) or `.jpg` /
/// `.jpeg` (8 bit, quality 95), case-insensitive.
///
/// Values are clamped to [-1, 1] (infinities too), mapped to [0, 255] or [0, 65535] and
/// rounded half away from zero. A NaN anywhere is an error and nothing is written. The file is
/// encoded in memory and written atomically (temporary file + rename); missing parent
/// folders are created.
pub fn write_image(path: &Path, x: &Tensor, opts: &ImageOptions) -> Result<(), FileError> {
    let format = Format::of(path)?;
    let option_err = |detail: String| FileError::ImageOption {
        path: path.to_path_buf(),
        detail,
    };
    match (opts.bit_depth, format) {
        (8, _) | (16, Format::Png) => {}
        (16, Format::Jpeg) => {
            return Err(option_err(
                "JPEG stores 8 bits per channel; save as .png for 16 bits".into(),
            ))
        }
        (bits, _) => {
            return Err(option_err(format!(
                "a bit depth of {bits} is not supported; use 8 or 16"
            )))
        }
    }
    if format == Format::Png {
        for (keyword, text) in &opts.text {
            check_text_chunk(keyword, text).map_err(option_err)?;
        }
    }
    let (c, h, w) = match *x.dims() {
        [c @ (1 | 3), h, w] => (c, h, w),
        [h, w] => (1, h, w),
        _ => {
            return Err(FileError::ImageShape {
                path: path.to_path_buf(),
                shape: x.dims().to_vec(),
            })
        }
    };
    let (Ok(width), Ok(height)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(FileError::ImageShape {
            path: path.to_path_buf(),
            shape: x.dims().to_vec(),
        });
    };
    if w == 0 || h == 0 {
        return Err(FileError::ImageShape {
            path: path.to_path_buf(),
            shape: x.dims().to_vec(),
        });
    }
    let values = x
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(|error| FileError::Tensor {
            path: path.to_path_buf(),
            error,
        })?;
    let nans = values.iter().filter(|v| v.is_nan()).count();
    if nans > 0 {
        return Err(FileError::NanPixels {
            path: path.to_path_buf(),
            count: nans,
            total: values.len(),
        });
    }
    let max = if opts.bit_depth == 16 { 65535.0 } else { 255.0 };
    // Interleave the planes into rows of pixels, as both formats store them.
    let n = h * w;
    let samples: Vec<u16> = (0..n * c)
        .map(|k| {
            let (pixel, channel) = (k / c, k % c);
            let v = values.get(channel * n + pixel).copied().unwrap_or(-1.0);
            quantise(v, max)
        })
        .collect();
    let encoded = match format {
        Format::Png => encode_png(&samples, width, height, c, opts),
        Format::Jpeg => encode_jpeg(&samples, width, height, c),
    }
    .map_err(|detail| FileError::Encode {
        path: path.to_path_buf(),
        format: format.name(),
        detail,
    })?;
    write_atomically(path, |out| out.write_all(&encoded))
}

/// Maps `v` in [-1, 1] (clamped) to the nearest sample in [0, max], halves away from zero.
fn quantise(v: f64, max: f64) -> u16 {
    ((v.clamp(-1.0, 1.0) + 1.0) * (max / 2.0)).round() as u16
}

/// The formats [`write_image`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Jpeg,
}

impl Format {
    /// The format named by the extension of `path`.
    fn of(path: &Path) -> Result<Self, FileError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("jpg" | "jpeg") => Ok(Format::Jpeg),
            _ => Err(FileError::ImageExtension(path.to_path_buf())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
        }
    }
}

/// Checks a PNG text chunk's keyword (and that the text holds no NUL byte).
fn check_text_chunk(keyword: &str, text: &str) -> Result<(), String> {
    let printable_latin1 = |ch: char| matches!(u32::from(ch), 0x20..=0x7e | 0xa1..=0xff);
    let count = keyword.chars().count();
    if count == 0 || count > 79 {
        return Err(format!(
            "the PNG text keyword `{keyword}` has {count} characters; it needs 1 to 79"
        ));
    }
    if !keyword.chars().all(printable_latin1)
        || keyword.starts_with(' ')
        || keyword.ends_with(' ')
        || keyword.contains("  ")
    {
        return Err(format!(
            "the PNG text keyword `{keyword}` must be printable Latin-1 characters without \
             leading, trailing or double spaces"
        ));
    }
    if text.contains('\0') {
        return Err(format!(
            "the PNG text under `{keyword}` holds a NUL character, which PNG text cannot store"
        ));
    }
    Ok(())
}

/// Encodes interleaved samples as a grey or RGB PNG of `opts.bit_depth` bits with the text
/// chunks of `opts`.
fn encode_png(
    samples: &[u16],
    width: u32,
    height: u32,
    channels: usize,
    opts: &ImageOptions,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(if channels == 3 {
        png::ColorType::Rgb
    } else {
        png::ColorType::Grayscale
    });
    let bytes: Vec<u8> = if opts.bit_depth == 16 {
        encoder.set_depth(png::BitDepth::Sixteen);
        samples.iter().flat_map(|s| s.to_be_bytes()).collect()
    } else {
        encoder.set_depth(png::BitDepth::Eight);
        samples.iter().map(|&s| s.min(255) as u8).collect()
    };
    for (keyword, text) in &opts.text {
        let latin1 = text.chars().all(|ch| u32::from(ch) <= 0xff);
        let added = if latin1 {
            encoder.add_text_chunk(keyword.clone(), text.clone())
        } else {
            encoder.add_itxt_chunk(keyword.clone(), text.clone())
        };
        added.map_err(|e| e.to_string())?;
    }
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&bytes).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Encodes interleaved 8-bit samples as a grey or RGB JPEG of quality 95.
fn encode_jpeg(
    samples: &[u16],
    width: u32,
    height: u32,
    channels: usize,
) -> Result<Vec<u8>, String> {
    let bytes: Vec<u8> = samples.iter().map(|&s| s.min(255) as u8).collect();
    let color = if channels == 3 {
        image::ExtendedColorType::Rgb8
    } else {
        image::ExtendedColorType::L8
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode(&bytes, width, height, color)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decoded pixels: `channels` planes of `height * width` values in [0, 1], plane after plane.
struct Planes {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<f64>,
}

/// Decodes a PNG or JPEG file into planes (1 for grey, 3 for colour; alpha dropped).
fn decode(path: &Path) -> Result<Planes, FileError> {
    let (reader, format) = open_image(path)?;
    let decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(path, format, e))?;
    let (w, h) = image::ImageDecoder::dimensions(&decoder);
    check_pixels(path, format, w, h)?;
    let img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| decode_error(path, format, e))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    if width == 0 || height == 0 {
        return Err(FileError::BadImage {
            path: path.to_path_buf(),
            format,
            detail: format!("the image is {width}x{height}"),
        });
    }
    let colour = channels(img.color()) == 3;
    let wide = img.color().bytes_per_pixel() > img.color().channel_count();
    let data = match (colour, wide) {
        (true, false) => planes(img.into_rgb8().as_raw(), 3, 255.0),
        (false, false) => planes(img.into_luma8().as_raw(), 1, 255.0),
        (true, true) => planes(img.into_rgb16().as_raw(), 3, 65535.0),
        (false, true) => planes(img.into_luma16().as_raw(), 1, 65535.0),
    };
    Ok(Planes {
        channels: if colour { 3 } else { 1 },
        height,
        width,
        data,
    })
}

/// Splits interleaved samples of `channels` channels into planes of values `s / max`.
fn planes<T: Copy + Into<f64>>(samples: &[T], channels: usize, max: f64) -> Vec<f64> {
    let pixels = samples.len() / channels;
    (0..channels)
        .flat_map(|c| {
            samples
                .iter()
                .skip(c)
                .step_by(channels)
                .take(pixels)
                .map(move |&s| s.into() / max)
        })
        .collect()
}

/// Files are read into float tensors only.
fn check_float(path: &Path, dtype: DType) -> Result<(), FileError> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(FileError::NotFloat {
            path: path.to_path_buf(),
            dtype: dtype.as_str().to_string(),
        })
    }
}

/// A tensor of `shape`, `dtype` and `device` from `f64` values (converted on the CPU, so the
/// result does not depend on the device).
fn to_tensor(
    path: &Path,
    values: Vec<f64>,
    shape: [usize; 3],
    dtype: DType,
    device: &Device,
) -> Result<Tensor, FileError> {
    let tensor = if dtype == DType::F64 {
        Tensor::from_vec(values, shape.as_slice(), device)
    } else {
        let values: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        Tensor::from_vec(values, shape.as_slice(), device).and_then(|t| t.to_dtype(dtype))
    };
    tensor.map_err(|error| FileError::Tensor {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::headers::image_header;
    use rand::Rng;
    use std::path::PathBuf;

    /// A `[c, h, w]` f64 tensor of seeded uniform values in [-1, 1].
    fn uniform(shape: [usize; 3], seed: i64) -> Tensor {
        let mut rng = crate::random::generator(0, "io-test", seed);
        let n = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..=1.0)).collect();
        Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        values(a)
            .iter()
            .zip(values(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    /// Reads with the given dtype and checks the shape against the header the checker sees.
    fn read(path: &Path, dtype: DType) -> Tensor {
        let t = read_image(path, dtype, &Device::Cpu).unwrap();
        let h = image_header(path).unwrap().shape().map(|d| d as usize);
        assert_eq!(t.dims(), h.as_slice(), "{}", path.display());
        assert_eq!(t.dtype(), dtype);
        t
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn png_round_trip_8_and_16_bit() {
        let dir = tempfile::tempdir().unwrap();
        for (shape, seed) in [([1, 5, 7], 1), ([3, 4, 6], 2)] {
            let x = uniform(shape, seed);
            for (bits, step) in [(8u8, 255.0), (16, 65535.0)] {
                let path = dir.path().join(format!("x{seed}_{bits}.png"));
                let opts = ImageOptions {
                    bit_depth: bits,
                    ..ImageOptions::default()
                };
                write_image(&path, &x, &opts).unwrap();
                let back = read(&path, DType::F64);
                // Half a quantisation step of the [-1, 1] range (2 / step).
                let err = max_abs_diff(&x, &back);
                assert!(err <= 1.0 / step + 1e-12, "{bits} bit: {err}");
                // Values read from a file are written back to the same samples, in f32 too.
                let back32 = read(&path, DType::F32);
                let again = dir.path().join(format!("again{seed}_{bits}.png"));
                write_image(&again, &back32, &opts).unwrap();
                assert_eq!(max_abs_diff(&read(&again, DType::F64), &back), 0.0);
            }
        }
    }

    #[test]
    fn quantisation_clamps_and_rounds_half_away_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.png");
        let v = [-2.0, -1.0, 0.0, 1.0, 2.0, f64::INFINITY, f64::NEG_INFINITY];
        let x = Tensor::from_vec(v.to_vec(), (1, 7), &Device::Cpu).unwrap();
        write_image(&path, &x, &ImageOptions::default()).unwrap();
        let img = image::open(&path).unwrap().into_luma8();
        assert_eq!(img.as_raw(), &[0, 0, 128, 255, 255, 255, 0]);
        assert_eq!(quantise(0.0, 65535.0), 32768);
        assert_eq!(quantise(-1.0 + 1.0 / 127.5 * 0.4999, 255.0), 0);
        assert_eq!(quantise(-1.0 + 1.0 / 127.5 * 0.5001, 255.0), 1);
    }

    #[test]
    fn grey_rgb_alpha_and_16_bit_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name);
        let s = |v: f64, max: f64| 2.0 * v / max - 1.0;

        image::GrayImage::from_raw(3, 1, vec![0, 51, 255])
            .unwrap()
            .save(p("g.png"))
            .unwrap();
        assert_eq!(
            values(&read(&p("g.png"), DType::F64)),
            vec![-1.0, -0.6, 1.0]
        );

        image::GrayAlphaImage::from_raw(2, 1, vec![0, 7, 255, 0])
            .unwrap()
            .save(p("ga.png"))
            .unwrap();
        assert_eq!(values(&read(&p("ga.png"), DType::F64)), vec![-1.0, 1.0]);

        image::RgbImage::from_raw(2, 1, vec![0, 51, 255, 255, 0, 102])
            .unwrap()
            .save(p("rgb.png"))
            .unwrap();
        let rgb = read(&p("rgb.png"), DType::F64);
        assert_eq!(rgb.dims(), &[3, 1, 2]);
        let want = [0.0, 255.0, 51.0, 0.0, 255.0, 102.0].map(|v| s(v, 255.0));
        assert_eq!(values(&rgb), want.to_vec());

        image::RgbaImage::from_raw(1, 1, vec![255, 0, 51, 9])
            .unwrap()
            .save(p("rgba.png"))
            .unwrap();
        let want = [255.0, 0.0, 51.0].map(|v| s(v, 255.0));
        assert_eq!(values(&read(&p("rgba.png"), DType::F64)), want.to_vec());

        let grey16 =
            image::ImageBuffer::<image::Luma<u16>, _>::from_raw(3, 1, vec![0u16, 1000, 65535])
                .unwrap();
        grey16.save(p("g16.png")).unwrap();
        let want = [0.0, 1000.0, 65535.0].map(|v| s(v, 65535.0));
        assert_eq!(values(&read(&p("g16.png"), DType::F64)), want.to_vec());

        let rgba16 =
            image::ImageBuffer::<image::Rgba<u16>, _>::from_raw(1, 1, vec![1u16, 2, 65535, 0])
                .unwrap();
        rgba16.save(p("rgba16.png")).unwrap();
        let want = [1.0, 2.0, 65535.0].map(|v| s(v, 65535.0));
        assert_eq!(values(&read(&p("rgba16.png"), DType::F64)), want.to_vec());

        // f32 reads are the f64 values rounded once.
        let want: Vec<f64> = [0.0f64, 51.0, 255.0]
            .iter()
            .map(|&v| s(v, 255.0) as f32 as f64)
            .collect();
        assert_eq!(values(&read(&p("g.png"), DType::F32)), want);
    }

    /// Writes a PNG with the `png` crate directly (palette and low bit depths).
    fn raw_png(
        path: &Path,
        width: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        palette: Option<Vec<u8>>,
        data: &[u8],
    ) {
        let file = std::fs::File::create(path).unwrap();
        let mut enc = png::Encoder::new(file, width, 1);
        enc.set_color(color);
        enc.set_depth(depth);
        if let Some(palette) = palette {
            enc.set_palette(palette);
        }
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn palette_and_low_bit_depth_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pal.png");
        // Entry 0 is red, entry 1 is grey 51.
        let palette = vec![255, 0, 0, 51, 51, 51];
        raw_png(
            &path,
            3,
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            Some(palette),
            &[0, 1, 0],
        );
        let t = read(&path, DType::F64);
        assert_eq!(t.dims(), &[3, 1, 3]);
        let (r, g) = (1.0, -0.6);
        assert_eq!(
            values(&t),
            vec![r, g, r, -1.0, g, -1.0, -1.0, g, -1.0],
            "planes R, G, B"
        );

        // 1-bit grey: 0 and 1 map to -1 and 1.
        let path = dir.path().join("bits.png");
        raw_png(
            &path,
            4,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            None,
            &[0b1010_0000],
        );
        assert_eq!(values(&read(&path, DType::F64)), vec![1.0, -1.0, 1.0, -1.0]);
    }

    #[test]
    fn jpeg_read_and_write() {
        let dir = tempfile::tempdir().unwrap();
        let grey = dir.path().join("g.jpg");
        image::GrayImage::from_pixel(16, 8, image::Luma([200]))
            .save(&grey)
            .unwrap();
        let t = read(&grey, DType::F64);
        assert_eq!(t.dims(), &[1, 8, 16]);
        let want = 2.0 * 200.0 / 255.0 - 1.0;
        assert!(values(&t).iter().all(|v| (v - want).abs() <= 2.0 / 255.0));

        // A smooth colour image survives JPEG at quality 95 within a few levels.
        let x = Tensor::arange(0f64, 3.0 * 16.0 * 16.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 16, 16))
            .unwrap()
            .affine(2.0 / 768.0, -1.0)
            .unwrap();
        let path = dir.path().join("c.JPEG");
        write_image(&path, &x, &ImageOptions::default()).unwrap();
        let back = read(&path, DType::F64);
        assert_eq!(back.dims(), &[3, 16, 16]);
        let err = max_abs_diff(&x, &back);
        assert!(err < 0.05, "{err}");
    }

    #[test]
    fn text_chunks_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let opts = ImageOptions {
            bit_depth: 8,
            text: vec![
                ("mapga-run".into(), "run 7, café".into()),
                (
                    "mapga-source".into(),
                    "let σ = 0.05\nsave x to \"x.png\"".into(),
                ),
            ],
        };
        write_image(&path, &uniform([1, 3, 3], 3), &opts).unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let latin1: Vec<(&str, &str)> = info
            .uncompressed_latin1_text
            .iter()
            .map(|c| (c.keyword.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(latin1, vec![("mapga-run", "run 7, café")]);
        assert_eq!(info.utf8_text.len(), 1);
        assert_eq!(info.utf8_text[0].keyword, "mapga-source");
        assert_eq!(
            info.utf8_text[0].get_text().unwrap(),
            "let σ = 0.05\nsave x to \"x.png\""
        );
    }

    #[test]
    fn writes_are_atomic_and_create_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/run/x.png");
        let x = uniform([3, 4, 4], 4);
        write_image(&path, &x, &ImageOptions::default()).unwrap();
        write_image(&path, &x, &ImageOptions::default()).unwrap();
        write_image(
            &dir.path().join("out/run/y.jpg"),
            &x,
            &ImageOptions::default(),
        )
        .unwrap();
        assert_eq!(files(&dir.path().join("out/run")), vec!["x.png", "y.jpg"]);
        // [H, W] is taken as grey.
        let hw = x.get(0).unwrap();
        write_image(&path, &hw, &ImageOptions::default()).unwrap();
        assert_eq!(read(&path, DType::F64).dims(), &[1, 4, 4]);
    }

    #[test]
    fn nan_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.png");
        let x = Tensor::from_vec(
            vec![0.0f32, f32::NAN, 1.0, f32::NAN],
            (1, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let err = write_image(&path, &x, &ImageOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NanPixels {
                    count: 2,
                    total: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("nan.png"), "{err}");
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn bad_writes_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let x = uniform([3, 2, 2], 5);
        let opts = ImageOptions::default();
        let err = write_image(&dir.path().join("x.bmp"), &x, &opts).unwrap_err();
        assert!(err.to_string().contains(".png, .jpg and .jpeg"), "{err}");
        let err = write_image(&dir.path().join("noext"), &x, &opts).unwrap_err();
        assert!(matches!(err, FileError::ImageExtension(_)), "{err}");

        let four = Tensor::zeros((4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let err = write_image(&dir.path().join("x.png"), &four, &opts).unwrap_err();
        assert!(err.to_string().contains("shape [4, 2, 2]"), "{err}");
        let empty = Tensor::zeros((1, 0, 2), DType::F32, &Device::Cpu).unwrap();
        let err = write_image(&dir.path().join("x.png"), &empty, &opts).unwrap_err();
        assert!(matches!(err, FileError::ImageShape { .. }), "{err}");

        let deep = ImageOptions {
            bit_depth: 16,
            ..ImageOptions::default()
        };
        let err = write_image(&dir.path().join("x.jpg"), &x, &deep).unwrap_err();
        assert!(
            err.to_string().contains("save as .png for 16 bits"),
            "{err}"
        );
        let odd = ImageOptions {
            bit_depth: 12,
            ..ImageOptions::default()
        };
        let err = write_image(&dir.path().join("x.png"), &x, &odd).unwrap_err();
        assert!(err.to_string().contains("bit depth of 12"), "{err}");

        for keyword in ["", " lead", "a  b", "σ", &"k".repeat(80)] {
            let opts = ImageOptions {
                bit_depth: 8,
                text: vec![(keyword.to_string(), "t".into())],
            };
            let err = write_image(&dir.path().join("x.png"), &x, &opts).unwrap_err();
            assert!(
                matches!(err, FileError::ImageOption { .. }),
                "{keyword}: {err}"
            );
        }
        assert!(files(dir.path()).is_empty());
    }

    #[test]
    fn masks() {
        let dir = tempfile::tempdir().unwrap();
        let grey = dir.path().join("m.png");
        image::GrayImage::from_raw(4, 1, vec![0, 127, 128, 255])
            .unwrap()
            .save(&grey)
            .unwrap();
        let m = read_mask(&grey, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), &[1, 1, 4]);
        assert_eq!(values(&m), vec![0.0, 0.0, 1.0, 1.0]);
        // Colour masks use the mean of the channels: yellow (170) is observed, red (85) not.
        let colour = dir.path().join("m_rgb.png");
        image::RgbImage::from_raw(2, 1, vec![255, 255, 0, 255, 0, 0])
            .unwrap()
            .save(&colour)
            .unwrap();
        let m = read_mask(&colour, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(m.dims(), &[1, 1, 2]);
        assert_eq!(values(&m), vec![1.0, 0.0]);
    }

    #[test]
    fn read_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing: PathBuf = dir.path().join("missing.png");
        let err = read_image(&missing, DType::F32, &Device::Cpu).unwrap_err();
        assert!(matches!(err, FileError::NotFound(_)), "{err}");
        let text = dir.path().join("t.png");
        std::fs::write(&text, b"not an image").unwrap();
        let err = read_mask(&text, DType::F32, &Device::Cpu).unwrap_err();
        assert!(matches!(err, FileError::NotAnImage(_)), "{err}");
        image::GrayImage::new(2, 2).save(&text).unwrap();
        let err = read_image(&text, DType::U8, &Device::Cpu).unwrap_err();
        assert!(
            err.to_string().contains("floating-point tensors, not u8"),
            "{err}"
        );
        // A truncated PNG.
        let bytes = std::fs::read(&text).unwrap();
        std::fs::write(&text, &bytes[..bytes.len() - 20]).unwrap();
        let err = read_image(&text, DType::F32, &Device::Cpu).unwrap_err();
        assert!(matches!(err, FileError::BadImage { .. }), "{err}");
    }
}
