//! Writing a file all at once: into a temporary sibling, then renamed into place.
//!
//! A reader (or a crash) never sees half a file: the data goes to `.<name>.<pid>.<n>.tmp` in
//! the destination's folder, is flushed to disk, and the temporary file is renamed over the
//! destination, which is atomic on one file system. Missing parent folders are created.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::FileError;

/// Counts temporary files made by this process, so two threads writing the same destination
/// never share a temporary file.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Checks, before any work, that `dir` can hold a run's outputs: creates it (with its parents)
/// when missing, then writes and removes a probe file in it. So an unusable output folder (a
/// file, `/dev/null`, a read-only place) is refused in a moment instead of after the whole run.
pub fn ensure_writable_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "the output folder `{}` is not a folder",
            dir.display()
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the output folder `{}`: {e}", dir.display()))?;
    let probe = dir.join(format!(
        ".mapga-probe.{}.{}",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    File::create(&probe)
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| {
            format!(
                "cannot write into the output folder `{}`: {e}",
                dir.display()
            )
        })
}

/// Writes `path` atomically with `fill`, which receives a buffered writer on the temporary
/// file. Parent folders are created first; on any error the temporary file is removed and the
/// destination is left as it was.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FileError> {
    let tmp = temp_path(path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| FileError::write(path, e))?;
    }
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        fill(&mut out)?;
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FileError::write(path, e)
    })
}

/// Writes `bytes` to `path` atomically (see [`write_atomically`]).
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomically(path, |w| w.write_all(bytes))
}

/// A sibling of `path` to write into before renaming: `.<name>.<pid>.<n>.tmp`.
fn temp_path(path: &Path) -> Result<PathBuf, FileError> {
    let name = path.file_name().ok_or_else(|| {
        FileError::write(
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        )
    })?;
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_creates_folders_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.txt");
        write_atomically(&path, |w| w.write_all(b"hello")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        write_atomically(&path, |w| w.write_all(b"again")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"again");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("c.txt")]);
    }

    #[test]
    fn a_failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.txt");
        std::fs::write(&path, b"old").unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(b"new")?;
            Err(io::Error::other("the encoder gave up"))
        })
        .unwrap_err();
        assert!(matches!(err, FileError::Write { .. }), "{err}");
        assert!(err.to_string().contains("the encoder gave up"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_in_the_way_of_a_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"").unwrap();
        let err = write_atomically(&dir.path().join("f/x.txt"), |_| Ok(())).unwrap_err();
        assert!(matches!(err, FileError::Write { .. }), "{err}");
        let err = write_atomically(Path::new("/"), |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("names no file"), "{err}");
    }
}
