//! Shapes of image and safetensors files, read from their headers alone.
//!
//! [`image_header`] lets the image decoder parse only the header chunks (PNG `IHDR`, JPEG
//! `SOF`) and never decodes a pixel; [`safetensors_header`] reads the 8-byte header length and
//! then that many bytes of JSON, and checks each tensor's byte range against the file's size
//! without reading a weight.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use image::{ImageDecoder, ImageFormat, ImageReader};

use super::FileError;

/// The shape of an image file, as the checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageHeader {
    /// 1 for grey (with or without alpha), 3 for colour (RGB or RGBA: alpha is dropped).
    pub channels: u32,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

impl ImageHeader {
    /// `[channels, height, width]`, the order tensors use.
    pub fn shape(&self) -> [u32; 3] {
        [self.channels, self.height, self.width]
    }
}

/// Reads the channel count and size of a PNG or JPEG file without decoding its pixels.
///
/// The format is told from the file's first bytes, not its extension.
pub fn image_header(path: &Path) -> Result<ImageHeader, FileError> {
    let (reader, format) = open_image(path)?;
    let decoder = reader
        .into_decoder()
        .map_err(|e| decode_error(path, format, e))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(FileError::BadImage {
            path: path.to_path_buf(),
            format,
            detail: format!("the header gives a size of {width}x{height}"),
        });
    }
    check_pixels(path, format, width, height)?;
    Ok(ImageHeader {
        channels: channels(decoder.color_type()),
        height,
        width,
    })
}

/// The most pixels an image file may have by default: 64 megapixels, beyond any camera photo
/// a restoration starts from. A 389 KB PNG can declare 20000 x 20000 pixels, which took 7.8 GB
/// and 47 s to decode (or aborted under a memory limit) before anything ran.
pub const MAX_IMAGE_PIXELS: u64 = 64_000_000;

/// The environment variable that sets another limit: a whole number of pixels.
pub const MAX_IMAGE_PIXELS_VAR: &str = "MAPGA_MAX_IMAGE_PIXELS";

/// The pixel limit in force: `MAPGA_MAX_IMAGE_PIXELS` when it is a whole number of at least 1,
/// else [`MAX_IMAGE_PIXELS`].
pub fn max_image_pixels() -> u64 {
    std::env::var(MAX_IMAGE_PIXELS_VAR)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(MAX_IMAGE_PIXELS)
}

/// Refuses an image whose header declares more than [`max_image_pixels`], before decoding it.
pub(crate) fn check_pixels(
    path: &Path,
    format: &'static str,
    width: u32,
    height: u32,
) -> Result<(), FileError> {
    let pixels = width as u64 * height as u64;
    let limit = max_image_pixels();
    if pixels > limit {
        return Err(FileError::BadImage {
            path: path.to_path_buf(),
            format,
            detail: format!(
                "it declares {width}x{height} pixels ({:.1} megapixels), more than the {:.1} \
                 megapixels mapga decodes; shrink it with an image tool first, then `fit` it \
                 (or raise the limit with {MAX_IMAGE_PIXELS_VAR}=PIXELS)",
                pixels as f64 / 1e6,
                limit as f64 / 1e6
            ),
        });
    }
    Ok(())
}

/// The channel count the checker promises for pixels of this colour type: 3 for colour
/// (RGB or RGBA, alpha dropped), 1 for grey (with or without alpha).
///
/// The pixel reader in [`super::image`] uses the same rule, so a read image always has the
/// shape its header gave the checker.
pub(crate) fn channels(color: image::ColorType) -> u32 {
    if color.has_color() {
        3
    } else {
        1
    }
}

/// Opens a PNG or JPEG file, telling the format from its first bytes; returns the reader and
/// the format's name (`PNG` or `JPEG`). Other formats and non-images are errors.
pub(crate) fn open_image(
    path: &Path,
) -> Result<(ImageReader<BufReader<File>>, &'static str), FileError> {
    let file = File::open(path).map_err(|e| FileError::read(path, e))?;
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| FileError::read(path, e))?;
    let format = match reader.format() {
        Some(ImageFormat::Png) => "PNG",
        Some(ImageFormat::Jpeg) => "JPEG",
        Some(other) => {
            return Err(FileError::UnsupportedImage {
                path: path.to_path_buf(),
                format: format_name(other),
            })
        }
        None => return Err(FileError::NotAnImage(path.to_path_buf())),
    };
    Ok((reader, format))
}

/// Classifies a decoder error for `path`: an I/O failure other than a truncated file is a
/// [`FileError::Read`], anything else a [`FileError::BadImage`].
pub(crate) fn decode_error(path: &Path, format: &'static str, e: image::ImageError) -> FileError {
    match e {
        image::ImageError::IoError(io) if io.kind() != std::io::ErrorKind::UnexpectedEof => {
            FileError::read(path, io)
        }
        other => FileError::BadImage {
            path: path.to_path_buf(),
            format,
            detail: other.to_string(),
        },
    }
}

/// A short upper-case name for an image format, e.g. `GIF`.
fn format_name(format: ImageFormat) -> String {
    match format.extensions_str().first() {
        Some(ext) => ext.to_ascii_uppercase(),
        None => format!("{format:?}").to_ascii_uppercase(),
    }
}

/// One tensor listed in a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// The element type as the file spells it: `F32`, `F16`, `BF16`, `I64`, ...
    pub dtype: String,
    /// The tensor's shape; empty for a scalar.
    pub shape: Vec<u64>,
}

/// The largest JSON header [`safetensors_header`] accepts, in bytes (the format's own limit).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Reads the tensor names, dtypes and shapes of a safetensors file without reading its weights.
///
/// The optional `__metadata__` entry is skipped. Each tensor's `data_offsets` must lie inside
/// the file and, for the standard dtypes, span exactly the bytes its shape calls for, so a
/// truncated download is caught here rather than at load time.
pub fn safetensors_header(path: &Path) -> Result<BTreeMap<String, TensorInfo>, FileError> {
    let malformed = |detail: String| FileError::Safetensors {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = File::open(path).map_err(|e| FileError::read(path, e))?;
    let file_len = file.metadata().map_err(|e| FileError::read(path, e))?.len();
    if file_len < 8 {
        return Err(malformed(format!(
            "the file is {file_len} bytes long, too short to hold the 8-byte header length"
        )));
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| FileError::read(path, e))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_SAFETENSORS_HEADER {
        return Err(malformed(format!(
            "the header length is {header_len} bytes, more than the {MAX_SAFETENSORS_HEADER} \
             allowed (is this a safetensors file?)"
        )));
    }
    let Some(data_len) = (file_len - 8).checked_sub(header_len) else {
        return Err(malformed(format!(
            "the header length ({header_len} bytes) runs past the end of the file \
             ({file_len} bytes)"
        )));
    };
    let mut json = Vec::new();
    file.take(header_len)
        .read_to_end(&mut json)
        .map_err(|e| FileError::read(path, e))?;
    if (json.len() as u64) < header_len {
        return Err(malformed(format!(
            "the file ended inside the {header_len}-byte header"
        )));
    }
    parse_safetensors_json(&json, data_len).map_err(malformed)
}

/// One entry of the header, as the format defines it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Parses the JSON header; `data_len` is the size of the byte buffer after it.
fn parse_safetensors_json(
    json: &[u8],
    data_len: u64,
) -> Result<BTreeMap<String, TensorInfo>, String> {
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(json)
        .map_err(|e| format!("the header is not a JSON object: {e}"))?;
    let mut tensors = BTreeMap::new();
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let raw: RawTensor =
            serde_json::from_value(value).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let (begin, end) = raw.data_offsets;
        if begin > end || end > data_len {
            return Err(format!(
                "tensor `{name}`: data_offsets [{begin}, {end}] lie outside the \
                 {data_len} bytes of data"
            ));
        }
        if let Some(size) = dtype_size(&raw.dtype) {
            let bytes = raw
                .shape
                .iter()
                .try_fold(size, |acc, &d| acc.checked_mul(d));
            if bytes != Some(end - begin) {
                return Err(format!(
                    "tensor `{name}`: a {} tensor of shape {:?} does not take the {} bytes \
                     its data_offsets give",
                    raw.dtype,
                    raw.shape,
                    end - begin
                ));
            }
        }
        tensors.insert(
            name,
            TensorInfo {
                dtype: raw.dtype,
                shape: raw.shape,
            },
        );
    }
    Ok(tensors)
}

/// Bytes per element of the standard safetensors dtypes; `None` for others.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// CRC-32 (ISO-HDLC), as PNG chunks carry it.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    /// A PNG of `width x height` grey pixels with its header and an empty data chunk: a few
    /// bytes that declare any size.
    fn png_header_only(width: u32, height: u32) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        out.extend(13u32.to_be_bytes());
        out.extend(&ihdr);
        out.extend(crc32(&ihdr).to_be_bytes());
        // An empty IDAT: the decoder reads up to the first one before it reports the size.
        out.extend(0u32.to_be_bytes());
        out.extend(b"IDAT");
        out.extend(crc32(b"IDAT").to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(b"IEND");
        out.extend(crc32(b"IEND").to_be_bytes());
        out
    }

    #[test]
    fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let huge = write(&dir, "huge.png", &png_header_only(20_000, 20_000));
        for e in [
            image_header(&huge).unwrap_err(),
            crate::io::read_image(&huge, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(
                text.contains("20000x20000") && text.contains("megapixels"),
                "{text}"
            );
        }
        // Within the limit, the header is read as before.
        let fine = write(&dir, "fine.png", &png_header_only(8000, 8000));
        assert_eq!(image_header(&fine).unwrap().width, 8000);
    }

    #[test]
    fn png_grey_and_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let grey = dir.path().join("grey.png");
        image::GrayImage::new(28, 28).save(&grey).unwrap();
        assert_eq!(
            image_header(&grey).unwrap(),
            ImageHeader {
                channels: 1,
                height: 28,
                width: 28
            }
        );
        let rgb = dir.path().join("rgb.png");
        image::RgbImage::new(5, 7).save(&rgb).unwrap();
        assert_eq!(image_header(&rgb).unwrap().shape(), [3, 7, 5]);
    }

    #[test]
    fn alpha_is_dropped_and_jpeg_works() {
        let dir = tempfile::tempdir().unwrap();
        let la = dir.path().join("la.png");
        image::GrayAlphaImage::new(4, 3).save(&la).unwrap();
        assert_eq!(image_header(&la).unwrap().shape(), [1, 3, 4]);
        let rgba = dir.path().join("rgba.png");
        image::RgbaImage::new(4, 3).save(&rgba).unwrap();
        assert_eq!(image_header(&rgba).unwrap().shape(), [3, 3, 4]);
        let jpg = dir.path().join("x.jpg");
        image::RgbImage::new(9, 6).save(&jpg).unwrap();
        assert_eq!(image_header(&jpg).unwrap().shape(), [3, 6, 9]);
        // The extension does not matter, the content does.
        let renamed = dir.path().join("really_a_png.jpg");
        std::fs::copy(&la, &renamed).unwrap();
        assert_eq!(image_header(&renamed).unwrap().shape(), [1, 3, 4]);
    }

    #[test]
    fn truncated_png_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.png");
        image::RgbImage::new(5, 7).save(&full).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        for cut in [8, 12, 20, 30] {
            let path = write(&dir, "cut.png", &bytes[..cut]);
            let err = image_header(&path).unwrap_err();
            assert!(
                matches!(err, FileError::BadImage { format: "PNG", .. }),
                "{cut}: {err}"
            );
            assert!(err.to_string().contains("broken PNG image"), "{err}");
        }
        let path = write(&dir, "cut.jpg", &[0xFF, 0xD8, 0xFF, 0xE0, 0x00]);
        assert!(matches!(
            image_header(&path),
            Err(FileError::BadImage { format: "JPEG", .. })
        ));
    }

    #[test]
    fn non_images_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = write(&dir, "notes.png", b"hello, this is not an image\n");
        let err = image_header(&text).unwrap_err();
        assert!(matches!(err, FileError::NotAnImage(_)));
        assert!(err
            .to_string()
            .ends_with("notes.png`: not a PNG or JPEG image"));
        let empty = write(&dir, "empty.png", b"");
        assert!(matches!(
            image_header(&empty),
            Err(FileError::NotAnImage(_))
        ));
        let gif = write(&dir, "x.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00");
        let err = image_header(&gif).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{}`: GIF images are not supported, only PNG and JPEG",
                gif.display()
            )
        );
        let missing = dir.path().join("nope.png");
        assert!(matches!(image_header(&missing), Err(FileError::NotFound(p)) if p == missing));
        assert!(matches!(
            image_header(dir.path()),
            Err(FileError::Read { .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        image::RgbImage::new(3, 3).save(&png).unwrap();
        let good = std::fs::read(&png).unwrap();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..300 {
            let mut bytes = good.clone();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = 8 + (state as usize) % (bytes.len() - 8);
            bytes[at] = (state >> 32) as u8;
            bytes.truncate(8 + (state as usize >> 8) % (bytes.len() - 8) + i % 2);
            let path = write(&dir, "fuzz.png", &bytes);
            let _ = image_header(&path);
            let path = write(&dir, "fuzz.safetensors", &bytes);
            let _ = safetensors_header(&path);
        }
    }

    fn safetensors_file(dir: &tempfile::TempDir, json: &str, data: usize) -> std::path::PathBuf {
        let path = dir.path().join("w.safetensors");
        let mut f = File::create(&path).unwrap();
        f.write_all(&(json.len() as u64).to_le_bytes()).unwrap();
        f.write_all(json.as_bytes()).unwrap();
        f.write_all(&vec![0u8; data]).unwrap();
        path
    }

    #[test]
    fn safetensors_parses_header_only() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"__metadata__":{"format":"pt"},
            "enc.0.conv.weight":{"dtype":"F32","shape":[32,1,3,3],"data_offsets":[0,1152]},
            "enc.0.conv.bias":{"dtype":"F16","shape":[32],"data_offsets":[1152,1216]},
            "step":{"dtype":"I64","shape":[],"data_offsets":[1216,1224]}}"#;
        let path = safetensors_file(&dir, json, 1224);
        let tensors = safetensors_header(&path).unwrap();
        assert_eq!(tensors.len(), 3);
        assert_eq!(
            tensors["enc.0.conv.weight"],
            TensorInfo {
                dtype: "F32".into(),
                shape: vec![32, 1, 3, 3]
            }
        );
        assert_eq!(tensors["enc.0.conv.bias"].dtype, "F16");
        assert_eq!(tensors["step"].shape, Vec::<u64>::new());
    }

    #[test]
    fn safetensors_errors() {
        let dir = tempfile::tempdir().unwrap();
        // Header length larger than the file.
        let path = dir.path().join("long.safetensors");
        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(err.contains("runs past the end of the file"), "{err}");
        // Absurd header length.
        std::fs::write(&path, u64::MAX.to_le_bytes()).unwrap();
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(err.contains("more than the 100000000 allowed"), "{err}");
        // Too short for the length.
        std::fs::write(&path, b"abc").unwrap();
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
        // Not JSON.
        let path = safetensors_file(&dir, "not json", 0);
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(err.contains("not a JSON object"), "{err}");
        // Offsets beyond the data (a truncated download).
        let json = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let path = safetensors_file(&dir, json, 8);
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(
            err.contains("tensor `w`: data_offsets [0, 16] lie outside"),
            "{err}"
        );
        // Offsets that do not fit the shape.
        let json = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
        let path = safetensors_file(&dir, json, 16);
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(err.contains("does not take the 16 bytes"), "{err}");
        // A missing field.
        let json = r#"{"w":{"dtype":"F32","data_offsets":[0,16]}}"#;
        let path = safetensors_file(&dir, json, 16);
        let err = safetensors_header(&path).unwrap_err().to_string();
        assert!(err.contains("tensor `w`: missing field `shape`"), "{err}");
        // Missing file.
        let missing = dir.path().join("nope.safetensors");
        assert!(matches!(
            safetensors_header(&missing),
            Err(FileError::NotFound(_))
        ));
    }
}
