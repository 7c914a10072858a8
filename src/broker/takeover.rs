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
//!      leaves X (subscriptions removed from X's trie, or kept until the cut-over below ends);
//!      the will is decided by `session::will::on_takeover`; X answers with the session unless
//!      the claimant asked for a clean start;
//!    - `Offline`: same, with no connection to close; a delayed will is cancelled when the
//!      session continues, published when it ends;
//!    - `Pending` (the target is itself a claimant still waiting for its own hand-off): the
//!      pending connection is closed without CONNACK and the entry remembers the newer
//!      claimant in `forward`; when its hand-off arrives the session is passed on.
//!
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
//! # Cut-over (a continuing session moves from worker X to worker W)
//!
//! X does not drop its index entries at step 3: the slot becomes `Moved` and every delivery X
//! makes to it is forwarded to W (`Forward`, after the `Handoff` in X's FIFO to W). W indexes the
//! session at step 4, marks it `cutover` and sends `Unforward` to X; X then removes its entries,
//! drops the slot and answers `ForwardDone` (after its last `Forward`). Meanwhile W holds what its
//! own index matches for the session; a forwarded message W also holds is delivered once, at its
//! forwarded position; at `ForwardDone` the rest of the held messages follow. So a PUBLISH routed
//! during the move reaches the session exactly once and in order. (Same-worker take-overs are
//! synchronous and need none of this.)
//!
//! Remaining window: a take-over of W's slot while it still waits for its own hand-off (the
//! `forward` chain above) passes the session on without a cut-over; a PUBLISH routed during that
//! double move can miss the session. A take-over of W's session during its cut-over delivers the
//! held messages into the session first; X's later forwards are passed on without deduplication.

use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::worker::{Client, Moved, SessionState, TimerKey, Worker, WorkerMsg};
use crate::metrics::add;
use crate::ownership::{Owner, SessionKey};
use crate::protocol::ReasonCode;
use crate::runtime::engine::{ConnId, Io};
use crate::session::{generate_client_id, Action, ConnectRequest, Message, PendingWill, Session};

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
    /// (worker, slot) of the previous owner that keeps the session indexed and forwards to the
    /// claimant until told `Unforward` (cut-over).
    pub from: Option<(u16, SessionKey)>,
}

impl Handoff {
    fn empty(claimant: Claimant) -> Handoff {
        Handoff {
            claimant,
            session: None,
            refused: false,
            from: None,
        }
    }
}

impl Worker {
    pub(super) fn publish_will(&mut self, io: &mut Io<'_>, will: Message, now: Instant) {
        add(&self.metrics.wills_published, 1);
        self.route_publish(io, will, now);
    }

    fn release_ownership(&self, client_id: &str, key: SessionKey, epoch: u64) {
        self.shared.owners.release(
            client_id,
            Owner {
                worker: self.id,
                session: key,
                epoch,
            },
        );
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
            self.clients[idx].conn.refuse_connect(
                ReasonCode::QUOTA_EXCEEDED,
                now,
                &mut self.actions,
            );
            self.run_actions(io, idx, now);
            return;
        }
        if req.client_id.is_empty() {
            let n = self
                .shared
                .next_assigned_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            req.client_id = generate_client_id(self.id.into(), n);
            self.clients[idx].assigned_id = Some(Box::new(req.client_id.clone()));
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
        self.clients[idx].session = Some(key);
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
            None => self.on_handoff(io, Handoff::empty(claimant), now),
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

    /// Put a session's subscriptions into this worker's index.
    fn index_session(&mut self, key: SessionKey, session: &Session) {
        for (filter, sub) in session.subscriptions() {
            self.add_subscription(key, filter.clone(), *sub);
        }
    }

    /// Step 3, on the worker that holds `t.target`.
    pub(super) fn on_takeover(&mut self, io: &mut Io<'_>, t: TakeOver, now: Instant) {
        let refuse_other_user = self.shared.cfg.refuse_takeover_by_other_user;
        let me = self.id;
        let Some(entry) = self.session_mut(t.target) else {
            self.answer(io, Handoff::empty(t.claimant), now);
            return;
        };
        if refuse_other_user && entry.username != t.username {
            // The old owner stays: restore its ownership (the claim displaced it) and refuse.
            let owner = Owner {
                worker: me,
                session: t.target,
                epoch: entry.epoch,
            };
            let client_id = entry.client_id.clone();
            self.shared.owners.claim(&client_id, owner);
            self.answer(
                io,
                Handoff {
                    claimant: t.claimant,
                    session: None,
                    refused: true,
                    from: None,
                },
                now,
            );
            return;
        }
        // Messages held for a cut-over still in progress go into the session before it leaves.
        if let Some(c) = entry.cutover.take() {
            self.flush_cutover(io, t.target, *c, now);
        }
        let Some(entry) = self.session_mut(t.target) else {
            self.answer(io, Handoff::empty(t.claimant), now);
            return;
        };
        match std::mem::replace(&mut entry.state, SessionState::Pending { conn: None }) {
            SessionState::Moved(m) => {
                // Not the owner any more (a stale target): nothing to hand off.
                entry.state = SessionState::Moved(m);
                self.answer(io, Handoff::empty(t.claimant), now);
            }
            SessionState::Pending { conn } => {
                // Still waiting for our own hand-off: remember who comes next, and drop our
                // connection (it never got CONNACK, so it has no will to publish).
                entry.forward = Some(Box::new(t));
                if let Some(idx) = conn.and_then(|c| self.client_index(c)) {
                    self.clients[idx].session = None;
                    self.close_client(io, idx, None);
                }
            }
            SessionState::Online { conn } => {
                let mut session = None;
                let mut will = None;
                if let Some(idx) = self.client_index(conn) {
                    let mut out = Vec::new();
                    self.clients[idx]
                        .conn
                        .take_over(t.clean_start, now, &mut out);
                    self.clients[idx].session = None;
                    session = self.clients[idx].conn.take_session();
                    for a in out {
                        match a {
                            Action::Send(p) => {
                                self.send_packet(io, idx, &p);
                            }
                            Action::Close { will: w, .. } => will = w,
                            _ => {}
                        }
                    }
                    self.close_client(io, idx, None);
                }
                self.finish_takeover(io, t, session, will, now);
            }
            SessionState::Offline(s) => {
                // A delayed will: cancelled when the session is resumed, published when it ends.
                let delayed = entry.delayed_will.take();
                let will = match delayed {
                    Some((m, _)) if t.clean_start => Some(PendingWill {
                        message: m,
                        delay: Duration::ZERO,
                    }),
                    _ => None,
                };
                self.mark_shared_offline(t.target, &s, false);
                self.finish_takeover(io, t, Some(*s), will, now);
            }
        }
    }

    fn finish_takeover(
        &mut self,
        io: &mut Io<'_>,
        t: TakeOver,
        session: Option<Session>,
        will: Option<PendingWill>,
        now: Instant,
    ) {
        // The session carries over unless the new CONNECT asks for a clean start or the old
        // session was to end with its connection (expiry 0).
        let continues = session
            .as_ref()
            .is_some_and(|s| !t.clean_start && s.session_expiry() > 0);
        let mut from = None;
        match &session {
            // Cut-over to another worker: stay indexed and forward until the claimant indexed
            // the session (no message falls between the two indexes).
            Some(s) if continues && t.claimant.worker != self.id => {
                let filters = s.subscriptions().map(|(f, _)| f.clone()).collect();
                if let Some(e) = self.session_mut(t.target) {
                    e.state = SessionState::Moved(Box::new(Moved {
                        to: t.claimant,
                        filters,
                    }));
                    from = Some((self.id, t.target));
                }
            }
            _ => {
                if let Some(s) = &session {
                    self.unindex_session(t.target, s);
                }
                self.drop_session_entry(t.target);
            }
        }
        let session = session.filter(|_| continues);
        if let Some(w) = will {
            // Every take-over case publishes at once or not at all (session::will::on_takeover).
            self.publish_will(io, w.message, now);
        }
        self.answer(
            io,
            Handoff {
                claimant: t.claimant,
                session: session.map(Box::new),
                refused: false,
                from,
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
            // A newer claimant took us over while we waited: pass the session on (the previous
            // owner stops forwarding to us; this rare chain has no cut-over).
            let session = if entry.clean_start { None } else { h.session };
            self.drop_session_entry(key);
            self.unforward(h.from);
            self.answer(
                io,
                Handoff {
                    claimant: next.claimant,
                    session: session.filter(|_| !next.clean_start),
                    refused: false,
                    from: None,
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
        let idx = conn
            .and_then(|c| self.client_index(c))
            .filter(|&i| !self.clients[i].closing);
        if h.refused {
            self.unforward(h.from);
            self.drop_session_entry(key);
            if let Some(idx) = idx {
                self.clients[idx].session = None;
                self.clients[idx].conn.refuse_connect(
                    ReasonCode::NOT_AUTHORIZED,
                    now,
                    &mut self.actions,
                );
                self.run_actions(io, idx, now);
            }
            return;
        }
        match idx {
            Some(idx) => {
                if let Some(s) = &h.session {
                    self.index_session(key, s);
                }
                let conn = self.clients[idx].id;
                let cutover = h.from.is_some();
                if let Some(e) = self.session_mut(key) {
                    e.state = SessionState::Online { conn };
                    if cutover {
                        e.cutover = Some(Box::default());
                    }
                }
                self.unforward(h.from);
                let assigned = self.clients[idx].assigned_id.as_deref().cloned();
                self.clients[idx].conn.accept_connect(
                    h.session.map(|b| *b),
                    assigned,
                    now,
                    &mut self.actions,
                );
                self.run_actions(io, idx, now);
            }
            None => {
                // The connection went away while waiting. Keep a continuing session offline.
                match h.session {
                    Some(s) if s.session_expiry() > 0 => {
                        self.index_session(key, &s);
                        self.store_offline(key, *s, None, now);
                        if h.from.is_some() {
                            if let Some(e) = self.session_mut(key) {
                                e.cutover = Some(Box::default());
                            }
                        }
                    }
                    _ => {
                        self.drop_session_entry(key);
                        self.release_ownership(&client_id, key, epoch);
                    }
                }
                self.unforward(h.from);
            }
        }
    }

    /// Tell the previous owner of a handed-off session to stop forwarding (cut-over).
    fn unforward(&mut self, from: Option<(u16, SessionKey)>) {
        if let Some((worker, target)) = from {
            self.post(worker, WorkerMsg::Unforward { target });
        }
    }

    /// Keep a session after its connection ended; schedule expiry and a delayed will.
    fn store_offline(
        &mut self,
        key: SessionKey,
        session: Session,
        delayed_will: Option<(Message, Instant)>,
        now: Instant,
    ) {
        let expiry = session.session_expiry();
        let expires_at = (expiry != u32::MAX).then(|| now + Duration::from_secs(expiry.into()));
        let will_due = delayed_will.as_ref().map(|w| w.1);
        self.mark_shared_offline(key, &session, true);
        let Some(e) = self.session_mut(key) else {
            return;
        };
        e.state = SessionState::Offline(Box::new(session));
        e.expires_at = expires_at;
        e.delayed_will = delayed_will;
        if let Some(t) = expires_at {
            self.wheel.insert(TimerKey::Session(key), t);
        }
        if let Some(t) = will_due {
            self.wheel.insert(TimerKey::Session(key), t);
        }
    }

    /// The end of a network connection (every cause goes through here once). `will` is what
    /// the state machine decided (`session::will`), with its delay.
    pub(super) fn connection_ended(
        &mut self,
        io: &mut Io<'_>,
        mut client: Client,
        will: Option<PendingWill>,
        now: Instant,
    ) {
        let Some(key) = client.session else {
            if let Some(w) = will {
                self.publish_will(io, w.message, now);
            }
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
        let session = client.conn.take_session();
        let mut delayed = None;
        if let Some(w) = will {
            if w.delay.is_zero() {
                self.publish_will(io, w.message, now);
            } else {
                delayed = Some((w.message, now + w.delay));
            }
        }
        match session {
            Some(s) if s.session_expiry() > 0 => self.store_offline(key, s, delayed, now),
            other => {
                if let Some(s) = &other {
                    self.unindex_session(key, s);
                }
                if let Some((m, _)) = delayed {
                    // The session ends now, so the will cannot wait longer.
                    self.publish_will(io, m, now);
                }
                self.drop_session_entry(key);
                self.release_ownership(&client_id, key, epoch);
            }
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
            .is_some_and(|(_, due)| *due <= now);
        let expired = entry.expires_at.is_some_and(|t| t <= now);
        if will_due || expired {
            if let Some((w, _)) = entry.delayed_will.take() {
                self.publish_will(io, w, now);
            }
        }
        if expired {
            add(&self.metrics.sessions_expired, 1);
            if let Some(e) = self.drop_session_entry(key) {
                if let SessionState::Offline(s) = e.state {
                    self.mark_shared_offline(key, &s, false);
                    self.unindex_session(key, &s);
                }
            }
            self.release_ownership(&client_id, key, epoch);
        }
    }
}
