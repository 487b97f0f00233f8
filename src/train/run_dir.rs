//! The run directory (`--out`): one writer at a time, and what a run checks there before it
//! changes anything.
//!
//! **The lock.** A run holds `kiln.lock` in its directory from start to end. The file is created
//! atomically with its contents (written beside it, then hard-linked into place, which fails if a
//! lock exists), so another run always reads a whole lock: the holder's process id and start time.
//! A lock whose process is gone (`kill(pid, 0)` says no such process: the run was killed) is taken
//! over with a notice. The lock is removed when the run ends, by any path kiln controls (success,
//! an error, Ctrl-C; a second Ctrl-C removes it before exiting). This needs no crate, works the same
//! on every file system that has hard links (`create_new` is the fallback elsewhere), and the file
//! itself tells a person who holds the directory; an OS advisory lock (`flock`) would not say who.
//!
//! **Results.** A new run (without `--resume`) is refused in a directory holding another run's
//! results (a checkpoint, or metrics.csv with a row) unless it was asked to overwrite them; then
//! they are removed before the run writes its own, so the directory never mixes two runs.
//!
//! **Temporary files** of killed runs (`.NAME.PID.N.tmp`, see [`super::write_atomically`]) whose
//! process is gone are removed at the next start, with a notice.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::atomic::temp_file_owner;
use super::error::TrainError;
use super::interrupt::{track, untrack};
use super::metrics::read_metrics_csv;
use super::trainer::RunFiles;

/// The lock file's name in the run directory.
pub const LOCK_FILE: &str = "kiln.lock";

/// A run directory this process holds the lock of; dropping it removes the lock (and the
/// directory, if this run created it and left nothing in it).
#[derive(Debug)]
pub struct RunDir {
    dir: PathBuf,
    lock: PathBuf,
    created: bool,
}

impl RunDir {
    /// Creates `dir` if needed and takes its lock; an error names the run that holds it.
    pub fn lock(dir: &Path) -> Result<RunDir, TrainError> {
        let created = !dir.exists();
        fs::create_dir_all(dir)
            .map_err(|e| TrainError::io("creating the output directory", dir, e))?;
        let lock = dir.join(LOCK_FILE);
        match acquire(dir, &lock) {
            Ok(()) => {
                track(&lock);
                Ok(RunDir {
                    dir: dir.to_path_buf(),
                    lock,
                    created,
                })
            }
            Err(e) => {
                if created {
                    let _ = fs::remove_dir(dir);
                }
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock);
        untrack(&self.lock);
        if self.created {
            let _ = fs::remove_dir(&self.dir); // only if empty: a run that wrote nothing
        }
    }
}

/// Who holds a lock: the contents of `kiln.lock`.
#[derive(Clone, Debug, PartialEq)]
struct Holder {
    pid: u32,
    started: String,
}

impl Holder {
    fn me() -> Holder {
        Holder {
            pid: std::process::id(),
            started: utc_time(SystemTime::now()),
        }
    }

    fn to_text(&self) -> String {
        format!("pid {}\nstarted {}\n", self.pid, self.started)
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut pid = None;
        let mut started = None;
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("pid", v)) => pid = v.trim().parse().ok(),
                Some(("started", v)) => started = Some(v.trim().to_string()),
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            started: started?,
        })
    }
}

/// Takes the lock at `lock`, taking over one whose process is gone (at most twice: a third
/// attempt finding a lock means another run is starting right now).
fn acquire(dir: &Path, lock: &Path) -> Result<(), TrainError> {
    let me = Holder::me();
    let temp = dir.join(format!(".{LOCK_FILE}.{}.0.tmp", me.pid));
    fs::write(&temp, me.to_text()).map_err(|e| TrainError::io("writing", &temp, e))?;
    let result = (0..3)
        .find_map(|_| match place(&temp, lock, &me) {
            Ok(()) => Some(Ok(())),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                take_over(dir, lock).err().map(Err)
            }
            Err(e) => Some(Err(TrainError::io("creating the lock", lock, e))),
        })
        .unwrap_or_else(|| Err(locked(dir, lock, "another run is starting there")));
    let _ = fs::remove_file(&temp);
    result
}

/// Links the written `temp` to `lock` (failing if a lock exists); where hard links are not
/// supported, creates `lock` exclusively and writes it.
fn place(temp: &Path, lock: &Path, me: &Holder) -> io::Result<()> {
    match fs::hard_link(temp, lock) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            use io::Write;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(lock)?;
            file.write_all(me.to_text().as_bytes())?;
            file.sync_all()
        }
        other => other,
    }
}

/// The lock at `lock` exists: an error naming its holder if that process lives; otherwise the
/// stale lock is removed, with a notice, so that the caller can try again.
fn take_over(dir: &Path, lock: &Path) -> Result<(), TrainError> {
    let text = match fs::read_to_string(lock) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // just released
        Err(e) => return Err(TrainError::io("reading the lock", lock, e)),
    };
    let Some(holder) = Holder::parse(&text) else {
        return Err(locked(dir, lock, "its lock file is not one kiln wrote"));
    };
    if process_alive(holder.pid) {
        return Err(locked(
            dir,
            lock,
            &format!("pid {}, started {}", holder.pid, holder.started),
        ));
    }
    eprintln!(
        "kiln: taking over {}: its run (pid {}, started {}) is no longer running",
        lock.display(),
        holder.pid,
        holder.started
    );
    match fs::remove_file(lock) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(TrainError::io("removing the stale lock", lock, e))
        }
        _ => Ok(()),
    }
}

fn locked(dir: &Path, lock: &Path, holder: &str) -> TrainError {
    TrainError::RunDirLocked {
        dir: dir.to_path_buf(),
        lock: lock.to_path_buf(),
        holder: holder.to_string(),
    }
}

/// Whether a process with this id exists (`kill(pid, 0)`: no signal is sent). Ids that are not a
/// single positive process id count as gone.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let status = unsafe { libc::kill(pid, 0) };
    // EPERM: it exists but belongs to another user.
    status == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// `time` as `YYYY-MM-DD hh:mm:ss UTC`.
fn utc_time(time: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    format!("{} UTC", rfc3339.trim_end_matches('Z').replace('T', " "))
}

/// The files of another run's results in the directory: checkpoints, and metrics.csv unless it
/// holds no row (an unreadable one counts: it is not kiln's to discard).
fn results_in(files: &RunFiles) -> Vec<&Path> {
    let mut found: Vec<&Path> = [&files.last, &files.best]
        .into_iter()
        .filter(|p| p.exists())
        .map(PathBuf::as_path)
        .collect();
    if files.metrics.exists() && read_metrics_csv(&files.metrics).map_or(true, |r| !r.is_empty()) {
        found.push(&files.metrics);
    }
    found
}

/// A new run's check of its directory: refused if it holds another run's results, unless
/// `overwrite` (then [`clear_results`] removes them once every check has passed).
pub fn check_new_run(dir: &Path, files: &RunFiles, overwrite: bool) -> Result<(), TrainError> {
    let found = results_in(files);
    if found.is_empty() || overwrite {
        return Ok(());
    }
    let names: Vec<String> = found
        .iter()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    Err(TrainError::RunDirHasResults {
        dir: dir.to_path_buf(),
        found: names.join(", "),
    })
}

/// Removes a previous run's results and plots (a new run with `--overwrite`).
pub fn clear_results(files: &RunFiles) -> Result<(), TrainError> {
    for path in [
        &files.last,
        &files.best,
        &files.metrics,
        &files.curves,
        &files.filters,
    ] {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(TrainError::io("removing the previous run's", path, e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Removes the temporary files that killed runs left in `dir` (their process is gone), with a
/// notice on stderr; returns their names.
pub fn remove_stale_temps(dir: &Path) -> Result<Vec<String>, TrainError> {
    let entries = fs::read_dir(dir).map_err(|e| TrainError::io("listing", dir, e))?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_file_owner(&name) else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        if fs::remove_file(entry.path()).is_ok() {
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        removed.sort();
        eprintln!(
            "kiln: removed {} temporary file(s) that killed runs left in {}: {}",
            removed.len(),
            dir.display(),
            removed.join(", ")
        );
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_match_known_dates() {
        let at = |secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        assert_eq!(utc_time(at(0)), "1970-01-01 00:00:00 UTC");
        // date -u -d @1709251199: Thu Feb 29 23:59:59 UTC 2024
        assert_eq!(utc_time(at(1_709_251_199)), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc_time(at(951_782_400)), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn a_lock_round_trips_and_garbage_is_not_a_lock() {
        let me = Holder::me();
        assert_eq!(Holder::parse(&me.to_text()), Some(me));
        assert_eq!(Holder::parse("hello"), None);
        assert_eq!(Holder::parse("pid x\nstarted now\n"), None);
    }

    #[test]
    fn the_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = RunDir::lock(dir.path()).unwrap();
        let text = fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        let err = RunDir::lock(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains(&dir.path().display().to_string()),
            "{err}"
        );
        drop(held);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn process_ids_out_of_range_are_gone() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(999_999_999)); // above any pid_max
        assert!(!process_alive(u32::MAX));
    }
}
