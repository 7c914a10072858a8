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

// SAFETY: forwards to the system allocator unchanged; only counts calls and live bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
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

/// Heap bytes currently allocated.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::SeqCst)
}
