//! Per-sample training augmentation on `[C, H, W]` images: random horizontal flip, random shift
//! (pad then crop back at a random offset), Gaussian input jitter.
//!
//! Every random choice comes from the `rng` passed in, drawn in a fixed order (flip, then shift,
//! then jitter), so a sample's augmentation depends only on how that rng was seeded. The
//! [`DataLoader`](super::DataLoader) seeds one rng per (seed, epoch, sample).

use rand::Rng;
use rand_distr::StandardNormal;

use super::error::{invalid, DataError};

/// Which augmentations to apply. The default applies none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    /// Flip left-right with probability 1/2.
    pub hflip: bool,
    /// Pad each side with this many pixels of raw zero, then crop back to `H × W` at a uniformly
    /// random offset: the image moves by `(dy, dx)`, each uniform in `-pad..=pad`. 0 = off.
    pub shift_pad: usize,
    /// Standard deviation of the Gaussian noise added to every value, in the units of the data
    /// (after normalization when the dataset is normalized). 0 = off.
    pub jitter_std: f32,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Augment {
        Augment::default()
    }

    /// Whether this leaves every image unchanged.
    pub fn is_identity(&self) -> bool {
        !self.hflip && self.shift_pad == 0 && self.jitter_std == 0.0
    }

    /// Checks the parameters against a sample shape `[C, H, W]`.
    pub fn validate(&self, shape: [usize; 3]) -> Result<(), DataError> {
        if !(self.jitter_std >= 0.0 && self.jitter_std.is_finite()) {
            return Err(invalid(
                "jitter std",
                format!("{} must be finite and non-negative", self.jitter_std),
            ));
        }
        let [_, h, w] = shape;
        if self.shift_pad >= h.max(w) && self.shift_pad > 0 {
            return Err(invalid(
                "shift padding",
                format!(
                    "{} pixels would shift a {h}×{w} image off itself",
                    self.shift_pad
                ),
            ));
        }
        Ok(())
    }

    /// Augments one image of shape `[C, H, W]` in place. `fill[c]` is the value of raw zero in
    /// channel `c` (what the shift pads with). Draws, in order: one flip decision (when `hflip`),
    /// the crop offsets `oy` then `ox` in `0..=2·pad` (when `shift_pad > 0`), then `C·H·W`
    /// standard normals (when `jitter_std > 0`).
    pub fn apply(&self, image: &mut [f32], shape: [usize; 3], fill: &[f32], rng: &mut impl Rng) {
        if self.hflip && rng.random_bool(0.5) {
            hflip(image, shape);
        }
        if self.shift_pad > 0 {
            let p = self.shift_pad;
            let oy = rng.random_range(0..=2 * p);
            let ox = rng.random_range(0..=2 * p);
            // Cropping the padded image at (oy, ox) moves the content by (p - oy, p - ox).
            shift(
                image,
                shape,
                p as isize - oy as isize,
                p as isize - ox as isize,
                fill,
            );
        }
        if self.jitter_std > 0.0 {
            for x in image.iter_mut() {
                let z: f32 = rng.sample(StandardNormal);
                *x += self.jitter_std * z;
            }
        }
    }
}

/// Mirrors each row of a `[C, H, W]` image: `out[c][y][x] = in[c][y][W-1-x]`.
pub fn hflip(image: &mut [f32], shape: [usize; 3]) {
    let w = shape[2];
    for row in image.chunks_exact_mut(w) {
        row.reverse();
    }
}

/// Moves the content of a `[C, H, W]` image down by `dy` and right by `dx` (negative: up, left):
/// `out[c][y][x] = in[c][y-dy][x-dx]`, and `fill[c]` where that lies outside the image.
pub fn shift(image: &mut [f32], shape: [usize; 3], dy: isize, dx: isize, fill: &[f32]) {
    let [_, h, w] = shape;
    let mut src = vec![0f32; h * w];
    for (c, plane) in image.chunks_exact_mut(h * w).enumerate() {
        src.copy_from_slice(plane);
        let f = fill.get(c).copied().unwrap_or(0.0);
        for y in 0..h {
            let sy = y as isize - dy;
            for x in 0..w {
                let sx = x as isize - dx;
                plane[y * w + x] = if (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx)
                {
                    src[sy as usize * w + sx as usize]
                } else {
                    f
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A 1×3×4 image whose value is 10·y + x, so every moved pixel shows where it came from.
    fn ramp() -> Vec<f32> {
        (0..3)
            .flat_map(|y| (0..4).map(move |x| (10 * y + x) as f32))
            .collect()
    }

    #[test]
    fn flip_of_a_known_image() {
        let mut img = ramp();
        hflip(&mut img, [1, 3, 4]);
        #[rustfmt::skip]
        let expected = [
            3.0, 2.0, 1.0, 0.0,
            13.0, 12.0, 11.0, 10.0,
            23.0, 22.0, 21.0, 20.0,
        ];
        assert_eq!(img, expected);
        hflip(&mut img, [1, 3, 4]);
        assert_eq!(img, ramp(), "flipping twice is the identity");
    }

    #[test]
    fn shift_by_a_known_offset() {
        // Down 1, left 2: out[y][x] = in[y-1][x+2]; the top row and two right columns are fill.
        let mut img = ramp();
        shift(&mut img, [1, 3, 4], 1, -2, &[-1.0]);
        #[rustfmt::skip]
        let expected = [
            -1.0, -1.0, -1.0, -1.0,
            2.0, 3.0, -1.0, -1.0,
            12.0, 13.0, -1.0, -1.0,
        ];
        assert_eq!(img, expected);
        // Up 2, right 1.
        let mut img = ramp();
        shift(&mut img, [1, 3, 4], -2, 1, &[0.0]);
        #[rustfmt::skip]
        let expected = [
            0.0, 20.0, 21.0, 22.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(img, expected);
        let mut img = ramp();
        shift(&mut img, [1, 3, 4], 0, 0, &[0.0]);
        assert_eq!(img, ramp());
    }

    #[test]
    fn shift_fills_each_channel_with_its_own_value() {
        let mut img = vec![1.0; 2 * 2 * 2];
        shift(&mut img, [2, 2, 2], 0, 1, &[5.0, 7.0]);
        assert_eq!(img, [5.0, 1.0, 5.0, 1.0, 7.0, 1.0, 7.0, 1.0]);
    }

    #[test]
    fn jitter_statistics() {
        let aug = Augment {
            jitter_std: 0.5,
            ..Augment::none()
        };
        let n = 200_000;
        let mut img = vec![3.0f32; n];
        aug.apply(&mut img, [1, 1, n], &[0.0], &mut StdRng::seed_from_u64(7));
        let mean = img.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = img.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        // The sample mean has std 0.5/sqrt(n) ≈ 0.0011 and the sample std about
        // 0.5/sqrt(2n) ≈ 0.0008: 5-sigma bounds.
        assert!((mean - 3.0).abs() < 0.006, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.004, "std {}", var.sqrt());
    }

    #[test]
    fn random_shift_stays_within_the_padding_and_flip_is_fair() {
        let aug = Augment {
            hflip: true,
            shift_pad: 2,
            jitter_std: 0.0,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let mut flips = 0;
        let trials = 4000;
        for _ in 0..trials {
            // A single bright pixel at (4, 3) of a 9×9 image; after flip + shift it must be
            // within 2 pixels of (4, 3) or of its mirror (4, 5).
            let mut img = vec![0.0f32; 81];
            img[4 * 9 + 3] = 1.0;
            aug.apply(&mut img, [1, 9, 9], &[0.0], &mut rng);
            let k = img.iter().position(|&v| v == 1.0).expect("pixel kept");
            assert_eq!(img.iter().filter(|&&v| v != 0.0).count(), 1);
            let (y, x) = (k / 9, k % 9);
            assert!(y.abs_diff(4) <= 2, "y {y}");
            if x.abs_diff(5) <= 2 && x.abs_diff(3) > 2 {
                flips += 1;
            }
            assert!(x.abs_diff(3) <= 2 || x.abs_diff(5) <= 2, "x {x}");
        }
        // Flips are only identifiable when x lands outside 3±2, i.e. x = 6 or 7 after a flip:
        // P = 1/2 · 2/5 = 0.2 → expect 800 ± 25 (binomial std); allow 6 sigma.
        assert!(
            (flips as f64 - 0.2 * trials as f64).abs() < 160.0,
            "{flips}"
        );
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        let bad_jitter = Augment {
            jitter_std: -1.0,
            ..Augment::none()
        };
        assert!(bad_jitter.validate([1, 28, 28]).is_err());
        let nan = Augment {
            jitter_std: f32::NAN,
            ..Augment::none()
        };
        assert!(nan.validate([1, 28, 28]).is_err());
        let big_pad = Augment {
            shift_pad: 28,
            ..Augment::none()
        };
        assert!(big_pad.validate([1, 28, 28]).is_err());
        assert!(Augment::none().validate([1, 28, 28]).is_ok());
        assert!(Augment::none().is_identity());
    }
}
