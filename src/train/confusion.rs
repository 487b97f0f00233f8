//! A confusion matrix: counts of (actual class, predicted class), per-class and overall accuracy,
//! and a readable table.

use std::fmt;

use super::TrainError;

/// Counts of predictions per (actual, predicted) class pair. Rows are actual classes, columns
/// predicted ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfusionMatrix {
    names: Vec<String>,
    /// `counts[actual * classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix over the classes named `names` (class `i` is `names[i]`).
    pub fn new(names: &[&str]) -> ConfusionMatrix {
        ConfusionMatrix {
            names: names.iter().map(|s| s.to_string()).collect(),
            counts: vec![0; names.len() * names.len()],
        }
    }

    /// An empty matrix over `classes` classes named by their numbers.
    pub fn numbered(classes: usize) -> ConfusionMatrix {
        let names: Vec<String> = (0..classes).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        ConfusionMatrix::new(&refs)
    }

    pub fn classes(&self) -> usize {
        self.names.len()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn check(&self, what: &'static str, class: usize) -> Result<(), TrainError> {
        if class >= self.classes() {
            return Err(TrainError::invalid(
                what,
                format!(
                    "class {class} is out of range for {} classes",
                    self.classes()
                ),
            ));
        }
        Ok(())
    }

    /// Counts one prediction.
    pub fn add(&mut self, predicted: usize, actual: usize) -> Result<(), TrainError> {
        self.check("predicted class", predicted)?;
        self.check("actual class", actual)?;
        let n = self.classes();
        self.counts[actual * n + predicted] += 1;
        Ok(())
    }

    /// Counts a batch of predictions; nothing is counted if any class is out of range.
    pub fn add_all(&mut self, predicted: &[usize], actual: &[usize]) -> Result<(), TrainError> {
        if predicted.len() != actual.len() {
            return Err(TrainError::invalid(
                "confusion matrix batch",
                format!(
                    "{} predictions for {} labels",
                    predicted.len(),
                    actual.len()
                ),
            ));
        }
        for (&p, &a) in predicted.iter().zip(actual) {
            self.check("predicted class", p)?;
            self.check("actual class", a)?;
        }
        for (&p, &a) in predicted.iter().zip(actual) {
            self.add(p, a)?;
        }
        Ok(())
    }

    /// How many samples of class `actual` were predicted as `predicted` (0 when out of range).
    pub fn count(&self, actual: usize, predicted: usize) -> u64 {
        let n = self.classes();
        if actual < n && predicted < n {
            self.counts[actual * n + predicted]
        } else {
            0
        }
    }

    /// All samples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples predicted correctly.
    pub fn correct(&self) -> u64 {
        (0..self.classes()).map(|i| self.count(i, i)).sum()
    }

    fn row_total(&self, actual: usize) -> u64 {
        (0..self.classes()).map(|p| self.count(actual, p)).sum()
    }

    /// Fraction of all samples predicted correctly; `None` before any sample.
    pub fn accuracy(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| self.correct() as f64 / total as f64)
    }

    /// For each class, the fraction of its samples predicted correctly (its recall); `None` for a
    /// class with no samples.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        (0..self.classes())
            .map(|a| {
                let row = self.row_total(a);
                (row > 0).then(|| self.count(a, a) as f64 / row as f64)
            })
            .collect()
    }

    /// Forgets all counts (e.g. between epochs).
    pub fn reset(&mut self) {
        self.counts.fill(0);
    }
}

fn percent(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}%", 100.0 * x))
        .unwrap_or_else(|| "-".to_string())
}

/// A table: one row per actual class, one column per predicted class, then the class's accuracy,
/// and a last line with the overall accuracy.
impl fmt::Display for ConfusionMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const CORNER: &str = "actual \\ predicted";
        const ACC: &str = "accuracy";
        let label_w = self
            .names
            .iter()
            .map(|s| s.chars().count())
            .chain([CORNER.len()])
            .max()
            .unwrap_or(0);
        let widest_count = self
            .counts
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .to_string()
            .len();
        let col_w: Vec<usize> = self
            .names
            .iter()
            .map(|s| s.chars().count().max(widest_count))
            .collect();
        let per_class = self.per_class_accuracy();
        write!(f, "{CORNER:<label_w$}")?;
        for (name, w) in self.names.iter().zip(&col_w) {
            write!(f, "  {name:>w$}")?;
        }
        writeln!(f, "  {ACC:>8}")?;
        for (a, (name, accuracy)) in self.names.iter().zip(per_class).enumerate() {
            write!(f, "{name:<label_w$}")?;
            for (p, w) in col_w.iter().enumerate() {
                write!(f, "  {:>w$}", self.count(a, p))?;
            }
            writeln!(f, "  {:>8}", percent(accuracy))?;
        }
        write!(
            f,
            "overall accuracy {} ({}/{})",
            percent(self.accuracy()),
            self.correct(),
            self.total()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rows_as_actual_and_columns_as_predicted() {
        let mut m = ConfusionMatrix::numbered(3);
        m.add(2, 0).unwrap();
        assert_eq!(m.count(0, 2), 1);
        assert_eq!(m.count(2, 0), 0);
        assert!(m.add(3, 0).is_err());
        assert!(m.add(0, 3).is_err());
        assert!(m.add_all(&[0, 1], &[0]).is_err());
        assert!(m.add_all(&[0, 5], &[0, 0]).is_err());
        assert_eq!(m.total(), 1, "a rejected batch counts nothing");
    }
}
