//! Session ownership, client take-over and session hand-off between workers, in the order of
//! the handshake. The messages are [`Mail::TakeOver`], [`Mail::Handoff`] and, for the cut-over,
//! [`Mail::Forward`], [`Mail::Unforward`] and [`Mail::ForwardDone`] (`mail.rs`).
//!
//! # The handshake
//!
//! 1. A CONNECT arrives on worker W for ClientId `id` (`on_connect_request`). W creates a
//!    session slot in state `Pending` and claims `id` in the ownership table with a fresh
//!    epoch. The claim atomically replaces the previous owner P = (worker X, slot, epoch) and
//!    returns it.
//! 2. No previous owner: W answers itself (`Handoff` with no session) at once. Otherwise W
//!    sends `TakeOver { target: P.slot, claimant: W's slot, clean_start }` to X (`post` to
//!    itself when X == W: handled before the current input returns).
//! 3. X looks at the target slot (`on_takeover`):
//!    - gone (stale generation: the session ended meanwhile): answers `Handoff { session: None }`;
//!    - `Online`: the old connection gets DISCONNECT 0x8E (MQTT 5) and is closed; its session
//!      leaves X; the will is decided by `session::will::on_takeover` inside the old
//!      connection's state machine; X answers with the session unless it ends;
//!    - `Offline`: same, with no connection to close; a delayed will is cancelled when the
//!      session continues, published when it ends (`session::will::on_takeover_of_offline`);
//!    - `Pending` (the target is itself a claimant still waiting for its own hand-off): the
//!      pending connection is closed without CONNACK and the entry remembers the newer
//!      claimant in `forward`; when its hand-off arrives the session is passed on.
//!
//!    Every TakeOver gets exactly one Handoff, so no claimant waits forever.
//! 4. W receives `Handoff` (`on_handoff`): if its slot has a `forward`, it passes the session
//!    on; if its connection is still there it installs the session (subscriptions into W's
//!    trie) and the state machine sends CONNACK with Session Present; if the connection died
//!    meanwhile, the session is kept offline or ended per its expiry.
//!
//! Racing CONNECTs therefore form a chain in the order of their claims, the last claim owns the
//! ClientId, and epochs make a late release by a displaced owner harmless
//! (`OwnershipTable::release` only removes the entry of its own epoch).
//!
//! # Cut-over (a continuing session moves from slot X to slot W)
//!
//! X does not drop its index entries at step 3: the slot becomes `Moved` and every delivery
//! it makes to the session is forwarded to W (`Forward`, after the `Handoff` in X's FIFO to W).
//! W indexes the session at step 4, marks it `cutover` and sends `Unforward` to X; X then
//! removes its entries, drops the slot and answers `ForwardDone` (after its last `Forward`).
//! Meanwhile W holds what its own index matches for the session; a forwarded message W also
//! holds is delivered once, at its forwarded position; at `ForwardDone` the rest of the held
//! messages follow. So a PUBLISH routed during the move reaches the session exactly once and
//! in order.
//!
//! A slot that moves on while messages are still forwarded to it becomes a relay: its
//! `Moved` state keeps the cut-over state of its own (`upstream`), and everything that
//! reaches it is passed on in the order above:
//! - taken over while it waits for its own hand-off (the `forward` chain of step 3): when the
//!   hand-off arrives, it passes the session on and relays X's forwards; it tells X to stop
//!   only once the next owner has indexed the session (the next owner's `Unforward`);
//! - taken over during its own cut-over: what it held is not delivered into the departing
//!   session but kept, deduplicated against X's forwards and relayed after X is done.
//!
//! The relay ends at its upstream's `ForwardDone` once its successor told it `Unforward`:
//! it then sends `ForwardDone` on. Same-worker take-overs without a cut-over in progress are
//! synchronous and need none of this.

use std::time::Instant;

use super::core::{Core, Cutover, Link, Moved, OfflineSession, RemoteSession, SessionState};
use super::mail::{Claimant, Handoff, Mail, TakeOver};
use crate::metrics::add;
use crate::ownership::{Owner, SessionKey};
use crate::protocol::ReasonCode;
use crate::session::{
    generate_client_id, will, ClientId, ConnectRequest, Delivery, Message, Session,
};

impl Core {
    /// An id for a CONNECT with an empty client id ("ringmq-{worker}-{n}"); the only place
    /// ids are assigned.
    pub(super) fn assign_client_id(&mut self, idx: usize) -> ClientId {
        let n = self
            .shared
            .next_assigned_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = match self.shared.cfg.cluster.node_name.as_deref() {
            // Unique cluster-wide: the node's name is part of it.
            Some(node) if self.clustered() => ClientId::new(bytestring::ByteString::from(format!(
                "{node}-{}",
                generate_client_id(self.id.into(), n)
            ))),
            _ => ClientId::new(generate_client_id(self.id.into(), n)),
        };
        self.clients[idx].extra().assigned_id = Some(id.clone());
        id
    }

    /// Step 1: an authenticated CONNECT.
    pub(super) fn on_connect_request(&mut self, idx: usize, mut req: ConnectRequest, now: Instant) {
        if req.session_expiry > 0 && self.limits.storage_failed() {
            // The log cannot be written: a persistent session could not be kept.
            add(&self.metrics.storage_refused, 1);
            self.drive(idx, now, |c, out| {
                c.refuse_connect(ReasonCode::QUOTA_EXCEEDED, now, out)
            });
            return;
        }
        if self.sessions.len() >= self.shared.cfg.max_sessions_per_worker {
            self.drive(idx, now, |c, out| {
                c.refuse_connect(ReasonCode::QUOTA_EXCEEDED, now, out)
            });
            return;
        }
        if req.client_id.is_empty() {
            req.client_id = match self.clients[idx].assigned_id() {
                Some(id) => id,
                None => self.assign_client_id(idx),
            };
        }
        if self.clustered() {
            // Claimed cluster-wide first (`broker/cluster.rs`); `connect_owned` follows.
            self.claim_in_cluster(idx, req);
            return;
        }
        let epoch = self.shared.owners.new_epoch();
        self.connect_owned(idx, req, epoch, None, now);
    }

    /// Step 1, continued, once the id is this node's: the local claim. `remote`: the session
    /// (and a will travelling with it) that continues from another node of the cluster.
    pub(super) fn connect_owned(
        &mut self,
        idx: usize,
        req: ConnectRequest,
        epoch: u64,
        remote: Option<RemoteSession>,
        now: Instant,
    ) {
        let conn = self.clients[idx].id;
        let key = self.new_session_entry(
            req.client_id.clone(),
            epoch,
            SessionState::Pending { conn: Some(conn) },
            req.clean_start,
        );
        if let Some(e) = self.session_mut(key) {
            e.set_username(req.username.clone());
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
            None => {
                let mut h = Handoff::empty(claimant);
                if let Some((session, will)) = remote {
                    h.session = Some(session);
                    h.will = will;
                }
                self.on_handoff(h, now)
            }
            Some(prev) => {
                add(&self.metrics.takeovers, 1);
                // A session from another node wins over one still held here (a stale copy):
                // the local one ends, and the hand-off brings the remote one (`take_handoff`).
                let clean_start = req.clean_start || remote.is_some();
                if let Some(r) = remote {
                    self.cluster_remote.insert(key, r);
                }
                let t = TakeOver {
                    client_id: (*req.client_id).clone(),
                    target: prev.session,
                    claimant,
                    clean_start,
                    username: req.username.clone(),
                };
                self.post(prev.worker, Mail::TakeOver(t));
            }
        }
    }

    /// Step 2's answer goes to the claimant's worker (ourselves included).
    fn answer(&mut self, h: Handoff, now: Instant) {
        if h.claimant.worker == self.id {
            self.on_handoff(h, now);
        } else {
            self.post(h.claimant.worker, Mail::Handoff(h));
        }
    }

    /// Step 3, on the worker that holds `t.target`.
    pub(super) fn on_takeover(&mut self, t: TakeOver, now: Instant) {
        let refuse_other_user = self.shared.cfg.refuse_takeover_by_other_user;
        let me = self.id;
        let Some(entry) = self.session_mut(t.target) else {
            self.answer(Handoff::empty(t.claimant), now);
            return;
        };
        if refuse_other_user && entry.username() != t.username.as_ref() {
            // The old owner stays: restore its ownership (the claim displaced it) and refuse.
            let owner = Owner {
                worker: me,
                session: t.target,
                epoch: entry.epoch,
            };
            let client_id = entry.client_id.clone();
            self.shared.owners.claim(&client_id, owner);
            let mut h = Handoff::empty(t.claimant);
            h.refused = true;
            self.answer(h, now);
            return;
        }
        let cutover = entry.take_cutover();
        match std::mem::replace(&mut entry.state, SessionState::Pending { conn: None }) {
            SessionState::Moved(m) => {
                // Not the owner any more (a stale target): nothing to hand off.
                entry.state = SessionState::Moved(m);
                entry.set_cutover(cutover);
                self.answer(Handoff::empty(t.claimant), now);
            }
            SessionState::Pending { conn } => {
                // Still waiting for our own hand-off: remember who comes next, and drop our
                // connection (it never got CONNACK, so it has no will to publish).
                entry.set_forward(t);
                entry.set_cutover(cutover);
                if let Some(idx) = conn.and_then(|c| self.client_index(c)) {
                    self.clients[idx].session = None;
                    self.close_client(idx, None, now);
                }
            }
            SessionState::Online { conn } => {
                let mut session = None;
                let mut carried = None;
                if let Some(idx) = self.client_index(conn) {
                    // The session leaves the connection first: the will its state machine
                    // decides (session::will::on_takeover) is then published at its close,
                    // or, when the session continues and the will has a delay, travels with
                    // the session until a connection resumes it.
                    self.clients[idx].session = None;
                    self.drop_held(conn, true);
                    let clean_start = t.clean_start;
                    if let Some(s) = self.clients[idx].conn.session() {
                        if let Some(w) = s.will() {
                            let delay = w.properties.will_delay_interval.unwrap_or(0);
                            if let Some(d) = will::carried_on_takeover(
                                s.version(),
                                clean_start,
                                s.session_expiry(),
                                delay,
                            ) {
                                let msg = Message::from_will(w, s.client_id(), now + d);
                                carried = Some((msg, now + d));
                            }
                        }
                    }
                    self.drive(idx, now, |c, out| c.take_over(clean_start, now, out));
                    session = self.clients[idx].conn.take_session();
                    // Its waiting QoS 0 goes the way of QoS 0 for a session offline.
                    let qos0 = self.take_qos0(idx);
                    let id = session.as_ref().map(|s| s.shared_client_id().clone());
                    let kept = session
                        .as_mut()
                        .filter(|s| !clean_start && s.session_expiry() > 0);
                    self.end_qos0(qos0, kept, id.as_ref(), now);
                    if self.clients[idx].link == Link::Open {
                        // The state machine always closes; this is for a stale order.
                        self.close_client(idx, None, now);
                    }
                }
                self.finish_takeover(t, session, cutover, carried, now);
            }
            SessionState::Offline(off) => {
                let OfflineSession {
                    session: s,
                    delayed_will: mut carried,
                    ..
                } = *off;
                if carried.is_some()
                    && will::on_takeover_of_offline(t.clean_start) == will::WillDecision::PublishNow
                {
                    if let Some((m, _)) = carried.take() {
                        self.publish_will(m, now);
                    }
                }
                self.mark_shared_offline(t.target, &s, false);
                self.finish_takeover(t, Some(s), cutover, carried, now);
            }
        }
    }

    /// Step 3, continued: the session leaves this slot. It carries over unless the new CONNECT
    /// asks for a clean start or the old session was to end with its connection (expiry 0).
    fn finish_takeover(
        &mut self,
        t: TakeOver,
        session: Option<Session>,
        cutover: Option<Box<Cutover>>,
        mut will: Option<(Message, Instant)>,
        now: Instant,
    ) {
        let continues = session
            .as_ref()
            .is_some_and(|s| !t.clean_start && s.session_expiry() > 0);
        if !continues {
            // The session ends here: a will waiting for its delay goes now.
            self.publish_carried(will.take(), now);
        }
        // Durability: the copy on disk stays until the claimant stored its own (`persist.rs`).
        let mut origin = None;
        if let (Some(s), Some(e)) = (&session, self.session(t.target)) {
            if s.is_durable() {
                let (id, epoch) = (e.client_id.clone(), e.epoch);
                if continues {
                    self.handed_off(&id, epoch, s);
                    origin = Some((self.id, epoch));
                } else {
                    self.persist_drop(&id, epoch, now);
                }
            }
        }
        let mut from = None;
        let mut delivered = Vec::new();
        match &session {
            // Cut-over: stay indexed and relay until the claimant indexed the session (no
            // message falls between the two indexes). Needed across workers, and on one
            // worker while an earlier owner still forwards to this slot.
            Some(s) if continues && (t.claimant.worker != self.id || cutover.is_some()) => {
                let filters = s.subscriptions().map(|(f, _)| f.clone()).collect();
                if let Some(c) = &cutover {
                    delivered = c.forwarded.clone();
                }
                if let Some(e) = self.session_mut(t.target) {
                    e.state = SessionState::Moved(Box::new(Moved {
                        to: t.claimant,
                        filters,
                        // We told the earlier owner to stop when we indexed the session.
                        upstream_told: cutover.is_some(),
                        upstream: cutover,
                        unforwarded: false,
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
        self.answer(
            Handoff {
                claimant: t.claimant,
                session: session.map(Box::new),
                refused: false,
                from,
                delivered,
                will,
                origin,
            },
            now,
        );
    }

    /// Step 4, on the claimant's worker.
    pub(super) fn on_handoff(&mut self, h: Handoff, now: Instant) {
        let origin = h.origin;
        let client = self
            .session(h.claimant.session)
            .map(|e| e.client_id.clone());
        let passed = self
            .session(h.claimant.session)
            .is_some_and(|e| e.has_forward());
        self.take_handoff(h, now);
        // The durable copy the session came from can go: ours is logged (behind the barrier
        // of its image), or the session ended. A hand-off passed on carries it further.
        if let (Some((w, epoch)), false) = (origin, passed) {
            let client_id = client.map(|id| (*id).clone()).unwrap_or_default();
            self.post_after_commit(w, Mail::Stored { client_id, epoch });
        }
    }

    fn take_handoff(&mut self, mut h: Handoff, now: Instant) {
        let key = h.claimant.session;
        if let Some((session, will)) = self.cluster_remote.remove(&key) {
            self.publish_carried(h.will.take(), now);
            h.session = Some(session);
            h.will = will;
        }
        let Some(entry) = self.session_mut(key) else {
            // Our slot is gone: nothing waits for this session here (it ends). Let the
            // previous owner stop forwarding.
            self.unforward(h.from, h.claimant);
            self.publish_carried(h.will, now);
            return;
        };
        if let Some(next) = entry.take_forward() {
            self.pass_on(key, h, *next, now);
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
            .filter(|&i| self.clients[i].link == Link::Open);
        if h.refused {
            self.unforward(h.from, h.claimant);
            self.drop_session_entry(key);
            if let Some(idx) = idx {
                self.clients[idx].session = None;
                self.drive(idx, now, |c, out| {
                    c.refuse_connect(ReasonCode::NOT_AUTHORIZED, now, out)
                });
            }
            return;
        }
        match (idx, h.session) {
            (Some(idx), session) => {
                if let Some(s) = &session {
                    self.index_session(key, s);
                }
                let conn = self.clients[idx].id;
                let cutover = h.from.map(|f| Box::new(Cutover::resuming(f, h.delivered)));
                let mut shared_id = None;
                if let Some(e) = self.session_mut(key) {
                    e.state = SessionState::Online { conn };
                    e.set_cutover(cutover);
                    shared_id = Some(e.client_id.clone());
                }
                self.unforward(h.from, h.claimant);
                // Resumed by a connection: a will that travelled with the session is
                // cancelled (session::will::carried_on_takeover).
                drop(h.will);
                let assigned = self.clients[idx].assigned_id().map(|id| (*id).clone());
                let session = session.map(|b| *b);
                self.drive(idx, now, |c, out| {
                    c.accept_connect(session, assigned, now, out);
                    // One allocation for the id, whichever way the session came.
                    if let Some(id) = &shared_id {
                        c.share_client_id(id);
                    }
                });
            }
            // The connection went away while waiting. Keep a continuing session offline.
            (None, Some(mut s)) if s.session_expiry() > 0 => {
                self.index_session(key, &s);
                self.adopt(&mut s);
                // Nobody resumed it: a travelling will keeps waiting for its delay.
                self.store_offline(key, *s, h.will, now);
                let cutover = h.from.map(|f| Box::new(Cutover::resuming(f, h.delivered)));
                if let Some(e) = self.session_mut(key) {
                    e.set_cutover(cutover);
                }
                self.unforward(h.from, h.claimant);
            }
            (None, _) => {
                self.drop_session_entry(key);
                self.release_ownership(&client_id, key, epoch);
                self.unforward(h.from, h.claimant);
                self.publish_carried(h.will, now);
            }
        }
    }

    /// Step 4 on a slot that a newer claimant took over while it waited (step 3, `Pending`):
    /// pass the session on. If the previous owner still forwards to us, this slot relays
    /// until the newer claimant has indexed the session (see "Cut-over").
    fn pass_on(&mut self, key: SessionKey, h: Handoff, next: TakeOver, now: Instant) {
        let clean_start = self.session(key).is_some_and(|e| e.clean_start);
        let session = if clean_start { None } else { h.session };
        let session = session.filter(|_| !next.clean_start);
        let mut will = h.will;
        let mut origin = h.origin;
        if session.is_none() {
            // The session ends with this pass: a will waiting for its delay goes now, and the
            // durable copy it came from can go.
            self.publish_carried(will.take(), now);
            if let Some((w, epoch)) = origin.take() {
                let client_id = next.client_id.clone();
                self.post_after_commit(w, Mail::Stored { client_id, epoch });
            }
        }
        let mut from = None;
        match (h.from, &session) {
            (Some(upstream), Some(_)) => {
                let held = Box::new(Cutover::resuming(upstream, h.delivered.clone()));
                if let Some(e) = self.session_mut(key) {
                    e.state = SessionState::Moved(Box::new(Moved {
                        to: next.claimant,
                        filters: Vec::new(),
                        upstream: Some(held),
                        upstream_told: false,
                        unforwarded: false,
                    }));
                }
                from = Some((self.id, key));
            }
            _ => {
                self.drop_session_entry(key);
                self.unforward(h.from, h.claimant);
            }
        }
        self.answer(
            Handoff {
                claimant: next.claimant,
                session,
                refused: false,
                from,
                delivered: h.delivered,
                will,
                origin,
            },
            now,
        );
    }

    /// A will that travelled with a session whose end has come: published now
    /// (`session::will::on_session_end`).
    pub(super) fn publish_carried(&mut self, will: Option<(Message, Instant)>, now: Instant) {
        if let Some((m, _)) = will {
            debug_assert_eq!(will::on_session_end(), will::WillDecision::PublishNow);
            self.publish_will(m, now);
        }
    }

    /// Tell the previous owner of a handed-off session to stop forwarding to `me`.
    fn unforward(&mut self, from: Option<(u16, SessionKey)>, me: Claimant) {
        if let Some((worker, target)) = from {
            self.post(worker, Mail::Unforward { target, to: me });
        }
    }

    // --- cut-over: the previous owner's side ------------------------------------------------

    /// Something this worker would deliver to a slot that moved away: relay it. Messages
    /// matched here (`routed`) wait while an earlier owner still forwards to this slot.
    pub(super) fn relay(
        &mut self,
        key: SessionKey,
        msg: &Message,
        delivery: Delivery,
        routed: bool,
    ) {
        let Some(SessionState::Moved(m)) = self.session_mut(key).map(|e| &mut e.state) else {
            return;
        };
        if routed {
            if let Some(up) = m.upstream.as_mut() {
                up.held.push((msg.clone(), delivery));
                return;
            }
        }
        let to = m.to;
        self.post(
            to.worker,
            Mail::Forward {
                session: to.session,
                msg: msg.clone(),
                delivery,
                routed,
            },
        );
    }

    /// The new owner indexed a session that moved away from here: stop forwarding (once an
    /// earlier owner, if any, is done forwarding to us).
    pub(super) fn on_unforward(&mut self, key: SessionKey, to: Claimant) {
        let Some(SessionState::Moved(m)) = self.session_mut(key).map(|e| &mut e.state) else {
            return;
        };
        if (m.to.worker, m.to.session) != (to.worker, to.session) {
            return;
        }
        m.unforwarded = true;
        if let Some(up) = &m.upstream {
            if !m.upstream_told {
                m.upstream_told = true;
                let from = up.from;
                let me = Claimant {
                    worker: self.id,
                    session: key,
                    conn: to.conn,
                };
                self.unforward(Some(from), me);
            }
            return;
        }
        self.end_relay(key);
    }

    /// Remove what this slot still indexes, drop it, and tell the new owner we are done.
    fn end_relay(&mut self, key: SessionKey) {
        let Some(e) = self.drop_session_entry(key) else {
            return;
        };
        let SessionState::Moved(m) = e.state else {
            unreachable!("end_relay on a slot that did not move");
        };
        for f in &m.filters {
            self.remove_subscription(key, f);
        }
        self.post(
            m.to.worker,
            Mail::ForwardDone {
                session: m.to.session,
            },
        );
    }

    // --- cut-over: the new owner's side (and a relay's) --------------------------------------

    /// What this worker's index matched for a session: deliver it, unless the session is in a
    /// cut-over (held until the previous owner's forwards are done) or moved away (relayed).
    pub(super) fn deliver_routed(
        &mut self,
        key: SessionKey,
        msg: &Message,
        delivery: Delivery,
        now: Instant,
    ) {
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        if matches!(entry.state, SessionState::Moved(_)) {
            self.relay(key, msg, delivery, true);
            return;
        }
        if let Some(c) = entry.cutover_mut() {
            c.held.push((msg.clone(), delivery));
            return;
        }
        self.deliver_to(key, msg, &delivery, now);
    }

    /// A message forwarded by the previous owner of a moved session.
    pub(super) fn on_forward(
        &mut self,
        key: SessionKey,
        msg: Message,
        delivery: Delivery,
        routed: bool,
        now: Instant,
    ) {
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        let cutover = match &mut entry.state {
            SessionState::Moved(m) => m.upstream.as_deref_mut(),
            _ => entry.cutover_mut(),
        };
        if routed {
            if let Some(c) = cutover {
                if let Some(i) = c.held.iter().position(|(m, _)| m.same(&msg)) {
                    // Also matched here: deliver once, in the previous owner's order.
                    c.held.remove(i);
                } else {
                    c.forwarded.push(msg.clone());
                }
            }
        }
        if matches!(entry.state, SessionState::Moved(_)) {
            // Passed on as it came: not held behind our own matches.
            let to = match &entry.state {
                SessionState::Moved(m) => m.to,
                _ => unreachable!(),
            };
            self.post(
                to.worker,
                Mail::Forward {
                    session: to.session,
                    msg,
                    delivery,
                    routed,
                },
            );
            return;
        }
        self.deliver_to(key, &msg, &delivery, now);
    }

    /// The previous owner's forwards are done: deliver (or relay) what this slot's index
    /// matched meanwhile, except what came forwarded.
    pub(super) fn on_forward_done(&mut self, key: SessionKey, now: Instant) {
        let Some(entry) = self.session_mut(key) else {
            return;
        };
        if let SessionState::Moved(m) = &mut entry.state {
            let Some(up) = m.upstream.take() else {
                return;
            };
            let unforwarded = m.unforwarded;
            for (msg, delivery) in up.held {
                if !up.forwarded.iter().any(|m| m.same(&msg)) {
                    self.relay(key, &msg, delivery, true);
                }
            }
            if unforwarded {
                self.end_relay(key);
            }
            return;
        }
        let Some(c) = entry.take_cutover() else {
            return;
        };
        for (msg, delivery) in c.held {
            if !c.forwarded.iter().any(|m| m.same(&msg)) {
                self.deliver_to(key, &msg, &delivery, now);
            }
        }
    }

    // --- the subscription index follows the session ---------------------------------------

    /// Remove a session's subscriptions from this worker's index.
    pub(super) fn unindex_session(&mut self, key: SessionKey, session: &Session) {
        for (filter, _) in session.subscriptions() {
            self.remove_subscription(key, filter);
        }
    }

    /// Put a session's subscriptions into this worker's index.
    pub(super) fn index_session(&mut self, key: SessionKey, session: &Session) {
        for (filter, sub) in session.subscriptions() {
            self.add_subscription(key, filter, *sub, None);
        }
    }
}
