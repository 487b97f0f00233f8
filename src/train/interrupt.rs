//! Stopping a run from outside (the command line's Ctrl-C handler) and what an abrupt exit must
//! clean up. Both are process-wide, as a signal is: [`request_stop`] asks every running training
//! loop to stop at its next step boundary; [`exit_removing_tracked_files`] removes the lock files and the
//! temporary files that runs in this process hold at this moment (call it before exiting at once).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static STOP: AtomicBool = AtomicBool::new(false);
static TRACKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Asks the training loops of this process to stop at the next step boundary (see
/// [`TrainError::Interrupted`](super::TrainError::Interrupted)). The request is used up when a
/// loop stops for it, so a later run in the same process trains.
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Clears a stop request: the run that stopped for it has reported so.
pub(crate) fn clear_stop_request() {
    STOP.store(false, Ordering::SeqCst);
}

/// Removes every file a run of this process holds now (its lock, a checkpoint's temporary file
/// being written), best effort, and exits with `code`: for an exit that does not unwind (a second
/// Ctrl-C). The list stays locked until the process is gone, so a writer that is about to create
/// a temporary file (it is tracked before it exists) waits instead of leaving one behind.
pub fn exit_removing_tracked_files(code: i32) -> ! {
    let files = tracked();
    for file in files.iter() {
        let _ = std::fs::remove_file(file);
    }
    std::process::exit(code)
}

fn tracked() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while the list was held leaves it intact: keep using it.
    TRACKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// `path` is to be removed if the process exits abruptly.
pub(crate) fn track(path: &Path) {
    tracked().push(path.to_path_buf());
}

/// `path` was removed or renamed, or is to stay.
pub(crate) fn untrack(path: &Path) {
    let mut files = tracked();
    if let Some(i) = files.iter().position(|p| p == path) {
        files.swap_remove(i);
    }
}
