//! Early stopping on validation accuracy.

use super::TrainError;

/// What [`EarlyStopping::update`] advises after an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A new best: keep this epoch's weights.
    Improved,
    /// No improvement, but patience is not exhausted.
    Continue,
    /// `patience` epochs in a row without improvement: stop and restore the best weights.
    Stop,
}

/// Tracks the best validation accuracy; advises stopping after `patience` epochs in a row that do
/// not beat the best by more than `min_delta`.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    patience: usize,
    min_delta: f64,
    best: Option<(usize, f64)>,
    stale: usize,
}

impl EarlyStopping {
    /// `patience`: stop after this many epochs in a row without improvement (the meaning Keras and
    /// PyTorch Lightning give it; 0 acts like 1).
    /// `min_delta`: how much an accuracy must exceed the best to count as an improvement (same
    /// unit as the accuracies given, e.g. 0.001 for 0.1 percentage points of a fraction).
    pub fn new(patience: usize, min_delta: f64) -> Result<EarlyStopping, TrainError> {
        if !(min_delta.is_finite() && min_delta >= 0.0) {
            return Err(TrainError::invalid(
                "early stopping min_delta",
                format!("{min_delta} must be a finite number >= 0"),
            ));
        }
        Ok(EarlyStopping {
            patience,
            min_delta,
            best: None,
            stale: 0,
        })
    }

    /// Records epoch `epoch`'s validation accuracy. The first finite accuracy is always an
    /// improvement; NaN never is.
    pub fn update(&mut self, epoch: usize, val_accuracy: f64) -> Decision {
        let improved = match self.best {
            _ if val_accuracy.is_nan() => false,
            None => true,
            Some((_, best)) => val_accuracy > best + self.min_delta,
        };
        if improved {
            self.best = Some((epoch, val_accuracy));
            self.stale = 0;
            return Decision::Improved;
        }
        self.stale += 1;
        if self.stale >= self.patience {
            Decision::Stop
        } else {
            Decision::Continue
        }
    }

    /// The epoch with the best validation accuracy so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.map(|(e, _)| e)
    }

    /// The best validation accuracy so far.
    pub fn best_accuracy(&self) -> Option<f64> {
        self.best.map(|(_, a)| a)
    }

    /// Epochs in a row without improvement.
    pub fn epochs_without_improvement(&self) -> usize {
        self.stale
    }
}
