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
//!
//! The same allocator keeps a process-wide count too, which `serve`'s `/metrics` shows next to
//! the resident size: the difference is what the C allocator keeps but the program no longer
//! uses, so a soak can tell a leak (live bytes rise) from fragmentation (only RSS rises).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// The system allocator, counting the bytes each thread holds.
pub struct CountingAllocator;

thread_local! {
    // `const` and without a destructor: reading or writing it never allocates, which an
    // allocator must not do. Signed: a block freed on another thread than the one that
    // allocated it is subtracted there.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

/// Bytes the whole process holds. Relaxed: it is a gauge read now and then, never a guard
/// that orders other memory.
static PROCESS: AtomicIsize = AtomicIsize::new(0);

fn add(delta: isize) {
    // `try_with` fails only while the thread is being torn down; the count no longer matters then.
    let _ = LIVE.try_with(|c| c.set(c.get().wrapping_add(delta)));
    PROCESS.fetch_add(delta, Ordering::Relaxed);
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

/// Bytes the whole process holds (allocated and not yet freed), as far as the counting
/// allocator knows; zero without it.
pub fn process_live_bytes() -> i64 {
    PROCESS.load(Ordering::Relaxed) as i64
}

/// Hands memory the C allocator keeps free back to the system. glibc keeps freed memory in
/// per-thread arenas and returns it only from the top of each heap, so a server whose threads
/// take turns building large short-lived values (a state file's JSON, a run's transcript) holds
/// their peak forever after; `malloc_trim` releases the free pages inside the heaps too. A no-op
/// elsewhere (musl returns memory on its own).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes no pointers and only walks the allocator's own lists,
        // under the allocator's locks.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }
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
