//! Writing output files safely: checked before any work, written whole or not at all.
//!
//! [`check_output_path`] tells up front whether a file can be created at a path (it is not a
//! folder, its folder exists and accepts a new file), so a long generation does not fail at its
//! very end. [`write_atomic`] writes to a temporary file in the same folder and renames it over
//! the path once complete: an existing file stays intact until the new one is whole, a failed
//! write (disk full, file-size limit) removes the temporary file and leaves the old one as it
//! was, and a symbolic link at the path is replaced by the new file, never written through.
//! [`expand_tilde`] turns a leading `~` of a path option into the home folder.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The folder a file at `path` lives in (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates a new, empty, uniquely named hidden file beside `path` and returns it with its path.
fn create_temp_beside(path: &Path) -> std::io::Result<(File, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = folder_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let mut attempts = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => return Ok((file, temp)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks, before any work is done, that a file can be written at `path`.
///
/// # Errors
/// [`Error::InvalidInput`] (`output`) when `path` has no file name, is an existing folder, or
/// its folder does not exist or is not a folder; [`Error::Io`] naming the folder when a file
/// cannot be created in it (read-only, no permission, …). The check creates and removes an empty
/// temporary file in the folder.
pub fn check_output_path(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::invalid_input("output", reason);
    if path.file_name().is_none() {
        return Err(bad(format!("{}: not a file name", path.display())));
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(bad(format!("{}: is a folder", path.display())));
    }
    let dir = folder_of(path);
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(bad(format!(
                "{}: {} is not a folder",
                path.display(),
                dir.display()
            )));
        }
        Err(_) => {
            return Err(bad(format!(
                "{}: folder {} does not exist",
                path.display(),
                dir.display()
            )));
        }
    }
    let (file, temp) = create_temp_beside(path).map_err(|e| Error::io(dir, e))?;
    drop(file);
    std::fs::remove_file(&temp).map_err(|e| Error::io(&temp, e))
}

/// Writes a file atomically: `write` fills a temporary file in `path`'s folder, which is then
/// flushed to disk and renamed to `path`.
///
/// Until the rename, an existing file at `path` is untouched; a symbolic link at `path` is
/// replaced by the new file (its target is never written). When `write` or the flush fails, the
/// temporary file is removed and the error returned.
///
/// # Errors
/// [`Error::Io`] naming `path` when the temporary file cannot be created, written, flushed or
/// renamed; any error `write` returns.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    let (file, temp) = create_temp_beside(path).map_err(|e| Error::io(folder_of(path), e))?;
    let mut writer = BufWriter::new(file);
    let written = write(&mut writer).and_then(|()| {
        let file = writer
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, e))
    });
    let renamed =
        written.and_then(|()| std::fs::rename(&temp, path).map_err(|e| Error::io(path, e)));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}

/// Writes `bytes` to `path` with [`write_atomic`].
///
/// # Errors
/// As [`write_atomic`].
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |w| w.write_all(bytes).map_err(|e| Error::io(path, e)))
}

/// `path` with a leading `~` (alone, or followed by a separator) replaced by the home folder, as
/// a shell does; every other path (including `~user/…`) is returned unchanged, as is `path` when
/// the home folder is unknown.
pub fn expand_tilde(path: impl AsRef<Path>) -> PathBuf {
    expand_tilde_in(path.as_ref(), std::env::home_dir().as_deref())
}

/// [`expand_tilde`] with the home folder given (`None`: unknown).
pub fn expand_tilde_in(path: &Path, home: Option<&Path>) -> PathBuf {
    let mut components = path.components();
    match (components.next(), home) {
        (Some(std::path::Component::Normal(first)), Some(home)) if first == "~" => {
            match components.as_path() {
                rest if rest.as_os_str().is_empty() => home.to_path_buf(),
                rest => home.join(rest),
            }
        }
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::file_names as names;

    /// Writes `new` to `out.txt` (holding `old` first, when given) and checks the contents and
    /// that no temporary file remains.
    fn write_over(old: Option<&[u8]>, new: &[u8]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        if let Some(old) = old {
            std::fs::write(&path, old).unwrap();
        }
        write_bytes_atomic(&path, new).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
        assert_eq!(names(dir.path()), ["out.txt"]);
    }

    #[test]
    fn a_new_file_is_written_and_no_temporary_file_remains() {
        write_over(None, b"hello");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_intact_and_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        std::fs::write(&path, b"the old, good file").unwrap();
        let result = write_atomic(&path, |w| {
            w.write_all(&[0u8; 100_000]).unwrap();
            Err(Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left"),
            ))
        });
        let message = result.unwrap_err().to_string();
        assert!(message.contains("no space left"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), b"the old, good file");
        assert_eq!(names(dir.path()), ["out.png"]);
    }

    #[test]
    fn an_existing_file_is_replaced_on_success() {
        write_over(Some(b"old contents, longer than the new ones"), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_is_replaced_and_its_target_left_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (target, link) = (dir.path().join("precious.txt"), dir.path().join("out.txt"));
        crate::testing::symlink_to(&target, b"precious", &link);
        check_output_path(&link).unwrap();
        write_bytes_atomic(&link, b"new").unwrap();
        crate::testing::assert_link_replaced(&link, &target, b"precious");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
    }

    #[test]
    fn unwritable_paths_are_rejected_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("out.png");
        std::fs::create_dir(&folder).unwrap();
        let err = check_output_path(&folder).unwrap_err().to_string();
        assert!(err.contains("is a folder"), "{err}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = check_output_path(&file.join("out.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a folder"), "{err}");
        let missing = dir.path().join("missing/out.png");
        let err = check_output_path(&missing).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        check_output_path(&dir.path().join("fine.png")).unwrap();
        assert_eq!(names(dir.path()), ["file", "out.png"]);
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        // The path became a non-empty folder after the check: the rename fails for every user.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.png");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        assert!(write_bytes_atomic(&path, b"new").is_err());
        assert_eq!(names(dir.path()), ["out.png"]);
        assert_eq!(names(&path), ["inside"]);
    }

    #[test]
    fn a_leading_tilde_becomes_the_home_folder() {
        let home = Some(Path::new("/home/ada"));
        let expand = |p: &str| expand_tilde_in(Path::new(p), home);
        assert_eq!(expand("~"), Path::new("/home/ada"));
        assert_eq!(expand("~/models/sd15"), Path::new("/home/ada/models/sd15"));
        for unchanged in [
            "~ada/models",
            "models/~/sd",
            "/abs/~",
            "org/name",
            "",
            "./~",
        ] {
            assert_eq!(expand(unchanged), Path::new(unchanged), "{unchanged}");
        }
        assert_eq!(expand_tilde_in(Path::new("~/x"), None), Path::new("~/x"));
    }
}
