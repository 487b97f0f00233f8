//! Per-epoch metrics and `metrics.csv`: a header and one row per epoch, appended and flushed to
//! disk as each epoch ends (a crash keeps every finished epoch); rewritten atomically on resume.

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

/// An open `metrics.csv`, appending one row per epoch.
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    file: File,
}

impl MetricsCsv {
    /// Starts a new file holding only the header (replacing any file at `path`, atomically).
    pub fn create(path: impl AsRef<Path>) -> Result<MetricsCsv, TrainError> {
        Self::rewrite(path.as_ref(), &[])
    }

    /// Continues a run that resumes after epoch `last_epoch`: keeps the rows of epochs up to
    /// `last_epoch` (rows written after the checkpoint that is resumed from are dropped), rewrites
    /// the file atomically, and returns the kept rows. A missing file starts a new one.
    pub fn resume(
        path: impl AsRef<Path>,
        last_epoch: usize,
    ) -> Result<(MetricsCsv, Vec<EpochMetrics>), TrainError> {
        let path = path.as_ref();
        let rows = match read_metrics_csv(path) {
            Ok(rows) => rows,
            Err(TrainError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let kept: Vec<EpochMetrics> = rows.into_iter().filter(|r| r.epoch <= last_epoch).collect();
        Ok((Self::rewrite(path, &kept)?, kept))
    }

    fn rewrite(path: &Path, rows: &[EpochMetrics]) -> Result<MetricsCsv, TrainError> {
        write_atomically(path, |w| {
            writeln!(w, "{METRICS_HEADER}")?;
            for r in rows {
                writeln!(w, "{}", r.csv_row())?;
            }
            Ok(())
        })?;
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
