//! Drives the sans-IO connection state machine (`ringmq::session::Connection`) the way the
//! broker worker does, with input chosen by the fuzzer: client packets (generated, then encoded
//! and decoded by the real codec, or raw bytes through the decoder), partial reads, deliveries,
//! writability, broker answers (accept / refuse / take-over / shutdown), timer calls and time
//! steps, lost connections and reconnects that resume the previous session.
//!
//! Invariants checked after every call (none can be false for a correct machine):
//! - no panic;
//! - `Close` at most once per connection, always the last action of its batch, and nothing at
//!   all comes out of any call afterwards; `is_closed()` iff `Close` was emitted; a DISCONNECT
//!   is only sent to MQTT 5 clients, is the last packet sent, and its reason is the `Close`
//!   reason;
//! - at most one `Connect` request and one CONNACK per connection, nothing is sent before the
//!   CONNACK, a failure CONNACK is followed by `Close` in the same batch, a will is only
//!   published by a connection that was accepted;
//! - every packet sent encodes to `encoded_len` bytes and decodes again in the connection's
//!   version (MQTT 5 and PUBLISH: to an equal packet), so the client can read it;
//! - a PUBLISH sent respects QoS / packet id pairing, the client's Maximum Packet Size, the
//!   outbound topic alias bounds (an alias is only used bare once the client knows it), a new
//!   QoS 1/2 PUBLISH never reuses a packet id the client has not released and keeps the
//!   inflight window, DUP resends come before new PUBLISH; the session queue stays within its
//!   bounds;
//! - deadlines: `None` once closed; the CONNECT timeout before CONNACK; exactly
//!   1.5 x keep alive after the last received byte once connected; and after `on_timer(now)`
//!   a connection that is still open has no deadline at or before `now`.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ringmq::protocol::*;
use ringmq::session::{
    Action, Connection, Delivery, Message, MessageData, ProtocolLimits, Session,
    V311KeepAlivePolicy,
};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

const TOPICS: &[&str] = &["t/x", "t/y", "t", "", "a/+", "b/#", "$SYS/x", "t\u{e9}"];
const FILTERS: &[&str] = &[
    "t/+",
    "t/x",
    "#",
    "+/+",
    "$share/g/t/#",
    "$share//t",
    "a/#/b",
    "t/x+",
];
const CONNACK_CODES: &[u8] = &[
    0x80, 0x81, 0x82, 0x83, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A,
    0x9B, 0x9C, 0x9D, 0x9F,
];
/// Reason codes a client could put in its packets (valid or not for the packet: the decoder
/// sorts them out).
const CLIENT_CODES: &[u8] = &[0x00, 0x04, 0x10, 0x80, 0x81, 0x82, 0x8E, 0x92, 0x97, 0x18];

fn run(u: &mut Unstructured) -> Result<()> {
    let limits = Arc::new(limits(u)?);
    let mut h = Harness::new(limits);
    for _ in 0..256 {
        if u.is_empty() {
            break;
        }
        h.step(u)?;
    }
    Ok(())
}

fn limits(u: &mut Unstructured) -> Result<ProtocolLimits> {
    let mut l = ProtocolLimits {
        connect_timeout: Duration::from_millis(u.int_in_range(0..=20_000)?),
        max_keep_alive: *u.choose(&[0, 1, 10, 60, u16::MAX])?,
        server_keep_alive: if u.ratio(1, 8)? {
            Some(u.int_in_range(0..=5)?)
        } else {
            None
        },
        keep_alive_when_zero: if u.ratio(1, 8)? {
            Some(u.int_in_range(0..=5)?)
        } else {
            None
        },
        v311_keep_alive_out_of_policy: *u.choose(&[
            V311KeepAlivePolicy::Accept,
            V311KeepAlivePolicy::Clamp,
            V311KeepAlivePolicy::Refuse,
        ])?,
        receive_maximum: *u.choose(&[1, 2, 3, u16::MAX])?,
        max_packet_size: *u.choose(&[1024 * 1024, 64, 200])?,
        topic_alias_maximum: u.int_in_range(0..=3)?,
        max_qos: QoS::from_u8(u.int_in_range(0..=2)?).unwrap_or_default(),
        retain_available: !u.ratio(1, 6)?,
        wildcard_available: !u.ratio(1, 6)?,
        shared_available: !u.ratio(1, 6)?,
        sub_ids_available: !u.ratio(1, 6)?,
        max_session_expiry: *u.choose(&[0, 10, u32::MAX])?,
        v311_persistent_session_expiry: *u.choose(&[0, 10, u32::MAX])?,
        v31_strict_client_id: u.arbitrary()?,
        no_matching_subscribers_reason: true,
        max_inflight_out: u.int_in_range(1..=4)?,
        max_queued_messages: u.int_in_range(0..=5)?,
        max_queued_bytes: *u.choose(&[0, 40, 1 << 20])?,
        queue_qos0_offline: u.arbitrary()?,
        max_outbound_topic_aliases: u.int_in_range(0..=3)?,
        max_pending_before_connack: u.int_in_range(0..=4)?,
    };
    if u.ratio(1, 4)? {
        l = ProtocolLimits::default();
    }
    Ok(l)
}

/// What the (well-behaved, as far as the checks go) client knows about its connection.
#[derive(Default)]
struct ClientView {
    /// Maximum Packet Size / Receive Maximum / Topic Alias Maximum of the accepted CONNECT.
    max_packet: Option<u32>,
    receive_max: Option<u16>,
    alias_max: u16,
    /// Topic aliases the server set up (alias -> topic).
    aliases: HashMap<u16, ByteString>,
    /// Server PUBLISH QoS 1/2 not acknowledged yet, and PUBREL ids received.
    unacked: Vec<(u16, QoS)>,
    released: Vec<u16>,
}

struct Harness {
    limits: Arc<ProtocolLimits>,
    conn: Connection,
    started: Instant,
    now: Instant,
    closed: bool,
    connect_requested: bool,
    connack_sent: bool,
    accepted: bool,
    client: ClientView,
    /// Session kept from the previous connection (offered on the next accept).
    saved: Option<Session>,
    pending_client: ClientView,
}

impl Harness {
    fn new(limits: Arc<ProtocolLimits>) -> Harness {
        let now = Instant::now();
        Harness {
            conn: Connection::new(Arc::clone(&limits), now),
            limits,
            started: now,
            now,
            closed: false,
            connect_requested: false,
            connack_sent: false,
            accepted: false,
            client: ClientView::default(),
            saved: None,
            pending_client: ClientView::default(),
        }
    }

    fn version(&self) -> ProtocolVersion {
        self.conn.version().unwrap_or(ProtocolVersion::V311)
    }

    fn advance(&mut self, u: &mut Unstructured) -> Result<()> {
        let ms: u64 = match u.int_in_range(0..=3)? {
            0 => 0,
            1 => u.int_in_range(0..=1_000)?,
            2 => u.int_in_range(0..=20_000)?,
            _ => u.int_in_range(0..=200_000)?,
        };
        self.now += Duration::from_millis(ms);
        Ok(())
    }

    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let mut out = Vec::new();
        match u.int_in_range(0..=15)? {
            0..=3 => {
                self.advance(u)?;
                let p = gen_packet(u, self)?;
                let v = match &p {
                    Packet::Connect(c) => c.protocol,
                    _ => self.conn.version().unwrap_or(if u.arbitrary()? {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    }),
                };
                let mut buf = BytesMut::new();
                encode_packet(&p, v, &mut buf);
                // Sometimes one byte is corrupted (e.g. a CONNECT's protocol level).
                if !buf.is_empty() && u.ratio(1, 8)? {
                    let i = u.choose_index(buf.len())?;
                    buf[i] = u.arbitrary()?;
                }
                let cut = if u.ratio(1, 8)? {
                    u.int_in_range(0..=buf.len())?
                } else {
                    buf.len()
                };
                self.feed(&buf[..cut]);
            }
            4 => {
                self.advance(u)?;
                let n = u.int_in_range(0..=48)?;
                let raw = u.bytes(n)?.to_vec();
                self.feed(&raw);
            }
            5 => {
                // A client acknowledgement for something the server sent.
                self.advance(u)?;
                if let Some(p) = self.client_ack(u)? {
                    let mut buf = BytesMut::new();
                    encode_packet(&p, self.version(), &mut buf);
                    self.feed(&buf);
                }
            }
            6 | 7 => {
                self.advance(u)?;
                let (msg, d) = gen_message(u, self.now)?;
                let w = u.arbitrary()?;
                self.conn.deliver(&msg, &d, self.now, w, &mut out);
                self.check(&out, Call::Other);
            }
            8 => {
                self.advance(u)?;
                self.conn.on_writable(self.now, &mut out);
                self.check(&out, Call::Other);
            }
            9 => {
                // The timer fires: at an arbitrary time or exactly at the deadline.
                if u.arbitrary()? {
                    if let Some(d) = self.conn.deadline() {
                        self.now = self.now.max(d);
                    }
                } else {
                    self.advance(u)?;
                }
                self.conn.on_timer(self.now, &mut out);
                self.check(&out, Call::Timer);
            }
            10 => {
                self.advance(u)?;
                self.conn.on_bytes_received(self.now);
                self.check(&out, Call::Received);
            }
            11 => {
                self.advance(u)?;
                let session = if u.ratio(3, 4)? {
                    self.saved.take()
                } else {
                    None
                };
                let id = match u.int_in_range(0..=2)? {
                    0 => None,
                    1 => Some(ByteString::from_static("assigned-1")),
                    _ => Some(ByteString::new()),
                };
                let was_waiting = self.connect_requested && !self.connack_sent && !self.closed;
                self.conn.accept_connect(session, id, self.now, &mut out);
                if was_waiting {
                    self.client = std::mem::take(&mut self.pending_client);
                }
                self.check(&out, Call::Other);
            }
            12 => {
                self.advance(u)?;
                let code = ReasonCode(*u.choose(CONNACK_CODES)?);
                self.conn.refuse_connect(code, self.now, &mut out);
                self.check(&out, Call::Other);
            }
            13 => {
                self.advance(u)?;
                match u.int_in_range(0..=2)? {
                    0 => self.conn.take_over(u.arbitrary()?, self.now, &mut out),
                    1 => self.conn.shutdown(self.now, &mut out),
                    _ => self.conn.connection_lost(self.now, &mut out),
                }
                self.check(&out, Call::Other);
            }
            14 => {
                // Reconnect: a new connection; the closed one's session is kept for it.
                if self.closed {
                    if let Some(s) = self.conn.take_session() {
                        if s.session_expiry() > 0 {
                            self.saved = Some(s);
                        }
                    }
                    self.advance(u)?;
                    self.conn = Connection::new(Arc::clone(&self.limits), self.now);
                    self.started = self.now;
                    self.closed = false;
                    self.connect_requested = false;
                    self.connack_sent = false;
                    self.accepted = false;
                    self.client = ClientView::default();
                    self.pending_client = ClientView::default();
                    self.check(&out, Call::Other);
                }
            }
            _ => {
                // Offline delivery into the saved session.
                self.advance(u)?;
                let (msg, d) = gen_message(u, self.now)?;
                if let Some(s) = self.saved.as_mut() {
                    s.deliver_offline(&msg, &d, self.now, &self.limits);
                    assert!(s.queued_len() <= self.limits.max_queued_messages);
                    assert!(s.queued_bytes() <= self.limits.max_queued_bytes);
                }
            }
        }
        Ok(())
    }

    /// Bytes from the socket, as the broker handles them: decode packet after packet with the
    /// connection's version, hand each to the connection, stop at a partial packet or an error.
    fn feed(&mut self, mut buf: &[u8]) {
        loop {
            let mut out = Vec::new();
            // PUBLISH is read in place, as the worker does (`decode_publish_view` and
            // `handle_publish`); a partial one or an error gets decode_packet's answer (the
            // decode target checks they agree), handled below.
            if let (Some(v), Some(&b)) = (self.conn.version(), buf.first()) {
                if b >> 4 == 3 {
                    if let Ok(Some((p, n))) =
                        decode_publish_view(buf, v, self.limits.max_packet_size)
                    {
                        buf = &buf[n..];
                        self.conn.handle_publish(p, self.now, &mut out);
                        self.check(&out, Call::Received);
                        if buf.is_empty() || self.closed {
                            return;
                        }
                        continue;
                    }
                }
            }
            match decode_packet(buf, self.conn.version(), self.limits.max_packet_size) {
                Ok(Some((p, n))) => {
                    buf = &buf[n..];
                    if let Packet::Connect(c) = &p {
                        if !self.connect_requested && !self.closed {
                            let pr = &c.properties;
                            let v5 = c.protocol.is_v5();
                            self.pending_client = ClientView {
                                max_packet: if v5 { pr.maximum_packet_size } else { None },
                                receive_max: if v5 { pr.receive_maximum } else { None },
                                alias_max: if v5 {
                                    pr.topic_alias_maximum.unwrap_or(0)
                                } else {
                                    0
                                },
                                ..ClientView::default()
                            };
                        }
                    }
                    // The client's view of ids in use stays a subset of the server's.
                    match &p {
                        Packet::PubAck(r) | Packet::PubRec(r) => {
                            self.client.unacked.retain(|(id, _)| *id != r.packet_id)
                        }
                        Packet::PubComp(r) => self.client.released.retain(|id| *id != r.packet_id),
                        _ => {}
                    }
                    self.conn.handle(p, self.now, &mut out);
                    self.check(&out, Call::Received);
                }
                Ok(None) => {
                    self.conn.on_bytes_received(self.now);
                    self.check(&out, Call::Received);
                    return;
                }
                Err(e) => {
                    self.conn.on_decode_error(&e, self.now, &mut out);
                    self.check(&out, Call::Other);
                    return;
                }
            }
            if buf.is_empty() || self.closed {
                return;
            }
        }
    }

    fn client_ack(&mut self, u: &mut Unstructured) -> Result<Option<Packet>> {
        let c = &mut self.client;
        let pick_rel = !c.released.is_empty() && (c.unacked.is_empty() || u.arbitrary()?);
        if pick_rel {
            let i = u.choose_index(c.released.len())?;
            let id = c.released.swap_remove(i);
            return Ok(Some(Packet::PubComp(PubResp::new(id))));
        }
        if c.unacked.is_empty() {
            return Ok(None);
        }
        let i = u.choose_index(c.unacked.len())?;
        let (id, qos) = c.unacked.swap_remove(i);
        let mut r = PubResp::new(id);
        if self.conn.version().is_some_and(ProtocolVersion::is_v5) && u.ratio(1, 6)? {
            r.reason = ReasonCode(0x80);
        }
        Ok(Some(match qos {
            QoS::ExactlyOnce => Packet::PubRec(r),
            _ => Packet::PubAck(r),
        }))
    }

    fn check(&mut self, out: &[Action], call: Call) {
        let now = self.now;
        if self.closed {
            assert!(out.is_empty(), "actions after Close: {out:?}");
            assert!(self.conn.is_closed());
            assert_eq!(self.conn.deadline(), None);
            return;
        }
        let v = self.version();
        let v5 = v.is_v5();
        let mut fresh_qos12 = false;
        let mut fresh_publish = false;
        let mut disconnect = None;
        for (i, a) in out.iter().enumerate() {
            match a {
                Action::Close { will, reason } => {
                    assert_eq!(i, out.len() - 1, "Close is not the last action: {out:?}");
                    if let Some(code) = disconnect {
                        assert_eq!(*reason, Some(code), "Close reason differs from DISCONNECT");
                    }
                    self.closed = true;
                    if let Some(w) = will {
                        // An accepted CONNECT whose CONNACK did not fit the client's Maximum
                        // Packet Size closes with 0x95 and no CONNACK.
                        assert!(
                            self.accepted || *reason == Some(ReasonCode::PACKET_TOO_LARGE),
                            "will of a connection never accepted"
                        );
                        assert!(w.message.qos <= self.limits.max_qos);
                    }
                    // Decided once: a will left in the session would be published twice.
                    let left = self.conn.session().and_then(|s| s.will());
                    assert!(!self.accepted || left.is_none(), "will left in the session");
                }
                Action::Connect(_) => {
                    assert!(!self.connect_requested, "second Connect request");
                    assert!(!self.connack_sent);
                    self.connect_requested = true;
                }
                Action::Send(p) => {
                    if let Packet::ConnAck(c) = p {
                        assert!(!self.connack_sent, "second CONNACK");
                        self.connack_sent = true;
                        if c.code.is_error() {
                            assert!(
                                matches!(out.last(), Some(Action::Close { .. })),
                                "failure CONNACK without Close: {out:?}"
                            );
                            assert!(!c.session_present);
                        } else {
                            assert!(self.connect_requested, "CONNACK without a CONNECT");
                            self.accepted = true;
                        }
                    } else {
                        assert!(self.connack_sent, "{p:?} sent before CONNACK");
                    }
                    check_wire(p, v);
                    if let Packet::Disconnect(d) = p {
                        assert!(v5, "DISCONNECT sent to an MQTT 3.1.1 client");
                        assert!(disconnect.is_none(), "two DISCONNECTs");
                        disconnect = Some(d.reason);
                    } else {
                        assert!(disconnect.is_none(), "{p:?} sent after DISCONNECT");
                    }
                    if let Packet::Publish(p) = p {
                        self.check_publish(p, v5);
                        if p.dup {
                            // Resends of a resumed session come before anything new.
                            assert!(!fresh_publish, "DUP resend after a new PUBLISH: {out:?}");
                        } else {
                            fresh_publish = true;
                        }
                        if p.qos != QoS::AtMostOnce && !p.dup {
                            fresh_qos12 = true;
                        }
                    }
                    if let Packet::PubRel(r) = p {
                        if !r.reason.is_error() {
                            self.client.released.push(r.packet_id);
                        }
                    }
                }
                Action::Publish(m) => {
                    assert!(self.accepted, "message routed before CONNACK");
                    assert!(!m.topic.is_empty());
                    assert!(!m.topic.contains(['+', '#', '\0']));
                    assert!(m.qos <= self.limits.max_qos);
                }
                Action::Subscribe {
                    filter, options, ..
                } => {
                    assert!(self.accepted);
                    assert!(!filter.is_empty());
                    assert!(options.qos <= self.limits.max_qos);
                }
                Action::Unsubscribe { .. } => assert!(self.accepted),
            }
        }
        assert_eq!(
            self.conn.is_closed(),
            self.closed,
            "is_closed() vs Close: {out:?}"
        );

        if let Some(s) = self.conn.session() {
            assert!(s.queued_len() <= self.limits.max_queued_messages);
            assert!(s.queued_bytes() <= self.limits.max_queued_bytes);
            if fresh_qos12 {
                let rm = if v5 {
                    self.client.receive_max.unwrap_or(u16::MAX)
                } else {
                    u16::MAX
                };
                let window = usize::from(rm.min(self.limits.max_inflight_out).max(1));
                assert!(
                    s.inflight_len() <= window,
                    "inflight {} > window {window}",
                    s.inflight_len()
                );
            }
        }

        // Deadlines.
        let d = self.conn.deadline();
        if self.closed {
            assert_eq!(d, None);
        } else if !self.conn.is_connected() {
            assert_eq!(d, Some(self.started + self.limits.connect_timeout));
            if call == Call::Timer {
                assert!(d > Some(now), "CONNECT timeout passed, still open");
            }
        } else {
            match call {
                Call::Received => {
                    let ka = self.conn.keep_alive();
                    let want = (ka > 0).then(|| now + Duration::from_millis(u64::from(ka) * 1500));
                    assert_eq!(d, want, "keep-alive deadline after input (ka {ka})");
                }
                Call::Timer => assert!(d.is_none_or(|d| d > now), "timer left a past deadline"),
                Call::Other => {}
            }
        }
    }

    fn check_publish(&mut self, p: &Publish, v5: bool) {
        assert_eq!(p.qos == QoS::AtMostOnce, p.packet_id == 0, "{p:?}");
        assert!(p.properties.topic_alias != Some(0));
        if !v5 {
            assert_eq!(p.properties, PublishProperties::default());
        }
        if let Some(max) = self.client.max_packet {
            let mut b = BytesMut::new();
            let n = encode_packet(&Packet::Publish(p.clone()), ProtocolVersion::V5, &mut b);
            assert!(
                n <= max as usize,
                "PUBLISH of {n} bytes > client maximum {max}"
            );
        }
        match p.properties.topic_alias {
            Some(a) => {
                let bound = self
                    .client
                    .alias_max
                    .min(self.limits.max_outbound_topic_aliases);
                assert!(v5 && a <= bound, "topic alias {a} > {bound}");
                if p.topic.is_empty() {
                    assert!(
                        self.client.aliases.contains_key(&a),
                        "alias {a} used before the client knows it"
                    );
                } else {
                    self.client.aliases.insert(a, p.topic.clone());
                }
            }
            None => assert!(!p.topic.is_empty(), "PUBLISH without topic or alias"),
        }
        if p.qos != QoS::AtMostOnce {
            let id = p.packet_id;
            if !p.dup {
                let in_use = self.client.unacked.iter().any(|(i, _)| *i == id)
                    || self.client.released.contains(&id);
                assert!(!in_use, "new PUBLISH reuses packet id {id} still in flight");
            }
            self.client.unacked.retain(|(i, _)| *i != id);
            self.client.unacked.push((id, p.qos));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    /// Bytes or a packet from the client (resets the keep-alive deadline).
    Received,
    Timer,
    Other,
}

/// A packet sent to the client encodes to `encoded_len` bytes and decodes again.
fn check_wire(p: &Packet, v: ProtocolVersion) {
    let mut buf = BytesMut::new();
    let n = encode_packet(p, v, &mut buf);
    assert_eq!(n, buf.len());
    assert_eq!(encoded_len(p, v), n);
    match decode_packet(&buf, Some(v), u32::MAX) {
        Ok(Some((back, m))) => {
            assert_eq!(m, n);
            if v.is_v5() || matches!(p, Packet::Publish(_)) {
                assert_eq!(&back, p, "sent packet does not round-trip in {v:?}");
            }
        }
        other => panic!("sent {p:?} as {:?}, which decodes to {other:?}", &buf[..]),
    }
}

fn s(u: &mut Unstructured, set: &[&'static str]) -> Result<ByteString> {
    Ok(ByteString::from_static(u.choose(set).copied()?))
}

fn small_bytes(u: &mut Unstructured, max: usize) -> Result<Bytes> {
    let n = u.int_in_range(0..=max)?;
    Ok(Bytes::copy_from_slice(u.bytes(n)?))
}

fn opt<T>(
    u: &mut Unstructured,
    f: impl FnOnce(&mut Unstructured) -> Result<T>,
) -> Result<Option<T>> {
    Ok(if u.ratio(1, 4)? { Some(f(u)?) } else { None })
}

fn qos(u: &mut Unstructured) -> Result<QoS> {
    Ok(QoS::from_u8(u.int_in_range(0..=2)?).unwrap_or_default())
}

fn packet_id(u: &mut Unstructured, h: &Harness) -> Result<u16> {
    if !h.client.unacked.is_empty() && u.ratio(1, 3)? {
        return Ok(h.client.unacked[u.choose_index(h.client.unacked.len())?].0);
    }
    Ok(match u.int_in_range(0..=3)? {
        0 => 0,
        1 | 2 => u.int_in_range(1..=5)?,
        _ => u.arbitrary()?,
    })
}

fn gen_packet(u: &mut Unstructured, h: &Harness) -> Result<Packet> {
    Ok(match u.int_in_range(0..=16)? {
        0 | 1 => {
            let protocol = *u.choose(&[
                ProtocolVersion::V5,
                ProtocolVersion::V311,
                ProtocolVersion::V31,
            ])?;
            let will = if u.ratio(1, 3)? {
                Some(Will {
                    topic: s(u, TOPICS)?,
                    payload: small_bytes(u, 8)?,
                    qos: qos(u)?,
                    retain: u.arbitrary()?,
                    properties: WillProperties {
                        will_delay_interval: opt(u, |u| u.int_in_range(0..=30))?,
                        payload_format_indicator: opt(u, |u| u.int_in_range(0..=1))?,
                        message_expiry_interval: opt(u, |u| u.int_in_range(0..=30))?,
                        ..Default::default()
                    },
                })
            } else {
                None
            };
            Packet::Connect(Box::new(Connect {
                protocol,
                clean_start: u.arbitrary()?,
                keep_alive: *u.choose(&[0, 1, 2, 10, 60, 65535, 3])?,
                client_id: s(u, &["", "c", "c2"])?,
                will,
                username: opt(u, |u| s(u, &["user"]))?,
                password: opt(u, |u| small_bytes(u, 4))?,
                properties: ConnectProperties {
                    session_expiry_interval: opt(u, |u| Ok(*u.choose(&[0, 5, u32::MAX])?))?,
                    receive_maximum: opt(u, |u| u.int_in_range(0..=3))?,
                    maximum_packet_size: opt(u, |u| u.int_in_range(0..=120))?,
                    topic_alias_maximum: opt(u, |u| u.int_in_range(0..=3))?,
                    request_problem_information: opt(u, |u| u.int_in_range(0..=1))?,
                    authentication_method: if u.ratio(1, 16)? {
                        Some(ByteString::from_static("SCRAM"))
                    } else {
                        None
                    },
                    ..Default::default()
                },
            }))
        }
        2..=5 => {
            let q = qos(u)?;
            Packet::Publish(Publish {
                dup: q != QoS::AtMostOnce && u.ratio(1, 4)?,
                qos: q,
                retain: u.ratio(1, 4)?,
                topic: s(u, TOPICS)?,
                packet_id: if q == QoS::AtMostOnce {
                    0
                } else {
                    packet_id(u, h)?
                },
                payload: small_bytes(u, 24)?,
                properties: PublishProperties {
                    topic_alias: opt(u, |u| u.int_in_range(0..=4))?,
                    payload_format_indicator: opt(u, |u| u.int_in_range(0..=1))?,
                    message_expiry_interval: opt(u, |u| u.int_in_range(0..=5))?,
                    ..Default::default()
                },
            })
        }
        6 => Packet::PubAck(pub_resp(u, h)?),
        7 => Packet::PubRec(pub_resp(u, h)?),
        8 => Packet::PubRel(pub_resp(u, h)?),
        9 => Packet::PubComp(pub_resp(u, h)?),
        10 => {
            let n = u.int_in_range(1..=3)?;
            let mut filters = Vec::new();
            for _ in 0..n {
                filters.push((
                    s(u, FILTERS)?,
                    SubscriptionOptions {
                        qos: qos(u)?,
                        no_local: u.ratio(1, 4)?,
                        retain_as_published: u.arbitrary()?,
                        retain_handling: u.int_in_range(0..=2)?,
                    },
                ));
            }
            Packet::Subscribe(Subscribe {
                packet_id: u.int_in_range(1..=5)?,
                filters,
                properties: SubscribeProperties {
                    subscription_identifier: opt(u, |u| u.int_in_range(1..=3))?,
                    ..Default::default()
                },
            })
        }
        11 => Packet::Unsubscribe(Unsubscribe {
            packet_id: u.int_in_range(1..=5)?,
            filters: vec![s(u, FILTERS)?, s(u, FILTERS)?],
            user_properties: Vec::new(),
        }),
        12 | 13 => Packet::PingReq,
        14 => {
            let mut d = Disconnect::new(ReasonCode(*u.choose(CLIENT_CODES)?));
            d.properties.session_expiry_interval = opt(u, |u| Ok(*u.choose(&[0, 7, u32::MAX])?))?;
            Packet::Disconnect(d)
        }
        15 => Packet::Auth(Auth {
            reason: ReasonCode(*u.choose(&[0x00, 0x18, 0x19])?),
            properties: AuthProperties::default(),
        }),
        _ => match u.int_in_range(0..=3)? {
            0 => Packet::PingResp,
            1 => Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode::SUCCESS,
                properties: ConnAckProperties::default(),
            }),
            2 => Packet::SubAck(SubAck {
                packet_id: 1,
                reasons: vec![ReasonCode::SUCCESS],
                properties: AckProperties::default(),
            }),
            _ => Packet::UnsubAck(UnsubAck {
                packet_id: 1,
                reasons: vec![ReasonCode::SUCCESS],
                properties: AckProperties::default(),
            }),
        },
    })
}

fn pub_resp(u: &mut Unstructured, h: &Harness) -> Result<PubResp> {
    let mut r = PubResp::new(packet_id(u, h)?.max(1));
    if u.ratio(1, 4)? {
        r.reason = ReasonCode(*u.choose(CLIENT_CODES)?);
    }
    Ok(r)
}

/// A routed message and how it reaches this subscriber.
fn gen_message(u: &mut Unstructured, now: Instant) -> Result<(Message, Delivery)> {
    let expiry: Option<u32> = opt(u, |u| u.int_in_range(0..=5))?;
    let msg = Message::new(MessageData {
        topic: s(u, &["t/x", "t/y", "t/a/long/topic/name/for/size/limits"])?,
        payload: small_bytes(u, 40)?,
        qos: qos(u)?,
        retain: u.ratio(1, 4)?,
        properties: PublishProperties {
            message_expiry_interval: expiry,
            content_type: opt(u, |u| s(u, &["text/plain"]))?,
            ..Default::default()
        },
        expires_at: expiry.map(|s| now + Duration::from_secs(u64::from(s))),
        publisher: Some(ByteString::from_static("other")),
    });
    let n = u.int_in_range(0..=2)?;
    let mut subscription_ids = Vec::new();
    for _ in 0..n {
        subscription_ids.push(u.int_in_range(1..=3)?);
    }
    let d = Delivery {
        qos: qos(u)?,
        retain_as_published: u.arbitrary()?,
        subscription_ids,
    };
    Ok((msg, d))
}
