//! Output folders that never mix runs.
//!
//! A run's results are a set of files (images, arrays, `metrics.json`, `run.ron`) that only
//! make sense together. [`OutputFolder`] makes each run's set appear whole or not at all:
//!
//! - **One writer.** [`OutputFolder::open`] takes an exclusive lock on `DIR/.mapga.lock`
//!   (`flock`, released by the kernel when the process ends, however it ends). A second run on
//!   the same folder is refused with a message naming the process that holds it.
//! - **Staging.** A run writes into `DIR/.mapga-staging-<pid>-<n>/` ([`OutputFolder::stage`]).
//! - **Publishing.** On success [`OutputFolder::publish`] moves the new files into `DIR` (each
//!   by one rename), removes the files of the previous run that this run did not write (as
//!   listed by the previous `run.ron`, and only inside `DIR`), and moves `run.ron` last, so a
//!   reader who sees the new `run.ron` sees the whole new set.
//! - **Failures.** [`OutputFolder::keep_failed`] leaves the last good results untouched and
//!   moves the failed run's partial outputs to `DIR/failed-run/`, with `FAILED.txt` saying what
//!   happened; the next successful run removes that folder.
//! - **Leftovers.** Staging folders and temporary files (`.name.<pid>.<n>.tmp`) of processes
//!   that no longer run are removed when the folder is next opened.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The lock file in an output folder.
pub const LOCK_FILE: &str = ".mapga.lock";

/// The folder a failed run's partial outputs are moved to.
pub const FAILED_DIR: &str = "failed-run";

/// The note in [`FAILED_DIR`] saying what happened.
pub const FAILED_NOTE: &str = "FAILED.txt";

/// The prefix of staging folders.
const STAGING_PREFIX: &str = ".mapga-staging-";

/// Counts staging folders made by this process.
static NEXT_STAGE: AtomicU64 = AtomicU64::new(0);

/// Why an output folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OutDirError {
    /// Another process holds the folder's lock.
    #[error(
        "the output folder `{}` is in use by another mapga ({holder}); wait for it to finish, \
         or choose another folder with --out",
        .dir.display()
    )]
    Busy {
        /// The folder.
        dir: PathBuf,
        /// Who holds it, as the lock file says (process id, command, start time).
        holder: String,
    },
    /// The path cannot be an output folder: a file, `/dev/null`, a read-only place.
    #[error("{0} (choose another with --out)")]
    Unusable(String),
    /// The folder cannot be locked, written or cleaned.
    #[error("output folder `{}`: {message}", .dir.display())]
    Io {
        /// The folder.
        dir: PathBuf,
        /// What failed, with the operating system's words.
        message: String,
    },
}

impl OutDirError {
    fn io(dir: &Path, what: &str, e: impl std::fmt::Display) -> Self {
        OutDirError::Io {
            dir: dir.to_path_buf(),
            message: format!("{what}: {e}"),
        }
    }
}

/// An output folder held by this process for the runs it makes (see the module docs).
#[derive(Debug)]
pub struct OutputFolder {
    dir: PathBuf,
    /// The open, locked lock file: the lock lasts as long as this handle.
    _lock: File,
}

/// The folder one run writes into before it is published or kept as failed.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// Where the run writes its outputs.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl OutputFolder {
    /// Creates `dir` when missing, checks that it is a writable folder, takes its lock and
    /// removes what dead processes left in it.
    pub fn open(dir: &Path) -> Result<OutputFolder, OutDirError> {
        super::atomic::ensure_writable_dir(dir).map_err(OutDirError::Unusable)?;
        let lock_path = dir.join(LOCK_FILE);
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| OutDirError::io(dir, "cannot open its lock file", e))?;
        if !try_lock(&lock).map_err(|e| OutDirError::io(dir, "cannot lock it", e))? {
            let mut holder = String::new();
            let _ = (&lock).take(4096).read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(OutDirError::Busy {
                dir: dir.to_path_buf(),
                holder: if holder.is_empty() {
                    "a process that has just started".into()
                } else {
                    holder.replace('\n', ", ")
                },
            });
        }
        let me = format!(
            "pid {}, `{}`, since {}",
            std::process::id(),
            command_line(),
            now_text()
        );
        let _ = lock.set_len(0);
        let _ = lock.write_all(me.as_bytes());
        let _ = lock.flush();
        remove_leftovers(dir, 0);
        Ok(OutputFolder {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh, empty staging folder for one run.
    pub fn stage(&self) -> Result<Staging, OutDirError> {
        let path = self.dir.join(format!(
            "{STAGING_PREFIX}{}-{}",
            std::process::id(),
            NEXT_STAGE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path)
            .map_err(|e| OutDirError::io(&self.dir, "cannot create a staging folder", e))?;
        Ok(Staging { path })
    }

    /// Publishes a finished run: moves the staged files into the folder (`run.ron` last),
    /// removes the previous run's outputs that this run did not write, and the record of an
    /// earlier failure. Returns the published paths, in the order `written` gives them.
    pub fn publish(
        &self,
        staging: Staging,
        written: &[PathBuf],
    ) -> Result<Vec<PathBuf>, OutDirError> {
        let new: Vec<PathBuf> = written
            .iter()
            .filter_map(|p| p.strip_prefix(&staging.path).ok().map(Path::to_path_buf))
            .collect();
        let previous = previous_outputs(&self.dir);
        let is_record =
            |rel: &Path| rel == Path::new("run.ron") || rel == Path::new("metrics.json");
        // Data files first, then the records, `run.ron` last.
        let mut order: Vec<&PathBuf> = new.iter().filter(|r| !is_record(r)).collect();
        for record in ["metrics.json", "run.ron"] {
            order.extend(new.iter().filter(|r| r.as_path() == Path::new(record)));
        }
        let move_in = |rel: &Path| -> Result<(), OutDirError> {
            let from = staging.path.join(rel);
            let to = self.dir.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| OutDirError::io(&self.dir, "cannot create a folder in it", e))?;
            }
            std::fs::rename(&from, &to).map_err(|e| {
                OutDirError::io(&self.dir, &format!("cannot publish `{}`", rel.display()), e)
            })
        };
        for rel in order.iter().filter(|r| !is_record(r)) {
            move_in(rel)?;
        }
        for old in previous.iter().filter(|p| !new.contains(p)) {
            let _ = std::fs::remove_file(self.dir.join(old));
        }
        for rel in order.iter().filter(|r| is_record(r)) {
            move_in(rel)?;
        }
        let _ = std::fs::remove_dir_all(&staging.path);
        let _ = std::fs::remove_dir_all(self.dir.join(FAILED_DIR));
        Ok(new.iter().map(|r| self.dir.join(r)).collect())
    }

    /// Keeps a failed (or interrupted) run apart from the last good results: its partial
    /// outputs go to `failed-run/` (replacing an older failure's), with `FAILED.txt` giving
    /// `why`. Returns that folder.
    pub fn keep_failed(&self, staging: Staging, why: &str) -> Result<PathBuf, OutDirError> {
        let failed = self.dir.join(FAILED_DIR);
        let _ = std::fs::remove_dir_all(&failed);
        let note = format!(
            "This run did not finish, at {}:\n\n{why}\n\nThe files in this folder are what it \
             wrote before it stopped. The files beside this folder are the last run that \
             finished (see ../run.ron); they were left as they were.\n",
            now_text()
        );
        let _ = std::fs::write(staging.path.join(FAILED_NOTE), note);
        std::fs::rename(&staging.path, &failed)
            .map_err(|e| OutDirError::io(&self.dir, "cannot keep the failed run's outputs", e))?;
        Ok(failed)
    }

    /// Drops a staged run that is superseded (a `watch` run cancelled by a newer save).
    pub fn discard(&self, staging: Staging) {
        let _ = std::fs::remove_dir_all(&staging.path);
    }
}

/// The outputs the folder's `run.ron` lists, as relative paths inside the folder. Anything
/// else (an absolute path, `..`, a name the manifest cannot parse) is ignored, so a damaged or
/// hostile manifest can never make a run remove files outside its folder.
fn previous_outputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(dir.join("run.ron")) else {
        return Vec::new();
    };
    #[derive(serde::Deserialize)]
    struct Outputs {
        #[serde(default)]
        outputs: Vec<String>,
    }
    // The manifest has more fields; only `outputs` is read.
    let Ok(parsed) = ron::from_str::<Outputs>(&text) else {
        return Vec::new();
    };
    parsed
        .outputs
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| {
            !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
        })
        .collect()
}

/// Removes staging folders and atomic-write temporaries of processes that are gone, in `dir`
/// and (for temporaries) its subfolders down to a few levels.
fn remove_leftovers(dir: &Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if depth == 0 && kind.is_dir() && name.starts_with(STAGING_PREFIX) {
            let pid = name[STAGING_PREFIX.len()..]
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !alive(p)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        } else if kind.is_file() && name.starts_with('.') && name.ends_with(".tmp") {
            // `.name.<pid>.<n>.tmp`
            let mut parts = name.trim_end_matches(".tmp").rsplit('.');
            let _n = parts.next();
            let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !alive(p)) {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if kind.is_dir() && depth < 4 && !name.starts_with(STAGING_PREFIX) {
            remove_leftovers(&entry.path(), depth + 1);
        }
    }
}

/// Whether a process with this id exists (a process of another user counts as alive).
#[cfg(unix)]
#[allow(unsafe_code)]
fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    true
}

/// Takes the exclusive lock without waiting: `Ok(false)` when another process holds it.
#[cfg(unix)]
#[allow(unsafe_code)]
fn try_lock(file: &File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this process owns; the lock goes with the descriptor.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// The command line of this process, for the lock file.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let line = args.join(" ");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line,
    }
}

/// The current time as seconds since the Unix epoch, UTC, readable.
fn now_text() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        out.sort();
        out
    }

    fn stage_run(folder: &OutputFolder, names: &[&str], run_ron: &str) -> (Staging, Vec<PathBuf>) {
        let staging = folder.stage().unwrap();
        let mut written = Vec::new();
        for n in names {
            let p = staging.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("new {n}")).unwrap();
            written.push(p);
        }
        let p = staging.path().join("run.ron");
        std::fs::write(&p, run_ron).unwrap();
        written.push(p);
        (staging, written)
    }

    #[test]
    fn a_published_run_replaces_the_previous_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let folder = OutputFolder::open(&out).unwrap();
        let (s, w) = stage_run(
            &folder,
            &["a.png", "sub/b.npy"],
            r#"(status: "ok", outputs: ["a.png", "sub/b.npy", "run.ron"])"#,
        );
        folder.publish(s, &w).unwrap();
        assert_eq!(files(&out), vec!["a.png", "run.ron", "sub"]);
        // A user's own file is never touched; the old run's b.npy goes, a.png is replaced.
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        let (s, w) = stage_run(
            &folder,
            &["a.png", "c.png"],
            r#"(status: "ok", outputs: ["a.png", "c.png", "run.ron"])"#,
        );
        let published = folder.publish(s, &w).unwrap();
        assert_eq!(published.len(), 3);
        assert_eq!(
            files(&out),
            vec!["a.png", "c.png", "notes.txt", "run.ron", "sub"]
        );
        assert!(!out.join("sub/b.npy").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("a.png")).unwrap(),
            "new a.png"
        );
    }

    #[test]
    fn a_failed_run_leaves_the_last_good_results_and_is_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let folder = OutputFolder::open(&out).unwrap();
        let (s, w) = stage_run(&folder, &["a.png"], r#"(outputs: ["a.png", "run.ron"])"#);
        folder.publish(s, &w).unwrap();
        let (s, _) = stage_run(&folder, &["a.png", "early.npy"], r#"(status: "failed")"#);
        let failed = folder.keep_failed(s, "the objective became NaN").unwrap();
        assert_eq!(failed, out.join(FAILED_DIR));
        assert_eq!(
            std::fs::read_to_string(out.join("a.png")).unwrap(),
            "new a.png"
        );
        assert!(std::fs::read_to_string(out.join("run.ron"))
            .unwrap()
            .contains("outputs"));
        let note = std::fs::read_to_string(failed.join(FAILED_NOTE)).unwrap();
        assert!(note.contains("the objective became NaN"), "{note}");
        assert!(failed.join("early.npy").exists());
        // The next good run removes the failure record.
        let (s, w) = stage_run(&folder, &["a.png"], r#"(outputs: ["a.png", "run.ron"])"#);
        folder.publish(s, &w).unwrap();
        assert!(!out.join(FAILED_DIR).exists());
        assert_eq!(files(&out), vec!["a.png", "run.ron"]);
    }

    #[test]
    fn a_hostile_manifest_cannot_remove_files_outside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(
            out.join("run.ron"),
            format!(
                r#"(outputs: ["../victim.txt", "{}", "", "run.ron"])"#,
                victim.display()
            ),
        )
        .unwrap();
        let folder = OutputFolder::open(&out).unwrap();
        let (s, w) = stage_run(&folder, &["a.png"], "(outputs: [])");
        folder.publish(s, &w).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn a_second_holder_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputFolder::open(dir.path()).unwrap();
        let err = OutputFolder::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, OutDirError::Busy { .. }), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        assert!(OutputFolder::open(dir.path()).is_ok());
    }

    #[test]
    fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid above the kernel's maximum (4,194,304) belongs to no process.
        let dead = 999_999_999u32;
        let me = std::process::id();
        std::fs::create_dir_all(dir.path().join(format!("{STAGING_PREFIX}{dead}-0"))).unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join(format!(".x.npy.{dead}.3.tmp")), "").unwrap();
        std::fs::write(dir.path().join(format!("sub/.y.png.{dead}.0.tmp")), "").unwrap();
        std::fs::write(dir.path().join(format!(".z.png.{me}.0.tmp")), "").unwrap();
        std::fs::write(dir.path().join("keep.tmp"), "").unwrap();
        let _folder = OutputFolder::open(dir.path()).unwrap();
        assert_eq!(
            files(dir.path()),
            vec![
                format!(".z.png.{me}.0.tmp"),
                "keep.tmp".into(),
                "sub".into()
            ]
        );
        assert!(files(&dir.path().join("sub")).is_empty());
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
