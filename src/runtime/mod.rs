//! The io_uring runtime, from the workspace crate `ringmq-uring` (shared with `ringmq-load`):
//! one [`engine::Engine`] per worker thread and a hashed timing wheel.
pub use ringmq_uring::{engine, wheel};
