//! The GPU bundle's runner (scripts/gpu-run.sh, shipped as run.sh) on a fake bundle whose
//! executables are small shell scripts: one suite passes, one hangs, one fails, and the kiln
//! command answers `selftest` and `info`. Checks what the GPU window depends on: the deadline holds,
//! a hang costs only its own step and is recorded as TIMEOUT with the test that was running, the
//! output folder never holds more than a few files, and the packed results can be read back.
//! (`make gpu-bundle-dryrun` runs the real bundle on the kernel emulation the same way.)

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    let status = Command::new("chmod").arg("+x").arg(path).status().unwrap();
    assert!(status.success());
}

const PASSING_SUITE: &str = r#"#!/usr/bin/env bash
echo "running 3 tests"
for t in parity::relu parity::pool parity::gemm; do echo "test $t ... ok"; done
echo
echo "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
"#;

const HANGING_SUITE: &str = r#"#!/usr/bin/env bash
echo "running 2 tests"
echo "test planted::first ... ok"
printf 'test planted::hang ... '
exec sleep 1000
"#;

/// libtest's output under --nocapture: a failing test's panic comes between its name and FAILED.
const FAILING_SUITE: &str = r#"#!/usr/bin/env bash
echo "running 2 tests"
echo "test broken::fine ... ok"
echo "test broken::wrong ... thread 'broken::wrong' panicked at tests/broken.rs:3:5:"
echo "1 of 5 elements differ"
echo "FAILED"
echo
echo "failures:"
echo
echo "failures:"
echo "    broken::wrong"
echo
echo "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
exit 101
"#;

/// A suite whose GPU half could not run: on a GPU host that is a failure, not a pass.
const GPU_SKIPPING_SUITE: &str = r#"#!/usr/bin/env bash
echo "running 1 test"
echo "parity: skipping the real-GPU run: libcuda (the NVIDIA driver) was not found"
echo "test parity::relu ... ok"
echo
echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s"
"#;

/// A suite that crashes in a test (no result line).
const CRASHING_SUITE: &str = r#"#!/usr/bin/env bash
echo "running 2 tests"
echo "test crash::first ... ok"
printf 'test crash::second ... '
kill -SEGV $$
"#;

const FAKE_KILN: &str = r#"#!/usr/bin/env bash
case "$1" in
  selftest)
    json=""
    while [ $# -gt 0 ]; do [ "$1" = --json ] && json="$2"; shift; done
    echo "family  check  status"
    echo "relu    fwd    pass"
    [ -z "$json" ] || echo '{"family":"relu","status":"pass"}' >"$json"
    echo "verdict: all 1 rows passed";;
  info) echo "kiln 0.1.0 (fake)"; echo "best device: cpu";;
  *) echo "fake kiln: $*" >&2; exit 3;;
esac
"#;

const FAKE_BENCH: &str = r#"#!/usr/bin/env bash
echo '{"source":"kiln","workload":"relu_fwd 2^20","ms":0.01}' >>"$KILN_BENCH_PROGRESS"
echo "  relu 2^20: 0.0100 ms"
"#;

/// A bundle as scripts/gpu-bundle.sh lays it out, with bin/ packed into bin.tar.gz.
fn fake_bundle(root: &Path) {
    let stage = root.join("stage");
    fs::create_dir_all(stage.join("bin")).unwrap();
    write_executable(&stage.join("bin/fast_suite"), PASSING_SUITE);
    write_executable(&stage.join("bin/planted_hang"), HANGING_SUITE);
    write_executable(&stage.join("bin/failing_suite"), FAILING_SUITE);
    write_executable(&stage.join("bin/gpu_skipping_suite"), GPU_SKIPPING_SUITE);
    write_executable(&stage.join("bin/crashing_suite"), CRASHING_SUITE);
    write_executable(&stage.join("bin/cuda_kernels"), FAKE_BENCH);
    write_executable(&stage.join("kiln"), FAKE_KILN);
    let bundle = root.join("bundle");
    fs::create_dir_all(&bundle).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(&stage)
        .args(["-czf"])
        .arg(bundle.join("bin.tar.gz"))
        .args(["bin", "kiln"])
        .status()
        .unwrap();
    assert!(status.success());
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::copy(root_dir.join("scripts/gpu-run.sh"), bundle.join("run.sh")).unwrap();
    fs::copy(
        root_dir.join("bench/gpu_report.py"),
        bundle.join("gpu_report.py"),
    )
    .unwrap();
    fs::write(bundle.join("COMMIT"), "0123456789ab\n").unwrap();
    fs::write(bundle.join("BUILD_INFO"), "glibc: 2.34\n").unwrap();
    fs::write(
        bundle.join("sass-resources.txt"),
        "Function relu_fwd_f32: REG:16\n",
    )
    .unwrap();
    fs::write(
        bundle.join("tests.txt"),
        "fast_suite\nplanted_hang\nfailing_suite\ncrashing_suite\n",
    )
    .unwrap();
}

fn summary_line<'a>(summary: &'a str, step: &str) -> &'a str {
    summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(step))
        .unwrap_or_else(|| panic!("no {step} line in the summary:\n{summary}"))
}

#[test]
fn the_runner_keeps_its_deadline_cuts_a_hang_and_packs_every_step() {
    let dir = tempfile::tempdir().unwrap();
    fake_bundle(dir.path());
    let out = dir.path().join("out");
    let budget = 40;
    let began = Instant::now();
    let run = Command::new("bash")
        .arg(dir.path().join("bundle/run.sh"))
        .args(["--out"])
        .arg(&out)
        .args(["--budget", &budget.to_string(), "--device", "emulated"])
        .env("KILN_RUN_SUITE_CAP", "4")
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        took < Duration::from_secs(budget + 5),
        "ran {took:?} on a {budget} s budget:\n{stdout}"
    );
    // A failed and a timed-out step make the run fail.
    assert!(!run.status.success(), "{stdout}");

    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    // The output carries the summary as it goes.
    assert!(stdout.contains(summary_line(&summary, "tests-planted_hang")));
    assert!(summary_line(&summary, "unpack").contains("PASS"));
    assert!(summary_line(&summary, "selftest").contains("PASS"));
    assert!(summary_line(&summary, "preflight").contains("PASS"));
    let fast = summary_line(&summary, "tests-fast_suite");
    assert!(
        fast.contains("PASS") && fast.contains("passed=3 failed=0"),
        "{fast}"
    );
    let hang = summary_line(&summary, "tests-planted_hang");
    assert!(hang.contains("TIMEOUT"), "{hang}");
    assert!(hang.contains("cut at its 4s cap"), "{hang}");
    assert!(hang.contains("running: planted::hang"), "{hang}");
    let failing = summary_line(&summary, "tests-failing_suite");
    assert!(
        failing.contains("FAIL") && failing.contains("passed=1 failed=1"),
        "{failing}"
    );
    assert!(failing.contains("exit 101"), "{failing}");
    assert!(failing.contains("failed: broken::wrong"), "{failing}");
    let crash = summary_line(&summary, "tests-crashing_suite");
    assert!(
        crash.contains("FAIL") && crash.contains("killed by signal 11"),
        "{crash}"
    );
    assert!(crash.contains("running: crash::second"), "{crash}");
    // Without a GPU the sanitizers are skipped with the reason, not passed.
    assert!(summary_line(&summary, "memcheck-parity").contains("SKIP"));
    assert!(summary_line(&summary, "racecheck-wgmma").contains("SKIP"));
    assert!(summary_line(&summary, "bench-kiln").contains("PASS"));
    // The report is made from the rows the benchmark appended as it measured them.
    assert!(summary_line(&summary, "bench-report").contains("PASS"));
    assert!(summary_line(&summary, "train-lenet5").contains("no data/"));
    assert!(summary.contains("# finished in"), "{summary}");

    // At most 8 files may come back from the GPU host; the runner leaves two.
    let files: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() <= 3, "{files:?}");
    assert!(files.contains(&"results.tar.gz".to_string()), "{files:?}");

    // The packed evidence: every step's log and the benchmark rows written as measured.
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(out.join("results.tar.gz"))
        .output()
        .unwrap();
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    for name in [
        "summary.txt",
        "selftest.log",
        "selftest.jsonl",
        "preflight.log",
        "tests-fast_suite.log",
        "tests-planted_hang.log",
        "tests-failing_suite.log",
        "kiln-progress.jsonl",
        "gpu-report.md",
    ] {
        assert!(listing.contains(name), "{name} not packed:\n{listing}");
    }
}

#[test]
fn a_budget_too_small_for_a_step_skips_it_instead_of_overrunning() {
    let dir = tempfile::tempdir().unwrap();
    fake_bundle(dir.path());
    let out = dir.path().join("out");
    // 30 s (the least the runner takes) with 20 s suite caps: the hang takes what its phase leaves,
    // and later steps are skipped once the deadline is near; the whole run still ends in time.
    let began = Instant::now();
    let run = Command::new("bash")
        .arg(dir.path().join("bundle/run.sh"))
        .arg("--out")
        .arg(&out)
        .args(["--budget", "30", "--device", "emulated"])
        .env("KILN_RUN_SUITE_CAP", "20")
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(took < Duration::from_secs(35), "ran {took:?}:\n{stdout}");
    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    let hang = summary_line(&summary, "tests-planted_hang");
    assert!(hang.contains("TIMEOUT"), "{hang}");
    assert!(
        summary
            .lines()
            .any(|l| l.contains(" SKIP ") && l.contains("no time left")),
        "{summary}"
    );

    // Bad arguments are refused with the flag named.
    let bad = Command::new("bash")
        .arg(dir.path().join("bundle/run.sh"))
        .args(["--budget", "10", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--budget 10"));
}

#[test]
fn on_a_gpu_host_a_suite_that_skipped_its_gpu_half_fails() {
    let dir = tempfile::tempdir().unwrap();
    fake_bundle(dir.path());
    let bundle = dir.path().join("bundle");
    fs::write(bundle.join("tests.txt"), "gpu_skipping_suite\nfast_suite\n").unwrap();
    let out = dir.path().join("out");
    let run = Command::new("bash")
        .arg(bundle.join("run.sh"))
        .arg("--out")
        .arg(&out)
        .args(["--budget", "30", "--device", "cuda"])
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let summary = fs::read_to_string(out.join("summary.txt")).unwrap();
    let skipping = summary_line(&summary, "tests-gpu_skipping_suite");
    assert!(
        skipping.contains("FAIL") && skipping.contains("real-GPU work skipped"),
        "{skipping}"
    );
    assert!(summary_line(&summary, "tests-fast_suite").contains("PASS"));
    // No compute-sanitizer here: every sanitizer step says so instead of failing or passing.
    let memcheck = summary_line(&summary, "memcheck-parity");
    assert!(
        memcheck.contains("SKIP") && memcheck.contains("not found"),
        "{memcheck}"
    );
}
