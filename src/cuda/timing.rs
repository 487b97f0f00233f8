//! Timing on the device: CUDA events around the work on kiln's stream (host clocks under emulation).

use std::time::Instant;

use super::{gpu, Backend};
use crate::core::device::Device;
use crate::core::error::Result;

/// Runs `work` `warmup` times untimed, then `runs` times, returning each run's milliseconds.
/// On a real GPU each run is bracketed by timing events on kiln's stream and the time is read after
/// the stream synchronizes, so it is the kernels' time, not the launch calls'.
pub fn time_runs(
    device: Device,
    warmup: usize,
    runs: usize,
    mut work: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    let g = gpu(device)?;
    for _ in 0..warmup {
        work()?;
    }
    g.synchronize()?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        match &g.backend {
            #[cfg(feature = "cuda")]
            Backend::Real(r) => times.push(r.time_ms(&mut work)?),
            Backend::Emulated => {
                let start = Instant::now();
                work()?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(times)
}

/// The median of `times` (0 for none).
pub fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]),
    }
}
