//! A counting global allocator for the tests that check allocation behaviour
//! (`codec_noalloc`, `routing_noalloc`, `idle_memory`). It forwards to the system allocator and
//! counts calls (`allocs`) and live bytes (`live_bytes`). A test binary installs it with
//! `#[global_allocator] static GLOBAL: counting::Counting = counting::Counting;` and should
//! hold one test only, so no other test thread allocates while it counts.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

pub struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    // Const-initialized and without a destructor: reading it never allocates.
    static THREAD_ALLOCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_thread() {
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts calls and live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        count_thread();
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        count_thread();
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocation calls (alloc and realloc) so far.
pub fn allocs() -> usize {
    ALLOCS.load(Ordering::SeqCst)
}

/// Allocation calls made by the calling thread so far (the test harness's own threads may
/// allocate while a test counts: a check of "this code does not allocate" counts here).
pub fn thread_allocs() -> usize {
    THREAD_ALLOCS.with(|c| c.get())
}

/// Heap bytes currently allocated.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}
