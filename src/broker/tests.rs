//! Socket-free unit tests of the broker core: take-over, routing, keep-alive and session rules,
//! one rule per test, driven through the real [`Core`] API (`handle` / `poll_effect`).
//!
//! The harness ([`Net`]) is N cores, a fake transport and a fake clock:
//! - connections are `ConnId`s allocated per worker; what a core sends is decoded with the real
//!   codec into the client's inbox, a `Close` effect marks the client closing, and every send
//!   completes at once (`Input::Sent { queued: 0 }`), except to a client that stopped reading
//!   ([`Net::stall`]: its bytes stay queued until [`Net::unstall`]);
//! - mail a core posts waits in the receiving worker's mailbox, one FIFO per worker in posting
//!   order (as the real queue); tests deliver it all ([`Net::settle`]) or one piece at a time
//!   ([`Net::deliver_next`]) to provoke a race;
//! - time is `base + clock`; nothing here reads a real clock or sleeps.
//!
//! `src/sim.rs` runs the same cores under a randomized scheduler; these tests each pin one
//! behaviour a user depends on. Some are ports of TCP tests that only checked session rules
//! (their names are kept; `tests/delivery.rs` says where each went).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::{Core, Effect, Input, Mail, Shared};
use crate::config::Config;
use crate::protocol::*;
use crate::runtime::engine::ConnId;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// The PUBACK / PUBREC reasons of an accepted message.
const SUCCESSES: [ReasonCode; 2] = [ReasonCode::SUCCESS, ReasonCode::NO_MATCHING_SUBSCRIBERS];

// ----------------------------------------------------------------------------------------------
// harness
// ----------------------------------------------------------------------------------------------

/// A client of the fake transport: an index into `Net::clients`.
type C = usize;

struct Client {
    worker: usize,
    id: ConnId,
    version: ProtocolVersion,
    /// Bytes from the broker not yet decoded (a partial packet).
    rx: BytesMut,
    /// Packets from the broker, not yet taken by the test.
    inbox: VecDeque<Packet>,
    /// The core asked to close the connection (`Effect::Close`).
    closing: bool,
    /// `Input::Closed` was reported.
    gone: bool,
    /// Does not read: what the broker sends stays in `rx`, queued on its socket.
    stalled: bool,
}

struct Net {
    base: Instant,
    clock: Duration,
    shared: Arc<Shared>,
    cores: Vec<Core>,
    /// Per receiving worker, the mail waiting for it in posting order (with the sender).
    mailboxes: Vec<VecDeque<(usize, Mail)>>,
    /// Every mail ever posted: (from, to, kind).
    posted: Vec<(usize, usize, &'static str)>,
    clients: Vec<Client>,
    by_conn: HashMap<(usize, ConnId), C>,
    next_slot: Vec<u32>,
}

fn kind(m: &Mail) -> &'static str {
    match m {
        Mail::Publish(_) => "Publish",
        Mail::Deliver { .. } => "Deliver",
        Mail::TakeOver(_) => "TakeOver",
        Mail::Handoff(_) => "Handoff",
        Mail::Forward { .. } => "Forward",
        Mail::Unforward { .. } => "Unforward",
        Mail::ForwardDone { .. } => "ForwardDone",
        Mail::AuthResult(_) => "AuthResult",
        Mail::Shared { .. } => "Shared",
        Mail::SharedApplied { .. } => "SharedApplied",
        Mail::Filter { .. } => "Filter",
        Mail::PublishAcked { .. } => "PublishAcked",
        Mail::FanoutRouted { .. } => "FanoutRouted",
        Mail::Stored { .. } => "Stored",
        Mail::Cluster(_) => "Cluster",
        Mail::ClusterClaimed(_) => "ClusterClaimed",
        Mail::NodeFilter { .. } => "NodeFilter",
        Mail::ServeShared { .. } => "ServeShared",
        Mail::Fence => "Fence",
        Mail::DropStale { .. } => "DropStale",
    }
}

impl Net {
    fn new(workers: usize) -> Net {
        Net::with(workers, |_| {})
    }

    fn with(workers: usize, f: impl FnOnce(&mut Config)) -> Net {
        let mut cfg = Config {
            workers,
            max_connections_per_worker: 4096,
            sys_interval_secs: 0,
            ..Config::default()
        };
        f(&mut cfg);
        let auth = crate::auth::Auth::from_config(&cfg).expect("open broker");
        let shared = Arc::new(Shared::new(cfg, workers, auth, None));
        let base = Instant::now();
        Net {
            base,
            clock: Duration::ZERO,
            cores: (0..workers)
                .map(|w| Core::new(w as u16, shared.clone(), base))
                .collect(),
            shared,
            mailboxes: (0..workers).map(|_| VecDeque::new()).collect(),
            posted: Vec::new(),
            clients: Vec::new(),
            by_conn: HashMap::new(),
            next_slot: vec![0; workers],
        }
    }

    fn now(&self) -> Instant {
        self.base + self.clock
    }

    /// Let time pass (no input: cores notice at the next input or tick).
    fn advance(&mut self, d: Duration) {
        self.clock += d;
    }

    /// Set the clock to `ms` after the start and tick every worker.
    fn tick_at(&mut self, ms: u64) {
        let to = Duration::from_millis(ms);
        assert!(to >= self.clock, "the clock only moves forward");
        self.clock = to;
        for w in 0..self.cores.len() {
            self.input(w, Input::Tick);
        }
    }

    /// Hand an input to a core and carry out its effects, as the shell does.
    fn input(&mut self, w: usize, input: Input<'_>) {
        let now = self.now();
        self.cores[w].handle(input, now);
        self.cores[w].check_invariants();
        self.execute(w);
    }

    fn execute(&mut self, w: usize) {
        let mut sent: Vec<C> = Vec::new();
        while let Some(e) = self.cores[w].poll_effect() {
            match e {
                Effect::Send { conn, bytes } => {
                    let c = self.by_conn[&(w, conn)];
                    let cl = &mut self.clients[c];
                    assert!(
                        !cl.closing && !cl.gone,
                        "worker {w} sent to client {c} after closing it"
                    );
                    cl.rx.extend_from_slice(bytes);
                    if !sent.contains(&c) {
                        sent.push(c);
                    }
                }
                Effect::Close(conn) => {
                    let c = self.by_conn[&(w, conn)];
                    assert!(!self.clients[c].gone, "close of a connection that is gone");
                    self.clients[c].closing = true;
                }
                Effect::PauseRecv(_) | Effect::ResumeRecv(_) | Effect::Wake(_) => {}
                Effect::Post { worker, mail } => {
                    self.posted.push((w, worker as usize, kind(&mail)));
                    self.mailboxes[worker as usize].push_back((w, mail));
                }
            }
        }
        for &c in &sent {
            if !self.clients[c].stalled {
                self.decode(c);
            }
        }
        // The transport drains at once: every send completes with nothing left queued, but
        // for a client that does not read.
        for c in sent {
            let cl = &self.clients[c];
            if !cl.closing && !cl.gone {
                let conn = cl.id;
                let queued = if cl.stalled { cl.rx.len() } else { 0 };
                self.input(w, Input::Sent { conn, queued });
            }
        }
    }

    fn decode(&mut self, c: C) {
        let cl = &mut self.clients[c];
        while let Some((p, used)) =
            decode_packet(&cl.rx, Some(cl.version), u32::MAX).expect("the broker sent garbage")
        {
            let _ = cl.rx.split_to(used);
            cl.inbox.push_back(p);
        }
    }

    // --- the transport ---------------------------------------------------------------------

    /// A new connection on worker `w`.
    fn open(&mut self, w: usize, version: ProtocolVersion) -> C {
        let slot = self.next_slot[w];
        self.next_slot[w] += 1;
        let id = ConnId {
            slot,
            generation: 1,
        };
        let c = self.clients.len();
        self.clients.push(Client {
            worker: w,
            id,
            version,
            rx: BytesMut::new(),
            inbox: VecDeque::new(),
            closing: false,
            gone: false,
            stalled: false,
        });
        self.by_conn.insert((w, id), c);
        self.input(
            w,
            Input::Opened {
                conn: id,
                peer: None,
            },
        );
        c
    }

    /// Bytes from the client.
    fn bytes(&mut self, c: C, data: &[u8]) {
        let (w, conn) = (self.clients[c].worker, self.clients[c].id);
        assert!(!self.clients[c].gone, "client {c} is gone");
        self.input(w, Input::Bytes { conn, data });
    }

    /// One packet from the client (mail it causes is not delivered).
    fn send(&mut self, c: C, p: &Packet) {
        let mut buf = BytesMut::new();
        encode_packet(p, self.clients[c].version, &mut buf);
        self.bytes(c, &buf);
    }

    /// The client stops reading: what the broker sends from now on stays queued on its socket.
    fn stall(&mut self, c: C) {
        self.clients[c].stalled = true;
    }

    /// The client reads everything queued for it (and goes on reading).
    fn unstall(&mut self, c: C) {
        self.clients[c].stalled = false;
        self.decode(c);
        let (w, conn) = (self.clients[c].worker, self.clients[c].id);
        self.input(w, Input::Sent { conn, queued: 0 });
    }

    /// The connection is gone: the peer left, or the close the core asked for completed.
    fn closed(&mut self, c: C) {
        assert!(!self.clients[c].gone, "client {c} closed twice");
        self.clients[c].gone = true;
        let (w, conn) = (self.clients[c].worker, self.clients[c].id);
        self.input(w, Input::Closed { conn });
    }

    /// The kinds of mail waiting for worker `w`, in delivery order.
    fn pending(&self, w: usize) -> Vec<&'static str> {
        self.mailboxes[w].iter().map(|(_, m)| kind(m)).collect()
    }

    /// Deliver the next mail waiting for worker `w`; its kind, or None when there is none.
    fn deliver_next(&mut self, w: usize) -> Option<&'static str> {
        let (_, mail) = self.mailboxes[w].pop_front()?;
        let k = kind(&mail);
        self.input(w, Input::Mail(mail));
        Some(k)
    }

    /// Deliver the next mail to `w` but leave its effects with the core, as a shell that has
    /// not executed them yet while other workers already see what the core changed in
    /// `Shared` (e.g. a subscription count); [`Net::execute`] runs them.
    fn deliver_next_deferred(&mut self, w: usize) -> Option<&'static str> {
        let (_, mail) = self.mailboxes[w].pop_front()?;
        let k = kind(&mail);
        let now = self.now();
        self.cores[w].handle(Input::Mail(mail), now);
        self.cores[w].check_invariants();
        Some(k)
    }

    /// Deliver every mail waiting for worker `w` now (not what that posts to itself later).
    fn deliver_all_to(&mut self, w: usize) {
        for _ in 0..self.mailboxes[w].len() {
            self.deliver_next(w);
        }
    }

    /// Deliver all mail (each worker's in posting order) and complete every close the cores
    /// asked for, until nothing is left to do.
    fn settle(&mut self) {
        loop {
            let mut progress = false;
            for w in 0..self.cores.len() {
                while self.deliver_next(w).is_some() {
                    progress = true;
                }
            }
            for c in 0..self.clients.len() {
                if self.clients[c].closing && !self.clients[c].gone {
                    self.closed(c);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    // --- what the client sees ----------------------------------------------------------------

    /// Every packet the client received since the last call.
    fn take(&mut self, c: C) -> Vec<Packet> {
        self.clients[c].inbox.drain(..).collect()
    }

    /// Every packet received, each of which must be a PUBLISH (not acknowledged).
    fn publishes(&mut self, c: C) -> Vec<Publish> {
        self.take(c)
            .into_iter()
            .map(|p| match p {
                Packet::Publish(p) => p,
                other => panic!("expected PUBLISH, got {other:?}"),
            })
            .collect()
    }

    /// The next packet, which must be there.
    fn next(&mut self, c: C) -> Packet {
        self.clients[c]
            .inbox
            .pop_front()
            .unwrap_or_else(|| panic!("client {c} expected a packet, got none"))
    }

    fn next_publish(&mut self, c: C) -> Publish {
        match self.next(c) {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    fn connack(&mut self, c: C) -> ConnAck {
        match self.next(c) {
            Packet::ConnAck(a) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    fn is_closing(&self, c: C) -> bool {
        self.clients[c].closing
    }

    // --- client conversations ----------------------------------------------------------------

    /// Open a connection on `w` and send its CONNECT; mail is not delivered.
    fn connect(&mut self, w: usize, connect: Connect) -> C {
        let c = self.open(w, connect.protocol);
        self.send(c, &Packet::Connect(Box::new(connect)));
        c
    }

    /// Connect, settle, and take the (successful) CONNACK.
    fn online(&mut self, w: usize, connect: Connect) -> (C, ConnAck) {
        let c = self.connect(w, connect);
        self.settle();
        let ack = self.connack(c);
        assert_eq!(ack.code, ReasonCode::SUCCESS, "CONNACK");
        (c, ack)
    }

    fn sub_with(
        &mut self,
        c: C,
        pid: u16,
        filters: &[(&str, SubscriptionOptions)],
        sub_id: Option<u32>,
    ) -> SubAck {
        self.send(
            c,
            &Packet::Subscribe(Subscribe {
                packet_id: pid,
                filters: filters
                    .iter()
                    .map(|(f, o)| (ByteString::from(*f), *o))
                    .collect(),
                properties: SubscribeProperties {
                    subscription_identifier: sub_id,
                    ..Default::default()
                },
            }),
        );
        self.settle();
        match self.next(c) {
            Packet::SubAck(s) => {
                assert_eq!(s.packet_id, pid);
                assert!(
                    s.reasons.iter().all(|r| !r.is_error()),
                    "refused: {:?}",
                    s.reasons
                );
                s
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    fn subscribe(&mut self, c: C, pid: u16, filter: &str, qos: QoS) {
        self.sub_with(c, pid, &[(filter, opts(qos))], None);
    }

    /// The first packet received that `f` picks (others stay in the inbox, in order).
    fn take_first<T>(&mut self, c: C, what: &str, f: impl Fn(&Packet) -> Option<T>) -> T {
        let inbox = &mut self.clients[c].inbox;
        let i = inbox
            .iter()
            .position(|p| f(p).is_some())
            .unwrap_or_else(|| panic!("client {c} expected {what}, got {inbox:?}"));
        f(&inbox.remove(i).unwrap()).unwrap()
    }

    /// Send a PUBLISH, complete the publisher's side of its QoS flow, settle. Packets other
    /// than the acknowledgements (messages the publisher receives itself) stay in its inbox.
    /// The PUBACK / PUBREC must be 0x00 or 0x10 (No matching subscribers).
    fn send_pub(&mut self, c: C, p: Publish) {
        let (qos, id) = (p.qos, p.packet_id);
        self.send(c, &Packet::Publish(p));
        self.settle();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let a = self.take_first(c, "PUBACK", |p| match p {
                    Packet::PubAck(a) => Some(a.clone()),
                    _ => None,
                });
                assert_eq!(a.packet_id, id);
                assert!(SUCCESSES.contains(&a.reason), "{:?}", a.reason);
            }
            QoS::ExactlyOnce => {
                let a = self.take_first(c, "PUBREC", |p| match p {
                    Packet::PubRec(a) => Some(a.clone()),
                    _ => None,
                });
                assert_eq!(a.packet_id, id);
                assert!(SUCCESSES.contains(&a.reason), "{:?}", a.reason);
                self.send(c, &Packet::PubRel(PubResp::new(id)));
                self.settle();
                let a = self.take_first(c, "PUBCOMP", |p| match p {
                    Packet::PubComp(a) => Some(a.clone()),
                    _ => None,
                });
                assert_eq!(a.packet_id, id);
            }
        }
    }

    /// Publish a QoS 0 marker (payload "MARK") on `topic`.
    fn mark(&mut self, c: C, topic: &str) {
        self.send_pub(c, msg(topic, b"MARK", QoS::AtMostOnce, 0, false));
    }

    /// The PUBLISHes received before the marker (acknowledged, PUBRELs answered); the marker
    /// must have arrived.
    fn until_marker(&mut self, c: C) -> Vec<Publish> {
        let mut got = Vec::new();
        loop {
            match self.next(c) {
                Packet::Publish(p) => {
                    if &p.payload[..] == b"MARK" {
                        return got;
                    }
                    match p.qos {
                        QoS::AtLeastOnce => {
                            self.send(c, &Packet::PubAck(PubResp::new(p.packet_id)))
                        }
                        QoS::ExactlyOnce => {
                            self.send(c, &Packet::PubRec(PubResp::new(p.packet_id)))
                        }
                        QoS::AtMostOnce => {}
                    }
                    got.push(p);
                }
                Packet::PubRel(r) => self.send(c, &Packet::PubComp(PubResp::new(r.packet_id))),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Client ids with a live connection, across all workers (one entry per connection).
    fn live_owners(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .cores
            .iter()
            .flat_map(|c| c.live_owners())
            .map(|s| s.to_string())
            .collect();
        v.sort();
        v
    }

    fn metric(&self, name: &str) -> u64 {
        let i = crate::metrics::WorkerMetrics::FIELDS
            .iter()
            .position(|f| f.0 == name)
            .expect("a metric of that name");
        crate::metrics::totals(&self.shared.metrics)[i]
    }

    /// Mail of `kind` posted so far, as (from, to).
    fn posts_of(&self, kind: &str) -> Vec<(usize, usize)> {
        self.posted
            .iter()
            .filter(|p| p.2 == kind)
            .map(|p| (p.0, p.1))
            .collect()
    }
}

// --- packets -----------------------------------------------------------------------------------

fn conn(v: ProtocolVersion, id: &str) -> Connect {
    connect_packet(v, id, 30, true)
}

fn connect_packet(version: ProtocolVersion, id: &str, keep_alive: u16, clean: bool) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive,
        client_id: ByteString::from(id),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

/// A persistent session. MQTT 5: Session Expiry 300 s with Clean Start `clean`; 3.1.1: Clean
/// Session 0 always (as in tests/delivery.rs).
fn persistent(v: ProtocolVersion, id: &str, clean: bool) -> Connect {
    if v.is_v5() {
        let mut c = connect_packet(v, id, 30, clean);
        c.properties.session_expiry_interval = Some(300);
        c
    } else {
        connect_packet(v, id, 30, false)
    }
}

/// MQTT 5 CONNECT with a Session Expiry Interval.
fn v5(id: &str, clean: bool, expiry: u32) -> Connect {
    let mut c = connect_packet(V5, id, 0, clean);
    c.properties.session_expiry_interval = Some(expiry).filter(|&e| e > 0);
    c
}

fn with_will(mut c: Connect, topic: &str, payload: &str, delay: Option<u32>) -> Connect {
    c.will = Some(Will {
        topic: ByteString::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: delay,
            ..Default::default()
        },
    });
    c
}

fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

fn msg(topic: &str, payload: &[u8], qos: QoS, pid: u16, retain: bool) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: ByteString::from(topic),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { pid },
        payload: Bytes::copy_from_slice(payload),
        properties: Default::default(),
    }
}

fn payloads(ps: &[Publish]) -> Vec<String> {
    ps.iter()
        .map(|p| String::from_utf8(p.payload.to_vec()).unwrap())
        .collect()
}

fn topics(ps: &[Publish]) -> Vec<String> {
    ps.iter().map(|p| p.topic.to_string()).collect()
}

fn disconnect_reasons(ps: &[Packet]) -> Vec<ReasonCode> {
    ps.iter()
        .filter_map(|p| match p {
            Packet::Disconnect(d) => Some(d.reason),
            _ => None,
        })
        .collect()
}

// ----------------------------------------------------------------------------------------------
// take-over
// ----------------------------------------------------------------------------------------------

#[test]
fn takeover_v5_old_connection_gets_disconnect_0x8e_then_close() {
    for (w_old, w_new) in [(0, 0), (0, 1)] {
        let mut net = Net::new(2);
        let (old, _) = net.online(w_old, v5("c", true, 300));
        let new = net.connect(w_new, v5("c", false, 300));
        net.settle();
        let seen = net.take(old);
        assert!(
            matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER),
            "{w_old}->{w_new}: {seen:?}"
        );
        assert!(net.is_closing(old), "{w_old}->{w_new}: old closed");
        assert_eq!(net.connack(new).code, ReasonCode::SUCCESS);
        assert!(!net.is_closing(new));
        assert_eq!(net.live_owners(), ["c"]);
    }
}

#[test]
fn takeover_v5_session_present_follows_clean_start_and_old_expiry() {
    // (old session expiry, new Clean Start, Session Present)
    let cases = [(300, false, true), (300, true, false), (0, false, false)];
    for (w_old, w_new) in [(0, 0), (0, 1)] {
        for (expiry, clean, present) in cases {
            let mut net = Net::new(2);
            let (_old, _) = net.online(w_old, v5("c", true, expiry));
            let new = net.connect(w_new, v5("c", clean, 300));
            net.settle();
            let ack = net.connack(new);
            assert_eq!(ack.code, ReasonCode::SUCCESS);
            assert_eq!(
                ack.session_present, present,
                "{w_old}->{w_new} old expiry {expiry}, Clean Start {clean}"
            );
        }
    }
}

#[test]
fn takeover_v311_session_present_follows_clean_session_and_old_gets_no_disconnect() {
    // (old Clean Session, new Clean Session, Session Present)
    let cases = [
        (false, false, true),
        (false, true, false),
        (true, false, false),
        (true, true, false),
    ];
    for (w_old, w_new) in [(0, 0), (0, 1)] {
        for (old_clean, new_clean, present) in cases {
            let mut net = Net::new(2);
            let (old, _) = net.online(w_old, connect_packet(V3, "c", 0, old_clean));
            let new = net.connect(w_new, connect_packet(V3, "c", 0, new_clean));
            net.settle();
            let what = format!("{w_old}->{w_new} clean {old_clean}->{new_clean}");
            assert!(net.take(old).is_empty(), "{what}: 3.1.1 has no DISCONNECT");
            assert!(net.is_closing(old), "{what}: old closed");
            assert_eq!(net.connack(new).session_present, present, "{what}");
        }
    }
}

#[test]
fn subscription_survives_takeover_to_another_worker() {
    let mut net = Net::new(3);
    let (old, _) = net.online(0, v5("s", true, 300));
    net.subscribe(old, 1, "t/#", QoS::AtLeastOnce);
    let (new, ack) = net.online(1, v5("s", false, 300));
    assert!(ack.session_present);
    net.take(old);
    let (p, _) = net.online(2, conn(V5, "p"));
    net.send_pub(p, msg("t/x", b"after", QoS::AtLeastOnce, 1, false));
    assert!(net.take(old).is_empty(), "nothing for the old connection");
    let got = net.publishes(new);
    assert_eq!(payloads(&got), ["after"]);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
    // The old worker no longer indexes the session: the message went only to worker 1.
    assert_eq!(net.posts_of("Publish"), [(2, 1)]);
}

#[test]
fn racing_connects_on_two_workers_the_later_claim_owns_the_client_id() {
    // Both claims are made before any mail is delivered; the mail is then delivered with the
    // old owner's worker first or last.
    for order in [[0, 2, 1], [2, 0, 1], [1, 2, 0]] {
        let mut net = Net::new(3);
        let (owner, _) = net.online(2, v5("c", true, 300));
        let first = net.connect(0, v5("c", false, 300));
        let second = net.connect(1, v5("c", false, 300));
        assert!(net.take(first).is_empty() && net.take(second).is_empty());
        for w in order {
            net.deliver_all_to(w);
        }
        net.settle();
        assert!(net.take(first).is_empty(), "{order:?}: no CONNACK, nothing");
        assert!(net.is_closing(first), "{order:?}: earlier claim closed");
        assert_eq!(
            disconnect_reasons(&net.take(owner)),
            [ReasonCode::SESSION_TAKEN_OVER]
        );
        assert!(net.is_closing(owner));
        let ack = net.connack(second);
        assert_eq!(ack.code, ReasonCode::SUCCESS, "{order:?}");
        assert!(ack.session_present, "{order:?}: the session passed along");
        assert!(!net.is_closing(second));
        assert_eq!(net.live_owners(), ["c"], "{order:?}: one live owner");
        assert_eq!(net.cores[1].live_owners(), ["c"], "{order:?}: on worker 1");
    }
}

/// The will of a connection taken over: (old CONNECT, new CONNECT) and whether it is published.
fn will_on_takeover(old: Connect, new: Connect, w_new: usize) -> usize {
    let mut net = Net::new(3);
    let (monitor, _) = net.online(2, connect_packet(V5, "monitor", 0, true));
    net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
    let (_old, _) = net.online(0, old);
    let (_new, _) = net.online(w_new, new);
    // Long after any Will Delay: a will that was not published at the take-over never is.
    net.tick_at(100_000);
    net.settle();
    net.publishes(monitor)
        .iter()
        .filter(|p| &p.payload[..] == b"gone")
        .count()
}

#[test]
fn will_on_takeover_published_at_once_for_v311() {
    for w_new in [0, 1] {
        for clean in [false, true] {
            let old = with_will(connect_packet(V3, "c", 0, false), "will/c", "gone", None);
            let new = connect_packet(V3, "c", 0, clean);
            assert_eq!(
                will_on_takeover(old, new, w_new),
                1,
                "{w_new} clean {clean}"
            );
        }
    }
}

#[test]
fn will_on_takeover_published_for_v5_will_delay_0() {
    for w_new in [0, 1] {
        let old = with_will(v5("c", true, 300), "will/c", "gone", Some(0));
        assert_eq!(will_on_takeover(old, v5("c", false, 300), w_new), 1);
    }
}

#[test]
fn will_on_takeover_published_for_new_clean_start_1() {
    for w_new in [0, 1] {
        let old = with_will(v5("c", true, 300), "will/c", "gone", Some(30));
        assert_eq!(will_on_takeover(old, v5("c", true, 300), w_new), 1);
    }
}

#[test]
fn will_on_takeover_published_for_old_session_expiry_0() {
    for w_new in [0, 1] {
        let old = with_will(v5("c", true, 0), "will/c", "gone", Some(30));
        assert_eq!(will_on_takeover(old, v5("c", false, 300), w_new), 1);
    }
}

#[test]
fn will_on_takeover_not_published_for_v5_will_delay_when_the_session_continues() {
    for w_new in [0, 1] {
        let old = with_will(v5("c", true, 300), "will/c", "gone", Some(30));
        assert_eq!(will_on_takeover(old, v5("c", false, 300), w_new), 0);
    }
}

/// A message routed while the session moves (between TakeOver and Handoff, and between
/// Handoff and the end of the cut-over) reaches the new connection exactly once, in order.
#[test]
fn publish_during_session_move_is_delivered_once_to_the_new_connection() {
    let mut net = Net::new(3);
    let (old, _) = net.online(0, v5("s", true, 300));
    net.subscribe(old, 1, "t", QoS::AtLeastOnce);
    let (p, _) = net.online(2, conn(V5, "p"));
    let new = net.connect(1, v5("s", false, 300));
    assert_eq!(net.pending(0), ["TakeOver"]);
    assert_eq!(net.deliver_next(0), Some("TakeOver"));
    assert_eq!(net.pending(1), ["Handoff"]);

    // Between TakeOver and Handoff: only the old worker indexes the session.
    net.send(
        p,
        &Packet::Publish(msg("t", b"m1", QoS::AtLeastOnce, 1, false)),
    );
    assert_eq!(net.pending(0), ["Publish"]);
    net.deliver_next(0);
    assert_eq!(net.pending(1), ["Handoff", "Forward"]);
    assert_eq!(net.deliver_next(1), Some("Handoff"));
    // (Filter: worker 1 indexed the session, for the other workers' views; PUBACK 0x10.)
    assert_eq!(net.pending(0), ["Filter", "Unforward"]);

    // Between Handoff and Unforward: both workers index the session.
    net.send(
        p,
        &Packet::Publish(msg("t", b"m2", QoS::AtLeastOnce, 2, false)),
    );
    assert_eq!(net.pending(0), ["Filter", "Unforward", "Publish"]);
    assert_eq!(net.pending(1), ["Forward", "Publish"]);
    net.settle();
    // Once the move is over, only the new owner's worker indexes the session.
    net.send(
        p,
        &Packet::Publish(msg("t", b"m3", QoS::AtLeastOnce, 3, false)),
    );
    assert_eq!(net.pending(0), Vec::<&str>::new());
    net.settle();

    assert_eq!(
        disconnect_reasons(&net.take(old)),
        [ReasonCode::SESSION_TAKEN_OVER]
    );
    assert!(net.connack(new).session_present);
    assert_eq!(payloads(&net.publishes(new)), ["m1", "m2", "m3"]);
}

/// A message both indexes match during the cut-over, reaching the new owner's index before
/// the previous owner forwards it, is delivered once (the forwarded copy replaces the held one).
#[test]
fn publish_matched_by_both_indexes_during_the_cut_over_is_delivered_once() {
    let mut net = Net::new(3);
    let (old, _) = net.online(0, v5("s", true, 300));
    net.subscribe(old, 1, "t", QoS::AtLeastOnce);
    let (p, _) = net.online(2, conn(V5, "p"));
    let new = net.connect(1, v5("s", false, 300));
    assert_eq!(net.deliver_next(0), Some("TakeOver"));
    // Worker 1 indexes the session; its Unforward is not posted yet when the PUBLISH comes.
    assert_eq!(net.deliver_next_deferred(1), Some("Handoff"));
    net.send(
        p,
        &Packet::Publish(msg("t", b"m", QoS::AtLeastOnce, 1, false)),
    );
    assert_eq!(net.pending(0), ["Publish"]);
    assert_eq!(net.pending(1), ["Publish"]);
    net.execute(1);
    assert_eq!(net.pending(0), ["Publish", "Filter", "Unforward"]);
    // The new owner holds its own match first; then the previous owner's forward arrives.
    assert_eq!(net.deliver_next(1), Some("Publish"));
    assert_eq!(net.deliver_next(0), Some("Publish"));
    assert_eq!(net.pending(1), ["Forward"]);
    net.settle();
    assert!(net.connack(new).session_present);
    assert_eq!(payloads(&net.publishes(new)), ["m"], "once");
    assert_eq!(
        disconnect_reasons(&net.take(old)),
        [ReasonCode::SESSION_TAKEN_OVER]
    );
}

// ----------------------------------------------------------------------------------------------
// routing
// ----------------------------------------------------------------------------------------------

#[test]
fn publish_on_one_worker_reaches_a_subscriber_on_another_via_publish_mail() {
    let mut net = Net::new(2);
    let (s, _) = net.online(1, conn(V5, "s"));
    net.subscribe(s, 1, "a/b", QoS::AtLeastOnce);
    let (p, _) = net.online(0, conn(V5, "p"));
    net.send(
        p,
        &Packet::Publish(msg("a/b", b"x", QoS::AtLeastOnce, 1, false)),
    );
    assert_eq!(net.pending(1), ["Publish"]);
    assert!(net.take(s).is_empty(), "not before the mail is delivered");
    net.settle();
    let got = net.publishes(s);
    assert_eq!(payloads(&got), ["x"]);
    assert_eq!(got[0].qos, QoS::AtLeastOnce);
}

#[test]
fn overlapping_subscriptions_give_one_copy_at_the_highest_qos() {
    for (w_sub, w_pub) in [(0, 0), (1, 0)] {
        let mut net = Net::new(2);
        let (s, _) = net.online(w_sub, conn(V5, "s"));
        net.sub_with(s, 1, &[("o/#", opts(QoS::AtMostOnce))], Some(1));
        net.sub_with(s, 2, &[("o/+", opts(QoS::ExactlyOnce))], Some(2));
        net.sub_with(s, 3, &[("o/x", opts(QoS::AtLeastOnce))], Some(3));
        let (p, _) = net.online(w_pub, conn(V5, "p"));
        net.send_pub(p, msg("o/x", b"a", QoS::ExactlyOnce, 1, false));
        let got = net.publishes(s);
        assert_eq!(payloads(&got), ["a"], "one copy");
        assert_eq!(got[0].qos, QoS::ExactlyOnce, "highest granted QoS");
        let mut ids = got[0].properties.subscription_identifiers.clone();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3], "every matching identifier");
    }
}

#[test]
fn no_local_skips_only_the_publishers_own_messages() {
    let mut net = Net::new(2);
    let nl = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..Default::default()
    };
    let (a, _) = net.online(0, conn(V5, "a"));
    net.sub_with(a, 1, &[("nl/#", nl)], None);
    let (b, _) = net.online(1, conn(V5, "b"));
    net.sub_with(b, 1, &[("nl/#", nl)], None);
    net.send_pub(a, msg("nl/x", b"from-a", QoS::AtLeastOnce, 1, false));
    net.send_pub(b, msg("nl/x", b"from-b", QoS::AtLeastOnce, 1, false));
    assert_eq!(payloads(&net.publishes(a)), ["from-b"]);
    assert_eq!(payloads(&net.publishes(b)), ["from-a"]);
}

#[test]
fn a_worker_without_subscriptions_gets_no_publish_mail() {
    let mut net = Net::new(3);
    let (p, _) = net.online(0, conn(V5, "p"));
    let (idle, _) = net.online(2, conn(V5, "idle"));
    net.send_pub(p, msg("t", b"nobody", QoS::AtLeastOnce, 1, false));
    assert_eq!(net.posts_of("Publish"), [], "no subscriber anywhere");
    let (s, _) = net.online(1, conn(V5, "s"));
    net.subscribe(s, 1, "t", QoS::AtMostOnce);
    net.send_pub(p, msg("t", b"one", QoS::AtLeastOnce, 2, false));
    assert_eq!(
        net.posts_of("Publish"),
        [(0, 1)],
        "only worker 1 subscribes"
    );
    assert_eq!(payloads(&net.publishes(s)), ["one"]);
    assert!(net.take(idle).is_empty());
}

// ----------------------------------------------------------------------------------------------
// keep-alive
// ----------------------------------------------------------------------------------------------

/// A monitor of `will/#` on worker 1 and a client with keep-alive 10 s and a will on worker 0.
fn keep_alive_setup(v: ProtocolVersion) -> (Net, C, C) {
    let mut net = Net::new(2);
    let (monitor, _) = net.online(1, connect_packet(V5, "monitor", 0, true));
    net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
    let c = with_will(connect_packet(v, "ka", 10, true), "will/ka", "gone", None);
    let (c, _) = net.online(0, c);
    (net, c, monitor)
}

#[test]
fn keep_alive_silence_for_one_and_a_half_intervals_closes_and_publishes_the_will() {
    for v in [V3, V5] {
        let (mut net, c, monitor) = keep_alive_setup(v);
        net.tick_at(14_900);
        assert!(!net.is_closing(c), "{v:?}: open before 15 s");
        net.tick_at(15_100);
        assert!(net.is_closing(c), "{v:?}: closed after 15 s");
        let seen = net.take(c);
        if v.is_v5() {
            assert_eq!(
                disconnect_reasons(&seen),
                [ReasonCode::KEEP_ALIVE_TIMEOUT],
                "{seen:?}"
            );
        } else {
            assert!(seen.is_empty(), "{seen:?}");
        }
        net.settle();
        assert_eq!(
            payloads(&net.publishes(monitor)),
            ["gone"],
            "{v:?}: the will"
        );
    }
}

#[test]
fn keep_alive_is_reset_by_bytes_from_the_client() {
    for v in [V3, V5] {
        let (mut net, c, _) = keep_alive_setup(v);
        net.tick_at(10_000);
        net.send(c, &Packet::PingReq);
        assert!(matches!(net.take(c).as_slice(), [Packet::PingResp]));
        net.tick_at(15_100);
        assert!(!net.is_closing(c), "{v:?}: the PINGREQ reset the timer");
        // A partial packet counts too (one byte of a PINGREQ).
        net.tick_at(20_000);
        net.bytes(c, &[0xC0]);
        net.tick_at(34_900);
        assert!(
            !net.is_closing(c),
            "{v:?}: the partial packet reset the timer"
        );
        net.tick_at(35_100);
        assert!(net.is_closing(c), "{v:?}: 15 s after the last byte");
    }
}

#[test]
fn keep_alive_is_not_reset_by_what_the_broker_sends() {
    for v in [V3, V5] {
        let (mut net, c, _) = keep_alive_setup(v);
        net.subscribe(c, 1, "t", QoS::AtMostOnce);
        let (p, _) = net.online(1, connect_packet(V5, "p", 0, true));
        for (k, at) in [5_000u64, 10_000, 14_000].into_iter().enumerate() {
            net.tick_at(at);
            net.send_pub(p, msg("t", &[b'0' + k as u8], QoS::AtMostOnce, 0, false));
        }
        assert_eq!(payloads(&net.publishes(c)), ["0", "1", "2"]);
        net.tick_at(15_100);
        assert!(net.is_closing(c), "{v:?}: deliveries do not keep it alive");
    }
}

// ----------------------------------------------------------------------------------------------
// session rules (ported from tests/delivery.rs: same names, same assertions)
// ----------------------------------------------------------------------------------------------

#[test]
fn unacknowledged_deliveries_resent_with_dup_on_resume_both_versions() {
    let mut net = Net::new(2);
    for v in [V3, V5] {
        let id = format!("dup-{v:?}");
        let (s, _) = net.online(0, persistent(v, &id, true));
        net.subscribe(s, 1, "dup/#", QoS::ExactlyOnce);
        let (p, _) = net.online(1, conn(v, &format!("dup-p-{v:?}")));
        net.send_pub(p, msg("dup/1", b"q1", QoS::AtLeastOnce, 1, false));
        net.send_pub(p, msg("dup/2", b"q2-rec", QoS::ExactlyOnce, 2, false));
        net.send_pub(p, msg("dup/3", b"q2-none", QoS::ExactlyOnce, 3, false));
        let a = net.next_publish(s);
        let r = net.next_publish(s);
        let n = net.next_publish(s);
        assert_eq!(
            payloads(&[a.clone(), r.clone(), n.clone()]),
            ["q1", "q2-rec", "q2-none"]
        );
        net.send(s, &Packet::PubRec(PubResp::new(r.packet_id)));
        assert!(matches!(net.next(s), Packet::PubRel(x) if x.packet_id == r.packet_id));
        net.closed(s);
        // Resume on the other worker: PUBLISH DUP=1 (same ids) and PUBREL, in original order.
        let (s, ack) = net.online(1, persistent(v, &id, false));
        assert!(ack.session_present, "{v:?}");
        let x = net.next_publish(s);
        assert!(x.dup && x.packet_id == a.packet_id && &x.payload[..] == b"q1");
        assert_eq!(x.qos, QoS::AtLeastOnce);
        assert!(matches!(net.next(s), Packet::PubRel(y) if y.packet_id == r.packet_id));
        let z = net.next_publish(s);
        assert!(z.dup && z.packet_id == n.packet_id && &z.payload[..] == b"q2-none");
        assert_eq!(z.qos, QoS::ExactlyOnce);
        net.send(s, &Packet::PubAck(PubResp::new(x.packet_id)));
        net.send(s, &Packet::PubComp(PubResp::new(r.packet_id)));
        net.send(s, &Packet::PubRec(PubResp::new(z.packet_id)));
        assert!(matches!(net.next(s), Packet::PubRel(y) if y.packet_id == z.packet_id));
        net.send(s, &Packet::PubComp(PubResp::new(z.packet_id)));
        net.mark(p, "dup/m");
        assert!(net.until_marker(s).is_empty());
    }
}

/// A client's QoS 2 receiver: delivers a message to the application on first PUBLISH of an id,
/// and not again until PUBREL released that id (MQTT 5 4.3.3 method B).
#[derive(Default)]
struct Qos2Receiver {
    unreleased: std::collections::HashSet<u16>,
    app: Vec<String>,
}

impl Qos2Receiver {
    fn on_publish(&mut self, p: &Publish) {
        assert_eq!(p.qos, QoS::ExactlyOnce);
        if self.unreleased.insert(p.packet_id) {
            self.app
                .push(String::from_utf8(p.payload.to_vec()).unwrap());
        } else {
            assert!(p.dup, "a repeated id must have DUP=1");
        }
    }
}

#[test]
fn qos2_delivery_interrupted_by_takeover_resumes_without_loss_or_duplication() {
    let mut net = Net::new(2);
    for v in [V3, V5] {
        for (w_old, w_new) in [(0usize, 1usize), (1, 1)] {
            let id = format!("tq2o-{v:?}-{w_old}{w_new}");
            let topic = format!("tq2o/{v:?}/{w_old}{w_new}");
            let (old, _) = net.online(w_old, persistent(v, &id, true));
            net.subscribe(old, 1, &topic, QoS::ExactlyOnce);
            let (p, _) = net.online(1 - w_old, conn(v, &format!("{id}-p")));
            net.send_pub(p, msg(&topic, b"m1", QoS::ExactlyOnce, 1, false));
            let mut app = Qos2Receiver::default();
            // m1: PUBREC sent, PUBREL received, PUBCOMP not sent. m2: received, nothing sent.
            let m1 = net.next_publish(old);
            app.on_publish(&m1);
            net.send(old, &Packet::PubRec(PubResp::new(m1.packet_id)));
            assert!(matches!(net.next(old), Packet::PubRel(r) if r.packet_id == m1.packet_id));
            net.send_pub(p, msg(&topic, b"m2", QoS::ExactlyOnce, 2, false));
            let m2 = net.next_publish(old);
            app.on_publish(&m2);

            let (new, ack) = net.online(w_new, persistent(v, &id, false));
            assert!(ack.session_present);
            let seen = net.take(old);
            assert!(net.is_closing(old), "old connection closed");
            if v.is_v5() {
                assert!(matches!(
                    seen.as_slice(),
                    [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER
                ));
            }
            // The flow continues where it stopped, in order.
            assert!(matches!(net.next(new), Packet::PubRel(r) if r.packet_id == m1.packet_id));
            net.send(new, &Packet::PubComp(PubResp::new(m1.packet_id)));
            app.unreleased.remove(&m1.packet_id);
            let again = net.next_publish(new);
            assert_eq!(again.packet_id, m2.packet_id);
            assert!(again.dup);
            app.on_publish(&again);
            net.send(new, &Packet::PubRec(PubResp::new(again.packet_id)));
            assert!(matches!(net.next(new), Packet::PubRel(r) if r.packet_id == m2.packet_id));
            net.send(new, &Packet::PubComp(PubResp::new(m2.packet_id)));
            app.unreleased.remove(&m2.packet_id);
            net.send_pub(p, msg(&topic, b"m3", QoS::ExactlyOnce, 3, false));
            let m3 = net.next_publish(new);
            app.on_publish(&m3);
            assert_eq!(app.app, ["m1", "m2", "m3"], "{v:?} {w_old}->{w_new}");
        }
    }
}

#[test]
fn qos2_publish_interrupted_by_takeover_is_routed_exactly_once() {
    let mut net = Net::new(2);
    for v in [V3, V5] {
        let id = format!("tq2i-{v:?}");
        let topic = format!("tq2i/{v:?}");
        let (s, _) = net.online(1, conn(v, &format!("{id}-s")));
        net.subscribe(s, 1, &topic, QoS::AtLeastOnce);
        let (a, _) = net.online(0, persistent(v, &id, true));
        let m = msg(&topic, b"exactly-once", QoS::ExactlyOnce, 9, false);
        net.send(a, &Packet::Publish(m.clone()));
        net.settle();
        assert!(matches!(net.next(a), Packet::PubRec(r) if r.packet_id == 9));
        // Taken over on the other worker before PUBREL.
        let (a2, ack) = net.online(1, persistent(v, &id, false));
        assert!(ack.session_present);
        // A client that did not see the PUBREC sends the PUBLISH again with DUP=1.
        let mut again = m.clone();
        again.dup = true;
        net.send(a2, &Packet::Publish(again));
        net.settle();
        assert!(matches!(net.next(a2), Packet::PubRec(r) if r.packet_id == 9));
        net.send(a2, &Packet::PubRel(PubResp::new(9)));
        match net.next(a2) {
            Packet::PubComp(r) => {
                assert_eq!(r.packet_id, 9);
                assert_eq!(
                    r.reason,
                    ReasonCode::SUCCESS,
                    "the id was known to the session"
                );
            }
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
        net.mark(a2, &topic);
        let got = net.until_marker(s);
        assert_eq!(payloads(&got), ["exactly-once"], "{v:?}");
    }
}

#[test]
fn message_expiry_counts_down_while_queued_or_retained() {
    let mut net = Net::new(2);
    let (s, _) = net.online(0, persistent(V5, "exp-s", true));
    net.sub_with(s, 1, &[("exp/#", opts(QoS::AtLeastOnce))], None);
    net.send(s, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    net.settle();
    assert!(net.is_closing(s));
    let (p, _) = net.online(1, conn(V5, "exp-p"));
    let with_expiry = |topic: &str, secs: Option<u32>, retain: bool, pid: u16| {
        let mut m = msg(topic, topic.as_bytes(), QoS::AtLeastOnce, pid, retain);
        m.properties.message_expiry_interval = secs;
        m
    };
    net.send_pub(p, with_expiry("exp/short", Some(1), false, 1));
    net.send_pub(p, with_expiry("exp/long", Some(30), false, 2));
    net.send_pub(p, with_expiry("exp/none", None, false, 3));
    net.send_pub(p, with_expiry("expr/short", Some(1), true, 4));
    net.send_pub(p, with_expiry("expr/long", Some(30), true, 5));
    // In flight, unacknowledged, when the connection goes.
    let (i, _) = net.online(0, persistent(V5, "exp-i", true));
    net.sub_with(i, 1, &[("expi/#", opts(QoS::AtLeastOnce))], None);
    net.send_pub(p, with_expiry("expi/x", Some(30), false, 6));
    let first = net.next_publish(i);
    assert_eq!(first.properties.message_expiry_interval, Some(30));
    net.closed(i);
    // Let the 1-second messages expire (the fake clock; the TCP test slept 1.3 s).
    net.advance(Duration::from_millis(1300));
    let (i, ack) = net.online(1, persistent(V5, "exp-i", false));
    assert!(ack.session_present);
    let again = net.next_publish(i);
    assert!(again.dup && again.packet_id == first.packet_id);
    let left = again.properties.message_expiry_interval.unwrap();
    assert!(
        (27..=29).contains(&left),
        "resent with the time left: {left}"
    );
    let (s, ack) = net.online(1, persistent(V5, "exp-s", false));
    assert!(ack.session_present);
    net.mark(p, "exp/m");
    let got = net.until_marker(s);
    assert_eq!(
        topics(&got),
        ["exp/long", "exp/none"],
        "expired one dropped"
    );
    let left = got[0].properties.message_expiry_interval.unwrap();
    assert!(
        (27..=29).contains(&left),
        "reduced by the time queued: {left}"
    );
    assert_eq!(got[1].properties.message_expiry_interval, None);

    let (r, _) = net.online(0, conn(V5, "exp-r"));
    net.sub_with(r, 1, &[("expr/#", opts(QoS::AtLeastOnce))], None);
    net.mark(p, "expr/m");
    let got = net.until_marker(r);
    assert_eq!(
        topics(&got),
        ["expr/long"],
        "expired retained not delivered"
    );
    let left = got[0].properties.message_expiry_interval.unwrap();
    assert!((27..=29).contains(&left), "retained expiry reduced: {left}");
}

#[test]
fn offline_queue_is_bounded_and_drops_are_counted() {
    let mut net = Net::with(2, |c| c.max_queued_messages = 5);
    for v in [V3, V5] {
        let id = format!("oq-{v:?}");
        let (s, _) = net.online(0, persistent(v, &id, true));
        net.subscribe(s, 1, &format!("oq/{v:?}/#"), QoS::AtLeastOnce);
        net.send(s, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
        net.settle();
        assert!(net.is_closing(s));
        let drops_before = net.metric("queue_drops");
        let (p, _) = net.online(1, conn(v, &format!("oq-p-{v:?}")));
        for k in 0..8u16 {
            net.send_pub(
                p,
                msg(
                    &format!("oq/{v:?}/t"),
                    k.to_string().as_bytes(),
                    QoS::AtLeastOnce,
                    k + 1,
                    false,
                ),
            );
        }
        // QoS 0 is not queued for offline clients (queue_qos0_offline = false).
        net.send_pub(
            p,
            msg(&format!("oq/{v:?}/t"), b"q0", QoS::AtMostOnce, 0, false),
        );
        // Resume on the publisher's worker: the take-over follows the queued messages.
        let (s, ack) = net.online(1, persistent(v, &id, false));
        assert!(ack.session_present);
        net.mark(p, &format!("oq/{v:?}/t"));
        let got = net.until_marker(s);
        assert_eq!(
            payloads(&got),
            ["0", "1", "2", "3", "4"],
            "{v:?}: oldest kept"
        );
        assert_eq!(
            net.metric("queue_drops") - drops_before,
            3,
            "{v:?}: drops counted"
        );
    }
}

#[test]
fn offline_queue_byte_bound_and_qos0_policy() {
    // 4 messages of 4 + 5 bytes (topic + payload) fit in 40 bytes; the 5th does not.
    let mut net = Net::with(2, |c| {
        c.max_queued_bytes = 40;
        c.queue_qos0_offline = true;
    });
    let (s, _) = net.online(0, persistent(V5, "qb-s", true));
    net.sub_with(s, 1, &[("qb/#", opts(QoS::AtLeastOnce))], None);
    net.send(s, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    net.settle();
    assert!(net.is_closing(s));
    let before = net.metric("queue_drops");
    let (p, _) = net.online(1, conn(V5, "qb-p"));
    for k in 0..6u16 {
        // QoS 0 is queued too (queue_qos0_offline = true).
        let qos = if k % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        net.send_pub(
            p,
            msg("qb/t", format!("pay-{k}").as_bytes(), qos, k + 1, false),
        );
    }
    let (s, ack) = net.online(1, persistent(V5, "qb-s", false));
    assert!(ack.session_present);
    net.mark(p, "qb/m");
    let got = net.until_marker(s);
    assert_eq!(payloads(&got), ["pay-0", "pay-1", "pay-2", "pay-3"]);
    assert_eq!(got[0].qos, QoS::AtMostOnce);
    assert_eq!(got[1].qos, QoS::AtLeastOnce);
    assert_eq!(net.metric("queue_drops") - before, 2);
}

#[test]
fn resumed_session_queue_is_drained_within_receive_maximum() {
    let mut net = Net::new(2);
    let (s, _) = net.online(0, persistent(V5, "rq-s", true));
    net.sub_with(s, 1, &[("rq/#", opts(QoS::AtLeastOnce))], None);
    net.send(s, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    net.settle();
    assert!(net.is_closing(s));
    let (p, _) = net.online(1, conn(V5, "rq-p"));
    for k in 0..5u16 {
        net.send_pub(
            p,
            msg(
                "rq/t",
                k.to_string().as_bytes(),
                QoS::AtLeastOnce,
                k + 1,
                false,
            ),
        );
    }
    let mut c = persistent(V5, "rq-s", false);
    c.properties.receive_maximum = Some(2);
    let (s, ack) = net.online(1, c);
    assert!(ack.session_present);
    let mut got = Vec::new();
    while got.len() < 5 {
        net.mark(p, "rq/m");
        let mut window = Vec::new();
        loop {
            let x = net.next_publish(s);
            if &x.payload[..] == b"MARK" {
                break;
            }
            window.push(x);
        }
        assert!(
            !window.is_empty() && window.len() <= 2,
            "within Receive Maximum 2: {}",
            window.len()
        );
        for x in &window {
            net.send(s, &Packet::PubAck(PubResp::new(x.packet_id)));
        }
        got.extend(window);
    }
    assert_eq!(payloads(&got), ["0", "1", "2", "3", "4"]);
}

#[test]
fn resend_on_resume_respects_a_smaller_receive_maximum() {
    let mut net = Net::new(2);
    let (s, _) = net.online(0, persistent(V5, "rr-s", true));
    net.sub_with(s, 1, &[("rr/#", opts(QoS::AtLeastOnce))], None);
    let (p, _) = net.online(1, conn(V5, "rr-p"));
    for k in 0..4u16 {
        net.send_pub(
            p,
            msg(
                "rr/t",
                k.to_string().as_bytes(),
                QoS::AtLeastOnce,
                k + 1,
                false,
            ),
        );
    }
    for _ in 0..4 {
        net.next_publish(s);
    }
    net.closed(s);
    let mut c = persistent(V5, "rr-s", false);
    c.properties.receive_maximum = Some(2);
    let (s, ack) = net.online(1, c);
    assert!(ack.session_present);
    net.mark(p, "rr/m");
    let mut first = Vec::new();
    loop {
        let x = net.next_publish(s);
        if &x.payload[..] == b"MARK" {
            break;
        }
        first.push(x);
    }
    assert_eq!(
        first.len(),
        2,
        "no more than the new Receive Maximum resent at once"
    );
    let mut got = first.clone();
    for x in &first {
        assert!(x.dup);
        net.send(s, &Packet::PubAck(PubResp::new(x.packet_id)));
    }
    while got.len() < 4 {
        let x = net.next_publish(s);
        net.send(s, &Packet::PubAck(PubResp::new(x.packet_id)));
        got.push(x);
    }
    assert_eq!(payloads(&got), ["0", "1", "2", "3"]);
}

// ----------------------------------------------------------------------------------------------
// slow consumers (overflow.rs): QoS 0 beyond the socket waits in the client's QoS 0 queue
// ----------------------------------------------------------------------------------------------

/// With `send_queue_limit` 200 B the socket takes QoS 0 while it holds less than 100 B: nine
/// PUBLISHes of `msg("sc/t", "mNNN")` (12 B each on the wire, 8 B of topic and payload).
const SOCKET_TAKES: usize = 9;

/// A subscriber of `sc/#` on worker 0 that stopped reading, and a publisher beside it.
fn stalled_pair(net: &mut Net, id: &str) -> (C, C) {
    let (s, _) = net.online(0, conn(V3, id));
    net.subscribe(s, 1, "sc/#", QoS::AtMostOnce);
    net.stall(s);
    let (p, _) = net.online(0, conn(V3, &format!("{id}-pub")));
    (s, p)
}

/// Publish `mNNN` for NNN in `range` on `sc/t` at QoS 0, checking after each that the QoS 0
/// queues hold at most `max_msgs` messages and `max_bytes` bytes.
fn flood(net: &mut Net, p: C, range: std::ops::Range<usize>, max_msgs: u64, max_bytes: u64) {
    for k in range {
        net.send_pub(
            p,
            msg(
                "sc/t",
                format!("m{k:03}").as_bytes(),
                QoS::AtMostOnce,
                0,
                false,
            ),
        );
        assert!(
            net.metric("qos0_queued_messages") <= max_msgs,
            "after m{k:03}"
        );
        assert!(
            net.metric("qos0_queued_bytes") <= max_bytes,
            "after m{k:03}"
        );
    }
}

fn names(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|k| format!("m{k:03}")).collect()
}

#[test]
fn qos0_beyond_the_socket_waits_up_to_the_message_limit_then_the_newest_is_dropped() {
    let mut net = Net::with(1, |c| {
        c.send_queue_limit = 200;
        c.max_queued_qos0_messages = 10;
    });
    let (s, p) = stalled_pair(&mut net, "sc-n");
    flood(&mut net, p, 0..100, 10, 80);
    assert_eq!(net.metric("qos0_queued_messages"), 10);
    let dropped = (100 - SOCKET_TAKES - 10) as u64;
    assert_eq!(net.metric("qos0_drops_queue_messages"), dropped);
    assert_eq!(net.metric("slow_consumer_drops"), dropped);
    assert_eq!(net.metric("qos0_drops_queue_bytes"), 0);
    // The client reads again: the socket's nine, then the queue's ten, in order.
    net.unstall(s);
    let got = net.publishes(s);
    assert_eq!(payloads(&got), names(0..SOCKET_TAKES + 10));
    assert_eq!(net.metric("qos0_queued_messages"), 0);
    assert_eq!(net.metric("qos0_queued_bytes"), 0);
    // Caught up: the next message goes straight out.
    flood(&mut net, p, 100..101, 0, 0);
    assert_eq!(payloads(&net.publishes(s)), ["m100"]);
}

#[test]
fn qos0_overflow_drop_oldest_keeps_the_newest_within_the_byte_limit() {
    // Topic and payload are 8 B a message: five fit in 40 B.
    let mut net = Net::with(1, |c| {
        c.send_queue_limit = 200;
        c.max_queued_qos0_bytes = 40;
        c.qos0_overflow = crate::config::Qos0Overflow::DropOldest;
    });
    let (s, p) = stalled_pair(&mut net, "sc-b");
    flood(&mut net, p, 0..100, 5, 40);
    assert_eq!(net.metric("qos0_queued_bytes"), 40);
    let dropped = (100 - SOCKET_TAKES - 5) as u64;
    assert_eq!(net.metric("qos0_drops_queue_bytes"), dropped);
    assert_eq!(net.metric("slow_consumer_drops"), dropped);
    net.unstall(s);
    let got = net.publishes(s);
    let mut want = names(0..SOCKET_TAKES);
    want.extend(names(95..100));
    assert_eq!(payloads(&got), want, "the socket's, then the five newest");
}

#[test]
fn the_qos0_queues_of_a_worker_share_its_byte_limit() {
    // Room for ten messages in the whole worker (8 B of topic and payload and a queue entry
    // each): five for each of two stalled subscribers.
    let mut net = Net::with(1, |c| {
        c.send_queue_limit = 200;
        c.worker_qos0_queue_limit = 10 * (8 + super::overflow::QOS0_ENTRY);
    });
    let (a, p) = stalled_pair(&mut net, "sc-wa");
    let (b, _) = net.online(0, conn(V3, "sc-wb"));
    net.subscribe(b, 1, "sc/#", QoS::AtMostOnce);
    net.stall(b);
    flood(&mut net, p, 0..50, 10, 80);
    let dropped = 2 * (50 - SOCKET_TAKES - 5) as u64;
    assert_eq!(net.metric("qos0_drops_worker_bytes"), dropped);
    assert_eq!(net.metric("slow_consumer_drops"), dropped);
    for c in [a, b] {
        net.unstall(c);
        assert_eq!(payloads(&net.publishes(c)), names(0..SOCKET_TAKES + 5));
    }
}

#[test]
fn qos0_left_waiting_at_disconnect_goes_the_way_of_qos0_for_an_offline_session() {
    let mut net = Net::with(1, |c| {
        c.send_queue_limit = 200;
        c.queue_qos0_offline = true;
    });
    // A persistent session keeps them (queue_qos0_offline) and gets them at resume...
    let (s, _) = net.online(0, persistent(V3, "sc-kept", true));
    net.subscribe(s, 1, "sc/#", QoS::AtMostOnce);
    net.stall(s);
    let (p, _) = net.online(0, conn(V3, "sc-kept-pub"));
    flood(&mut net, p, 0..20, 11, 88);
    net.closed(s);
    assert_eq!(net.metric("qos0_queued_messages"), 0);
    let (s, ack) = net.online(0, persistent(V3, "sc-kept", false));
    assert!(ack.session_present);
    net.mark(p, "sc/t");
    assert_eq!(payloads(&net.until_marker(s)), names(SOCKET_TAKES..20));
    // ... a session that ends with its connection drops them, counted.
    let (c, _) = net.online(0, conn(V3, "sc-clean"));
    net.subscribe(c, 1, "sc/#", QoS::AtMostOnce);
    net.stall(c);
    net.take(s);
    flood(&mut net, p, 20..40, 22, 176);
    net.closed(c);
    assert_eq!(net.metric("qos0_drops_offline"), 11);
    assert_eq!(net.metric("slow_consumer_drops"), 0);
}

#[test]
fn qos0_waiting_when_the_session_is_taken_over_goes_with_it() {
    // The session moves to a connection on another worker; with queue_qos0_offline its
    // waiting QoS 0 travel in its queue and reach the new connection.
    let mut net = Net::with(2, |c| {
        c.send_queue_limit = 200;
        c.queue_qos0_offline = true;
    });
    let (s, _) = net.online(0, persistent(V3, "sc-moved", true));
    net.subscribe(s, 1, "sc/#", QoS::AtMostOnce);
    net.stall(s);
    let (p, _) = net.online(0, conn(V3, "sc-moved-pub"));
    flood(&mut net, p, 0..20, 11, 88);
    let (s2, ack) = net.online(1, persistent(V3, "sc-moved", false));
    assert!(ack.session_present);
    assert!(net.is_closing(s), "taken over");
    assert_eq!(net.metric("qos0_queued_messages"), 0);
    net.mark(p, "sc/t");
    assert_eq!(payloads(&net.until_marker(s2)), names(SOCKET_TAKES..20));
    assert_eq!(net.metric("qos0_drops_offline"), 0);
}

// ----------------------------------------------------------------------------------------------
// take-over races with the end of a connection, offline sessions
// ----------------------------------------------------------------------------------------------

#[test]
fn takeover_of_a_connection_still_closing_resumes_its_session() {
    for w_new in [0, 1] {
        let mut net = Net::new(2);
        let (old, _) = net.online(0, v5("c", true, 300));
        net.subscribe(old, 1, "t", QoS::AtLeastOnce);
        net.send(
            old,
            &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)),
        );
        assert!(net.is_closing(old));
        // The new CONNECT and its take-over come before the close completes.
        let new = net.connect(w_new, v5("c", false, 300));
        net.deliver_all_to(0);
        net.deliver_all_to(1);
        net.settle();
        assert!(net.connack(new).session_present, "w_new {w_new}");
        let (p, _) = net.online(1, conn(V5, "p"));
        net.send_pub(p, msg("t", b"x", QoS::AtLeastOnce, 1, false));
        assert_eq!(payloads(&net.publishes(new)), ["x"], "w_new {w_new}");
        assert_eq!(net.live_owners(), ["c", "p"]);
    }
}

#[test]
fn owner_lost_before_its_takeover_arrives_hands_over_the_session_and_publishes_the_will_once() {
    let mut net = Net::new(3);
    let (monitor, _) = net.online(2, connect_packet(V5, "monitor", 0, true));
    net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
    let (old, _) = net.online(0, with_will(v5("c", true, 300), "will/c", "gone", None));
    net.subscribe(old, 1, "t", QoS::AtLeastOnce);
    let new = net.connect(1, v5("c", false, 300));
    // The network of the old connection goes before the TakeOver reaches worker 0.
    net.closed(old);
    net.settle();
    assert!(net.connack(new).session_present);
    assert_eq!(
        payloads(&net.publishes(monitor)),
        ["gone"],
        "the will, once"
    );
    let (p, _) = net.online(2, conn(V5, "p"));
    net.send_pub(p, msg("t", b"x", QoS::AtLeastOnce, 1, false));
    assert_eq!(payloads(&net.publishes(new)), ["x"]);
}

#[test]
fn session_is_kept_offline_when_the_claimant_dies_before_the_handoff() {
    for w_new in [0, 1] {
        let mut net = Net::new(3);
        let (old, _) = net.online(0, v5("c", true, 300));
        net.subscribe(old, 1, "t", QoS::AtLeastOnce);
        let new = net.connect(w_new, v5("c", false, 300));
        net.closed(new);
        net.settle();
        let (p, _) = net.online(2, conn(V5, "p"));
        net.send_pub(p, msg("t", b"queued", QoS::AtLeastOnce, 1, false));
        let (third, ack) = net.online(1, v5("c", false, 300));
        assert!(ack.session_present, "w_new {w_new}");
        assert_eq!(payloads(&net.publishes(third)), ["queued"], "w_new {w_new}");
    }
}

#[test]
fn delayed_will_of_an_offline_session_cancelled_by_resume_published_by_clean_start() {
    for w_new in [0, 1] {
        for (clean, wills) in [(false, 0), (true, 1)] {
            let mut net = Net::new(3);
            let (monitor, _) = net.online(2, connect_packet(V5, "monitor", 0, true));
            net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
            let old = with_will(v5("c", true, 300), "will/c", "gone", Some(30));
            let (old, _) = net.online(0, old);
            net.closed(old);
            net.tick_at(10_000);
            net.settle();
            assert!(net.publishes(monitor).is_empty(), "delayed");
            let (new, ack) = net.online(w_new, v5("c", clean, 300));
            assert_eq!(ack.session_present, !clean);
            net.tick_at(100_000);
            net.settle();
            assert_eq!(
                net.publishes(monitor).len(),
                wills,
                "w_new {w_new} Clean Start {clean}"
            );
            assert!(!net.is_closing(new));
        }
    }
}

#[test]
fn delayed_will_is_published_when_its_delay_elapses() {
    let mut net = Net::new(2);
    let (monitor, _) = net.online(1, connect_packet(V5, "monitor", 0, true));
    net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
    let old = with_will(v5("c", true, 300), "will/c", "gone", Some(10));
    let (old, _) = net.online(0, old);
    net.closed(old);
    net.tick_at(9_900);
    net.settle();
    assert!(net.publishes(monitor).is_empty(), "not before 10 s");
    net.tick_at(10_100);
    net.settle();
    assert_eq!(payloads(&net.publishes(monitor)), ["gone"]);
}

#[test]
fn offline_session_expires_after_its_session_expiry_interval() {
    let mut net = Net::new(2);
    let (c, _) = net.online(0, v5("c", true, 20));
    net.closed(c);
    net.tick_at(19_900);
    let (c, ack) = net.online(1, v5("c", false, 20));
    assert!(ack.session_present, "kept until 20 s");
    net.closed(c);
    net.tick_at(39_800);
    net.tick_at(40_100);
    let (_c, ack) = net.online(0, v5("c", false, 20));
    assert!(
        !ack.session_present,
        "expired 20 s after the second connection ended"
    );
    assert_eq!(
        net.posts_of("TakeOver"),
        [(1, 0)],
        "and its client id released"
    );
}

#[test]
fn session_end_releases_the_client_id_and_every_slot() {
    let mut net = Net::new(3);
    let (a, _) = net.online(0, v5("c", true, 300));
    net.subscribe(a, 1, "t", QoS::AtLeastOnce);
    let (_b, _) = net.online(1, v5("c", false, 300));
    let (d, _) = net.online(2, v5("c", false, 0));
    net.send(d, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    net.settle();
    for (w, core) in net.cores.iter().enumerate() {
        // (Timers are removed lazily: a stale one may still wait in the wheel.)
        let (clients, sessions, _, _) = core.counts();
        assert_eq!((clients, sessions), (0, 0), "worker {w}: clients, sessions");
    }
    assert_eq!(
        net.shared
            .sub_counts
            .iter()
            .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<usize>(),
        0
    );
    let (_e, ack) = net.online(0, v5("c", false, 300));
    assert!(!ack.session_present);
    assert_eq!(
        net.posts_of("TakeOver").len(),
        2,
        "no owner left to take over"
    );
}

/// Racing claims A (Clean Start 0) then B (Clean Start 1) for a session whose connection has a
/// delayed will: the session ends (B's Clean Start), so the will must be published now
/// (session::will::on_takeover: "new connection with Clean Start = 1: the old session ends,
/// publish now").
#[test]
fn racing_claims_later_clean_start_ends_the_session_and_publishes_the_delayed_will() {
    for order in [[0, 2, 1], [2, 0, 1]] {
        let mut net = Net::new(4);
        let (monitor, _) = net.online(3, connect_packet(V5, "monitor", 0, true));
        net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
        let owner = with_will(v5("c", true, 300), "will/c", "gone", Some(30));
        let (owner, _) = net.online(2, owner);
        let first = net.connect(0, v5("c", false, 300));
        let second = net.connect(1, v5("c", true, 300));
        for w in order {
            net.deliver_all_to(w);
        }
        net.settle();
        assert!(net.is_closing(owner) && net.is_closing(first));
        assert!(!net.connack(second).session_present);
        net.tick_at(100_000);
        net.settle();
        assert_eq!(
            payloads(&net.publishes(monitor)),
            ["gone"],
            "{order:?}: the old session ended: its will"
        );
    }
}

/// The owner (Will Delay 10 s, Session Expiry 20 s) is taken over from another worker by a
/// CONNECT whose connection dies before the hand-off arrives: no connection ever resumed the
/// session, so the will is due when its delay elapses (or at the latest when the session
/// ends). On the owner's own worker the hand-off is synchronous: the claimant gets CONNACK
/// (it resumed the session), so the will is cancelled even if it dies right after.
#[test]
fn delayed_will_is_published_when_the_claimant_dies_before_the_handoff() {
    for w_new in [0, 1] {
        let mut net = Net::new(3);
        let (monitor, _) = net.online(2, connect_packet(V5, "monitor", 0, true));
        net.subscribe(monitor, 1, "will/#", QoS::AtLeastOnce);
        let owner = with_will(v5("c", true, 20), "will/c", "gone", Some(10));
        let (_owner, _) = net.online(0, owner);
        let new = net.connect(w_new, v5("c", false, 20));
        let resumed = w_new == 0;
        if resumed {
            assert!(
                net.connack(new).session_present,
                "same worker: resumed at once"
            );
        }
        net.closed(new);
        net.settle();
        net.tick_at(100_000);
        net.settle();
        let expected: &[&str] = if resumed { &[] } else { &["gone"] };
        assert_eq!(payloads(&net.publishes(monitor)), expected, "w_new {w_new}");
    }
}

// ----------------------------------------------------------------------------------------------
// PUBACK / PUBREC 0x10 No matching subscribers; subscription visibility across workers
// ----------------------------------------------------------------------------------------------

const NO_MATCH: ReasonCode = ReasonCode::NO_MATCHING_SUBSCRIBERS;

impl Net {
    /// Publish at QoS 1 or 2 and settle; the reason of the PUBACK / PUBREC. A QoS 2 flow is
    /// completed: PUBREL gets PUBCOMP 0x00 whatever the PUBREC said (0x10 is a success code).
    fn ack_of(&mut self, c: C, topic: &str, qos: QoS, pid: u16) -> ReasonCode {
        self.send(c, &Packet::Publish(msg(topic, b"m", qos, pid, false)));
        self.settle();
        self.ack_reason(c, qos, pid)
    }

    /// The PUBACK / PUBREC for `pid` (waiting in the inbox); a QoS 2 flow is completed.
    fn ack_reason(&mut self, c: C, qos: QoS, pid: u16) -> ReasonCode {
        let r = self.take_first(c, "PUBACK / PUBREC", |p| match p {
            Packet::PubAck(a) | Packet::PubRec(a) if a.packet_id == pid => Some(a.clone()),
            _ => None,
        });
        if qos == QoS::ExactlyOnce {
            self.send(c, &Packet::PubRel(PubResp::new(pid)));
            self.settle();
            let comp = self.take_first(c, "PUBCOMP", |p| match p {
                Packet::PubComp(a) => Some(a.clone()),
                _ => None,
            });
            assert_eq!((comp.packet_id, comp.reason), (pid, ReasonCode::SUCCESS));
        }
        r.reason
    }

    fn unsubscribe(&mut self, c: C, pid: u16, filter: &str) {
        self.send(
            c,
            &Packet::Unsubscribe(Unsubscribe {
                packet_id: pid,
                filters: vec![ByteString::from(filter)],
                user_properties: Default::default(),
            }),
        );
        self.settle();
        let _ = self.take_first(c, "UNSUBACK", |p| match p {
            Packet::UnsubAck(a) => Some(a.clone()),
            _ => None,
        });
    }

    /// Deliver mail, one piece at a time over the workers, until client `c` has its SUBACK
    /// (a shared subscription's SUBACK waits for the other workers' views).
    fn until_suback(&mut self, c: C) {
        while !self.clients[c]
            .inbox
            .iter()
            .any(|p| matches!(p, Packet::SubAck(_)))
        {
            let w = (0..self.cores.len())
                .find(|&w| !self.mailboxes[w].is_empty())
                .expect("no SUBACK and no mail left");
            self.deliver_next(w);
        }
        let _ = self.take_first(c, "SUBACK", |p| match p {
            Packet::SubAck(a) => Some(a.clone()),
            _ => None,
        });
    }
}

/// One worker: 0x10 exactly when no subscription matches (MQTT 5 sections 3.4.2.1, 3.5.2.1),
/// a QoS 2 flow goes on after PUBREC 0x10; 3.1.1 never gets it.
#[test]
fn puback_and_pubrec_0x10_when_no_subscription_matches_on_one_worker() {
    let mut net = Net::new(1);
    let (p, _) = net.online(0, conn(V5, "p"));
    assert_eq!(net.ack_of(p, "x/y", QoS::AtLeastOnce, 1), NO_MATCH);
    assert_eq!(net.ack_of(p, "x/y", QoS::ExactlyOnce, 2), NO_MATCH);
    let (s, _) = net.online(0, conn(V5, "s"));
    net.subscribe(s, 1, "x/+", QoS::AtLeastOnce);
    assert_eq!(
        net.ack_of(p, "x/y", QoS::AtLeastOnce, 3),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        net.ack_of(p, "x/y", QoS::ExactlyOnce, 4),
        ReasonCode::SUCCESS
    );
    assert_eq!(net.ack_of(p, "x/y/z", QoS::AtLeastOnce, 5), NO_MATCH);
    assert_eq!(net.publishes(s).len(), 2);
    // A shared subscription is a subscriber too.
    let (m, _) = net.online(0, conn(V5, "m"));
    net.subscribe(m, 1, "$share/g/sh/#", QoS::AtLeastOnce);
    assert_eq!(
        net.ack_of(p, "sh/1", QoS::AtLeastOnce, 6),
        ReasonCode::SUCCESS
    );
    assert_eq!(payloads(&net.publishes(m)), ["m"]);
    // The publisher's own No Local subscription matches (0x00 is never wrong).
    let nl = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..Default::default()
    };
    net.sub_with(p, 10, &[("own/#", nl)], None);
    assert_eq!(
        net.ack_of(p, "own/1", QoS::AtLeastOnce, 7),
        ReasonCode::SUCCESS
    );
    // MQTT 3.1.1 has no reason code.
    let (p3, _) = net.online(0, conn(V3, "p3"));
    assert_eq!(
        net.ack_of(p3, "x/y/z", QoS::AtLeastOnce, 1),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        net.ack_of(p3, "x/y/z", QoS::ExactlyOnce, 2),
        ReasonCode::SUCCESS
    );
    // The unsubscribed and gone leave no match behind.
    net.unsubscribe(s, 2, "x/+");
    assert_eq!(net.ack_of(p, "x/y", QoS::AtLeastOnce, 8), NO_MATCH);
    net.send(m, &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)));
    net.settle();
    assert_eq!(net.ack_of(p, "sh/1", QoS::AtLeastOnce, 9), NO_MATCH);
}

#[test]
fn no_matching_subscribers_reason_off_gives_0x00() {
    for workers in [1, 2] {
        let mut net = Net::with(workers, |c| c.no_matching_subscribers_reason = false);
        let (p, _) = net.online(0, conn(V5, "p"));
        assert_eq!(net.ack_of(p, "t", QoS::AtLeastOnce, 1), ReasonCode::SUCCESS);
        assert_eq!(net.ack_of(p, "t", QoS::ExactlyOnce, 2), ReasonCode::SUCCESS);
        let (s, _) = net.online(workers - 1, conn(V5, "s"));
        net.subscribe(s, 1, "u", QoS::AtLeastOnce);
        assert_eq!(net.posts_of("Filter"), [], "no view kept");
    }
}

/// Several workers: the publisher's worker answers from its view of the other workers'
/// filters and of the shared groups; a message answered 0x10 is posted to no worker.
#[test]
fn puback_0x10_across_workers_follows_subscribe_unsubscribe_and_session_end() {
    let mut net = Net::new(3);
    let (p, _) = net.online(0, conn(V5, "p"));
    let (s, _) = net.online(1, v5("s", true, 300));
    net.subscribe(s, 1, "a/+", QoS::AtLeastOnce);
    assert_eq!(
        net.ack_of(p, "a/b", QoS::AtLeastOnce, 1),
        ReasonCode::SUCCESS
    );
    assert_eq!(payloads(&net.publishes(s)), ["m"]);
    let before = net.posts_of("Publish").len();
    assert_eq!(net.ack_of(p, "b/c", QoS::AtLeastOnce, 2), NO_MATCH);
    assert_eq!(net.ack_of(p, "a/b/c", QoS::ExactlyOnce, 3), NO_MATCH);
    assert_eq!(
        net.posts_of("Publish").len(),
        before,
        "worker 1 holds subscriptions, but none matches: not posted"
    );
    // A shared member on worker 2.
    let (m, _) = net.online(2, conn(V5, "m"));
    net.subscribe(m, 1, "$share/g/b/#", QoS::AtLeastOnce);
    assert_eq!(
        net.ack_of(p, "b/c", QoS::AtLeastOnce, 4),
        ReasonCode::SUCCESS
    );
    assert_eq!(payloads(&net.publishes(m)), ["m"]);
    net.unsubscribe(m, 2, "$share/g/b/#");
    assert_eq!(net.ack_of(p, "b/c", QoS::AtLeastOnce, 5), NO_MATCH);
    // An offline session's subscription still matches (its queue gets the message).
    net.closed(s);
    net.settle();
    assert_eq!(
        net.ack_of(p, "a/b", QoS::AtLeastOnce, 6),
        ReasonCode::SUCCESS
    );
    // Two subscriptions to one filter on one worker: counted, one left still matches.
    let (s2, _) = net.online(1, conn(V5, "s2"));
    net.subscribe(s2, 1, "a/+", QoS::AtLeastOnce);
    let (s3, _) = net.online(1, conn(V5, "s3"));
    net.subscribe(s3, 1, "a/+", QoS::AtLeastOnce);
    net.unsubscribe(s2, 2, "a/+");
    // The offline session ends (clean start, no expiry): its filters leave every view.
    let (s_again, _) = net.online(2, v5("s", true, 0));
    net.send(
        s_again,
        &Packet::Disconnect(Disconnect::new(ReasonCode::SUCCESS)),
    );
    net.settle();
    assert_eq!(
        net.ack_of(p, "a/b", QoS::AtLeastOnce, 7),
        ReasonCode::SUCCESS
    );
    net.unsubscribe(s3, 2, "a/+");
    assert_eq!(net.ack_of(p, "a/b", QoS::AtLeastOnce, 8), NO_MATCH);
    for (w, core) in net.cores.iter().enumerate() {
        assert_eq!(core.remote_filter_view(), (0, true), "worker {w}'s view");
    }
}

/// The guarantee (docs/design.md; `router.rs` module header): a PUBLISH that reaches
/// the broker after the SUBACK was sent is delivered to the subscriber, whatever workers the
/// two clients are on, and its publisher is not told 0x10. Here the SUBACK has left and none
/// of the mail the SUBSCRIBE caused has reached another worker when the PUBLISH arrives; the
/// subscriber's worker held no subscription before. Fails if the subscription count is not
/// raised in the SUBSCRIBE's own input (nothing is posted to the subscriber's worker), or if
/// a publisher's worker trusted its view of the filters while it is behind (0x10, not posted).
#[test]
fn subscription_visibility_publish_after_suback_reaches_a_subscriber_on_another_worker() {
    for workers in [2, 3] {
        for w_pub in 0..workers {
            for w_sub in (0..workers).filter(|&w| w != w_pub) {
                for reason_on in [true, false] {
                    let case = format!("{workers} workers, pub {w_pub}, sub {w_sub}, {reason_on}");
                    let mut net =
                        Net::with(workers, |c| c.no_matching_subscribers_reason = reason_on);
                    let (p, _) = net.online(w_pub, conn(V5, "p"));
                    let (p3, _) = net.online(w_pub, conn(V3, "p3"));
                    let (s, _) = net.online(w_sub, conn(V5, "s"));
                    net.send(
                        s,
                        &Packet::Subscribe(Subscribe {
                            packet_id: 1,
                            filters: vec![(ByteString::from("v/#"), opts(QoS::AtLeastOnce))],
                            properties: Default::default(),
                        }),
                    );
                    assert!(matches!(net.next(s), Packet::SubAck(_)), "{case}");
                    net.send(
                        p,
                        &Packet::Publish(msg("v/1", b"q1", QoS::AtLeastOnce, 1, false)),
                    );
                    net.send(
                        p,
                        &Packet::Publish(msg("v/2", b"q2", QoS::ExactlyOnce, 2, false)),
                    );
                    net.send(
                        p,
                        &Packet::Publish(msg("v/3", b"q0", QoS::AtMostOnce, 0, false)),
                    );
                    net.send(
                        p3,
                        &Packet::Publish(msg("v/4", b"v3", QoS::AtLeastOnce, 1, false)),
                    );
                    assert_eq!(
                        net.ack_reason(p, QoS::AtLeastOnce, 1),
                        ReasonCode::SUCCESS,
                        "{case}"
                    );
                    assert_eq!(
                        net.ack_reason(p, QoS::ExactlyOnce, 2),
                        ReasonCode::SUCCESS,
                        "{case}"
                    );
                    net.settle();
                    assert_eq!(
                        payloads(&net.until_marker_or_all(s)),
                        ["q1", "q2", "q0", "v3"],
                        "{case}"
                    );
                }
            }
        }
    }
}

/// The same for a shared subscription: its SUBACK waits until every other worker's view has
/// the member; a PUBLISH on another worker right after it reaches the member. Fails without
/// the hold (`open_hold` / `SharedApplied`).
#[test]
fn subscription_visibility_publish_after_shared_suback_reaches_the_member() {
    for w_pub in [0, 2] {
        let mut net = Net::new(3);
        let (p, _) = net.online(w_pub, conn(V5, "p"));
        let (m, _) = net.online(1, conn(V5, "m"));
        net.send(
            m,
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(ByteString::from("$share/g/v/#"), opts(QoS::AtLeastOnce))],
                properties: Default::default(),
            }),
        );
        net.until_suback(m);
        net.send(
            p,
            &Packet::Publish(msg("v/1", b"q1", QoS::AtLeastOnce, 1, false)),
        );
        assert_eq!(net.ack_reason(p, QoS::AtLeastOnce, 1), ReasonCode::SUCCESS);
        net.settle();
        assert_eq!(payloads(&net.until_marker_or_all(m)), ["q1"], "pub {w_pub}");
    }
}

impl Net {
    /// Every PUBLISH received so far (QoS 1/2 acknowledged), other packets ignored.
    fn until_marker_or_all(&mut self, c: C) -> Vec<Publish> {
        let mut got = Vec::new();
        for p in self.take(c) {
            match p {
                Packet::Publish(p) => {
                    match p.qos {
                        QoS::AtLeastOnce => {
                            self.send(c, &Packet::PubAck(PubResp::new(p.packet_id)))
                        }
                        QoS::ExactlyOnce => {
                            self.send(c, &Packet::PubRec(PubResp::new(p.packet_id)))
                        }
                        QoS::AtMostOnce => {}
                    }
                    got.push(p);
                }
                Packet::PubRel(r) => self.send(c, &Packet::PubComp(PubResp::new(r.packet_id))),
                _ => {}
            }
        }
        got
    }
}

/// Before the SUBACK there is no promise, and the two ways of it are pinned here: a PUBLISH
/// routed on another worker before the SUBSCRIBE's input ran is not delivered (as on one
/// worker); one routed after that input but before the subscriber's worker mailed anything is
/// (the count and the trie changed in the SUBSCRIBE's input).
#[test]
fn subscription_visibility_before_the_suback_follows_the_subscribe_input() {
    let mut net = Net::new(2);
    let (p, _) = net.online(0, conn(V5, "p"));
    let (s, _) = net.online(1, conn(V5, "s"));
    net.send(
        p,
        &Packet::Publish(msg("v/1", b"before", QoS::AtLeastOnce, 1, false)),
    );
    net.subscribe(s, 1, "v/#", QoS::AtLeastOnce);
    assert_eq!(net.ack_reason(p, QoS::AtLeastOnce, 1), NO_MATCH);
    net.send(
        p,
        &Packet::Publish(msg("v/2", b"after", QoS::AtLeastOnce, 2, false)),
    );
    assert_eq!(net.ack_reason(p, QoS::AtLeastOnce, 2), ReasonCode::SUCCESS);
    net.settle();
    assert_eq!(payloads(&net.publishes(s)), ["after"]);
}

// ----------------------------------------------------------------------------------------------
// durability: the commit barrier (`persist.rs`)
// ----------------------------------------------------------------------------------------------

/// A `Net` whose cores log (durability `sync`); the test plays the storage thread.
fn durable_net(workers: usize) -> Net {
    let mut net = Net::with(workers, |c| c.data_dir = Some("/nonexistent".into()));
    let now = net.now();
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for core in &mut net.cores {
        core.enable_persist(
            crate::storage::Durability::Sync,
            Duration::from_secs(300),
            flag.clone(),
            now,
        );
    }
    net
}

impl Net {
    /// What worker `w` logged since the last call: its batch, if any.
    fn take_log(&mut self, w: usize) -> Option<u64> {
        let mut buf = Vec::new();
        self.cores[w].take_log(&mut buf)
    }

    fn commit(&mut self, w: usize, batch: u64) {
        self.input(w, Input::Committed(batch));
    }
}

#[test]
fn a_durable_ack_waits_for_its_commit_and_nothing_else_does() {
    let mut net = durable_net(1);
    // A persistent session's CONNACK waits for the image of the session.
    let s = net.connect(0, persistent(V5, "s", true));
    net.settle();
    let b1 = net.take_log(0).expect("the session is logged");
    assert!(net.take(s).is_empty(), "CONNACK before its commit");
    // Meanwhile a clean session is not held up.
    let q = net.connect(0, conn(V5, "q"));
    net.settle();
    assert_eq!(net.connack(q).code, ReasonCode::SUCCESS);
    assert_eq!(net.take_log(0), None, "a clean session logs nothing");
    net.commit(0, b1);
    assert_eq!(net.connack(s).code, ReasonCode::SUCCESS);

    net.send(
        s,
        &Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![(ByteString::from("t"), opts(QoS::AtLeastOnce))],
            properties: Default::default(),
        }),
    );
    net.settle();
    let b2 = net.take_log(0).expect("the subscription is logged");
    assert!(net.take(s).is_empty(), "SUBACK before its commit");
    net.commit(0, b2);
    assert!(matches!(net.next(s), Packet::SubAck(_)));
    net.send(
        s,
        &Packet::Disconnect(Disconnect {
            reason: ReasonCode::SUCCESS,
            properties: Default::default(),
        }),
    );
    net.settle();
    let _ = net.take_log(0).map(|b| net.commit(0, b));

    // A QoS 1 PUBLISH queued for the offline session: its PUBACK waits; a PINGRESP to the
    // same publisher afterwards keeps the order, one to another client does not wait.
    let p = net.connect(0, conn(V5, "p"));
    net.settle();
    net.connack(p);
    net.send(
        p,
        &Packet::Publish(msg("t", b"m", QoS::AtLeastOnce, 7, false)),
    );
    net.send(p, &Packet::PingReq);
    net.send(q, &Packet::PingReq);
    net.settle();
    assert_eq!(net.take(q), vec![Packet::PingResp]);
    assert!(
        net.take(p).is_empty(),
        "PUBACK (or what follows it) before its commit"
    );
    let b3 = net.take_log(0).expect("the queued message is logged");
    net.commit(0, b3);
    let got = net.take(p);
    assert!(
        matches!(&got[..], [Packet::PubAck(a), Packet::PingResp] if a.packet_id == 7),
        "{got:?}"
    );
}

// ----------------------------------------------------------------------------------------------
// durability: a QoS 2 fan-out across workers and a crash at each of its steps (`persist.rs`)
// ----------------------------------------------------------------------------------------------

impl Net {
    /// Append what worker `w` logged to its `disk`; the batch, if any.
    fn write_log(&mut self, w: usize, disk: &mut [Vec<u8>]) -> Option<u64> {
        let mut buf = Vec::new();
        let b = self.cores[w].take_log(&mut buf)?;
        disk[w].extend_from_slice(&buf);
        Some(b)
    }

    /// Settle, writing and committing every worker's log, until nothing is left to do.
    fn settle_on_disk(&mut self, disk: &mut [Vec<u8>]) {
        loop {
            self.settle();
            let mut any = false;
            for w in 0..self.cores.len() {
                if let Some(b) = self.write_log(w, disk) {
                    self.commit(w, b);
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }
}

/// A broker of `n` durable workers started on the logs (or snapshots) `disk` holds, as `broker/mod.rs`
/// starts one on a data dir: recovery, each worker's sessions, the views, the fan-outs.
fn restart_on(disk: &[Vec<u8>], snapshots: bool, n: usize) -> Net {
    let dir = std::env::temp_dir().join(format!(
        "ringmq-fanout-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    for (w, bytes) in disk.iter().enumerate() {
        let wdir = crate::storage::log::worker_dir(&dir, w);
        std::fs::create_dir_all(&wdir).unwrap();
        let name = if snapshots {
            crate::storage::log::snap_name(1)
        } else {
            crate::storage::log::log_name(1)
        };
        std::fs::write(wdir.join(name), bytes).unwrap();
    }
    let rec = crate::storage::recover::recover(&dir, n, false, Instant::now()).expect("recovers");
    let _ = std::fs::remove_dir_all(&dir);
    let mut net = durable_net(n);
    let now = net.now();
    for (w, r) in rec.sessions.into_iter().enumerate() {
        net.cores[w].restore(r);
    }
    let views: Vec<_> = net
        .cores
        .iter_mut()
        .map(|c| c.take_restored_filters())
        .collect();
    for (v, core) in net.cores.iter_mut().enumerate() {
        for (w, list) in views.iter().enumerate() {
            if w != v {
                core.apply_restored_filters(w as u16, list);
            }
        }
    }
    for (w, (msgs, picks)) in rec.fanouts.into_iter().zip(rec.fanout_picks).enumerate() {
        net.cores[w].route_recovered(msgs, picks, now);
        net.execute(w);
    }
    net
}

/// A durable publisher on worker 0 sends a QoS 2 message that an offline durable session on
/// worker 1 subscribes to; the broker crashes before the publisher's batch is on disk, after
/// it (before worker 1 routed the message), after worker 1's copy is on disk (its answer not
/// delivered), and after the PUBREC. After the restart the publisher resends what got no
/// PUBREC and releases the rest: the subscriber gets the message exactly once every time,
/// through a plain or a shared subscription.
#[test]
fn a_crash_at_any_step_of_a_qos2_fanout_delivers_it_exactly_once() {
    for crash_at in 0..4 {
        fanout_crash(crash_at, None, false, "t");
        fanout_crash(crash_at, None, false, "$share/g/t");
    }
}

/// The same with a snapshot of every worker at the crash instead of the logs: the fan-out
/// still waiting for worker 1 and worker 1's `ROUTED` are in the snapshots.
#[test]
fn a_snapshot_in_the_middle_of_a_qos2_fanout_keeps_it_exactly_once() {
    for crash_at in 1..4 {
        fanout_crash(crash_at, None, true, "t");
        fanout_crash(crash_at, None, true, "$share/g/t");
    }
}

/// A crash in the middle of writing worker 0's fan-out batch (cut at every byte of it):
/// never acknowledged, so the publisher resends; delivered exactly once all the same.
#[test]
fn a_fanout_batch_cut_at_any_byte_delivers_it_exactly_once() {
    let mut cut = 0;
    while fanout_crash(1, Some(cut), false, "t") {
        cut += 1;
    }
    assert!(cut > 20, "the batch has {cut} bytes");
}

/// One run of the fan-out above, crashed at step `crash_at`; with `cut`, worker 0's last
/// batch keeps only its first `cut` bytes (false: the batch is shorter than that); with
/// `snapshot`, the restart reads a snapshot of each worker taken at the crash. The
/// subscriber subscribes to `filter` (`t`, or a shared subscription to it).
fn fanout_crash(crash_at: usize, cut: Option<usize>, snapshot: bool, filter: &str) -> bool {
    {
        let mut disk = vec![Vec::new(), Vec::new()];
        let mut net = durable_net(2);
        let s = net.connect(1, persistent(V5, "s", true));
        net.settle_on_disk(&mut disk);
        net.connack(s);
        net.send(
            s,
            &Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(ByteString::from(filter), opts(QoS::ExactlyOnce))],
                properties: Default::default(),
            }),
        );
        net.settle_on_disk(&mut disk);
        assert!(matches!(net.next(s), Packet::SubAck(_)));
        net.send(
            s,
            &Packet::Disconnect(Disconnect {
                reason: ReasonCode::SUCCESS,
                properties: Default::default(),
            }),
        );
        net.settle_on_disk(&mut disk);
        let p = net.connect(0, persistent(V5, "p", true));
        net.settle_on_disk(&mut disk);
        net.connack(p);

        net.send(
            p,
            &Packet::Publish(msg("t", b"m", QoS::ExactlyOnce, 1, false)),
        );
        net.settle();
        // 0: the FANOUT batch is lost with the crash.
        let mut pubrec = false;
        if crash_at > 0 {
            let start = disk[0].len();
            let b0 = net.write_log(0, &mut disk).expect("the fan-out is logged");
            if let Some(cut) = cut {
                if start + cut >= disk[0].len() {
                    return false;
                }
                disk[0].truncate(start + cut);
            }
            if crash_at > 1 {
                net.commit(0, b0);
                net.settle();
                // 2: worker 1's copy and ROUTED are on disk; its answer never arrives.
                let b1 = net.write_log(1, &mut disk).expect("worker 1 logs its copy");
                if crash_at > 2 {
                    net.commit(1, b1);
                    net.settle_on_disk(&mut disk);
                    let got = net.take(p);
                    assert!(
                        matches!(&got[..], [Packet::PubRec(r)] if r.packet_id == 1),
                        "{got:?}"
                    );
                    pubrec = true;
                }
            }
        }
        let snaps = snapshot.then(|| {
            let now = net.now();
            (0..2)
                .map(|w| {
                    let _ = net.write_log(w, &mut disk);
                    net.cores[w].snapshot(now)
                })
                .collect::<Vec<_>>()
        });
        drop(net);

        let mut disk2 = disk.clone();
        let mut net = restart_on(snaps.as_deref().unwrap_or(&disk), snapshot, 2);
        net.settle_on_disk(&mut disk2);
        let p = net.connect(0, persistent(V5, "p", false));
        net.settle_on_disk(&mut disk2);
        assert!(net.connack(p).session_present, "crash at {crash_at}");
        if !pubrec {
            let mut again = msg("t", b"m", QoS::ExactlyOnce, 1, false);
            again.dup = true;
            net.send(p, &Packet::Publish(again));
            net.settle_on_disk(&mut disk2);
            assert!(
                matches!(net.take(p)[..], [Packet::PubRec(ref r)] if r.packet_id == 1),
                "crash at {crash_at}"
            );
        }
        net.send(p, &Packet::PubRel(PubResp::new(1)));
        net.settle_on_disk(&mut disk2);
        assert!(
            matches!(net.take(p)[..], [Packet::PubComp(ref r)] if r.packet_id == 1 && r.reason == ReasonCode::SUCCESS),
            "crash at {crash_at}"
        );
        let s = net.connect(1, persistent(V5, "s", false));
        net.settle_on_disk(&mut disk2);
        assert!(net.connack(s).session_present, "crash at {crash_at}");
        let got = net.publishes(s);
        assert_eq!(
            payloads(&got),
            ["m"],
            "crash at {crash_at}, cut {cut:?}, {filter}"
        );
    }
    true
}
