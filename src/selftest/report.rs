//! The selftest's table lines, verdict and JSON objects.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Report, Row, Status, Tolerance};
use crate::core::device::Device;

const FAMILY: usize = 28;
const CHECK: usize = 16;

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

fn milliseconds(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The column titles of [`Row::table_line`].
pub fn table_header() -> String {
    format!(
        "{:<FAMILY$} {:<CHECK$} {:<6} {:>11} {:>10}  {:<19} {:>10}",
        "family", "check", "result", "worst error", "tolerance", "(atol + rtol·|ref|)", "time"
    )
}

impl Row {
    /// The row as a line of the table under [`table_header`]: the worst error and the tolerance
    /// at that element, the tolerance's terms, the device time, then why it failed or skipped.
    pub fn table_line(&self) -> String {
        let (error, tolerance) = match (self.status, &self.worst) {
            (Status::Skip, _) | (_, None) => ("-".to_string(), "-".to_string()),
            (_, Some((_, w))) => (format!("{:.1e}", w.error), format!("{:.1e}", w.tolerance)),
        };
        let terms = match self.tolerance {
            Tolerance::Close { atol, rtol } => format!("{atol:e} + {rtol:e}·|ref|"),
            Tolerance::Exact => "bit-exact".to_string(),
        };
        let time = match self.status {
            Status::Skip => "-".to_string(),
            _ => format!("{:.2} ms", milliseconds(self.time)),
        };
        let mut line = format!(
            "{:<FAMILY$} {:<CHECK$} {:<6} {error:>11} {tolerance:>10}  {terms:<19} {time:>10}",
            self.family,
            self.check,
            self.status.name()
        );
        if !self.detail.is_empty() {
            line.push_str("  ");
            line.push_str(&self.detail);
        }
        line
    }

    /// The row as one JSON object (infinite or NaN numbers become null).
    pub fn to_json(&self, device: Device) -> Value {
        let (atol, rtol) = self.tolerance.atol_rtol();
        let worst = self.worst.as_ref();
        json!({
            "device": device.to_string(),
            "family": self.family,
            "check": self.check,
            "status": self.status.name().to_ascii_lowercase(),
            "worst_error": worst.map(|(_, w)| w.error),
            "tolerance": worst.map(|(_, w)| w.tolerance),
            "worst_output": worst.map(|(name, _)| *name),
            "mismatches": worst.map(|(_, w)| w.mismatches),
            "elements": worst.map(|(_, w)| w.len),
            "atol": atol,
            "rtol": rtol,
            "exact": self.tolerance == Tolerance::Exact,
            "time_ms": milliseconds(self.time),
            "kernels": self.kernels,
            "detail": self.detail,
        })
    }
}

impl Report {
    /// `PASS` or `FAIL` with the counts, the device and the wall time.
    pub fn verdict(&self) -> String {
        format!(
            "verdict: {} ({} passed, {} failed, {} skipped) on {} in {:.1} s",
            if self.passed() { "PASS" } else { "FAIL" },
            self.count(Status::Pass),
            self.count(Status::Fail),
            self.count(Status::Skip),
            self.device,
            self.elapsed.as_secs_f64()
        )
    }

    /// The verdict as the JSON object that ends a run's rows.
    pub fn verdict_json(&self) -> Value {
        json!({
            "device": self.device.to_string(),
            "description": self.description,
            "verdict": if self.passed() { "pass" } else { "fail" },
            "passed": self.count(Status::Pass),
            "failed": self.count(Status::Fail),
            "skipped": self.count(Status::Skip),
            "elapsed_s": self.elapsed.as_secs_f64(),
        })
    }
}
