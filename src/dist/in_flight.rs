//! Collectives queued on a device and not yet seen complete (NCCL's all-reduces return once
//! queued), so the watchdog can end a job whose device collective never completes, as it does a
//! host one: PyTorch's NCCL watchdog, which polls each collective's CUDA event against a timeout.
//!
//! The work is queued on one stream, so it completes in order: only the oldest entry can be
//! overdue, and the completed ones leave from the front.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Queued work whose completion can be asked without waiting (a recorded CUDA event).
pub(super) trait Completion {
    /// Whether the work has completed; `Err` when the device reported a failure.
    fn completed(&self) -> Result<bool, String>;
}

/// The queued collectives, oldest first, each with what it was and when it was queued.
pub(super) struct InFlight<E> {
    queue: VecDeque<(&'static str, Instant, E)>,
}

impl<E: Completion> InFlight<E> {
    pub(super) const fn new() -> Self {
        InFlight {
            queue: VecDeque::new(),
        }
    }

    /// Records `work`, queued at `queued`, after dropping the entries already completed (so the
    /// list stays short even when no watchdog polls it).
    pub(super) fn push(&mut self, what: &'static str, queued: Instant, work: E) {
        while self
            .queue
            .front()
            .is_some_and(|(_, _, w)| w.completed() == Ok(true))
        {
            self.queue.pop_front();
        }
        self.queue.push_back((what, queued, work));
    }

    /// How many are still in flight (after the last [`InFlight::check`]).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }

    /// Drops the completed entries; says why the job must end: the oldest failed, or has waited
    /// at `now` more than `limit`.
    pub(super) fn check(&mut self, now: Instant, limit: Duration) -> Option<String> {
        while let Some((what, queued, work)) = self.queue.front() {
            match work.completed() {
                Ok(true) => {
                    self.queue.pop_front();
                }
                Ok(false) => {
                    let waited = now.saturating_duration_since(*queued);
                    return (waited > limit).then(|| {
                        format!(
                            "an {what} queued on the GPU {} s ago has not completed (limit {} s, \
                             KILN_DIST_TIMEOUT): another rank stopped taking part",
                            waited.as_secs(),
                            limit.as_secs()
                        )
                    });
                }
                Err(e) => return Some(format!("an {what} failed on the GPU: {e}")),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work whose completion is fixed.
    struct Fake(Result<bool, String>);

    impl Completion for Fake {
        fn completed(&self) -> Result<bool, String> {
            self.0.clone()
        }
    }

    fn state(done: Result<bool, String>) -> Fake {
        Fake(done)
    }

    /// Completed work leaves from the front; unfinished work is overdue only past the limit, and
    /// only the oldest counts.
    #[test]
    fn only_the_oldest_unfinished_collective_can_be_overdue() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(10);
        let mut queue = InFlight::new();
        queue.push("all-reduce", t0, state(Ok(true)));
        queue.push("all-reduce", t0 + Duration::from_secs(5), state(Ok(false)));
        queue.push("all-reduce", t0 + Duration::from_secs(6), state(Ok(false)));
        assert_eq!(queue.check(t0 + Duration::from_secs(12), limit), None);
        assert_eq!(queue.len(), 2, "the completed one left");
        let overdue = queue.check(t0 + Duration::from_secs(16), limit).unwrap();
        assert!(
            overdue.contains("11 s ago") && overdue.contains("limit 10 s"),
            "{overdue}"
        );
        assert_eq!(queue.len(), 2);
    }

    /// A failure reported by the device ends the job at once, whatever its age.
    #[test]
    fn a_failed_collective_ends_the_job_at_once() {
        let t0 = Instant::now();
        let mut queue = InFlight::new();
        queue.push(
            "all-reduce",
            t0,
            state(Err("CUDA_ERROR_LAUNCH_FAILED".into())),
        );
        let why = queue.check(t0, Duration::from_secs(600)).unwrap();
        assert!(why.contains("CUDA_ERROR_LAUNCH_FAILED"), "{why}");
    }

    /// A push drops what has completed from the front, and keeps what has not.
    #[test]
    fn a_push_drops_the_completed_entries() {
        let t0 = Instant::now();
        let mut queue = InFlight::new();
        queue.push("all-reduce", t0, state(Ok(true)));
        queue.push("all-reduce", t0, state(Ok(true)));
        assert_eq!(queue.len(), 1, "the first was dropped by the second push");
        queue.push("all-reduce", t0, state(Ok(false)));
        queue.push("all-reduce", t0, state(Ok(true)));
        assert_eq!(queue.len(), 2, "the unfinished one holds the one behind it");
    }

    /// Everything completed: nothing is left and nothing is overdue, however late it is asked.
    #[test]
    fn completed_work_is_never_overdue() {
        let t0 = Instant::now();
        let mut queue = InFlight::new();
        queue.push("all-reduce", t0, state(Ok(true)));
        queue.push("all-reduce", t0, state(Ok(true)));
        assert_eq!(
            queue.check(t0 + Duration::from_secs(3600), Duration::ZERO),
            None
        );
        assert_eq!(queue.len(), 0);
    }
}
