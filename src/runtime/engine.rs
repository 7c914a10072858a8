//! One io_uring event loop per thread. CONTRACT (implemented by the runtime work).
//!
//! The engine does I/O only: it owns the ring, the provided-buffer ring, the fixed-file table
//! (direct descriptors), and one bounded outbound byte queue per connection. It knows nothing
//! of MQTT. A [`Handler`] (the broker worker, or the load generator) gets callbacks and answers
//! through [`Io`].
//!
//! - `Engine::new(cfg)` builds the ring (and registers a sparse fixed-file table of
//!   `cfg.max_conns` entries plus headroom, and a provided buffer ring of `cfg.buf_count` buffers
//!   of `cfg.buf_size` bytes).
//! - `Engine::listen(listener)`: multishot accept on a (SO_REUSEPORT) listener into direct
//!   descriptors. Accepted sockets inherit TCP options set on the listener. Beyond
//!   `cfg.max_conns` live connections a new connection is closed at once and counted.
//! - Reads: multishot recv with buffer select from the provided buffer ring. `on_data` gets
//!   a slice that is valid only during the call (the buffer goes back to the ring right after).
//!   ENOBUFS / a multishot ending without IORING_CQE_F_MORE re-arms (after buffers are returned);
//!   counted in [`EngineStats`].
//! - Writes: `Io::send` copies bytes into the connection's queue; the engine flushes every queue
//!   with pending bytes once per loop iteration, one send in flight per connection, handling
//!   short writes. `Io::send` refuses (returns `false`) past `cfg.send_queue_limit` bytes.
//! - `Io::close(conn)`: flushes what is queued (best effort, bounded) then closes; `on_close` is
//!   then called exactly once for every connection that was opened, whatever ended it.
//! - Timers: `on_tick(now)` every `cfg.tick` (a timeout SQE keeps the wait bounded).
//! - Cross-thread wake: `Engine::remote()` gives a `Remote` (Send + Sync + Clone). From a handler
//!   running on another engine, `io.wake(&remote)` submits IORING_OP_MSG_RING to the target ring;
//!   from any other thread `remote.wake()` writes its eventfd. Wakes are coalesced (an atomic
//!   flag); the target's handler gets `on_wake` and drains its own mailbox.
//! - Outbound connections (for the load generator): `Io::connect(addr, bind)` creates a socket
//!   (bound to `bind` with IP_BIND_ADDRESS_NO_PORT when given), connects through the ring and
//!   calls `on_open` (or `on_close` with the error).
//! - `ConnId` = (slot, generation): a stale id (the slot was reused) is ignored by every `Io`
//!   method, so late messages about a gone connection are harmless.
//! - The loop ends when `Handler::should_stop()` returns true after a callback; `run` then
//!   returns after closing every connection (calling `on_close` for each).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Identifies a connection on one engine: slot index and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Submission queue entries.
    pub ring_entries: u32,
    /// Provided buffers in the buffer ring (power of two).
    pub buf_count: u16,
    /// Size of each provided buffer.
    pub buf_size: u32,
    /// Maximum live connections on this engine (fixed-file table size).
    pub max_conns: u32,
    /// Maximum bytes queued for sending on one connection.
    pub send_queue_limit: usize,
    /// Period of `on_tick`.
    pub tick: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ring_entries: 4096,
            buf_count: 4096,
            buf_size: 4096,
            max_conns: 16384,
            send_queue_limit: 1 << 20,
            tick: Duration::from_millis(100),
        }
    }
}

/// Counters the engine keeps (read by the broker's metrics).
#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub accepted: u64,
    pub refused_max_conns: u64,
    pub closed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub recv_enobufs: u64,
    pub recv_rearms: u64,
    pub send_queue_full: u64,
}

pub trait Handler {
    /// A connection was accepted (peer address) or an outbound connect succeeded.
    fn on_open(&mut self, io: &mut Io<'_>, conn: ConnId, peer: Option<SocketAddr>);
    /// Bytes arrived. The slice is only valid for this call.
    fn on_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]);
    /// The connection is gone (peer closed, I/O error, or our own close). Called once.
    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, error: Option<std::io::Error>);
    /// The connection's send queue drained completely after `Io::send` had refused bytes.
    fn on_writable(&mut self, _io: &mut Io<'_>, _conn: ConnId) {}
    /// Another thread woke this engine (see `Remote`).
    fn on_wake(&mut self, io: &mut Io<'_>);
    /// Called every `EngineConfig::tick`, and after each batch of completions with the
    /// current time, so timers stay accurate under load.
    fn on_tick(&mut self, io: &mut Io<'_>, now: Instant);
    /// Checked after every callback batch; true ends `Engine::run`.
    fn should_stop(&self) -> bool;
}

pub use self::imp::{Engine, Io, Remote};

mod imp {
    //! Placeholder until the runtime work lands.
    use super::*;
    pub struct Engine;
    pub struct Io<'a>(std::marker::PhantomData<&'a ()>);
    #[derive(Clone)]
    pub struct Remote;
    impl<'a> Io<'a> {
        pub fn send(&mut self, _c: ConnId, _d: &[u8]) -> bool {
            unimplemented!()
        }
        pub fn queued(&self, _c: ConnId) -> usize {
            unimplemented!()
        }
        pub fn close(&mut self, _c: ConnId) {
            unimplemented!()
        }
        pub fn wake(&mut self, _r: &Remote) {
            unimplemented!()
        }
        pub fn connect(
            &mut self,
            _a: SocketAddr,
            _b: Option<SocketAddr>,
        ) -> std::io::Result<ConnId> {
            unimplemented!()
        }
        pub fn stats(&self) -> &EngineStats {
            unimplemented!()
        }
        pub fn now(&self) -> Instant {
            unimplemented!()
        }
    }
    impl Engine {
        pub fn new(_cfg: EngineConfig) -> std::io::Result<Engine> {
            unimplemented!()
        }
        pub fn listen(&mut self, _l: std::net::TcpListener) -> std::io::Result<()> {
            unimplemented!()
        }
        pub fn remote(&self) -> Remote {
            unimplemented!()
        }
        pub fn run<H: Handler>(&mut self, _h: &mut H) -> std::io::Result<()> {
            unimplemented!()
        }
    }
    impl Remote {
        pub fn wake(&self) {
            unimplemented!()
        }
    }
}
