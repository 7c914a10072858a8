//! The io_uring runtime: one [`engine::Engine`] per worker thread, a hashed timing wheel,
//! and the cross-worker mailbox.
pub mod engine;
pub mod wheel;
