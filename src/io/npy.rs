//! NumPy `.npy` arrays: the header alone for the checker, whole arrays and tensors for the
//! runtime.
//!
//! A `.npy` file is the magic `\x93NUMPY`, a two-byte version (1.0, 2.0 or 3.0), the header
//! length (2 bytes little-endian in version 1, 4 bytes after), and the header: a Python dict
//! literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 28, 28), }` padded
//! with spaces to a multiple of 64 bytes and ended by a newline. The raw data follows.
//! [`npy_header`] parses exactly that dict form with a small strict parser (no general Python
//! evaluation) and checks that the file holds all the data the header promises.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::atomic::write_atomically;
use super::FileError;

/// The bytes every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The largest header this reader accepts, in bytes. NumPy's own reader stops at 10 000.
const MAX_HEADER_LEN: u64 = 1 << 20;

/// The element types this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NpyDtype {
    /// `<f4`: little-endian 32-bit float.
    F32,
    /// `<f8`: little-endian 64-bit float.
    F64,
    /// `|u1`: unsigned byte.
    U8,
    /// `<i4`: little-endian 32-bit signed integer.
    I32,
    /// `<i8`: little-endian 64-bit signed integer.
    I64,
    /// `|b1`: boolean stored as one byte, 0 or 1.
    Bool,
}

impl NpyDtype {
    /// The dtype as NumPy writes it in a header, e.g. `<f4`.
    pub fn as_str(self) -> &'static str {
        match self {
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
            NpyDtype::U8 => "|u1",
            NpyDtype::I32 => "<i4",
            NpyDtype::I64 => "<i8",
            NpyDtype::Bool => "|b1",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            NpyDtype::U8 | NpyDtype::Bool => 1,
            NpyDtype::F32 | NpyDtype::I32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
        }
    }

    /// Reads a header's `descr`; one-byte types may use any byte-order mark.
    fn from_descr(descr: &str) -> Option<Self> {
        Some(match descr {
            "<f4" => NpyDtype::F32,
            "<f8" => NpyDtype::F64,
            "|u1" | "<u1" | ">u1" | "=u1" => NpyDtype::U8,
            "<i4" => NpyDtype::I32,
            "<i8" => NpyDtype::I64,
            "|b1" | "<b1" | ">b1" | "=b1" => NpyDtype::Bool,
            _ => return None,
        })
    }
}

impl std::fmt::Display for NpyDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `.npy` header says about the array after it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NpyHeader {
    /// The element type.
    pub dtype: NpyDtype,
    /// The array's shape; empty for a scalar.
    pub shape: Vec<u64>,
    /// Whether the data is stored column-major.
    pub fortran_order: bool,
    /// Where the data starts, in bytes from the start of the file.
    pub data_offset: u64,
}

impl NpyHeader {
    /// The number of elements (1 for a scalar), saturating at `u64::MAX`; headers returned by
    /// [`npy_header`] never saturate.
    pub fn num_elements(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .unwrap_or(u64::MAX)
    }

    /// The number of data bytes, saturating at `u64::MAX`.
    pub fn data_len(&self) -> u64 {
        self.num_elements().saturating_mul(self.dtype.size())
    }
}

/// Reads the dtype, shape and layout of a `.npy` file without reading its data.
///
/// Versions 1.0, 2.0 and 3.0 of the format are read. Besides a malformed header, this fails
/// when the dtype is not one of [`NpyDtype`] or when the file is shorter than the data the
/// header promises; Fortran order is reported in the header (the readers reorder it).
pub fn npy_header(path: &Path) -> Result<NpyHeader, FileError> {
    let file = File::open(path).map_err(|e| FileError::read(path, e))?;
    let file_len = file.metadata().map_err(|e| FileError::read(path, e))?.len();
    read_header(path, BufReader::new(file), file_len)
}

/// [`npy_header`] over an open reader positioned at the start of a file of `file_len` bytes.
fn read_header(path: &Path, mut reader: impl Read, file_len: u64) -> Result<NpyHeader, FileError> {
    let malformed = |detail: String| FileError::NpyHeader {
        path: path.to_path_buf(),
        detail,
    };
    let mut prefix = [0u8; 8];
    if !read_fully(&mut reader, &mut prefix, path)? {
        return Err(malformed(format!(
            "the file is {file_len} bytes long, too short to be a .npy file"
        )));
    }
    if &prefix[..6] != MAGIC {
        return Err(malformed(
            "the file does not start with the .npy magic `\\x93NUMPY`".into(),
        ));
    }
    let (major, minor) = (prefix[6], prefix[7]);
    let (header_len, prefix_len) = match (major, minor) {
        (1, 0) => {
            let mut len = [0u8; 2];
            if !read_fully(&mut reader, &mut len, path)? {
                return Err(malformed("the file ends inside the header length".into()));
            }
            (u64::from(u16::from_le_bytes(len)), 10u64)
        }
        (2 | 3, 0) => {
            let mut len = [0u8; 4];
            if !read_fully(&mut reader, &mut len, path)? {
                return Err(malformed("the file ends inside the header length".into()));
            }
            (u64::from(u32::from_le_bytes(len)), 12u64)
        }
        _ => {
            return Err(malformed(format!(
                "unsupported format version {major}.{minor} (1.0, 2.0 and 3.0 are read)"
            )))
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(malformed(format!(
            "the header is {header_len} bytes long, more than the {MAX_HEADER_LEN} allowed"
        )));
    }
    let data_offset = prefix_len + header_len;
    if data_offset > file_len {
        return Err(malformed(format!(
            "the header length ({header_len} bytes) runs past the end of the file \
             ({file_len} bytes)"
        )));
    }
    let mut text = Vec::new();
    reader
        .take(header_len)
        .read_to_end(&mut text)
        .map_err(|e| FileError::read(path, e))?;
    if (text.len() as u64) < header_len {
        return Err(malformed("the file ends inside the header".into()));
    }
    let dict = parse_dict(&text).map_err(malformed)?;
    let dtype = NpyDtype::from_descr(&dict.descr).ok_or_else(|| FileError::NpyDtype {
        path: path.to_path_buf(),
        descr: dict.descr.clone(),
    })?;
    let header = NpyHeader {
        dtype,
        shape: dict.shape,
        fortran_order: dict.fortran_order,
        data_offset,
    };
    let expected = header
        .shape
        .iter()
        .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            malformed(format!(
                "shape {:?} has more bytes than a file can hold",
                header.shape
            ))
        })?;
    let found = file_len - data_offset;
    if found < expected {
        return Err(FileError::NpyTruncated {
            path: path.to_path_buf(),
            expected,
            found,
        });
    }
    Ok(header)
}

/// Fills `buf`; `Ok(false)` if the reader ends first.
fn read_fully(reader: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<bool, FileError> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(FileError::read(path, e)),
    }
}

/// Reads a whole `.npy` array of any supported dtype, converting its elements to
/// `f32` (booleans become 0 and 1; wide integers and `f64` are rounded to the nearest `f32`).
///
/// Returns the shape and the elements in row-major order (a Fortran-order file is reordered).
pub fn read_npy_f32(path: &Path) -> Result<(Vec<u64>, Vec<f32>), FileError> {
    read_array(path)
}

/// Reads a whole `.npy` array of any supported dtype, converting its elements to
/// `f64` (exact for every dtype but `<i8` values beyond 2^53, which are rounded).
///
/// Returns the shape and the elements in row-major order (a Fortran-order file is reordered).
pub fn read_npy_f64(path: &Path) -> Result<(Vec<u64>, Vec<f64>), FileError> {
    read_array(path)
}

/// Refuses data holding NaN or infinite values (after the conversion to the element type
/// read, so an `f8` value beyond `f32`'s range counts), naming how many and the first.
fn finite<T>(path: &Path, data: &[T], is_finite: impl Fn(&T) -> bool) -> Result<(), FileError> {
    let Some(first) = data.iter().position(|v| !is_finite(v)) else {
        return Ok(());
    };
    Err(FileError::NonFinite {
        path: path.to_path_buf(),
        count: data[first..].iter().filter(|v| !is_finite(v)).count(),
        first,
    })
}

/// Reads a `.npy` file into a tensor of the same shape, with the given floating-point `dtype`,
/// on `device`; values are taken as stored (no scaling).
///
/// An `F64` tensor is filled from the file's values directly, never through `f32`; any other
/// float dtype is converted from `f32`. The shape is the one [`npy_header`] gives the checker.
pub fn read_npy(path: &Path, dtype: DType, device: &Device) -> Result<Tensor, FileError> {
    if !dtype.is_float() {
        return Err(FileError::NotFloat {
            path: path.to_path_buf(),
            dtype: dtype.as_str().to_string(),
        });
    }
    let tensor_err = |error| FileError::Tensor {
        path: path.to_path_buf(),
        error,
    };
    let dims = |shape: Vec<u64>| -> Result<Vec<usize>, FileError> {
        shape
            .into_iter()
            .map(|d| {
                usize::try_from(d).map_err(|_| FileError::NpyHeader {
                    path: path.to_path_buf(),
                    detail: format!("dimension {d} is too large for this machine"),
                })
            })
            .collect()
    };
    let tensor = if dtype == DType::F64 {
        let (shape, data) = read_npy_f64(path)?;
        finite(path, &data, |v: &f64| v.is_finite())?;
        Tensor::from_vec(data, dims(shape)?, device)
    } else {
        let (shape, data) = read_npy_f32(path)?;
        finite(path, &data, |v: &f32| v.is_finite())?;
        Tensor::from_vec(data, dims(shape)?, device).and_then(|t| t.to_dtype(dtype))
    };
    tensor.map_err(tensor_err)
}

/// Writes a tensor as a C-order `.npy` array of its shape: `F64` tensors as `<f8`, `I64`
/// tensors (the language's `as_int64`) as `<i8`, every other dtype converted to `f32` and
/// written as `<f4`. Atomic like [`write_npy_f32`].
///
/// The tensor may live on any device; it is copied to the CPU to be written.
pub fn write_npy(path: &Path, x: &Tensor) -> Result<(), FileError> {
    let tensor_err = |error| FileError::Tensor {
        path: path.to_path_buf(),
        error,
    };
    let shape: Vec<u64> = x.dims().iter().map(|&d| d as u64).collect();
    let flat = x.flatten_all().map_err(tensor_err)?;
    if x.dtype() == DType::F64 {
        let data = flat.to_vec1::<f64>().map_err(tensor_err)?;
        write_npy_f64(path, &shape, &data)
    } else if x.dtype() == DType::I64 {
        let data = flat.to_vec1::<i64>().map_err(tensor_err)?;
        write_npy_i64(path, &shape, &data)
    } else {
        let data = flat
            .to_dtype(DType::F32)
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(tensor_err)?;
        write_npy_f32(path, &shape, &data)
    }
}

/// [`read_npy_f32`] and [`read_npy_f64`] for element type `T`.
fn read_array<T: Element>(path: &Path) -> Result<(Vec<u64>, Vec<T>), FileError> {
    let header = npy_header(path)?;
    let mut file = File::open(path).map_err(|e| FileError::read(path, e))?;
    file.seek(SeekFrom::Start(header.data_offset))
        .map_err(|e| FileError::read(path, e))?;
    // `npy_header` checked that the file holds these bytes, so the buffer is no larger than
    // the file itself.
    let len = header.data_len();
    let mut bytes = Vec::new();
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::read(path, e))?;
    if (bytes.len() as u64) < len {
        return Err(FileError::NpyTruncated {
            path: path.to_path_buf(),
            expected: len,
            found: bytes.len() as u64,
        });
    }
    let data = convert(header.dtype, &bytes);
    let data = if header.fortran_order {
        fortran_to_row_major(&header.shape, data)
    } else {
        data
    };
    Ok((header.shape, data))
}

/// The elements of an array stored in Fortran (column-major) order, in row-major order: what
/// NumPy's `np.asfortranarray` or MATLAB-made files hold, read as NumPy would read them.
fn fortran_to_row_major<T: Copy>(shape: &[u64], data: Vec<T>) -> Vec<T> {
    if shape.len() < 2 {
        return data;
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    // Column-major strides: the first index moves fastest.
    let mut strides = vec![1usize; dims.len()];
    for k in 1..dims.len() {
        strides[k] = strides[k - 1] * dims[k - 1];
    }
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; dims.len()];
    for _ in 0..data.len() {
        let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[offset]);
        // The row-major counter: the last index moves fastest.
        for k in (0..dims.len()).rev() {
            index[k] += 1;
            if index[k] < dims[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// An element type whole arrays are read into (floats) and written from (floats and `i64`).
trait Element: Copy {
    /// The header `descr` of arrays of this type.
    const DESCR: &'static str;
    /// From an `f32` element.
    fn from_f32(x: f32) -> Self;
    /// From an `f64` element.
    fn from_f64(x: f64) -> Self;
    /// From an integer element.
    fn from_i64(x: i64) -> Self;
    /// Appends the little-endian bytes.
    fn write_le(self, out: &mut dyn Write) -> std::io::Result<()>;
}

impl Element for f32 {
    const DESCR: &'static str = "<f4";
    fn from_f32(x: f32) -> Self {
        x
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn from_i64(x: i64) -> Self {
        x as f32
    }
    fn write_le(self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.to_le_bytes())
    }
}

impl Element for f64 {
    const DESCR: &'static str = "<f8";
    fn from_f32(x: f32) -> Self {
        f64::from(x)
    }
    fn from_f64(x: f64) -> Self {
        x
    }
    fn from_i64(x: i64) -> Self {
        x as f64
    }
    fn write_le(self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.to_le_bytes())
    }
}

impl Element for i64 {
    const DESCR: &'static str = "<i8";
    fn from_f32(x: f32) -> Self {
        x as i64
    }
    fn from_f64(x: f64) -> Self {
        x as i64
    }
    fn from_i64(x: i64) -> Self {
        x
    }
    fn write_le(self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.to_le_bytes())
    }
}

/// Converts little-endian elements of `dtype` to `T`.
fn convert<T: Element>(dtype: NpyDtype, bytes: &[u8]) -> Vec<T> {
    fn each<const N: usize, T>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    match dtype {
        NpyDtype::F32 => each(bytes, |b| T::from_f32(f32::from_le_bytes(b))),
        NpyDtype::F64 => each(bytes, |b| T::from_f64(f64::from_le_bytes(b))),
        NpyDtype::U8 => bytes.iter().map(|&b| T::from_i64(i64::from(b))).collect(),
        NpyDtype::Bool => bytes
            .iter()
            .map(|&b| T::from_i64(i64::from(b != 0)))
            .collect(),
        NpyDtype::I32 => each(bytes, |b| T::from_i64(i64::from(i32::from_le_bytes(b)))),
        NpyDtype::I64 => each(bytes, |b| T::from_i64(i64::from_le_bytes(b))),
    }
}

/// Writes `data` as a C-order `<f4` array of the given shape, in format version 1.0 (2.0 if
/// the header would not fit).
///
/// The file is written beside its destination under a temporary name and renamed into place,
/// so a reader never sees half a file; missing parent folders are created. `data.len()` must
/// equal the product of `shape`.
pub fn write_npy_f32(path: &Path, shape: &[u64], data: &[f32]) -> Result<(), FileError> {
    write_array(path, shape, data)
}

/// [`write_npy_f32`] for `f64` data, written as `<f8`.
pub fn write_npy_f64(path: &Path, shape: &[u64], data: &[f64]) -> Result<(), FileError> {
    write_array(path, shape, data)
}

/// [`write_npy_f32`] for `i64` data, written as `<i8`.
pub fn write_npy_i64(path: &Path, shape: &[u64], data: &[i64]) -> Result<(), FileError> {
    write_array(path, shape, data)
}

/// [`write_npy_f32`], [`write_npy_f64`] and [`write_npy_i64`] for element type `T`.
fn write_array<T: Element>(path: &Path, shape: &[u64], data: &[T]) -> Result<(), FileError> {
    let expected = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len() as u64) {
        return Err(FileError::DataLength {
            path: path.to_path_buf(),
            shape: shape.to_vec(),
            expected: expected.unwrap_or(u64::MAX),
            found: data.len() as u64,
        });
    }
    let prefix = header_bytes(T::DESCR, shape).ok_or_else(|| {
        FileError::write(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the shape has too many dimensions",
            ),
        )
    })?;
    write_atomically(path, |out| {
        out.write_all(&prefix)?;
        data.iter().try_for_each(|&x| x.write_le(out))
    })
}

/// The magic, version, length and padded header for a C-order array of element type `descr`
/// and `shape`, or `None` if the header would pass the format's 4 GiB limit.
fn header_bytes(descr: &str, shape: &[u64]) -> Option<Vec<u8>> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let tuple = match dims.as_slice() {
        [one] => format!("({one},)"),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
    let padded = |prefix_len: usize| {
        let unpadded = prefix_len + dict.len() + 1;
        dict.len() + 1 + (64 - unpadded % 64) % 64
    };
    let mut out = MAGIC.to_vec();
    let header_len = match u16::try_from(padded(10)) {
        Ok(len) => {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&len.to_le_bytes());
            padded(10)
        }
        Err(_) => {
            let len = u32::try_from(padded(12)).ok()?;
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&len.to_le_bytes());
            padded(12)
        }
    };
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + header_len - dict.len() - 1, b' ');
    out.push(b'\n');
    Some(out)
}

/// The three entries of a `.npy` header dict.
#[derive(Debug, PartialEq)]
struct Dict {
    descr: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

/// Parses `{'descr': <str>, 'fortran_order': <bool>, 'shape': <tuple of ints>}` with the keys
/// in any order, each exactly once, an optional trailing comma, and only whitespace after the
/// closing brace.
fn parse_dict(text: &[u8]) -> Result<Dict, String> {
    let mut p = Parser { text, pos: 0 };
    p.skip_ws();
    p.expect(b'{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key_at = p.pos;
        let key = p.string()?;
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let duplicate = match key.as_str() {
            "descr" => {
                if p.peek() == Some(b'[') {
                    return Err(format!(
                        "structured dtypes (a list as `descr`, at byte {}) are not supported",
                        p.pos
                    ));
                }
                descr.replace(p.string()?).is_some()
            }
            "fortran_order" => fortran_order.replace(p.boolean()?).is_some(),
            "shape" => shape.replace(p.tuple()?).is_some(),
            _ => return Err(format!("unexpected key '{key}' at byte {key_at}")),
        };
        if duplicate {
            return Err(format!("key '{key}' appears twice (at byte {key_at})"));
        }
        p.skip_ws();
        if !p.eat(b',') {
            p.skip_ws();
            p.expect(b'}')?;
            break;
        }
    }
    p.skip_ws();
    if p.pos < text.len() {
        return Err(format!(
            "unexpected {} after the closing brace",
            p.describe_here()
        ));
    }
    let missing = |key: &str| format!("the key '{key}' is missing");
    Ok(Dict {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
    })
}

/// A cursor over the header text; errors say what was found and at which byte.
struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn eat_word(&mut self, word: &[u8]) -> bool {
        let found = self.text[self.pos..].starts_with(word);
        if found {
            self.pos += word.len();
        }
        found
    }

    /// The byte at the cursor, for error messages.
    fn describe_here(&self) -> String {
        match self.peek() {
            None => "end of header".into(),
            Some(b) if b.is_ascii_graphic() => format!("`{}` at byte {}", b as char, self.pos),
            Some(b) => format!("byte 0x{b:02x} at byte {}", self.pos),
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(format!(
                "expected `{}` but found {}",
                byte as char,
                self.describe_here()
            ))
        }
    }

    /// A quoted string without escapes: `'...'` or `"..."`, printable ASCII only.
    fn string(&mut self) -> Result<String, String> {
        let Some(quote @ (b'\'' | b'"')) = self.peek() else {
            return Err(format!(
                "expected a quoted string but found {}",
                self.describe_here()
            ));
        };
        self.pos += 1;
        let start = self.pos;
        loop {
            match self.peek() {
                Some(b) if b == quote => break,
                Some(b'\\') => return Err(format!("escape sequence at byte {}", self.pos)),
                Some(b' '..=b'~') => self.pos += 1,
                _ => {
                    return Err(format!(
                        "unterminated or non-ASCII string starting at byte {}",
                        start - 1
                    ))
                }
            }
        }
        let s = String::from_utf8_lossy(&self.text[start..self.pos]).into_owned();
        self.pos += 1;
        Ok(s)
    }

    /// `True` or `False`.
    fn boolean(&mut self) -> Result<bool, String> {
        if self.eat_word(b"True") {
            Ok(true)
        } else if self.eat_word(b"False") {
            Ok(false)
        } else {
            Err(format!(
                "expected `True` or `False` but found {}",
                self.describe_here()
            ))
        }
    }

    /// A tuple of non-negative integers: `()`, `(5,)`, `(3, 28, 28)`, trailing comma allowed;
    /// `(5)` is not a tuple.
    fn tuple(&mut self) -> Result<Vec<u64>, String> {
        let open = self.pos;
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            dims.push(self.integer()?);
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(b')')?;
                if dims.len() == 1 {
                    return Err(format!(
                        "the shape at byte {open} is a number in parentheses, not a tuple \
                         (a 1-D shape is written `({},)`)",
                        dims[0]
                    ));
                }
                return Ok(dims);
            }
        }
    }

    /// A decimal integer without sign or leading zeros; a Python 2 `L` suffix is allowed.
    fn integer(&mut self) -> Result<u64, String> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if digits.is_empty() {
            self.pos = start;
            return Err(format!(
                "expected a dimension but found {}",
                self.describe_here()
            ));
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(format!("dimension with a leading zero at byte {start}"));
        }
        let value = digits.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        let _ = self.eat(b'L');
        value.ok_or_else(|| format!("dimension at byte {start} is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A `.npy` file with the given version, raw header text (padded as NumPy does) and data.
    fn npy_bytes(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let prefix_len = if version == 1 { 10 } else { 12 };
        let mut header = dict.as_bytes().to_vec();
        while (prefix_len + header.len() + 1) % 64 != 0 {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[version, 0]);
        if version == 1 {
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out
    }

    fn write(dir: &tempfile::TempDir, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join("a.npy");
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let data: Vec<f32> = (0..3 * 28 * 28).map(|i| i as f32 * 0.5 - 7.0).collect();
        write_npy_f32(&path, &[3, 28, 28], &data).unwrap();
        let header = npy_header(&path).unwrap();
        assert_eq!(
            header,
            NpyHeader {
                dtype: NpyDtype::F32,
                shape: vec![3, 28, 28],
                fortran_order: false,
                data_offset: 128,
            }
        );
        assert_eq!(header.data_offset % 64, 0);
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![3, 28, 28], data));
        // The exact bytes NumPy writes for this header.
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[10..]
            .starts_with(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 28, 28), }"));
        assert_eq!(bytes[127], b'\n');
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn arrays_with_nan_or_infinity_are_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        write_npy_f32(&path, &[2, 2], &[0.0, f32::NAN, 1.0, f32::INFINITY]).unwrap();
        let err = read_npy(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NonFinite {
                    count: 2,
                    first: 1,
                    ..
                }
            ),
            "{err}"
        );
        // f64 data beyond f32's range is infinite once read as f32, and fine as f64.
        let values = [1.0f64, 1e300];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = write(
            &dir,
            &npy_bytes(
                1,
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                &data,
            ),
        );
        let err = read_npy(&path, DType::F32, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("--dtype f64"), "{err}");
        assert!(read_npy(&path, DType::F64, &Device::Cpu).is_ok());
    }

    #[test]
    fn int64_tensors_are_written_as_i8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.npy");
        let values = vec![0i64, 7, -3, 9_999, 1 << 40];
        let t = Tensor::from_vec(values.clone(), (5,), &Device::Cpu).unwrap();
        write_npy(&path, &t).unwrap();
        let header = npy_header(&path).unwrap();
        assert_eq!((header.dtype, header.shape), (NpyDtype::I64, vec![5]));
        let (_, read) = read_npy_f64(&path).unwrap();
        let want: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        assert_eq!(read, want);
    }

    #[test]
    fn writer_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        for shape in [vec![], vec![5], vec![1, 2, 3, 4]] {
            let n = shape.iter().product::<u64>() as usize;
            let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
            write_npy_f32(&path, &shape, &data).unwrap();
            assert_eq!(read_npy_f32(&path).unwrap(), (shape, data));
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(5).any(|w| w == b"(1, 2"));
        write_npy_f32(&path, &[5], &[1.0; 5]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(4).any(|w| w == b"(5,)"));
        let err = write_npy_f32(&path, &[2, 3], &[0.0; 5]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "`{}`: shape [2, 3] holds 6 values but 5 were given",
                path.display()
            )
        );
        // Missing folders are created; a file in the way of one is an error.
        let nested = dir.path().join("new/dir/x.npy");
        write_npy_f32(&nested, &[1], &[0.5]).unwrap();
        assert_eq!(read_npy_f32(&nested).unwrap(), (vec![1], vec![0.5]));
        let err = write_npy_f32(&path.join("x.npy"), &[1], &[0.0]).unwrap_err();
        assert!(matches!(err, FileError::Write { .. }), "{err}");
    }

    #[test]
    fn hand_built_v1_and_v2_headers() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let path = write(&dir, &npy_bytes(1, dict, &data));
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![2], vec![1.5, -2.0]));
        let path = write(&dir, &npy_bytes(2, dict, &data));
        let header = npy_header(&path).unwrap();
        assert_eq!(header.data_offset, 128);
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![2], vec![1.5, -2.0]));
        let path = write(&dir, &npy_bytes(3, dict, &data));
        assert_eq!(npy_header(&path).unwrap().shape, vec![2]);
        // Keys in another order, double quotes, no trailing comma, Python 2 longs.
        let dict = r#"{"shape": (1L, 2L), "fortran_order": False, "descr": "<f4"}"#;
        let path = write(&dir, &npy_bytes(1, dict, &data));
        assert_eq!(npy_header(&path).unwrap().shape, vec![1, 2]);
        // A scalar.
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (), }";
        let path = write(&dir, &npy_bytes(1, dict, &2.25f64.to_le_bytes()));
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![], vec![2.25]));
    }

    #[test]
    fn every_dtype_converts() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, Vec<u8>, Vec<f32>); 5] = [
            ("|u1", vec![0, 128, 255], vec![0.0, 128.0, 255.0]),
            ("|b1", vec![0, 1, 0], vec![0.0, 1.0, 0.0]),
            (
                "<i4",
                [-3i32, 0, 7].iter().flat_map(|x| x.to_le_bytes()).collect(),
                vec![-3.0, 0.0, 7.0],
            ),
            (
                "<i8",
                [-3i64, 0, 1 << 40]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                vec![-3.0, 0.0, (1u64 << 40) as f32],
            ),
            (
                "<f8",
                [0.5f64, -1.0, 3.0]
                    .iter()
                    .flat_map(|x| x.to_le_bytes())
                    .collect(),
                vec![0.5, -1.0, 3.0],
            ),
        ];
        for (descr, data, want) in cases {
            let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (3,), }}");
            let path = write(&dir, &npy_bytes(1, &dict, &data));
            let header = npy_header(&path).unwrap();
            assert_eq!(header.dtype.as_str(), descr);
            assert_eq!(read_npy_f32(&path).unwrap(), (vec![3], want), "{descr}");
        }
    }

    #[test]
    fn big_shapes_read_the_header_only() {
        let dir = tempfile::tempdir().unwrap();
        // A 10 GB array, stored as a sparse file: only the header is read.
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (50000, 50000), }";
        let bytes = npy_bytes(1, dict, &[]);
        let path = write(&dir, &bytes);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(bytes.len() as u64 + 50_000 * 50_000 * 4)
            .unwrap();
        let header = npy_header(&path).unwrap();
        assert_eq!(header.shape, vec![50000, 50000]);
        assert_eq!(header.data_len(), 10_000_000_000);
        // The same header without its data is truncated.
        let path = write(&dir, &bytes);
        let err = npy_header(&path).unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NpyTruncated {
                    expected: 10_000_000_000,
                    found: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(read_npy_f32(&path).is_err());
        // Shapes whose size overflows.
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
        let err = npy_header(&write(&dir, &npy_bytes(1, dict, &[]))).unwrap_err();
        assert!(
            err.to_string().contains("more bytes than a file can hold"),
            "{err}"
        );
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }";
        let err = npy_header(&write(&dir, &npy_bytes(1, dict, &[]))).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );

        let mut bad_magic = good.clone();
        bad_magic[1] = b'X';
        let err = npy_header(&write(&dir, &bad_magic)).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not start with the .npy magic"),
            "{err}"
        );

        let err = npy_header(&write(&dir, &good[..5])).unwrap_err();
        assert!(
            err.to_string().contains("too short to be a .npy file"),
            "{err}"
        );

        let err = npy_header(&write(&dir, &good[..9])).unwrap_err();
        assert!(
            err.to_string().contains("ends inside the header length"),
            "{err}"
        );

        let err = npy_header(&write(&dir, &good[..40])).unwrap_err();
        assert!(
            err.to_string().contains("runs past the end of the file"),
            "{err}"
        );

        let mut version = good.clone();
        version[6] = 4;
        let err = npy_header(&write(&dir, &version)).unwrap_err();
        assert!(
            err.to_string().contains("unsupported format version 4.0"),
            "{err}"
        );

        let err = npy_header(&write(&dir, &good[..good.len() - 1])).unwrap_err();
        assert!(matches!(
            err,
            FileError::NpyTruncated {
                expected: 4,
                found: 3,
                ..
            }
        ));

        let missing = dir.path().join("missing.npy");
        assert!(matches!(npy_header(&missing), Err(FileError::NotFound(p)) if p == missing));
        assert!(matches!(
            read_npy_f32(&missing),
            Err(FileError::NotFound(_))
        ));
    }

    #[test]
    fn unsupported_dtype_and_fortran_order() {
        let dir = tempfile::tempdir().unwrap();
        let dict = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
        let path = write(&dir, &npy_bytes(1, dict, &[0; 8]));
        let err = npy_header(&path).unwrap_err();
        assert!(matches!(&err, FileError::NpyDtype { descr, .. } if descr == "<c8"));
        assert!(
            err.to_string().contains("unsupported .npy dtype `<c8`"),
            "{err}"
        );

        let dict = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }";
        let path = write(&dir, &npy_bytes(1, dict, &[0; 4]));
        assert!(matches!(npy_header(&path), Err(FileError::NpyDtype { .. })));

        // Fortran order: a [2, 3, 2] array stored first index fastest reads as NumPy reads it.
        let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 2), }";
        let row_major: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut stored = Vec::new();
        for k in 0..2 {
            for j in 0..3 {
                for i in 0..2 {
                    stored.extend(row_major[i * 6 + j * 2 + k].to_le_bytes());
                }
            }
        }
        let path = write(&dir, &npy_bytes(1, dict, &stored));
        assert!(npy_header(&path).unwrap().fortran_order);
        assert_eq!(read_npy_f32(&path).unwrap(), (vec![2, 3, 2], row_major));
    }

    #[test]
    fn strict_dict_parser() {
        let ok =
            parse_dict(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 28, 28), }  \n");
        assert_eq!(
            ok,
            Ok(Dict {
                descr: "<f4".into(),
                fortran_order: false,
                shape: vec![3, 28, 28]
            })
        );
        let bad: [(&str, &str); 14] = [
            ("", "expected `{`"),
            (
                "{'descr': '<f4', 'fortran_order': False}",
                "'shape' is missing",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3)}",
                "not a tuple",
            ),
            (
                "{'descr': '<f4', 'fortran_order': false, 'shape': ()}",
                "`True` or `False`",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}",
                "unexpected key 'x'",
            ),
            ("{'descr': '<f4', 'descr': '<f4'}", "appears twice"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
                "expected a dimension",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (03,)}",
                "leading zero",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,),,}",
                "quoted string",
            ),
            ("{'descr': '<f4' 'fortran_order': False}", "expected `}`"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': ()} x",
                "after the closing brace",
            ),
            (
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}",
                "structured",
            ),
            (
                "{'descr': '<f4\\n', 'fortran_order': False, 'shape': ()}",
                "escape",
            ),
            ("{'descr': '<f4", "unterminated"),
        ];
        for (text, want) in bad {
            match parse_dict(text.as_bytes()) {
                Err(e) => assert!(e.contains(want), "{text}: {e}"),
                Ok(d) => panic!("{text} parsed as {d:?}"),
            }
        }
    }

    #[test]
    fn f64_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        // Values that f32 cannot hold.
        let data: Vec<f64> = (0..12).map(|i| 0.1 * i as f64 + 1e-12 - 0.3).collect();
        write_npy_f64(&path, &[3, 4], &data).unwrap();
        assert_eq!(npy_header(&path).unwrap().dtype, NpyDtype::F64);
        assert_eq!(read_npy_f64(&path).unwrap(), (vec![3, 4], data.clone()));
        let t = read_npy(&path, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 4]);
        assert_eq!(t.flatten_all().unwrap().to_vec1::<f64>().unwrap(), data);
        // Tensor round trip, f64 stays `<f8`.
        let out = dir.path().join("sub/y.npy");
        write_npy(&out, &t).unwrap();
        assert_eq!(npy_header(&out).unwrap().dtype, NpyDtype::F64);
        assert_eq!(read_npy_f64(&out).unwrap(), (vec![3, 4], data.clone()));
        // Read as f32: each value rounded once.
        let t32 = read_npy(&path, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t32.dtype(), DType::F32);
        let want: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        assert_eq!(t32.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }

    #[test]
    fn tensors_of_other_dtypes_and_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        let x = Tensor::new(&[[1.5f32, -2.0, 3.25]], &Device::Cpu).unwrap();
        write_npy(&path, &x).unwrap();
        assert_eq!(npy_header(&path).unwrap().dtype, NpyDtype::F32);
        assert_eq!(
            read_npy_f32(&path).unwrap(),
            (vec![1, 3], vec![1.5, -2.0, 3.25])
        );
        // f32 data read as f64 is exact.
        let t = read_npy(&path, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(t.to_vec2::<f64>().unwrap(), vec![vec![1.5, -2.0, 3.25]]);
        // A scalar; integer data read as floats.
        let scalar = Tensor::new(2.5f64, &Device::Cpu).unwrap();
        write_npy(&path, &scalar).unwrap();
        let t = read_npy(&path, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[] as &[usize]);
        assert_eq!(t.to_scalar::<f32>().unwrap(), 2.5);
        let dict = "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }";
        let ints: Vec<u8> = [-3i64, 1 << 53]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let path = write(&dir, &npy_bytes(1, dict, &ints));
        let t = read_npy(&path, DType::F64, &Device::Cpu).unwrap();
        assert_eq!(t.to_vec1::<f64>().unwrap(), vec![-3.0, 9007199254740992.0]);
        let err = read_npy(&path, DType::U32, &Device::Cpu).unwrap_err();
        assert!(matches!(err, FileError::NotFloat { .. }), "{err}");
    }

    #[test]
    fn random_bytes_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = npy_bytes(
            1,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &[0; 24],
        );
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = good.clone();
            let at = (state as usize) % bytes.len();
            bytes[at] = (state >> 40) as u8;
            bytes.truncate((state >> 20) as usize % (bytes.len() + 1));
            let path = write(&dir, &bytes);
            let _ = read_npy_f32(&path);
        }
    }
}
