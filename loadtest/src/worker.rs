//! One generator thread: a [`Worker`] drives that thread's MQTT clients as the
//! [`Handler`] of its own io_uring engine (crate `ringmq-uring`, the broker's engine).
//!
//! The engine does the I/O: `Io::connect` creates each socket (TCP_NODELAY; with `--source`,
//! IP_BIND_ADDRESS_NO_PORT and a bind to the source address, so the port is picked at connect
//! time), registers it as a direct descriptor and connects through the ring; receives are
//! multishot into provided buffers; sends go through the engine's per-connection queue. The
//! worker does MQTT with its own codec (`wire.rs`), independent of the broker's on purpose.
//!
//! - Clients live in `clients` in plan order. A connection's `ConnId` leads to its client
//!   through `by_slot[slot]`; the client's state holds the `ConnId` it is on, so an event for
//!   an older connection of the same client (a closed one, before a reconnect) is ignored.
//! - Receive: `on_data` gets a slice valid only during the call. Whole packets are decoded
//!   in place; only an incomplete tail is copied into the client's `rbuf` (empty, and without
//!   an allocation, for an idle client) and completed by the next slices.
//! - Timers: `on_tick` (after every completion batch, and at the latest at the `Io::wake_at`
//!   deadline it asks for or the 50 ms tick) runs the connection ramp, reconnects, the
//!   open-loop publish schedule and the keep-alive sweep.
//! - Stop: once `Shared::stop` is set, the next `on_tick` sends the thread's result and
//!   `should_stop` ends the loop; the engine then closes every connection. Nothing is counted
//!   after that (the summary is being printed from the shared counters meanwhile).

use crate::stamp::{now_ns, read_payload, write_payload, Stamp};
use crate::stats::{HostResult, Shared, ThreadResult};
use crate::wire::{self, ConnectOpts, Packet, Version, Will};
use ringmq_uring::engine::{ConnId, Engine, EngineConfig, Handler, Io, Remote};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// What one client does.
#[derive(Clone, Debug)]
pub enum Role {
    /// Connect and keep alive.
    Idle,
    /// Publish stamped payloads to `topic`.
    Pub { topic: String },
    /// Subscribe to `filter`; `group` = receive-stream group for loss accounting.
    Sub { filter: String, group: u32 },
    /// takeover: first connection of a client id.
    Old,
    /// takeover: second connection with the same client id.
    New,
    /// keepalive: connect with a will, then never send again.
    Silent { will_topic: String },
    /// keepalive: subscribes to the will topics.
    Watcher { filter: String },
}

#[derive(Clone, Debug)]
pub struct ClientSpec {
    /// Global client index (publisher id for Pub).
    pub idx: u32,
    pub client_id: String,
    pub role: Role,
    pub addr: SocketAddr,
    /// Index of `addr` among the `--host` values (its figures in the per-host summary).
    pub host: usize,
    pub source: Option<IpAddr>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub version: Version,
    pub keepalive: u16,
    pub qos: u8,
    pub size: usize,
    pub clean: bool,
    pub session_expiry: Option<u32>,
    pub retain: bool,
    pub reconnect: bool,
    /// connections per second for this thread (0 = unlimited)
    pub ramp: f64,
    /// messages per second for this thread
    pub rate: f64,
    /// message limit for this thread
    pub count: Option<u64>,
    /// a send later than this after its intended time counts as late
    pub late_ns: u64,
    /// number of `--host` values
    pub hosts: usize,
}

/// Normal descriptors one worker holds at most at once: a burst of new sockets (each open
/// only until the engine has registered it as a direct descriptor) and the engine's own.
pub const FDS_PER_WORKER: usize = CONNECT_BURST + 8;

/// Grows the process's descriptor table to hold `n` more descriptors. Call it while the
/// process has one thread.
///
/// The kernel grows the table by doubling, and in a multi-threaded process every growth waits
/// for an RCU grace period (`expand_fdtable`: synchronize_rcu), tens of ms on a busy host.
/// Grown while the generator runs, that wait lands in the first connect bursts' latency (p99
/// of a 4000-connection burst: 120-150 ms instead of 30 ms); grown up front, before the
/// threads start, it costs about a millisecond. Best effort.
pub fn reserve_fd_table(n: usize) {
    let Ok(f) = std::fs::File::open("/dev/null") else {
        return;
    };
    let mut dups = Vec::with_capacity(n);
    while dups.len() < n {
        match f.try_clone() {
            Ok(d) => dups.push(d),
            Err(_) => break,
        }
    }
}

/// Longest wait of the loop (the engine's tick): bounds how late the stop flag is seen.
const TICK: Duration = Duration::from_millis(50);
/// Connects started per loop iteration at most, and connects in flight at most: without a
/// ramp, new connects start as earlier ones complete, so the first clients' CONNECTs do not
/// queue behind the handshakes of all the others.
const CONNECT_BURST: usize = 512;
/// Publishes sent per loop iteration at most (the rest follow at once, after the flush).
const PUBLISH_BURST: u32 = 8192;
/// Largest packet accepted from the broker.
const MAX_PACKET: usize = 64 << 20;
/// A client's receive or send buffer above this size is freed once it is empty.
const BUF_KEEP: usize = 1 << 16;
const NO_CLIENT: u32 = u32::MAX;

/// Where a client is; the connection states carry the connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    /// Not connected yet (waits for the ramp, or for phase 2).
    Pending,
    Connecting(ConnId),
    WaitConnack(ConnId),
    Up(ConnId),
    /// Gone; reconnects (if asked to) from here.
    Closed,
}

impl St {
    fn conn(self) -> Option<ConnId> {
        match self {
            St::Connecting(c) | St::WaitConnack(c) | St::Up(c) => Some(c),
            St::Pending | St::Closed => None,
        }
    }
}

struct Client {
    spec: ClientSpec,
    st: St,
    /// Connection attempts so far (> 1: a reconnect).
    attempts: u32,
    /// Incomplete packet carried over from the previous `on_data`.
    rbuf: Vec<u8>,
    /// Packets encoded on this loop iteration, handed to the engine in one `Io::send` by
    /// `flush` (one copy per connection and iteration, not per packet).
    out: Vec<u8>,
    dirty: bool,
    t_start: u64,
    last_tx: u64,
    next_pid: u16,
    inflight: u32,
    recv_max: u32,
    backlog: VecDeque<(u64, u64)>,
    seq: u64,
    got_disconnect: bool,
    reconnect_at: u64,
}

/// Per-message counters, added to the shared ones once per loop iteration (an atomic add per
/// message costs as much as encoding it).
#[derive(Default)]
struct Counts {
    sent: u64,
    late: u64,
    skipped: u64,
    recv: u64,
    recv_stamped: u64,
}

impl Counts {
    fn publish(&mut self, sh: &Shared) {
        for (n, to) in [
            (&mut self.sent, &sh.sent),
            (&mut self.late, &sh.late),
            (&mut self.skipped, &sh.skipped),
            (&mut self.recv, &sh.recv),
            (&mut self.recv_stamped, &sh.recv_stamped),
        ] {
            if *n > 0 {
                to.fetch_add(std::mem::take(n), Relaxed);
            }
        }
    }
}

/// The publish / connect schedule of the thread.
struct Schedule {
    t0: u64,
    /// ns between two connects (0 = no ramp limit).
    ramp_ns: u64,
    /// ns between two publishes (0 = not publishing).
    rate_ns: f64,
    next_conn: usize,
    /// Connects started and not yet connected or failed.
    connecting: usize,
    /// Next publish schedule slot: slot k is due at sched0 + k * rate_ns, and goes to
    /// publisher `pubs[k % pubs.len()]`, which is `pubs[next_pub]` (kept without a division).
    k: u64,
    next_pub: usize,
    sched0: u64,
    last_sweep: u64,
    ka_ns: u64,
}

pub struct Worker {
    /// Taken out while it runs (`run` lends the worker to it as the handler).
    engine: Option<Engine>,
    clients: Vec<Client>,
    /// Engine slot -> index in `clients` (NO_CLIENT: none).
    by_slot: Vec<u32>,
    cfg: Config,
    sh: Arc<Shared>,
    res: ThreadResult,
    counts: Counts,
    /// The result was sent (when the stop flag was seen): nothing is counted any more.
    sealed: bool,
    report: Option<mpsc::Sender<ThreadResult>>,
    sched: Schedule,
    pubs: Vec<usize>,
    payload: Vec<u8>,
    /// Clients with bytes in `out`.
    dirty: Vec<usize>,
    last_seen: HashMap<(u32, u32), u64>,
    reconnect_q: Vec<usize>,
    /// CLOCK_MONOTONIC ns at `clock_base` (Instant uses the same clock), for `Io::wake_at`.
    clock_base: (Instant, u64),
}

impl Worker {
    pub fn new(specs: Vec<ClientSpec>, cfg: Config, sh: Arc<Shared>) -> Result<Self, String> {
        let n = specs.len();
        let n_hosts = cfg.hosts.max(1);
        let want = u32::try_from(n.max(1)).map_err(|_| "too many clients per thread")?;
        let mut engine = Engine::new(EngineConfig {
            ring_entries: 4096,
            max_conns: want,
            tick: TICK,
            ..EngineConfig::default()
        })
        .map_err(|e| format!("io_uring setup: {e}"))?;
        if engine.max_conns() < want {
            return Err(format!(
                "{n} clients on one thread exceed its io_uring engine's limit of {} connections \
                 (RLIMIT_NOFILE bounds the fixed-file table); add --threads",
                engine.max_conns()
            ));
        }
        // The generator's own connections: nothing queued is worth waiting for once closed.
        engine.set_close_linger(Duration::ZERO);
        let clients: Vec<Client> = specs
            .into_iter()
            .map(|spec| Client {
                spec,
                st: St::Pending,
                attempts: 0,
                rbuf: Vec::new(),
                out: Vec::new(),
                dirty: false,
                t_start: 0,
                last_tx: 0,
                next_pid: 0,
                inflight: 0,
                recv_max: 65_535,
                backlog: VecDeque::new(),
                seq: 0,
                got_disconnect: false,
                reconnect_at: 0,
            })
            .collect();
        let pubs = clients
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.spec.role, Role::Pub { .. }))
            .map(|(i, _)| i)
            .collect();
        let sched = Schedule {
            t0: 0,
            ramp_ns: if cfg.ramp > 0.0 {
                (1e9 / cfg.ramp) as u64
            } else {
                0
            },
            rate_ns: if cfg.rate > 0.0 { 1e9 / cfg.rate } else { 0.0 },
            next_conn: 0,
            connecting: 0,
            k: 0,
            next_pub: 0,
            sched0: 0,
            last_sweep: 0,
            ka_ns: cfg.keepalive as u64 * 1_000_000_000,
        };
        Ok(Worker {
            engine: Some(engine),
            clients,
            by_slot: Vec::new(),
            cfg,
            sh,
            res: ThreadResult {
                hosts: vec![HostResult::new(); n_hosts],
                ..ThreadResult::new()
            },
            counts: Counts::default(),
            sealed: false,
            report: None,
            sched,
            pubs,
            payload: Vec::new(),
            dirty: Vec::new(),
            last_seen: HashMap::new(),
            reconnect_q: Vec::new(),
            clock_base: (Instant::now(), now_ns()),
        })
    }

    /// Wakes the thread from another one (used to see the stop flag at once).
    pub fn remote(&self) -> Option<Remote> {
        self.engine.as_ref().map(Engine::remote)
    }

    /// Runs until `sh.stop`; sends the thread's measurements to `report` as soon as the stop
    /// flag is seen (the engine's closing of every connection follows, bounded by a second).
    pub fn run(mut self, report: mpsc::Sender<ThreadResult>) {
        self.report = Some(report);
        let Some(mut engine) = self.engine.take() else {
            self.seal();
            return;
        };
        let now = now_ns();
        self.clock_base = (Instant::now(), now);
        self.sched.t0 = now;
        self.sched.last_sweep = now;
        if let Err(e) = engine.run(&mut self) {
            self.note_err(format!("io_uring: {e}"));
        }
        if !self.sealed {
            self.seal();
        }
    }

    fn seal(&mut self) {
        self.counts.publish(&self.sh);
        for c in &self.clients {
            if matches!(c.spec.role, Role::Pub { .. }) {
                self.res.sent_per_pub.push((c.spec.idx, c.seq));
            }
        }
        self.sealed = true;
        if let Some(tx) = self.report.take() {
            let _ = tx.send(std::mem::take(&mut self.res));
        }
    }

    fn instant_of(&self, ns: u64) -> Instant {
        let (i, base) = self.clock_base;
        i + Duration::from_nanos(ns.saturating_sub(base))
    }

    fn note_err(&mut self, msg: String) {
        if self.res.first_error.is_none() {
            self.res.first_error = Some(msg);
        }
    }

    /// The client on connection `conn`, if `conn` is its current connection.
    fn client_of(&self, conn: ConnId) -> Option<usize> {
        let i = *self.by_slot.get(conn.slot as usize)?;
        let c = self.clients.get(i as usize)?;
        (c.st.conn() == Some(conn)).then_some(i as usize)
    }

    /// Client i has new bytes in its `out`.
    fn mark_dirty(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    /// Hands every client's new bytes to the engine (which sends them when this loop
    /// iteration ends).
    fn flush(&mut self, io: &mut Io<'_>, now: u64) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let c = &mut self.clients[i];
            c.dirty = false;
            if let Some(conn) = c.st.conn() {
                // The amount is bounded by the run (rate x duration), as the generator's own
                // queue was before: an open-loop generator does not drop what it counted as
                // sent.
                io.send_past_limit(conn, &c.out);
                c.last_tx = now;
            }
            c.out.clear();
            if c.out.capacity() > BUF_KEEP {
                c.out = Vec::new();
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn start_connect(&mut self, io: &mut Io<'_>, i: usize, now: u64) {
        let c = &mut self.clients[i];
        c.attempts = c.attempts.wrapping_add(1);
        c.t_start = now;
        let _ = self
            .sh
            .first_connect_ns
            .compare_exchange(0, now, Relaxed, Relaxed);
        let h = &mut self.res.hosts[c.spec.host];
        if h.first_connect_ns == 0 {
            h.first_connect_ns = now;
        }
        c.rbuf = Vec::new();
        c.inflight = 0;
        c.backlog.clear();
        c.got_disconnect = false;
        let bind = c.spec.source.map(|ip| SocketAddr::new(ip, 0));
        match io.connect(c.spec.addr, bind) {
            Ok(conn) => {
                c.st = St::Connecting(conn);
                self.sched.connecting += 1;
                let s = conn.slot as usize;
                if self.by_slot.len() <= s {
                    self.by_slot.resize(s + 1, NO_CLIENT);
                }
                self.by_slot[s] = i as u32;
            }
            Err(e) => {
                let msg = match bind {
                    Some(b) => format!("connect {} from {}: {e}", c.spec.addr, b.ip()),
                    None => format!("connect {}: {e}", c.spec.addr),
                };
                self.connect_error(i);
                self.note_err(msg);
                self.closed(i, now);
            }
        }
    }

    /// Client i's connection is gone (EOF, error, refused, or a malformed stream).
    fn closed(&mut self, i: usize, now: u64) {
        let c = &mut self.clients[i];
        let prev = c.st;
        c.st = St::Closed;
        if matches!(prev, St::Up(_)) {
            self.sh.conns.fetch_sub(1, Relaxed);
            self.sh.closed.fetch_add(1, Relaxed);
            self.res.hosts[c.spec.host].closed += 1;
        }
        match c.spec.role {
            Role::Old if matches!(prev, St::Up(_)) && !c.got_disconnect => {
                self.sh.old_eof.fetch_add(1, Relaxed);
            }
            Role::Silent { .. } if matches!(prev, St::Up(_)) => {
                self.sh.ka_closed.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        if c.rbuf.capacity() > 0 {
            c.rbuf = Vec::new();
        }
        let reconnectable = matches!(
            c.spec.role,
            Role::Idle | Role::Pub { .. } | Role::Sub { .. }
        );
        if self.cfg.reconnect && reconnectable && !self.sh.stop.load(Relaxed) {
            c.reconnect_at = now + 100_000_000;
            self.reconnect_q.push(i);
        }
    }

    fn next_pid(c: &mut Client) -> u16 {
        c.next_pid = if c.next_pid == u16::MAX {
            1
        } else {
            c.next_pid + 1
        };
        c.next_pid
    }

    /// Encode one publish of (seq, intended) on publisher i.
    fn emit_publish(&mut self, i: usize, seq: u64, intended: u64, now: u64) {
        let qos = self.cfg.qos;
        let c = &mut self.clients[i];
        if !matches!(c.spec.role, Role::Pub { .. }) {
            return;
        }
        let pid = if qos > 0 {
            c.inflight += 1;
            Self::next_pid(c)
        } else {
            0
        };
        let Role::Pub { topic } = &c.spec.role else {
            return;
        };
        write_payload(
            &mut self.payload,
            self.cfg.size,
            Stamp {
                pub_id: c.spec.idx,
                seq,
                intended_ns: intended,
            },
        );
        wire::encode_publish(
            &mut c.out,
            self.cfg.version,
            topic,
            qos,
            self.cfg.retain,
            false,
            pid,
            &self.payload,
        );
        let lag = now.saturating_sub(intended);
        if lag > self.cfg.late_ns {
            self.counts.late += 1;
        }
        self.res.max_late_ns = self.res.max_late_ns.max(lag);
        self.counts.sent += 1;
        self.res.hosts[self.clients[i].spec.host].sent += 1;
        self.mark_dirty(i);
    }

    /// Publishes slot `sched.k` (due at `intended`) and moves on to the next slot.
    fn publish_due(&mut self, intended: u64, now: u64) {
        let i = self.pubs[self.sched.next_pub];
        self.sched.k += 1;
        self.sched.next_pub += 1;
        if self.sched.next_pub == self.pubs.len() {
            self.sched.next_pub = 0;
        }
        let c = &mut self.clients[i];
        if !matches!(c.st, St::Up(_)) {
            self.counts.skipped += 1;
            return;
        }
        let seq = c.seq;
        c.seq += 1;
        if self.cfg.qos > 0 && c.inflight >= c.recv_max {
            c.backlog.push_back((seq, intended));
            return;
        }
        self.emit_publish(i, seq, intended, now);
    }

    /// Client i's connection attempt failed (before its CONNACK).
    fn connect_error(&mut self, i: usize) {
        self.sh.connect_errors.fetch_add(1, Relaxed);
        self.res.hosts[self.clients[i].spec.host].connect_errors += 1;
    }

    /// PUBACK / PUBREC reason codes other than success (MQTT 5).
    fn count_ack_code(&self, code: u8) {
        if code == 0x10 {
            self.sh.no_subscribers.fetch_add(1, Relaxed);
        } else if code >= 0x80 {
            self.sh.ack_refused.fetch_add(1, Relaxed);
        }
    }

    fn ack_done(&mut self, i: usize, now: u64) {
        self.sh.acked.fetch_add(1, Relaxed);
        let c = &mut self.clients[i];
        c.inflight = c.inflight.saturating_sub(1);
        if c.inflight < c.recv_max {
            if let Some((seq, intended)) = c.backlog.pop_front() {
                self.emit_publish(i, seq, intended, now);
            }
        }
    }

    /// The connection is up: send CONNECT (with the keepalive scenario's will).
    fn send_connect(&mut self, i: usize, conn: ConnId, now: u64) {
        self.sched.connecting -= 1;
        let c = &mut self.clients[i];
        c.st = St::WaitConnack(conn);
        let will_payload;
        let will = match &c.spec.role {
            Role::Silent { will_topic } => {
                let mut p = Vec::new();
                write_payload(
                    &mut p,
                    24,
                    Stamp {
                        pub_id: c.spec.idx,
                        seq: 0,
                        intended_ns: now,
                    },
                );
                will_payload = p;
                Some(Will {
                    topic: will_topic,
                    payload: &will_payload,
                    qos: 1,
                    retain: false,
                })
            }
            _ => None,
        };
        let opts = ConnectOpts {
            version: self.cfg.version,
            client_id: &c.spec.client_id,
            clean: self.cfg.clean,
            keepalive: self.cfg.keepalive,
            session_expiry: self.cfg.session_expiry,
            will,
        };
        let mut out = std::mem::take(&mut c.out);
        wire::encode_connect(&mut out, &opts);
        c.out = out;
        self.mark_dirty(i);
    }

    fn on_packet(&mut self, i: usize, ev: Ev, now: u64) {
        match ev {
            Ev::ConnAck { code, receive_max } => {
                let c = &mut self.clients[i];
                if code != 0 {
                    self.sh.connack_errors.fetch_add(1, Relaxed);
                    self.res.hosts[c.spec.host].connack_errors += 1;
                    self.note_err(format!("CONNACK reason 0x{code:02x}"));
                    return;
                }
                let St::WaitConnack(conn) = c.st else {
                    return;
                };
                c.st = St::Up(conn);
                c.recv_max = receive_max.map_or(65_535, |r| r.max(1) as u32);
                let dt = now.saturating_sub(c.t_start) / 1000;
                self.sh.conn_up();
                self.sh.last_connack_ns.fetch_max(now, Relaxed);
                if c.attempts > 1 {
                    self.sh.reconnects.fetch_add(1, Relaxed);
                }
                // Per host only; the totals are the hosts' together (`fold_hosts`).
                let h = &mut self.res.hosts[c.spec.host];
                h.connects += 1;
                h.last_connack_ns = h.last_connack_ns.max(now);
                let _ = h.connect_lat.record(dt.max(1));
                if matches!(c.spec.role, Role::New) {
                    let _ = h.takeover_lat.record(dt.max(1));
                }
                let filter = match &c.spec.role {
                    Role::Sub { filter, .. } | Role::Watcher { filter } => Some(filter.clone()),
                    Role::Pub { .. } => {
                        self.sh.pubs_up.fetch_add(1, Relaxed);
                        None
                    }
                    Role::Old => {
                        self.sh.old_up.fetch_add(1, Relaxed);
                        None
                    }
                    _ => None,
                };
                if let Some(f) = filter {
                    let c = &mut self.clients[i];
                    let pid = Self::next_pid(c);
                    let q = if matches!(c.spec.role, Role::Watcher { .. }) {
                        1
                    } else {
                        self.cfg.qos
                    };
                    wire::encode_subscribe(&mut c.out, self.cfg.version, pid, &[(&f, q)]);
                    self.mark_dirty(i);
                }
            }
            Ev::SubAck { ok } => {
                if ok {
                    self.sh.subs_ready.fetch_add(1, Relaxed);
                } else {
                    self.sh.sub_errors.fetch_add(1, Relaxed);
                    self.note_err("SUBACK refused".into());
                }
            }
            Ev::Publish { qos, pid, stamp } => {
                self.counts.recv += 1;
                let c = &mut self.clients[i];
                match qos {
                    1 => wire::encode_ack(&mut c.out, wire::PUBACK, pid),
                    2 => wire::encode_ack(&mut c.out, wire::PUBREC, pid),
                    _ => {}
                }
                if qos > 0 {
                    self.mark_dirty(i);
                }
                let Some(s) = stamp else { return };
                let c = &self.clients[i];
                let lat_us = (now.saturating_sub(s.intended_ns) / 1000).max(1);
                match &c.spec.role {
                    Role::Watcher { .. } => {
                        self.sh.wills.fetch_add(1, Relaxed);
                        let _ = self.res.will_lat.record(lat_us);
                    }
                    Role::Sub { group, .. } => {
                        self.counts.recv_stamped += 1;
                        let h = &mut self.res.hosts[c.spec.host];
                        h.recv += 1;
                        let _ = h.lat.record(lat_us);
                        self.res
                            .tracks
                            .entry((*group, s.pub_id))
                            .or_default()
                            .add(s.seq);
                        let key = (c.spec.idx, s.pub_id);
                        if let Some(last) = self.last_seen.get(&key) {
                            if s.seq < *last {
                                self.res.reordered += 1;
                            }
                        }
                        let e = self.last_seen.entry(key).or_insert(0);
                        *e = (*e).max(s.seq);
                    }
                    _ => {}
                }
            }
            Ev::PubAck { code } => {
                self.count_ack_code(code);
                self.ack_done(i, now)
            }
            Ev::PubComp { .. } => self.ack_done(i, now),
            Ev::PubRec { pid, code } => {
                self.count_ack_code(code);
                if code >= 0x80 {
                    self.ack_done(i, now);
                } else {
                    wire::encode_ack(&mut self.clients[i].out, wire::PUBREL, pid);
                    self.mark_dirty(i);
                }
            }
            Ev::PubRel { pid } => {
                wire::encode_ack(&mut self.clients[i].out, wire::PUBCOMP, pid);
                self.mark_dirty(i);
            }
            Ev::PingResp => {
                self.sh.pongs.fetch_add(1, Relaxed);
            }
            Ev::Disconnect { code } => {
                let c = &mut self.clients[i];
                c.got_disconnect = true;
                if code == 0x8E {
                    self.sh.disc_8e.fetch_add(1, Relaxed);
                } else {
                    self.sh.disc_other.fetch_add(1, Relaxed);
                }
            }
            Ev::Other => {}
        }
    }

    /// Handles the whole packets at the front of `buf` (received on client i's connection
    /// `conn`); returns the bytes used, or None if the stream was malformed (the connection
    /// is then closed and the client counted as gone).
    fn take_packets(
        &mut self,
        io: &mut Io<'_>,
        i: usize,
        conn: ConnId,
        buf: &[u8],
        now: u64,
    ) -> Option<usize> {
        let mut off = 0;
        loop {
            let ev = match wire::decode(&buf[off..], self.cfg.version, MAX_PACKET) {
                Ok(Some((p, used))) => {
                    off += used;
                    Ev::from(&p)
                }
                Ok(None) => return Some(off),
                Err(e) => {
                    self.sh.errors.fetch_add(1, Relaxed);
                    self.note_err(format!("malformed packet from broker: {e:?}"));
                    io.close(conn);
                    self.closed(i, now);
                    return None;
                }
            };
            self.on_packet(i, ev, now);
        }
    }

    /// Everything due on this loop iteration; returns when the next one is due (ns).
    fn step(&mut self, io: &mut Io<'_>, now: u64) -> u64 {
        let n = self.clients.len();
        // 1. connection ramp
        let (t0, ramp_ns) = (self.sched.t0, self.sched.ramp_ns);
        let mut burst = 0;
        while self.sched.next_conn < n
            && burst < CONNECT_BURST
            && self.sched.connecting < CONNECT_BURST
        {
            let next = self.sched.next_conn;
            if matches!(self.clients[next].spec.role, Role::New) {
                if !self.sh.phase2.load(Relaxed) {
                    break;
                }
            } else if ramp_ns > 0 && now < t0 + next as u64 * ramp_ns {
                break;
            }
            self.start_connect(io, next, now);
            self.sched.next_conn += 1;
            burst += 1;
        }
        if !self.reconnect_q.is_empty() && self.sched.connecting < CONNECT_BURST {
            let q = std::mem::take(&mut self.reconnect_q);
            for i in q {
                let c = &self.clients[i];
                if c.st == St::Closed && now >= c.reconnect_at {
                    self.start_connect(io, i, now);
                } else if c.st == St::Closed {
                    self.reconnect_q.push(i);
                }
            }
        }
        // 2. open-loop publish schedule: slot k is due at sched0 + k * rate_ns
        let ps = self.sh.pub_start_ns.load(Relaxed);
        let pe = self.sh.pub_end_ns.load(Relaxed);
        let mut next_due = u64::MAX;
        let rate_ns = self.sched.rate_ns;
        if ps != 0 && !self.pubs.is_empty() && rate_ns > 0.0 {
            if self.sched.sched0 == 0 {
                self.sched.sched0 = ps;
            }
            let mut burst = 0;
            loop {
                let k = self.sched.k;
                if self.cfg.count.is_some_and(|c| k >= c) {
                    break;
                }
                let due = self.sched.sched0 + (k as f64 * rate_ns) as u64;
                if due >= pe {
                    break;
                }
                if due > now || burst >= PUBLISH_BURST {
                    next_due = due;
                    break;
                }
                self.publish_due(due, now);
                burst += 1;
            }
        }
        // 3. keep-alive sweep
        let ka_ns = self.sched.ka_ns;
        if ka_ns > 0 && now - self.sched.last_sweep > 200_000_000 {
            self.sched.last_sweep = now;
            for i in 0..n {
                let c = &mut self.clients[i];
                let St::Up(conn) = c.st else { continue };
                if !matches!(c.spec.role, Role::Silent { .. })
                    && now.saturating_sub(c.last_tx) >= ka_ns / 2
                    && c.out.is_empty()
                    && io.queued(conn) == 0
                {
                    wire::encode_pingreq(&mut c.out);
                    self.sh.pings.fetch_add(1, Relaxed);
                    self.mark_dirty(i);
                }
            }
        }
        // 4. when to come back (completions wake the loop earlier)
        let next_conn = self.sched.next_conn;
        let mut wake = now + TICK.as_nanos() as u64;
        if next_conn < n && ramp_ns > 0 {
            wake = wake.min(t0 + next_conn as u64 * ramp_ns);
        }
        wake = wake.min(next_due);
        if ps == 0 && !self.pubs.is_empty() {
            // publishing may start any moment: poll the start flag closely
            wake = wake.min(now + 1_000_000);
        }
        if next_conn < n && matches!(self.clients[next_conn].spec.role, Role::New) {
            wake = wake.min(now + 1_000_000);
        }
        if !self.reconnect_q.is_empty() {
            wake = wake.min(now + 10_000_000);
        }
        wake
    }
}

impl Handler for Worker {
    fn on_open(&mut self, _io: &mut Io<'_>, conn: ConnId, _peer: Option<SocketAddr>) {
        if self.sealed {
            return;
        }
        let Some(i) = self.client_of(conn) else {
            return;
        };
        if self.clients[i].st == St::Connecting(conn) {
            self.send_connect(i, conn, now_ns());
        }
    }

    fn on_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        if self.sealed {
            return;
        }
        let Some(i) = self.client_of(conn) else {
            return;
        };
        // per completion: a batch can take a while and latency must not be skewed
        let now = now_ns();
        if self.clients[i].rbuf.is_empty() {
            let Some(used) = self.take_packets(io, i, conn, data, now) else {
                return;
            };
            if used < data.len() {
                self.clients[i].rbuf.extend_from_slice(&data[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.clients[i].rbuf);
            buf.extend_from_slice(data);
            let Some(used) = self.take_packets(io, i, conn, &buf, now) else {
                return;
            };
            buf.drain(..used);
            if buf.is_empty() && buf.capacity() > BUF_KEEP {
                buf = Vec::new();
            }
            self.clients[i].rbuf = buf;
        }
    }

    fn on_close(&mut self, _io: &mut Io<'_>, conn: ConnId, error: Option<std::io::Error>) {
        let client = self.client_of(conn);
        // The engine reuses the slot only after this call: the entry is this connection's.
        if let Some(e) = self.by_slot.get_mut(conn.slot as usize) {
            *e = NO_CLIENT;
        }
        let Some(i) = client else { return };
        if self.sealed {
            return;
        }
        match self.clients[i].st {
            St::Connecting(_) => {
                self.sched.connecting -= 1;
                self.connect_error(i);
                let e = error.map_or_else(|| "closed".to_string(), |e| e.to_string());
                self.note_err(format!("connect: {e}"));
            }
            st => {
                if matches!(st, St::WaitConnack(_)) {
                    self.connect_error(i);
                    self.note_err("connection closed by the broker before CONNACK".into());
                }
                // A peer that closed is not an error (sends then fail with EPIPE).
                let closed = [Some(libc::ECONNRESET), Some(libc::EPIPE)];
                if let Some(e) = error.filter(|e| !closed.contains(&e.raw_os_error())) {
                    self.note_err(format!("recv: {e}"));
                }
            }
        }
        self.closed(i, now_ns());
    }

    fn on_wake(&mut self, _io: &mut Io<'_>) {}

    fn on_tick(&mut self, io: &mut Io<'_>, _now: Instant) {
        if self.sealed {
            return;
        }
        if self.sh.stop.load(Relaxed) {
            self.seal();
            return;
        }
        let now = now_ns();
        let wake = self.step(io, now);
        self.flush(io, now);
        self.counts.publish(&self.sh);
        io.wake_at(self.instant_of(wake));
    }

    fn should_stop(&self) -> bool {
        self.sealed
    }
}

/// Owned summary of a decoded packet (no borrow of the receive buffer).
#[derive(Clone, Copy, Debug)]
enum Ev {
    ConnAck {
        code: u8,
        receive_max: Option<u16>,
    },
    SubAck {
        ok: bool,
    },
    Publish {
        qos: u8,
        pid: u16,
        stamp: Option<Stamp>,
    },
    PubAck {
        code: u8,
    },
    PubRec {
        pid: u16,
        code: u8,
    },
    PubRel {
        pid: u16,
    },
    PubComp {
        _pid: u16,
    },
    PingResp,
    Disconnect {
        code: u8,
    },
    Other,
}

impl From<&Packet<'_>> for Ev {
    fn from(p: &Packet<'_>) -> Self {
        match *p {
            Packet::ConnAck {
                code, receive_max, ..
            } => Ev::ConnAck { code, receive_max },
            Packet::SubAck { codes, .. } => Ev::SubAck {
                ok: !codes.is_empty() && codes.iter().all(|&c| c < 0x80),
            },
            Packet::Publish {
                qos, pid, payload, ..
            } => Ev::Publish {
                qos,
                pid,
                stamp: read_payload(payload),
            },
            Packet::PubAck { code, .. } => Ev::PubAck { code },
            Packet::PubRec { pid, code } => Ev::PubRec { pid, code },
            Packet::PubRel { pid } => Ev::PubRel { pid },
            Packet::PubComp { pid } => Ev::PubComp { _pid: pid },
            Packet::PingResp => Ev::PingResp,
            Packet::Disconnect { code } => Ev::Disconnect { code },
            Packet::Other(_) => Ev::Other,
        }
    }
}
