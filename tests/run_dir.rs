//! The run directory (issue 16): one writer per directory (a lock naming its holder; a stale one
//! taken over), checks before anything in it changes (another run's results, the checkpoint to
//! resume, the history), `--resume` continuing exactly what the checkpoint holds, temporary files
//! of killed runs cleaned, and Ctrl-C on a real `kiln train` process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::data::FashionMnist;
use kiln::nn::Architecture;
use kiln::train::{
    load_checkpoint, load_run_checkpoint, read_metrics_csv, save_checkpoint, train, CheckpointMeta,
    RunSummary, TrainConfig, TrainError, LOCK_FILE,
};
use kiln::Device;

/// A fresh directory under the system temp dir, removed when the guard drops.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kiln-run-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tests' small learnable Fashion-MNIST set ([`kiln::testing::write_patch_fashion_mnist`]).
fn write_data(dir: &Path, train: usize, test: usize) {
    kiln::testing::write_patch_fashion_mnist(dir, train, test)
}

fn config(out: &Path) -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 16,
        lr: 0.02,
        device: Device::Cpu,
        seed: 7,
        val_fraction: 0.2,
        out: out.to_path_buf(),
        ..TrainConfig::default()
    }
}

fn train_on(data: &Path, config: &TrainConfig) -> Result<RunSummary, TrainError> {
    train(config, &FashionMnist::load(Some(data))?)
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file's bytes in `dir`, to show that a refused run changed nothing.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names_in(dir)
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

fn kiln_train(args: &[&str], data: &Path, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
    command
        .args(["train", "--device", "cpu"])
        .args(args)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    command
}

fn output(mut command: Command) -> (Output, String) {
    let out = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// A long `kiln train` in the background (killed on drop if still running).
struct Background(Child);

impl Background {
    fn start(data: &Path, out: &Path, extra: &[&str]) -> Background {
        let mut command = kiln_train(
            &[
                &[
                    "--epochs",
                    "100000",
                    "--batch-size",
                    "8",
                    "--limit-train",
                    "64",
                ],
                extra,
            ]
            .concat(),
            data,
            out,
        );
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        Background(command.spawn().unwrap())
    }

    fn sigint(&self) {
        // SAFETY: kill only sends a signal to the child process this test started.
        let status = unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGINT) };
        assert_eq!(status, 0);
    }

    /// Waits (at most a minute) for the process to end: its exit code and standard error.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "kiln train did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut err = String::new();
        use std::io::Read;
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (self.0.wait().unwrap().code(), err)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (at most a minute) until `ready` holds.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rows(out: &Path) -> usize {
    read_metrics_csv(out.join("metrics.csv")).map_or(0, |r| r.len())
}

/// Defect 1: a second run on a running run's directory fails at once naming the first; the
/// first one's Ctrl-C (defect 7) saves, plots, says how to resume, exits 130 and leaves no lock.
#[test]
fn a_second_run_is_refused_and_ctrl_c_stops_the_first_cleanly() {
    let root = TempDir::new("two-runs");
    write_data(&root.0, 80, 20);
    let out = root.0.join("run");
    let first = Background::start(&root.0, &out, &[]);
    wait_until("two finished epochs", || rows(&out) >= 2);

    let started = Instant::now();
    let (second, text) = output(kiln_train(&["--epochs", "1", "--seed", "2"], &root.0, &out));
    assert!(!second.status.success(), "{text}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let pid = first.0.id();
    assert!(
        text.contains("in use by another kiln run")
            && text.contains(&format!("pid {pid}"))
            && text.contains("started ")
            && text.contains(&out.display().to_string()),
        "{text}"
    );

    first.sigint();
    let (code, err) = first.wait();
    assert_eq!(code, Some(130), "{err}");
    let command = format!("kiln train --resume --out {}", out.display());
    assert!(
        err.contains("interrupted") && err.contains(&command),
        "{err}"
    );
    let names = names_in(&out);
    for file in [
        "last.safetensors",
        "best.safetensors",
        "metrics.csv",
        "curves.png",
        "filters.png",
    ] {
        assert!(
            names.contains(&file.to_string()),
            "{file} missing: {names:?}"
        );
    }
    assert!(
        names.iter().all(|n| n != LOCK_FILE && !n.ends_with(".tmp")),
        "{names:?}"
    );
    // The checkpoint is the last finished epoch, and the history ends there.
    let (_, meta) = load_run_checkpoint(out.join("last.safetensors")).unwrap();
    let history = read_metrics_csv(out.join("metrics.csv")).unwrap();
    assert_eq!(history.len(), meta.epoch + 1);
    assert!(
        err.contains(&format!("after epoch {}", meta.epoch + 1)),
        "{err}"
    );

    // The printed command (with the data and more epochs) continues it; the rows go on in order.
    let epochs = (meta.epoch + 2).to_string();
    let (resumed, text) = output(kiln_train(
        &["--resume", "--epochs", &epochs],
        &root.0,
        &out,
    ));
    assert!(resumed.status.success(), "{text}");
    let history = read_metrics_csv(out.join("metrics.csv")).unwrap();
    let numbers: Vec<usize> = history.iter().map(|r| r.epoch).collect();
    assert_eq!(numbers, (1..=meta.epoch + 2).collect::<Vec<_>>());
}

/// A second Ctrl-C exits at once, removing the lock and any temporary file.
#[test]
fn a_second_ctrl_c_exits_at_once_without_leaving_a_lock() {
    let root = TempDir::new("double-ctrl-c");
    write_data(&root.0, 80, 20);
    let out = root.0.join("run");
    let run = Background::start(&root.0, &out, &[]);
    wait_until("a finished epoch", || rows(&out) >= 1);
    run.sigint();
    std::thread::sleep(Duration::from_millis(5));
    run.sigint();
    let (code, err) = run.wait();
    assert_eq!(code, Some(130), "{err}");
    let names = names_in(&out);
    assert!(
        names.iter().all(|n| n != LOCK_FILE && !n.ends_with(".tmp")),
        "{names:?}"
    );
}

/// A lock whose process is gone is taken over with a notice; a live one refuses the run and
/// leaves the directory as it was.
#[test]
fn a_stale_lock_is_taken_over_and_a_live_one_refuses() {
    let root = TempDir::new("stale-lock");
    write_data(&root.0, 40, 10);
    let out = root.0.join("run");
    std::fs::create_dir_all(&out).unwrap();
    let lock = out.join(LOCK_FILE);
    // 999999999 is above any pid_max: no such process.
    std::fs::write(&lock, "pid 999999999\nstarted 2020-01-01 00:00:00 UTC\n").unwrap();
    let (run, text) = output(kiln_train(&["--epochs", "1"], &root.0, &out));
    assert!(run.status.success(), "{text}");
    assert!(
        text.contains("taking over") && text.contains("999999999"),
        "{text}"
    );
    assert!(!lock.exists());

    let live = format!(
        "pid {}\nstarted 2020-01-01 00:00:00 UTC\n",
        std::process::id()
    );
    std::fs::write(&lock, &live).unwrap();
    let before = snapshot(&out);
    let err = train_on(
        &root.0,
        &TrainConfig {
            resume: true,
            epochs: 2,
            ..config(&out)
        },
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::RunDirLocked { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert_eq!(
        snapshot(&out),
        before,
        "a refused run changed {}",
        out.display()
    );
}

/// Defect 2: a new run in a directory holding another run's results is refused before it writes
/// anything (so a failing one cannot wipe the history); --overwrite replaces them.
#[test]
fn a_new_run_over_results_is_refused_unless_overwrite() {
    let root = TempDir::new("overwrite");
    write_data(&root.0, 40, 10);
    let out = root.0.join("run");
    train_on(&root.0, &config(&out)).unwrap();
    let before = snapshot(&out);

    let (refused, text) = output(kiln_train(&["--lr", "1e4"], &root.0, &out));
    assert!(!refused.status.success());
    assert!(
        text.contains("holds another run's results")
            && text.contains("metrics.csv")
            && text.contains("--overwrite")
            && text.contains("--resume"),
        "{text}"
    );
    assert_eq!(snapshot(&out), before);
    // The old run still resumes.
    let resumed = train_on(
        &root.0,
        &TrainConfig {
            epochs: 2,
            resume: true,
            ..config(&out)
        },
    )
    .unwrap();
    assert_eq!(resumed.history.len(), 2);

    let (replaced, text) = output(kiln_train(
        &["--overwrite", "--epochs", "1", "--batch-size", "8"],
        &root.0,
        &out,
    ));
    assert!(replaced.status.success(), "{text}");
    assert_eq!(rows(&out), 1, "only the new run's history");
    let (_, meta) = load_run_checkpoint(out.join("best.safetensors")).unwrap();
    assert_eq!(meta.batch_size, Some(8));
    let mut help = Command::new(env!("CARGO_BIN_EXE_kiln"));
    help.args(["train", "--help"]);
    let help = output(help);
    assert!(help.1.contains("--overwrite"), "{}", help.1);
}

/// Defect 3: --resume alone continues the checkpoint's run exactly (its model, batch size, seed,
/// optimizer, ...); a flag that differs is refused naming it, the checkpoint's value and the way
/// to a fresh run.
#[test]
fn resume_reads_the_run_from_the_checkpoint_and_refuses_other_flags() {
    let root = TempDir::new("resume-flags");
    write_data(&root.0, 40, 10);
    let (whole, split) = (root.0.join("whole"), root.0.join("split"));
    let flags = [
        "--model",
        "lenet5-classic",
        "--batch-size",
        "8",
        "--seed",
        "3",
        "--optimizer",
        "adam",
        "--lr",
        "0.001",
        "--augment",
    ];
    let run = |extra: &[&str], out: &Path| {
        output(kiln_train(&[&flags[..], extra].concat(), &root.0, out))
    };
    let (ok, text) = run(&["--epochs", "2"], &whole);
    assert!(ok.status.success(), "{text}");
    let (ok, text) = run(&["--epochs", "1"], &split);
    assert!(ok.status.success(), "{text}");
    let (ok, text) = output(kiln_train(&["--resume", "--epochs", "2"], &root.0, &split));
    assert!(ok.status.success(), "{text}");
    let (a, b) = (
        load_checkpoint(whole.join("last.safetensors")).unwrap(),
        load_checkpoint(split.join("last.safetensors")).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((name, ta), (_, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(
            ta.to_vec::<f32>().unwrap(),
            tb.to_vec::<f32>().unwrap(),
            "{name}"
        );
    }
    let meta = CheckpointMeta::from_metadata(&b.metadata, &split).unwrap();
    assert_eq!(meta.model, Architecture::LeNet5Classic);

    let before = snapshot(&split);
    for (flag, value, saved) in [
        ("--model", "lenet5", "with --model lenet5-classic"),
        ("--batch-size", "16", "with --batch-size 8"),
        ("--seed", "4", "with --seed 3"),
        ("--optimizer", "sgd", "with --optimizer adam"),
    ] {
        let (refused, text) = output(kiln_train(&["--resume", flag, value], &root.0, &split));
        assert!(!refused.status.success(), "{flag} {value} was accepted");
        assert!(
            text.contains(saved)
                && text.contains(&format!("{flag} {value}"))
                && text.contains("--out NEW_DIR")
                && text.contains("last.safetensors"),
            "{text}"
        );
    }
    // A flag that agrees is accepted.
    let (ok, text) = output(kiln_train(
        &[
            "--resume",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--model",
            "lenet5-classic",
        ],
        &root.0,
        &split,
    ));
    assert!(ok.status.success(), "{text}");
    assert_ne!(snapshot(&split), before);
    // Through the library: the switch that was on must stay on.
    let err = train_on(
        &root.0,
        &TrainConfig {
            resume: true,
            epochs: 4,
            ..config(&split)
        },
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::ResumeMismatch { .. }), "{err}");
}

/// Defect 4: a --resume that fails (here: a checkpoint missing a tensor its model has) changes no
/// file, metrics.csv included, even when it would have dropped rows.
#[test]
fn a_failed_resume_leaves_the_history_untouched() {
    let root = TempDir::new("failed-resume");
    write_data(&root.0, 40, 10);
    let out = root.0.join("run");
    train_on(
        &root.0,
        &TrainConfig {
            epochs: 2,
            ..config(&out)
        },
    )
    .unwrap();
    let last = out.join("last.safetensors");
    let (ck, mut meta) = load_run_checkpoint(&last).unwrap();
    meta.epoch = 0; // resuming would keep only the first row
    let named: Vec<(String, &kiln::Tensor)> = ck
        .tensors
        .iter()
        .filter(|(n, _)| n != "model.0.weight")
        .map(|(n, t)| (n.clone(), t))
        .collect();
    save_checkpoint(&last, &named, &meta.to_metadata().unwrap()).unwrap();
    let before = snapshot(&out);
    let err = train_on(
        &root.0,
        &TrainConfig {
            epochs: 3,
            resume: true,
            ..config(&out)
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("last.safetensors") && msg.contains("model.0.weight"),
        "{msg}"
    );
    assert_eq!(snapshot(&out), before);
    assert_eq!(rows(&out), 2);
}

/// Rows past the checkpoint's epoch (a run killed between the row and the checkpoint) are
/// dropped, as those epochs are trained again; the history is otherwise appended to.
#[test]
fn rows_past_the_checkpoint_are_dropped_and_trained_again() {
    let root = TempDir::new("rows-past");
    write_data(&root.0, 40, 10);
    let out = root.0.join("run");
    train_on(&root.0, &config(&out)).unwrap();
    let csv = out.join("metrics.csv");
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("2,123,0.5,,,,0.02,1,1\n");
    std::fs::write(&csv, &text).unwrap();
    let summary = train_on(
        &root.0,
        &TrainConfig {
            epochs: 2,
            resume: true,
            ..config(&out)
        },
    )
    .unwrap();
    let history = read_metrics_csv(&csv).unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!((history[0].epoch, history[1].epoch), (1, 2));
    assert_ne!(history[1].train_loss, 123.0, "the stale row was kept");
    assert_eq!(summary.history, history);
    let first_row = text.lines().nth(1).unwrap();
    let now = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        now.lines().nth(1),
        Some(first_row),
        "the kept row was rewritten"
    );
}

/// Defect 6: temporary files of killed runs are removed at the next start (a live process's are
/// kept), and a run leaves none behind.
#[test]
fn temporary_files_of_killed_runs_are_removed_at_the_next_start() {
    let root = TempDir::new("temps");
    write_data(&root.0, 40, 10);
    let out = root.0.join("run");
    train_on(&root.0, &config(&out)).unwrap();
    let dead = ".last.safetensors.999999999.3.tmp";
    let live = format!(".best.safetensors.{}.0.tmp", std::process::id());
    std::fs::write(out.join(dead), "partial").unwrap();
    let (run, text) = output(kiln_train(&["--resume", "--epochs", "2"], &root.0, &out));
    assert!(run.status.success(), "{text}");
    assert!(
        text.contains("removed 1 temporary file") && text.contains(dead),
        "{text}"
    );
    assert!(names_in(&out)
        .iter()
        .all(|n| !n.ends_with(".tmp") && n != LOCK_FILE));
    std::fs::write(out.join(&live), "mine").unwrap();
    let (run, text) = output(kiln_train(&["--resume", "--epochs", "3"], &root.0, &out));
    assert!(run.status.success(), "{text}");
    assert!(
        out.join(&live).exists(),
        "a live process's temporary file was removed"
    );
}
