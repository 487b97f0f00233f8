//! Atomic file replacement: write a temporary file beside the target, fsync it, rename it over
//! the target, fsync the directory. A crash or an error at any point leaves either the old file or
//! the new one, never a half-written one, and the temporary file is removed on error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::interrupt::{track, untrack};
use super::TrainError;

/// Replaces `path` with what `write` writes, atomically (see the module docs). `write` gets a
/// buffered writer; an error it returns aborts the replacement and leaves `path` untouched.
pub fn write_atomically(
    path: impl AsRef<Path>,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), TrainError> {
    let path = path.as_ref();
    let temp = temp_path(path)?;
    // Tracked from before it exists until it is gone, so an abrupt exit can remove it.
    track(&temp);
    let result = replace_with_temp(path, &temp, write);
    untrack(&temp);
    result
}

fn replace_with_temp(
    path: &Path,
    temp: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), TrainError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(|e| TrainError::io("creating a temporary file for", path, e))?;
    let result = fill(&file, write)
        .map_err(|e| TrainError::io("writing", path, e))
        .and_then(|()| {
            fs::rename(temp, path)
                .map_err(|e| TrainError::io("renaming a temporary file to", path, e))
        });
    drop(file);
    if result.is_err() {
        // The target is untouched; removing the temporary file is best effort.
        let _ = fs::remove_file(temp);
        return result;
    }
    // Make the rename itself durable. Some file systems cannot fsync a directory; the data is
    // already safe on disk then, so a failure here is not an error.
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

fn fill(file: &File, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut writer = BufWriter::new(file);
    write(&mut writer)?;
    writer.flush()?;
    drop(writer);
    file.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The process id in the name of a temporary file written by [`write_atomically`]
/// (`.<name>.<pid>.<n>.tmp`), or `None` for any other name.
pub(crate) fn temp_file_owner(file_name: &str) -> Option<u32> {
    let rest = file_name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut parts = rest.rsplitn(3, '.');
    let (n, pid, name) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match !name.is_empty() && digits(n) && digits(pid) {
        true => pid.parse().ok(),
        false => None,
    }
}

/// `.<name>.<pid>.<n>.tmp` in the target's directory (the same file system, so rename is atomic).
fn temp_path(path: &Path) -> Result<PathBuf, TrainError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        TrainError::invalid("path", format!("{} does not name a file", path.display()))
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(parent_dir(path).join(temp_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn temporary_names_give_their_owner_and_other_names_none() {
        let dir = tempfile::tempdir().unwrap();
        let temp = temp_path(&dir.path().join("last.safetensors")).unwrap();
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_file_owner(name), Some(std::process::id()));
        for other in [
            "last.safetensors",
            ".last.safetensors.tmp",
            ".x.12.tmp",
            "..12.3.tmp",
            ".a.b.c.tmp",
            "a.12.3.tmp",
        ] {
            assert_eq!(temp_file_owner(other), None, "{other}");
        }
        assert_eq!(temp_file_owner(".metrics.csv.77.0.tmp"), Some(77));
    }

    #[test]
    fn replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        fs::write(&path, "old").unwrap();
        write_atomically(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(dir_entries(dir.path()), ["a.txt"]);
    }

    #[test]
    fn a_failure_mid_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        fs::write(&path, "old contents").unwrap();
        let err = write_atomically(&path, |w| {
            w.write_all(&[b'x'; 100_000])?; // more than the buffer: part of it reaches the disk
            Err(io::Error::other("simulated failure"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("simulated failure"), "{err}");
        assert!(err.to_string().contains("a.txt"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old contents");
        assert_eq!(dir_entries(dir.path()), ["a.txt"]);
    }

    #[test]
    fn a_failing_rename_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "x").unwrap();
        // Renaming a file over a non-empty directory fails.
        let err = write_atomically(&path, |w| w.write_all(b"new")).unwrap_err();
        assert!(err.to_string().contains("taken"), "{err}");
        assert_eq!(dir_entries(dir.path()), ["taken"]);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/file.bin");
        let err = write_atomically(&path, |w| w.write_all(b"x")).unwrap_err();
        assert!(err.to_string().contains("no/such/dir/file.bin"), "{err}");
    }
}
