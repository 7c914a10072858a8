//! Session ownership, client take-over and session hand-off between workers.
//!
//! # The handshake
//!
//! 1. A CONNECT arrives on worker W for ClientId `id`. W creates a session slot in state
//!    `Pending` and claims `id` in the ownership table with a fresh epoch. The claim atomically
//!    replaces the previous owner P = (worker X, slot, epoch) and returns it.
//! 2. No previous owner: W answers itself (`Handoff` with no session) at once.
//!    Otherwise W sends `TakeOver { target: P.slot, claimant: W's slot, clean_start }` to X
//!    (when X == W the same functions run inline, no message).
//! 3. X looks at the target slot:
//!    - gone (stale generation: the session ended meanwhile): answers `Handoff { session: None }`;
//!    - `Online`: the old connection gets DISCONNECT 0x8E (MQTT 5) and is closed; its session
//!      leaves X (subscriptions removed from X's trie); the will is decided by
//!      `session::will::on_takeover`; X answers with the session unless the claimant asked for a
//!      clean start;
//!    - `Offline`: same, with no connection to close; a delayed will is cancelled when the
//!      session continues, published when it ends;
//!    - `Pending` (the target is itself a claimant still waiting for its own hand-off): the
//!      pending connection is closed without CONNACK and the entry remembers the newer
//!      claimant in `forward`; when its hand-off arrives the session is passed on.
//!    Every TakeOver gets exactly one Handoff, so no claimant waits forever.
//! 4. W receives `Handoff`: if its slot has a `forward`, it passes the session on; if its
//!    connection is still there it installs the session (subscriptions into W's trie) and the
//!    state machine sends CONNACK with Session Present; if the connection died meanwhile, the
//!    session is kept offline or ended per its expiry.
//!
//! Racing CONNECTs therefore form a chain in the order of their claims, the last claim owns the
//! ClientId, and epochs make a late release by a displaced owner harmless
//! (`OwnershipTable::release` only removes the entry of its own epoch).
//!
//! Known window: a PUBLISH routed while a session is in flight between workers (after X removed
//! its subscriptions, before W installed them) does not reach that session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::worker::{Client, SessionState, TimerKey, Worker, WorkerMsg};
use crate::metrics::add;
use crate::ownership::{Owner, SessionKey};
use crate::protocol::{ProtocolVersion, ReasonCode, Will};
use crate::runtime::engine::{ConnId, Io};
use crate::session::will::{self, WillDecision};
use crate::session::{ConnectRequest, Message, Session};

/// Who is asking for a session.
#[derive(Debug, Clone, Copy)]
pub struct Claimant {
    pub worker: u16,
    pub session: SessionKey,
    pub conn: ConnId,
}

pub struct TakeOver {
    pub client_id: ByteString,
    pub target: SessionKey,
    pub claimant: Claimant,
    pub clean_start: bool,
    pub username: Option<ByteString>,
}

pub struct Handoff {
    pub claimant: Claimant,
    pub session: Option<Box<Session>>,
    /// The take-over was refused (policy): the claimant gets CONNACK "not authorized".
    pub refused: bool,
}

/// Turn a will into the message it publishes.
pub(super) fn will_message(will: Will, client_id: &ByteString, now: Instant) -> Message {
    let p = will.properties;
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        expires_at: p
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(s.into())),
        properties: crate::protocol::PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            ..Default::default()
        },
        publisher: Some(client_id.clone()),
    }
}

impl Worker {
    pub(super) fn publish_will(
        &mut self,
        io: &mut Io<'_>,
        will: Will,
        client_id: &ByteString,
        now: Instant,
    ) {
        add(&self.metrics.wills_published, 1);
        let msg = will_message(will, client_id, now);
        self.route_publish(io, Arc::new(msg), now);
    }

    /// Step 1: a validated CONNECT.
    pub(super) fn on_connect_request(
        &mut self,
        io: &mut Io<'_>,
        idx: usize,
        mut req: ConnectRequest,
        now: Instant,
    ) {
        if self.sessions.len() >= self.shared.cfg.max_sessions_per_worker {
            self.clients[idx]
                .conn
                .refuse_connect(ReasonCode::QUOTA_EXCEEDED, &mut self.actions);
            self.run_actions(io, idx, now);
            return;
        }
        if req.client_id.is_empty() {
            let n = self
                .shared
                .next_assigned_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            req.client_id = ByteString::from(format!("ringmq-{}-{n}", self.id));
            req.assigned = true;
        }
        let conn = self.clients[idx].id;
        let epoch = self.shared.owners.new_epoch();
        let key = self.new_session_entry(
            req.client_id.clone(),
            epoch,
            SessionState::Pending { conn: Some(conn) },
            req.clean_start,
        );
        if let Some(e) = self.session_mut(key) {
            e.username = req.username.clone();
        }
        let client = &mut self.clients[idx];
        client.session = Some(key);
        client.awaiting_connack = true;
        client.conn.set_connect_request(req.clone());
        let me = Owner {
            worker: self.id,
            session: key,
            epoch,
        };
        let claimant = Claimant {
            worker: self.id,
            session: key,
            conn,
        };
        match self.shared.owners.claim(&req.client_id, me) {
            None => self.on_handoff(
                io,
                Handoff {
                    claimant,
                    session: None,
                    refused: false,
                },
                now,
            ),
            Some(prev) => {
                add(&self.metrics.takeovers, 1);
                let t = TakeOver {
                    client_id: req.client_id.clone(),
                    target: prev.session,
                    claimant,
                    clean_start: req.clean_start,
                    username: req.username.clone(),
                };
                if prev.worker == self.id {
                    self.on_takeover(io, t, now);
                } else {
                    self.post(prev.worker, WorkerMsg::TakeOver(t));
                }
            }
        }
    }

    fn answer(&mut self, io: &mut Io<'_>, h: Handoff, now: Instant) {
        if h.claimant.worker == self.id {
            self.on_handoff(io, h, now);
        } else {
            self.post(h.claimant.worker, WorkerMsg::Handoff(h));
        }
    }

    /// Remove a session's subscriptions from this worker's index.
    pub(super) fn unindex_session(&mut self, key: SessionKey, session: &Session) {
        for (filter, _) in session.subscriptions() {
            self.remove_subscription(key, filter);
        }
    }

    /// Step 3, on the worker that holds `t.target`.
    pub(super) fn on_takeover(&mut self, io: &mut Io<'_>, t: TakeOver, now: Instant) {
        let refuse_other_user = self.shared.cfg.refuse_takeover_by_other_user;
        let Some(entry) = self.session_mut(t.target) else {
            self.answer(
                io,
                Handoff {
                    claimant: t.claimant,
                    session: None,
                    refused: false,
                },
                now,
            );
            return;
        };
        if refuse_other_user && entry.username != t.username {
            // The old owner stays; the claimant is refused.
            let client_id = entry.client_id.clone();
            let epoch = entry.epoch;
            let worker = self.id;
            let session = t.target;
            // Restore our ownership (the claimant displaced us in the table).
            self.shared.owners.claim(
                &client_id,
                Owner {
                    worker,
                    session,
                    epoch,
                },
            );
            self.answer(
                io,
                Handoff {
                    claimant: t.claimant,
                    session: None,
                    refused: true,
                },
                now,
            );
            return;
        }
        match std::mem::replace(&mut entry.state, SessionState::Pending { conn: None }) {
            SessionState::Pending { conn } => {
                // Still waiting for our own hand-off: remember who comes next.
                entry.state = SessionState::Pending { conn: None };
                entry.forward = Some(t);
                if let Some(c) = conn {
                    if let Some(idx) = self.client_index(c) {
                        self.clients[idx].session = None;
                        self.close_client(io, idx, false);
                    }
                }
            }
            SessionState::Online { conn } => {
                let idx = self.client_index(conn);
                let mut session = None;
                let mut will_now = None;
                if let Some(idx) = idx {
                    let client = &mut self.clients[idx];
                    client.conn.take_over(&mut self.actions);
                    client.session = None;
                    let version = client.conn.version().unwrap_or(ProtocolVersion::V311);
                    let mut s = client.conn.take_session();
                    if let Some(s) = s.as_mut() {
                        if let Some(w) = s.take_will() {
                            let delay = w.properties.will_delay_interval.unwrap_or(0);
                            match will::on_takeover(
                                version,
                                t.clean_start,
                                s.expiry_interval(),
                                delay,
                            ) {
                                WillDecision::PublishNow => will_now = Some(w),
                                WillDecision::Delay(_) | WillDecision::Discard => {}
                            }
                        }
                    }
                    session = s;
                    // Send the DISCONNECT 0x8E, then close without the will (decided above).
                    self.run_actions(io, idx, now);
                    if self.clients.contains(idx) {
                        self.close_client(io, idx, false);
                    }
                }
                self.finish_takeover(io, t, session, will_now, now);
            }
            SessionState::Offline(s) => {
                let entry = self.session_mut(t.target).expect("checked above");
                let delayed = entry.delayed_will.take();
                // A delayed will: cancelled if the session is resumed, published if it ends.
                let will_now = match delayed {
                    Some((w, _, _)) if t.clean_start => Some(w),
                    _ => None,
                };
                self.finish_takeover(io, t, Some(*s), will_now, now);
            }
        }
    }

    fn finish_takeover(
        &mut self,
        io: &mut Io<'_>,
        t: TakeOver,
        session: Option<Session>,
        will_now: Option<Will>,
        now: Instant,
    ) {
        let client_id = t.client_id.clone();
        if let Some(s) = &session {
            self.unindex_session(t.target, s);
        }
        self.drop_session_entry(t.target);
        if let Some(w) = will_now {
            self.publish_will(io, w, &client_id, now);
        }
        let session = if t.clean_start { None } else { session };
        self.answer(
            io,
            Handoff {
                claimant: t.claimant,
                session: session.map(Box::new),
                refused: false,
            },
            now,
        );
    }

    /// Step 4, on the claimant's worker.
    pub(super) fn on_handoff(&mut self, io: &mut Io<'_>, h: Handoff, now: Instant) {
        let key = h.claimant.session;
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        if let Some(next) = entry.forward.take() {
            // A newer claimant took us over while we waited: pass the session on.
            let my_clean = entry.clean_start;
            let session = if my_clean { None } else { h.session };
            self.drop_session_entry(key);
            self.answer(
                io,
                Handoff {
                    claimant: next.claimant,
                    session: if next.clean_start { None } else { session },
                    refused: false,
                },
                now,
            );
            return;
        }
        let client_id = entry.client_id.clone();
        let epoch = entry.epoch;
        let conn = match entry.state {
            SessionState::Pending { conn } => conn,
            _ => None,
        };
        let idx = conn.and_then(|c| self.client_index(c));
        if h.refused {
            self.drop_session_entry(key);
            if let Some(idx) = idx {
                let c = &mut self.clients[idx];
                c.session = None;
                c.awaiting_connack = false;
                c.conn
                    .refuse_connect(ReasonCode::NOT_AUTHORIZED, &mut self.actions);
                self.run_actions(io, idx, now);
            }
            return;
        }
        match idx {
            Some(idx) if !self.clients[idx].closing => {
                if let Some(s) = &h.session {
                    for (filter, sub) in s.subscriptions() {
                        self.add_subscription(key, filter.clone(), sub.clone());
                    }
                }
                if let Some(e) = self.session_mut(key) {
                    e.state = SessionState::Online {
                        conn: self.clients[idx].id,
                    };
                }
                let c = &mut self.clients[idx];
                c.awaiting_connack = false;
                c.conn
                    .accept_connect(h.session.map(|b| *b), now, &mut self.actions);
                self.run_actions(io, idx, now);
                if self.clients.contains(idx) {
                    self.resume_input(io, idx, now);
                }
            }
            _ => {
                // The connection went away while waiting. Keep a continuing session offline.
                match h.session {
                    Some(s) if s.expiry_interval() > 0 => {
                        for (filter, sub) in s.subscriptions() {
                            self.add_subscription(key, filter.clone(), sub.clone());
                        }
                        self.store_offline(key, *s, None, now);
                    }
                    _ => {
                        self.drop_session_entry(key);
                        self.shared.owners.release(
                            &client_id,
                            Owner {
                                worker: self.id,
                                session: key,
                                epoch,
                            },
                        );
                    }
                }
            }
        }
    }

    /// Keep a session after its connection ended; schedule expiry and a delayed will.
    fn store_offline(
        &mut self,
        key: SessionKey,
        session: Session,
        delayed_will: Option<(Will, ProtocolVersion, Instant)>,
        now: Instant,
    ) {
        let expiry = session.expiry_interval();
        let expires_at = (expiry != u32::MAX).then(|| now + Duration::from_secs(expiry.into()));
        let Some(e) = self.session_mut(key) else {
            return;
        };
        e.state = SessionState::Offline(Box::new(session));
        e.expires_at = expires_at;
        e.delayed_will = delayed_will;
        let will_due = e.delayed_will.as_ref().map(|w| w.2);
        if let Some(t) = expires_at {
            self.wheel.insert(TimerKey::Session(key), t);
        }
        if let Some(t) = will_due {
            self.wheel.insert(TimerKey::Session(key), t);
        }
    }

    /// The end of a network connection (every cause goes through here once).
    pub(super) fn connection_ended(
        &mut self,
        io: &mut Io<'_>,
        mut client: Client,
        with_will: bool,
        now: Instant,
    ) {
        let Some(key) = client.session else {
            return;
        };
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        match entry.state {
            SessionState::Online { conn } if conn == client.id => {}
            SessionState::Pending { conn: Some(c) } if c == client.id => {
                // Never got CONNACK: no will; the hand-off decides what happens to the session.
                entry.state = SessionState::Pending { conn: None };
                return;
            }
            _ => return,
        }
        let client_id = entry.client_id.clone();
        let epoch = entry.epoch;
        let version = client.conn.version().unwrap_or(ProtocolVersion::V311);
        let Some(mut session) = client.conn.take_session() else {
            return;
        };
        let will = session.take_will();
        let continues = session.expiry_interval() > 0;
        let mut delayed = None;
        if let Some(w) = will {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            match will::on_connection_end(!with_will, continues, delay) {
                WillDecision::PublishNow => self.publish_will(io, w, &client_id, now),
                WillDecision::Delay(d) => delayed = Some((w, version, now + d)),
                WillDecision::Discard => {}
            }
        }
        if continues {
            self.store_offline(key, session, delayed, now);
        } else {
            self.unindex_session(key, &session);
            self.drop_session_entry(key);
            self.shared.owners.release(
                &client_id,
                Owner {
                    worker: self.id,
                    session: key,
                    epoch,
                },
            );
        }
    }

    /// A session timer: a delayed will is due, or an offline session expires.
    pub(super) fn on_session_timer(&mut self, io: &mut Io<'_>, key: SessionKey, now: Instant) {
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        if !matches!(entry.state, SessionState::Offline(_)) {
            return;
        }
        let client_id = entry.client_id.clone();
        let epoch = entry.epoch;
        let will_due = entry
            .delayed_will
            .as_ref()
            .is_some_and(|(_, _, due)| *due <= now);
        let expired = entry.expires_at.is_some_and(|t| t <= now);
        if will_due || expired {
            if let Some((w, _, _)) = entry.delayed_will.take() {
                self.publish_will(io, w, &client_id, now);
            }
        }
        if expired {
            add(&self.metrics.sessions_expired, 1);
            if let Some(e) = self.drop_session_entry(key) {
                if let SessionState::Offline(s) = e.state {
                    self.unindex_session(key, &s);
                }
            }
            self.shared.owners.release(
                &client_id,
                Owner {
                    worker: self.id,
                    session: key,
                    epoch,
                },
            );
        }
    }
}
