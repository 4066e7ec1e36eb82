//! How much memory the script thread holds: the sandbox's bound on total script memory.
//!
//! Rhai limits each value (string, array and map sizes) but not their sum: a thousand 4 MB
//! strings are each within limits and together take 4 GB. The binary installs
//! [`CountingAllocator`] as its global allocator; it keeps a per-thread count of live bytes, and
//! the engine's progress callback (run between script operations) refuses to go on once the
//! script's thread holds more than [`crate::sandbox::engine::MAX_SCRIPT_MEMORY`] above what it held when
//! the engine was built. Per thread, because a runbook's engine lives on one thread while other
//! threads (the async runtime, `serve`'s HTTP server and other workers) allocate for themselves.
//!
//! A library user that keeps its own allocator has no count (it reads zero), so the limit is
//! then not enforced: only the `runbook` binary promises it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting the bytes each thread holds.
pub struct CountingAllocator;

thread_local! {
    // `const` and without a destructor: reading or writing it never allocates, which an
    // allocator must not do. Signed: a block freed on another thread than the one that
    // allocated it is subtracted there.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    // `try_with` fails only while the thread is being torn down; the count no longer matters then.
    let _ = LIVE.try_with(|c| c.set(c.get().wrapping_add(delta)));
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

// SAFETY: every method forwards to `System` unchanged; the counting touches only a thread-local
// `Cell` that never allocates.
#[allow(unsafe_code)] // A global allocator can only be written with `unsafe`; it forwards to `System`.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(signed(layout.size()));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(signed(layout.size()));
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is `System`'s.
        unsafe { System.dealloc(ptr, layout) };
        add(signed(layout.size()).wrapping_neg());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc` and `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(signed(new_size).wrapping_sub(signed(layout.size())));
        }
        p
    }
}

/// Bytes the current thread holds (allocated here and not yet freed), as far as the counting
/// allocator knows; zero without it.
pub fn thread_live_bytes() -> i64 {
    LIVE.try_with(Cell::get).unwrap_or(0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_counting_allocator_nothing_is_counted() {
        let before = thread_live_bytes();
        let held = vec![0u8; 1 << 20];
        assert_eq!(thread_live_bytes(), before);
        drop(held);
    }
}
