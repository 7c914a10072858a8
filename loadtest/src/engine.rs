//! One io_uring event loop per generator thread.
//!
//! Sockets are created with `socket(2)`, bound to the chosen source address
//! (IP_BIND_ADDRESS_NO_PORT so the port is picked at connect time), registered into a
//! sparse fixed-file table (one slot per client) and the normal fd is closed right away.
//! Connect/send/recv then run on the fixed slot, so a process holds far more connections
//! than its RLIMIT_NOFILE (each ring's table must stay below that limit: use more threads).

use crate::stamp::{now_ns, read_payload, write_payload, Stamp};
use crate::stats::{Shared, ThreadResult};
use crate::wire::{self, ConnectOpts, Packet, Version, Will};
use io_uring::{opcode, types, IoUring};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Pending,
    Connecting,
    WaitConnack,
    Up,
    Closed,
}

const K_CONNECT: u64 = 1;
const K_SEND: u64 = 2;
const K_RECV: u64 = 3;

fn ud(kind: u64, gen: u32, idx: usize) -> u64 {
    (kind << 56) | (((gen & 0xFF_FFFF) as u64) << 32) | idx as u64
}

struct Conn {
    spec: ClientSpec,
    st: St,
    gen: u32,
    addr: libc::sockaddr_storage,
    addr_len: libc::socklen_t,
    rbuf: Vec<u8>,
    rlen: usize,
    out: Vec<u8>,
    sending: Vec<u8>,
    send_off: usize,
    send_busy: bool,
    recv_busy: bool,
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

fn sockaddr_of(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Create a non-blocking TCP socket bound to `src` (port chosen at connect time).
fn make_socket(dst: &SocketAddr, src: Option<IpAddr>) -> Result<i32, String> {
    let fam = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscalls on an fd we own; option values point to live locals.
    unsafe {
        let fd = libc::socket(
            fam,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let one: libc::c_int = 1;
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const _,
            sz,
        );
        if let Some(ip) = src {
            if ip.is_ipv4() {
                // IP_BIND_ADDRESS_NO_PORT: defer port choice to connect() (4-tuple unique),
                // so bind() does not exhaust the ephemeral range per source address.
                libc::setsockopt(fd, libc::IPPROTO_IP, 24, &one as *const _ as *const _, sz);
            }
            let (ss, len) = sockaddr_of(&SocketAddr::new(ip, 0));
            if libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) < 0 {
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                return Err(format!("bind {ip}: {e}"));
            }
        }
        Ok(fd)
    }
}

pub struct Worker {
    // Field order matters for drop: the ring is torn down before the buffers it points to.
    ring: IoUring,
    conns: Vec<Conn>,
    cfg: Config,
    sh: Arc<Shared>,
    res: ThreadResult,
    dirty: Vec<usize>,
    pubs: Vec<usize>,
    payload: Vec<u8>,
    last_seen: HashMap<(u32, u32), u64>,
    reconnect_q: Vec<usize>,
}

impl Worker {
    pub fn new(specs: Vec<ClientSpec>, cfg: Config, sh: Arc<Shared>) -> Result<Self, String> {
        let n = specs.len();
        let ring = IoUring::builder()
            .setup_cqsize(65_536)
            .build(4096)
            .map_err(|e| format!("io_uring setup: {e}"))?;
        if n > 0 {
            ring.submitter()
                .register_files_sparse(n as u32)
                .map_err(|e| {
                    format!(
                        "register {n} fixed files (must be < RLIMIT_NOFILE; add --threads): {e}"
                    )
                })?;
        }
        let big = matches!(cfg.qos, 0..=2) && cfg.size > 0;
        let conns: Vec<Conn> = specs
            .into_iter()
            .map(|spec| {
                let (addr, addr_len) = sockaddr_of(&spec.addr);
                let rcap = match spec.role {
                    Role::Sub { .. } | Role::Watcher { .. } if big => {
                        (4 * (cfg.size + 64)).max(4096)
                    }
                    _ => 256,
                };
                Conn {
                    spec,
                    st: St::Pending,
                    gen: 0,
                    addr,
                    addr_len,
                    rbuf: vec![0; rcap],
                    rlen: 0,
                    out: Vec::new(),
                    sending: Vec::new(),
                    send_off: 0,
                    send_busy: false,
                    recv_busy: false,
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
                }
            })
            .collect();
        let pubs = conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.spec.role, Role::Pub { .. }))
            .map(|(i, _)| i)
            .collect();
        Ok(Worker {
            ring,
            conns,
            cfg,
            sh,
            res: ThreadResult::new(),
            dirty: Vec::new(),
            pubs,
            payload: Vec::new(),
            last_seen: HashMap::new(),
            reconnect_q: Vec::new(),
        })
    }

    fn push(&mut self, e: io_uring::squeue::Entry) {
        loop {
            // SAFETY: every entry points at buffers/sockaddrs owned by `self.conns`, which is
            // never resized, and each buffer is left untouched while its op is in flight
            // (send_busy / recv_busy / st == Connecting).
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    fn note_err(&mut self, msg: String) {
        if self.res.first_error.is_none() {
            self.res.first_error = Some(msg);
        }
    }

    fn start_connect(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        c.gen = c.gen.wrapping_add(1);
        c.t_start = now;
        let _ = self
            .sh
            .first_connect_ns
            .compare_exchange(0, now, Relaxed, Relaxed);
        c.rlen = 0;
        c.out.clear();
        c.sending.clear();
        c.inflight = 0;
        c.backlog.clear();
        c.got_disconnect = false;
        let fd = match make_socket(&c.spec.addr, c.spec.source) {
            Ok(fd) => fd,
            Err(e) => {
                self.sh.connect_errors.fetch_add(1, Relaxed);
                self.note_err(e);
                self.closed(i, now, false);
                return;
            }
        };
        let r = self.ring.submitter().register_files_update(i as u32, &[fd]);
        // SAFETY: fd is ours; the fixed table holds its own reference after registration.
        unsafe { libc::close(fd) };
        if let Err(e) = r {
            self.sh.connect_errors.fetch_add(1, Relaxed);
            self.note_err(format!("register fixed file: {e}"));
            self.closed(i, now, false);
            return;
        }
        let c = &mut self.conns[i];
        c.st = St::Connecting;
        let e = opcode::Connect::new(
            types::Fixed(i as u32),
            &c.addr as *const _ as *const libc::sockaddr,
            c.addr_len,
        )
        .build()
        .user_data(ud(K_CONNECT, c.gen, i));
        self.push(e);
    }

    fn submit_recv(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.recv_busy || !matches!(c.st, St::WaitConnack | St::Up) {
            return;
        }
        if c.rlen == c.rbuf.len() {
            let n = c.rbuf.len() * 2;
            c.rbuf.resize(n, 0);
        }
        let ptr = c.rbuf[c.rlen..].as_mut_ptr();
        let len = (c.rbuf.len() - c.rlen) as u32;
        c.recv_busy = true;
        let e = opcode::Recv::new(types::Fixed(i as u32), ptr, len)
            .build()
            .user_data(ud(K_RECV, c.gen, i));
        self.push(e);
    }

    fn mark_dirty(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(i);
        }
    }

    fn flush(&mut self, i: usize, now: u64) {
        let c = &mut self.conns[i];
        c.dirty = false;
        if c.send_busy || c.out.is_empty() || !matches!(c.st, St::WaitConnack | St::Up) {
            return;
        }
        std::mem::swap(&mut c.out, &mut c.sending);
        c.send_off = 0;
        c.send_busy = true;
        c.last_tx = now;
        let e = opcode::Send::new(
            types::Fixed(i as u32),
            c.sending.as_ptr(),
            c.sending.len() as u32,
        )
        .build()
        .user_data(ud(K_SEND, c.gen, i));
        self.push(e);
    }

    /// Connection i is gone (EOF, error, refused).
    fn closed(&mut self, i: usize, now: u64, was_counted: bool) {
        let c = &mut self.conns[i];
        let prev = c.st;
        c.st = St::Closed;
        if prev == St::Up || was_counted {
            self.sh.conns.fetch_sub(1, Relaxed);
            self.sh.closed.fetch_add(1, Relaxed);
        }
        match c.spec.role {
            Role::Old if prev == St::Up && !c.got_disconnect => {
                self.sh.old_eof.fetch_add(1, Relaxed);
            }
            Role::Silent { .. } if prev == St::Up => {
                self.sh.ka_closed.fetch_add(1, Relaxed);
            }
            _ => {}
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

    fn next_pid(c: &mut Conn) -> u16 {
        c.next_pid = if c.next_pid == u16::MAX {
            1
        } else {
            c.next_pid + 1
        };
        c.next_pid
    }

    /// Encode one publish of (seq, intended) on publisher conn i.
    fn emit_publish(&mut self, i: usize, seq: u64, intended: u64, now: u64) {
        let qos = self.cfg.qos;
        let c = &mut self.conns[i];
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
            self.sh.late.fetch_add(1, Relaxed);
        }
        self.res.max_late_ns = self.res.max_late_ns.max(lag);
        self.sh.sent.fetch_add(1, Relaxed);
        self.mark_dirty(i);
    }

    fn publish_due(&mut self, k: u64, intended: u64, now: u64) {
        let i = self.pubs[(k % self.pubs.len() as u64) as usize];
        let c = &mut self.conns[i];
        if c.st != St::Up {
            self.sh.skipped.fetch_add(1, Relaxed);
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

    fn ack_done(&mut self, i: usize, now: u64) {
        self.sh.acked.fetch_add(1, Relaxed);
        let c = &mut self.conns[i];
        c.inflight = c.inflight.saturating_sub(1);
        if c.inflight < c.recv_max {
            if let Some((seq, intended)) = c.backlog.pop_front() {
                self.emit_publish(i, seq, intended, now);
            }
        }
    }

    fn on_packet(&mut self, i: usize, ev: Ev, now: u64) {
        match ev {
            Ev::ConnAck { code, receive_max } => {
                let c = &mut self.conns[i];
                if code != 0 {
                    self.sh.connack_errors.fetch_add(1, Relaxed);
                    self.note_err(format!("CONNACK reason 0x{code:02x}"));
                    return;
                }
                c.st = St::Up;
                c.recv_max = receive_max.map_or(65_535, |r| r.max(1) as u32);
                let dt = now.saturating_sub(c.t_start) / 1000;
                self.sh.conn_up();
                self.sh.last_connack_ns.fetch_max(now, Relaxed);
                if c.gen > 1 {
                    self.sh.reconnects.fetch_add(1, Relaxed);
                }
                let _ = self.res.connect_lat.record(dt.max(1));
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
                    Role::New => {
                        let _ = self.res.takeover_lat.record(dt.max(1));
                        None
                    }
                    _ => None,
                };
                if let Some(f) = filter {
                    let c = &mut self.conns[i];
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
                self.sh.recv.fetch_add(1, Relaxed);
                let c = &mut self.conns[i];
                match qos {
                    1 => wire::encode_ack(&mut c.out, wire::PUBACK, pid),
                    2 => wire::encode_ack(&mut c.out, wire::PUBREC, pid),
                    _ => {}
                }
                if qos > 0 {
                    self.mark_dirty(i);
                }
                let Some(s) = stamp else { return };
                let c = &self.conns[i];
                let lat_us = (now.saturating_sub(s.intended_ns) / 1000).max(1);
                match &c.spec.role {
                    Role::Watcher { .. } => {
                        self.sh.wills.fetch_add(1, Relaxed);
                        let _ = self.res.will_lat.record(lat_us);
                    }
                    Role::Sub { group, .. } => {
                        self.sh.recv_stamped.fetch_add(1, Relaxed);
                        let _ = self.res.lat.record(lat_us);
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
            Ev::PubAck { .. } | Ev::PubComp { .. } => self.ack_done(i, now),
            Ev::PubRec { pid, code } => {
                if code >= 0x80 {
                    self.ack_done(i, now);
                } else {
                    let c = &mut self.conns[i];
                    wire::encode_ack(&mut c.out, wire::PUBREL, pid);
                    self.mark_dirty(i);
                }
            }
            Ev::PubRel { pid } => {
                let c = &mut self.conns[i];
                wire::encode_ack(&mut c.out, wire::PUBCOMP, pid);
                self.mark_dirty(i);
            }
            Ev::PingResp => {
                self.sh.pongs.fetch_add(1, Relaxed);
            }
            Ev::Disconnect { code } => {
                let c = &mut self.conns[i];
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

    fn on_recv(&mut self, i: usize, res: i32, now: u64) {
        self.conns[i].recv_busy = false;
        if res <= 0 && self.conns[i].st == St::WaitConnack {
            self.sh.connect_errors.fetch_add(1, Relaxed);
            self.note_err("connection closed by the broker before CONNACK".into());
        }
        if res <= 0 {
            if res < 0 && res != -libc::ECONNRESET {
                self.note_err(format!("recv: {}", std::io::Error::from_raw_os_error(-res)));
            }
            self.closed(i, now, false);
            return;
        }
        self.conns[i].rlen += res as usize;
        let mut off = 0;
        loop {
            let c = &self.conns[i];
            let r = wire::decode(&c.rbuf[off..c.rlen], self.cfg.version, 64 << 20);
            let (ev, used) = match r {
                Ok(Some((p, used))) => (Ev::from(&p), used),
                Ok(None) => break,
                Err(e) => {
                    self.sh.errors.fetch_add(1, Relaxed);
                    self.note_err(format!("malformed packet from broker: {e:?}"));
                    // Drop the connection's view of the stream: treat as closed.
                    self.closed(i, now, false);
                    return;
                }
            };
            off += used;
            self.on_packet(i, ev, now);
        }
        let c = &mut self.conns[i];
        if off > 0 {
            c.rbuf.copy_within(off..c.rlen, 0);
            c.rlen -= off;
        }
        if c.st == St::Closed {
            return;
        }
        self.submit_recv(i);
    }

    fn on_cqe(&mut self, user: u64, res: i32, now: u64) {
        let kind = user >> 56;
        let gen = ((user >> 32) & 0xFF_FFFF) as u32;
        let i = (user & 0xFFFF_FFFF) as usize;
        if i >= self.conns.len() || self.conns[i].gen & 0xFF_FFFF != gen {
            return;
        }
        match kind {
            K_CONNECT => {
                if res < 0 {
                    self.sh.connect_errors.fetch_add(1, Relaxed);
                    self.note_err(format!(
                        "connect: {}",
                        std::io::Error::from_raw_os_error(-res)
                    ));
                    self.closed(i, now, false);
                    return;
                }
                let c = &mut self.conns[i];
                c.st = St::WaitConnack;
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
                self.submit_recv(i);
            }
            K_SEND => {
                let c = &mut self.conns[i];
                c.send_busy = false;
                if res <= 0 {
                    // recv will see the close too; count it there.
                    return;
                }
                c.send_off += res as usize;
                if c.send_off < c.sending.len() {
                    c.send_busy = true;
                    let e = opcode::Send::new(
                        types::Fixed(i as u32),
                        c.sending[c.send_off..].as_ptr(),
                        (c.sending.len() - c.send_off) as u32,
                    )
                    .build()
                    .user_data(ud(K_SEND, c.gen, i));
                    self.push(e);
                } else {
                    c.sending.clear();
                    if !c.out.is_empty() {
                        self.mark_dirty(i);
                    }
                }
            }
            K_RECV => self.on_recv(i, res, now),
            _ => {}
        }
    }

    /// Run until `sh.stop`. Returns the thread's measurements.
    pub fn run(mut self) -> ThreadResult {
        let t0 = now_ns();
        let ramp_ns = if self.cfg.ramp > 0.0 {
            (1e9 / self.cfg.ramp) as u64
        } else {
            0
        };
        let rate_ns = if self.cfg.rate > 0.0 {
            1e9 / self.cfg.rate
        } else {
            0.0
        };
        let mut next_conn = 0usize;
        let mut k: u64 = 0; // publish schedule slot
        let mut sched0 = 0u64;
        let mut last_sweep = t0;
        let ka_ns = self.cfg.keepalive as u64 * 1_000_000_000;
        let n = self.conns.len();
        loop {
            let now = now_ns();
            if self.sh.stop.load(Relaxed) {
                break;
            }
            // 1. connection ramp
            let mut burst = 0;
            while next_conn < n && burst < 512 {
                if matches!(self.conns[next_conn].spec.role, Role::New) {
                    if !self.sh.phase2.load(Relaxed) {
                        break;
                    }
                } else if ramp_ns > 0 && now < t0 + next_conn as u64 * ramp_ns {
                    break;
                }
                self.start_connect(next_conn, now);
                next_conn += 1;
                burst += 1;
            }
            if !self.reconnect_q.is_empty() {
                let q = std::mem::take(&mut self.reconnect_q);
                for i in q {
                    let c = &self.conns[i];
                    if c.st == St::Closed && !c.send_busy && !c.recv_busy && now >= c.reconnect_at {
                        self.start_connect(i, now);
                    } else if c.st == St::Closed {
                        self.reconnect_q.push(i);
                    }
                }
            }
            // 2. open-loop publish schedule: slot k is due at sched0 + k * rate_ns
            let ps = self.sh.pub_start_ns.load(Relaxed);
            let pe = self.sh.pub_end_ns.load(Relaxed);
            let mut next_due = u64::MAX;
            if ps != 0 && !self.pubs.is_empty() && rate_ns > 0.0 {
                if sched0 == 0 {
                    sched0 = ps;
                }
                let mut burst = 0;
                loop {
                    if self.cfg.count.is_some_and(|c| k >= c) {
                        break;
                    }
                    let due = sched0 + (k as f64 * rate_ns) as u64;
                    if due >= pe {
                        break;
                    }
                    if due > now || burst >= 8192 {
                        next_due = due;
                        break;
                    }
                    self.publish_due(k, due, now);
                    k += 1;
                    burst += 1;
                }
            }
            // 3. keep-alive sweep
            if ka_ns > 0 && now - last_sweep > 200_000_000 {
                last_sweep = now;
                for i in 0..n {
                    let c = &mut self.conns[i];
                    if c.st == St::Up
                        && !matches!(c.spec.role, Role::Silent { .. })
                        && now.saturating_sub(c.last_tx) >= ka_ns / 2
                        && c.out.is_empty()
                    {
                        wire::encode_pingreq(&mut c.out);
                        self.sh.pings.fetch_add(1, Relaxed);
                        self.mark_dirty(i);
                    }
                }
            }
            // 4. flush pending output
            let d = std::mem::take(&mut self.dirty);
            for &i in &d {
                self.flush(i, now);
            }
            let mut d = d;
            d.clear();
            if self.dirty.is_empty() {
                self.dirty = d;
            }
            // 5. wait for completions or the next timer
            let mut wake = now + 50_000_000;
            if next_conn < n && ramp_ns > 0 {
                wake = wake.min(t0 + next_conn as u64 * ramp_ns);
            }
            wake = wake.min(next_due);
            if ps == 0 && !self.pubs.is_empty() {
                // publishing may start any moment: poll the start flag closely
                wake = wake.min(now + 1_000_000);
            }
            if next_conn < n && matches!(self.conns[next_conn].spec.role, Role::New) {
                wake = wake.min(now + 1_000_000);
            }
            if !self.reconnect_q.is_empty() {
                wake = wake.min(now + 10_000_000);
            }
            let now2 = now_ns();
            if wake <= now2 || !self.dirty.is_empty() {
                let _ = self.ring.submit();
            } else {
                let wait = wake - now2;
                let ts = types::Timespec::new()
                    .sec(wait / 1_000_000_000)
                    .nsec((wait % 1_000_000_000) as u32);
                let args = types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(_) => {}
                    Err(e)
                        if e.raw_os_error() == Some(libc::ETIME)
                            || e.raw_os_error() == Some(libc::EINTR) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(e) => {
                        self.note_err(format!("io_uring_enter: {e}"));
                        break;
                    }
                }
            }
            // 6. completions
            let mut batch: Vec<(u64, i32)> = Vec::new();
            loop {
                batch.clear();
                batch.extend(
                    self.ring
                        .completion()
                        .take(1024)
                        .map(|c| (c.user_data(), c.result())),
                );
                if batch.is_empty() {
                    break;
                }
                for &(u, r) in &batch {
                    // per completion: a batch can take a while and latency must not be skewed
                    self.on_cqe(u, r, now_ns());
                }
            }
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if matches!(c.spec.role, Role::Pub { .. }) {
                self.res.sent_per_pub.push((c.spec.idx, c.seq));
            }
        }
        std::mem::take(&mut self.res)
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
        _pid: u16,
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
            Packet::PubAck { pid, .. } => Ev::PubAck { _pid: pid },
            Packet::PubRec { pid, code } => Ev::PubRec { pid, code },
            Packet::PubRel { pid } => Ev::PubRel { pid },
            Packet::PubComp { pid } => Ev::PubComp { _pid: pid },
            Packet::PingResp => Ev::PingResp,
            Packet::Disconnect { code } => Ev::Disconnect { code },
            Packet::Other(_) => Ev::Other,
        }
    }
}
