//! Deterministic simulation of N broker cores in one thread.
//!
//! The real [`Core`]s (not a model of them) run under a seeded scheduler that delivers socket
//! events and inter-worker mail in a random but reproducible order: the bytes a client sent
//! arrive in random pieces, a worker's mailbox keeps the order mail was posted in (as the real
//! queue) but is drained at random moments, send completions and socket closes are reported late, time jumps. The
//! simulated clients speak MQTT through the real codec:
//!
//! - a monitor subscribed to `will/#` (QoS 1, never disconnected);
//! - a subscriber with a persistent session subscribed to `data/#` (QoS 1 or 2), reconnecting
//!   from random workers, often twice at once (take-over of a session still being handed off,
//!   take-over during a cut-over), losing its network, disconnecting;
//! - publishers sending QoS 1 or 2 messages `data/{publisher}` numbered in order;
//! - a small pool of "storm" client ids that connect from random workers at once with wills,
//!   random Clean Start, keep alive and version, and end every way a connection can;
//! - two members of the shared group `$share/g/data/#`, and the one member of
//!   `$share/late/late/#`, which joins during the run.
//!
//! Checked after every step: at most one live owner per ClientId across the workers, each
//! core's table invariants, no effect for a connection that is gone. Checked at quiescence:
//! every QoS 1/2 message the broker acknowledged to its publisher reached the subscriber's
//! session exactly once (QoS 2) or without a duplicate that lacks DUP (QoS 1), in the order of
//! its publishing connection, across every take-over and session move; each of them reached
//! the shared group exactly once; every message published after the late member's SUBACK
//! reached it; every will exactly when
//! the will rules say (`session::will`: published once for a connection that got CONNACK and did
//! not end with DISCONNECT 0x00, never otherwise); and once everyone has left, no connection,
//! session, timer, mailbox byte, subscription or ownership entry is left anywhere.
//!
//! A failing run returns the seed and the step; `run(seed, ..)` with the same seed replays it
//! exactly (`scripts/simulate.sh SECONDS [SEED]`, `tests/simulation.rs`, the `simulate` fuzz
//! target).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::broker::{Core, Effect, Input, Mail, Shared};
use crate::config::Config;
use crate::protocol::{
    decode_packet, encode_packet, Connect, ConnectProperties, Disconnect, Packet, ProtocolVersion,
    PubResp, Publish, QoS, ReasonCode, Subscribe, SubscribeProperties, SubscriptionOptions, Will,
};
use crate::runtime::engine::ConnId;

/// Random choices: a seeded generator, or the bytes of a fuzz input (then the generator).
pub struct Rng {
    state: u64,
    bytes: Vec<u8>,
    pos: usize,
}

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            bytes: Vec::new(),
            pos: 0,
        }
    }
    /// Choices read from `data` first (a fuzzer steers them), then from a generator.
    pub fn from_bytes(data: &[u8]) -> Rng {
        let mut r = Rng::seeded(data.len() as u64);
        r.bytes = data.to_vec();
        r
    }
    fn next(&mut self) -> u64 {
        if self.pos + 4 <= self.bytes.len() {
            let b = &self.bytes[self.pos..self.pos + 4];
            self.pos += 4;
            return u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u64;
        }
        // splitmix64
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// What a run found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub steps: u64,
    pub accepted: usize,
    pub delivered: usize,
    pub takeovers: u64,
    pub wills: usize,
    pub connections: usize,
    /// Messages to the late shared group after its member's SUBACK.
    pub late: usize,
}

/// A broken invariant, with what replays it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "simulation seed {} failed at step {}: {} (replay: scripts/simulate.sh 0 {})",
            self.seed, self.step, self.what, self.seed
        )
    }
}

/// Run one seeded simulation of `steps` random steps, then quiesce and check.
pub fn run(seed: u64, steps: u64) -> Result<Report, Failure> {
    guarded(seed, move || Sim::new(Rng::seeded(seed), seed).run(steps))
}

/// Run one simulation whose choices come from `data` (a fuzz input). A broken invariant is
/// a panic (what a fuzzer looks for).
pub fn run_bytes(data: &[u8], steps: u64) -> Report {
    match Sim::new(Rng::from_bytes(data), 0).run(steps) {
        Ok(r) => r,
        Err(f) => panic!("{f}"),
    }
}

/// A panic inside a core (a failed assertion of its own) is a failure of the run too.
fn guarded(seed: u64, f: impl FnOnce() -> Result<Report, Failure>) -> Result<Report, Failure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(e) => {
            let what = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(Failure {
                seed,
                step: 0,
                what: format!("panic: {what}"),
            })
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Monitor,
    Subscriber,
    Publisher(usize),
    Storm(usize),
    /// A member of the shared group `$share/g/data/#`.
    Shared,
    /// The only member of `$share/late/late/#`, which joins during the run.
    Late,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Open,
    /// The core asked to close; `Input::Closed` not reported yet.
    Closing,
    /// The network is gone (the core does not know yet).
    Cut,
    /// `Input::Closed` reported.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// DISCONNECT 0x00 reached the core while the connection was open.
    Normal,
    Abnormal,
}

/// What a simulated client puts in its CONNECT.
struct Hello {
    client_id: String,
    version: ProtocolVersion,
    clean_start: bool,
    /// MQTT 5 Session Expiry Interval.
    expiry: u32,
    keep_alive: u16,
    /// Will token (the will's payload is `w{token}`, on `will/{client_id}`).
    will: Option<u32>,
}

impl Hello {
    fn new(client_id: &str, version: ProtocolVersion, clean_start: bool) -> Hello {
        Hello {
            client_id: client_id.to_string(),
            version,
            clean_start,
            expiry: 0,
            keep_alive: 0,
            will: None,
        }
    }
    fn expiry(mut self, expiry: u32) -> Hello {
        self.expiry = expiry;
        self
    }
}

struct Link {
    worker: usize,
    id: ConnId,
    role: Role,
    version: ProtocolVersion,
    state: LinkState,
    paused: bool,
    to_broker: VecDeque<u8>,
    /// Bytes handed to the core so far, and where a DISCONNECT ends in that stream.
    sent_total: usize,
    queued_total: usize,
    disconnect_at: Option<(usize, bool)>,
    from_broker: BytesMut,
    /// Bytes the transport holds (not yet reported by `Input::Sent`).
    transport: usize,
    connack: Option<ReasonCode>,
    /// The core held the session on this connection at some point (its CONNECT was
    /// accepted, even if the CONNACK waited for a commit and never arrived).
    accepted: bool,
    end: Option<End>,
    /// Will token (storm connections).
    will: Option<u32>,
    next_pid: u16,
    /// Publisher: packet id -> (sequence number, to the late group), unacknowledged.
    inflight: HashMap<u16, (u32, bool)>,
    /// QoS 2 packet ids received and not released (shared-group members).
    qos2: HashSet<u16>,
}

struct Sim {
    rng: Rng,
    seed: u64,
    /// Odd seeds run the cores with a log (durability `sync`): the simulation plays the
    /// storage thread, committing each worker's batches in order at random moments, so
    /// every acknowledgement, delivery and mail that waits for a commit is exercised.
    durable: bool,
    /// Per worker: batches taken from its core and not yet reported committed.
    uncommitted: Vec<VecDeque<u64>>,
    log_buf: Vec<u8>,
    step: u64,
    base: Instant,
    clock: Duration,
    shared: Arc<Shared>,
    cores: Vec<Core>,
    /// Each worker's mailbox: one FIFO, in the order mail was posted by anyone (as the real
    /// lock-free queue: pushes are totally ordered, pops follow that order). The sender is
    /// kept for the trace.
    chans: Vec<VecDeque<(usize, Mail)>>,
    links: Vec<Link>,
    /// Links not yet reported closed, in increasing order.
    active: Vec<usize>,
    by_conn: HashMap<(usize, ConnId), usize>,
    /// Per worker: generation of each transport slot, and the free slots.
    slot_gens: Vec<Vec<u32>>,
    free_slots: Vec<Vec<u32>>,
    qos: QoS,
    sub_version: ProtocolVersion,
    /// Publisher -> next sequence number.
    pub_seq: Vec<u32>,
    /// (publisher, seq) acknowledged by the broker to its publisher.
    accepted: Vec<(usize, u32)>,
    /// Subscriber: first receipt of each (publisher, seq); QoS 2 packet ids not released.
    received: HashSet<(usize, u32)>,
    /// Publishing connection -> highest sequence number received.
    last_seq: HashMap<usize, u32>,
    sub_qos2: HashSet<u16>,
    /// Will tokens: expected (decided at the end of each storm connection) and received.
    wills_expected: HashSet<u32>,
    wills_received: HashMap<u32, usize>,
    next_will: u32,
    /// Deliveries to the members of `$share/g/data/#`, per message.
    shared_received: HashMap<(usize, u32), usize>,
    /// The late group's member: its link once it connected, and whether its SUBACK arrived;
    /// the messages published to it after that SUBACK and acknowledged, and those it received.
    late: Option<usize>,
    late_ready: bool,
    late_accepted: Vec<(usize, u32)>,
    late_received: HashSet<(usize, u32)>,
    publishing: bool,
    failure: Option<String>,
    trace: bool,
}

macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace {
            eprintln!("[{} {:?}] {}", $sim.step, $sim.clock, format!($($arg)*));
        }
    };
}

/// A session slot anywhere: (worker, (index, generation)).
type SlotId = (u16, (u32, u32));

const PUBLISHERS: usize = 3;
const STORM_IDS: usize = 3;

fn config(workers: usize) -> Config {
    Config {
        workers,
        max_connections_per_worker: 4096,
        max_queued_messages: 1_000_000,
        max_queued_bytes: 1 << 30,
        sys_interval_secs: 0,
        ..Config::default()
    }
}

impl Sim {
    fn new(mut rng: Rng, seed: u64) -> Sim {
        let n = 1 + rng.below(4);
        let cfg = config(n);
        let auth = crate::auth::Auth::from_config(&cfg).expect("open broker");
        let shared = Arc::new(Shared::new(cfg, n, auth, None));
        let base = Instant::now();
        let durable = seed % 2 == 1;
        let cores = (0..n)
            .map(|w| {
                let mut c = Core::new(w as u16, shared.clone(), base);
                if durable {
                    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    c.enable_persist(
                        crate::storage::Durability::Sync,
                        Duration::from_secs(300),
                        flag,
                        base,
                    );
                }
                c
            })
            .collect();
        let qos = if rng.chance(50) {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let sub_version = if rng.chance(50) {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        Sim {
            rng,
            seed,
            durable,
            uncommitted: (0..n).map(|_| VecDeque::new()).collect(),
            log_buf: Vec::new(),
            step: 0,
            base,
            clock: Duration::ZERO,
            shared,
            cores,
            chans: (0..n).map(|_| VecDeque::new()).collect(),
            links: Vec::new(),
            active: Vec::new(),
            by_conn: HashMap::new(),
            slot_gens: vec![Vec::new(); n],
            free_slots: vec![Vec::new(); n],
            qos,
            sub_version,
            pub_seq: vec![0; PUBLISHERS],
            accepted: Vec::new(),
            received: HashSet::new(),
            last_seq: HashMap::new(),
            sub_qos2: HashSet::new(),
            wills_expected: HashSet::new(),
            wills_received: HashMap::new(),
            next_will: 1,
            shared_received: HashMap::new(),
            late: None,
            late_ready: false,
            late_accepted: Vec::new(),
            late_received: HashSet::new(),
            publishing: false,
            failure: None,
            trace: std::env::var_os("RINGMQ_SIM_TRACE").is_some(),
        }
    }

    fn n(&self) -> usize {
        self.cores.len()
    }

    fn now(&self) -> Instant {
        self.base + self.clock
    }

    fn fail(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(what);
        }
    }

    fn failure(&mut self) -> Result<(), Failure> {
        match self.failure.take() {
            None => Ok(()),
            Some(what) => Err(Failure {
                seed: self.seed,
                step: self.step,
                what,
            }),
        }
    }

    fn run(&mut self, steps: u64) -> Result<Report, Failure> {
        self.setup()?;
        self.publishing = true;
        for _ in 0..steps {
            self.step += 1;
            self.random_step();
            self.check_step();
            self.failure()?;
        }
        self.publishing = false;
        self.quiesce_and_check()?;
        let takeovers = crate::metrics::totals(&self.shared.metrics);
        let idx = crate::metrics::WorkerMetrics::FIELDS
            .iter()
            .position(|f| f.0 == "takeovers")
            .unwrap_or(0);
        Ok(Report {
            steps: self.step,
            accepted: self.accepted.len(),
            delivered: self.received.len(),
            takeovers: takeovers[idx],
            wills: self.wills_expected.len(),
            connections: self.links.len(),
            late: self.late_accepted.len(),
        })
    }

    // --- the transport ----------------------------------------------------------------

    fn open(&mut self, worker: usize, role: Role, version: ProtocolVersion) -> usize {
        let slot = match self.free_slots[worker].pop() {
            Some(s) => s,
            None => {
                self.slot_gens[worker].push(0);
                (self.slot_gens[worker].len() - 1) as u32
            }
        };
        self.slot_gens[worker][slot as usize] += 1;
        let id = ConnId {
            slot,
            generation: self.slot_gens[worker][slot as usize],
        };
        let l = self.links.len();
        self.links.push(Link {
            worker,
            id,
            role,
            version,
            state: LinkState::Open,
            paused: false,
            to_broker: VecDeque::new(),
            sent_total: 0,
            queued_total: 0,
            disconnect_at: None,
            from_broker: BytesMut::new(),
            transport: 0,
            connack: None,
            accepted: false,
            end: None,
            will: None,
            next_pid: 1,
            inflight: HashMap::new(),
            qos2: HashSet::new(),
        });
        self.by_conn.insert((worker, id), l);
        self.active.push(l);
        trace!(
            self,
            "open link {l} {role:?} {version:?} on worker {worker} as {id:?}"
        );
        self.input(
            worker,
            Input::Opened {
                conn: id,
                peer: None,
            },
        );
        l
    }

    /// Hand an input to a core and carry out its effects, as the shell does.
    fn input(&mut self, worker: usize, input: Input<'_>) {
        let now = self.now();
        self.cores[worker].handle(input, now);
        if let Some(b) = self.cores[worker].take_log(&mut self.log_buf) {
            self.uncommitted[worker].push_back(b);
        }
        if self.durable {
            // Note acceptance when it happens (the CONNACK may wait for a commit).
            for &l in &self.active {
                let k = &mut self.links[l];
                if k.worker == worker && !k.accepted && k.will.is_some() {
                    k.accepted = self.cores[worker].holds_session(k.id);
                }
            }
        }
        self.execute(worker);
    }

    /// The storage thread of a worker reports its oldest batch on disk.
    fn commit_one(&mut self) -> bool {
        let ready: Vec<usize> = (0..self.n())
            .filter(|&w| !self.uncommitted[w].is_empty())
            .collect();
        if ready.is_empty() {
            return false;
        }
        let w = ready[self.rng.below(ready.len())];
        // A commit covers every batch handed over before it (group commit).
        let upto = 1 + self.rng.below(self.uncommitted[w].len());
        let mut b = 0;
        for _ in 0..upto {
            b = self.uncommitted[w].pop_front().expect("counted");
        }
        trace!(self, "worker {w} committed batch {b}");
        self.input(w, Input::Committed(b));
        true
    }

    fn execute(&mut self, worker: usize) {
        let mut sends: Vec<(usize, Vec<u8>)> = Vec::new();
        while let Some(e) = self.cores[worker].poll_effect() {
            match e {
                Effect::Send { conn, bytes } => match self.by_conn.get(&(worker, conn)) {
                    Some(&l) => sends.push((l, bytes.to_vec())),
                    None => {
                        let what = format!("worker {worker} sent to {conn:?}, which is gone");
                        self.fail(what);
                    }
                },
                Effect::Close(conn) => {
                    if let Some(&l) = self.by_conn.get(&(worker, conn)) {
                        trace!(self, "worker {worker} closes link {l}");
                        let link = &mut self.links[l];
                        if link.state == LinkState::Open {
                            link.state = LinkState::Closing;
                            if link.end.is_none() {
                                link.end = Some(End::Abnormal);
                            }
                        }
                    }
                }
                Effect::PauseRecv(conn) | Effect::ResumeRecv(conn) => {
                    let pause = matches!(e, Effect::PauseRecv(_));
                    if let Some(&l) = self.by_conn.get(&(worker, conn)) {
                        self.links[l].paused = pause;
                    }
                }
                Effect::Post { worker: to, mail } => {
                    self.chans[to as usize].push_back((worker, mail))
                }
                Effect::Wake(_) => {}
            }
        }
        for (l, bytes) in sends {
            self.broker_sent(l, &bytes);
        }
    }

    /// Bytes the broker sent on link `l` reach the client at once (unless the network is
    /// gone); its answers wait in `to_broker` for the scheduler.
    fn broker_sent(&mut self, l: usize, bytes: &[u8]) {
        let link = &mut self.links[l];
        link.transport += bytes.len();
        // After a cut the client sees nothing, but what the broker sent still counts for the
        // rules (a CONNACK sent into a dead network still makes the will due).
        link.from_broker.extend_from_slice(bytes);
        loop {
            let link = &mut self.links[l];
            let version = Some(link.version);
            match decode_packet(&link.from_broker, version, u32::MAX) {
                Ok(Some((packet, used))) => {
                    let _ = link.from_broker.split_to(used);
                    trace!(self, "link {l} <- {}", short(&packet));
                    if self.links[l].state == LinkState::Cut {
                        if let Packet::ConnAck(c) = packet {
                            self.links[l].connack = Some(c.code);
                        }
                        continue;
                    }
                    self.client_packet(l, packet);
                }
                Ok(None) => break,
                Err(e) => {
                    let what = format!("client on link {l} cannot decode the broker: {e}");
                    self.fail(what);
                    break;
                }
            }
        }
    }

    fn client_send(&mut self, l: usize, packet: &Packet) {
        trace!(self, "link {l} -> {}", short(packet));
        let link = &mut self.links[l];
        let mut buf = BytesMut::new();
        encode_packet(packet, link.version, &mut buf);
        link.queued_total += buf.len();
        if let Packet::Disconnect(d) = packet {
            link.disconnect_at = Some((link.queued_total, d.reason == ReasonCode::SUCCESS));
        }
        link.to_broker.extend(buf.iter().copied());
    }

    fn pid(&mut self, l: usize) -> u16 {
        let link = &mut self.links[l];
        let p = link.next_pid;
        link.next_pid = link.next_pid.wrapping_add(1).max(1);
        p
    }

    /// The client side: react to one packet from the broker.
    fn client_packet(&mut self, l: usize, packet: Packet) {
        let role = self.links[l].role;
        match packet {
            Packet::ConnAck(c) => {
                if self.links[l].connack.is_some() {
                    self.fail(format!("second CONNACK on link {l}"));
                }
                self.links[l].connack = Some(c.code);
            }
            Packet::Publish(p) => self.client_publish(l, role, p),
            Packet::PubRel(r) => {
                if role == Role::Subscriber {
                    self.sub_qos2.remove(&r.packet_id);
                }
                self.links[l].qos2.remove(&r.packet_id);
                self.client_send(l, &Packet::PubComp(PubResp::new(r.packet_id)));
            }
            Packet::PubAck(r) | Packet::PubRec(r) => {
                let qos2 = self.qos == QoS::ExactlyOnce;
                if let Role::Publisher(i) = role {
                    if let Some((seq, late)) = self.links[l].inflight.remove(&r.packet_id) {
                        if r.reason.is_error() {
                            self.fail(format!("publisher {i} got {:?}", r.reason));
                        }
                        if late {
                            self.late_accepted.push((i, seq));
                        } else {
                            self.accepted.push((i, seq));
                        }
                    }
                }
                if qos2 {
                    self.client_send(l, &Packet::PubRel(PubResp::new(r.packet_id)));
                }
            }
            Packet::SubAck(_) if role == Role::Late => self.late_ready = true,
            Packet::SubAck(_)
            | Packet::PubComp(_)
            | Packet::PingResp
            | Packet::Disconnect(_)
            | Packet::UnsubAck(_) => {}
            other => self.fail(format!("broker sent {other:?}")),
        }
    }

    fn client_publish(&mut self, l: usize, role: Role, p: Publish) {
        match p.qos {
            QoS::AtLeastOnce => {
                self.client_send(l, &Packet::PubAck(PubResp::new(p.packet_id)));
            }
            QoS::ExactlyOnce => {
                self.client_send(l, &Packet::PubRec(PubResp::new(p.packet_id)));
            }
            QoS::AtMostOnce => {}
        }
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        match role {
            Role::Monitor => {
                let Some(t) = text.strip_prefix('w').and_then(|t| t.parse::<u32>().ok()) else {
                    return;
                };
                *self.wills_received.entry(t).or_default() += 1;
            }
            Role::Subscriber => {
                let Some((i, seq, link)) = parse_data(&text) else {
                    self.fail(format!("subscriber got {text:?}"));
                    return;
                };
                if p.qos != self.qos {
                    self.fail(format!("subscriber got QoS {:?} for {text}", p.qos));
                }
                if p.qos == QoS::ExactlyOnce && !self.sub_qos2.insert(p.packet_id) {
                    // A resend of an unreleased QoS 2 message: not delivered again.
                    if !p.dup {
                        self.fail(format!("QoS 2 resend of {text} without DUP"));
                    }
                    return;
                }
                if !self.received.insert((i, seq)) {
                    if p.qos == QoS::ExactlyOnce || !p.dup {
                        self.fail(format!(
                            "{text} delivered twice (QoS {:?}, DUP {})",
                            p.qos, p.dup
                        ));
                    }
                    return;
                }
                if let Some(&last) = self.last_seq.get(&link) {
                    if seq < last {
                        self.fail(format!("{text} arrived after p{i}:{last}:{link}"));
                    }
                }
                let last = self.last_seq.entry(link).or_insert(seq);
                *last = (*last).max(seq);
            }
            Role::Shared | Role::Late => {
                if p.qos == QoS::ExactlyOnce && !self.links[l].qos2.insert(p.packet_id) {
                    return;
                }
                let late = role == Role::Late;
                match (late, text.strip_prefix("late"), parse_data(&text)) {
                    (true, Some(rest), _) => match parse_data(&format!("p{rest}")) {
                        Some((i, seq, _)) => {
                            self.late_received.insert((i, seq));
                        }
                        None => self.fail(format!("late member got {text:?}")),
                    },
                    (false, None, Some((i, seq, _))) => {
                        *self.shared_received.entry((i, seq)).or_default() += 1;
                    }
                    _ => self.fail(format!("{role:?} got {text:?}")),
                }
            }
            Role::Publisher(_) | Role::Storm(_) => {}
        }
    }

    // --- clients ------------------------------------------------------------------------

    fn connect_packet(h: &Hello) -> Packet {
        let v5 = h.version == ProtocolVersion::V5;
        let mut properties = ConnectProperties::default();
        if v5 && h.expiry > 0 {
            properties.session_expiry_interval = Some(h.expiry);
        }
        let client_id = h.client_id.clone();
        Packet::Connect(Box::new(Connect {
            protocol: h.version,
            clean_start: h.clean_start,
            keep_alive: h.keep_alive,
            will: h.will.map(|t| Will {
                topic: ByteString::from(format!("will/{client_id}")),
                payload: Bytes::from(format!("w{t}")),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
            }),
            client_id: ByteString::from(client_id),
            username: None,
            password: None,
            properties,
        }))
    }

    /// A new connection on a random worker, its CONNECT queued.
    fn connect(&mut self, role: Role, h: Hello) -> usize {
        let w = self.rng.below(self.n());
        let l = self.open(w, role, h.version);
        self.links[l].will = h.will;
        self.client_send(l, &Self::connect_packet(&h));
        l
    }

    fn subscribe(&mut self, l: usize, filter: &str, qos: QoS) {
        let pid = self.pid(l);
        self.client_send(
            l,
            &Packet::Subscribe(Subscribe {
                packet_id: pid,
                filters: vec![(
                    ByteString::from(filter),
                    SubscriptionOptions {
                        qos,
                        ..Default::default()
                    },
                )],
                properties: SubscribeProperties::default(),
            }),
        );
    }

    fn connect_subscriber(&mut self, clean_start: bool) -> usize {
        let v = self.sub_version;
        self.connect(
            Role::Subscriber,
            Hello::new("sub", v, clean_start).expiry(3600),
        )
    }

    fn publisher_link(&self, i: usize) -> Option<usize> {
        self.links
            .iter()
            .rposition(|k| k.role == Role::Publisher(i) && k.state == LinkState::Open)
    }

    fn connect_publisher(&mut self, i: usize) -> usize {
        let v = if self.rng.chance(50) {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        self.connect(Role::Publisher(i), Hello::new(&format!("pub{i}"), v, true))
    }

    fn publish(&mut self, i: usize, late: bool) {
        let l = match self.publisher_link(i) {
            Some(l) if self.links[l].connack == Some(ReasonCode::SUCCESS) => l,
            Some(_) => return,
            None => {
                self.connect_publisher(i);
                return;
            }
        };
        let seq = self.pub_seq[i];
        self.pub_seq[i] += 1;
        let pid = self.pid(l);
        self.links[l].inflight.insert(pid, (seq, late));
        let qos = self.qos;
        let (topic, prefix) = if late {
            ("late", "late")
        } else {
            ("data", "p")
        };
        self.client_send(
            l,
            &Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: ByteString::from(format!("{topic}/{i}")),
                packet_id: pid,
                // The order check is per publishing connection: MQTT orders the messages of one
                // connection, not those of a client across its connections.
                payload: Bytes::from(format!("{prefix}{i}:{seq}:{l}")),
                properties: Default::default(),
            }),
        );
    }

    fn storm_connect(&mut self) {
        let j = self.rng.below(STORM_IDS);
        let v = if self.rng.chance(50) {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        };
        let clean = self.rng.chance(50);
        let expiry = [0, 0, 30, 3600][self.rng.below(4)];
        let keep_alive = [0, 0, 1, 2, 60][self.rng.below(5)];
        let will = if self.rng.chance(70) {
            let t = self.next_will;
            self.next_will += 1;
            Some(t)
        } else {
            None
        };
        let mut h = Hello::new(&format!("st{j}"), v, clean).expiry(expiry);
        h.keep_alive = keep_alive;
        h.will = will;
        self.connect(Role::Storm(j), h);
    }

    /// End a link as a client would: DISCONNECT (0x00, or MQTT 5 0x04 "with will"), or its
    /// network is cut.
    fn end_link(&mut self, l: usize, how: usize) {
        if self.links[l].state != LinkState::Open || self.links[l].disconnect_at.is_some() {
            return;
        }
        match how {
            0 => self.client_send(l, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS))),
            1 if self.links[l].version == ProtocolVersion::V5 => self.client_send(
                l,
                &Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE)),
            ),
            _ => self.cut(l),
        }
    }

    fn cut(&mut self, l: usize) {
        trace!(self, "cut link {l}");
        let link = &mut self.links[l];
        if link.state == LinkState::Open || link.state == LinkState::Closing {
            if link.state == LinkState::Open && link.end.is_none() {
                link.end = Some(End::Abnormal);
            }
            link.state = LinkState::Cut;
            link.to_broker.clear();
        }
    }

    fn random_live(&mut self, pred: impl Fn(&Link) -> bool) -> Option<usize> {
        let live: Vec<usize> = self
            .active
            .iter()
            .copied()
            .filter(|&l| self.links[l].state == LinkState::Open && pred(&self.links[l]))
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.below(live.len())])
    }

    // --- the scheduler -------------------------------------------------------------------

    fn random_step(&mut self) {
        match self.rng.below(100) {
            0..=29 => self.client_action(),
            30..=69 => self.deliver_bytes(),
            70..=84 => self.deliver_mail(),
            85..=89 => self.report_sent(),
            90..=94 => self.report_closed(),
            _ if self.durable && self.rng.chance(60) && self.commit_one() => {}
            _ => self.tick(),
        }
    }

    fn client_action(&mut self) {
        match self.rng.below(100) {
            0..=39 => {
                if self.publishing {
                    let i = self.rng.below(PUBLISHERS);
                    // To the late group only once its member has its SUBACK: every PUBLISH
                    // after that must reach it, whatever worker it enters on.
                    let late = self.late_ready && self.rng.chance(20);
                    self.publish(i, late);
                }
            }
            40..=47 => {
                self.connect_subscriber(false);
            }
            48..=52 => {
                // Two CONNECTs for the subscriber at once, likely on two workers: the second
                // takes over a session still being handed to the first.
                self.connect_subscriber(false);
                self.connect_subscriber(false);
            }
            53..=57 => {
                if let Some(l) = self.random_live(|k| k.role == Role::Subscriber) {
                    let how = self.rng.below(3);
                    // DISCONNECT 0x04 would still end the connection normally for the session.
                    self.end_link(l, if how == 1 { 2 } else { how });
                }
            }
            58..=61 => {
                let i = self.rng.below(PUBLISHERS);
                if let Some(l) = self.publisher_link(i) {
                    self.cut(l);
                }
                self.connect_publisher(i);
            }
            62..=78 => self.storm_connect(),
            79 => {
                if self.late.is_none() {
                    let l = self.connect(Role::Late, Hello::new("late", ProtocolVersion::V5, true));
                    self.subscribe(l, "$share/late/late/#", self.qos);
                    self.late = Some(l);
                }
            }
            _ => {
                if let Some(l) = self.random_live(|k| matches!(k.role, Role::Storm(_))) {
                    let how = self.rng.below(3);
                    self.end_link(l, how);
                }
            }
        }
    }

    /// Links with bytes for the broker that may be delivered now.
    fn ready_bytes(&self) -> Vec<usize> {
        self.active
            .iter()
            .copied()
            .filter(|&l| {
                let k = &self.links[l];
                k.state == LinkState::Open && !k.paused && !k.to_broker.is_empty()
            })
            .collect()
    }

    /// Workers with mail waiting.
    fn ready_mail(&self) -> Vec<usize> {
        (0..self.chans.len())
            .filter(|&c| !self.chans[c].is_empty())
            .collect()
    }

    /// Links whose transport holds bytes not yet reported sent.
    fn ready_sent(&self) -> Vec<usize> {
        self.active
            .iter()
            .copied()
            .filter(|&l| self.links[l].transport > 0 && self.links[l].state != LinkState::Done)
            .collect()
    }

    /// Links closing or cut whose close is not yet reported.
    fn ready_closed(&self) -> Vec<usize> {
        self.active
            .iter()
            .copied()
            .filter(|&l| matches!(self.links[l].state, LinkState::Closing | LinkState::Cut))
            .collect()
    }

    fn deliver_bytes(&mut self) {
        let ready = self.ready_bytes();
        if ready.is_empty() {
            return;
        }
        let l = ready[self.rng.below(ready.len())];
        let len = self.links[l].to_broker.len();
        let take = if self.rng.chance(60) {
            len
        } else {
            1 + self.rng.below(len)
        };
        self.deliver_bytes_on(l, take);
    }

    fn deliver_bytes_on(&mut self, l: usize, take: usize) {
        let (w, id) = (self.links[l].worker, self.links[l].id);
        // A core that already decided to close (its Close may wait for a commit) does not
        // read a DISCONNECT that arrives now: the end is the broker's close, not the client's.
        let read = self.cores[w].reads_from(id);
        let link = &mut self.links[l];
        let data: Vec<u8> = link.to_broker.drain(..take).collect();
        link.sent_total += take;
        if let Some((at, normal)) = link.disconnect_at {
            if link.sent_total >= at && link.end.is_none() && read {
                link.end = Some(if normal { End::Normal } else { End::Abnormal });
            }
        }
        trace!(
            self,
            "deliver {take} bytes on link {l} (end {:?})",
            self.links[l].end
        );
        self.input(
            w,
            Input::Bytes {
                conn: id,
                data: &data,
            },
        );
    }

    fn deliver_mail(&mut self) {
        let ready = self.ready_mail();
        if ready.is_empty() {
            return;
        }
        let c = ready[self.rng.below(ready.len())];
        self.deliver_mail_on(c);
    }

    fn deliver_mail_on(&mut self, c: usize) {
        let (from, mail) = self.chans[c].pop_front().expect("nonempty mailbox");
        let to = c;
        trace!(self, "mail {mail:?} {from} -> {to}");
        self.input(to, Input::Mail(mail));
    }

    fn report_sent(&mut self) {
        let ready = self.ready_sent();
        if ready.is_empty() {
            return;
        }
        let l = ready[self.rng.below(ready.len())];
        self.report_sent_on(l);
    }

    fn report_sent_on(&mut self, l: usize) {
        let link = &mut self.links[l];
        link.transport = 0;
        let (w, id) = (link.worker, link.id);
        self.input(
            w,
            Input::Sent {
                conn: id,
                queued: 0,
            },
        );
    }

    fn report_closed(&mut self) {
        let ready = self.ready_closed();
        if ready.is_empty() {
            return;
        }
        let l = ready[self.rng.below(ready.len())];
        self.report_closed_on(l);
    }

    fn report_closed_on(&mut self, l: usize) {
        if let Ok(i) = self.active.binary_search(&l) {
            self.active.remove(i);
        }
        let link = &mut self.links[l];
        link.state = LinkState::Done;
        link.to_broker.clear();
        let (w, id) = (link.worker, link.id);
        let (link_end, link_connack, link_will) = (link.end, link.connack, link.will);
        // Accepted but its CONNACK still waits for a commit (durable seeds): the broker
        // holds the session on this connection, so the will is armed all the same.
        let accepted = self.links[l].accepted || self.cores[w].holds_session(id);
        let link = &self.links[l];
        // A storm connection's will is decided by how it ended.
        if let (Some(t), Some(End::Abnormal)) = (link.will, link.end) {
            if link.connack == Some(ReasonCode::SUCCESS) || accepted {
                self.wills_expected.insert(t);
            }
        }
        self.by_conn.remove(&(w, id));
        trace!(
            self,
            "closed link {l} (end {:?}, connack {:?}, will {:?})",
            link_end,
            link_connack,
            link_will
        );
        self.input(w, Input::Closed { conn: id });
        self.free_slots[w].push(id.slot);
    }

    fn tick(&mut self) {
        let dt = [0, 1, 10, 50, 300, 1500][self.rng.below(6)];
        self.clock += Duration::from_millis(dt);
        for w in 0..self.n() {
            self.input(w, Input::Tick);
        }
    }

    // --- checks -------------------------------------------------------------------------

    fn check_step(&mut self) {
        let mut owners: HashMap<ByteString, usize> = HashMap::new();
        for core in &self.cores {
            core.check_invariants();
            for id in core.live_owners() {
                *owners.entry(id).or_default() += 1;
            }
        }
        if let Some((id, n)) = owners.into_iter().find(|(_, n)| *n > 1) {
            self.fail(format!("{n} live owners of client id {id}"));
        }
        // Relays form chains from older slots to newer ones, never a cycle.
        let mut next: hashbrown::HashMap<SlotId, SlotId> = hashbrown::HashMap::new();
        for (w, core) in self.cores.iter().enumerate() {
            for (k, tw, tk) in core.relays() {
                next.insert(
                    (w as u16, (k.index, k.generation)),
                    (tw, (tk.index, tk.generation)),
                );
            }
        }
        // Each chain is walked once: a node seen in this walk again is a cycle, a node
        // finished by an earlier walk ends it.
        let mut walk: hashbrown::HashMap<SlotId, usize> = hashbrown::HashMap::new();
        for (i, &start) in next.keys().enumerate() {
            let mut at = start;
            loop {
                match walk.get(&at) {
                    Some(&w) if w == i => {
                        let what = format!("relay cycle through {at:?}");
                        self.fail(what);
                        return;
                    }
                    Some(_) => break,
                    None => {
                        walk.insert(at, i);
                    }
                }
                match next.get(&at) {
                    Some(&n) => at = n,
                    None => break,
                }
            }
        }
    }

    /// Deliver everything that is pending, in random order, until nothing is.
    fn drain(&mut self) -> Result<(), Failure> {
        for _ in 0..2_000_000 {
            self.step += 1;
            let bytes = self.ready_bytes();
            let mails = self.ready_mail();
            let sent = self.ready_sent();
            let closed = self.ready_closed();
            let paused = self
                .links
                .iter()
                .any(|k| k.paused && k.state == LinkState::Open);
            if bytes.is_empty() && mails.is_empty() && sent.is_empty() && closed.is_empty() {
                if self.commit_one() {
                    continue;
                }
                if !paused {
                    return Ok(());
                }
                self.tick_all(Duration::from_millis(50));
                continue;
            }
            let pick = if self.durable {
                self.rng.below(5)
            } else {
                self.rng.below(4)
            };
            match pick {
                4 if self.commit_one() => {}
                0 if !bytes.is_empty() => {
                    let l = bytes[self.rng.below(bytes.len())];
                    let len = self.links[l].to_broker.len();
                    self.deliver_bytes_on(l, len);
                }
                1 if !mails.is_empty() => {
                    let c = mails[self.rng.below(mails.len())];
                    self.deliver_mail_on(c);
                }
                2 if !sent.is_empty() => {
                    let l = sent[self.rng.below(sent.len())];
                    self.report_sent_on(l);
                }
                3 if !closed.is_empty() => {
                    let l = closed[self.rng.below(closed.len())];
                    self.report_closed_on(l);
                }
                _ => self.tick_all(Duration::from_millis(1)),
            }
            self.check_step();
            self.failure()?;
        }
        let open = self
            .links
            .iter()
            .filter(|k| k.state == LinkState::Open)
            .count();
        let bytes: usize = self.links.iter().map(|k| k.to_broker.len()).sum();
        let mail: usize = self.chans.iter().map(|c| c.len()).sum();
        let paused = self.links.iter().filter(|k| k.paused).count();
        self.fail(format!(
            "the simulation did not quiesce ({open} open links, {bytes} bytes and {mail} mails pending, {paused} paused)"
        ));
        self.failure()
    }

    fn tick_all(&mut self, dt: Duration) {
        self.clock += dt;
        for w in 0..self.n() {
            self.input(w, Input::Tick);
        }
    }

    fn setup(&mut self) -> Result<(), Failure> {
        let m = self.connect(Role::Monitor, Hello::new("mon", ProtocolVersion::V5, true));
        self.subscribe(m, "will/#", QoS::AtLeastOnce);
        // A new persistent session: MQTT 5 Clean Start = 1 with an expiry; 3.1.1 Clean
        // Session = 0 (Clean Session = 1 would end it with this connection).
        let s = self.connect_subscriber(self.sub_version == ProtocolVersion::V5);
        let q = self.qos;
        self.subscribe(s, "data/#", q);
        let mut members = Vec::new();
        for k in 0..2 {
            let l = self.connect(
                Role::Shared,
                Hello::new(&format!("sh{k}"), ProtocolVersion::V5, true),
            );
            self.subscribe(l, "$share/g/data/#", q);
            members.push(l);
        }
        self.drain()?;
        for l in [m, s].into_iter().chain(members) {
            if self.links[l].connack != Some(ReasonCode::SUCCESS) {
                self.fail(format!("setup: link {l} got {:?}", self.links[l].connack));
            }
        }
        self.failure()
    }

    fn quiesce_and_check(&mut self) -> Result<(), Failure> {
        // Everyone but the monitor leaves; the subscriber comes back once more.
        for l in 0..self.links.len() {
            if matches!(self.links[l].role, Role::Storm(_)) {
                let how = self.rng.below(3);
                self.end_link(l, how);
            }
        }
        self.drain()?;
        let s = self.connect_subscriber(false);
        self.drain()?;
        if self.links[s].connack != Some(ReasonCode::SUCCESS) {
            self.fail(format!(
                "final subscriber link got {:?}",
                self.links[s].connack
            ));
            return self.failure();
        }
        let missing: Vec<_> = self
            .accepted
            .iter()
            .filter(|m| !self.received.contains(m))
            .collect();
        if let Some(&(i, seq)) = missing.first() {
            let n = missing.len();
            self.fail(format!(
                "p{i}:{seq} was acknowledged to its publisher but never reached the subscriber ({n} missing of {})",
                self.accepted.len()
            ));
            return self.failure();
        }
        for m in &self.accepted {
            let n = self.shared_received.get(m).copied().unwrap_or(0);
            if n != 1 {
                self.fail(format!(
                    "p{}:{} reached the shared group {n} times (once expected)",
                    m.0, m.1
                ));
                return self.failure();
            }
        }
        if let Some(&(i, seq)) = self
            .late_accepted
            .iter()
            .find(|m| !self.late_received.contains(m))
        {
            self.fail(format!(
                "late{i}:{seq}, published after the late member's SUBACK, never reached it"
            ));
            return self.failure();
        }
        for t in &self.wills_expected {
            if self.wills_received.get(t).copied().unwrap_or(0) != 1 {
                let got = self.wills_received.get(t).copied().unwrap_or(0);
                self.fail(format!("will w{t} expected once, published {got} times"));
                return self.failure();
            }
        }
        if let Some((t, n)) = self
            .wills_received
            .iter()
            .find(|(t, _)| !self.wills_expected.contains(t))
        {
            let what = format!("will w{t} published {n} times but not expected");
            self.fail(what);
            return self.failure();
        }
        // Then everyone leaves: the subscriber ends its session (Clean Start = 1, then
        // DISCONNECT), and nothing may be left behind.
        for l in 0..self.links.len() {
            if self.links[l].state == LinkState::Open {
                self.end_link(l, 0);
            }
        }
        self.drain()?;
        let s = self.connect_subscriber(true);
        self.drain()?;
        self.end_link(s, 0);
        // Storm ids may have left persistent sessions (3.1.1 ones never expire): end them.
        for j in 0..STORM_IDS {
            let h = Hello::new(&format!("st{j}"), ProtocolVersion::V5, true);
            let l = self.connect(Role::Storm(j), h);
            self.drain()?;
            self.end_link(l, 0);
        }
        self.drain()?;
        // Past every deadline (the longest: a 3600 s session expiry), so that stale timer
        // entries have fired too.
        for _ in 0..40 {
            self.tick_all(Duration::from_secs(100));
        }
        self.drain()?;
        self.check_empty();
        self.failure()
    }

    fn check_empty(&mut self) {
        for w in 0..self.n() {
            let (clients, sessions, timers, shared) = self.cores[w].counts();
            if clients + sessions + timers + shared > 0 {
                self.fail(format!(
                    "worker {w} left {clients} connections, {sessions} sessions, {timers} timers, {shared} shared-subscription members"
                ));
            }
            let (filters, in_step) = self.cores[w].remote_filter_view();
            if filters > 0 || !in_step {
                self.fail(format!(
                    "worker {w}'s view of the other workers' filters: {filters} entries left, in step: {in_step}"
                ));
            }
            let bytes = self.shared.mailbox_bytes[w].load(Ordering::Relaxed);
            let subs = self.shared.sub_counts[w].load(Ordering::Relaxed);
            if bytes + subs > 0 {
                self.fail(format!(
                    "worker {w} left {bytes} mailbox bytes, {subs} subscriptions"
                ));
            }
        }
        if !self.shared.owners.is_empty() {
            let n = self.shared.owners.len();
            self.fail(format!("{n} ownership entries left"));
        }
        if self.chans.iter().any(|c| !c.is_empty()) {
            self.fail("mail left undelivered".into());
        }
    }
}

fn short(p: &Packet) -> String {
    match p {
        Packet::Connect(c) => format!(
            "CONNECT {} clean {} ka {} will {:?}",
            c.client_id,
            c.clean_start,
            c.keep_alive,
            c.will.as_ref().map(|w| w.payload.clone())
        ),
        Packet::Publish(p) => format!(
            "PUBLISH {} {:?} q{} pid {} dup {}",
            p.topic, p.payload, p.qos as u8, p.packet_id, p.dup
        ),
        other => {
            let s = format!("{other:?}");
            s.chars().take(80).collect()
        }
    }
}

fn parse_data(text: &str) -> Option<(usize, u32, usize)> {
    let mut it = text.strip_prefix('p')?.split(':');
    let i = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let link = it.next()?.parse().ok()?;
    Some((i, seq, link))
}
