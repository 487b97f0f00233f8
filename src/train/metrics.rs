//! Per-epoch metrics and `metrics.csv`: a header and one row per epoch, appended and flushed to
//! disk as each epoch ends (a crash keeps every finished epoch). Resuming appends; only rows past
//! the resumed checkpoint are dropped, by replacing the file atomically.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::atomic::write_atomically;
use super::TrainError;

/// What one epoch did. Accuracies are fractions in [0, 1]; `None` where a set was not evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub learning_rate: f64,
    /// Wall-clock seconds for the epoch (training and evaluation).
    pub seconds: f64,
    /// Training images per second.
    pub images_per_sec: f64,
}

/// The CSV header, in column order.
pub const METRICS_HEADER: &str = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,\
test_accuracy,learning_rate,seconds,images_per_sec";

const COLUMNS: usize = 9;

impl EpochMetrics {
    /// The CSV row (no newline). Numbers are written in Rust's shortest round-trip form, so
    /// reading the row back gives the same values; a missing value is an empty cell.
    pub fn csv_row(&self) -> String {
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{},{},{},{}",
            self.epoch,
            self.train_loss,
            self.train_accuracy,
            opt(self.val_loss),
            opt(self.val_accuracy),
            opt(self.test_accuracy),
            self.learning_rate,
            self.seconds,
            self.images_per_sec
        )
    }

    fn parse_row(row: &str) -> Result<EpochMetrics, String> {
        let cells: Vec<&str> = row.split(',').collect();
        if cells.len() != COLUMNS {
            return Err(format!("{} cells, expected {COLUMNS}", cells.len()));
        }
        let num = |i: usize| -> Result<f64, String> {
            cells[i]
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("cell {} is {:?}, not a number", i + 1, cells[i]))
        };
        let opt = |i: usize| -> Result<Option<f64>, String> {
            if cells[i].trim().is_empty() {
                Ok(None)
            } else {
                num(i).map(Some)
            }
        };
        Ok(EpochMetrics {
            epoch: cells[0]
                .trim()
                .parse()
                .map_err(|_| format!("epoch {:?} is not a whole number", cells[0]))?,
            train_loss: num(1)?,
            train_accuracy: num(2)?,
            val_loss: opt(3)?,
            val_accuracy: opt(4)?,
            test_accuracy: opt(5)?,
            learning_rate: num(6)?,
            seconds: num(7)?,
            images_per_sec: num(8)?,
        })
    }
}

/// Reads a metrics CSV written by [`MetricsCsv`].
pub fn read_metrics_csv(path: impl AsRef<Path>) -> Result<Vec<EpochMetrics>, TrainError> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).map_err(|e| TrainError::io("reading metrics", path, e))?;
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.trim() == METRICS_HEADER => {}
        Some(h) => {
            return Err(TrainError::format(
                path,
                format!("header is {h:?}, expected {METRICS_HEADER:?}"),
            ))
        }
        None => return Err(TrainError::format(path, "empty file: no header")),
    }
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            EpochMetrics::parse_row(l)
                .map_err(|why| TrainError::format(path, format!("line {}: {why}", i + 2)))
        })
        .collect()
}

fn ends_in_newline(path: &Path) -> Result<bool, TrainError> {
    let text = std::fs::read(path).map_err(|e| TrainError::io("reading metrics", path, e))?;
    Ok(text.last() == Some(&b'\n'))
}

/// The history a run continues ([`MetricsCsv::plan_resume`]) or starts
/// ([`MetricsCsv::plan_new`]), not yet written.
#[derive(Debug)]
pub struct PlannedHistory {
    path: PathBuf,
    kept: Vec<EpochMetrics>,
    /// Rows past the checkpoint's epoch.
    dropped: usize,
    /// Whether the file can be appended to as it is.
    append: bool,
}

impl PlannedHistory {
    /// The number of rows past the checkpoint that [`PlannedHistory::open`] drops.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The rows before the resume point (what [`PlannedHistory::open`] keeps).
    pub fn kept(&self) -> &[EpochMetrics] {
        &self.kept
    }

    /// The open file and its kept rows. The file is appended to as it is when it holds no row past
    /// the checkpoint; otherwise it is replaced atomically by the kept rows (a crash leaves the
    /// old file or the new one), and a missing file is started.
    pub fn open(self) -> Result<(MetricsCsv, Vec<EpochMetrics>), TrainError> {
        let csv = match self.append && self.dropped == 0 {
            true => MetricsCsv::append_to(&self.path)?,
            false => MetricsCsv::rewrite(&self.path, &self.kept)?,
        };
        Ok((csv, self.kept))
    }
}

/// An open `metrics.csv`, appending one row per epoch.
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    file: File,
}

impl MetricsCsv {
    /// Starts a new file holding only the header (replacing any file at `path`, atomically).
    pub fn create(path: impl AsRef<Path>) -> Result<MetricsCsv, TrainError> {
        Self::plan_new(path).open().map(|(csv, _)| csv)
    }

    /// Continues a run that resumes after epoch `last_epoch`: [`MetricsCsv::plan_resume`], then
    /// [`PlannedHistory::open`].
    pub fn resume(
        path: impl AsRef<Path>,
        last_epoch: usize,
    ) -> Result<(MetricsCsv, Vec<EpochMetrics>), TrainError> {
        Self::plan_resume(path, last_epoch)?.open()
    }

    /// A new run's history: [`PlannedHistory::open`] starts the file with only the header,
    /// replacing any file at `path` atomically.
    pub fn plan_new(path: impl AsRef<Path>) -> PlannedHistory {
        PlannedHistory {
            path: path.as_ref().to_path_buf(),
            kept: Vec::new(),
            dropped: 0,
            append: false,
        }
    }

    /// Reads the history of a run that resumes after epoch `last_epoch`, changing nothing: the
    /// rows up to `last_epoch` are kept; rows past it (a run killed after writing an epoch's row
    /// but before its checkpoint) are dropped, as the resumed run trains those epochs again. A
    /// missing file is an empty history; an unreadable one is an error.
    pub fn plan_resume(
        path: impl AsRef<Path>,
        last_epoch: usize,
    ) -> Result<PlannedHistory, TrainError> {
        let path = path.as_ref();
        let (rows, exists) = match read_metrics_csv(path) {
            Ok(rows) => (rows, true),
            Err(TrainError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                (Vec::new(), false)
            }
            Err(e) => return Err(e),
        };
        let ends_in_newline = !exists || ends_in_newline(path)?;
        let (kept, dropped): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.epoch <= last_epoch);
        Ok(PlannedHistory {
            path: path.to_path_buf(),
            kept,
            dropped: dropped.len(),
            append: exists && ends_in_newline,
        })
    }

    fn rewrite(path: &Path, rows: &[EpochMetrics]) -> Result<MetricsCsv, TrainError> {
        write_atomically(path, |w| {
            writeln!(w, "{METRICS_HEADER}")?;
            for r in rows {
                writeln!(w, "{}", r.csv_row())?;
            }
            Ok(())
        })?;
        Self::append_to(path)
    }

    fn append_to(path: &Path) -> Result<MetricsCsv, TrainError> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io("opening metrics", path, e))?;
        Ok(MetricsCsv {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one epoch's row and pushes it to disk (write, then fsync of the data).
    pub fn append(&mut self, metrics: &EpochMetrics) -> Result<(), TrainError> {
        let line = format!("{}\n", metrics.csv_row());
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| TrainError::io("appending to metrics", &self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
