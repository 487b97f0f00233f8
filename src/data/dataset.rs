//! `Dataset`: images as f32 `[N, C, H, W]` on the host with i32 labels; a seeded validation split;
//! per-channel normalization fitted on the training part and applied to every part.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::{invalid, DataError};
use crate::core::device::Device;
use crate::tensor::Tensor;

/// Per-channel mean and standard deviation; normalizing maps `x` to `(x - mean[c]) / std[c]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// What a raw value of `x` becomes in channel `c` (e.g. the zero padding of a shift).
    pub fn apply(&self, c: usize, x: f32) -> f32 {
        (x - self.mean[c]) / self.std[c]
    }
}

/// Images `[N, C, H, W]` (f32, row-major) and their labels (i32 in `0..num_classes`), on the host.
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Vec<i32>,
    sample_shape: [usize; 3],
    num_classes: usize,
    normalization: Option<Normalization>,
}

impl Dataset {
    /// A dataset of `labels.len()` images of shape `sample_shape = [C, H, W]`. Checks that the
    /// images fill the shape and that every label is in `0..num_classes`.
    pub fn new(
        images: Vec<f32>,
        labels: Vec<i32>,
        sample_shape: [usize; 3],
        num_classes: usize,
    ) -> Result<Dataset, DataError> {
        let per_sample: usize = sample_shape.iter().product();
        if per_sample == 0 {
            return Err(invalid(
                "sample shape",
                format!("{sample_shape:?} has no elements"),
            ));
        }
        if num_classes == 0 {
            return Err(invalid("number of classes", "must be at least 1"));
        }
        if Some(images.len()) != labels.len().checked_mul(per_sample) {
            return Err(DataError::Mismatch {
                what: "dataset".into(),
                why: format!(
                    "{} image values are not {} samples of shape {sample_shape:?}",
                    images.len(),
                    labels.len()
                ),
            });
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as usize >= num_classes)
        {
            return Err(DataError::Mismatch {
                what: "dataset labels".into(),
                why: format!("label {l} of sample {i} is not in 0..{num_classes}"),
            });
        }
        Ok(Dataset {
            images,
            labels,
            sample_shape,
            num_classes,
            normalization: None,
        })
    }

    /// A dataset from 8-bit pixels, scaled to `[0, 1]` (pixel / 255).
    pub fn from_u8(
        pixels: &[u8],
        labels: Vec<i32>,
        sample_shape: [usize; 3],
        num_classes: usize,
    ) -> Result<Dataset, DataError> {
        let images = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        Dataset::new(images, labels, sample_shape, num_classes)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// `[C, H, W]` of one sample.
    pub fn sample_shape(&self) -> [usize; 3] {
        self.sample_shape
    }

    /// Number of f32 values in one sample (`C·H·W`).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All images, `[N, C, H, W]` row-major.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    pub fn labels(&self) -> &[i32] {
        &self.labels
    }

    /// Sample `i`'s image, `C·H·W` values. Panics if `i >= len()` (like slice indexing).
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    pub fn label(&self, i: usize) -> i32 {
        self.labels[i]
    }

    /// The normalization applied to these images, if any.
    pub fn normalization(&self) -> Option<&Normalization> {
        self.normalization.as_ref()
    }

    /// The value that raw zero (black, the padding of a shift) has in channel `c` of these
    /// images: `0` before normalization, `-mean/std` after.
    pub fn zero_value(&self, c: usize) -> f32 {
        self.normalization.as_ref().map_or(0.0, |n| n.apply(c, 0.0))
    }

    /// The samples at `indices`, in that order (a sample may repeat).
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(invalid(
                "subset index",
                format!("{bad} is out of range for {} samples", self.len()),
            ));
        }
        let n = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Ok(Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            sample_shape: self.sample_shape,
            num_classes: self.num_classes,
            normalization: self.normalization.clone(),
        })
    }

    /// Splits off a validation set: `round(fraction · len)` samples drawn by a permutation
    /// seeded with `seed`; returns `(train, validation)`, each in the original sample order.
    /// The two are disjoint and together hold every sample. `fraction` must be in `[0, 1)`.
    pub fn split_validation(
        &self,
        fraction: f64,
        seed: u64,
    ) -> Result<(Dataset, Dataset), DataError> {
        let (train, val) = split_indices(self.len(), fraction, seed)?;
        Ok((self.subset(&train)?, self.subset(&val)?))
    }

    /// Per-channel mean and (population) standard deviation of these images, accumulated in
    /// f64. A constant channel gets std 1 so that normalizing never divides by zero.
    pub fn fit_normalization(&self) -> Normalization {
        let [c, h, w] = self.sample_shape;
        let plane = h * w;
        let mut sum = vec![0f64; c];
        let mut sum_sq = vec![0f64; c];
        for (k, chunk) in self.images.chunks_exact(plane).enumerate() {
            let ch = k % c;
            for &x in chunk {
                sum[ch] += x as f64;
                sum_sq[ch] += (x as f64) * (x as f64);
            }
        }
        let count = (self.len() * plane).max(1) as f64;
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for ch in 0..c {
            let m = sum[ch] / count;
            let var = (sum_sq[ch] / count - m * m).max(0.0);
            let s = var.sqrt();
            mean.push(m as f32);
            std.push(if s > 1e-12 { s as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }

    /// Applies `norm` to every image in place. Fails if these images are already normalized or
    /// `norm` has the wrong number of channels or a non-positive std.
    pub fn normalize(&mut self, norm: &Normalization) -> Result<(), DataError> {
        let c = self.sample_shape[0];
        if norm.mean.len() != c || norm.std.len() != c {
            return Err(invalid(
                "normalization",
                format!(
                    "{} means and {} stds for {c} channels",
                    norm.mean.len(),
                    norm.std.len()
                ),
            ));
        }
        if norm.std.iter().any(|&s| !(s > 0.0 && s.is_finite())) {
            return Err(invalid(
                "normalization",
                format!("std {:?} must be positive and finite", norm.std),
            ));
        }
        if self.normalization.is_some() {
            return Err(invalid(
                "normalization",
                "these images are already normalized",
            ));
        }
        let plane = self.sample_shape[1] * self.sample_shape[2];
        for (k, chunk) in self.images.chunks_exact_mut(plane).enumerate() {
            let ch = k % c;
            let (m, s) = (norm.mean[ch], norm.std[ch]);
            for x in chunk {
                *x = (*x - m) / s;
            }
        }
        self.normalization = Some(norm.clone());
        Ok(())
    }

    /// The whole dataset as tensors on `device`: images `[N, C, H, W]` f32, labels `[N]` i32
    /// (for evaluation; training goes through a [`DataLoader`](super::DataLoader)).
    pub fn to_tensors(&self, device: Device) -> Result<(Tensor, Tensor), DataError> {
        let [c, h, w] = self.sample_shape;
        let images = Tensor::from_slice(&self.images, &[self.len(), c, h, w], device)?;
        let labels = Tensor::from_slice(&self.labels, &[self.len()], device)?;
        Ok((images, labels))
    }
}

/// The seeded split behind [`Dataset::split_validation`]: `(train, validation)` index lists,
/// each sorted.
pub fn split_indices(
    n: usize,
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(invalid(
            "validation fraction",
            format!("{fraction} is not in [0, 1)"),
        ));
    }
    let n_val = ((n as f64) * fraction).round() as usize;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut val = order[..n_val].to_vec();
    let mut train = order[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((train, val))
}

/// Train / validation / test sets, all normalized with the statistics of the training part.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Dataset,
    pub validation: Dataset,
    pub test: Dataset,
    pub normalization: Normalization,
}

impl Splits {
    /// Splits `fraction` of `train_full` off as validation (seeded), fits the normalization on
    /// what remains for training, and applies it to all three parts.
    pub fn new(
        train_full: &Dataset,
        test: Dataset,
        fraction: f64,
        seed: u64,
    ) -> Result<Splits, DataError> {
        if train_full.normalization.is_some() || test.normalization.is_some() {
            return Err(invalid(
                "splits",
                "pass raw (unnormalized) datasets: the normalization is fitted here",
            ));
        }
        if test.sample_shape != train_full.sample_shape {
            return Err(DataError::Mismatch {
                what: "train and test sets".into(),
                why: format!(
                    "sample shapes {:?} and {:?} differ",
                    train_full.sample_shape, test.sample_shape
                ),
            });
        }
        let (mut train, mut validation) = train_full.split_validation(fraction, seed)?;
        let mut test = test;
        let normalization = train.fit_normalization();
        train.normalize(&normalization)?;
        validation.normalize(&normalization)?;
        test.normalize(&normalization)?;
        Ok(Splits {
            train,
            validation,
            test,
            normalization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // 3 samples of [2, 1, 2]: channel 0 holds 0..=5 spread, channel 1 is constant 7.
        let images = vec![
            0.0, 1.0, 7.0, 7.0, //
            2.0, 3.0, 7.0, 7.0, //
            4.0, 5.0, 7.0, 7.0,
        ];
        Dataset::new(images, vec![0, 1, 2], [2, 1, 2], 3).unwrap()
    }

    #[test]
    fn normalization_by_hand() {
        let d = tiny();
        let n = d.fit_normalization();
        // Channel 0 holds 0..=5: mean 2.5, population variance (sum of (k-2.5)^2)/6 = 17.5/6.
        assert!((n.mean[0] - 2.5).abs() < 1e-6);
        assert!((n.std[0] - (17.5f32 / 6.0).sqrt()).abs() < 1e-6);
        // Channel 1 is constant: std falls back to 1.
        assert_eq!((n.mean[1], n.std[1]), (7.0, 1.0));
        let mut d = d;
        d.normalize(&n).unwrap();
        assert_eq!(d.image(0)[2], 0.0);
        assert!((d.zero_value(0) + 2.5 / n.std[0]).abs() < 1e-6);
        assert!(d.normalize(&n).is_err(), "normalizing twice is refused");
    }

    #[test]
    fn new_rejects_bad_input() {
        assert!(Dataset::new(vec![0.0; 3], vec![0], [1, 2, 2], 2).is_err());
        assert!(Dataset::new(vec![0.0; 4], vec![2], [1, 2, 2], 2).is_err());
        assert!(Dataset::new(vec![0.0; 4], vec![-1], [1, 2, 2], 2).is_err());
        assert!(Dataset::new(vec![], vec![], [0, 2, 2], 2).is_err());
    }

    #[test]
    fn subset_keeps_order_and_rejects_out_of_range() {
        let d = tiny();
        let s = d.subset(&[2, 0]).unwrap();
        assert_eq!(s.labels(), &[2, 0]);
        assert_eq!(s.image(0)[0], 4.0);
        assert!(d.subset(&[3]).is_err());
    }

    #[test]
    fn split_fraction_bounds() {
        assert!(split_indices(10, 1.0, 0).is_err());
        assert!(split_indices(10, -0.1, 0).is_err());
        assert!(split_indices(10, f64::NAN, 0).is_err());
        let (t, v) = split_indices(10, 0.0, 0).unwrap();
        assert_eq!((t.len(), v.len()), (10, 0));
    }
}
