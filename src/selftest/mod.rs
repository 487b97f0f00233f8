//! `kiln selftest`: every kernel family run once on a device (a GPU, or the kernel emulation) and
//! on the CPU reference, on small seeded random inputs of odd sizes (no multiple of any tile), and
//! compared: for a new GPU, driver or PTX JIT, whether kiln computes correctly there.
//!
//! Each [`Row`] is one family (an op, a cast, an optimizer update, a GEMM kernel) and one check
//! (forward, backward, update): the device's outputs against the CPU's within
//! `atol + rtol·|cpu|` (bit for bit for casts, masks and indices), the kernels that must have
//! launched for it (counted by [`crate::cuda::count_launches`]: a fast path that silently fell
//! back is a failure), and the time the device took (inputs uploaded, kernels run
//! and synchronized). Rows whose kernels this device cannot load are skipped with the reason
//! (the wgmma GEMM needs compute capability 9.0), never passed. Rows run in a fixed order and are
//! handed to the caller as each is measured, so a run cut short still reports every row it
//! reached.
//!
//! Each row runs under its own [`KernelPolicy`] (the library's defaults unless it names one), in a
//! scope of the selftest's thread that ends with the row, also on failure; the launches counted
//! are the row's own, so other work in the process neither changes a row's kernels nor its
//! counts.

mod cases;
mod compare;
mod gemm;
mod layers;
mod report;

pub use compare::{worst_error, Tolerance, Worst};
pub use report::table_header;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::backend::RawTensor;
use crate::core::device::Device;
use crate::core::error::{invalid, Result};
use crate::cuda::{self, KernelPolicy};
use compare::HostValues;

/// Test only: names a family (as in [`Row::family`]) whose device outputs the selftest perturbs
/// after computing them, so that its rows fail: lets a test check that a failure gives a non-zero
/// exit status. Read by [`Options::from_env`]; not for users.
pub const PLANT_FAILURE_VAR: &str = "KILN_SELFTEST_PLANT_FAILURE";

/// How a selftest runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Test only (see [`PLANT_FAILURE_VAR`]): perturb the device outputs of this family's rows.
    pub plant_failure: Option<String>,
}

impl Options {
    /// The family a planted failure names (matched ignoring ASCII case), or an error listing the
    /// families when it names none.
    pub fn planted_family(&self) -> Result<Option<&'static str>> {
        let Some(name) = &self.plant_failure else {
            return Ok(None);
        };
        let name = name.trim();
        let families = families();
        match families.iter().find(|f| f.eq_ignore_ascii_case(name)) {
            Some(family) => Ok(Some(family)),
            None => Err(invalid(
                "planted failure",
                format!(
                    "{PLANT_FAILURE_VAR}={name:?} names no family; the families are: {}",
                    families.join(", ")
                ),
            )),
        }
    }

    /// The default options, with a planted failure when [`PLANT_FAILURE_VAR`] is set and not empty.
    pub fn from_env() -> Options {
        Options {
            plant_failure: std::env::var(PLANT_FAILURE_VAR)
                .ok()
                .filter(|f| !f.trim().is_empty()),
        }
    }
}

/// Whether a row passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Not run: the device cannot run it (the reason is in [`Row::detail`]).
    Skip,
}

/// One measured row of the selftest.
#[derive(Clone, Debug)]
pub struct Row {
    /// The kernel family: an op (`conv2d`), a cast, an optimizer, a GEMM kernel.
    pub family: &'static str,
    /// What was checked: `forward`, `backward` (or one of its products), `update`.
    pub check: &'static str,
    pub status: Status,
    pub tolerance: Tolerance,
    /// The output closest to (or furthest past) its tolerance, and its comparison; `None` when
    /// the row was skipped or its outputs could not be computed.
    pub worst: Option<(&'static str, Worst)>,
    /// Wall time of the device's part: uploading the inputs, the kernels, and synchronizing.
    pub time: Duration,
    /// Kernels that must launch for this row.
    pub kernels: &'static [&'static str],
    /// Why it failed or was skipped; empty for a pass.
    pub detail: String,
}

/// Every row of a run, in order.
#[derive(Clone, Debug)]
pub struct Report {
    pub device: Device,
    /// The device as [`device_description`] gives it.
    pub description: String,
    pub rows: Vec<Row>,
    /// Wall time of the whole run, the CPU references included.
    pub elapsed: Duration,
}

impl Report {
    /// No row failed.
    pub fn passed(&self) -> bool {
        self.count(Status::Fail) == 0
    }

    pub fn count(&self, status: Status) -> usize {
        self.rows.iter().filter(|r| r.status == status).count()
    }
}

/// The families the selftest covers, in the order it runs them.
pub fn families() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for case in cases::all() {
        if !names.contains(&case.family) {
            names.push(case.family);
        }
    }
    names
}

/// Opens `device` (a GPU or the emulation: the CPU is the reference, not a device to test) and
/// describes it; a clear error when it cannot be used here.
pub fn device_description(device: Device) -> Result<String> {
    if device == Device::Cpu {
        return Err(invalid(
            "selftest device",
            "the selftest compares a GPU with the CPU reference: choose cuda, cuda:N or emulated",
        ));
    }
    device.check_available()?;
    cuda::describe(device)
}

/// Runs every row on `device` and on the CPU, calling `on_row` as each is measured. An error only
/// when the run cannot start (a planted failure names no family, the device cannot be opened);
/// a row whose computation fails, or panics, is a failed row.
pub fn run(device: Device, options: &Options, on_row: &mut dyn FnMut(&Row)) -> Result<Report> {
    let planted = options.planted_family()?;
    let description = device_description(device)?;
    let cases = cases::all();
    let start = Instant::now();
    let mut rows = Vec::with_capacity(cases.len());
    for case in &cases {
        let row = run_case(device, case, planted == Some(case.family));
        on_row(&row);
        rows.push(row);
    }
    Ok(Report {
        device,
        description,
        rows,
        elapsed: start.elapsed(),
    })
}

/// The outputs of a row, named, on the device they were computed on.
type Outputs = Vec<(&'static str, RawTensor)>;

/// One row: how to compute its outputs on any device from fixed seeds, and how to judge them.
struct Case {
    pub family: &'static str,
    pub check: &'static str,
    pub tolerance: Tolerance,
    pub kernels: &'static [&'static str],
    /// The policy the row's device work runs under.
    pub policy: KernelPolicy,
    /// A kernel only some GPUs load, and what the row says when this one did not.
    pub needs: Option<(&'static str, &'static str)>,
    pub run: fn(Device) -> Result<Outputs>,
}

impl Case {
    pub fn new(
        family: &'static str,
        check: &'static str,
        tolerance: Tolerance,
        kernels: &'static [&'static str],
        run: fn(Device) -> Result<Outputs>,
    ) -> Case {
        Case {
            family,
            check,
            tolerance,
            kernels,
            policy: KernelPolicy::DEFAULT,
            needs: None,
            run,
        }
    }

    pub fn with_policy(self, policy: KernelPolicy) -> Case {
        Case { policy, ..self }
    }

    pub fn needs(self, kernel: &'static str, why: &'static str) -> Case {
        Case {
            needs: Some((kernel, why)),
            ..self
        }
    }
}

/// `f`'s result, with a panic turned into an error message.
fn caught<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into())
        )),
    }
}

fn download(outputs: &Outputs) -> Result<Vec<(&'static str, HostValues)>> {
    outputs
        .iter()
        .map(|(name, t)| Ok((*name, HostValues::of(t)?)))
        .collect()
}

fn run_case(device: Device, case: &Case, planted: bool) -> Row {
    let mut row = Row {
        family: case.family,
        check: case.check,
        status: Status::Fail,
        tolerance: case.tolerance,
        worst: None,
        time: Duration::ZERO,
        kernels: case.kernels,
        detail: String::new(),
    };
    if let Some((kernel, why)) = case.needs {
        match cuda::gpu(device) {
            Ok(gpu) if !gpu.has_kernel(kernel) => {
                row.status = Status::Skip;
                row.detail = why.to_string();
                return row;
            }
            Ok(_) => {}
            Err(e) => {
                row.detail = e.to_string();
                return row;
            }
        }
    }
    let expected = match caught(|| download(&(case.run)(Device::Cpu)?)) {
        Ok(v) => v,
        Err(e) => {
            row.detail = format!("the CPU reference failed: {e}");
            return row;
        }
    };
    let start = Instant::now();
    let (outputs, launches) = cuda::count_launches(|| {
        cuda::with_kernel_policy(device, case.policy, || {
            caught(|| {
                let outputs = (case.run)(device)?;
                crate::cuda::synchronize(&device)?;
                Ok(outputs)
            })
        })
    });
    row.time = start.elapsed();
    let mut actual = match outputs.and_then(|o| caught(|| download(&o))) {
        Ok(v) => v,
        Err(e) => {
            row.detail = format!("on {device}: {e}");
            return row;
        }
    };
    if planted {
        for (_, values) in &mut actual {
            values.perturb();
        }
    }
    let mut problems = Vec::new();
    if actual.len() != expected.len() {
        problems.push(format!(
            "{} outputs on {device}, {} on the CPU",
            actual.len(),
            expected.len()
        ));
    }
    for ((name, a), (_, e)) in actual.iter().zip(&expected) {
        let w = a.compare(e, case.tolerance);
        if !w.passed() {
            problems.push(format!(
                "{name}: {} of {} beyond tolerance, element {}: {:.7e} vs {:.7e}",
                w.mismatches, w.len, w.index, w.actual, w.expected
            ));
        }
        if row.worst.is_none_or(|(_, old)| w.ratio() > old.ratio()) {
            row.worst = Some((name, w));
        }
    }
    let launched = |k: &str| launches.get(k).is_some_and(|&n| n > 0);
    let missing: Vec<&str> = case
        .kernels
        .iter()
        .copied()
        .filter(|k| !launched(k))
        .collect();
    if !missing.is_empty() {
        problems.push(format!("did not run {}", missing.join(", ")));
    }
    if planted {
        problems.push(format!("failure planted by {PLANT_FAILURE_VAR}"));
    }
    if problems.is_empty() {
        row.status = Status::Pass;
    } else {
        row.detail = problems.join("; ");
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend;
    use crate::core::shape::GemmSpec;

    const LOOSE: Tolerance = Tolerance::Close {
        atol: 1e-4,
        rtol: 1e-4,
    };

    /// A 130x131x9 product: the 128x128-tile kernel takes it only when that switch is on.
    fn big_product(d: Device) -> Result<Outputs> {
        let spec = GemmSpec::new(130, 131, 9);
        let (la, lb, lc) = spec.required_lens();
        let a = cases::uniform(&[la], 1, d)?;
        let b = cases::uniform(&[lb], 2, d)?;
        Ok(vec![("c", backend::gemm(&spec, 1.0, &a, &b, vec![lc])?)])
    }

    #[test]
    fn a_row_whose_kernel_did_not_launch_fails_though_its_values_agree() {
        let case = Case::new(
            "probe",
            "forward",
            LOOSE,
            &["gemm_128x128_f32"],
            big_product,
        );
        let row = run_case(Device::CudaEmulated, &case, false);
        assert_eq!(row.status, Status::Fail);
        assert!(row.worst.is_some_and(|(_, w)| w.passed()));
        assert!(
            row.detail.contains("did not run gemm_128x128_f32"),
            "{}",
            row.detail
        );
        let large = KernelPolicy {
            large_tiles: true,
            ..KernelPolicy::DEFAULT
        };
        // The row's policy is its own: a caller's scope does not send a default row elsewhere.
        let row = cuda::with_kernel_policy(Device::CudaEmulated, large, || {
            run_case(Device::CudaEmulated, &case, false)
        });
        assert_eq!(row.status, Status::Fail, "{}", row.detail);
        let before = cuda::kernel_policy(Device::CudaEmulated).unwrap();
        let row = run_case(Device::CudaEmulated, &case.with_policy(large), false);
        assert_eq!(row.status, Status::Pass, "{}", row.detail);
        assert_eq!(
            cuda::kernel_policy(Device::CudaEmulated).unwrap(),
            before,
            "the row's policy outlived it"
        );
    }

    #[test]
    fn a_row_that_errs_or_panics_on_the_device_fails_with_the_reason() {
        let errs = Case::new("probe", "forward", LOOSE, &[], |d| match d {
            Device::Cpu => Ok(vec![("x", cases::uniform(&[3], 1, d)?)]),
            _ => Err(invalid("probe", "refused on a device")),
        });
        let row = run_case(Device::CudaEmulated, &errs, false);
        assert_eq!(row.status, Status::Fail);
        assert!(row.detail.contains("refused on a device"), "{}", row.detail);
        let panics = Case::new("probe", "forward", LOOSE, &[], |d| match d {
            Device::Cpu => Ok(vec![("x", cases::uniform(&[3], 1, d)?)]),
            _ => panic!("a bug in a launcher"),
        });
        let row = run_case(Device::CudaEmulated, &panics, false);
        assert_eq!(row.status, Status::Fail);
        assert!(
            row.detail.contains("panicked: a bug in a launcher"),
            "{}",
            row.detail
        );
        // Different output counts are a failure too.
        let fewer = Case::new("probe", "forward", LOOSE, &[], |d| {
            let x = cases::uniform(&[3], 1, d)?;
            Ok(match d {
                Device::Cpu => vec![("x", x.clone()), ("y", x)],
                _ => vec![("x", x)],
            })
        });
        let row = run_case(Device::CudaEmulated, &fewer, false);
        assert_eq!(row.status, Status::Fail);
        assert!(
            row.detail
                .contains("1 outputs on cuda-emulated, 2 on the CPU"),
            "{}",
            row.detail
        );
    }

    #[test]
    fn every_row_has_a_distinct_family_and_check_and_names_its_kernels() {
        let all = cases::all();
        let names = crate::cuda::kernel_names();
        for (i, case) in all.iter().enumerate() {
            assert!(
                !all[..i]
                    .iter()
                    .any(|c| c.family == case.family && c.check == case.check),
                "{} / {} twice",
                case.family,
                case.check
            );
            assert!(!case.kernels.is_empty(), "{}", case.family);
            for kernel in case.kernels.iter().chain(case.needs.iter().map(|n| &n.0)) {
                assert!(
                    names.contains(kernel),
                    "{}: no kernel {kernel}",
                    case.family
                );
            }
        }
    }
}
