//! The caching allocator: every byte of device memory (real or emulated) goes through one pool per
//! device, which keeps freed blocks by size class and hands them out again, so a training step
//! after the first makes no new device allocation. It also keeps the statistics users see.

use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ptr::NonNull;

#[cfg(feature = "cuda")]
use cudarc::driver::CudaSlice;

/// Snapshot of a device's memory pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes held by live buffers (rounded up to their size class), including the memory a captured
    /// CUDA graph keeps reserved for its replays.
    pub live_bytes: usize,
    /// The largest `live_bytes` seen since the device was opened or the peak was reset.
    pub peak_bytes: usize,
    /// Allocations that reached the driver (cudaMalloc or the emulator's host allocation).
    pub device_allocations: u64,
    /// Buffer requests served, from the cache or the driver.
    pub requests: u64,
    /// Bytes of freed blocks kept for reuse.
    pub cached_bytes: usize,
}

/// One block of device memory.
pub(crate) enum RawBlock {
    #[cfg(feature = "cuda")]
    Cuda {
        slice: CudaSlice<u8>,
        ptr: u64,
    },
    Host(HostBlock),
}

impl RawBlock {
    /// The address kernels see: a device pointer, or a host pointer under emulation.
    pub(crate) fn address(&self) -> u64 {
        match self {
            #[cfg(feature = "cuda")]
            RawBlock::Cuda { ptr, .. } => *ptr,
            RawBlock::Host(h) => host_address(h),
        }
    }
}

/// Host memory standing in for device memory under emulation. Accessed only through raw pointers,
/// as kernels access device memory, so no Rust reference ever aliases a kernel's writes.
pub(crate) struct HostBlock {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a HostBlock is plain memory owned by one buffer; kernels and copies reach it through raw
// pointers under the same ordering rules as a GPU stream (launches are synchronous under emulation).
unsafe impl Send for HostBlock {}
unsafe impl Sync for HostBlock {}

impl HostBlock {
    /// 256-byte aligned like cudaMalloc, so vectorized kernel loads are valid here too.
    pub(crate) fn new(bytes: usize) -> Option<HostBlock> {
        let layout = Layout::from_size_align(bytes.max(1), 256).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        Some(HostBlock { ptr, layout })
    }
}

/// The address of a host block, as kernels see it.
pub(crate) fn host_address(h: &HostBlock) -> u64 {
    h.ptr.as_ptr() as u64
}

impl Drop for HostBlock {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout and freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Rounds a request up to its size class: multiples of 512 bytes up to 64 KiB, then eight classes
/// per power of two (at most 12.5% waste), so blocks of nearly equal size are shared.
pub(crate) fn size_class(bytes: usize) -> usize {
    const SMALL: usize = 512;
    if bytes <= 64 * 1024 {
        return bytes.max(1).div_ceil(SMALL) * SMALL;
    }
    let step = 1usize << (usize::BITS - 1 - bytes.leading_zeros()).saturating_sub(3);
    bytes.div_ceil(step) * step
}

/// Free lists by size class plus the statistics.
#[derive(Default)]
pub(crate) struct Pool {
    free: BTreeMap<usize, Vec<RawBlock>>,
    stats: MemoryStats,
}

impl Pool {
    /// A cached block of exactly this class, if any.
    pub(crate) fn take_cached(&mut self, class: usize) -> Option<RawBlock> {
        let list = self.free.get_mut(&class)?;
        let block = list.pop()?;
        self.stats.cached_bytes -= class;
        Some(block)
    }

    /// Books a block of `class` bytes as live; `fresh` says whether it came from the driver.
    pub(crate) fn record_alloc(&mut self, class: usize, fresh: bool) {
        self.stats.requests += 1;
        if fresh {
            self.stats.device_allocations += 1;
        }
        self.stats.live_bytes += class;
        self.stats.peak_bytes = self.stats.peak_bytes.max(self.stats.live_bytes);
    }

    /// Books a request served by a graph's private pool (its blocks stay booked as live).
    pub(crate) fn record_request(&mut self) {
        self.stats.requests += 1;
    }

    /// Keeps a block for reuse without booking it as freed (a graph's private pool, whose blocks
    /// the device's pool books as live until the graph is gone).
    pub(crate) fn release_unbooked(&mut self, class: usize, block: RawBlock) {
        self.stats.cached_bytes += class;
        self.free.entry(class).or_default().push(block);
    }

    /// Every cached block with its class, leaving the cache empty.
    pub(crate) fn drain(&mut self) -> Vec<(usize, RawBlock)> {
        self.stats.cached_bytes = 0;
        std::mem::take(&mut self.free)
            .into_iter()
            .flat_map(|(class, blocks)| blocks.into_iter().map(move |b| (class, b)))
            .collect()
    }

    /// Takes a block back into the cache.
    pub(crate) fn release(&mut self, class: usize, block: RawBlock) {
        self.stats.live_bytes -= class;
        self.stats.cached_bytes += class;
        self.free.entry(class).or_default().push(block);
    }

    /// Drops every cached block (returns them to the driver).
    pub(crate) fn clear_cache(&mut self) {
        self.free.clear();
        self.stats.cached_bytes = 0;
    }

    pub(crate) fn reset_peak(&mut self) {
        self.stats.peak_bytes = self.stats.live_bytes;
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_with_bounded_waste() {
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        for bytes in [70_000usize, 1 << 20, (1 << 20) + 1, 123_456_789] {
            let c = size_class(bytes);
            assert!(
                c >= bytes && (c - bytes) as f64 <= bytes as f64 * 0.125,
                "{bytes} -> {c}"
            );
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }
}
