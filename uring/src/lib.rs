//! The io_uring engine shared by the ringmq broker and its load generator `ringmq-load`.
//!
//! - [`engine`]: one io_uring event loop per thread (accept, connect, multishot receive into
//!   provided buffers, bounded send queues, cross-thread wake through MSG_RING). It knows
//!   nothing of MQTT: a [`engine::Handler`] gets callbacks and answers through [`engine::Io`].
//! - [`wheel`]: a hashed timing wheel for per-connection deadlines (keep-alive, CONNECT
//!   timeout), one per thread.
//!
//! `unsafe` in this crate is confined to the ring, the provided buffer ring and the syscalls
//! around them; each block carries a `// SAFETY:` line.
pub mod engine;
pub mod wheel;
