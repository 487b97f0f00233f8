//! `kiln::test_device!` itself: the names it generates, a deselected device skipping (and
//! passing) with the SKIPPED line the GPU runner counts, and a failure naming its device. The
//! skip and the failure are seen from outside: this test executable runs itself on one test.

use std::process::Command;

use kiln::Device;

/// Whether the planted failure below fails: only in the child processes of this file's tests.
const PLANT_VAR: &str = "KILN_TESTING_MACRO_PLANT_FAILURE";

fn probe(_device: Device) {}
kiln::test_device!(probe);

fn gpu_probe(device: Device) {
    assert_ne!(device, Device::Cpu, "the gpu variant never runs on the CPU");
}
kiln::test_device!(gpu_probe, gpu);

fn fallible_probe(_device: Device) -> kiln::Result<()> {
    Ok(())
}
kiln::test_device!(fallible_probe);

/// Fails on every device, by assertion or by error, when the child process is told to.
fn planted_failure(device: Device) -> kiln::Result<()> {
    match std::env::var(PLANT_VAR).as_deref() {
        Ok("panic") => panic!("planted panic on {device:?}"),
        Ok("error") => kiln::Tensor::from_vec(vec![1.0f32], &[2], device).map(drop),
        _ => Ok(()),
    }
}
kiln::test_device!(planted_failure);

#[test]
fn generates_a_test_per_device() {
    // These are the generated functions, called by name: the test compiles only if they exist.
    let all: [fn(); 3] = [probe_cpu, probe_emulated, probe_cuda];
    let gpu: [fn(); 2] = [gpu_probe_emulated, gpu_probe_cuda];
    for test in all.into_iter().chain(gpu) {
        test();
    }
    fallible_probe_cpu();
}

/// Runs this executable on the one test `name` with `envs`; its exit success and output.
fn run_alone(name: &str, envs: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().expect("the test executable");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .output()
        .expect("the test executable runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_deselected_device_prints_skipped_and_passes() {
    let (passed, out) = run_alone(
        "planted_failure_cpu",
        &[("KILN_TEST_DEVICES", "emulated"), (PLANT_VAR, "panic")],
    );
    assert!(passed, "a skipped test fails:\n{out}");
    assert!(
        out.contains("SKIPPED planted_failure_cpu on cpu: KILN_TEST_DEVICES leaves it out"),
        "{out}"
    );
    assert!(out.contains("1 passed"), "{out}");
}

#[test]
fn a_selected_device_runs_the_body() {
    let (passed, out) = run_alone(
        "planted_failure_emulated",
        &[("KILN_TEST_DEVICES", "emulated"), (PLANT_VAR, "panic")],
    );
    assert!(!passed, "the planted panic did not fail the test:\n{out}");
    assert!(!out.contains("SKIPPED"), "{out}");
}

#[test]
fn a_failing_body_names_its_device() {
    for (plant, cause) in [
        ("panic", "planted panic on CudaEmulated"),
        ("error", "do not fill shape [2]"),
    ] {
        let (passed, out) = run_alone(
            "planted_failure_emulated",
            &[("KILN_TEST_DEVICES", "cpu,emulated"), (PLANT_VAR, plant)],
        );
        assert!(!passed, "the planted {plant} did not fail the test:\n{out}");
        let named = out
            .lines()
            .find(|l| l.contains("planted_failure_emulated failed on cuda-emulated: "))
            .unwrap_or_else(|| panic!("no failure naming the device:\n{out}"));
        assert!(named.contains(cause), "{plant}: {named}");
    }
}

/// The GPU bundle's runner, whose skip patterns the SKIPPED lines must (or must not) match.
const RUNNER: &str = include_str!("../scripts/gpu-run.sh");

/// Whether scripts/gpu-run.sh would count `line` as GPU work skipped on a GPU host: its
/// `gpu_skip_pattern` with the compute capability 9.0 additions, through `grep -E` as it uses it.
fn runner_counts_as_gpu_skip(line: &str) -> bool {
    let quoted = |start: &str, end: char| {
        let from = RUNNER.find(start).expect("gpu_skip_pattern in gpu-run.sh") + start.len();
        RUNNER[from..].split(end).next().unwrap().to_string()
    };
    let base = quoted("gpu_skip_pattern='", '\'');
    let hopper = quoted("gpu_skip_pattern=\"$gpu_skip_pattern|", '"');
    grep_matches(&format!("{base}|{hopper}"), line)
}

/// Whether `grep -E pattern` finds `line`.
fn grep_matches(pattern: &str, line: &str) -> bool {
    use std::io::Write;
    let mut grep = Command::new("grep")
        .args(["-qE", pattern])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("grep runs");
    let mut stdin = grep.stdin.take().expect("grep's stdin");
    stdin.write_all(line.as_bytes()).expect("grep reads");
    drop(stdin);
    grep.wait().expect("grep ends").success()
}

fn skipped_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("SKIPPED "))
        .unwrap_or_else(|| panic!("no SKIPPED line:\n{out}"))
}

/// Without a usable GPU the CUDA half says why, in the words scripts/gpu-run.sh greps for.
#[test]
fn an_unusable_gpu_prints_skipped_with_the_runners_words() {
    if kiln::cuda::cuda_unavailable_reason(0).is_none() {
        eprintln!("a GPU is usable here: the skip of an unusable one is not seen");
        return;
    }
    let (passed, out) = run_alone("probe_cuda", &[("KILN_TEST_DEVICES", "cuda")]);
    assert!(passed, "{out}");
    let line = skipped_line(&out);
    assert!(
        line.starts_with("SKIPPED probe_cuda on cuda: skipping the real-GPU run: "),
        "{line}"
    );
    assert!(runner_counts_as_gpu_skip(line), "gpu-run.sh misses: {line}");
}

/// On a GPU host the runner sets KILN_TEST_DEVICES=cuda: the CPU and emulation halves it leaves
/// out say SKIPPED, which must not fail the suite as skipped GPU work.
#[test]
fn a_deselected_half_is_no_gpu_skip_for_the_runner() {
    for test in ["probe_cpu", "probe_emulated"] {
        let (passed, out) = run_alone(test, &[("KILN_TEST_DEVICES", "cuda")]);
        assert!(passed, "{out}");
        let line = skipped_line(&out);
        assert!(line.contains("KILN_TEST_DEVICES leaves it out"), "{line}");
        assert!(
            !runner_counts_as_gpu_skip(line),
            "gpu-run.sh counts: {line}"
        );
    }
    assert!(runner_counts_as_gpu_skip(
        "parity: skipping the real-GPU run: no GPU"
    ));
}

/// A suite not yet converted, looping over `gpu_devices_under_test`.
#[test]
fn legacy_loop() {
    for device in kiln::testing::gpu_devices_under_test("legacy_loop") {
        assert!(device.is_gpu());
    }
}

/// Its halves left out say SKIPPED in the same words as the macro's.
#[test]
fn a_loop_over_devices_skips_in_the_same_words() {
    let (passed, out) = run_alone("legacy_loop", &[("KILN_TEST_DEVICES", "cpu")]);
    assert!(passed, "{out}");
    assert!(
        out.contains("SKIPPED legacy_loop on emulated: KILN_TEST_DEVICES leaves it out"),
        "{out}"
    );
    assert!(!runner_counts_as_gpu_skip(skipped_line(&out)), "{out}");
}
