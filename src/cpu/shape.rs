//! Concatenation along an axis and its inverse (twins of kernels/shape.cu).
//!
//! A tensor viewed around the axis is `[outer][axis][inner]`; one part of a concatenation holds
//! `slab = C_part·inner` elements per outer row, the whole holds `whole = ΣC·inner`, and the part
//! starts at `offset` within each row of the whole.

use rayon::prelude::*;

use super::{Float, MIN_PAR_LEN};

/// Writes `src` `[outer][slab]` into columns `offset..offset + slab` of `dst` `[outer][whole]`.
pub fn concat_fwd<T: Float>(src: &[T], dst: &mut [T], slab: usize, whole: usize, offset: usize) {
    debug_assert!(offset + slab <= whole, "concat_fwd: slab outside the row");
    if slab == 0 || whole == 0 {
        return;
    }
    debug_assert_eq!(src.len() / slab, dst.len() / whole, "concat_fwd: rows");
    dst.par_chunks_mut(whole)
        .zip(src.par_chunks(slab))
        .with_min_len((MIN_PAR_LEN / whole).max(1))
        .for_each(|(row, part)| row[offset..offset + slab].copy_from_slice(part));
}

/// Reads columns `offset..offset + slab` of `dy` `[outer][whole]` into `dx` `[outer][slab]`.
pub fn concat_bwd<T: Float>(dy: &[T], dx: &mut [T], slab: usize, whole: usize, offset: usize) {
    debug_assert!(offset + slab <= whole, "concat_bwd: slab outside the row");
    if slab == 0 || whole == 0 {
        return;
    }
    debug_assert_eq!(dx.len() / slab, dy.len() / whole, "concat_bwd: rows");
    dx.par_chunks_mut(slab)
        .zip(dy.par_chunks(whole))
        .with_min_len((MIN_PAR_LEN / whole).max(1))
        .for_each(|(part, row)| part.copy_from_slice(&row[offset..offset + slab]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [[1, 2], [3, 4]] and [[5], [6]] along axis 1 (outer 2, inner 1) give [[1, 2, 5], [3, 4, 6]].
    #[test]
    fn concat_and_split_by_hand() {
        let (a, b) = ([1.0_f32, 2.0, 3.0, 4.0], [5.0_f32, 6.0]);
        let mut y = [f32::NAN; 6];
        concat_fwd(&a, &mut y, 2, 3, 0);
        concat_fwd(&b, &mut y, 1, 3, 2);
        assert_eq!(y, [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        let (mut da, mut db) = ([f32::NAN; 4], [f32::NAN; 2]);
        concat_bwd(&y, &mut da, 2, 3, 0);
        concat_bwd(&y, &mut db, 1, 3, 2);
        assert_eq!((da, db), (a, b));
    }

    /// Many rows (rayon splits them) and an empty part, which touches nothing.
    #[test]
    fn round_trip_over_many_rows() {
        let (outer, sa, sb) = (2 * MIN_PAR_LEN + 3, 3, 5);
        let a: Vec<f64> = (0..outer * sa).map(|v| v as f64).collect();
        let b: Vec<f64> = (0..outer * sb).map(|v| -(v as f64)).collect();
        let mut y = vec![f64::NAN; outer * (sa + sb)];
        concat_fwd(&a, &mut y, sa, sa + sb, 0);
        concat_fwd::<f64>(&[], &mut y, 0, sa + sb, sa);
        concat_fwd(&b, &mut y, sb, sa + sb, sa);
        assert_eq!(
            y[sa + sb..2 * (sa + sb)],
            [3.0, 4.0, 5.0, -5.0, -6.0, -7.0, -8.0, -9.0]
        );
        let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
        concat_bwd(&y, &mut da, sa, sa + sb, 0);
        concat_bwd(&y, &mut db, sb, sa + sb, sa);
        assert_eq!((da, db), (a, b));
    }
}
