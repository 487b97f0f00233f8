//! A collective that never completes (a rank stuck in a loop, a network that went away) would
//! hang every rank: the watchdog aborts the job when one has waited longer than
//! `KILN_DIST_TIMEOUT` seconds (default 600; a failed or killed rank is caught sooner, by MPI).
//! It watches the MPI call running on the host, and with NCCL the buckets queued on the GPU
//! (nccl.rs's [`overdue`](super::nccl)).

pub(super) use imp::{start, stop, watch};

/// The default limit on one collective, in seconds.
pub const DEFAULT_TIMEOUT_S: u64 = 600;

/// `KILN_DIST_TIMEOUT` in seconds, else the default.
pub fn timeout_s() -> u64 {
    std::env::var("KILN_DIST_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_S)
}

mod imp {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    /// Milliseconds since `EPOCH` when the current collective began; 0 when none is running.
    static SINCE_MS: AtomicU64 = AtomicU64::new(0);
    static WHAT: Mutex<&str> = Mutex::new("");
    static STOP: AtomicBool = AtomicBool::new(false);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

    fn now_ms() -> u64 {
        EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
    }

    /// Marks a collective as running until the guard is dropped.
    pub fn watch(what: &'static str) -> impl Drop {
        *WHAT.lock().unwrap_or_else(|p| p.into_inner()) = what;
        SINCE_MS.store(now_ms(), Ordering::SeqCst);
        Running
    }

    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            SINCE_MS.store(0, Ordering::SeqCst);
        }
    }

    pub fn start() {
        let limit_ms = super::timeout_s() * 1000;
        now_ms();
        let spawned = std::thread::Builder::new()
            .name("kiln-dist-watchdog".into())
            .spawn(move || {
                while !STOP.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(200));
                    let since = SINCE_MS.load(Ordering::SeqCst);
                    if since != 0 && now_ms().saturating_sub(since) > limit_ms {
                        let what = *WHAT.lock().unwrap_or_else(|p| p.into_inner());
                        let message = format!(
                            "an MPI {what} waited more than {} s for the other ranks \
                             (KILN_DIST_TIMEOUT): ending the job",
                            limit_ms / 1000
                        );
                        super::super::world().abort(&message, 1);
                    }
                    #[cfg(feature = "nccl")]
                    if let Some(why) = super::super::nccl::overdue(Duration::from_millis(limit_ms))
                    {
                        super::super::world().abort(&format!("{why}: ending the job"), 1);
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("kiln: no watchdog thread for the collectives ({e}): a hang is not caught");
        }
    }

    pub fn stop() {
        STOP.store(true, Ordering::SeqCst);
    }
}
