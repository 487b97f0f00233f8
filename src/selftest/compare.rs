//! Comparing a device's outputs with the CPU's without panicking: the worst element against its
//! tolerance `atol + rtol·|ref|`, bit-for-bit comparison of casts, masks and indices, and the
//! perturbation a planted failure applies.

use crate::backend::RawTensor;
use crate::core::dtype::DType;
use crate::core::error::Result;

/// How a row's outputs must agree with the CPU's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// `|device − cpu| ≤ atol + rtol·|cpu|` element-wise (NaN passes only against NaN).
    Close { atol: f64, rtol: f64 },
    /// The same bits (every NaN equal to every NaN); integer outputs (masks, argmax, labels) are
    /// always compared so, whatever the row's tolerance.
    Exact,
}

impl Tolerance {
    /// (atol, rtol); (0, 0) for exact comparisons.
    pub fn atol_rtol(self) -> (f64, f64) {
        match self {
            Tolerance::Close { atol, rtol } => (atol, rtol),
            Tolerance::Exact => (0.0, 0.0),
        }
    }
}

/// The result of comparing one output: the element closest to its tolerance, or furthest past it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Worst {
    /// `|actual − expected|` at that element (infinite where one side is NaN and the other not, or
    /// where an exact comparison finds different bits of equal value, such as −0 and +0).
    pub error: f64,
    /// `atol + rtol·|expected|` at that element (0 for exact comparisons).
    pub tolerance: f64,
    /// Its index, and the two values there.
    pub index: usize,
    pub actual: f64,
    pub expected: f64,
    /// Elements beyond their tolerance.
    pub mismatches: usize,
    /// Elements compared (the longer length when the lengths differ).
    pub len: usize,
}

impl Worst {
    /// Whether every element lies within its tolerance.
    pub fn passed(&self) -> bool {
        self.mismatches == 0
    }

    /// error / tolerance: ≤ 1 passes; 0/0 counts as 0 and x/0 as infinite.
    pub fn ratio(&self) -> f64 {
        ratio(self.error, self.tolerance)
    }

    fn empty(len: usize, tolerance: f64) -> Worst {
        Worst {
            error: 0.0,
            tolerance,
            index: 0,
            actual: 0.0,
            expected: 0.0,
            mismatches: 0,
            len,
        }
    }

    /// A comparison of outputs of different lengths: every missing element is a mismatch.
    fn lengths_differ(actual: usize, expected: usize) -> Worst {
        Worst {
            error: f64::INFINITY,
            tolerance: 0.0,
            index: actual.min(expected),
            actual: f64::NAN,
            expected: f64::NAN,
            mismatches: actual.abs_diff(expected),
            len: actual.max(expected),
        }
    }
}

fn ratio(error: f64, tolerance: f64) -> f64 {
    if error == 0.0 {
        0.0
    } else if tolerance > 0.0 {
        error / tolerance
    } else {
        f64::INFINITY
    }
}

/// Compares `actual` with `expected` element-wise against `atol + rtol·|expected|` and returns the
/// element with the largest error relative to its tolerance, and how many lie beyond it. Never
/// panics: different lengths are reported as mismatches.
pub fn worst_error<T: Copy + Into<f64>>(
    actual: &[T],
    expected: &[T],
    atol: f64,
    rtol: f64,
) -> Worst {
    if actual.len() != expected.len() {
        return Worst::lengths_differ(actual.len(), expected.len());
    }
    let mut worst = Worst::empty(actual.len(), atol);
    let mut worst_ratio = -1.0;
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let (a, e): (f64, f64) = (a.into(), e.into());
        let error = if a.is_nan() && e.is_nan() || a == e {
            0.0 // equal, including equal infinities
        } else {
            let d = (a - e).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        };
        let tolerance = atol + rtol * e.abs();
        // An infinite or NaN expected value accepts only itself.
        let r = ratio(
            error,
            if tolerance.is_finite() {
                tolerance
            } else {
                0.0
            },
        );
        if r > 1.0 {
            worst.mismatches += 1;
        }
        if r > worst_ratio {
            worst_ratio = r;
            worst = Worst {
                error,
                tolerance,
                index: i,
                actual: a,
                expected: e,
                ..worst
            };
        }
    }
    worst
}

/// An output copied to the host: its values (16-bit ones widened exactly), their bit patterns,
/// and whether they are integers (compared exactly whatever the row's tolerance).
#[derive(Clone, Debug)]
pub(super) struct HostValues {
    pub values: Vec<f64>,
    pub bits: Vec<u64>,
    pub integer: bool,
}

impl HostValues {
    pub fn of(t: &RawTensor) -> Result<HostValues> {
        let floats = |values: Vec<f64>, bits: Vec<u64>| HostValues {
            values,
            bits,
            integer: false,
        };
        Ok(match t.dtype() {
            DType::F32 => {
                let v = t.to_vec::<f32>()?;
                floats(
                    v.iter().map(|&x| x.into()).collect(),
                    v.iter().map(|x| x.to_bits().into()).collect(),
                )
            }
            DType::F64 => {
                let v = t.to_vec::<f64>()?;
                let bits = v.iter().map(|x| x.to_bits()).collect();
                floats(v, bits)
            }
            DType::BF16 => {
                let v = t.to_vec::<half::bf16>()?;
                floats(
                    v.iter().map(|x| x.to_f64()).collect(),
                    v.iter().map(|x| x.to_bits().into()).collect(),
                )
            }
            DType::F16 => {
                let v = t.to_vec::<half::f16>()?;
                floats(
                    v.iter().map(|x| x.to_f64()).collect(),
                    v.iter().map(|x| x.to_bits().into()).collect(),
                )
            }
            DType::I32 => integers(t.to_vec::<i32>()?.into_iter().map(i64::from)),
            DType::U8 => integers(t.to_vec::<u8>()?.into_iter().map(i64::from)),
        })
    }

    /// Changes the first element so that no tolerance accepts it (a planted failure): a float
    /// moves by 1 + |x| (a NaN or infinity becomes 0), its bits with it; an integer grows by 1.
    pub fn perturb(&mut self) {
        let (Some(v), Some(b)) = (self.values.first_mut(), self.bits.first_mut()) else {
            return;
        };
        if self.integer {
            *v += 1.0;
            *b = b.wrapping_add(1);
        } else {
            // Another bit pattern fails the exact comparison (a NaN's or infinity's is never 0).
            if v.is_finite() {
                *v += 1.0 + v.abs();
                *b ^= 1;
            } else {
                *v = 0.0;
                *b = 0;
            }
        }
    }

    /// The comparison of `self` (the device's) with `expected` (the CPU's) under `tolerance`.
    pub fn compare(&self, expected: &HostValues, tolerance: Tolerance) -> Worst {
        match tolerance {
            Tolerance::Close { atol, rtol } if !self.integer && !expected.integer => {
                worst_error(&self.values, &expected.values, atol, rtol)
            }
            _ => self.compare_exactly(expected),
        }
    }

    /// Bits must match, every NaN matching every NaN.
    fn compare_exactly(&self, expected: &HostValues) -> Worst {
        if self.bits.len() != expected.bits.len() {
            return Worst::lengths_differ(self.bits.len(), expected.bits.len());
        }
        let mut worst = Worst::empty(self.bits.len(), 0.0);
        for i in 0..self.bits.len() {
            let (a, e) = (self.values[i], expected.values[i]);
            let same = self.bits[i] == expected.bits[i] || (a.is_nan() && e.is_nan());
            if same {
                continue;
            }
            let d = (a - e).abs();
            let error = if d > 0.0 && d.is_finite() {
                d
            } else {
                f64::INFINITY
            };
            if worst.mismatches == 0 || error > worst.error {
                worst = Worst {
                    error,
                    index: i,
                    actual: a,
                    expected: e,
                    ..worst
                };
            }
            worst.mismatches += 1;
        }
        worst
    }
}

fn integers(values: impl Iterator<Item = i64>) -> HostValues {
    let values: Vec<i64> = values.collect();
    HostValues {
        bits: values.iter().map(|&v| v as u64).collect(),
        values: values.iter().map(|&v| v as f64).collect(),
        integer: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_element_is_the_one_furthest_past_its_tolerance() {
        // Element 1 has the larger error, but element 2 the larger error per tolerance.
        let w = worst_error(&[1.0f32, 10.5, 0.02], &[1.0, 10.0, 0.0], 0.01, 0.1);
        assert_eq!((w.index, w.mismatches, w.len), (2, 1, 3));
        assert!((w.error - 0.02).abs() < 1e-9 && (w.tolerance - 0.01).abs() < 1e-12);
        assert!(!w.passed() && w.ratio() > 1.9);
        let ok = worst_error(&[1.0f32, 2.0], &[1.0, 2.0], 0.0, 0.0);
        assert!(ok.passed() && ok.error == 0.0);
    }

    #[test]
    fn nan_matches_only_nan_and_lengths_must_agree() {
        let nan = f32::NAN;
        assert!(worst_error(&[nan, f32::INFINITY], &[nan, f32::INFINITY], 0.0, 0.0).passed());
        assert!(!worst_error(&[1e30f32], &[f32::INFINITY], 1e-5, 1e-4).passed());
        assert!(!worst_error(&[f32::NEG_INFINITY], &[f32::INFINITY], 1e-5, 1e-4).passed());
        let w = worst_error(&[nan], &[1.0f32], 1.0, 1.0);
        assert!(!w.passed() && w.error.is_infinite());
        let w = worst_error(&[1.0f32], &[1.0, 2.0], 1.0, 1.0);
        assert_eq!(w.mismatches, 1);
    }

    #[test]
    fn exact_comparisons_see_bits_and_a_perturbation_always_fails() {
        let host = |v: Vec<f32>| HostValues {
            values: v.iter().map(|&x| x.into()).collect(),
            bits: v.iter().map(|x| x.to_bits().into()).collect(),
            integer: false,
        };
        let zero = host(vec![0.0, f32::NAN]);
        let w = host(vec![-0.0, f32::NAN]).compare(&zero, Tolerance::Exact);
        assert_eq!((w.mismatches, w.index), (1, 0));
        assert!(zero.compare(&zero, Tolerance::Exact).passed());
        for values in [vec![0.0], vec![f32::NAN], vec![f32::INFINITY], vec![-3.5]] {
            let expected = host(values);
            let mut planted = expected.clone();
            planted.perturb();
            for tolerance in [
                Tolerance::Exact,
                Tolerance::Close {
                    atol: 1e-5,
                    rtol: 1e-4,
                },
            ] {
                assert!(
                    !planted.compare(&expected, tolerance).passed(),
                    "{tolerance:?}"
                );
            }
        }
        let mask = integers([0i64, 1].into_iter());
        let mut planted = mask.clone();
        planted.perturb();
        let loose = Tolerance::Close {
            atol: 10.0,
            rtol: 1.0,
        };
        assert!(!planted.compare(&mask, loose).passed());
    }
}
