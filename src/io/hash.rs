//! SHA-256 of files: streamed (a 1 GB checkpoint is never held in memory) and remembered, so
//! that verifying weights on every `check`, `run` and `watch` rerun costs one hash per file
//! change, not one per command.
//!
//! A hash is remembered with the file's *stamp*: its size, modification and status-change
//! times (nanoseconds) and inode. Any write to the file changes the status-change time, which
//! no user tool can set back, so a remembered hash is never used for changed contents. Hashes
//! are kept in memory for the process and, for files of at least [`PERSIST_BYTES`], in
//! `sha256.tsv` of the cache folder ([`cache_dir`]), so the next command finds them too. The
//! cache is an optimisation only: when it cannot be read or written the hash is computed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::FileError;

/// Files at least this large have their hash kept in the cache folder between commands;
/// smaller ones hash in a few milliseconds and are remembered for the process only.
pub const PERSIST_BYTES: u64 = 16 << 20;

/// The name of the cache file in [`cache_dir`].
const CACHE_FILE: &str = "sha256.tsv";

/// At most this many entries are kept in the cache file (the most recent ones).
const CACHE_ENTRIES: usize = 4096;

/// What identifies one version of a file's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified_ns: i128,
    changed_ns: i128,
    inode: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        let ns = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(-1, |d| d.as_nanos() as i128)
        };
        #[cfg(unix)]
        let (changed_ns, inode) = {
            use std::os::unix::fs::MetadataExt;
            (
                meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
                meta.ino(),
            )
        };
        #[cfg(not(unix))]
        let (changed_ns, inode) = (-1, 0);
        Stamp {
            len: meta.len(),
            modified_ns: ns(meta.modified()),
            changed_ns,
            inode,
        }
    }
}

/// Hashes remembered by this process, by canonical path.
static MEMORY: Mutex<Option<HashMap<PathBuf, (Stamp, String)>>> = Mutex::new(None);

/// SHA-256 of bytes, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of the file at `path`, as 64 lowercase hex digits: read in 1 MiB pieces, or
/// taken from memory or the cache folder when the file has not changed since it was hashed.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| FileError::read(path, e))?;
    if !meta.is_file() {
        return Err(FileError::Read {
            path: path.to_path_buf(),
            error: std::io::Error::other("not a regular file"),
        });
    }
    let key = std::fs::canonicalize(path).map_err(|e| FileError::read(path, e))?;
    let stamp = Stamp::of(&meta);
    if let Some(hash) = remembered(&key, stamp) {
        return Ok(hash);
    }
    let persist = stamp.len >= PERSIST_BYTES;
    if persist {
        if let Some(hash) = cache_dir().and_then(|d| cached(&d.join(CACHE_FILE), &key, stamp)) {
            remember(&key, stamp, &hash);
            return Ok(hash);
        }
    }
    let hash = stream(path)?;
    // Contents that changed while they were read are not remembered.
    let after = std::fs::metadata(path).map(|m| Stamp::of(&m)).ok();
    if after == Some(stamp) {
        remember(&key, stamp, &hash);
        if persist {
            if let Some(dir) = cache_dir() {
                store(&dir, &key, stamp, &hash);
            }
        }
    }
    Ok(hash)
}

/// Hashes the file's bytes, 1 MiB at a time.
fn stream(path: &Path) -> Result<String, FileError> {
    let mut file = std::fs::File::open(path).map_err(|e| FileError::read(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::read(path, e)),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn remembered(key: &Path, stamp: Stamp) -> Option<String> {
    let memory = MEMORY.lock().ok()?;
    match memory.as_ref()?.get(key) {
        Some((s, hash)) if *s == stamp => Some(hash.clone()),
        _ => None,
    }
}

fn remember(key: &Path, stamp: Stamp, hash: &str) {
    if let Ok(mut memory) = MEMORY.lock() {
        memory
            .get_or_insert_with(HashMap::new)
            .insert(key.to_path_buf(), (stamp, hash.to_string()));
    }
}

/// The cache folder: `$MAPGA_CACHE_DIR`, else `$XDG_CACHE_HOME/mapga`, else
/// `$HOME/.cache/mapga`; `None` when none of them is set.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("MAPGA_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("mapga"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".cache").join("mapga"))
}

/// One line of the cache file: hash, size, mtime, ctime, inode, path (tab-separated; the
/// path last, so it may hold anything but a newline).
fn line(key: &Path, stamp: Stamp, hash: &str) -> Option<String> {
    let path = key.to_str().filter(|p| !p.contains(['\n', '\r']))?;
    Some(format!(
        "{hash}\t{}\t{}\t{}\t{}\t{path}",
        stamp.len, stamp.modified_ns, stamp.changed_ns, stamp.inode
    ))
}

fn parse_line(text: &str) -> Option<(PathBuf, Stamp, String)> {
    let mut fields = text.splitn(6, '\t');
    let hash = fields.next()?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let stamp = Stamp {
        len: fields.next()?.parse().ok()?,
        modified_ns: fields.next()?.parse().ok()?,
        changed_ns: fields.next()?.parse().ok()?,
        inode: fields.next()?.parse().ok()?,
    };
    Some((PathBuf::from(fields.next()?), stamp, hash.to_string()))
}

/// The cache file's entries, oldest first; empty when it cannot be read. Reads at most
/// 4 MiB, so a damaged or hostile cache file cannot make a command slow.
fn entries(file: &Path) -> Vec<(PathBuf, Stamp, String)> {
    let Ok(f) = std::fs::File::open(file) else {
        return Vec::new();
    };
    let mut text = String::new();
    if f.take(4 << 20).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    text.lines().filter_map(parse_line).collect()
}

fn cached(file: &Path, key: &Path, stamp: Stamp) -> Option<String> {
    entries(file)
        .into_iter()
        .rev()
        .find(|(p, s, _)| p == key && *s == stamp)
        .map(|(_, _, h)| h)
}

/// Adds the entry (replacing older ones of the same path) and rewrites the cache file
/// atomically; failures are ignored (the cache is an optimisation).
fn store(dir: &Path, key: &Path, stamp: Stamp, hash: &str) {
    let Some(new) = line(key, stamp, hash) else {
        return;
    };
    let file = dir.join(CACHE_FILE);
    let mut kept: Vec<String> = entries(&file)
        .into_iter()
        .filter(|(p, _, _)| p != key)
        .filter_map(|(p, s, h)| line(&p, s, &h))
        .collect();
    kept.push(new);
    let start = kept.len().saturating_sub(CACHE_ENTRIES);
    let mut text = kept[start..].join("\n");
    text.push('\n');
    let _ = super::atomic::write_bytes(&file, text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_hash_is_the_hash_of_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        // More than one read buffer, not a multiple of it.
        let bytes: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(&bytes));
        // The empty input's well-known digest.
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, b"first").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(b"first"));
        // Same size, rewritten at once: the status-change time or inode still differs.
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&path, b"other").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(b"other"));
    }

    #[test]
    fn the_cache_file_round_trips_and_ignores_damage() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("model.pt");
        let stamp = Stamp {
            len: 1 << 30,
            modified_ns: 1_700_000_000_123_456_789,
            changed_ns: 1_700_000_001_000_000_000,
            inode: 42,
        };
        let hash = "ab".repeat(32);
        store(dir.path(), &key, stamp, &hash);
        let file = dir.path().join(CACHE_FILE);
        assert_eq!(cached(&file, &key, stamp), Some(hash.clone()));
        let moved = Stamp { inode: 43, ..stamp };
        assert_eq!(cached(&file, &key, moved), None);
        // A damaged line is skipped; the good one still counts.
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, format!("garbage\tline\n{text}zz\n")).unwrap();
        assert_eq!(cached(&file, &key, stamp), Some(hash.clone()));
        // Storing again replaces the entry instead of adding a second one.
        store(dir.path(), &key, moved, &"cd".repeat(32));
        assert_eq!(entries(&file).len(), 1);
        assert_eq!(cached(&file, &key, moved), Some("cd".repeat(32)));
    }

    #[test]
    fn folders_and_missing_files_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let err = sha256_file(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let missing = dir.path().join("nope.safetensors");
        assert!(matches!(sha256_file(&missing), Err(FileError::NotFound(_))));
    }
}
