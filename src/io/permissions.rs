//! What a pipeline may read and write: safe to run a file someone sent you.
//!
//! The command line runs every pipeline under [`Permissions::restricted`], in the manner of
//! Deno: a pipeline reads only under its own folder, its *project* (the nearest folder above
//! it holding a [`PROJECT_MARKER`] file, as this repository's root does), the folders of the
//! files it imports, and the paths given on the command line (`--allow-read DIR`, and a
//! `--set` value naming a file); it writes only under its output folder (`--out`) and the
//! folders given with `--allow-write DIR`. Anything else is an error before the run (for
//! paths known when the pipeline is checked) or when the path is met (for computed ones).
//!
//! Paths are compared after resolving symbolic links and `..`, so neither a link inside an
//! allowed folder nor `data/../../secret` leads out of it. The library's default,
//! [`Permissions::default`], allows everything (tests and programs that embed mapga choose
//! their own rules).

use std::path::{Component, Path, PathBuf};

/// The file that marks a project's root folder: pipelines below it may read anything under it
/// (`pipelines/x.mapga` reading `../data/...`). Its content is ignored.
pub const PROJECT_MARKER: &str = ".mapga-project";

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading a file (data, a model, a card).
    Read,
    /// Writing a file (a `save`).
    Write,
}

/// The folders and files a pipeline may read and write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Permissions {
    restricted: bool,
    read: Vec<PathBuf>,
    read_files: Vec<PathBuf>,
    write: Vec<PathBuf>,
    /// The output folder, where relative `save` paths go.
    output: Option<PathBuf>,
}

/// An access the permissions do not allow.
#[derive(Debug, Clone, PartialEq)]
pub struct Denied {
    /// Read or write.
    pub access: Access,
    /// The path as resolved (links and `..` followed).
    pub path: PathBuf,
    /// The folders that are allowed for this access.
    pub allowed: Vec<PathBuf>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} `{}` is not allowed: {}",
            self.access_verb(),
            self.path.display(),
            self.why()
        )
    }
}

impl std::error::Error for Denied {}

impl Denied {
    fn access_verb(&self) -> &'static str {
        match self.access {
            Access::Read => "reading",
            Access::Write => "writing",
        }
    }

    fn why(&self) -> String {
        let list = if self.allowed.is_empty() {
            "none".to_string()
        } else {
            self.allowed
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.access {
            Access::Read => format!(
                "a pipeline reads only under its own folder, its project, its imports' folders \
                 and the paths given on the command line (here: {list})"
            ),
            Access::Write => format!(
                "a pipeline writes only under its output folder and the folders given with \
                 --allow-write (here: {list})"
            ),
        }
    }

    /// The command-line flag that would allow the access, with the folder to give it.
    pub fn flag(&self) -> String {
        let folder = if self.path.is_dir() {
            self.path.as_path()
        } else {
            self.path.parent().unwrap_or(&self.path)
        };
        let flag = match self.access {
            Access::Read => "--allow-read",
            Access::Write => "--allow-write",
        };
        format!("{flag} {}", folder.display())
    }
}

impl Permissions {
    /// Everything allowed (the library's default).
    pub fn unrestricted() -> Permissions {
        Permissions::default()
    }

    /// Nothing allowed until folders are added ([`Permissions::allow_read`], ...).
    pub fn restricted() -> Permissions {
        Permissions {
            restricted: true,
            ..Permissions::default()
        }
    }

    /// The command line's permissions for the pipeline `file` writing to `out`: reads under
    /// its project (or its folder) and of each `--set` value in `overrides` that names an
    /// existing file or folder (resolved against the pipeline's folder, as the pipeline
    /// resolves it); writes under `out`.
    pub fn for_pipeline(
        file: &Path,
        out: &Path,
        overrides: &std::collections::BTreeMap<String, String>,
    ) -> Permissions {
        let mut p = Permissions::restricted();
        let dir = file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        p.allow_project_of(dir);
        p.set_output(out);
        for text in overrides.values() {
            let unquoted = text.trim().trim_matches('"');
            if unquoted.is_empty() {
                continue;
            }
            let path = dir.join(unquoted);
            if path.is_file() {
                p.allow_read_file(&path);
            } else if path.is_dir() {
                p.allow_read(&path);
            }
        }
        p
    }

    /// Whether accesses are checked at all.
    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// Allows reading anything under `dir`.
    pub fn allow_read(&mut self, dir: &Path) {
        push_unique(&mut self.read, resolve(dir));
    }

    /// Allows reading the file `file` (and the model card beside it, which is read with it).
    pub fn allow_read_file(&mut self, file: &Path) {
        let file = resolve(file);
        push_unique(&mut self.read_files, file.with_extension("ron"));
        push_unique(&mut self.read_files, file);
    }

    /// Allows writing anything under `dir`.
    pub fn allow_write(&mut self, dir: &Path) {
        push_unique(&mut self.write, resolve(dir));
    }

    /// Sets the output folder: writes are allowed under it, and relative `save` paths
    /// resolve against it.
    pub fn set_output(&mut self, dir: &Path) {
        self.allow_write(dir);
        self.output = Some(resolve(dir));
    }

    /// The output folder, when set.
    pub fn output(&self) -> Option<&Path> {
        self.output.as_deref()
    }

    /// Allows reading under the project of `dir`: the nearest folder at or above it that
    /// holds [`PROJECT_MARKER`], or `dir` itself when there is none.
    pub fn allow_project_of(&mut self, dir: &Path) {
        let root = project_root(dir).unwrap_or_else(|| dir.to_path_buf());
        self.allow_read(&root);
    }

    /// Checks a read of `path`.
    pub fn check_read(&self, path: &Path) -> Result<(), Denied> {
        if !self.restricted {
            return Ok(());
        }
        let resolved = resolve(path);
        if self.read_files.contains(&resolved) || self.read.iter().any(|d| resolved.starts_with(d))
        {
            return Ok(());
        }
        Err(Denied {
            access: Access::Read,
            path: resolved,
            allowed: self.read.clone(),
        })
    }

    /// Checks a write of `path`.
    pub fn check_write(&self, path: &Path) -> Result<(), Denied> {
        if !self.restricted {
            return Ok(());
        }
        let resolved = resolve(path);
        if self.write.iter().any(|d| resolved.starts_with(d)) {
            return Ok(());
        }
        Err(Denied {
            access: Access::Write,
            path: resolved,
            allowed: self.write.clone(),
        })
    }
}

fn push_unique(list: &mut Vec<PathBuf>, p: PathBuf) {
    if !list.contains(&p) {
        list.push(p);
    }
}

/// The nearest folder at or above `dir` that holds [`PROJECT_MARKER`].
pub fn project_root(dir: &Path) -> Option<PathBuf> {
    let start = resolve(dir);
    start
        .ancestors()
        .find(|d| d.join(PROJECT_MARKER).is_file())
        .map(Path::to_path_buf)
}

/// `path` made absolute, with `.` and `..` removed lexically and symbolic links resolved in
/// the longest part that exists (the rest does not exist yet: a file about to be written).
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // Links first where the path exists: `link/..` must mean the link target's parent.
    if let Ok(real) = std::fs::canonicalize(&absolute) {
        return real;
    }
    let mut lexical = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    // The longest existing prefix, with its links resolved, then the rest as written.
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrestricted_allows_everything() {
        let p = Permissions::default();
        assert!(p.check_read(Path::new("/etc/passwd")).is_ok());
        assert!(p.check_write(Path::new("/etc/passwd")).is_ok());
    }

    #[test]
    fn reads_and_writes_stay_in_their_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let pipelines = root.join("pipelines");
        let out = root.join("out");
        std::fs::create_dir_all(&pipelines).unwrap();
        std::fs::write(root.join("secret.txt"), "key").unwrap();
        let mut p = Permissions::restricted();
        p.allow_project_of(&pipelines);
        p.set_output(&out);
        // No marker: the pipeline's folder only.
        assert!(p.check_read(&pipelines.join("x.npy")).is_ok());
        let denied = p.check_read(&pipelines.join("../secret.txt")).unwrap_err();
        assert_eq!(denied.path, root.join("secret.txt"));
        assert!(denied.to_string().starts_with("reading `"), "{denied}");
        assert_eq!(denied.flag(), format!("--allow-read {}", root.display()));
        // Writes: under the output folder, even before it exists; `..` cannot leave it.
        assert!(p.check_write(&out.join("a/b.png")).is_ok());
        assert!(p.check_write(&out.join("../x.npy")).is_err());
        assert!(p.check_write(&pipelines.join("x.npy")).is_err());
        // A marker makes the project readable.
        std::fs::write(root.join(PROJECT_MARKER), "").unwrap();
        let mut p = Permissions::restricted();
        p.allow_project_of(&pipelines);
        assert!(p.check_read(&pipelines.join("../secret.txt")).is_ok());
        // A file given on the command line, and its card.
        let mut p = Permissions::restricted();
        p.allow_read_file(&root.join("secret.txt"));
        assert!(p.check_read(&root.join("secret.txt")).is_ok());
        assert!(p.check_read(&root.join("secret.ron")).is_ok());
        assert!(p.check_read(&root.join("other.txt")).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_link_inside_an_allowed_folder_does_not_lead_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let allowed = root.join("allowed");
        std::fs::create_dir_all(&allowed).unwrap();
        std::fs::write(root.join("secret.npy"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("secret.npy"), allowed.join("data.npy")).unwrap();
        std::os::unix::fs::symlink(&root, allowed.join("up")).unwrap();
        let mut p = Permissions::restricted();
        p.allow_read(&allowed);
        assert!(p.check_read(&allowed.join("data.npy")).is_err());
        assert!(p.check_read(&allowed.join("up/secret.npy")).is_err());
        p.allow_write(&allowed);
        assert!(p.check_write(&allowed.join("up/new.npy")).is_err());
    }
}
