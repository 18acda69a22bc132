//! A counting global allocator: allocations, bytes, and the peak of bytes held at once,
//! counted only while switched on, so the rest of the run pays one relaxed load per
//! allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated minus bytes freed since counting started (memory allocated before and
/// freed during counting makes it lower, never higher, than what is held).
static HELD: AtomicI64 = AtomicI64::new(0);
/// The highest [`HELD`] since counting started.
static PEAK: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counting allocations (a `realloc` counts as one) while enabled.
pub struct CountingAllocator;

#[inline]
fn count(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        let held = HELD.fetch_add(size as i64, Ordering::Relaxed) + size as i64;
        PEAK.fetch_max(held, Ordering::Relaxed);
    }
}

#[inline]
fn release(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        HELD.fetch_sub(size as i64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        release(layout.size());
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        release(layout.size());
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counting in progress, from [`start`] until [`Counting::stop`].
#[derive(Debug)]
#[must_use = "call stop() to read the counts"]
pub struct Counting(());

/// Resets the counters and starts counting (every thread of the process).
pub fn start() -> Counting {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    BYTES.store(0, Ordering::Relaxed);
    HELD.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    Counting(())
}

impl Counting {
    /// Stops counting; returns (allocations, bytes) since [`start`].
    pub fn stop(self) -> (u64, u64) {
        let (allocations, bytes, _) = self.stop_with_peak();
        (allocations, bytes)
    }

    /// Stops counting; returns (allocations, bytes, the peak of bytes held at once) since
    /// [`start`].
    pub fn stop_with_peak(self) -> (u64, u64, u64) {
        COUNTING.store(false, Ordering::SeqCst);
        (
            ALLOCATIONS.load(Ordering::Relaxed),
            BYTES.load(Ordering::Relaxed),
            PEAK.load(Ordering::Relaxed).max(0) as u64,
        )
    }
}
