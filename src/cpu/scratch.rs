//! Per-thread scratch buffers for values a caller writes in full before it reads them: an image's
//! im2col columns, the columns its input gradient is folded from. One buffer per thread and type
//! serves every call, so it is neither allocated nor cleared each time (ResNet-18 at 224x224: a
//! 7 MiB column buffer per image, which a fresh zeroed vector cleared once per rayon task). The
//! buffer keeps the size of the largest request on that thread, up to [`KEPT_BYTES`]; a larger
//! request gets a buffer of its own that is freed afterwards, so no thread holds more than that.

use std::cell::RefCell;
use std::thread::LocalKey;

use super::Float;

thread_local! {
    static F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

/// The most a thread's scratch buffer keeps between calls, per element type.
pub const KEPT_BYTES: usize = 32 << 20;

/// The element types that have a per-thread scratch buffer.
pub trait ScratchElement: Float {
    fn buffer() -> &'static LocalKey<RefCell<Vec<Self>>>;
}

impl ScratchElement for f32 {
    fn buffer() -> &'static LocalKey<RefCell<Vec<f32>>> {
        &F32
    }
}

impl ScratchElement for f64 {
    fn buffer() -> &'static LocalKey<RefCell<Vec<f64>>> {
        &F64
    }
}

/// Runs `f` on `len` values of this thread's scratch buffer. They hold whatever an earlier call
/// left: `f` must write each value before reading it. A call nested in another on the same thread
/// (rayon running a second task while the first waits) gets a fresh buffer instead.
pub fn with_scratch<T: ScratchElement, R>(len: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    if len * std::mem::size_of::<T>() > KEPT_BYTES {
        return f(&mut vec![T::zero(); len]);
    }
    T::buffer().with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, T::zero());
            }
            f(&mut buffer[..len])
        }
        Err(_) => f(&mut vec![T::zero(); len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer is reused (what one call wrote, the next sees), grows to the largest request,
    /// and a nested call gets a buffer of its own.
    #[test]
    fn the_buffer_is_reused_grows_and_is_not_shared_by_a_nested_call() {
        with_scratch::<f32, _>(3, |b| b.copy_from_slice(&[1.0, 2.0, 3.0]));
        with_scratch::<f32, _>(2, |b| assert_eq!(b, [1.0, 2.0]));
        with_scratch::<f32, _>(5, |b| {
            assert_eq!(&b[..3], [1.0, 2.0, 3.0]);
            b.fill(7.0);
            with_scratch::<f32, _>(5, |inner| {
                assert_eq!(inner, [0.0; 5], "a fresh buffer");
                inner.fill(9.0);
            });
            assert_eq!(b, [7.0; 5], "the nested call left this one alone");
        });
        with_scratch::<f64, _>(2, |b| assert_eq!(b.len(), 2));
        // Larger than the buffer keeps: a buffer of its own, and the kept one is unchanged.
        let huge = KEPT_BYTES / 4 + 1;
        with_scratch::<f32, _>(huge, |b| assert_eq!(b.len(), huge));
        F32.with(|cell| assert_eq!(cell.borrow().len(), 5));
    }
}
