//! The sans-IO per-connection protocol state machine. It takes decoded packets and `now`, and
//! returns [`Action`]s; it never touches a socket or a clock.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use hashbrown::HashMap;

use super::config::ProtocolLimits;
use super::keepalive::{self, KeepAlive, Stamp};
use super::state::{
    ClientId, Delivery, InflightState, Message, MessageData, Queued, Session, Subscription,
};
use super::will::{self, WillDecision};
use crate::auth::ClientAcl;
use crate::protocol::{
    AckProperties, ConnAck, ConnAckProperties, Connect, DecodeError, Disconnect, Packet,
    ProtocolVersion, PubResp, Publish, PublishProperties, PublishView, QoS, ReasonCode, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

/// A CONNECT that passed the protocol checks; the broker resolves ownership and sessions and
/// answers with [`Connection::accept_connect`] or [`Connection::refuse_connect`].
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    pub version: ProtocolVersion,
    /// Empty: the broker assigns one and passes it to `accept_connect` (MQTT 5, or 3.1.1 with
    /// Clean Session = 1; a 3.1.1 Clean Session = 0 CONNECT with an empty id was already
    /// refused with return code 0x02). The session accepted for it shares this allocation.
    pub client_id: ClientId,
    /// Clean Start (5.0) / Clean Session (3.1.1): the broker discards any existing session.
    pub clean_start: bool,
    /// Effective Session Expiry Interval (after policy); 0 = the session ends with the connection.
    pub session_expiry: u32,
    /// Effective keep alive (seconds, 0 = none).
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
}

/// Debug without the password (it would end up in a log line).
impl std::fmt::Debug for ConnectRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectRequest")
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("clean_start", &self.clean_start)
            .field("session_expiry", &self.session_expiry)
            .field("keep_alive", &self.keep_alive)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A will to publish: now (`delay` zero) or after `delay` unless the session is resumed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWill {
    pub message: Message,
    pub delay: Duration,
}

/// What the connection asks of the broker, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send to the client, in order.
    Send(Packet),
    /// A validated CONNECT: answer with `accept_connect` / `refuse_connect`.
    Connect(ConnectRequest),
    /// Route this message (QoS 2: routed once, on the first PUBLISH).
    Publish(Message),
    /// Add or replace a subscription in the index; `existed` tells whether the session had
    /// this filter already (for Retain Handling 1). The SUBACK was emitted before.
    Subscribe {
        filter: ByteString,
        /// With the granted QoS.
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
        existed: bool,
    },
    /// Remove an existing subscription from the index.
    Unsubscribe { filter: ByteString },
    /// Close the socket (after flushing what was sent). Emitted exactly once. `reason`: what
    /// ended the connection (sent or received), if known. `will`: publish/schedule it.
    /// The session stays in the connection for [`Connection::take_session`].
    Close {
        reason: Option<ReasonCode>,
        will: Option<PendingWill>,
    },
}

/// Where the connection is, carrying the data valid only there (in the style of quinn-proto's
/// `State`): nothing before CONNECT; the CONNECT and the packets pipelined behind it while the
/// broker decides (boxed: short-lived); the session and the client's limits once connected
/// (inline: the idle majority); the session, until taken, once closed.
#[derive(Debug)]
enum Phase {
    /// Waiting for CONNECT, since the connection opened (the CONNECT timeout runs from there).
    AwaitConnect { opened: Instant },
    /// `Action::Connect` emitted; waiting for `accept_connect` / `refuse_connect`.
    AwaitBroker(Box<PendingConnect>),
    /// CONNACK sent.
    Connected(Connected),
    /// `Action::Close` emitted. The session (`None` if the CONNECT was never accepted, or once
    /// taken) waits for [`Connection::take_session`]; `deliver` queues into it.
    Closed(Option<Session>),
}

/// How the connection ends, for the will rules.
#[derive(Debug, Clone, Copy)]
enum End {
    /// DISCONNECT 0x00.
    Normal,
    /// Anything but a normal disconnect or a take-over.
    Abnormal,
    /// Server shutdown: the session does not survive the process, the will goes now.
    Shutdown,
    Takeover {
        new_clean_start: bool,
    },
}

/// Why a packet handled while connected ends the connection.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// A protocol violation: [`Connection::fail`] (MQTT 5 DISCONNECT, close with the will).
    Fail(ReasonCode),
    /// The client's DISCONNECT (its reason): close, nothing sent.
    Disconnect(ReasonCode, End),
}

impl From<ReasonCode> for Stop {
    fn from(code: ReasonCode) -> Self {
        Stop::Fail(code)
    }
}

/// CONNECT data kept until the broker answers, and the packets pipelined meanwhile.
#[derive(Debug)]
struct PendingConnect {
    /// When the connection opened (the CONNECT timeout keeps running).
    opened: Instant,
    version: ProtocolVersion,
    client_id: ClientId,
    clean_start: bool,
    requested_expiry: u32,
    session_expiry: u32,
    server_keep_alive: Option<u16>,
    will: Option<Will>,
    client_receive_max: u16,
    client_max_packet: u32,
    client_topic_alias_max: u16,
    /// Packets received before the CONNACK (at most `max_pending_before_connack`), processed
    /// right after it.
    pending: Vec<Packet>,
}

/// State of an accepted connection (CONNACK sent).
#[derive(Debug)]
struct Connected {
    session: Session,
    /// CONNECT's Session Expiry Interval was 0 (DISCONNECT may not raise it).
    connect_expiry_zero: bool,
    /// The socket takes more bytes (as last told by `deliver` / `on_writable`).
    writable: bool,
    client_receive_max: u16,
    client_topic_alias_max: u16,
    client_max_packet: u32,
    /// Topic aliases, the last published topic and the resend list, created on first use
    /// (idle connections never have them).
    rare: Option<Box<Rare>>,
}

/// What an accepted connection has once it publishes, is published to with topic aliases, or
/// resumes with more in flight than the client takes.
#[derive(Debug, Default)]
struct Rare {
    /// The topic the client last published to, shared with the messages routed since.
    last_topic: Option<ByteString>,
    /// Topic aliases (MQTT 5), client -> broker: alias -> topic.
    inbound: Vec<Option<ByteString>>,
    /// Topic aliases, broker -> client: topic -> alias.
    outbound: HashMap<ByteString, u16>,
    /// On resume, unacknowledged PUBLISH packets beyond the client's Receive Maximum wait here
    /// (packet ids, oldest first) and are resent (DUP = 1, same id) as acknowledgements free
    /// the window.
    resend: VecDeque<u16>,
}

/// Per-connection protocol state machine.
#[derive(Debug)]
pub struct Connection {
    limits: Arc<ProtocolLimits>,
    /// When the last byte from the client came (`keepalive::Stamp`: 8 bytes, exact).
    last_rx: Stamp,
    /// Set by the CONNECT, in every phase after it (a refused CONNECT's CONNACK is encoded
    /// with it); `None` before, so also after an unsupported protocol level.
    version: Option<ProtocolVersion>,
    /// Effective keep alive, set by the CONNECT (0 before).
    keep_alive: u16,
    /// Topic ACL bound to this client's identity (None: everything allowed).
    acl: Option<Box<ClientAcl>>,
    /// The client's Maximum Packet Size (MQTT 5 CONNECT; u32::MAX otherwise): binds every
    /// packet sent [MQTT-3.1.2-24], see [`Connection::bound_sends`].
    client_max_packet: u32,
    phase: Phase,
}

impl Connection {
    pub fn new(limits: Arc<ProtocolLimits>, now: Instant) -> Self {
        Connection {
            limits,
            last_rx: Stamp::new(now),
            version: None,
            keep_alive: 0,
            acl: None,
            client_max_packet: u32::MAX,
            phase: Phase::AwaitConnect { opened: now },
        }
    }

    // --- accessors ----------------------------------------------------------------------

    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }
    /// The client id once the CONNECT is accepted (assigned ids included).
    pub fn client_id(&self) -> Option<&ByteString> {
        self.session().map(|s| &*s.client_id)
    }

    /// Name the session with the broker's copy of its client id, so that they share one
    /// allocation (after `accept_connect` with an assigned id). Nothing changes unless the
    /// strings are equal.
    pub fn share_client_id(&mut self, id: &ClientId) {
        if let Some(s) = self.session_mut() {
            s.share_client_id(id);
        }
    }
    /// Effective keep alive in seconds (0 = none, also before CONNECT).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }
    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected(_))
    }
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed(_))
    }
    pub fn session(&self) -> Option<&Session> {
        match &self.phase {
            Phase::Connected(c) => Some(&c.session),
            Phase::Closed(s) => s.as_ref(),
            Phase::AwaitConnect { .. } | Phase::AwaitBroker(_) => None,
        }
    }
    /// The session, to collect its journal (`Session::jot`) for the log.
    pub(crate) fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.phase {
            Phase::Connected(c) => Some(&mut c.session),
            Phase::Closed(s) => s.as_mut(),
            Phase::AwaitConnect { .. } | Phase::AwaitBroker(_) => None,
        }
    }
    /// Move the session out (after `Close`, for the broker to keep, hand over or drop).
    /// `None` before `Close` (a live connection keeps its session) and once taken.
    pub fn take_session(&mut self) -> Option<Session> {
        match &mut self.phase {
            Phase::Closed(s) => s.take(),
            Phase::AwaitConnect { .. } | Phase::AwaitBroker(_) | Phase::Connected(_) => None,
        }
    }

    /// The broker routed the message of `ack` (this connection's PUBACK / PUBREC, not sent
    /// yet) and no subscription matched it: say so with reason 0x10 No matching subscribers
    /// (MQTT 5 sections 3.4.2.1 and 3.5.2.1; a success code, so a QoS 2 flow goes on with
    /// PUBREL / PUBCOMP). Only an MQTT 5 connection, with `no_matching_subscribers_reason`
    /// on, and only a success ack. Returns whether the ack changed. The ack is then 5 bytes,
    /// never more than the smallest MQTT 5 CONNACK the client accepted, so it fits the
    /// client's Maximum Packet Size. The broker decides "no subscription"; see
    /// `broker::router`.
    pub fn no_matching_subscribers(&self, ack: &mut Packet) -> bool {
        if !self.limits.no_matching_subscribers_reason || !self.version.is_some_and(|v| v.is_v5()) {
            return false;
        }
        match ack {
            Packet::PubAck(r) | Packet::PubRec(r) if r.reason == ReasonCode::SUCCESS => {
                r.reason = ReasonCode::NO_MATCHING_SUBSCRIBERS;
                true
            }
            _ => false,
        }
    }

    // --- time ---------------------------------------------------------------------------

    /// Any bytes from the client (even a partial packet) reset the keep-alive timer.
    pub fn on_bytes_received(&mut self, now: Instant) {
        received(&mut self.last_rx, now);
    }

    /// When `on_timer` must be called: CONNECT timeout until the CONNECT is accepted, then
    /// 1.5 x keep alive after the last received byte; `None` if keep alive is 0 or closed.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitConnect { opened } => Some(opened + self.limits.connect_timeout),
            Phase::AwaitBroker(ref pc) => Some(pc.opened + self.limits.connect_timeout),
            Phase::Connected(_) => keepalive::deadline(self.last_rx.instant(), self.keep_alive),
            Phase::Closed(_) => None,
        }
    }

    /// Past the deadline: CONNECT timeout (close, nothing sent) or keep-alive timeout
    /// (MQTT 5 DISCONNECT 0x8D, then close with the will). Before the deadline: nothing.
    pub fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.on_timer_inner(now, out);
        self.bound_sends(start, now, out);
    }

    fn on_timer_inner(&mut self, now: Instant, out: &mut Vec<Action>) {
        match self.deadline() {
            Some(d) if now >= d => {}
            _ => return,
        }
        match self.phase {
            Phase::Connected(_) => self.fail(ReasonCode::KEEP_ALIVE_TIMEOUT, now, out),
            _ => self.close(None, End::Abnormal, now, out),
        }
    }

    // --- inbound ------------------------------------------------------------------------

    /// One decoded packet from the client.
    pub fn handle(&mut self, packet: Packet, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.handle_inner(packet, now, out);
        self.bound_sends(start, now, out);
    }

    fn handle_inner(&mut self, packet: Packet, now: Instant, out: &mut Vec<Action>) {
        self.on_bytes_received(now);
        match &mut self.phase {
            Phase::Closed(_) => {}
            Phase::AwaitConnect { .. } => match packet {
                Packet::Connect(c) => self.on_connect(*c, out),
                // The first packet must be CONNECT: close, no CONNACK.
                _ => self.close(Some(ReasonCode::PROTOCOL_ERROR), End::Abnormal, now, out),
            },
            Phase::AwaitBroker(pc) => {
                if matches!(packet, Packet::Connect(_)) {
                    // Second CONNECT; no DISCONNECT may precede CONNACK.
                    self.close(Some(ReasonCode::PROTOCOL_ERROR), End::Abnormal, now, out);
                } else if pc.pending.len() >= self.limits.max_pending_before_connack {
                    self.close(Some(ReasonCode::QUOTA_EXCEEDED), End::Abnormal, now, out);
                } else {
                    pc.pending.push(packet);
                }
            }
            Phase::Connected(c) => {
                let r = c.on_packet(&self.limits, self.acl.as_deref(), packet, now, out);
                self.stop_if(r, now, out);
            }
        }
    }

    /// The decoder failed: MQTT 5 DISCONNECT with the error's reason (after CONNACK), or
    /// CONNACK 0x84 for an unsupported protocol version; then close (with the will once
    /// connected).
    pub fn on_decode_error(&mut self, err: &DecodeError, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.on_decode_error_inner(err, now, out);
        self.bound_sends(start, now, out);
    }

    fn on_decode_error_inner(&mut self, err: &DecodeError, now: Instant, out: &mut Vec<Action>) {
        let code = decode_error_code(err, matches!(self.phase, Phase::AwaitConnect { .. }));
        match self.phase {
            Phase::AwaitConnect { .. } => {
                if matches!(err, DecodeError::UnsupportedProtocolVersion(_)) {
                    out.push(Action::Send(connack(
                        false,
                        code,
                        ConnAckProperties::default(),
                    )));
                }
                self.close(Some(code), End::Abnormal, now, out);
            }
            Phase::AwaitBroker(_) => self.close(Some(code), End::Abnormal, now, out),
            Phase::Connected(_) => self.fail(code, now, out),
            Phase::Closed(_) => {}
        }
    }

    /// The network connection ended without DISCONNECT (EOF, I/O error): close with the will.
    pub fn connection_lost(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.close(None, End::Abnormal, now, out);
    }

    // --- broker decisions -----------------------------------------------------------------

    /// Accept the pending CONNECT. `session`: the existing session to resume (ignored when the
    /// CONNECT had Clean Start = 1). `assigned_client_id`: required when the CONNECT's client id
    /// was empty (otherwise CONNACK 0x85), ignored otherwise; see [`generate_client_id`].
    /// Sends CONNACK, resends inflight PUBLISH (DUP = 1, within the client's new Receive
    /// Maximum; the rest as acknowledgements come) and PUBREL in order, drains the queue,
    /// then processes packets the client pipelined after CONNECT. No-op unless a CONNECT awaits.
    pub fn accept_connect(
        &mut self,
        session: Option<Session>,
        assigned_client_id: Option<ByteString>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let start = out.len();
        self.accept_connect_inner(session, assigned_client_id, now, out);
        self.bound_sends(start, now, out);
    }

    fn accept_connect_inner(
        &mut self,
        session: Option<Session>,
        assigned_client_id: Option<ByteString>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let pc = match std::mem::replace(&mut self.phase, Phase::Closed(None)) {
            Phase::AwaitBroker(pc) => pc,
            other => {
                self.phase = other;
                return;
            }
        };
        let assigned = pc.client_id.is_empty();
        let assigned_client_id = assigned_client_id.filter(|id| assigned && !id.is_empty());
        if assigned && assigned_client_id.is_none() {
            self.phase = Phase::AwaitBroker(pc);
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, now, out);
        }
        let PendingConnect {
            opened: _,
            version,
            client_id,
            clean_start,
            requested_expiry,
            session_expiry,
            server_keep_alive,
            will,
            client_receive_max,
            client_max_packet,
            client_topic_alias_max,
            pending,
        } = *pc;
        let client_id = assigned_client_id.map(ClientId::new).unwrap_or(client_id);
        let v5 = version.is_v5();
        let session = if clean_start { None } else { session };
        // MQTT 3.1 has no Session Present flag.
        let session_present = session.is_some() && version != ProtocolVersion::V31;
        let mut s = session.unwrap_or_else(|| Session::with_id(client_id.clone(), version));
        s.client_id = client_id.clone();
        s.version = version;
        s.session_expiry = session_expiry;
        s.will = will.map(Box::new);
        // A session that outlives its connection is written whole to the log before the
        // CONNACK leaves (the core collects the image), then change by change.
        s.set_journal(
            (self.limits.durable && session_expiry > 0).then(|| super::state::Journal {
                buf: Vec::new(),
                image: true,
            }),
        );

        let mut props = ConnAckProperties::default();
        if v5 {
            let l = &self.limits;
            if session_expiry != requested_expiry {
                props.session_expiry_interval = Some(session_expiry);
            }
            if l.receive_maximum < u16::MAX {
                props.receive_maximum = Some(l.receive_maximum.max(1));
            }
            if l.max_qos < QoS::ExactlyOnce {
                props.maximum_qos = Some(l.max_qos as u8);
            }
            if !l.retain_available {
                props.retain_available = Some(0);
            }
            props.maximum_packet_size = Some(l.max_packet_size);
            if assigned {
                props.assigned_client_identifier = Some((*client_id).clone());
            }
            if l.topic_alias_maximum > 0 {
                props.topic_alias_maximum = Some(l.topic_alias_maximum);
            }
            if !l.wildcard_available {
                props.wildcard_subscription_available = Some(0);
            }
            if !l.sub_ids_available {
                props.subscription_identifiers_available = Some(0);
            }
            if !l.shared_available {
                props.shared_subscription_available = Some(0);
            }
            props.server_keep_alive = server_keep_alive;
        }
        let mut ack = connack(session_present, ReasonCode::SUCCESS, props);
        let ack_fits = fit_packet(&mut ack, version, client_max_packet);
        let mut c = Connected {
            session: s,
            connect_expiry_zero: requested_expiry == 0,
            writable: true,
            client_receive_max,
            client_topic_alias_max,
            client_max_packet,
            rare: None,
        };
        if !ack_fits {
            // [MQTT-3.1.2-24]: not even the CONNACK fits the client's Maximum Packet Size.
            // Accepted (the session stays for `take_session`) but closed at once: nothing sent,
            // nothing resent, pipelined packets not processed.
            self.phase = Phase::Connected(c);
            return self.close(Some(ReasonCode::PACKET_TOO_LARGE), End::Abnormal, now, out);
        }
        out.push(Action::Send(ack));
        c.resend_inflight(&self.limits, now, out);
        c.drain(&self.limits, now, out);
        self.phase = Phase::Connected(c);
        for p in pending {
            let Phase::Connected(c) = &mut self.phase else {
                break;
            };
            let r = c.on_packet(&self.limits, self.acl.as_deref(), p, now, out);
            self.stop_if(r, now, out);
        }
    }

    /// Bind a topic ACL: PUBLISH needs write access (refused: MQTT 5 QoS 1/2 get PUBACK/PUBREC
    /// 0x87, QoS 0 and 3.1.1 are dropped silently, 3.1.1 QoS 1/2 still acknowledged normally),
    /// each SUBSCRIBE filter needs read access (refused: SUBACK 0x87 / 3.1.1 0x80).
    /// After an ACL reload: the same identity, the new rules (no ACL bound: nothing to do).
    pub fn replace_acl_rules(&mut self, acl: &Arc<crate::auth::Acl>) {
        if let Some(a) = self.acl.as_mut() {
            a.acl = Arc::clone(acl);
        }
    }

    pub fn set_acl(&mut self, acl: Option<ClientAcl>) {
        self.acl = acl.map(Box::new);
    }

    /// Refuse the pending CONNECT with `code` (CONNACK, then close). No-op unless a CONNECT awaits.
    pub fn refuse_connect(&mut self, code: ReasonCode, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.refuse_connect_inner(code, now, out);
        self.bound_sends(start, now, out);
    }

    fn refuse_connect_inner(&mut self, code: ReasonCode, now: Instant, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::AwaitBroker(_)) {
            self.refuse(code, now, out);
        }
    }

    /// Another connection takes this client id over: MQTT 5 DISCONNECT 0x8E, then close. The
    /// will follows [`will::on_takeover`] with the new connection's Clean Start.
    pub fn take_over(&mut self, new_clean_start: bool, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.take_over_inner(new_clean_start, now, out);
        self.bound_sends(start, now, out);
    }

    fn take_over_inner(&mut self, new_clean_start: bool, now: Instant, out: &mut Vec<Action>) {
        if self.is_connected() && self.is_v5() {
            out.push(send_disconnect(ReasonCode::SESSION_TAKEN_OVER));
        }
        self.close(
            Some(ReasonCode::SESSION_TAKEN_OVER),
            End::Takeover { new_clean_start },
            now,
            out,
        );
    }

    /// Server shutdown: MQTT 5 DISCONNECT 0x8B, then close; the will is published now.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.shutdown_inner(now, out);
        self.bound_sends(start, now, out);
    }

    fn shutdown_inner(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.is_connected() && self.is_v5() {
            out.push(send_disconnect(ReasonCode::SERVER_SHUTTING_DOWN));
        }
        self.close(
            Some(ReasonCode::SERVER_SHUTTING_DOWN),
            End::Shutdown,
            now,
            out,
        );
    }

    // --- outbound -----------------------------------------------------------------------

    /// Deliver a routed message to this client. `can_write`: the socket takes more bytes now
    /// (false: QoS 0 is dropped and QoS 1/2 queued until [`Self::on_writable`]). Sends at
    /// min(message QoS, granted QoS) within the client's Receive Maximum (queued beyond it),
    /// drops what exceeds the client's Maximum Packet Size or has expired (counted in
    /// [`Session::stats`]). On a closed connection the message goes to the session queue
    /// ([`Session::deliver_offline`]); before CONNACK it is ignored.
    pub fn deliver(
        &mut self,
        msg: &Message,
        delivery: &Delivery,
        now: Instant,
        can_write: bool,
        out: &mut Vec<Action>,
    ) {
        match &mut self.phase {
            Phase::Connected(c) => c.deliver(&self.limits, msg, delivery, now, can_write, out),
            Phase::Closed(Some(s)) => {
                s.deliver_offline(msg, delivery, now, &self.limits);
            }
            Phase::Closed(None) | Phase::AwaitConnect { .. } | Phase::AwaitBroker(_) => {}
        }
    }

    /// The socket can take more: send queued messages within the Receive Maximum window.
    pub fn on_writable(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Phase::Connected(c) = &mut self.phase {
            c.writable = true;
            c.drain(&self.limits, now, out);
        }
    }

    // --- internals ----------------------------------------------------------------------

    fn is_v5(&self) -> bool {
        self.version.is_some_and(ProtocolVersion::is_v5)
    }

    fn on_connect(&mut self, c: Connect, out: &mut Vec<Action>) {
        let version = c.protocol;
        self.version = Some(version);
        let v5 = version.is_v5();
        let l = Arc::clone(&self.limits);
        let now = self.last_rx.instant();
        let p = &c.properties;
        if v5 && (p.receive_maximum == Some(0) || p.maximum_packet_size == Some(0)) {
            return self.refuse(ReasonCode::PROTOCOL_ERROR, now, out);
        }
        if v5 {
            self.client_max_packet = p.maximum_packet_size.unwrap_or(u32::MAX);
        }
        if p.authentication_method.is_some() {
            // No enhanced authentication method is supported.
            return self.refuse(ReasonCode::BAD_AUTHENTICATION_METHOD, now, out);
        }
        if c.client_id.is_empty() && !v5 && !c.clean_start {
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, now, out);
        }
        // MQTT 3.1 section 3.1: the Client Identifier is 1 to 23 characters (no assigned ids);
        // longer ones only with `v31_strict_client_id`.
        if version == ProtocolVersion::V31
            && (c.client_id.is_empty() || (l.v31_strict_client_id && c.client_id.len() > 23))
        {
            return self.refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, now, out);
        }
        if let Some(w) = &c.will {
            if w.qos > l.max_qos {
                return self.refuse(ReasonCode::QOS_NOT_SUPPORTED, now, out);
            }
            if w.retain && !l.retain_available {
                return self.refuse(ReasonCode::RETAIN_NOT_SUPPORTED, now, out);
            }
            if v5
                && w.properties.payload_format_indicator == Some(1)
                && std::str::from_utf8(&w.payload).is_err()
            {
                return self.refuse(ReasonCode::PAYLOAD_FORMAT_INVALID, now, out);
            }
        }
        let (effective, server_keep_alive) = match keepalive::negotiate(version, c.keep_alive, &l) {
            KeepAlive::Use {
                effective,
                server_keep_alive,
            } => (effective, server_keep_alive),
            KeepAlive::Refuse => return self.refuse(ReasonCode::SERVER_UNAVAILABLE, now, out),
        };
        self.keep_alive = effective;
        let (requested_expiry, session_expiry) = if v5 {
            let r = p.session_expiry_interval.unwrap_or(0);
            (r, r.min(l.max_session_expiry))
        } else if c.clean_start {
            (0, 0)
        } else {
            let e = l.v311_persistent_session_expiry;
            (e, e)
        };
        let opened = match self.phase {
            Phase::AwaitConnect { opened } => opened,
            _ => now,
        };
        // One allocation for the id, shared by the request, the session and the broker's
        // tables; the string itself is never cloned.
        let client_id = ClientId::new(c.client_id);
        out.push(Action::Connect(ConnectRequest {
            version,
            client_id: client_id.clone(),
            clean_start: c.clean_start,
            session_expiry,
            keep_alive: effective,
            will: c.will.clone(),
            username: c.username,
            password: c.password,
        }));
        self.phase = Phase::AwaitBroker(Box::new(PendingConnect {
            opened,
            version,
            client_id,
            clean_start: c.clean_start,
            requested_expiry,
            session_expiry,
            server_keep_alive,
            will: c.will,
            client_receive_max: if v5 {
                p.receive_maximum.unwrap_or(u16::MAX)
            } else {
                u16::MAX
            },
            client_max_packet: if v5 {
                p.maximum_packet_size.unwrap_or(u32::MAX)
            } else {
                u32::MAX
            },
            client_topic_alias_max: if v5 {
                p.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
            pending: Vec::new(),
        }));
    }

    /// A PUBLISH read in place by the worker ([`crate::protocol::decode_publish_view`]): the
    /// same as `handle(Packet::Publish(..))`, but the topic and payload are copied only if the
    /// message is routed (and a topic equal to the previous one is shared, not copied).
    pub fn handle_publish(&mut self, p: PublishView<'_>, now: Instant, out: &mut Vec<Action>) {
        let start = out.len();
        self.handle_publish_inner(p, now, out);
        self.bound_sends(start, now, out);
    }

    fn handle_publish_inner(&mut self, p: PublishView<'_>, now: Instant, out: &mut Vec<Action>) {
        let Phase::Connected(c) = &mut self.phase else {
            match p.to_publish() {
                Ok(p) => self.handle(Packet::Publish(p), now, out),
                Err(e) => self.on_decode_error(&e, now, out),
            }
            return;
        };
        received(&mut self.last_rx, now);
        let r = c
            .on_publish(&self.limits, self.acl.as_deref(), p, now, out)
            .map_err(Stop::Fail);
        self.stop_if(r, now, out);
    }

    /// Apply what a packet handled while connected decided.
    fn stop_if(&mut self, r: Result<(), Stop>, now: Instant, out: &mut Vec<Action>) {
        match r {
            Ok(()) => {}
            Err(Stop::Fail(code)) => self.fail(code, now, out),
            Err(Stop::Disconnect(reason, end)) => self.close(Some(reason), end, now, out),
        }
    }

    /// Protocol violation or timeout after CONNACK: MQTT 5 DISCONNECT `code`, then close with
    /// the will. Before CONNACK: close only.
    fn fail(&mut self, code: ReasonCode, now: Instant, out: &mut Vec<Action>) {
        if self.is_connected() && self.is_v5() {
            out.push(send_disconnect(code));
        }
        self.close(Some(code), End::Abnormal, now, out);
    }

    fn refuse(&mut self, code: ReasonCode, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::Send(connack(
            false,
            code,
            ConnAckProperties::default(),
        )));
        self.close(Some(code), End::Abnormal, now, out);
    }

    /// The client's Maximum Packet Size binds every packet the broker sends, CONNACK included
    /// [MQTT-3.1.2-24]. Checks the packets queued since `start` (PUBLISH was checked when it was
    /// built and is withheld there): one too large loses its Reason String and User Properties
    /// first [MQTT-3.1.2-25]; one still too large is not sent, nor is any packet after it, and
    /// the connection closes (reason 0x95, the will as for any abnormal end). The other actions
    /// stay, so the broker's index keeps matching the session.
    fn bound_sends(&mut self, start: usize, now: Instant, out: &mut Vec<Action>) {
        let max = self.client_max_packet;
        let Some(version) = self.version else { return };
        if max == u32::MAX || out.len() <= start {
            return;
        }
        let cut = out[start..].iter_mut().position(|a| match a {
            Action::Send(Packet::Publish(_)) => false,
            Action::Send(p) => !fit_packet(p, version, max),
            _ => false,
        });
        let Some(cut) = cut.map(|i| start + i) else {
            return;
        };
        let mut i = 0;
        out.retain(|a| {
            let keep = i < cut || !matches!(a, Action::Send(_));
            i += 1;
            keep
        });
        self.close(Some(ReasonCode::PACKET_TOO_LARGE), End::Abnormal, now, out);
    }

    /// Emit `Close` (once) and move to `Closed`, keeping the session for `take_session`.
    /// The will is decided only for a connection that was accepted.
    fn close(&mut self, reason: Option<ReasonCode>, end: End, now: Instant, out: &mut Vec<Action>) {
        let (session, will) = match std::mem::replace(&mut self.phase, Phase::Closed(None)) {
            Phase::Closed(s) => {
                self.phase = Phase::Closed(s);
                return;
            }
            Phase::AwaitConnect { .. } | Phase::AwaitBroker(_) => (None, None),
            Phase::Connected(c) => {
                let mut s = c.session;
                let will = s.will.take().and_then(|w| pending_will(&s, &w, end, now));
                (Some(s), will)
            }
        };
        self.phase = Phase::Closed(session);
        out.push(Action::Close { reason, will });
    }
}

impl Connected {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Unacknowledged messages of a resumed session waiting for the window.
    fn resend_len(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| r.resend.len())
    }

    /// Packet id `id` is no longer to be resent.
    fn unresend(&mut self, id: u16) {
        if let Some(r) = self.rare.as_mut() {
            r.resend.retain(|&x| x != id);
        }
    }

    fn is_v5(&self) -> bool {
        self.session.version.is_v5()
    }

    /// One packet after CONNACK. `Err`: the connection ends (the caller closes it).
    fn on_packet(
        &mut self,
        l: &ProtocolLimits,
        acl: Option<&ClientAcl>,
        packet: Packet,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), Stop> {
        match packet {
            Packet::Connect(_) => return Err(Stop::Fail(ReasonCode::PROTOCOL_ERROR)),
            Packet::Publish(p) => self.on_publish(l, acl, PublishView::of(&p), now, out)?,
            Packet::PubAck(r) => self.on_puback(l, r, now, out)?,
            Packet::PubRec(r) => self.on_pubrec(l, r, now, out)?,
            Packet::PubRel(r) => self.on_pubrel(r, out),
            Packet::PubComp(r) => self.on_pubcomp(l, r, now, out)?,
            Packet::Subscribe(s) => self.on_subscribe(l, acl, s, out)?,
            Packet::Unsubscribe(u) => self.on_unsubscribe(u, out),
            Packet::PingReq => out.push(Action::Send(Packet::PingResp)),
            Packet::Disconnect(d) => return Err(self.on_disconnect(l, d)),
            // No authentication method is ever accepted in CONNECT, so any AUTH is an error;
            // so are packets only a server sends.
            Packet::Auth(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => return Err(Stop::Fail(ReasonCode::PROTOCOL_ERROR)),
        }
        Ok(())
    }

    /// `Err(code)`: a protocol violation (the caller fails the connection with `code`).
    fn on_publish(
        &mut self,
        l: &ProtocolLimits,
        acl: Option<&ClientAcl>,
        p: PublishView<'_>,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), ReasonCode> {
        let v5 = self.is_v5();
        if p.qos > l.max_qos {
            return Err(ReasonCode::QOS_NOT_SUPPORTED);
        }
        if p.retain && !l.retain_available {
            return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
        }
        if p.qos != QoS::AtMostOnce && p.packet_id == 0 {
            return Err(ReasonCode::PROTOCOL_ERROR);
        }
        // The topic, resolved through the Topic Alias (MQTT 5) if any. A topic equal to the
        // previous one is shared, not copied (`topic_of`).
        let wire_topic = p.topic_bytes();
        let topic = match p.topic_alias {
            Some(a) if v5 => {
                if a == 0 || a > l.topic_alias_maximum {
                    return Err(ReasonCode::TOPIC_ALIAS_INVALID);
                }
                let idx = usize::from(a);
                if wire_topic.is_empty() {
                    let known = self.rare.as_ref().and_then(|a| a.inbound.get(idx));
                    match known.and_then(|t| t.clone()) {
                        Some(t) => t,
                        None => return Err(ReasonCode::PROTOCOL_ERROR),
                    }
                } else {
                    let topic = self.topic_of(p);
                    let inbound = &mut self.rare().inbound;
                    if inbound.len() <= idx {
                        inbound.resize(usize::from(l.topic_alias_maximum) + 1, None);
                    }
                    inbound[idx] = Some(topic.clone());
                    topic
                }
            }
            Some(_) => return Err(ReasonCode::PROTOCOL_ERROR),
            None => {
                if wire_topic.is_empty() {
                    return Err(ReasonCode::PROTOCOL_ERROR);
                }
                self.topic_of(p)
            }
        };
        // The decoder rejects these already; a packet built in memory may not have been decoded.
        if topic.contains(['+', '#', '\0']) {
            return Err(ReasonCode::TOPIC_NAME_INVALID);
        }
        let s = &mut self.session;
        let id = p.packet_id;
        let duplicate = p.qos == QoS::ExactlyOnce && s.extra().inbound_qos2.contains(&id);
        if p.qos != QoS::AtMostOnce
            && !duplicate
            && s.inbound_qos2_len() >= usize::from(l.receive_maximum)
        {
            return Err(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        }
        if duplicate {
            out.push(Action::Send(Packet::PubRec(PubResp::new(id))));
            return Ok(());
        }
        if v5 && p.payload_format_indicator == Some(1) && std::str::from_utf8(p.payload).is_err() {
            let r = PubResp {
                packet_id: id,
                reason: ReasonCode::PAYLOAD_FORMAT_INVALID,
                properties: AckProperties::default(),
            };
            match p.qos {
                QoS::AtMostOnce => return Err(ReasonCode::PAYLOAD_FORMAT_INVALID),
                QoS::AtLeastOnce => out.push(Action::Send(Packet::PubAck(r))),
                QoS::ExactlyOnce => out.push(Action::Send(Packet::PubRec(r))),
            }
            return Ok(());
        }
        if p.qos != QoS::AtMostOnce && l.storage_failed() {
            // The log cannot be written: no acknowledgement for what cannot be kept.
            if !v5 {
                return Err(ReasonCode::UNSPECIFIED_ERROR);
            }
            let mut r = PubResp::new(id);
            r.reason = ReasonCode::QUOTA_EXCEEDED;
            out.push(Action::Send(if p.qos == QoS::AtLeastOnce {
                Packet::PubAck(r)
            } else {
                Packet::PubRec(r)
            }));
            return Ok(());
        }
        if acl.is_some_and(|a| !a.can_publish(&topic)) {
            // Not forwarded. MQTT 5 says why; 3.1.1 acknowledges as for a message the server
            // chose not to forward (3.1.1 has no negative PUBACK).
            let mut r = PubResp::new(id);
            if v5 {
                r.reason = ReasonCode::NOT_AUTHORIZED;
            }
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => out.push(Action::Send(Packet::PubAck(r))),
                QoS::ExactlyOnce => {
                    if !v5 {
                        // The PUBREL that follows gets its PUBCOMP.
                        s.extra_mut().inbound_qos2.insert(id);
                    }
                    out.push(Action::Send(Packet::PubRec(r)));
                }
            }
            return Ok(());
        }
        // `properties` copies nothing for a PUBLISH with only the in-place properties.
        let mut props = if !v5 {
            PublishProperties::default()
        } else {
            match p.properties() {
                Ok(props) => props,
                // As `on_decode_error` after CONNACK.
                Err(e) => return Err(decode_error_code(&e, false)),
            }
        };
        props.topic_alias = None;
        props.subscription_identifiers.clear();
        let expires_at = props
            .message_expiry_interval
            .map(|secs| now + Duration::from_secs(u64::from(secs)));
        let msg = Message::new(MessageData {
            topic,
            payload: Bytes::copy_from_slice(p.payload),
            qos: p.qos,
            retain: p.retain,
            properties: props,
            expires_at,
            publisher: Some((*s.client_id).clone()),
        });
        out.push(Action::Publish(msg));
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => out.push(Action::Send(Packet::PubAck(PubResp::new(id)))),
            QoS::ExactlyOnce => {
                s.extra_mut().inbound_qos2.insert(id);
                out.push(Action::Send(Packet::PubRec(PubResp::new(id))));
            }
        }
        Ok(())
    }

    /// The topic of `p` as a shared string: the previous PUBLISH's topic when the bytes are
    /// the same (a publisher usually repeats its topics), a new copy otherwise (then
    /// remembered).
    fn topic_of(&mut self, p: PublishView<'_>) -> ByteString {
        let a = self.rare();
        match &a.last_topic {
            Some(t) if t.as_bytes() == p.topic_bytes() => t.clone(),
            _ => {
                let t = ByteString::from(p.topic());
                a.last_topic = Some(t.clone());
                t
            }
        }
    }

    fn on_pubrel(&mut self, r: PubResp, out: &mut Vec<Action>) {
        let v5 = self.is_v5();
        let mut resp = PubResp::new(r.packet_id);
        if self
            .session
            .extra_if_any()
            .is_some_and(|x| x.inbound_qos2.remove(&r.packet_id))
        {
            let id = r.packet_id;
            self.session
                .jot(|b| super::journal::put_id(b, super::journal::IN2_DONE, id));
        } else if v5 {
            resp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
        }
        out.push(Action::Send(Packet::PubComp(resp)));
    }

    /// An outbound delivery is over (acknowledged, or refused by the client's PUBREC): its
    /// packet id is free, it is not resent, and the window may take queued messages.
    fn complete(&mut self, l: &ProtocolLimits, id: u16, now: Instant, out: &mut Vec<Action>) {
        if self
            .session
            .extra_if_any()
            .is_some_and(|x| x.inflight.remove(&id).is_some())
        {
            self.session
                .jot(|b| super::journal::put_id(b, super::journal::DONE, id));
        }
        self.unresend(id);
        self.drain(l, now, out);
    }

    /// PUBACK: completes a QoS 1 delivery. For an id in flight as QoS 2 it does not fit the
    /// state: a protocol error (MQTT 5 section 4.13: QoS 2 is acknowledged by
    /// PUBREC/PUBCOMP). An unknown id is ignored (a duplicate after reconnect, or a message
    /// dropped meanwhile).
    fn on_puback(
        &mut self,
        l: &ProtocolLimits,
        r: PubResp,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), ReasonCode> {
        match self
            .session
            .extra()
            .inflight
            .get(&r.packet_id)
            .map(|e| &e.state)
        {
            None => {}
            Some(InflightState::Qos1(_)) => self.complete(l, r.packet_id, now, out),
            Some(InflightState::Qos2(_) | InflightState::Released) => {
                return Err(ReasonCode::PROTOCOL_ERROR)
            }
        }
        Ok(())
    }

    /// PUBREC: releases a QoS 2 delivery (PUBREL), again for a duplicate PUBREC. For an id in
    /// flight as QoS 1 it does not fit the state: a protocol error (section 4.13). An unknown id
    /// gets PUBREL 0x92 Packet Identifier not found in MQTT 5 (section 4.3.3), nothing in 3.1.1.
    fn on_pubrec(
        &mut self,
        l: &ProtocolLimits,
        r: PubResp,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), ReasonCode> {
        let v5 = self.is_v5();
        let id = r.packet_id;
        let s = &mut self.session;
        let state = s
            .extra_if_any()
            .and_then(|x| x.inflight.get_mut(&id))
            .map(|e| &mut e.state);
        match state {
            Some(state @ InflightState::Qos2(_)) => {
                if r.reason.is_error() {
                    self.complete(l, id, now, out);
                } else {
                    *state = InflightState::Released;
                    s.jot(|b| super::journal::put_id(b, super::journal::RELEASED, id));
                    self.unresend(id);
                    out.push(Action::Send(Packet::PubRel(PubResp::new(id))));
                }
            }
            Some(InflightState::Released) => {
                out.push(Action::Send(Packet::PubRel(PubResp::new(id))));
            }
            Some(InflightState::Qos1(_)) => return Err(ReasonCode::PROTOCOL_ERROR),
            None => {
                if v5 {
                    let mut resp = PubResp::new(id);
                    resp.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
                    out.push(Action::Send(Packet::PubRel(resp)));
                }
            }
        }
        Ok(())
    }

    /// PUBCOMP: completes a released QoS 2 delivery. Before the PUBREL was sent (QoS 2 still
    /// awaiting PUBREC) or for a QoS 1 id it does not fit the state: a protocol error
    /// (section 4.13). An unknown id is ignored (a duplicate after reconnect).
    fn on_pubcomp(
        &mut self,
        l: &ProtocolLimits,
        r: PubResp,
        now: Instant,
        out: &mut Vec<Action>,
    ) -> Result<(), ReasonCode> {
        match self
            .session
            .extra()
            .inflight
            .get(&r.packet_id)
            .map(|e| &e.state)
        {
            None => {}
            Some(InflightState::Released) => self.complete(l, r.packet_id, now, out),
            Some(InflightState::Qos1(_) | InflightState::Qos2(_)) => {
                return Err(ReasonCode::PROTOCOL_ERROR)
            }
        }
        Ok(())
    }

    /// `Err(code)`: a protocol violation (the caller fails the connection with `code`).
    fn on_subscribe(
        &mut self,
        l: &ProtocolLimits,
        acl: Option<&ClientAcl>,
        sub: Subscribe,
        out: &mut Vec<Action>,
    ) -> Result<(), ReasonCode> {
        let v5 = self.is_v5();
        let sub_id = sub.properties.subscription_identifier;
        if sub_id == Some(0) {
            return Err(ReasonCode::PROTOCOL_ERROR);
        }
        if v5
            && sub
                .filters
                .iter()
                .any(|(f, o)| o.no_local && f.starts_with("$share/"))
        {
            return Err(ReasonCode::PROTOCOL_ERROR);
        }
        let code_of = |filter: &ByteString, opts: &SubscriptionOptions| {
            if !valid_filter(filter) {
                ReasonCode::TOPIC_FILTER_INVALID
            } else if !l.wildcard_available && filter.contains(['+', '#']) {
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
            } else if !l.shared_available && filter.starts_with("$share/") {
                ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            } else if !l.sub_ids_available && sub_id.is_some() {
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
            } else if v5 && opts.retain_handling > 2 {
                ReasonCode::PROTOCOL_ERROR
            } else if acl.is_some_and(|a| !a.can_subscribe(filter)) {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            }
        };
        if self.session.version == ProtocolVersion::V31 {
            // MQTT 3.1 SUBACK has no failure code (section 3.9: granted QoS only), and granting
            // a refused filter would lie: a refused filter closes the connection, nothing of
            // this SUBSCRIBE applied (as 3.1 brokers did).
            if let Some(code) = sub
                .filters
                .iter()
                .map(|(f, o)| code_of(f, o))
                .find(|c| c.is_error())
            {
                return Err(code);
            }
        }
        let s = &mut self.session;
        let mut reasons = Vec::with_capacity(sub.filters.len());
        let mut actions = Vec::with_capacity(sub.filters.len());
        for (filter, opts) in sub.filters {
            let code = code_of(&filter, &opts);
            if code.is_error() {
                reasons.push(if v5 {
                    code
                } else {
                    ReasonCode::UNSPECIFIED_ERROR
                });
                continue;
            }
            let granted = opts.qos.min(l.max_qos);
            let options = SubscriptionOptions {
                qos: granted,
                ..opts
            };
            let entry = Subscription {
                options,
                subscription_id: sub_id,
            };
            s.jot(|b| super::journal::put_sub(b, &filter, &entry.options, entry.subscription_id));
            let existed = s.subscriptions.insert(filter.clone(), entry).is_some();
            reasons.push(ReasonCode(granted as u8));
            actions.push(Action::Subscribe {
                filter,
                options,
                subscription_id: sub_id,
                existed,
            });
        }
        out.push(Action::Send(Packet::SubAck(SubAck {
            packet_id: sub.packet_id,
            reasons,
            properties: AckProperties::default(),
        })));
        out.extend(actions);
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: Unsubscribe, out: &mut Vec<Action>) {
        let v5 = self.is_v5();
        let s = &mut self.session;
        let mut reasons = Vec::new();
        let mut actions = Vec::with_capacity(u.filters.len());
        for filter in u.filters {
            if !valid_filter(&filter) {
                // MQTT 5 section 3.11.3: 0x8F for that filter (3.1.1: no per-filter answer).
                if v5 {
                    reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                }
                continue;
            }
            let existed = s.subscriptions.remove(&filter).is_some();
            if existed {
                s.jot(|b| super::journal::put_unsub(b, &filter));
            }
            if v5 {
                reasons.push(if existed {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                });
            }
            if existed {
                actions.push(Action::Unsubscribe { filter });
            }
        }
        out.push(Action::Send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: AckProperties::default(),
        })));
        out.extend(actions);
    }

    /// The client's DISCONNECT: how the connection ends (a DISCONNECT that raises a zero
    /// Session Expiry Interval is a protocol error).
    fn on_disconnect(&mut self, l: &ProtocolLimits, d: Disconnect) -> Stop {
        if let Some(new) = d.properties.session_expiry_interval {
            if self.connect_expiry_zero && new != 0 {
                return Stop::Fail(ReasonCode::PROTOCOL_ERROR);
            }
            let e = new.min(l.max_session_expiry);
            if e != self.session.session_expiry && e > 0 {
                self.session.jot(|b| {
                    b.push(super::journal::EXPIRY);
                    super::journal::put_u32(b, e);
                });
            }
            self.session.session_expiry = e;
        }
        let end = if d.reason == ReasonCode::NORMAL_DISCONNECTION {
            End::Normal
        } else {
            End::Abnormal
        };
        Stop::Disconnect(d.reason, end)
    }

    /// See [`Connection::deliver`] (the connected case).
    fn deliver(
        &mut self,
        l: &ProtocolLimits,
        msg: &Message,
        delivery: &Delivery,
        now: Instant,
        can_write: bool,
        out: &mut Vec<Action>,
    ) {
        if msg.is_expired(now) {
            self.session.stats_mut().dropped_expired += 1;
            return;
        }
        let qos = msg.qos.min(delivery.qos);
        if qos == QoS::AtMostOnce && !can_write {
            self.session.stats_mut().dropped_qos0 += 1;
            self.writable = false;
            return;
        }
        self.writable = can_write;
        // Queued messages go first.
        self.drain(l, now, out);
        if qos != QoS::AtMostOnce
            && (!can_write || self.session.queued_len() > 0 || !self.window_open(l))
        {
            self.session.enqueue(msg, delivery, qos, l);
            return;
        }
        let q = Queued {
            msg: msg.clone(),
            qos,
            retain: delivery.retain_as_published && msg.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        };
        self.transmit(l, &q, now, out);
    }

    fn window(&self, l: &ProtocolLimits) -> usize {
        usize::from(self.client_receive_max.min(l.max_inflight_out).max(1))
    }

    fn window_open(&self, l: &ProtocolLimits) -> bool {
        self.session.inflight_len() < self.window(l)
    }

    /// Send queued messages while writable and (for QoS 1/2) the window allows.
    fn drain(&mut self, l: &ProtocolLimits, now: Instant, out: &mut Vec<Action>) {
        // Unacknowledged messages of a resumed session waiting for the window go first.
        while self.writable && self.resend_len() > 0 {
            let window = self.window(l);
            if self
                .session
                .inflight_len()
                .saturating_sub(self.resend_len())
                >= window
            {
                return;
            }
            if let Some(id) = self.rare.as_mut().and_then(|r| r.resend.pop_front()) {
                self.resend_publish(id, now, out);
            }
        }
        // Bounded by the queue length.
        while self.writable {
            let window_open = self.window_open(l);
            let s = &mut self.session;
            match s.extra().queue.front() {
                None => return,
                Some(q) if q.qos != QoS::AtMostOnce && !window_open => return,
                Some(_) => {}
            }
            let Some(q) = s.pop_queued() else { return };
            if q.msg.is_expired(now) {
                s.stats_mut().dropped_expired += 1;
                continue;
            }
            self.transmit(l, &q, now, out);
        }
    }

    /// Build, size-check, register in flight (QoS > 0) and send one PUBLISH.
    fn transmit(&mut self, l: &ProtocolLimits, q: &Queued, now: Instant, out: &mut Vec<Action>) {
        let v5 = self.is_v5();
        let mut properties = if v5 {
            q.msg.properties.clone()
        } else {
            PublishProperties::default()
        };
        if v5 {
            properties.topic_alias = None;
            properties.message_expiry_interval = q.msg.expires_at.map(|t| expiry_left(t, now));
            properties.subscription_identifiers = q.subscription_ids.clone();
        }
        // What goes on the wire; for QoS 1/2 the in-flight copy keeps the full topic.
        let mut wire = Publish {
            dup: false,
            qos: q.qos,
            retain: q.retain,
            topic: q.msg.topic.clone(),
            packet_id: if q.qos == QoS::AtMostOnce { 0 } else { 1 },
            payload: q.msg.payload.clone(),
            properties,
        };
        // Outbound topic alias.
        let alias_max = self
            .client_topic_alias_max
            .min(l.max_outbound_topic_aliases);
        let mut new_alias = None;
        if v5 && alias_max > 0 {
            let outbound = self.rare.as_ref().map(|a| &a.outbound);
            if let Some(&a) = outbound.and_then(|o| o.get(&wire.topic)) {
                wire.topic = ByteString::new();
                wire.properties.topic_alias = Some(a);
            } else if outbound.map_or(0, |o| o.len()) < usize::from(alias_max) {
                let a = outbound.map_or(0, |o| o.len()) as u16 + 1;
                wire.properties.topic_alias = Some(a);
                new_alias = Some(a);
            }
        }
        let s = &mut self.session;
        if publish_len(&wire, v5) > self.client_max_packet as usize {
            s.stats_mut().dropped_too_large += 1;
            return;
        }
        if let Some(a) = new_alias {
            self.rare
                .get_or_insert_with(Box::default)
                .outbound
                .insert(q.msg.topic.clone(), a);
        }
        if q.qos != QoS::AtMostOnce {
            let Some(id) = s.alloc_packet_id() else {
                // Cannot happen within the window; never lose the message silently.
                s.stats_mut().dropped_queue_full += 1;
                return;
            };
            wire.packet_id = id;
            let mut p = wire.clone();
            p.topic = q.msg.topic.clone();
            p.properties.topic_alias = None;
            let seq = s.next_seq();
            let state = if q.qos == QoS::AtLeastOnce {
                InflightState::Qos1(p)
            } else {
                InflightState::Qos2(p)
            };
            let e = super::state::Inflight {
                seq,
                state,
                expires_at: q.msg.expires_at,
            };
            s.jot(|b| {
                let p = match &e.state {
                    InflightState::Qos1(p) | InflightState::Qos2(p) => Some(p),
                    InflightState::Released => None,
                };
                super::journal::put_inflight(b, id, e.seq, e.expires_at, p)
            });
            s.extra_mut().inflight.insert(id, e);
        }
        out.push(Action::Send(Packet::Publish(wire)));
    }

    /// On resume: resend unacknowledged PUBLISH (DUP = 1, full topic) and PUBREL, in order.
    /// PUBREL always goes; PUBLISH only while the number of unacknowledged messages sent on this
    /// connection stays within the client's Receive Maximum (the rest wait in `resend`).
    fn resend_inflight(&mut self, l: &ProtocolLimits, now: Instant, out: &mut Vec<Action>) {
        let window = self.window(l);
        if let Some(r) = self.rare.as_mut() {
            r.resend = VecDeque::new();
        }
        let mut ids: Vec<(u64, u16, bool)> = self
            .session
            .extra()
            .inflight
            .iter()
            .map(|(id, e)| (e.seq, *id, matches!(e.state, InflightState::Released)))
            .collect();
        ids.sort_unstable();
        // Messages waiting for PUBCOMP are unacknowledged too: they use the window first.
        let mut outstanding = ids.iter().filter(|x| x.2).count();
        for (_, id, released) in ids {
            if released {
                out.push(Action::Send(Packet::PubRel(PubResp::new(id))));
            } else if outstanding < window && self.resend_len() == 0 {
                if self.resend_publish(id, now, out) {
                    outstanding += 1;
                }
            } else {
                self.rare().resend.push_back(id);
            }
        }
    }

    /// Resend one unacknowledged PUBLISH of the session (DUP = 1, original id); one that no
    /// longer fits the client's Maximum Packet Size is dropped (counted).
    /// Returns whether it was sent.
    /// MQTT 5: the Message Expiry Interval is the time left now.
    fn resend_publish(&mut self, id: u16, now: Instant, out: &mut Vec<Action>) -> bool {
        let v5 = self.is_v5();
        let max = self.client_max_packet as usize;
        let s = &mut self.session;
        let Some(e) = s.extra().inflight.get(&id) else {
            return false;
        };
        let (InflightState::Qos1(p) | InflightState::Qos2(p)) = &e.state else {
            return false;
        };
        let mut p = p.clone();
        p.dup = true;
        if !v5 {
            p.properties = PublishProperties::default();
        } else if let Some(t) = e.expires_at {
            p.properties.message_expiry_interval = Some(expiry_left(t, now));
        }
        if publish_len(&p, v5) > max {
            let x = s.extra_mut();
            x.inflight.remove(&id);
            x.stats.dropped_too_large += 1;
            s.jot(|b| super::journal::put_id(b, super::journal::DONE, id));
            return false;
        }
        out.push(Action::Send(Packet::Publish(p)));
        true
    }
}

/// Any bytes from the client move the keep-alive clock (never backwards).
fn received(last_rx: &mut Stamp, now: Instant) {
    let now = Stamp::new(now);
    if now > *last_rx {
        *last_rx = now;
    }
}

/// The reason code a decoder error ends the connection with. After the first CONNECT, an
/// unsupported protocol level can only come from a second CONNECT: a protocol error (0x84 is
/// not a valid DISCONNECT reason code).
fn decode_error_code(err: &DecodeError, before_connect: bool) -> ReasonCode {
    match err {
        DecodeError::UnsupportedProtocolVersion(_) if !before_connect => ReasonCode::PROTOCOL_ERROR,
        _ => err.reason_code(),
    }
}

/// The will of an accepted connection that ends as `end`, by the will rules (`will.rs`).
fn pending_will(s: &Session, w: &Will, end: End, now: Instant) -> Option<PendingWill> {
    let delay = w.properties.will_delay_interval.unwrap_or(0);
    let decision = match end {
        End::Normal => WillDecision::Discard,
        End::Abnormal => will::on_connection_end(false, s.session_expiry, delay),
        End::Shutdown => WillDecision::PublishNow,
        End::Takeover { new_clean_start } => {
            will::on_takeover(s.version, new_clean_start, s.session_expiry, delay)
        }
    };
    let delay = match decision {
        WillDecision::Discard => return None,
        WillDecision::PublishNow => Duration::ZERO,
        WillDecision::Delay(d) => d,
    };
    Some(PendingWill {
        message: Message::from_will(w, &s.client_id, now + delay),
        delay,
    })
}

/// A deterministic client id for an empty CONNECT client id: `ringmq-{worker}-{counter}`
/// (the broker keeps one counter per worker, so ids are unique without coordination).
pub fn generate_client_id(worker: u32, counter: u64) -> ByteString {
    ByteString::from(format!("ringmq-{worker}-{counter}"))
}

fn connack(session_present: bool, code: ReasonCode, properties: ConnAckProperties) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present,
        code,
        properties,
    })
}

/// Whether `p` fits `max` bytes in `version` once its Reason String and User Properties are
/// dropped if it did not fit with them [MQTT-3.1.2-25] (they are the only optional parts; the
/// rest of a packet is what the protocol needs).
pub(crate) fn fit_packet(p: &mut Packet, version: ProtocolVersion, max: u32) -> bool {
    let fits = |p: &Packet| crate::protocol::encoded_len(p, version) <= max as usize;
    if fits(p) {
        return true;
    }
    match p {
        Packet::ConnAck(c) => {
            c.properties.reason_string = None;
            c.properties.user_properties.clear();
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            r.properties = AckProperties::default();
        }
        Packet::SubAck(a) => a.properties = AckProperties::default(),
        Packet::UnsubAck(a) => a.properties = AckProperties::default(),
        Packet::Disconnect(d) => {
            d.properties.reason_string = None;
            d.properties.user_properties.clear();
        }
        Packet::Auth(a) => {
            a.properties.reason_string = None;
            a.properties.user_properties.clear();
        }
        _ => return false,
    }
    fits(p)
}

fn send_disconnect(code: ReasonCode) -> Action {
    Action::Send(Packet::Disconnect(Disconnect::new(code)))
}

/// Topic filter rules (MQTT 5 section 4.7.1, shared form 4.8.2). The decoder leaves them to the
/// session: a well-formed but invalid filter gets its own SUBACK / UNSUBACK 0x8F.
fn valid_filter(f: &str) -> bool {
    crate::protocol::topic::validate_topic_filter(f).is_ok()
}

/// Message Expiry Interval to send: the whole seconds left (rounded up, at least 1).
fn expiry_left(expires_at: Instant, now: Instant) -> u32 {
    let left = expires_at.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Exact wire size of a PUBLISH (fixed header included).
pub(crate) fn publish_len(p: &Publish, v5: bool) -> usize {
    let mut rem = 2 + p.topic.len() + if p.qos == QoS::AtMostOnce { 0 } else { 2 };
    if v5 {
        let pr = &p.properties;
        let mut n = 0;
        n += pr.payload_format_indicator.map_or(0, |_| 2);
        n += pr.message_expiry_interval.map_or(0, |_| 5);
        n += pr.topic_alias.map_or(0, |_| 3);
        n += pr.response_topic.as_ref().map_or(0, |t| 3 + t.len());
        n += pr.correlation_data.as_ref().map_or(0, |d| 3 + d.len());
        n += pr.content_type.as_ref().map_or(0, |t| 3 + t.len());
        n += pr
            .user_properties
            .iter()
            .map(|(k, v)| 5 + k.len() + v.len())
            .sum::<usize>();
        n += pr
            .subscription_identifiers
            .iter()
            .map(|&id| 1 + varint_len(id as usize))
            .sum::<usize>();
        rem += varint_len(n) + n;
    }
    rem += p.payload.len();
    1 + varint_len(rem) + rem
}
