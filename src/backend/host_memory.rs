//! The host allocator setting a training loop needs: freed memory stays mapped for reuse.
//!
//! The `kiln` binary and the benchmarks allocate through mimalloc (their `#[global_allocator]`).
//! A training step frees and reallocates the same few hundred MiB of activations and gradients
//! every step, and mimalloc's default purge hands large freed pages back to the OS (madvise), so
//! the next step takes a page fault and the kernel zeroes each page again: measured on a ResNet-20
//! step at batch 128 (2-core AMD EPYC), ~1.0 s of kernel time over 7 steps, ~0.1 s without purging.
//! The peak resident memory is the step's working set either way (PyTorch's allocators keep
//! freed memory too).

use std::ffi::{c_int, c_long};

// mimalloc 3's `mi_option_purge_delay` (include/mimalloc.h, `mi_option_e`: the 16th option);
// `libmimalloc-sys` declares the function only with its `extended` feature and names no constant
// for this option under mimalloc 3, so both are declared here against the library it links.
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
}

/// Tells mimalloc never to return freed pages to the OS (purge delay -1), so memory a step frees
/// is reused by the next without page faults. Call it first in a program whose global allocator
/// is `mimalloc::MiMalloc`; under another allocator it changes nothing that allocator does.
pub fn retain_freed_host_memory() {
    // SAFETY: mi_option_set takes any option index and value; this one is read on each purge.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
