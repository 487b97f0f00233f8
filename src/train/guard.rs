//! Guards against a diverging run.

use super::TrainError;

/// `Ok` when `loss` is finite; otherwise an error naming the step and suggesting a lower learning
/// rate. Call it on each batch's loss before the optimizer step.
pub fn check_finite(loss: f64, step: u64) -> Result<(), TrainError> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(TrainError::NonFiniteLoss { loss, step })
    }
}
