//! One io_uring event loop per thread.
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
//! - Timers: `on_tick(now)` after every batch of completions, and at the latest every `cfg.tick`
//!   or by the deadline the handler asked for with `Io::wake_at`, whichever is first: the wait
//!   itself carries the timeout (IORING_ENTER_EXT_ARG), so an idle engine sleeps until then.
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
    /// Longest time between two `on_tick` calls (`Io::wake_at` asks for an earlier one).
    pub tick: Duration,
    /// Adaptive completion batching (0 = off). While completions arrive fast enough that at
    /// least two are expected within this many microseconds, each wait holds out up to this
    /// long for `batch_want` of them, so one pass (and one send per socket) serves several
    /// packets; when the engine is idle or lightly loaded a lone completion is handled at
    /// once. Trades at most this much latency under load for fewer wake-ups and sends
    /// (kernel 6.12 min-wait; ignored on kernels without it).
    pub batch_wait_us: u32,
    /// Completions to wait for while batching.
    pub batch_want: u32,
    /// Report the peer address of accepted connections to `on_open` (needed for per-address
    /// limits). Accepts then use one single-shot SQE per connection (the kernel fills in the
    /// address) instead of a multishot accept, which cannot return addresses.
    pub peer_addrs: bool,
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
            batch_wait_us: 0,
            peer_addrs: false,
            batch_want: 32,
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
    /// Multishot accepts that failed (the accept is re-armed on the next tick).
    pub accept_errors: u64,
    /// Multishot accepts re-armed after ending without IORING_CQE_F_MORE.
    pub accept_rearms: u64,
    /// Sends that failed (the connection is closed with the error).
    pub send_errors: u64,
    /// Outbound connects that succeeded / failed.
    pub connected: u64,
    pub connect_failed: u64,
    /// `Io::wake` calls that submitted a MSG_RING (not coalesced away).
    pub wakes_sent: u64,
    /// MSG_RING wakes that failed (target ring not running yet) and went through the eventfd.
    pub wake_fallbacks: u64,
    /// Rings (fixed-file tables) in use: 1 until connections outgrow one table.
    pub shards: u64,
    /// Secondary rings that could not be built (out of memory...).
    pub shard_errors: u64,
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
    /// A send completed; `queued` bytes are still queued for the connection (0: drained).
    fn on_sent(&mut self, _io: &mut Io<'_>, _conn: ConnId, _queued: usize) {}
    /// Another thread woke this engine (see `Remote`).
    fn on_wake(&mut self, io: &mut Io<'_>);
    /// Called after each batch of completions, and otherwise at the latest every
    /// `EngineConfig::tick` or at the deadline given to `Io::wake_at`, with the current time.
    fn on_tick(&mut self, io: &mut Io<'_>, now: Instant);
    /// Checked after every callback batch; true ends `Engine::run`.
    fn should_stop(&self) -> bool;
}

pub use self::imp::{conn_state_size, Engine, Io, Remote};

mod imp {
    //! The io_uring implementation. Layout of `user_data` on every SQE we submit:
    //! bits 56..63 = operation kind, bits 32..55 = low 24 bits of the connection generation,
    //! bits 0..31 = connection slot (or listener index / wake-slab index).
    use super::*;
    use io_uring::{cqueue, opcode, squeue, types, IoUring};
    use std::collections::{HashMap, VecDeque};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
    use std::sync::Arc;

    /// Buffer group id of the provided buffer ring.
    const BGID: u16 = 0;
    /// IORING_MAX_FIXED_FILES: the kernel's cap on one fixed-file table, whatever the limit.
    const MAX_FIXED_FILES: u32 = 1 << 20;
    /// IOU_PBUF_RING_INC: incrementally consumed provided buffers (kernel 6.12).
    const PBUF_RING_INC: u16 = 2;
    /// Default for how long `Io::close` (and the shutdown in `run`) keeps flushing queued bytes
    /// to a peer that does not read before giving up (see `Engine::set_close_linger`).
    const CLOSE_LINGER: Duration = Duration::from_secs(5);
    /// Marker for "no fixed file slot yet".
    const NO_FIXED: u32 = u32::MAX;
    /// IORING_FILE_INDEX_ALLOC (~0U) as the i32 offset of IORING_OP_FILES_UPDATE: the kernel
    /// picks a free fixed slot and writes its index back into the fd array.
    const FILE_INDEX_ALLOC: i32 = -1;

    const K_ACCEPT: u64 = 1;
    const K_RECV: u64 = 2;
    const K_SEND: u64 = 3;
    const K_CLOSE: u64 = 4;
    const K_FUPD: u64 = 5;
    const K_CONNECT: u64 = 6;
    const K_IGNORE: u64 = 7;
    const K_EVENTFD: u64 = 9;
    /// The read on the eventfd that secondary rings signal when they have completions.
    const K_SHARDS: u64 = 12;
    const K_WAKE: u64 = 10;
    const K_MSG_SENT: u64 = 11;

    const GEN_MASK: u32 = 0x00FF_FFFF;

    fn ud(kind: u64, slot: u32, gen: u32) -> u64 {
        (kind << 56) | (((gen & GEN_MASK) as u64) << 32) | slot as u64
    }
    fn ud_kind(u: u64) -> u64 {
        u >> 56
    }
    fn ud_slot(u: u64) -> u32 {
        u as u32
    }
    fn ud_gen(u: u64) -> u32 {
        ((u >> 32) as u32) & GEN_MASK
    }

    // Connection flags.
    const F_USED: u16 = 1;
    const F_OPEN: u16 = 1 << 1;
    const F_RECV: u16 = 1 << 2;
    const F_SEND: u16 = 1 << 3;
    const F_CLOSING: u16 = 1 << 4;
    const F_CLOSE_INFLIGHT: u16 = 1 << 5;
    const F_DIRTY: u16 = 1 << 6;
    const F_REFUSED: u16 = 1 << 7;
    const F_ENOBUF_WAIT: u16 = 1 << 8;
    const F_CONNECTING: u16 = 1 << 9;
    const F_SEND_CANCELLED: u16 = 1 << 10;
    const F_NOTIFIED: u16 = 1 << 11;
    const F_NO_FLUSH: u16 = 1 << 12;
    /// Reading is paused (`Io::pause_recv`): the receive is not re-armed until resumed.
    const F_PAUSED: u16 = 1 << 13;

    /// Outbound bytes of one connection. Exists only while bytes are queued.
    /// `inflight` is owned by the kernel while a send is in flight and never touched then;
    /// `Io::send` appends to `pending`.
    #[derive(Default)]
    struct SendState {
        inflight: Vec<u8>,
        pos: usize,
        pending: Vec<u8>,
        deadline: Option<Instant>,
    }

    impl SendState {
        fn queued(&self) -> usize {
            self.inflight.len() - self.pos + self.pending.len()
        }
    }

    /// Per-connection state; the whole thing for an idle connection.
    struct Conn {
        gen: u32,
        /// Index in the fixed-file table of ring `shard`.
        fixed: u32,
        /// errno to report to `on_close` (0 = none); errno values fit in 16 bits.
        err: u16,
        /// Which of the engine's rings (and so which fixed-file table) holds this connection.
        shard: u16,
        flags: u16,
        /// Index (in `Engine::listen` order) of the listener that accepted this connection;
        /// `NO_LISTENER` for outbound connects. Fits in the struct's padding.
        listener: u16,
        send: Option<Box<SendState>>,
    }

    const NO_LISTENER: u16 = u16::MAX;

    /// Size in bytes of the engine's per-connection state (for an idle connection, this is
    /// all the engine holds: no buffers).
    pub fn conn_state_size() -> usize {
        std::mem::size_of::<Conn>()
    }

    /// An outbound connect in progress.
    struct ConnectState {
        /// The normal descriptor, from socket creation until the fixed table holds it (None
        /// before and after).
        fd: Option<OwnedFd>,
        fds: [RawFd; 1],
        addr: socket2::SockAddr,
        peer: SocketAddr,
        bind: Option<SocketAddr>,
    }

    /// A listener's accepts. While the intake shard's table has more room than any listen
    /// backlog can hold, one multishot accept serves it; near the end of a table, single-shot
    /// accepts (no more in flight than free entries) make sure no accept finds the table full
    /// (the kernel would close that connection).
    struct Listener {
        sock: std::net::TcpListener,
        /// A multishot accept is armed on `shard`.
        multi: bool,
        /// Single-shot accepts in flight on `shard`.
        singles: u32,
        /// The shard the accepts are armed on.
        shard: usize,
        /// The accepts are being cancelled (to move to another shard or mode).
        cancelling: bool,
        backoff: bool,
        /// With `peer_addrs`: where the kernel writes the peer of the accept in flight (one
        /// single-shot accept per listener at a time; boxed so the address stays put).
        peer: Box<([u8; 128], libc::socklen_t)>,
    }

    /// `user_data` generation field of a listener's multishot / single-shot accepts.
    const ACCEPT_MULTI: u32 = 0;
    const ACCEPT_SINGLE: u32 = 1;
    /// Single-shot accepts kept in flight per listener near the end of a table.
    const SINGLE_ACCEPTS: u32 = 16;
    /// The window over which adaptive batching measures the completion rate.
    const RATE_WINDOW: Duration = Duration::from_millis(2);
    /// How long a wait after submitting sends holds out for a completion beyond theirs.
    const INLINE_SEND_WAIT_US: u32 = 50;
    /// Drained send queues kept for reuse, and the largest buffer capacity kept.
    const SEND_POOL: usize = 256;
    const SEND_POOL_CAP: usize = 64 << 10;

    /// A `struct sockaddr_in` / `sockaddr_in6` as the kernel wrote it, read field by field.
    fn parse_sockaddr(b: &[u8; 128], len: libc::socklen_t) -> Option<SocketAddr> {
        let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
        let port = u16::from_be_bytes([b[2], b[3]]);
        if family == libc::AF_INET && len >= 16 {
            let ip = std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::new(ip.into(), port))
        } else if family == libc::AF_INET6 && len >= 28 {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip.into(),
                port,
                flow,
                scope,
            )))
        } else {
            None
        }
    }

    /// The io_uring_buf layout (struct io_uring_buf in the kernel uapi).
    #[repr(C)]
    struct RawBuf {
        addr: u64,
        len: u32,
        bid: u16,
        resv: u16,
    }

    /// Provided buffer ring: `count` entries of 16 bytes plus `count * size` bytes of buffers,
    /// both in anonymous mappings owned by this struct.
    struct BufRing {
        ring: *mut RawBuf,
        ring_len: usize,
        bufs: *mut u8,
        bufs_len: usize,
        mask: u16,
        tail: u16,
        size: u32,
        count: u16,
        available: u32,
        /// Registered with IOU_PBUF_RING_INC (kernel 6.12): the kernel consumes a buffer
        /// piecewise, one receive after the other, and hands it back only when it is used up,
        /// so one buffer carries many small packets (CONNECTs, PINGREQs) of many connections.
        inc: bool,
        /// With `inc`: bytes of each buffer the kernel has filled so far (where the next
        /// completion's data starts).
        offs: Vec<u32>,
    }

    // SAFETY: the raw pointers refer to private mappings owned by the BufRing; the engine that
    // owns it is used by one thread at a time (moving it between threads is fine).
    unsafe impl Send for BufRing {}

    /// An anonymous private mapping; `populate` faults its pages in at once.
    fn mmap_anon(len: usize, populate: bool) -> io::Result<*mut u8> {
        let flags =
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: anonymous private mapping, no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            Err(io::Error::last_os_error())
        } else {
            Ok(p as *mut u8)
        }
    }

    impl BufRing {
        /// `populate`: fault the buffers in now (the primary ring, which serves the first
        /// connections); a secondary ring's buffers become resident as they are used.
        fn new(count: u16, size: u32, populate: bool) -> io::Result<BufRing> {
            if count == 0 || !count.is_power_of_two() || count > 32768 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "buf_count must be a power of two in 1..=32768",
                ));
            }
            if size == 0 {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "buf_size is 0"));
            }
            let ring_len = count as usize * std::mem::size_of::<RawBuf>();
            let bufs_len = count as usize * size as usize;
            let ring = mmap_anon(ring_len, true)? as *mut RawBuf;
            let bufs = match mmap_anon(bufs_len, populate) {
                Ok(b) => b,
                Err(e) => {
                    // SAFETY: `ring` was mapped just above with this length.
                    unsafe { libc::munmap(ring as *mut libc::c_void, ring_len) };
                    return Err(e);
                }
            };
            Ok(BufRing {
                ring,
                ring_len,
                bufs,
                bufs_len,
                mask: count - 1,
                tail: 0,
                size,
                count,
                available: 0,
                inc: false,
                offs: Vec::new(),
            })
        }

        /// Puts buffer `bid` at the tail (not yet visible to the kernel).
        fn push(&mut self, bid: u16) {
            if bid >= self.count {
                return;
            }
            let idx = (self.tail & self.mask) as usize;
            // SAFETY: idx < count so the entry lies inside the ring mapping; the kernel only
            // reads entries between its head and the published tail, and this one is past the
            // published tail. Fields are written individually so the tail (resv of entry 0) is
            // not touched.
            unsafe {
                let e = self.ring.add(idx);
                std::ptr::addr_of_mut!((*e).addr)
                    .write(self.bufs.add(bid as usize * self.size as usize) as u64);
                std::ptr::addr_of_mut!((*e).len).write(self.size);
                std::ptr::addr_of_mut!((*e).bid).write(bid);
            }
            self.tail = self.tail.wrapping_add(1);
            self.available += 1;
        }

        fn publish(&self) {
            // SAFETY: the tail is the u16 `resv` field of entry 0, 2-byte aligned inside the
            // page-aligned ring mapping; the kernel reads it with acquire semantics.
            let tail = unsafe { &*(std::ptr::addr_of_mut!((*self.ring).resv) as *const AtomicU16) };
            tail.store(self.tail, Ordering::Release);
        }

        fn recycle(&mut self, bid: u16) {
            self.push(bid);
            self.publish();
        }

        /// The `len` bytes at offset `off` of buffer `bid` (clamped to the buffer).
        ///
        /// # Safety
        /// The kernel has written these bytes and reported them in a completion: the buffer
        /// was handed to us, or (with `inc`) the kernel writes only past them from now on. The
        /// buffer must not be recycled while the slice is alive.
        unsafe fn slice_at<'x>(&self, bid: u16, off: usize, len: usize) -> &'x [u8] {
            let size = self.size as usize;
            let off = off.min(size);
            let len = len.min(size - off);
            let bid = (bid & self.mask) as usize;
            std::slice::from_raw_parts(self.bufs.add(bid * size + off), len)
        }

        /// Takes the data of a receive completion that used buffer `bid`: returns its offset
        /// in the buffer and whether the kernel is done with the buffer (it then left the
        /// ring and must be recycled after use).
        fn take(&mut self, bid: u16, len: usize, more: bool) -> (usize, bool) {
            if !self.inc {
                self.available = self.available.saturating_sub(1);
                return (0, true);
            }
            let i = (bid & self.mask) as usize;
            let off = self.offs[i] as usize;
            if more {
                self.offs[i] = (off + len).min(self.size as usize) as u32;
                (off, false)
            } else {
                self.offs[i] = 0;
                self.available = self.available.saturating_sub(1);
                (off, true)
            }
        }
    }

    impl Drop for BufRing {
        fn drop(&mut self) {
            // SAFETY: both regions were mapped in `new` with these lengths and the buffer ring
            // was unregistered (or the ring torn down) before the engine drops this.
            unsafe {
                libc::munmap(self.ring as *mut libc::c_void, self.ring_len);
                libc::munmap(self.bufs as *mut libc::c_void, self.bufs_len);
            }
        }
    }

    struct Shared {
        flag: AtomicBool,
        /// A dup of the ring fd, target of IORING_OP_MSG_RING.
        ring_fd: OwnedFd,
        eventfd: OwnedFd,
    }

    /// Wakes an engine from another thread (eventfd) or from another engine (MSG_RING).
    #[derive(Clone)]
    pub struct Remote {
        shared: Arc<Shared>,
    }

    impl std::fmt::Debug for Remote {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Remote")
                .field("ring_fd", &self.shared.ring_fd.as_raw_fd())
                .finish()
        }
    }

    impl Remote {
        /// Wake the engine (coalesced): its handler gets `on_wake` soon.
        pub fn wake(&self) {
            if !self.shared.flag.swap(true, Ordering::SeqCst) {
                self.write_eventfd();
            }
        }

        fn write_eventfd(&self) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to the eventfd we own.
            let _ = unsafe {
                libc::write(
                    self.shared.eventfd.as_raw_fd(),
                    &one as *const u64 as *const libc::c_void,
                    8,
                )
            };
        }
    }

    /// One io_uring with its own fixed-file table and provided buffer ring. The kernel caps a
    /// fixed-file table at RLIMIT_NOFILE entries, but per table: an engine that must hold more
    /// connections than that spreads them over several rings (shards). Shard 0 is the primary
    /// ring the thread waits on; the others are created on demand and signal completions
    /// through an eventfd the primary ring reads.
    struct Shard {
        // `ring` is declared first so it is dropped before the memory its requests refer to.
        ring: IoUring,
        bufs: BufRing,
        /// SQEs that did not fit in the submission queue, in order.
        backlog: VecDeque<squeue::Entry>,
        /// Entries in the fixed-file table.
        table_size: u32,
        /// Connections given a slot in this table; new ones go elsewhere from `cap` on (the
        /// rest of the table is headroom for accepts already under way).
        used: u32,
        cap: u32,
        /// Receives waiting for buffers that may be re-armed in this pass.
        rearm_budget: u32,
    }

    struct Inner {
        // `shards` is declared first so the rings are dropped before the memory their
        // requests refer to.
        shards: Vec<Shard>,
        cfg: EngineConfig,
        disabled: bool,
        max_conns: u32,
        /// RLIMIT_NOFILE at start: the largest fixed-file table the kernel accepts.
        nofile: u32,
        /// The shard new connections (accepts and connects) go to.
        intake: usize,
        /// Multishot accepts are used only while the intake table has more free entries than
        /// this: the longest listen backlog (net.core.somaxconn) plus a little.
        multi_margin: u32,
        /// Secondary rings signal this eventfd when they post completions.
        shard_efd: OwnedFd,
        shard_efd_buf: Box<u64>,
        shard_efd_armed: bool,
        /// Building a secondary ring failed; tried again at the next tick.
        shard_failed: bool,
        /// A secondary ring had work left after it was entered in `prepare`.
        secondary_work: bool,
        conns: Vec<Conn>,
        free: Vec<u32>,
        live: u32,
        dirty: Vec<u32>,
        enobufs: VecDeque<(u32, u32)>,
        closing: Vec<(u32, u32)>,
        connects: HashMap<u32, Box<ConnectState>>,
        /// Connects waiting for a normal descriptor to be free (slot, generation).
        connect_queue: VecDeque<(u32, u32)>,
        /// Normal descriptors held by connects whose socket is not in a fixed table yet.
        fds_held: u32,
        connect_nodelay: bool,
        listeners: Vec<Listener>,
        shared: Arc<Shared>,
        eventfd_buf: Box<u64>,
        eventfd_armed: bool,
        /// When the next housekeeping pass (listener back-off, close linger) and `on_tick` are
        /// due at the latest.
        next_tick: Instant,
        /// The earliest deadline asked for with `Io::wake_at` (cleared once reached).
        wake_at: Option<Instant>,
        msg_pending: slab::Slab<Remote>,
        cqes: Vec<(u64, i32, u32)>,
        stats: EngineStats,
        now: Instant,
        wake_pending: bool,
        stopping: bool,
        /// The kernel supports min-wait (IORING_FEAT_MIN_TIMEOUT), so batching can be used.
        min_wait_ok: bool,
        /// Completions other than send completions per second, smoothed over windows of at
        /// least `RATE_WINDOW`: the load estimate adaptive batching goes by.
        rate: f64,
        /// Completions other than send completions since the window began.
        work: u32,
        /// Sends submitted in the current pass (they mostly complete inline, inside the wait
        /// that submits them).
        sends: u32,
        /// When the current load-estimate window began.
        last_pass: Instant,
        /// Drained send queues kept for reuse (bounded), so a connection that sends now and
        /// then does not allocate for every message, and an idle one holds no buffer.
        // Boxed: a queue moves between a connection (`Conn::send`) and the pool as is.
        #[allow(clippy::vec_box)]
        send_pool: Vec<Box<SendState>>,
        defer_taskrun: bool,
        linger: Duration,
    }

    /// One io_uring event loop. Create it on (or move it to) the thread that runs it.
    pub struct Engine {
        inner: Inner,
    }

    /// The handler's view of the engine during a callback.
    pub struct Io<'a> {
        inner: &'a mut Inner,
    }

    fn errno_of(res: i32) -> i32 {
        if res < 0 {
            -res
        } else {
            libc::EIO
        }
    }

    /// Submits what `ring` has queued and runs its deferred work without blocking: a wait with
    /// a zero timeout for as many completions as its queue holds. The kernel (6.13 on) runs
    /// deferred work in batches of at most max(20, completions waited for) per enter, so an
    /// enter that waits for none would run only 20.
    fn run_deferred(ring: &IoUring) -> io::Result<()> {
        let ts = types::Timespec::new();
        let args = types::SubmitArgs::new().timespec(&ts);
        let want = ring.params().cq_entries() as usize;
        match ring.submitter().submit_with_args(want, &args) {
            Err(e) if !is_wait_end(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Errors that only end a wait: ETIME (its timeout, or a batching wait's min-wait, ran out
    /// with fewer completions than asked), EINTR, EBUSY, EAGAIN.
    fn is_wait_end(e: &io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ETIME)
        )
    }

    /// An errno as kept in `Conn::err` (errno values are small; anything odd becomes EIO).
    fn errno16(e: i32) -> u16 {
        u16::try_from(e).unwrap_or(libc::EIO as u16)
    }

    /// net.core.somaxconn: the kernel caps every listen backlog at it (4096 when unreadable).
    fn somaxconn() -> u32 {
        std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    }

    fn nofile_limit() -> u32 {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        if r != 0 {
            return 1024;
        }
        rl.rlim_cur.min(u32::MAX as u64) as u32
    }

    /// A ring with `cq` completion entries: single issuer with deferred task work (and,
    /// with `disabled`, created disabled until the thread that runs it enables it) where the
    /// kernel has them, else a plain one. The flag says which.
    fn build_with(entries: u32, cq: u32, disabled: bool) -> io::Result<(IoUring, bool)> {
        let mut b = IoUring::builder();
        b.setup_cqsize(cq)
            .setup_submit_all()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag();
        if disabled {
            b.setup_r_disabled();
        }
        match b.build(entries) {
            Ok(r) => Ok((r, true)),
            Err(_) => Ok((
                IoUring::builder()
                    .setup_cqsize(cq)
                    .setup_submit_all()
                    .build(entries)?,
                false,
            )),
        }
    }

    fn build_ring(entries: u32) -> io::Result<(IoUring, bool)> {
        build_with(entries, entries.saturating_mul(4).max(64), true)
    }

    /// A secondary ring (see [`Shard`]), built on the thread that runs the engine, like the
    /// primary one with deferred task work: its completions are run only when the engine
    /// enters it (`Inner::enter_secondaries`, whenever its IORING_SQ_TASKRUN flag says work is
    /// waiting), and the kernel signals the eventfd registered on it as work arrives, which
    /// ends the primary ring's wait.
    fn build_secondary(entries: u32) -> io::Result<IoUring> {
        // Room for a burst of completions from a full table (closing 20,000 connections at
        // once gives three each); beyond it they wait in the kernel's overflow list.
        build_with(entries, entries.saturating_mul(16).max(64), false).map(|(r, _)| r)
    }

    impl Shard {
        /// Registers a fixed-file table for `want` more connections (plus headroom, at most
        /// `nofile` entries) and a provided buffer ring on `ring`.
        fn new(
            ring: IoUring,
            cfg: &EngineConfig,
            want: u32,
            nofile: u32,
            primary: bool,
        ) -> io::Result<Shard> {
            let headroom = (want / 16).clamp(64, 1024);
            let table_size = want
                .saturating_add(headroom)
                .clamp(2, nofile.clamp(2, MAX_FIXED_FILES));
            let cap = table_size - headroom.min(table_size / 2);
            ring.submitter().register_files_sparse(table_size)?;
            // The primary ring gets the configured buffers; a secondary one a thirty-second
            // of them (at least 64): connections that outgrow one table are mostly idle, and
            // a buffer is only taken while bytes are being handed over.
            let count = if primary {
                cfg.buf_count
            } else {
                (cfg.buf_count / 32).max(64)
            };
            let mut bufs = BufRing::new(count, cfg.buf_size, primary)?;
            // SAFETY: the ring memory is a page-aligned mapping of `count` entries that lives
            // in `bufs` until after the buffer ring is unregistered (Drop of Inner).
            let inc = unsafe {
                ring.submitter().register_buf_ring_with_flags(
                    bufs.ring as u64,
                    count,
                    BGID,
                    PBUF_RING_INC,
                )
            };
            match inc {
                Ok(()) => {
                    bufs.inc = true;
                    bufs.offs = vec![0; count as usize];
                }
                // SAFETY: as above (a kernel without incremental consumption).
                Err(_) => unsafe {
                    ring.submitter().register_buf_ring_with_flags(
                        bufs.ring as u64,
                        count,
                        BGID,
                        0,
                    )?;
                },
            }
            for bid in 0..count {
                bufs.push(bid);
            }
            bufs.publish();
            Ok(Shard {
                ring,
                bufs,
                backlog: VecDeque::new(),
                table_size,
                used: 0,
                cap,
                rearm_budget: 0,
            })
        }

        fn push(&mut self, e: squeue::Entry) {
            if self.backlog.is_empty() {
                // SAFETY: every SQE we build points only at memory owned by the engine that
                // stays alive and unmoved until its completion (boxed send/connect state,
                // boxed eventfd buffers, the buffer ring).
                if unsafe { self.ring.submission().push(&e) }.is_ok() {
                    return;
                }
                let _ = self.ring.submit();
                // SAFETY: as above.
                if unsafe { self.ring.submission().push(&e) }.is_ok() {
                    return;
                }
            }
            self.backlog.push_back(e);
        }

        fn drain_backlog(&mut self) {
            while let Some(e) = self.backlog.front() {
                // SAFETY: see `push`.
                if unsafe { self.ring.submission().push(e) }.is_ok() {
                    self.backlog.pop_front();
                } else if self.ring.submit().is_err() || self.ring.submission().is_full() {
                    break;
                }
            }
        }
    }

    impl Engine {
        /// Builds the primary ring with its sparse fixed-file table and provided buffer ring.
        ///
        /// The kernel refuses a fixed-file table larger than RLIMIT_NOFILE, but checks each
        /// table on its own: when `max_conns` (plus headroom) exceeds it, the engine opens more
        /// rings (shards) as connections arrive, each with a table of at most RLIMIT_NOFILE
        /// entries, so [`Engine::max_conns`] is `cfg.max_conns` whatever the limit is.
        pub fn new(cfg: EngineConfig) -> io::Result<Engine> {
            let entries = cfg.ring_entries.clamp(8, 32768);
            let (ring, disabled) = build_ring(entries)?;
            let min_wait_ok = ring.params().is_feature_min_timeout();
            let max_conns = cfg.max_conns.max(1);
            let nofile = nofile_limit().max(64);
            let shard = Shard::new(ring, &cfg, max_conns, nofile, true)?;

            // SAFETY: plain syscalls creating new descriptors we immediately own.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: efd is a fresh descriptor owned by nobody else.
            let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
            // SAFETY: as above.
            let sfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if sfd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: sfd is a fresh descriptor owned by nobody else.
            let shard_efd = unsafe { OwnedFd::from_raw_fd(sfd) };
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on the ring fd we own returns a new descriptor.
            let dup = unsafe { libc::fcntl(shard.ring.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: dup is a fresh descriptor owned by nobody else.
            let ring_fd = unsafe { OwnedFd::from_raw_fd(dup) };
            Ok(Engine {
                inner: Inner {
                    shards: vec![shard],
                    disabled,
                    max_conns,
                    nofile,
                    intake: 0,
                    multi_margin: somaxconn().saturating_add(64),
                    shard_efd,
                    shard_efd_buf: Box::new(0),
                    shard_efd_armed: false,
                    shard_failed: false,
                    secondary_work: false,
                    conns: Vec::new(),
                    free: Vec::new(),
                    live: 0,
                    dirty: Vec::new(),
                    enobufs: VecDeque::new(),
                    closing: Vec::new(),
                    connects: HashMap::new(),
                    connect_queue: VecDeque::new(),
                    fds_held: 0,
                    connect_nodelay: true,
                    listeners: Vec::new(),
                    shared: Arc::new(Shared {
                        flag: AtomicBool::new(false),
                        ring_fd,
                        eventfd,
                    }),
                    eventfd_buf: Box::new(0),
                    eventfd_armed: false,
                    next_tick: Instant::now(),
                    wake_at: None,
                    msg_pending: slab::Slab::new(),
                    cqes: Vec::with_capacity(256),
                    stats: EngineStats {
                        shards: 1,
                        ..EngineStats::default()
                    },
                    now: Instant::now(),
                    wake_pending: false,
                    stopping: false,
                    min_wait_ok,
                    rate: 0.0,
                    work: 0,
                    sends: 0,
                    last_pass: Instant::now(),
                    send_pool: Vec::new(),
                    defer_taskrun: disabled,
                    linger: CLOSE_LINGER,
                    cfg,
                },
            })
        }

        /// Multishot accept on `listener` (its TCP options are inherited by accepted sockets).
        /// The listener is switched to blocking mode (io_uring does the waiting).
        pub fn listen(&mut self, listener: std::net::TcpListener) -> io::Result<()> {
            listener.set_nonblocking(false)?;
            self.inner.listeners.push(Listener {
                sock: listener,
                multi: false,
                singles: 0,
                shard: 0,
                cancelling: false,
                backoff: false,
                peer: Box::new(([0u8; 128], 0)),
            });
            Ok(())
        }

        pub fn remote(&self) -> Remote {
            Remote {
                shared: self.inner.shared.clone(),
            }
        }

        pub fn stats(&self) -> &EngineStats {
            &self.inner.stats
        }

        /// Effective connection limit (may be below `cfg.max_conns`, see [`Engine::new`]).
        pub fn max_conns(&self) -> u32 {
            self.inner.max_conns
        }

        /// How long a closing connection keeps flushing queued bytes to a peer that does not
        /// read (default 5 s); past it the bytes are dropped and `on_close` gets `TimedOut`.
        pub fn set_close_linger(&mut self, d: Duration) {
            self.inner.linger = d;
        }

        /// True when the ring runs with IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN (falls back
        /// to a plain ring on kernels without them).
        pub fn defer_taskrun(&self) -> bool {
            self.inner.defer_taskrun
        }

        /// Entries in the registered (sparse) fixed-file table of the primary ring.
        pub fn fixed_table_size(&self) -> u32 {
            self.inner.shards[0].table_size
        }

        /// Rings (each with its own fixed-file table) the engine runs now: 1 until the
        /// connections outgrow one table (see [`Engine::new`]).
        pub fn shards(&self) -> usize {
            self.inner.shards.len()
        }

        /// Runs the loop until `h.should_stop()`; then closes every connection (flushing queued
        /// bytes for at most a few seconds), calls `on_close` for each, and returns.
        pub fn run<H: Handler>(&mut self, h: &mut H) -> io::Result<()> {
            let inner = &mut self.inner;
            if inner.disabled {
                inner.shards[0].ring.submitter().register_enable_rings()?;
                inner.disabled = false;
            }
            inner.stopping = false;
            inner.now = Instant::now();
            loop {
                inner.prepare();
                inner.submit_wait()?;
                inner.end_pass();
                inner.now = Instant::now();
                inner.drain_cq(h);
                inner.housekeeping();
                if inner.wake_pending {
                    inner.wake_pending = false;
                    inner.shared.flag.swap(false, Ordering::SeqCst);
                    h.on_wake(&mut Io { inner });
                }
                let now = inner.now;
                h.on_tick(&mut Io { inner }, now);
                if h.should_stop() {
                    return inner.shutdown(h);
                }
            }
        }
    }

    impl Drop for Inner {
        fn drop(&mut self) {
            // Stop the kernel from touching our buffers before they are freed: cancel every
            // submitted request, drop the fixed files (closes the sockets even while a Remote
            // keeps the ring file alive) and the buffer ring.
            for shard in &self.shards {
                let sub = shard.ring.submitter();
                let ts = types::Timespec::new().sec(1);
                let _ = sub.register_sync_cancel(Some(ts), types::CancelBuilder::any());
                let _ = sub.unregister_files();
                let _ = sub.unregister_buf_ring(BGID);
            }
        }
    }

    impl Inner {
        /// Queues an SQE on ring `shard`.
        fn push(&mut self, shard: usize, e: squeue::Entry) {
            self.shards[shard].push(e);
        }

        /// Queues an SQE on the ring that holds connection slot `s`.
        fn push_conn(&mut self, s: usize, e: squeue::Entry) {
            let k = self.conns[s].shard as usize;
            self.shards[k].push(e);
        }

        /// The shard new connections go to: the current one while it has room, else the first
        /// with room, else a new one (while the total stays under `max_conns`; a failed
        /// creation is retried at the next tick). None: no room anywhere.
        fn intake_shard(&mut self) -> Option<usize> {
            let cur = &self.shards[self.intake];
            if cur.used < cur.cap {
                return Some(self.intake);
            }
            if let Some(k) = self.shards.iter().position(|s| s.used < s.cap) {
                self.intake = k;
                return Some(k);
            }
            let have: u32 = self.shards.iter().map(|s| s.cap).sum();
            if have >= self.max_conns || self.shard_failed {
                return None;
            }
            let want = self.max_conns - have;
            let built = build_secondary(self.cfg.ring_entries.clamp(8, 1024)).and_then(|ring| {
                ring.submitter()
                    .register_eventfd(self.shard_efd.as_raw_fd())?;
                Shard::new(ring, &self.cfg, want, self.nofile, false)
            });
            match built {
                Ok(shard) => {
                    self.shards.push(shard);
                    self.stats.shards = self.shards.len() as u64;
                    self.intake = self.shards.len() - 1;
                    Some(self.intake)
                }
                Err(_) => {
                    self.stats.shard_errors += 1;
                    self.shard_failed = true;
                    None
                }
            }
        }

        /// Enters each secondary ring that has SQEs to submit, deferred work waiting
        /// (IORING_SQ_TASKRUN), or completions left in the kernel's overflow list, without
        /// blocking: its completions are then in its queue for `drain_cq`. True if a ring has
        /// completions to drain or work left (the kernel runs a bounded batch per enter): the
        /// next wait must not block.
        fn enter_secondaries(&mut self) -> bool {
            let mut more = false;
            for shard in &mut self.shards[1..] {
                shard.drain_backlog();
                let sq = shard.ring.submission();
                let (n, work) = (sq.len(), sq.taskrun() || sq.cq_overflow());
                drop(sq);
                if work {
                    let _ = run_deferred(&shard.ring);
                } else if n > 0 {
                    let _ = shard.ring.submit();
                }
                let sq = shard.ring.submission();
                more |= sq.taskrun() || sq.cq_overflow();
                drop(sq);
                more |= !shard.ring.completion().is_empty();
            }
            more
        }

        /// Submits what is queued and waits for at least one completion, but no longer than
        /// until the next tick or `wake_at` deadline (the timeout travels with the wait, so no
        /// timer request is needed and an idle engine sleeps until its next deadline).
        ///
        /// How long a wait holds out for more than one completion:
        /// - busy (see [`EngineConfig::batch_wait_us`]): up to `batch_wait_us` for `batch_want`;
        /// - sends were submitted in this pass: they mostly complete inline, inside this very
        ///   call, so it asks for one completion more than that and holds out a short while
        ///   for it; a wait that returned at once for the send completions alone would cost a
        ///   pass of its own. New work arriving ends the wait at once;
        /// - otherwise: the first completion ends the wait.
        fn submit_wait(&mut self) -> io::Result<()> {
            let now = Instant::now();
            let due = match self.wake_at {
                Some(w) => w.min(self.next_tick),
                None => self.next_tick,
            };
            let batch = self.cfg.batch_wait_us;
            let busy = batch > 0 && self.rate * f64::from(batch) >= 2e6;
            let (want, min_wait) = if !self.min_wait_ok {
                (1, 0)
            } else if busy {
                (self.cfg.batch_want.max(2), batch)
            } else if self.sends > 0 {
                (self.sends.saturating_add(1), INLINE_SEND_WAIT_US)
            } else {
                (1, 0)
            };
            let pending = {
                let sq = self.shards[0].ring.submission();
                sq.taskrun() || sq.cq_overflow()
            };
            let ring = &self.shards[0].ring;
            // Deferred work already waiting on this ring: run it without blocking.
            if pending {
                return run_deferred(ring);
            }
            // Completions waiting on a secondary ring: look at everything again at once.
            let r = if due <= now || self.secondary_work {
                ring.submit()
            } else {
                let ts = types::Timespec::from(due - now);
                let args = types::SubmitArgs::new().timespec(&ts);
                if min_wait > 0 {
                    let args = args.min_wait_usec(min_wait);
                    ring.submitter().submit_with_args(want as usize, &args)
                } else {
                    ring.submitter().submit_with_args(1, &args)
                }
            };
            match r {
                Err(e) if !is_wait_end(&e) => Err(e),
                _ => Ok(()),
            }
        }

        /// Ends a pass: once a window of `RATE_WINDOW` is full, folds its completion rate
        /// into the load estimate (a window of many short passes or one long wait alike; a
        /// single fast pass never looks like load).
        fn end_pass(&mut self) {
            self.sends = 0;
            let now = Instant::now();
            let dt = now.saturating_duration_since(self.last_pass);
            if dt < RATE_WINDOW {
                return;
            }
            let inst = f64::from(self.work) / dt.as_secs_f64();
            // A long idle wait resets the estimate rather than averaging into it.
            self.rate = if dt > RATE_WINDOW * 8 {
                inst
            } else {
                self.rate * 0.5 + inst * 0.5
            };
            self.last_pass = now;
            self.work = 0;
        }

        /// Housekeeping once per tick: listeners that backed off after an accept error are
        /// armed again, and closing connections past their linger give up their flush.
        fn housekeeping(&mut self) {
            if self.wake_at.is_some_and(|w| self.now >= w) {
                self.wake_at = None;
            }
            if self.now < self.next_tick {
                return;
            }
            self.next_tick = self.now + self.cfg.tick.max(Duration::from_millis(1));
            self.shard_failed = false;
            for l in &mut self.listeners {
                l.backoff = false;
            }
            self.check_linger();
        }

        fn id(&self, slot: u32) -> ConnId {
            ConnId {
                slot,
                generation: self.conns[slot as usize].gen,
            }
        }

        /// The slot of a live (not closing) connection, or None for stale/closed ids.
        fn open_slot(&self, c: ConnId) -> Option<usize> {
            let s = c.slot as usize;
            let conn = self.conns.get(s)?;
            (conn.gen == c.generation && conn.flags & F_OPEN != 0).then_some(s)
        }

        /// The slot named by a completion's user_data, if it still belongs to that generation.
        fn ud_slot_checked(&self, u: u64) -> Option<usize> {
            let s = ud_slot(u) as usize;
            let conn = self.conns.get(s)?;
            (conn.flags & F_USED != 0 && conn.gen & GEN_MASK == ud_gen(u)).then_some(s)
        }

        fn alloc(&mut self) -> u32 {
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.conns.push(Conn {
                        gen: 0,
                        fixed: NO_FIXED,
                        err: 0,
                        shard: 0,
                        flags: 0,
                        listener: NO_LISTENER,
                        send: None,
                    });
                    (self.conns.len() - 1) as u32
                }
            };
            let c = &mut self.conns[slot as usize];
            c.gen = c.gen.wrapping_add(1);
            c.fixed = NO_FIXED;
            c.err = 0;
            c.flags = F_USED;
            c.shard = 0;
            c.listener = NO_LISTENER;
            c.send = None;
            self.live += 1;
            slot
        }

        fn prepare(&mut self) {
            self.shards[0].drain_backlog();
            if self.shards.len() > 1 && !self.shard_efd_armed {
                let e = opcode::Read::new(
                    types::Fd(self.shard_efd.as_raw_fd()),
                    &mut *self.shard_efd_buf as *mut u64 as *mut u8,
                    8,
                )
                .build()
                .user_data(ud(K_SHARDS, 0, 0));
                self.push(0, e);
                self.shard_efd_armed = true;
            }
            if !self.eventfd_armed {
                let e = opcode::Read::new(
                    types::Fd(self.shared.eventfd.as_raw_fd()),
                    &mut *self.eventfd_buf as *mut u64 as *mut u8,
                    8,
                )
                .build()
                .user_data(ud(K_EVENTFD, 0, 0));
                self.push(0, e);
                self.eventfd_armed = true;
            }
            if !self.stopping && !self.listeners.is_empty() {
                self.arm_accepts();
            }
            // Re-arm receives that ran out of provided buffers, but only while their ring holds
            // buffers again, and no more per pass than the buffers can serve (re-arming on an
            // empty ring just spins on ENOBUFS); the others wait their turn.
            let mut n = self.enobufs.len();
            for sh in &mut self.shards {
                sh.rearm_budget =
                    sh.bufs
                        .available
                        .saturating_mul(if sh.bufs.inc { 16 } else { 1 });
            }
            while n > 0 {
                n -= 1;
                let Some((slot, gen)) = self.enobufs.pop_front() else {
                    break;
                };
                let Some(c) = self.conns.get_mut(slot as usize) else {
                    continue;
                };
                if c.gen != gen || c.flags & F_ENOBUF_WAIT == 0 {
                    continue;
                }
                let sh = &mut self.shards[c.shard as usize];
                if sh.rearm_budget == 0 {
                    self.enobufs.push_back((slot, gen));
                    continue;
                }
                sh.rearm_budget -= 1;
                c.flags &= !F_ENOBUF_WAIT;
                // A paused connection is armed again by `resume_recv`.
                if c.flags & F_OPEN != 0 && c.flags & (F_RECV | F_PAUSED) == 0 {
                    self.stats.recv_rearms += 1;
                    self.arm_recv(slot as usize);
                }
            }
            self.flush_dirty();
            if self.shards.len() > 1 {
                self.secondary_work = self.enter_secondaries();
            }
        }

        /// Arms each listener's accepts on the intake shard: multishot while its table has
        /// more room than a listen backlog holds, else single-shot ones, no more than free
        /// entries; accepts armed on another shard, or a multishot near the end of a table,
        /// are cancelled first. Past `max_conns` one single-shot accept at a time goes on (into
        /// the table's headroom) so that new connections are refused at once, not left waiting.
        fn arm_accepts(&mut self) {
            let target = self.intake_shard().unwrap_or(self.intake);
            let peer_addrs = self.cfg.peer_addrs;
            let full = self.live >= self.max_conns;
            let sh = &self.shards[target];
            let room = sh.cap.saturating_sub(sh.used);
            let multi_ok = !peer_addrs && !full && room > self.multi_margin;
            let single_want = if peer_addrs || full {
                1
            } else {
                room.clamp(1, SINGLE_ACCEPTS)
            };
            for i in 0..self.listeners.len() {
                let l = &mut self.listeners[i];
                let armed = l.multi || l.singles > 0;
                if armed && (l.shard != target || (l.multi && !multi_ok)) {
                    if !l.cancelling {
                        l.cancelling = true;
                        let (k, multi, singles) = (l.shard, l.multi, l.singles > 0);
                        if multi {
                            self.cancel(k, ud(K_ACCEPT, i as u32, ACCEPT_MULTI));
                        }
                        if singles {
                            self.cancel_all(k, ud(K_ACCEPT, i as u32, ACCEPT_SINGLE));
                        }
                    }
                    continue;
                }
                if l.backoff || l.multi {
                    continue;
                }
                if !armed && multi_ok {
                    let e = opcode::AcceptMulti::new(types::Fd(l.sock.as_raw_fd()))
                        .allocate_file_index(true)
                        .build()
                        .user_data(ud(K_ACCEPT, i as u32, ACCEPT_MULTI));
                    l.multi = true;
                    l.shard = target;
                    l.cancelling = false;
                    self.push(target, e);
                    continue;
                }
                while self.listeners[i].singles < single_want {
                    let l = &mut self.listeners[i];
                    let e = if peer_addrs {
                        let p = &mut *l.peer;
                        p.1 = p.0.len() as libc::socklen_t;
                        opcode::Accept::new(
                            types::Fd(l.sock.as_raw_fd()),
                            p.0.as_mut_ptr().cast::<libc::sockaddr>(),
                            &mut p.1,
                        )
                    } else {
                        opcode::Accept::new(
                            types::Fd(l.sock.as_raw_fd()),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        )
                    }
                    .file_index(Some(types::DestinationSlot::auto_target()))
                    .build()
                    .user_data(ud(K_ACCEPT, i as u32, ACCEPT_SINGLE));
                    l.singles += 1;
                    l.shard = target;
                    l.cancelling = false;
                    self.push(target, e);
                }
            }
        }

        fn flush_dirty(&mut self) {
            let dirty = std::mem::take(&mut self.dirty);
            for &slot in &dirty {
                let s = slot as usize;
                let Some(c) = self.conns.get_mut(s) else {
                    continue;
                };
                if c.flags & F_DIRTY == 0 {
                    continue;
                }
                c.flags &= !F_DIRTY;
                if c.flags & (F_SEND | F_NO_FLUSH) == 0
                    && c.send.as_ref().is_some_and(|st| st.queued() > 0)
                {
                    self.submit_send(s);
                }
            }
            let mut dirty = dirty;
            dirty.clear();
            if self.dirty.is_empty() {
                self.dirty = dirty;
            }
        }

        fn arm_recv(&mut self, s: usize) {
            let c = &mut self.conns[s];
            c.flags |= F_RECV;
            let e = opcode::RecvMulti::new(types::Fixed(c.fixed), BGID)
                .build()
                .user_data(ud(K_RECV, s as u32, c.gen));
            self.push_conn(s, e);
        }

        fn submit_send(&mut self, s: usize) {
            let c = &mut self.conns[s];
            let Some(st) = c.send.as_mut() else {
                return;
            };
            if st.pos >= st.inflight.len() {
                st.inflight.clear();
                st.pos = 0;
                std::mem::swap(&mut st.inflight, &mut st.pending);
            }
            let len = (st.inflight.len() - st.pos).min(1 << 30);
            if len == 0 {
                return;
            }
            // `inflight` is not touched until the send completes, so the pointer stays valid.
            let ptr = st.inflight[st.pos..].as_ptr();
            c.flags |= F_SEND;
            c.flags &= !F_DIRTY;
            self.sends += 1;
            let e = opcode::Send::new(types::Fixed(c.fixed), ptr, len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(ud(K_SEND, s as u32, c.gen));
            self.push_conn(s, e);
        }

        /// Cancels the request with user data `target` on ring `shard` (a cancel only finds
        /// requests of its own ring).
        fn cancel(&mut self, shard: usize, target: u64) {
            let e = opcode::AsyncCancel::new(target)
                .build()
                .user_data(ud(K_IGNORE, 0, 0));
            self.push(shard, e);
        }

        /// Cancels every request with user data `target` on ring `shard`.
        fn cancel_all(&mut self, shard: usize, target: u64) {
            let e = opcode::AsyncCancel2::new(types::CancelBuilder::user_data(target).all())
                .build()
                .user_data(ud(K_IGNORE, 0, 0));
            self.push(shard, e);
        }

        /// Cancels a request of connection slot `s`.
        fn cancel_conn(&mut self, s: usize, target: u64) {
            let k = self.conns[s].shard as usize;
            self.cancel(k, target);
        }

        /// Starts closing a connection. `flush`: keep sending queued bytes first (bounded by
        /// CLOSE_LINGER). `errno` (0 = none) is reported to `on_close`.
        fn begin_close(&mut self, s: usize, errno: i32, flush: bool) {
            let now = self.now;
            let c = &mut self.conns[s];
            if c.flags & F_USED == 0 {
                return;
            }
            if c.err == 0 {
                c.err = errno16(errno);
            }
            if c.flags & F_CLOSING != 0 {
                if !flush {
                    c.flags |= F_NO_FLUSH;
                }
                self.maybe_finalize(s);
                return;
            }
            c.flags &= !(F_OPEN | F_ENOBUF_WAIT);
            c.flags |= F_CLOSING;
            if !flush {
                c.flags |= F_NO_FLUSH;
            }
            let gen = c.gen;
            let flags = c.flags;
            let fixed = c.fixed;
            if flags & F_RECV != 0 {
                self.cancel_conn(s, ud(K_RECV, s as u32, gen));
            }
            if flags & F_CONNECTING != 0 && fixed != NO_FIXED {
                self.cancel_conn(s, ud(K_CONNECT, s as u32, gen));
            }
            let queued_connect = flags & F_CONNECTING != 0
                && fixed == NO_FIXED
                && self
                    .connects
                    .get(&(s as u32))
                    .is_some_and(|st| st.fd.is_none());
            if queued_connect {
                // Still waiting in `connect_queue` (no request in flight): nothing to wait for.
                self.connects.remove(&(s as u32));
                self.conns[s].flags &= !F_CONNECTING;
            }
            let c = &mut self.conns[s];
            match c.send.as_mut() {
                Some(st) if flush && st.queued() > 0 => {
                    st.deadline = Some(now + self.linger);
                    if c.flags & (F_SEND | F_DIRTY) == 0 {
                        c.flags |= F_DIRTY;
                        self.dirty.push(s as u32);
                    }
                    self.closing.push((s as u32, gen));
                }
                Some(_) if flags & F_SEND != 0 => {
                    // Not flushing: abort the in-flight send (its buffer stays alive until the
                    // completion arrives).
                    c.flags |= F_SEND_CANCELLED;
                    self.cancel_conn(s, ud(K_SEND, s as u32, gen));
                }
                Some(_) if !flush => {
                    // Not flushing and nothing in flight: drop the queue now.
                    c.send = None;
                    c.flags &= !F_DIRTY;
                }
                _ => {}
            }
            self.maybe_finalize(s);
        }

        /// Once nothing is in flight for a closing connection, closes its fixed slot; the
        /// completion of that close calls `on_close` and frees the slot.
        fn maybe_finalize(&mut self, s: usize) {
            let c = &mut self.conns[s];
            if c.flags & F_CLOSING == 0
                || c.flags & (F_RECV | F_SEND | F_CONNECTING | F_CLOSE_INFLIGHT) != 0
            {
                return;
            }
            let still_flushing = c.flags & F_NO_FLUSH == 0
                && c.send
                    .as_ref()
                    .is_some_and(|st| st.queued() > 0 && st.deadline.is_some_and(|d| self.now < d));
            if still_flushing {
                if c.flags & F_DIRTY == 0 {
                    c.flags |= F_DIRTY;
                    self.dirty.push(s as u32);
                }
                return;
            }
            if c.err == 0 && c.send.as_ref().is_some_and(|st| st.queued() > 0) {
                // Queued bytes are lost: the flush ran out of time.
                c.err = libc::ETIMEDOUT as u16;
            }
            c.send = None;
            c.flags &= !F_DIRTY;
            c.flags |= F_CLOSE_INFLIGHT;
            let u = ud(K_CLOSE, s as u32, c.gen);
            let e = if c.fixed != NO_FIXED {
                opcode::Close::new(types::Fixed(c.fixed)).build()
            } else {
                opcode::Nop::new().build()
            };
            self.push_conn(s, e.user_data(u));
        }

        fn drain_cq<H: Handler>(&mut self, h: &mut H) {
            // Every ring's completion queue is looked at: a secondary ring's completions were
            // run when `prepare` entered it (its eventfd read only ends the primary's wait).
            for k in 0..self.shards.len() {
                let mut cqes = std::mem::take(&mut self.cqes);
                cqes.clear();
                for e in self.shards[k].ring.completion() {
                    cqes.push((e.user_data(), e.result(), e.flags()));
                }
                for &(u, res, flags) in &cqes {
                    self.handle(h, k, u, res, flags);
                }
                self.cqes = cqes;
            }
        }

        fn handle<H: Handler>(&mut self, h: &mut H, k: usize, u: u64, res: i32, flags: u32) {
            let more = cqueue::more(flags);
            let kind = ud_kind(u);
            if kind != K_SEND && kind != K_IGNORE {
                self.work += 1;
            }
            match kind {
                K_RECV => self.on_recv(h, k, u, res, flags),
                K_SEND => self.on_send(h, u, res),
                K_ACCEPT => {
                    let li = ud_slot(u) as usize;
                    if res >= 0 {
                        let peer = if self.cfg.peer_addrs {
                            self.listeners
                                .get(li)
                                .and_then(|l| parse_sockaddr(&l.peer.0, l.peer.1))
                        } else {
                            None
                        };
                        self.on_accepted(h, k, res as u32, li, peer);
                    } else if res != -libc::ECANCELED {
                        self.stats.accept_errors += 1;
                    }
                    if !more {
                        if let Some(l) = self.listeners.get_mut(li) {
                            if ud_gen(u) == ACCEPT_MULTI {
                                l.multi = false;
                            } else {
                                l.singles = l.singles.saturating_sub(1);
                            }
                            if !l.multi && l.singles == 0 {
                                l.cancelling = false;
                            }
                            // Persistent errors (table full, no memory...) wait for the next
                            // tick instead of spinning.
                            if res < 0 && res != -libc::ECANCELED {
                                l.backoff = true;
                            }
                        }
                        if res >= 0 || res == -libc::ECANCELED {
                            self.stats.accept_rearms += 1;
                        }
                    }
                }
                K_CLOSE => self.on_closed(h, u),
                K_FUPD => self.on_files_update(u, res),
                K_CONNECT => self.on_connected(h, u, res),
                K_EVENTFD => {
                    self.eventfd_armed = false;
                    self.wake_pending = true;
                }
                K_SHARDS => self.shard_efd_armed = false,
                K_WAKE => self.wake_pending = true,
                K_MSG_SENT => {
                    let i = ud_slot(u) as usize;
                    if let Some(r) = self.msg_pending.try_remove(i) {
                        if res < 0 {
                            self.stats.wake_fallbacks += 1;
                            // Target ring not running yet (or gone): fall back to its eventfd.
                            r.write_eventfd();
                        }
                    }
                }
                _ => {}
            }
        }

        fn on_accepted<H: Handler>(
            &mut self,
            h: &mut H,
            k: usize,
            fixed: u32,
            listener: usize,
            peer: Option<SocketAddr>,
        ) {
            if self.stopping || self.live >= self.max_conns {
                self.stats.refused_max_conns += 1;
                let e = opcode::Close::new(types::Fixed(fixed))
                    .build()
                    .user_data(ud(K_IGNORE, 0, 0));
                self.push(k, e);
                return;
            }
            let s = self.alloc() as usize;
            self.shards[k].used += 1;
            self.conns[s].shard = k as u16;
            self.conns[s].fixed = fixed;
            self.conns[s].flags |= F_OPEN;
            self.conns[s].listener = u16::try_from(listener).unwrap_or(NO_LISTENER);
            self.stats.accepted += 1;
            self.arm_recv(s);
            let id = self.id(s as u32);
            h.on_open(&mut Io { inner: self }, id, peer);
        }

        fn on_recv<H: Handler>(&mut self, h: &mut H, k: usize, u: u64, res: i32, flags: u32) {
            let bid = cqueue::buffer_select(flags);
            // Where this completion's bytes start in the buffer, and whether the buffer came
            // back to us (to recycle after use).
            let (off, done) = match bid {
                Some(b) => {
                    let len = usize::try_from(res).unwrap_or(0);
                    self.shards[k].bufs.take(b, len, cqueue::buffer_more(flags))
                }
                None => (0, false),
            };
            let Some(s) = self.ud_slot_checked(u) else {
                if let (Some(b), true) = (bid, done) {
                    self.shards[k].bufs.recycle(b);
                }
                return;
            };
            let more = cqueue::more(flags);
            if !more {
                self.conns[s].flags &= !F_RECV;
            }
            if let Some(b) = bid {
                if res > 0 && self.conns[s].flags & F_OPEN != 0 {
                    self.stats.bytes_in += res as u64;
                    let id = self.id(s as u32);
                    // SAFETY: the kernel handed these bytes of buffer `b` of ring `k` to us with
                    // this completion (with incremental buffers it writes only past them); the
                    // buffer goes back to that ring only after `on_data` returns, `Io` never
                    // touches an existing buffer ring, and the buffer memory is a mapping that
                    // stays put when `shards` grows.
                    let data = unsafe { self.shards[k].bufs.slice_at(b, off, res as usize) };
                    h.on_data(&mut Io { inner: self }, id, data);
                }
                if done {
                    self.shards[k].bufs.recycle(b);
                }
            }
            let open = self.conns[s].flags & F_OPEN != 0;
            let paused = self.conns[s].flags & F_PAUSED != 0;
            if res > 0 || res == -libc::ECANCELED {
                // ECANCELED on an open connection: `pause_recv` cancelled it, and it may have
                // been resumed since.
                if !more && open && !paused {
                    self.stats.recv_rearms += 1;
                    self.arm_recv(s);
                }
            } else if res == 0 {
                // Peer closed (possibly only its write side): flush what we owe it, then close.
                self.begin_close(s, 0, true);
            } else if res == -libc::ENOBUFS {
                self.stats.recv_enobufs += 1;
                if open {
                    let c = &mut self.conns[s];
                    c.flags |= F_ENOBUF_WAIT;
                    self.enobufs.push_back((s as u32, c.gen));
                }
            } else {
                self.begin_close(s, -res, false);
            }
            self.maybe_finalize(s);
        }

        fn on_send<H: Handler>(&mut self, h: &mut H, u: u64, res: i32) {
            let Some(s) = self.ud_slot_checked(u) else {
                return;
            };
            let now = self.now;
            let c = &mut self.conns[s];
            c.flags &= !(F_SEND | F_SEND_CANCELLED);
            if res <= 0 {
                if c.err == 0 && c.flags & F_CLOSING != 0 && res != -libc::ECANCELED {
                    c.err = errno16(if res == 0 { libc::EPIPE } else { -res });
                }
                if c.flags & F_CLOSING == 0 {
                    self.stats.send_errors += 1;
                    self.begin_close(s, if res == 0 { libc::EPIPE } else { -res }, false);
                }
                self.conns[s].flags |= F_NO_FLUSH;
                self.maybe_finalize(s);
                return;
            }
            self.stats.bytes_out += res as u64;
            let Some(st) = c.send.as_mut() else {
                return;
            };
            st.pos = (st.pos + res as usize).min(st.inflight.len());
            let queued = st.queued();
            if queued > 0 {
                if c.flags & F_CLOSING != 0
                    && (c.flags & F_NO_FLUSH != 0 || st.deadline.is_some_and(|d| now >= d))
                {
                    c.flags |= F_NO_FLUSH;
                    self.maybe_finalize(s);
                    return;
                }
                self.submit_send(s);
                if self.conns[s].flags & F_CLOSING == 0 {
                    let id = self.id(s as u32);
                    h.on_sent(&mut Io { inner: self }, id, queued);
                }
                return;
            }
            // Fully drained: an idle connection keeps no buffer (it goes back to the pool).
            if let Some(st) = c.send.take() {
                if self.send_pool.len() < SEND_POOL
                    && st.inflight.capacity() <= SEND_POOL_CAP
                    && st.pending.capacity() <= SEND_POOL_CAP
                {
                    let mut st = st;
                    st.inflight.clear();
                    st.pending.clear();
                    st.pos = 0;
                    st.deadline = None;
                    self.send_pool.push(st);
                }
            }
            let c = &mut self.conns[s];
            if c.flags & F_CLOSING != 0 {
                self.maybe_finalize(s);
                return;
            }
            let refused = c.flags & F_REFUSED != 0;
            c.flags &= !F_REFUSED;
            let id = self.id(s as u32);
            if refused {
                h.on_writable(&mut Io { inner: self }, id);
            }
            h.on_sent(&mut Io { inner: self }, id, 0);
        }

        fn on_closed<H: Handler>(&mut self, h: &mut H, u: u64) {
            let Some(s) = self.ud_slot_checked(u) else {
                return;
            };
            let c = &mut self.conns[s];
            let notified = c.flags & F_NOTIFIED != 0;
            let err = c.err;
            c.flags = 0;
            c.fixed = NO_FIXED;
            c.send = None;
            let shard = &mut self.shards[c.shard as usize];
            shard.used = shard.used.saturating_sub(1);
            let id = ConnId {
                slot: s as u32,
                generation: c.gen,
            };
            self.connects.remove(&(s as u32));
            self.free.push(s as u32);
            self.live -= 1;
            self.stats.closed += 1;
            if !notified {
                let e = (err != 0).then(|| io::Error::from_raw_os_error(i32::from(err)));
                h.on_close(&mut Io { inner: self }, id, e);
            }
        }

        fn on_files_update(&mut self, u: u64, res: i32) {
            let Some(s) = self.ud_slot_checked(u) else {
                return;
            };
            let slot = s as u32;
            let Some(st) = self.connects.get_mut(&slot) else {
                return;
            };
            // The fixed table now holds its own reference: close the normal descriptor.
            if st.fd.take().is_some() {
                self.fds_held -= 1;
            }
            let st = &self.connects[&slot];
            if res == 1 && st.fds[0] >= 0 {
                let fixed = st.fds[0] as u32;
                let (addr, len) = (st.addr.as_ptr(), st.addr.len());
                let c = &mut self.conns[s];
                c.fixed = fixed;
                if c.flags & F_CLOSING != 0 {
                    c.flags &= !F_CONNECTING;
                    self.connects.remove(&slot);
                    self.maybe_finalize(s);
                    return;
                }
                let e = opcode::Connect::new(types::Fixed(fixed), addr, len)
                    .build()
                    .user_data(ud(K_CONNECT, slot, c.gen));
                self.push_conn(s, e);
            } else {
                self.connects.remove(&slot);
                self.conns[s].flags &= !F_CONNECTING;
                self.stats.connect_failed += 1;
                self.begin_close(s, errno_of(res), false);
            }
            self.start_queued_connects();
        }

        /// How many normal descriptors connects may hold at once (half of RLIMIT_NOFILE).
        fn fd_budget(&self) -> u32 {
            (self.nofile / 2).max(8)
        }

        /// Creates the socket of a connect (TCP_NODELAY, bound to its source address with
        /// IP_BIND_ADDRESS_NO_PORT) and submits its registration into the fixed table.
        fn start_connect(&mut self, s: usize) -> io::Result<()> {
            use socket2::{Domain, Protocol, Socket, Type};
            let slot = s as u32;
            let st = self
                .connects
                .get_mut(&slot)
                .ok_or_else(|| io::Error::other("no connect state"))?;
            let a = st.peer;
            let sock = Socket::new(Domain::for_address(a), Type::STREAM, Some(Protocol::TCP))?;
            if self.connect_nodelay {
                sock.set_nodelay(true)?;
            }
            if let Some(b) = st.bind {
                let one: libc::c_int = 1;
                // IP_BIND_ADDRESS_NO_PORT lives at SOL_IP; Linux accepts it there on IPv6 TCP
                // sockets too. The port is then picked at connect time, so many outbound
                // sockets can share one source address.
                let (level, opt) = (libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
                // SAFETY: setsockopt reads sizeof(int) bytes from a live c_int.
                let r = unsafe {
                    libc::setsockopt(
                        sock.as_raw_fd(),
                        level,
                        opt,
                        &one as *const libc::c_int as *const libc::c_void,
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
                sock.bind(&b.into())?;
            }
            let fd: OwnedFd = sock.into();
            st.fds = [fd.as_raw_fd()];
            st.fd = Some(fd);
            let fds_ptr = st.fds.as_ptr();
            self.fds_held += 1;
            let e = opcode::FilesUpdate::new(fds_ptr, 1)
                .offset(FILE_INDEX_ALLOC)
                .build()
                .user_data(ud(K_FUPD, slot, self.conns[s].gen));
            self.push_conn(s, e);
            Ok(())
        }

        /// Starts queued connects while the descriptor budget allows.
        fn start_queued_connects(&mut self) {
            while self.fds_held < self.fd_budget() {
                let Some((slot, gen)) = self.connect_queue.pop_front() else {
                    return;
                };
                let s = slot as usize;
                let c = &self.conns[s];
                if c.gen != gen || c.flags & F_CONNECTING == 0 || c.flags & F_CLOSING != 0 {
                    continue;
                }
                if let Err(e) = self.start_connect(s) {
                    self.connects.remove(&slot);
                    self.conns[s].flags &= !F_CONNECTING;
                    self.stats.connect_failed += 1;
                    self.begin_close(s, e.raw_os_error().unwrap_or(libc::EIO), false);
                }
            }
        }

        fn on_connected<H: Handler>(&mut self, h: &mut H, u: u64, res: i32) {
            let Some(s) = self.ud_slot_checked(u) else {
                return;
            };
            let st = self.connects.remove(&(s as u32));
            let c = &mut self.conns[s];
            c.flags &= !F_CONNECTING;
            if c.flags & F_CLOSING != 0 {
                self.maybe_finalize(s);
                return;
            }
            if res == 0 {
                c.flags |= F_OPEN;
                self.stats.connected += 1;
                self.arm_recv(s);
                let id = self.id(s as u32);
                h.on_open(&mut Io { inner: self }, id, st.map(|st| st.peer));
            } else {
                self.stats.connect_failed += 1;
                self.begin_close(s, errno_of(res), false);
            }
        }

        /// Closing connections whose flush outlived CLOSE_LINGER: abort the stuck send.
        fn check_linger(&mut self) {
            let now = self.now;
            let mut i = 0;
            while i < self.closing.len() {
                let (slot, gen) = self.closing[i];
                let s = slot as usize;
                let c = &mut self.conns[s];
                let alive = c.gen == gen && c.flags & F_CLOSING != 0 && c.send.is_some();
                if !alive {
                    self.closing.swap_remove(i);
                    continue;
                }
                let expired = c
                    .send
                    .as_ref()
                    .and_then(|st| st.deadline)
                    .is_some_and(|d| now >= d);
                if expired {
                    c.flags |= F_NO_FLUSH;
                    if c.err == 0 {
                        c.err = libc::ETIMEDOUT as u16;
                    }
                    if c.flags & F_SEND != 0 && c.flags & F_SEND_CANCELLED == 0 {
                        c.flags |= F_SEND_CANCELLED;
                        self.cancel_conn(s, ud(K_SEND, slot, gen));
                    }
                    self.closing.swap_remove(i);
                    self.maybe_finalize(s);
                    continue;
                }
                i += 1;
            }
        }

        fn shutdown<H: Handler>(&mut self, h: &mut H) -> io::Result<()> {
            self.stopping = true;
            for i in 0..self.listeners.len() {
                let l = &self.listeners[i];
                let (k, multi, singles) = (l.shard, l.multi, l.singles > 0);
                if multi {
                    self.cancel(k, ud(K_ACCEPT, i as u32, ACCEPT_MULTI));
                }
                if singles {
                    self.cancel_all(k, ud(K_ACCEPT, i as u32, ACCEPT_SINGLE));
                }
            }
            for s in 0..self.conns.len() {
                if self.conns[s].flags & F_USED != 0 {
                    self.begin_close(s, 0, true);
                }
            }
            let deadline = self.now + self.linger + Duration::from_secs(1);
            while self.live > 0 && self.now < deadline {
                self.prepare();
                self.submit_wait()?;
                self.end_pass();
                self.now = Instant::now();
                self.drain_cq(h);
                self.housekeeping();
            }
            // Whatever is still stuck gets its on_close now (its kernel requests were cancelled
            // or will be at drop).
            for s in 0..self.conns.len() {
                let c = &mut self.conns[s];
                if c.flags & F_USED != 0 && c.flags & F_NOTIFIED == 0 {
                    c.flags |= F_NOTIFIED;
                    let id = self.id(s as u32);
                    let e = io::Error::from(io::ErrorKind::TimedOut);
                    h.on_close(&mut Io { inner: self }, id, Some(e));
                }
            }
            // Take the in-flight accept cancellations etc. so a later `run` starts clean.
            self.enter_secondaries();
            let _ = self.shards[0].ring.submit();
            self.drain_cq(h);
            Ok(())
        }
    }

    impl<'a> Io<'a> {
        /// Queues `data` for sending. False (nothing queued) if the connection is not open
        /// (closed, closing, stale id) or the queue would exceed `send_queue_limit`; in the
        /// latter case `on_writable` follows once the queue has drained.
        pub fn send(&mut self, c: ConnId, d: &[u8]) -> bool {
            self.send_inner(c, d, true)
        }

        /// Like [`Io::send`] but queues past `send_queue_limit` too: for bytes whose amount is
        /// bounded elsewhere and that must not be refused (a PUBLISH the broker admitted, or an
        /// ack within the worker's headroom: see `Worker::send_packet`). False only if not open.
        pub fn send_past_limit(&mut self, c: ConnId, d: &[u8]) -> bool {
            self.send_inner(c, d, false)
        }

        fn send_inner(&mut self, c: ConnId, d: &[u8], enforce_limit: bool) -> bool {
            let inner = &mut *self.inner;
            let Some(s) = inner.open_slot(c) else {
                return false;
            };
            let limit = inner.cfg.send_queue_limit;
            let conn = &mut inner.conns[s];
            let queued = conn.send.as_ref().map_or(0, |st| st.queued());
            if enforce_limit && queued + d.len() > limit {
                conn.flags |= F_REFUSED;
                inner.stats.send_queue_full += 1;
                return false;
            }
            if d.is_empty() {
                return true;
            }
            let pool = &mut inner.send_pool;
            let st = conn
                .send
                .get_or_insert_with(|| pool.pop().unwrap_or_default());
            st.pending.extend_from_slice(d);
            if conn.flags & (F_DIRTY | F_SEND) == 0 {
                conn.flags |= F_DIRTY;
                inner.dirty.push(s as u32);
            }
            true
        }

        /// Bytes queued (including the part of an in-flight send not yet confirmed).
        pub fn queued(&self, c: ConnId) -> usize {
            let s = c.slot as usize;
            match self.inner.conns.get(s) {
                Some(conn) if conn.gen == c.generation && conn.flags & F_USED != 0 => {
                    conn.send.as_ref().map_or(0, |st| st.queued())
                }
                _ => 0,
            }
        }

        /// Closes the connection after flushing queued bytes (for at most a few seconds);
        /// `on_close` follows. Ignored for stale or already closing ids.
        pub fn close(&mut self, c: ConnId) {
            let s = c.slot as usize;
            let ok = self
                .inner
                .conns
                .get(s)
                .is_some_and(|conn| conn.gen == c.generation && conn.flags & F_USED != 0);
            if ok {
                self.inner.begin_close(s, 0, true);
            }
        }

        /// Stops reading from `c` until [`Io::resume_recv`]: its multishot receive is
        /// cancelled and not re-armed, so the kernel's socket buffer fills and TCP flow control
        /// holds the peer back. Bytes already received may still reach `on_data`. Ignored
        /// for stale or closing ids.
        pub fn pause_recv(&mut self, c: ConnId) {
            let inner = &mut *self.inner;
            let Some(s) = inner.open_slot(c) else {
                return;
            };
            let conn = &mut inner.conns[s];
            if conn.flags & F_PAUSED != 0 {
                return;
            }
            conn.flags |= F_PAUSED;
            if conn.flags & F_RECV != 0 {
                let gen = conn.gen;
                inner.cancel_conn(s, ud(K_RECV, s as u32, gen));
            }
        }

        /// Reads from `c` again after [`Io::pause_recv`]. Ignored for stale or closing ids.
        pub fn resume_recv(&mut self, c: ConnId) {
            let inner = &mut *self.inner;
            let Some(s) = inner.open_slot(c) else {
                return;
            };
            let conn = &mut inner.conns[s];
            if conn.flags & F_PAUSED == 0 {
                return;
            }
            conn.flags &= !F_PAUSED;
            // Still armed (the cancel has not completed: its completion re-arms), or waiting
            // for provided buffers (re-armed when the ring has some): nothing to do.
            if conn.flags & (F_RECV | F_ENOBUF_WAIT) == 0 {
                inner.stats.recv_rearms += 1;
                inner.arm_recv(s);
            }
        }

        /// The index (in `Engine::listen` order) of the listener that accepted `c`; None for
        /// outbound connects and stale ids. Lets one handler serve several kinds of listener
        /// (plain and TLS) on one engine.
        pub fn listener(&self, c: ConnId) -> Option<usize> {
            let conn = self.inner.conns.get(c.slot as usize)?;
            (conn.gen == c.generation && conn.flags & F_USED != 0 && conn.listener != NO_LISTENER)
                .then_some(conn.listener as usize)
        }

        /// True while `c` is open (on_open was called, close not started).
        pub fn is_open(&self, c: ConnId) -> bool {
            self.inner.open_slot(c).is_some()
        }

        /// Wakes the engine behind `r` through IORING_OP_MSG_RING (coalesced).
        pub fn wake(&mut self, r: &Remote) {
            if r.shared.flag.swap(true, Ordering::SeqCst) {
                return;
            }
            let inner = &mut *self.inner;
            inner.stats.wakes_sent += 1;
            let fd = r.shared.ring_fd.as_raw_fd();
            let i = inner.msg_pending.insert(r.clone());
            let e = opcode::MsgRingData::new(types::Fd(fd), 0, ud(K_WAKE, 0, 0), None)
                .build()
                .user_data(ud(K_MSG_SENT, i as u32, 0));
            inner.push(0, e);
        }

        /// Starts an outbound TCP connection (bound to `bind` with IP_BIND_ADDRESS_NO_PORT when
        /// given). `on_open` follows on success, `on_close` with the error otherwise.
        pub fn connect(&mut self, a: SocketAddr, b: Option<SocketAddr>) -> io::Result<ConnId> {
            let inner = &mut *self.inner;
            if inner.stopping {
                return Err(io::Error::other("engine stopping"));
            }
            if inner.live >= inner.max_conns {
                return Err(io::Error::other("engine max_conns reached"));
            }
            let Some(k) = inner.intake_shard() else {
                return Err(io::Error::other("no fixed-file table has room"));
            };
            let slot = inner.alloc();
            inner.shards[k].used += 1;
            let c = &mut inner.conns[slot as usize];
            c.shard = k as u16;
            c.flags |= F_CONNECTING;
            let gen = c.gen;
            let st = Box::new(ConnectState {
                fd: None,
                fds: [-1],
                addr: a.into(),
                peer: a,
                bind: b,
            });
            inner.connects.insert(slot, st);
            if inner.connect_queue.is_empty() && inner.fds_held < inner.fd_budget() {
                if let Err(e) = inner.start_connect(slot as usize) {
                    // Nothing was submitted: give the slot back as if it never was.
                    inner.connects.remove(&slot);
                    let c = &mut inner.conns[slot as usize];
                    c.flags = 0;
                    inner.free.push(slot);
                    inner.live -= 1;
                    inner.shards[k].used -= 1;
                    return Err(e);
                }
            } else {
                // Each socket holds a normal descriptor until the fixed table has taken it:
                // past the budget, connects wait their turn (errors then reach `on_close`).
                inner.connect_queue.push_back((slot, gen));
            }
            Ok(ConnId {
                slot,
                generation: gen,
            })
        }

        /// TCP_NODELAY for sockets created by later `connect` calls (default: on). Accepted
        /// sockets inherit the listener's options.
        pub fn set_connect_nodelay(&mut self, on: bool) {
            self.inner.connect_nodelay = on;
        }

        /// A `Remote` for this engine itself.
        pub fn remote(&self) -> Remote {
            Remote {
                shared: self.inner.shared.clone(),
            }
        }

        /// Connections holding a slot (open, connecting or closing).
        pub fn live(&self) -> usize {
            self.inner.live as usize
        }

        /// Effective connection limit.
        pub fn max_conns(&self) -> u32 {
            self.inner.max_conns
        }

        pub fn stats(&self) -> &EngineStats {
            &self.inner.stats
        }

        /// One line per ring: connections in its table / capacity, buffers in its buffer
        /// ring, submission and completion queue lengths and whether its completion queue
        /// overflowed; then the listeners' accept state. For debugging.
        pub fn describe(&mut self) -> String {
            use std::fmt::Write;
            let inner = &mut *self.inner;
            let mut out = String::new();
            for (k, sh) in inner.shards.iter_mut().enumerate() {
                let sq = sh.ring.submission();
                let (sql, ovf) = (sq.len(), sq.cq_overflow());
                drop(sq);
                let cql = sh.ring.completion().len();
                let _ = write!(
                    out,
                    "ring {k}: {}/{} conns, {} bufs, sq {sql} backlog {} cq {cql} overflow {ovf}; ",
                    sh.used,
                    sh.cap,
                    sh.bufs.available,
                    sh.backlog.len()
                );
            }
            for (i, l) in inner.listeners.iter().enumerate() {
                let _ = write!(
                    out,
                    "listener {i}: multi {} singles {} ring {} cancelling {} backoff {}; ",
                    l.multi, l.singles, l.shard, l.cancelling, l.backoff
                );
            }
            let _ = write!(
                out,
                "intake {} enobufs-waiting {} live {}",
                inner.intake,
                inner.enobufs.len(),
                inner.live
            );
            out
        }

        /// Asks for `on_tick` no later than `at` (the earliest of all such requests wins;
        /// `EngineConfig::tick` still bounds the wait). For timers finer than the tick.
        pub fn wake_at(&mut self, at: Instant) {
            let inner = &mut *self.inner;
            inner.wake_at = Some(inner.wake_at.map_or(at, |w| w.min(at)));
        }

        /// Time taken after the last completion batch.
        pub fn now(&self) -> Instant {
            self.inner.now
        }
    }
}
