//! One worker: the [`Handler`] an io_uring engine drives. It frames bytes into packets, feeds
//! them to each connection's sans-IO state machine, and carries out the actions it returns.
//!
//! Where things are decided:
//! - protocol rules of one connection: `session::connection`;
//! - when a will is published: `session::will` (called from here and from `takeover.rs`);
//! - when a connection expires: `session::keepalive` computes the deadline; the timing wheel
//!   here only wakes us up to re-check it (lazy re-check, so a reset costs nothing);
//! - take-over and session hand-off between workers: `takeover.rs`;
//! - which sessions a PUBLISH reaches: `router.rs`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use slab::Slab;

use super::Shared;
use crate::metrics::{add, sub, WorkerMetrics};
use crate::ownership::SessionKey;
use crate::protocol::{self, Packet, ProtocolVersion};
use crate::routing::trie::SubscriptionTrie;
use crate::runtime::engine::{ConnId, Handler, Io};
use crate::runtime::wheel::TimerWheel;
use crate::session::{Action, Connection, Delivery, Message, PendingWill, Subscription};

/// A message between workers.
pub enum WorkerMsg {
    /// A PUBLISH to match against this worker's (non-shared) subscriptions.
    Publish(Message),
    /// Deliver to one session of this worker (a shared-subscription pick).
    Deliver {
        session: SessionKey,
        msg: Message,
        delivery: Delivery,
    },
    /// Take over the session `target` held here, for `claimant` (see takeover.rs).
    TakeOver(super::takeover::TakeOver),
    /// The answer to a TakeOver: the session (if it continues) for `claimant`.
    Handoff(super::takeover::Handoff),
    /// A message the previous owner of a moved session matched for it (see takeover.rs,
    /// "Cut-over"). `routed`: matched by its subscription index (it may also reach the new owner
    /// through the new owner's own index; deduplicated), rather than picked for a shared
    /// subscription.
    Forward {
        session: SessionKey,
        msg: Message,
        delivery: Delivery,
        routed: bool,
    },
    /// The new owner indexed the moved session: the previous owner stops forwarding.
    Unforward { target: SessionKey },
    /// The previous owner stopped forwarding (after every `Forward` it sent).
    ForwardDone { session: SessionKey },
    /// A password verification thread answered (see auth.rs).
    AuthResult(Box<super::auth::AuthResult>),
}

/// A session that moved to another worker and is still indexed here until the new owner
/// indexed it: deliveries are forwarded there.
pub(super) struct Moved {
    pub to: super::takeover::Claimant,
    pub filters: Vec<ByteString>,
}

/// The new owner's side of a cut-over: messages its own index matched for the session wait
/// until the previous owner's forwards are done, so order is kept and duplicates dropped.
#[derive(Default)]
pub(super) struct Cutover {
    /// Messages forwarded by the index of the previous owner (already delivered).
    pub forwarded: Vec<Message>,
    /// Messages this worker's index matched meanwhile.
    pub held: Vec<(Message, Delivery)>,
}

impl WorkerMsg {
    /// The message counted against `worker_mailbox_limit`, if this is one.
    fn counted_message(&self) -> Option<&Message> {
        match self {
            WorkerMsg::Publish(m) | WorkerMsg::Deliver { msg: m, .. } => Some(m),
            _ => None,
        }
    }

    /// Bytes counted against `worker_mailbox_limit` (topic + payload of a message).
    fn payload_bytes(&self) -> usize {
        self.counted_message().map_or(0, |m| m.queued_size())
    }
}

/// CONNECT refusals of the authentication layer (counted in `auth_*` metrics, not as protocol
/// errors).
fn is_auth_refusal(r: crate::protocol::ReasonCode) -> bool {
    use crate::protocol::ReasonCode as R;
    [
        R::BAD_USER_NAME_OR_PASSWORD,
        R::NOT_AUTHORIZED,
        R::CONNECTION_RATE_EXCEEDED,
        R::SERVER_BUSY,
    ]
    .contains(&r)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKey {
    Conn(ConnId),
    Session(SessionKey),
}

/// A live network connection on this worker.
pub(super) struct Client {
    pub id: ConnId,
    pub conn: Connection,
    /// Unfinished tail of a packet (only while one is split across reads; boxed: 8 bytes
    /// inline for the idle majority).
    pub rx: Option<Box<BytesMut>>,
    /// The session slot once CONNECT has been claimed.
    pub session: Option<SessionKey>,
    /// The id the broker assigned (empty CONNECT client id; boxed: rare, 8 bytes inline).
    pub assigned_id: Option<Box<ByteString>>,
    /// The deadline the wheel currently holds for us.
    pub scheduled: Option<Instant>,
    /// Close requested; the engine will call on_close.
    pub closing: bool,
    /// The will the state machine decided on when it asked to close (boxed: only while
    /// closing).
    pub close_will: Option<Box<PendingWill>>,
    /// The peer's address, only when the engine collects them (`peer_addrs`: a password file
    /// with a failed-login limit); boxed, so the default configuration pays 8 bytes.
    pub peer: Option<Box<SocketAddr>>,
    /// TLS state when accepted on a TLS listener (boxed: a plain connection pays a pointer).
    pub tls: Option<Box<crate::tls::TlsConn>>,
}

pub(super) enum SessionState {
    /// Claimed by a CONNECT on this worker that waits for the hand-off from the previous owner.
    Pending {
        conn: Option<ConnId>,
    },
    Online {
        conn: ConnId,
    },
    Offline(Box<crate::session::Session>),
    /// Handed off to another worker, still indexed here (see [`Moved`]).
    Moved(Box<Moved>),
}

/// A session slot. The session's data lives in the `Connection` while online.
pub(super) struct SessionEntry {
    pub client_id: ByteString,
    pub generation: u32,
    /// Ownership epoch under which this worker holds the ClientId.
    pub epoch: u64,
    pub state: SessionState,
    /// A newer claimant took this pending entry over: forward the hand-off to it (boxed: rare,
    /// and every idle session pays for the inline size).
    pub forward: Option<Box<super::takeover::TakeOver>>,
    /// The CONNECT that created this entry asked for a clean start.
    pub clean_start: bool,
    /// Will waiting for its delay (after the connection ended), and when it is due.
    pub delayed_will: Option<(Message, Instant)>,
    /// When an offline session expires (None: never).
    pub expires_at: Option<Instant>,
    pub username: Option<ByteString>,
    /// Set while the previous owner of this (just moved) session still forwards to it.
    pub cutover: Option<Box<Cutover>>,
}

const NO_CLIENT: u32 = u32::MAX;

pub struct Worker {
    pub(super) id: u16,
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: Arc<WorkerMetrics>,
    pub(super) clients: Slab<Client>,
    /// Engine slot -> index into `clients` (NO_CLIENT when free). Engine slots are dense
    /// (freed slots are reused), so a vector indexed by slot is bounded by the peak number of
    /// connections and costs no hashing on every completion.
    pub(super) by_slot: Vec<u32>,
    pub(super) sessions: Slab<SessionEntry>,
    pub(super) next_generation: u32,
    pub(super) subs: SubscriptionTrie<SessionKey, Subscription>,
    pub(super) wheel: TimerWheel<TimerKey>,
    pub(super) actions: Vec<Action>,
    /// Scratch list of (session, options, subscription id) matches for `route_local`.
    pub(super) route_hits: Vec<(
        SessionKey,
        crate::protocol::SubscriptionOptions,
        Option<u32>,
    )>,
    /// Scratch lists of `route_publish` for shared subscriptions: the groups a topic matched,
    /// and the member picked in each (no allocation per message).
    pub(super) shared_groups: Vec<crate::routing::GroupId>,
    pub(super) shared_picks: Vec<((u16, SessionKey), Subscription)>,
    /// Set by `post` when a QoS 1/2 message went to a mailbox over `worker_mailbox_limit`:
    /// `process_input` then pauses reading from the publisher it was handling.
    pub(super) mailbox_full: bool,
    /// The ACL in force as of `auth_generation` (see `refresh_acl`).
    pub(super) acl: Option<Arc<crate::auth::Acl>>,
    pub(super) auth_generation: u64,
    /// Connections whose reading is paused until the other workers' mailboxes drain.
    pub(super) paused: Vec<ConnId>,
    pub(super) expired: Vec<TimerKey>,
    pub(super) encode_buf: BytesMut,
    /// Workers whose mailbox we pushed to since the last wake.
    pub(super) to_wake: Vec<bool>,
    pub(super) shutting_down: bool,
    pub(super) last_sys: Instant,
    /// Scratch for TLS: decrypted bytes of one read, and records to send.
    pub(super) tls_plain: Vec<u8>,
    pub(super) tls_out: Vec<u8>,
}

impl Worker {
    pub fn new(id: u16, shared: Arc<Shared>) -> Worker {
        let n = shared.mailboxes.len();
        let now = Instant::now();
        // Reserve (virtual memory only: untouched pages cost no RSS) the connection-sized
        // tables up front, so growth never reallocates them and leaves freed copies behind.
        let conns = shared.cfg.max_connections_per_worker as usize;
        // The generation first: a reload in between makes this worker refresh once more.
        let auth_generation = shared.auth.generation();
        let acl = shared.auth.acl();
        Worker {
            id,
            metrics: shared.metrics[id as usize].clone(),
            clients: Slab::with_capacity(conns),
            by_slot: Vec::with_capacity(conns),
            sessions: Slab::with_capacity(conns),
            shared,
            next_generation: 1,
            subs: SubscriptionTrie::new(),
            wheel: TimerWheel::new(now, Duration::from_millis(50), 4096),
            actions: Vec::new(),
            route_hits: Vec::new(),
            shared_groups: Vec::new(),
            shared_picks: Vec::new(),
            mailbox_full: false,
            acl,
            auth_generation,
            paused: Vec::new(),
            expired: Vec::new(),
            encode_buf: BytesMut::with_capacity(4096),
            to_wake: vec![false; n],
            shutting_down: false,
            last_sys: now,
            tls_plain: Vec::new(),
            tls_out: Vec::new(),
        }
    }

    pub(super) fn client_index(&self, id: ConnId) -> Option<usize> {
        let idx = *self.by_slot.get(id.slot as usize)?;
        if idx == NO_CLIENT {
            return None;
        }
        let idx = idx as usize;
        (self.clients[idx].id == id).then_some(idx)
    }

    pub(super) fn session(&self, key: SessionKey) -> Option<&SessionEntry> {
        self.sessions
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation)
    }

    pub(super) fn session_mut(&mut self, key: SessionKey) -> Option<&mut SessionEntry> {
        self.sessions
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation)
    }

    pub(super) fn new_session_entry(
        &mut self,
        client_id: ByteString,
        epoch: u64,
        state: SessionState,
        clean_start: bool,
    ) -> SessionKey {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let index = self.sessions.insert(SessionEntry {
            client_id,
            generation,
            epoch,
            state,
            forward: None,
            clean_start,
            delayed_will: None,
            expires_at: None,
            username: None,
            cutover: None,
        }) as u32;
        add(&self.metrics.sessions_current, 1);
        SessionKey { index, generation }
    }

    /// Remove a session slot whose session has ended (subscriptions already removed).
    pub(super) fn drop_session_entry(&mut self, key: SessionKey) -> Option<SessionEntry> {
        self.session(key)?;
        sub(&self.metrics.sessions_current, 1);
        Some(self.sessions.remove(key.index as usize))
    }

    /// Queue a message for another worker; the wake is sent once per callback batch.
    /// When the target's mailbox already holds `worker_mailbox_limit` payload bytes (a worker
    /// that falls behind a flood must not buffer it without bound):
    /// - a QoS 0 message is dropped, counted in `mailbox_drops` (QoS 0 may be dropped on
    ///   congestion anywhere on its way, as at the socket);
    /// - a QoS 1/2 message is posted (it must not be lost), and the publisher being read is
    ///   paused (`mailbox_full`, see `process_input`) until the mailboxes drain: the mailbox
    ///   passes its limit by at most what was already read from that publisher.
    pub(super) fn post(&mut self, worker: u16, msg: WorkerMsg) {
        let w = worker as usize;
        if let Some(m) = msg.counted_message() {
            let bytes = m.queued_size();
            let waiting = self.shared.mailbox_bytes[w].load(Ordering::Relaxed);
            if waiting + bytes > self.shared.cfg.worker_mailbox_limit {
                if m.qos == protocol::QoS::AtMostOnce {
                    add(&self.metrics.mailbox_drops, 1);
                    return;
                }
                self.mailbox_full = true;
            }
            self.shared.mailbox_bytes[w].fetch_add(bytes, Ordering::Relaxed);
        }
        self.shared.mailboxes[w].push(msg);
        self.to_wake[w] = true;
    }

    fn flush_wakes(&mut self, io: &mut Io<'_>) {
        let Some(remotes) = self.shared.remotes.get() else {
            return;
        };
        for (w, flag) in self.to_wake.iter_mut().enumerate() {
            if std::mem::take(flag) {
                if w == self.id as usize {
                    // Our own mailbox: drained at the end of this batch anyway.
                    continue;
                }
                io.wake(&remotes[w]);
            }
        }
    }

    /// Encode and queue one packet for a client. Returns false when the socket's queue is over
    /// its hard limit (the caller closes the connection as a slow consumer).
    pub(super) fn send_packet(&mut self, io: &mut Io<'_>, idx: usize, packet: &Packet) -> bool {
        let headroom = self.shared.cfg.send_queue_limit.saturating_mul(2);
        let client = &mut self.clients[idx];
        let version = client.conn.version().unwrap_or(ProtocolVersion::V311);
        self.encode_buf.clear();
        protocol::encode_packet(packet, version, &mut self.encode_buf);
        let bytes: &[u8] = match client.tls.as_mut() {
            Some(tls) => {
                self.tls_out.clear();
                if let Err(e) = tls.encrypt(&self.encode_buf, &mut self.tls_out) {
                    // Only after close_notify: the connection is closing anyway.
                    tracing::debug!(peer = ?client.peer, error = %e, "tls write after close");
                    return true;
                }
                &self.tls_out
            }
            None => &self.encode_buf,
        };
        add(&self.metrics.packets_out, 1);
        if matches!(packet, Packet::Publish(_)) {
            add(&self.metrics.publish_out, 1);
        }
        // A PUBLISH was admitted already: QoS 0 by deliver_to's soft limit (checked before
        // every message, so at most one message passes it), QoS 1/2 by the in-flight window
        // (a drain after PUBACK, on writable or on resume sends up to a window at once), and
        // queued ones by the session queue bounds. Refusing it here would close a client
        // that merely had a backlog or got one message larger than the limit, so it may pass
        // the socket limit by those bounds. Other packets (acks, PINGRESP) answer the
        // client's own requests: they may use a second send_queue_limit of headroom, since
        // admitted publishes can fill the first one, but a client that keeps asking and never
        // reads hits twice the limit and is closed as a slow consumer.
        if matches!(packet, Packet::Publish(_)) || io.queued(client.id) + bytes.len() <= headroom {
            io.send_past_limit(client.id, bytes)
        } else {
            io.send(client.id, bytes)
        }
    }

    /// Carry out the actions a connection's state machine returned.
    pub(super) fn run_actions(&mut self, io: &mut Io<'_>, idx: usize, now: Instant) {
        let mut actions = std::mem::take(&mut self.actions);
        for action in actions.drain(..) {
            if !self.clients.contains(idx) {
                break;
            }
            match action {
                Action::Send(packet) => {
                    if !self.send_packet(io, idx, &packet) {
                        add(&self.metrics.slow_consumer_disconnects, 1);
                        tracing::warn!(peer = ?self.clients[idx].peer, "send queue over its limit: closing slow consumer");
                        self.clients[idx]
                            .conn
                            .connection_lost(now, &mut self.actions);
                        let will = self.take_close_will();
                        self.close_client(io, idx, will);
                    }
                }
                Action::Connect(mut req) => {
                    // tls_cert_username: the verified client certificate names the user and is
                    // its authentication (no password check, as Mosquitto's
                    // use_identity_as_username).
                    match self.clients[idx]
                        .tls
                        .as_ref()
                        .and_then(|t| t.cert_username.clone())
                    {
                        Some(u) => {
                            req.username = Some(u);
                            req.password = None;
                            self.authenticated(io, idx, req, now)
                        }
                        None => self.on_connect_action(io, idx, req, now),
                    }
                }
                Action::Publish(msg) => {
                    add(&self.metrics.publish_in, 1);
                    self.route_publish(io, msg, now);
                }
                Action::Subscribe {
                    filter,
                    options,
                    subscription_id,
                    existed,
                } => self.on_subscribe(io, idx, filter, options, subscription_id, existed, now),
                Action::Unsubscribe { filter } => self.on_unsubscribe(idx, &filter),
                Action::Close { will, reason } => {
                    if reason.is_some_and(|r| {
                        r.is_error()
                            && r != crate::protocol::ReasonCode::KEEP_ALIVE_TIMEOUT
                            && r != crate::protocol::ReasonCode::SESSION_TAKEN_OVER
                            && r != crate::protocol::ReasonCode::SERVER_SHUTTING_DOWN
                            && !is_auth_refusal(r)
                    }) {
                        add(&self.metrics.protocol_errors, 1);
                    }
                    self.close_client(io, idx, will);
                }
            }
        }
        // Keep the scratch vector's capacity.
        actions.clear();
        if self.actions.is_empty() {
            self.actions = actions;
        }
        self.reschedule(idx);
    }

    pub(super) fn close_client(&mut self, io: &mut Io<'_>, idx: usize, will: Option<PendingWill>) {
        let c = &mut self.clients[idx];
        if !c.closing {
            c.closing = true;
            c.close_will = will.map(Box::new);
            if let Some(tls) = c.tls.as_mut() {
                if !tls.is_handshaking() {
                    self.tls_out.clear();
                    tls.close_notify(&mut self.tls_out);
                    io.send_past_limit(c.id, &self.tls_out);
                }
            }
            io.close(c.id);
        }
    }

    /// Pull the will out of a `Close` the state machine just pushed (for closes we carry out
    /// ourselves rather than through `run_actions`).
    pub(super) fn take_close_will(&mut self) -> Option<PendingWill> {
        let mut will = None;
        for a in self.actions.drain(..) {
            if let Action::Close { will: w, .. } = a {
                will = w;
            }
        }
        will
    }

    /// Make sure the wheel will look at this connection no later than its deadline.
    pub(super) fn reschedule(&mut self, idx: usize) {
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        if c.closing {
            return;
        }
        if let Some(d) = c.conn.deadline() {
            if c.scheduled.is_none_or(|s| d < s) {
                c.scheduled = Some(d);
                self.wheel.insert(TimerKey::Conn(c.id), d);
            }
        }
    }

    /// Pause reading from a client whose messages filled another worker's mailbox (see
    /// `post`); `resume_paused` reads from it again once the mailboxes have drained.
    fn pause_for_mailbox(&mut self, io: &mut Io<'_>, idx: usize) {
        let id = self.clients[idx].id;
        if !self.paused.contains(&id) {
            io.pause_recv(id);
            self.paused.push(id);
            add(&self.metrics.publishers_paused, 1);
        }
    }

    /// Resume the paused publishers once every other worker's mailbox is at most half full.
    /// Until then their keep-alive is held: the broker, not the client, stopped reading.
    fn resume_paused(&mut self, io: &mut Io<'_>, now: Instant) {
        let half = self.shared.cfg.worker_mailbox_limit / 2;
        let drained = self
            .shared
            .mailbox_bytes
            .iter()
            .enumerate()
            .all(|(w, b)| w == self.id as usize || b.load(Ordering::Relaxed) <= half);
        let mut paused = std::mem::take(&mut self.paused);
        paused.retain(|&id| {
            let Some(idx) = self.client_index(id) else {
                return false;
            };
            self.clients[idx].conn.on_bytes_received(now);
            if drained {
                io.resume_recv(id);
            }
            !drained
        });
        self.paused = paused;
    }

    /// Decode and handle every complete packet buffered for a client.
    fn process_input(&mut self, io: &mut Io<'_>, idx: usize, data: &[u8], now: Instant) {
        self.mailbox_full = false;
        self.process_packets(io, idx, data, now);
        if std::mem::take(&mut self.mailbox_full)
            && self.clients.contains(idx)
            && !self.clients[idx].closing
        {
            self.pause_for_mailbox(io, idx);
        }
    }

    fn process_packets(&mut self, io: &mut Io<'_>, idx: usize, data: &[u8], now: Instant) {
        let max = self.shared.cfg.max_packet_size;
        // Fast path: nothing buffered, decode straight from the provided buffer.
        let mut buf: BytesMut;
        let mut input: &[u8] = match self.clients[idx].rx.take() {
            None => {
                buf = BytesMut::new();
                data
            }
            Some(tail) => {
                buf = *tail;
                buf.extend_from_slice(data);
                &buf[..]
            }
        };
        loop {
            let client = &mut self.clients[idx];
            if client.closing || input.is_empty() {
                break;
            }
            let version = client.conn.version();
            // PUBLISH, the packet that matters for throughput, is read in place.
            let res = match version {
                Some(v) if input[0] >> 4 == 3 => {
                    protocol::decode_publish_view(input, v, max).map(|r| {
                        r.map(|(p, used)| {
                            client.conn.handle_publish(p, now, &mut self.actions);
                            used
                        })
                    })
                }
                _ => protocol::decode_packet(input, version, max).map(|r| {
                    r.map(|(packet, used)| {
                        client.conn.handle(packet, now, &mut self.actions);
                        used
                    })
                }),
            };
            match res {
                Ok(Some(used)) => {
                    input = &input[used..];
                    add(&self.metrics.packets_in, 1);
                    self.run_actions(io, idx, now);
                    if !self.clients.contains(idx) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(peer = ?client.peer, error = %e, "bad packet");
                    client.conn.on_decode_error(&e, now, &mut self.actions);
                    self.run_actions(io, idx, now);
                    return;
                }
            }
        }
        if !self.clients.contains(idx) {
            return;
        }
        let client = &mut self.clients[idx];
        if client.closing || input.is_empty() {
            client.rx = None;
            return;
        }
        // Keep the tail, bounded: a packet never exceeds max_packet_size, and while CONNECT
        // waits for its hand-off the client may not flood us either.
        if input.len() > (max as usize).saturating_mul(2) {
            add(&self.metrics.protocol_errors, 1);
            self.clients[idx]
                .conn
                .connection_lost(now, &mut self.actions);
            let will = self.take_close_will();
            self.close_client(io, idx, will);
            return;
        }
        let tail = BytesMut::from(input);
        drop(buf);
        self.clients[idx].rx = Some(Box::new(tail));
    }

    /// Bytes from a TLS connection: decrypt, answer the handshake, feed the plaintext to
    /// `process_input`.
    fn on_tls_data(&mut self, io: &mut Io<'_>, idx: usize, data: &[u8], now: Instant) {
        let client = &mut self.clients[idx];
        let Some(tls) = client.tls.as_mut() else {
            return;
        };
        // `plain` stays out of `self` while process_input reads it.
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        self.tls_out.clear();
        let was_handshaking = tls.is_handshaking();
        let res = tls.read(data, &mut plain, &mut self.tls_out);
        if !self.tls_out.is_empty() {
            // Handshake messages and alerts: never refused for the queue limit.
            io.send_past_limit(client.id, &self.tls_out);
        }
        let mut ok = true;
        match res {
            Err(e) => {
                ok = false;
                if tls.is_handshaking() {
                    add(&self.metrics.tls_handshake_failures, 1);
                    tracing::debug!(peer = ?client.peer, error = %e, "TLS handshake failed");
                } else {
                    add(&self.metrics.tls_errors, 1);
                    tracing::debug!(peer = ?client.peer, error = %e, "TLS error");
                }
            }
            Ok(()) if was_handshaking && !tls.is_handshaking() => {
                if tls.take_cert_identity(self.shared.cfg.tls_cert_username) {
                    add(&self.metrics.tls_handshakes, 1);
                } else {
                    ok = false;
                    add(&self.metrics.tls_handshake_failures, 1);
                    tracing::warn!(peer = ?client.peer, mode = ?self.shared.cfg.tls_cert_username,
                        "client certificate has no name to use as the username: closing");
                }
            }
            Ok(()) => {}
        }
        if ok {
            if !plain.is_empty() {
                self.process_input(io, idx, &plain, now);
            }
        } else {
            // Mark closing first so no close_notify follows the alert.
            let client = &mut self.clients[idx];
            client.conn.connection_lost(now, &mut self.actions);
            let will = self.take_close_will();
            let c = &mut self.clients[idx];
            c.closing = true;
            c.close_will = will.map(Box::new);
            io.close(c.id);
        }
        // Keep the scratch capacity, but not a huge one left by a burst.
        if plain.capacity() > 1 << 20 {
            plain = Vec::new();
        }
        if self.tls_out.capacity() > 1 << 20 {
            self.tls_out = Vec::new();
        }
        self.tls_plain = plain;
    }

    fn drain_mailbox(&mut self, io: &mut Io<'_>, now: Instant) {
        // Bounded per call so one flooded mailbox cannot starve the sockets.
        for _ in 0..65536 {
            let Some(msg) = self.shared.mailboxes[self.id as usize].pop() else {
                break;
            };
            let bytes = msg.payload_bytes();
            if bytes > 0 {
                self.shared.mailbox_bytes[self.id as usize].fetch_sub(bytes, Ordering::Relaxed);
            }
            match msg {
                WorkerMsg::Publish(m) => self.route_local(io, &m, now),
                WorkerMsg::Deliver {
                    session,
                    msg,
                    delivery,
                } => self.deliver_to(io, session, &msg, &delivery, now),
                WorkerMsg::TakeOver(t) => self.on_takeover(io, t, now),
                WorkerMsg::Handoff(h) => self.on_handoff(io, h, now),
                WorkerMsg::Forward {
                    session,
                    msg,
                    delivery,
                    routed,
                } => self.on_forward(io, session, msg, delivery, routed, now),
                WorkerMsg::Unforward { target } => self.on_unforward(target),
                WorkerMsg::ForwardDone { session } => self.on_forward_done(io, session, now),
                WorkerMsg::AuthResult(r) => self.on_auth_result(io, r, now),
            }
        }
    }

    fn on_timers(&mut self, io: &mut Io<'_>, now: Instant) {
        let mut expired = std::mem::take(&mut self.expired);
        loop {
            expired.clear();
            let more = self.wheel.advance(now, 4096, &mut expired);
            for key in expired.drain(..) {
                match key {
                    TimerKey::Conn(id) => {
                        let Some(idx) = self.client_index(id) else {
                            continue;
                        };
                        let c = &mut self.clients[idx];
                        c.scheduled = None;
                        if c.closing {
                            continue;
                        }
                        match c.conn.deadline() {
                            Some(d) if d <= now => {
                                if c.conn.version().is_some() {
                                    add(&self.metrics.keepalive_expired, 1);
                                } else {
                                    add(&self.metrics.connect_timeouts, 1);
                                }
                                c.conn.on_timer(now, &mut self.actions);
                                self.run_actions(io, idx, now);
                            }
                            _ => self.reschedule(idx),
                        }
                    }
                    TimerKey::Session(key) => self.on_session_timer(io, key, now),
                }
            }
            if !more {
                break;
            }
        }
        self.expired = expired;
    }

    /// Graceful shutdown: tell every client, publish wills, close.
    fn begin_shutdown(&mut self, io: &mut Io<'_>, now: Instant) {
        self.shutting_down = true;
        let idxs: Vec<usize> = self.clients.iter().map(|(i, _)| i).collect();
        for idx in idxs {
            if !self.clients.contains(idx) || self.clients[idx].closing {
                continue;
            }
            self.clients[idx].conn.shutdown(now, &mut self.actions);
            self.run_actions(io, idx, now);
            if self.clients.contains(idx) && !self.clients[idx].closing {
                self.close_client(io, idx, None);
            }
        }
    }
}

impl Handler for Worker {
    fn on_open(&mut self, io: &mut Io<'_>, conn: ConnId, peer: Option<SocketAddr>) {
        let now = io.now();
        add(&self.metrics.connections_total, 1);
        add(&self.metrics.connections_current, 1);
        let idx = self.clients.insert(Client {
            id: conn,
            conn: Connection::new(self.shared.limits.clone(), now),
            rx: None,
            session: None,
            assigned_id: None,
            scheduled: None,
            closing: false,
            close_will: None,
            peer: peer.map(Box::new),
            tls: None,
        });
        let slot = conn.slot as usize;
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, NO_CLIENT);
        }
        self.by_slot[slot] = idx as u32;
        let setup = io
            .listener(conn)
            .and_then(|l| self.shared.listener_tls.get(l))
            .and_then(|s| s.as_ref());
        if let Some(setup) = setup {
            match crate::tls::TlsConn::new(setup) {
                Ok(t) => self.clients[idx].tls = Some(Box::new(t)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start TLS");
                    add(&self.metrics.tls_handshake_failures, 1);
                    self.close_client(io, idx, None);
                    return;
                }
            }
        }
        if self.shutting_down {
            self.close_client(io, idx, None);
            return;
        }
        self.reschedule(idx);
    }

    fn on_data(&mut self, io: &mut Io<'_>, conn: ConnId, data: &[u8]) {
        let Some(idx) = self.client_index(conn) else {
            return;
        };
        let now = io.now();
        add(&self.metrics.bytes_in, data.len() as u64);
        // Any bytes from the client reset keep-alive, even part of a packet.
        self.clients[idx].conn.on_bytes_received(now);
        if self.clients[idx].tls.is_some() {
            self.on_tls_data(io, idx, data, now);
        } else {
            self.process_input(io, idx, data, now);
        }
    }

    fn on_close(&mut self, io: &mut Io<'_>, conn: ConnId, error: Option<std::io::Error>) {
        let Some(idx) = self.client_index(conn) else {
            return;
        };
        let now = io.now();
        sub(&self.metrics.connections_current, 1);
        self.by_slot[conn.slot as usize] = NO_CLIENT;
        let mut client = self.clients.remove(idx);
        if let Some(e) = &error {
            tracing::debug!(peer = ?client.peer, error = %e, "connection error");
        }
        // A close we did not ask for (peer gone, I/O error) is abnormal: the state machine
        // decides the will.
        let will = if client.closing {
            client.close_will.take().map(|w| *w)
        } else {
            client.conn.connection_lost(now, &mut self.actions);
            self.take_close_will()
        };
        self.connection_ended(io, client, will, now);
    }

    fn on_writable(&mut self, io: &mut Io<'_>, conn: ConnId) {
        let Some(idx) = self.client_index(conn) else {
            return;
        };
        let now = io.now();
        self.clients[idx].conn.on_writable(now, &mut self.actions);
        self.run_actions(io, idx, now);
    }

    fn on_wake(&mut self, io: &mut Io<'_>) {
        let now = io.now();
        self.drain_mailbox(io, now);
        self.flush_wakes(io);
    }

    fn on_tick(&mut self, io: &mut Io<'_>, now: Instant) {
        if self.shared.shutdown.load(Ordering::Relaxed) && !self.shutting_down {
            self.begin_shutdown(io, now);
        }
        if self.shared.auth.generation() != self.auth_generation {
            self.refresh_acl();
        }
        self.drain_mailbox(io, now);
        if !self.paused.is_empty() {
            self.resume_paused(io, now);
        }
        self.on_timers(io, now);
        if self.id == 0 {
            self.maybe_publish_sys(io, now);
        }
        let st = io.stats();
        self.metrics
            .recv_enobufs
            .store(st.recv_enobufs, Ordering::Relaxed);
        self.metrics
            .bytes_out
            .store(st.bytes_out, Ordering::Relaxed);
        self.metrics
            .connections_refused
            .store(st.refused_max_conns, Ordering::Relaxed);
        self.flush_wakes(io);
    }

    fn should_stop(&self) -> bool {
        self.shutting_down && self.clients.is_empty()
    }
}
