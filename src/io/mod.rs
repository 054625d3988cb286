//! File formats read by the checker and the runtime.
//!
//! The checker must know the shape of every file a program names (images, `.npy` arrays,
//! safetensors weights) before anything runs, so each format here has a *header* reader that
//! looks only at the few bytes describing the data, never at pixels or weights:
//! [`headers::image_header`], [`headers::safetensors_header`] and [`npy::npy_header`].
//!
//! For the runtime, [`image`] reads images and masks into tensors and writes tensors as PNG or
//! JPEG files, [`npy`] reads and writes whole arrays and tensors, and [`grid()`] lays images
//! side by side for saving, and [`resize`] fits photos of any size to a model's resolution. Every writer is atomic (a temporary file renamed into place) and
//! creates missing parent folders.
//!
//! Every problem is a [`FileError`] that names the file and says in plain words what is wrong;
//! no input bytes, however broken, make these readers panic.

pub mod atomic;
pub mod grid;
pub mod hash;
pub mod headers;
pub mod image;
pub mod npy;
pub mod outdir;
pub mod permissions;
pub mod plot;
pub mod resize;

pub use self::grid::{grid, grid_rows, GridError};
pub use self::image::{read_image, read_mask, write_image, ImageOptions};
pub use self::npy::{read_npy, write_npy};

use std::io;
use std::path::{Path, PathBuf};

/// A file that could not be read or written, or whose contents are not what they should be.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file does not exist.
    #[error("`{}`: no such file", .0.display())]
    NotFound(PathBuf),
    /// The operating system refused to read the file (permissions, a folder, a disk error).
    #[error("cannot read `{}`: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// The operating system refused to write the file.
    #[error("cannot write `{}`: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: io::Error,
    },
    /// The file is not an image at all.
    #[error("`{}`: not a PNG or JPEG image", .0.display())]
    NotAnImage(PathBuf),
    /// The file is an image in a format other than PNG or JPEG.
    #[error("`{}`: {format} images are not supported, only PNG and JPEG", .path.display())]
    UnsupportedImage {
        /// The file.
        path: PathBuf,
        /// The format found, e.g. `GIF`.
        format: String,
    },
    /// The file starts like a PNG or JPEG image but its header is broken or truncated.
    #[error("`{}`: broken {format} image: {detail}", .path.display())]
    BadImage {
        /// The file.
        path: PathBuf,
        /// `PNG` or `JPEG`.
        format: &'static str,
        /// What the decoder found wrong.
        detail: String,
    },
    /// The file is not a well-formed `.npy` file.
    #[error("`{}`: .npy header is malformed: {detail}", .path.display())]
    NpyHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The `.npy` element type is not one this crate reads.
    #[error(
        "`{}`: unsupported .npy dtype `{descr}` (supported: <f4, <f8, |u1, <i4, <i8, |b1)",
        .path.display()
    )]
    NpyDtype {
        /// The file.
        path: PathBuf,
        /// The dtype as written in the header, e.g. `<c8`.
        descr: String,
    },
    /// The `.npy` file holds fewer data bytes than its header promises.
    #[error(
        "`{}`: .npy data is truncated: the header promises {expected} bytes of data \
         but the file holds {found}",
        .path.display()
    )]
    NpyTruncated {
        /// The file.
        path: PathBuf,
        /// Bytes of data the header's dtype and shape call for.
        expected: u64,
        /// Bytes of data actually present after the header.
        found: u64,
    },
    /// An array holds NaN or infinite values, which no computation here can use.
    #[error(
        "`{}`: holds {count} NaN or infinite value(s) (the first at flat index {first}); \
         mapga computes with finite data only: replace them before loading (e.g. \
         numpy.nan_to_num), or, for values beyond float32's range, run with --dtype f64",
        .path.display()
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// How many values are not finite.
        count: usize,
        /// The row-major index of the first.
        first: usize,
    },
    /// The file is not a well-formed safetensors file.
    #[error("`{}`: safetensors header is malformed: {detail}", .path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Data handed to a writer does not fit the shape it is to be written with.
    #[error(
        "`{}`: shape {shape:?} holds {expected} values but {found} were given",
        .path.display()
    )]
    DataLength {
        /// The file that was to be written.
        path: PathBuf,
        /// The shape asked for.
        shape: Vec<u64>,
        /// The number of values the shape holds (saturating at `u64::MAX`).
        expected: u64,
        /// The number of values given.
        found: u64,
    },
    /// Files are read into floating-point tensors only.
    #[error("`{}`: files are read into floating-point tensors, not {dtype}", .path.display())]
    NotFloat {
        /// The file.
        path: PathBuf,
        /// The dtype asked for, e.g. `u8`.
        dtype: String,
    },
    /// A tensor operation failed while reading or writing the file (e.g. out of device memory).
    #[error("`{}`: {error}", .path.display())]
    Tensor {
        /// The file.
        path: PathBuf,
        /// What the tensor library said.
        error: candle_core::Error,
    },
    /// A tensor of this shape cannot be saved as an image.
    #[error(
        "`{}`: cannot save a tensor of shape {shape:?} as an image; \
         it must be [1, H, W] (grey), [3, H, W] (colour) or [H, W]",
        .path.display()
    )]
    ImageShape {
        /// The file that was to be written.
        path: PathBuf,
        /// The tensor's shape.
        shape: Vec<usize>,
    },
    /// The image to save holds NaN values; nothing was written.
    #[error(
        "`{}`: the image holds {count} NaN value(s) out of {total}; nothing was written",
        .path.display()
    )]
    NanPixels {
        /// The file that was to be written.
        path: PathBuf,
        /// How many values are NaN.
        count: usize,
        /// How many values the image has.
        total: usize,
    },
    /// The file name does not end in an image extension this crate writes.
    #[error(
        "`{}`: cannot tell the image format from the file name; \
         supported extensions are .png, .jpg and .jpeg",
        .0.display()
    )]
    ImageExtension(PathBuf),
    /// An option given for writing an image cannot be honoured.
    #[error("`{}`: {detail}", .path.display())]
    ImageOption {
        /// The file that was to be written.
        path: PathBuf,
        /// What is wrong, e.g. a bit depth of 12.
        detail: String,
    },
    /// The image encoder refused the data.
    #[error("`{}`: cannot encode the {format} image: {detail}", .path.display())]
    Encode {
        /// The file that was to be written.
        path: PathBuf,
        /// `PNG` or `JPEG`.
        format: &'static str,
        /// What the encoder said.
        detail: String,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::NotFound(path)
            | FileError::NotAnImage(path)
            | FileError::ImageExtension(path)
            | FileError::Read { path, .. }
            | FileError::Write { path, .. }
            | FileError::UnsupportedImage { path, .. }
            | FileError::BadImage { path, .. }
            | FileError::NpyHeader { path, .. }
            | FileError::NpyDtype { path, .. }
            | FileError::NpyTruncated { path, .. }
            | FileError::NonFinite { path, .. }
            | FileError::Safetensors { path, .. }
            | FileError::DataLength { path, .. }
            | FileError::NotFloat { path, .. }
            | FileError::Tensor { path, .. }
            | FileError::ImageShape { path, .. }
            | FileError::NanPixels { path, .. }
            | FileError::ImageOption { path, .. }
            | FileError::Encode { path, .. } => path,
        }
    }

    /// Classifies an I/O error met while reading `path`: a missing file becomes
    /// [`FileError::NotFound`], anything else [`FileError::Read`].
    pub(crate) fn read(path: &Path, error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::NotFound {
            FileError::NotFound(path.to_path_buf())
        } else {
            FileError::Read {
                path: path.to_path_buf(),
                error,
            }
        }
    }

    /// An I/O error met while writing `path`.
    pub(crate) fn write(path: &Path, error: io::Error) -> Self {
        FileError::Write {
            path: path.to_path_buf(),
            error,
        }
    }
}
