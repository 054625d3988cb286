//! The zip archives `torch.save` writes, read over a memory map.
//!
//! A PyTorch checkpoint (torch >= 1.6) is a zip archive of STORED (uncompressed) entries:
//! `<folder>/data.pkl` (the pickled object), `<folder>/data/<key>` (one raw little-endian storage
//! per key) and a few small metadata entries. This reader handles exactly that much of zip: it
//! finds the end-of-central-directory record by scanning backwards for its signature (so a
//! trailing comment is fine), follows the zip64 locator when there is one (torch 2.x always
//! writes one), reads the central directory from the offset the end record states, and takes
//! each entry's data start from its local header, whose extra field may differ from the
//! central one. Compressed or encrypted entries are listed, and refused by name when read.
//!
//! It exists because the `zip` crate candle uses (9.8.2) first guesses the central directory's
//! start as "end record offset minus directory size". With torch's 76-byte zip64 records between
//! the two, that guess lands on the second directory entry whenever the first entry is 76 bytes
//! long, i.e. whenever the archive's folder name has 21 characters, and the archive is rejected.
//!
//! Entries are slices of the map, so a storage is copied once, into its tensor. Every offset
//! and length is checked: a truncated or corrupt file is an error, never a panic.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

use memmap2::Mmap;

/// `PK\x05\x06`: the classic end-of-central-directory record.
const EOCD_SIG: u32 = 0x0605_4b50;
/// `PK\x06\x07`: the zip64 end-of-central-directory locator.
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
/// `PK\x06\x06`: the zip64 end-of-central-directory record.
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
/// `PK\x01\x02`: a central directory file header.
const CENTRAL_SIG: u32 = 0x0201_4b50;
/// `PK\x03\x04`: a local file header.
const LOCAL_SIG: u32 = 0x0403_4b50;

/// Fixed sizes of the records, in bytes.
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;

/// The longest comment a classic end record can announce.
const MAX_COMMENT: usize = u16::MAX as usize;

/// The extra-field id of zip64 sizes and offsets.
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// A 32-bit field saying "the real value is in the zip64 extra field".
const SATURATED: u32 = u32::MAX;

/// Why an archive cannot be read. The messages say what is wrong, not which file: the caller
/// knows the path.
#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    /// The file cannot be opened or mapped.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No end-of-central-directory record: this is not a zip archive.
    #[error("not a zip archive (no end-of-central-directory record)")]
    NotZip,
    /// A record is cut off, points outside the file or has a wrong signature.
    #[error("corrupt or truncated zip archive: {0}")]
    Corrupt(String),
    /// An entry is compressed; torch writes stored entries only.
    #[error(
        "entry `{name}` is compressed (method {method}); PyTorch checkpoints store entries \
         uncompressed"
    )]
    Compressed {
        /// The entry.
        name: String,
        /// The zip compression method (8 is deflate).
        method: u16,
    },
    /// An entry is encrypted.
    #[error("entry `{name}` is encrypted")]
    Encrypted {
        /// The entry.
        name: String,
    },
    /// Two entries have the same name.
    #[error("entry `{name}` appears twice")]
    Duplicate {
        /// The entry.
        name: String,
    },
}

/// Shorthand for a [`ZipError::Corrupt`].
fn corrupt(what: impl Into<String>) -> ZipError {
    ZipError::Corrupt(what.into())
}

/// One entry of the archive: its name and where its data lies in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's path inside the archive, e.g. `archive/data/0`.
    pub name: String,
    /// The entry's bytes as a range of the file, or why they cannot be read as they are.
    pub data: Result<Range<usize>, Unreadable>,
}

/// Why an entry's bytes are not its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Compressed with this zip method (8 is deflate).
    Compressed(u16),
    /// Encrypted.
    Encrypted,
}

impl Entry {
    /// The entry's bytes in `file`, or the error that refuses them.
    fn bytes<'a>(&self, file: &'a [u8]) -> Result<&'a [u8], ZipError> {
        let name = self.name.clone();
        match &self.data {
            Ok(range) => file
                .get(range.clone())
                .ok_or_else(|| corrupt(format!("entry `{name}` is outside the file"))),
            Err(Unreadable::Compressed(method)) => Err(ZipError::Compressed {
                name,
                method: *method,
            }),
            Err(Unreadable::Encrypted) => Err(ZipError::Encrypted { name }),
        }
    }
}

/// A memory-mapped torch zip archive.
pub struct TorchZip {
    /// The whole file.
    map: Mmap,
    /// The entries in central-directory order.
    entries: Vec<Entry>,
    /// Entry index by name.
    index: HashMap<String, usize>,
    /// How many times [`TorchZip::entry`] was called (so tests can see storages are read once).
    lookups: Cell<usize>,
}

impl TorchZip {
    /// Maps `path` and reads its central directory.
    pub fn open(path: &Path) -> Result<Self, ZipError> {
        let file = File::open(path)?;
        Self::from_map(map_file(&file)?)
    }

    /// Reads the central directory of the archive in `map`.
    fn from_map(map: Mmap) -> Result<Self, ZipError> {
        let entries = parse_entries(&map)?;
        let mut index = HashMap::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            if index.insert(entry.name.clone(), i).is_some() {
                return Err(ZipError::Duplicate {
                    name: entry.name.clone(),
                });
            }
        }
        Ok(Self {
            map,
            entries,
            index,
            lookups: Cell::new(0),
        })
    }

    /// The entries in central-directory order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The bytes of the entry called `name`, if there is one; an error if it is compressed
    /// or encrypted.
    pub fn entry(&self, name: &str) -> Result<Option<&[u8]>, ZipError> {
        self.lookups.set(self.lookups.get() + 1);
        match self.index.get(name).and_then(|&i| self.entries.get(i)) {
            Some(entry) => entry.bytes(&self.map).map(Some),
            None => Ok(None),
        }
    }

    /// How many times [`TorchZip::entry`] has been called.
    #[cfg(test)]
    pub fn lookups(&self) -> usize {
        self.lookups.get()
    }
}

/// Maps `file` read-only.
#[allow(unsafe_code)]
fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the map is read-only and lives only while one checkpoint is being read (tensors
    // are copied out of it). memmap2 documents that another process truncating or rewriting
    // the file meanwhile is undefined behaviour; like every mmap-based weights loader
    // (candle's safetensors loader included), we leave it to the caller not to modify a
    // checkpoint while it is being loaded.
    unsafe { Mmap::map(file) }
}

/// Reads the entries of the stored zip archive `bytes`.
pub fn parse_entries(bytes: &[u8]) -> Result<Vec<Entry>, ZipError> {
    let directory = find_directory(bytes)?;
    read_directory(bytes, &directory)
}

/// Where the central directory is, as the end records state it.
#[derive(Debug, Clone, Copy)]
struct Directory {
    /// Offset of the first central header.
    offset: u64,
    /// Size of the whole directory, in bytes.
    size: u64,
    /// Number of entries.
    count: u64,
}

/// Reads the end records: the classic one, then the zip64 one when a locator precedes it.
fn find_directory(bytes: &[u8]) -> Result<Directory, ZipError> {
    let eocd = find_eocd(bytes).ok_or(ZipError::NotZip)?;
    match eocd.checked_sub(ZIP64_LOCATOR_LEN) {
        Some(locator) if le_u32(bytes, locator) == Some(ZIP64_LOCATOR_SIG) => {
            zip64_directory(bytes, locator)
        }
        _ => classic_directory(bytes, eocd),
    }
}

/// The offset of the classic end record, scanning backwards from the end of the file.
///
/// A record whose comment reaches exactly to the end of the file is preferred; failing that
/// (bytes appended after the archive), the last record whose comment fits in the file.
fn find_eocd(bytes: &[u8]) -> Option<usize> {
    let last = bytes.len().checked_sub(EOCD_LEN)?;
    let first = last.saturating_sub(MAX_COMMENT);
    let mut fallback = None;
    for pos in (first..=last).rev() {
        if le_u32(bytes, pos) != Some(EOCD_SIG) {
            continue;
        }
        let end = pos + EOCD_LEN + usize::from(le_u16(bytes, pos + 20)?);
        if end == bytes.len() {
            return Some(pos);
        }
        if end < bytes.len() && fallback.is_none() {
            fallback = Some(pos);
        }
    }
    fallback
}

/// The directory as the classic end record at `eocd` states it.
fn classic_directory(bytes: &[u8], eocd: usize) -> Result<Directory, ZipError> {
    let field = |at: usize| le_u32(bytes, eocd + at).ok_or_else(|| corrupt("end record cut off"));
    let count = le_u16(bytes, eocd + 10).ok_or_else(|| corrupt("end record cut off"))?;
    Ok(Directory {
        offset: u64::from(field(16)?),
        size: u64::from(field(12)?),
        count: u64::from(count),
    })
}

/// The directory as the zip64 end record named by the locator at `locator` states it.
fn zip64_directory(bytes: &[u8], locator: usize) -> Result<Directory, ZipError> {
    let record = le_u64(bytes, locator + 8).ok_or_else(|| corrupt("zip64 locator cut off"))?;
    let record = usize::try_from(record)
        .ok()
        .filter(|&r| {
            r.checked_add(ZIP64_EOCD_LEN)
                .is_some_and(|end| end <= bytes.len())
        })
        .ok_or_else(|| {
            corrupt(format!(
                "zip64 end record offset {record} is outside the file"
            ))
        })?;
    if le_u32(bytes, record) != Some(ZIP64_EOCD_SIG) {
        return Err(corrupt(format!("no zip64 end record at offset {record}")));
    }
    let field =
        |at: usize| le_u64(bytes, record + at).ok_or_else(|| corrupt("zip64 end record cut off"));
    Ok(Directory {
        offset: field(48)?,
        size: field(40)?,
        count: field(32)?,
    })
}

/// Reads `directory.count` central headers from the directory's stated offset.
fn read_directory(bytes: &[u8], directory: &Directory) -> Result<Vec<Entry>, ZipError> {
    let start = to_usize(directory.offset, "central directory offset")?;
    let end = start
        .checked_add(to_usize(directory.size, "central directory size")?)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| corrupt("the central directory reaches past the end of the file"))?;
    let directory_bytes = &bytes[start..end];
    let capacity = usize::try_from(directory.count)
        .unwrap_or(0)
        .min(directory_bytes.len() / CENTRAL_LEN);
    let mut entries = Vec::with_capacity(capacity);
    let mut pos = 0;
    for i in 0..directory.count {
        let (entry, next) = read_central_header(bytes, directory_bytes, pos)
            .map_err(|e| with_context(e, &format!("central directory entry {i}")))?;
        entries.push(entry);
        pos = next;
    }
    Ok(entries)
}

/// Prefixes a [`ZipError::Corrupt`] message with where it happened.
fn with_context(error: ZipError, context: &str) -> ZipError {
    match error {
        ZipError::Corrupt(what) => ZipError::Corrupt(format!("{context}: {what}")),
        other => other,
    }
}

/// What a central header says about its entry, before its local header is read.
struct CentralHeader {
    /// The entry's name.
    name: String,
    /// General-purpose flags (bit 0: encrypted).
    flags: u16,
    /// Compression method (0: stored).
    method: u16,
    /// Compressed size.
    compressed: u64,
    /// Uncompressed size.
    uncompressed: u64,
    /// Offset of the local header.
    local: u64,
}

/// Reads the central header at `pos` of `directory` and its entry's local header in `bytes`.
/// Returns the entry and the position of the next central header.
fn read_central_header(
    bytes: &[u8],
    directory: &[u8],
    pos: usize,
) -> Result<(Entry, usize), ZipError> {
    let cut = || corrupt("header cut off");
    if le_u32(directory, pos).ok_or_else(cut)? != CENTRAL_SIG {
        return Err(corrupt("bad header signature"));
    }
    let name_len = usize::from(le_u16(directory, pos + 28).ok_or_else(cut)?);
    let extra_len = usize::from(le_u16(directory, pos + 30).ok_or_else(cut)?);
    let comment_len = usize::from(le_u16(directory, pos + 32).ok_or_else(cut)?);
    let name_start = pos + CENTRAL_LEN;
    let name = directory
        .get(name_start..name_start + name_len)
        .ok_or_else(cut)?;
    let extra = directory
        .get(name_start + name_len..name_start + name_len + extra_len)
        .ok_or_else(cut)?;
    let mut header = CentralHeader {
        name: String::from_utf8_lossy(name).into_owned(),
        flags: le_u16(directory, pos + 8).ok_or_else(cut)?,
        method: le_u16(directory, pos + 10).ok_or_else(cut)?,
        compressed: u64::from(le_u32(directory, pos + 20).ok_or_else(cut)?),
        uncompressed: u64::from(le_u32(directory, pos + 24).ok_or_else(cut)?),
        local: u64::from(le_u32(directory, pos + 42).ok_or_else(cut)?),
    };
    apply_zip64_extra(&mut header, extra)?;
    let next = name_start + name_len + extra_len + comment_len;
    if next > directory.len() {
        return Err(cut());
    }
    Ok((locate_data(bytes, header)?, next))
}

/// Replaces saturated 32-bit sizes and offset by their values in the zip64 extra field.
fn apply_zip64_extra(header: &mut CentralHeader, extra: &[u8]) -> Result<(), ZipError> {
    let Some(mut field) = find_extra(extra, ZIP64_EXTRA_ID) else {
        return Ok(());
    };
    let saturated = |value: u64| value == u64::from(SATURATED);
    for value in [
        &mut header.uncompressed,
        &mut header.compressed,
        &mut header.local,
    ] {
        if saturated(*value) {
            *value = le_u64(field, 0).ok_or_else(|| corrupt("zip64 extra field too short"))?;
            field = &field[8..];
        }
    }
    Ok(())
}

/// The data of the extra field with id `id` in the extra block `extra`, if present.
fn find_extra(mut extra: &[u8], id: u16) -> Option<&[u8]> {
    while extra.len() >= 4 {
        let len = usize::from(le_u16(extra, 2)?);
        let data = extra.get(4..4 + len)?;
        if le_u16(extra, 0)? == id {
            return Some(data);
        }
        extra = &extra[4 + len..];
    }
    None
}

/// Finds a stored entry's data from its local header; a compressed or encrypted entry is
/// listed as such.
fn locate_data(bytes: &[u8], header: CentralHeader) -> Result<Entry, ZipError> {
    let name = header.name;
    if header.flags & 1 != 0 {
        return Ok(Entry {
            name,
            data: Err(Unreadable::Encrypted),
        });
    }
    if header.method != 0 {
        return Ok(Entry {
            name,
            data: Err(Unreadable::Compressed(header.method)),
        });
    }
    if header.compressed != header.uncompressed {
        return Err(corrupt(format!(
            "entry `{name}` is stored but its two sizes differ"
        )));
    }
    let at = |what: &str| corrupt(format!("entry `{name}`: {what}"));
    let local = to_usize(header.local, "local header offset")?;
    if le_u32(bytes, local) != Some(LOCAL_SIG) {
        return Err(at("no local header where the central directory says"));
    }
    let name_len = le_u16(bytes, local + 26).ok_or_else(|| at("local header cut off"))?;
    let extra_len = le_u16(bytes, local + 28).ok_or_else(|| at("local header cut off"))?;
    let start = local + LOCAL_LEN + usize::from(name_len) + usize::from(extra_len);
    let end = usize::try_from(header.compressed)
        .ok()
        .and_then(|size| start.checked_add(size))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| at("data reaches past the end of the file"))?;
    Ok(Entry {
        name,
        data: Ok(start..end),
    })
}

/// `value` as a `usize`, or a corrupt-archive error naming `what`.
fn to_usize(value: u64, what: &str) -> Result<usize, ZipError> {
    usize::try_from(value).map_err(|_| corrupt(format!("{what} {value} does not fit in memory")))
}

/// The little-endian `u16` at `at`, if the bytes are there.
fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The little-endian `u32` at `at`, if the bytes are there.
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The little-endian `u64` at `at`, if the bytes are there.
fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// How [`write_zip`] lays out an archive.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Layout {
        /// Write a zip64 end record and locator before the classic end record, as torch 2.x does.
        pub zip64: bool,
        /// Put sizes and offsets in zip64 extra fields, saturating the 32-bit ones.
        pub zip64_extra: bool,
        /// The archive comment.
        pub comment: Vec<u8>,
        /// Bytes of padding extra field in each local header (torch aligns data this way).
        pub local_extra: usize,
        /// Bytes of padding extra field in each central header.
        pub central_extra: usize,
        /// The compression method written for every entry.
        pub method: u16,
        /// The general-purpose flags written for every entry.
        pub flags: u16,
    }

    /// A padding extra field of `len` bytes in all (0 or at least 4).
    fn padding(len: usize) -> Vec<u8> {
        if len == 0 {
            return Vec::new();
        }
        let mut field = 0x4246u16.to_le_bytes().to_vec();
        field.extend_from_slice(&u16::try_from(len - 4).unwrap().to_le_bytes());
        field.resize(len, 0);
        field
    }

    /// A minimal stored-zip writer: local headers and data, central directory, optional zip64
    /// end record and locator, classic end record and comment. CRCs are left 0 (not checked).
    pub(crate) fn write_zip(entries: &[(&str, &[u8])], layout: &Layout) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        let u16_ = |v: usize| u16::try_from(v).unwrap().to_le_bytes();
        let u32_ = |v: usize| u32::try_from(v).unwrap().to_le_bytes();
        for (name, data) in entries {
            let local = out.len();
            out.extend_from_slice(&LOCAL_SIG.to_le_bytes());
            out.extend_from_slice(&[20, 0]);
            out.extend_from_slice(&layout.flags.to_le_bytes());
            out.extend_from_slice(&layout.method.to_le_bytes());
            out.extend_from_slice(&[0; 8]); // time, date, crc
            out.extend_from_slice(&u32_(data.len()));
            out.extend_from_slice(&u32_(data.len()));
            out.extend_from_slice(&u16_(name.len()));
            out.extend_from_slice(&u16_(layout.local_extra));
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&padding(layout.local_extra));
            out.extend_from_slice(data);

            let mut extra = Vec::new();
            let (size, offset) = if layout.zip64_extra {
                extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                extra.extend_from_slice(&24u16.to_le_bytes());
                for value in [data.len(), data.len(), local] {
                    extra.extend_from_slice(&(value as u64).to_le_bytes());
                }
                (SATURATED.to_le_bytes(), SATURATED.to_le_bytes())
            } else {
                (u32_(data.len()), u32_(local))
            };
            extra.extend_from_slice(&padding(layout.central_extra));
            central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            central.extend_from_slice(&[20, 0, 20, 0]);
            central.extend_from_slice(&layout.flags.to_le_bytes());
            central.extend_from_slice(&layout.method.to_le_bytes());
            central.extend_from_slice(&[0; 8]); // time, date, crc
            central.extend_from_slice(&size);
            central.extend_from_slice(&size);
            central.extend_from_slice(&u16_(name.len()));
            central.extend_from_slice(&u16_(extra.len()));
            central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
            central.extend_from_slice(&[0; 4]); // external attributes
            central.extend_from_slice(&offset);
            central.extend_from_slice(name.as_bytes());
            central.extend_from_slice(&extra);
        }
        let (cd_offset, cd_size) = (out.len(), central.len());
        out.extend_from_slice(&central);
        if layout.zip64 {
            let record = out.len();
            out.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
            out.extend_from_slice(&44u64.to_le_bytes());
            out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            for value in [entries.len(), entries.len(), cd_size, cd_offset] {
                out.extend_from_slice(&(value as u64).to_le_bytes());
            }
            out.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(record as u64).to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
        }
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&u16_(entries.len()));
        out.extend_from_slice(&u16_(entries.len()));
        out.extend_from_slice(&u32_(cd_size));
        out.extend_from_slice(&u32_(cd_offset));
        out.extend_from_slice(&u16_(layout.comment.len()));
        out.extend_from_slice(&layout.comment);
        out
    }

    /// The data of `entry` in `bytes`.
    fn data<'a>(bytes: &'a [u8], entry: &Entry) -> &'a [u8] {
        entry.bytes(bytes).unwrap()
    }

    /// The archive `bytes`, read from an anonymous map rather than a file.
    pub(crate) fn in_memory(bytes: &[u8]) -> Result<TorchZip, ZipError> {
        let mut map = memmap2::MmapMut::map_anon(bytes.len())?;
        map.copy_from_slice(bytes);
        TorchZip::from_map(map.make_read_only()?)
    }

    /// Two entries named like torch's, with distinct contents.
    fn torch_like(folder: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            (format!("{folder}/data.pkl"), b"\x80\x02}q\x00.".to_vec()),
            (format!("{folder}/data/0"), (0u8..40).collect()),
            (format!("{folder}/byteorder"), b"little".to_vec()),
        ]
    }

    /// Writes `entries` with `layout`, reads them back and checks names and contents.
    fn round_trip(entries: &[(String, Vec<u8>)], layout: &Layout) -> Vec<u8> {
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let bytes = write_zip(&refs, layout);
        let read = parse_entries(&bytes).unwrap();
        assert_eq!(read.len(), entries.len());
        for (entry, (name, contents)) in read.iter().zip(entries) {
            assert_eq!(&entry.name, name);
            assert_eq!(data(&bytes, entry), contents.as_slice());
        }
        bytes
    }

    #[test]
    fn reads_a_21_character_folder_with_zip64_records() {
        let folder = "abcdefghijklmnopqrstu";
        assert_eq!(folder.len(), 21);
        let layout = Layout {
            zip64: true,
            ..Layout::default()
        };
        let bytes = round_trip(&torch_like(folder), &layout);
        // The case zip 9.8.2 gets wrong: the first central header is exactly as long as the
        // zip64 records, so "end record offset minus directory size" lands on the second one.
        let eocd = find_eocd(&bytes).unwrap();
        let directory = find_directory(&bytes).unwrap();
        let guess = eocd - directory.size as usize;
        assert_eq!(
            CENTRAL_LEN + format!("{folder}/data.pkl").len(),
            ZIP64_EOCD_LEN + ZIP64_LOCATOR_LEN
        );
        assert_eq!(le_u32(&bytes, guess), Some(CENTRAL_SIG));
        assert_ne!(guess as u64, directory.offset);
    }

    #[test]
    fn reads_folders_of_other_lengths_with_and_without_zip64() {
        for folder in ["archive", "abcdefghijklmnopqrst", "abcdefghijklmnopqrstuv"] {
            for zip64 in [false, true] {
                round_trip(
                    &torch_like(folder),
                    &Layout {
                        zip64,
                        ..Layout::default()
                    },
                );
            }
        }
    }

    #[test]
    fn reads_an_archive_with_a_trailing_comment() {
        let comment = b"saved by a test; not a PK\x05\x06 record".to_vec();
        for zip64 in [false, true] {
            round_trip(
                &torch_like("archive"),
                &Layout {
                    zip64,
                    comment: comment.clone(),
                    ..Layout::default()
                },
            );
        }
    }

    #[test]
    fn takes_the_data_start_from_the_local_header() {
        let layout = Layout {
            zip64: true,
            local_extra: 61,
            central_extra: 4,
            ..Layout::default()
        };
        round_trip(&torch_like("archive"), &layout);
        let layout = Layout {
            local_extra: 0,
            central_extra: 12,
            ..Layout::default()
        };
        round_trip(&torch_like("archive"), &layout);
    }

    #[test]
    fn reads_sizes_and_offsets_from_zip64_extra_fields() {
        let layout = Layout {
            zip64: true,
            zip64_extra: true,
            central_extra: 8,
            ..Layout::default()
        };
        round_trip(&torch_like("archive"), &layout);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let entries = torch_like("archive");
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        for layout in [
            Layout::default(),
            Layout {
                zip64: true,
                comment: b"c".to_vec(),
                ..Layout::default()
            },
        ] {
            let bytes = write_zip(&refs, &layout);
            for len in 0..bytes.len() {
                assert!(
                    parse_entries(&bytes[..len]).is_err(),
                    "prefix of {len} bytes"
                );
            }
        }
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let entries = torch_like("abcdefghijklmnopqrstu");
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let layout = Layout {
            zip64: true,
            zip64_extra: true,
            ..Layout::default()
        };
        let bytes = write_zip(&refs, &layout);
        for at in 0..bytes.len() {
            for value in [0x00, 0xff, 0x7f] {
                let mut corrupt = bytes.clone();
                corrupt[at] = value;
                if let Ok(entries) = parse_entries(&corrupt) {
                    assert!(entries
                        .iter()
                        .all(|e| e.data.as_ref().map_or(true, |d| d.end <= corrupt.len())));
                }
            }
        }
    }

    #[test]
    fn refuses_a_compressed_entry_by_name() {
        let entries = torch_like("archive");
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let bytes = write_zip(
            &refs,
            &Layout {
                method: 8,
                ..Layout::default()
            },
        );
        let archive = in_memory(&bytes).unwrap();
        assert_eq!(archive.entries().len(), 3, "compressed entries are listed");
        let error = archive.entry("archive/data.pkl").unwrap_err();
        assert!(
            matches!(&error, ZipError::Compressed { name, method: 8 } if name == "archive/data.pkl")
        );
        assert!(
            error
                .to_string()
                .contains("`archive/data.pkl` is compressed"),
            "{error}"
        );
    }

    #[test]
    fn refuses_an_encrypted_entry_by_name() {
        let bytes = write_zip(
            &[("archive/data.pkl", b"x")],
            &Layout {
                flags: 1,
                ..Layout::default()
            },
        );
        let error = in_memory(&bytes)
            .unwrap()
            .entry("archive/data.pkl")
            .unwrap_err();
        assert_eq!(error.to_string(), "entry `archive/data.pkl` is encrypted");
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_not_a_zip() {
        for bytes in [
            &b""[..],
            b"PK",
            b"just some text, long enough to hold an end record",
            &[0x80, 0x02, 0x8a],
        ] {
            assert!(matches!(parse_entries(bytes), Err(ZipError::NotZip)));
        }
    }

    #[test]
    fn opens_a_file_through_a_memory_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.pt");
        let entries = torch_like("w");
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        std::fs::write(
            &path,
            write_zip(
                &refs,
                &Layout {
                    zip64: true,
                    ..Layout::default()
                },
            ),
        )
        .unwrap();
        let archive = TorchZip::open(&path).unwrap();
        assert_eq!(archive.entries().len(), 3);
        assert_eq!(archive.entry("w/data/0").unwrap(), Some(&entries[1].1[..]));
        assert_eq!(archive.entry("w/data/1").unwrap(), None);
        assert_eq!(archive.lookups(), 2);

        std::fs::write(&path, b"").unwrap();
        assert!(matches!(TorchZip::open(&path), Err(ZipError::NotZip)));
        let twice = write_zip(&[("a/x", b"1"), ("a/x", b"2")], &Layout::default());
        std::fs::write(&path, twice).unwrap();
        assert!(
            matches!(TorchZip::open(&path), Err(ZipError::Duplicate { name }) if name == "a/x")
        );
        assert!(matches!(
            TorchZip::open(&dir.path().join("missing.pt")),
            Err(ZipError::Io(_))
        ));
    }
}
