//! Which sessions a PUBLISH reaches.
//!
//! Each worker indexes the subscriptions of the sessions it holds. A PUBLISH is matched on the
//! worker that received it against its own index, then posted (one shared `Arc`, batched wake
//! per destination) to every other worker that holds at least one subscription; each worker
//! matches against its own index. Subscribing is therefore purely local for non-shared filters
//! (SUBACK never waits on other workers). Shared subscriptions (`$share/group/filter`): every
//! worker keeps a view of every group and picks one member per group (see `change_shared`).
//!
//! # Visibility: a PUBLISH after the SUBACK reaches the subscriber, on any worker
//! The SUBSCRIBE's input on the subscriber's worker inserts the filter into that worker's
//! trie and raises its `Shared::sub_counts` entry (`add_subscription`, run from the work
//! queue before `handle` returns); the SUBACK is only an effect of that input, which the
//! shell sends afterwards. A PUBLISH that reaches the broker after the SUBACK left is routed
//! after that increment: its worker sees the worker's count above 0 and posts it a
//! `Mail::Publish`, which that worker (one thread) handles after the SUBSCRIBE's input, so
//! its trie has the filter. (The chain SUBACK sent -> client -> PUBLISH received goes
//! through system calls, which order the increment before the publisher worker's load.)
//! Shared subscriptions get the same guarantee by holding the SUBACK (see `change_shared`).
//! Before its SUBACK there is no promise: a PUBLISH routed on another worker while the
//! SUBSCRIBE is being handled may miss it (routed while the count is still 0; answered 0x10
//! below; or its mail handled by the subscriber's worker before the SUBSCRIBE's bytes), where
//! one worker handles the two in the order it reads them (`tests::subscription_visibility_*`;
//! docs/design.md measures how often).
//!
//! # PUBACK / PUBREC 0x10 No matching subscribers (MQTT 5)
//! The publisher's worker answers from its own memory, no lock and no shared-memory write:
//! its trie, its view of the shared groups, and its view of the filters the other workers'
//! sessions subscribe to (`Core::remote_filters`, a `crate::routing::remote::RemoteFilters`:
//! per worker and filter, a count), kept in step by `Mail::Filter` from the subscribing
//! worker on every change of its trie. Each worker counts the changes it posts (`Shared::filter_changes`, raised before the mail is posted, in the
//! input that changes its trie); the view counts the changes it applied per worker. A view
//! that applied fewer changes of some worker than that worker has counted is behind: the
//! answer is then 0x00 (a missed 0x10, never a false one).
//!
//! The guarantee: 0x10 is sent only if, when the PUBLISH was routed, no subscription on any
//! worker matched its topic, counting every subscription whose SUBSCRIBE input ran before
//! that (so every one whose SUBACK was sent before the PUBLISH arrived) and was not removed.
//! Such a PUBLISH is then not posted to any worker: nobody gets a message whose publisher was
//! told 0x10. A SUBSCRIBE handled on another worker while the PUBLISH is being routed (its
//! SUBACK not sent yet when the PUBLISH arrived) does not get it, as on one worker. Matching
//! is by filter: a No Local subscription of the publisher itself, or one whose client the ACL
//! keeps from reading the topic, counts as a match (0x00). Off (`no_matching_subscribers_reason
//! = false`) or with one worker, no `Mail::Filter` is sent and the view stays empty.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytestring::ByteString;

use super::core::{Core, SessionState};
use super::mail::{Mail, SharedChange};
use crate::metrics::add;
use crate::ownership::SessionKey;
use crate::protocol::topic::parse_shared;
use crate::protocol::{Packet, QoS, SubscriptionOptions};
use crate::session::{Action, Delivery, Message, MessageData, Subscription};

impl Core {
    /// This worker's view of the other workers' filters: (filter, worker) entries held, and
    /// whether it applied every change the other workers counted (true once mail is
    /// delivered). The simulation checks both at quiescence.
    #[doc(hidden)]
    pub fn remote_filter_view(&self) -> (usize, bool) {
        let in_step = (0..self.shared.workers()).all(|w| {
            w == self.id as usize
                || self.shared.filter_changes[w].load(Ordering::Acquire)
                    == self.remote_filters.applied(w)
        });
        (self.remote_filters.len(), in_step)
    }

    /// Route a PUBLISH that entered the broker on this worker (or a will, or a $SYS message).
    pub(super) fn route_publish(&mut self, msg: Message, now: Instant) {
        self.route(msg, now, false);
    }

    /// Route a PUBLISH of client `idx`, whose PUBACK / PUBREC (if any) is its next action in
    /// the work queue: MQTT 5 gets 0x10 there when no subscription matched on any worker.
    pub(super) fn route_client_publish(&mut self, idx: usize, msg: Message, now: Instant) {
        let ask = msg.qos != QoS::AtMostOnce
            && self.limits.no_matching_subscribers_reason
            && self.clients[idx].conn.version().is_some_and(|v| v.is_v5());
        if self.route(msg, now, ask) || !ask {
            return;
        }
        let ack = self.work.iter_mut().find(|(i, _)| *i == idx);
        if let Some((_, Action::Send(p @ (Packet::PubAck(_) | Packet::PubRec(_))))) = ack {
            self.clients[idx].conn.no_matching_subscribers(p);
        }
    }

    /// Route a message; with `ask`, returns false when no subscription matched on any worker
    /// (the message then goes nowhere; see the module header), true otherwise.
    fn route(&mut self, msg: Message, now: Instant, ask: bool) -> bool {
        if msg.retain && self.shared.cfg.retain_available {
            if let Some(v) = self.shared.store_retained(&msg) {
                let m = (!msg.payload.is_empty()).then_some(&msg);
                self.persist_retain(v, &msg.topic, m);
            }
        }
        let local = self.route_local(&msg, now);
        if ask && !local && !self.may_match_elsewhere(&msg.topic) {
            // No subscriber anywhere; a retained message still goes to every node's store.
            self.route_to_nodes(&msg, Vec::new());
            return false;
        }
        // Durability `sync`: the publisher's acknowledgement (held from here) waits for
        // every worker this message goes to (`persist.rs`).
        let acked = self
            .publisher
            .filter(|_| msg.qos != QoS::AtMostOnce && self.acks_wait_for_commit());
        // A durable session's QoS 2 message: logged as a fan-out, so a crash before every
        // copy is on disk neither loses nor doubles it (`persist.rs`).
        let fan = acked
            .filter(|_| msg.qos == QoS::ExactlyOnce)
            .and_then(|idx| self.fanout_origin(idx).map(|o| (idx, o)));
        let fanned = fan.is_some();
        let mut fan_workers = Vec::new();
        let mut fan_picks = Vec::new();
        if fanned {
            fan_workers = (0..self.shared.mailboxes.len() as u16)
                .filter(|&w| {
                    w != self.id && self.shared.sub_counts[w as usize].load(Ordering::Relaxed) > 0
                })
                .collect();
        }
        let others = if fanned {
            0
        } else {
            self.shared.mailboxes.len()
        };
        for w in 0..others {
            if w != self.id as usize && self.shared.sub_counts[w].load(Ordering::Relaxed) > 0 {
                match acked {
                    Some(idx) => {
                        let token = self.hold_for(idx, 1);
                        let ack = (self.id, token);
                        self.post(
                            w as u16,
                            Mail::PublishAcked {
                                msg: msg.clone(),
                                ack,
                                fanout: None,
                            },
                        );
                    }
                    None => self.post(w as u16, Mail::Publish(msg.clone())),
                }
            }
        }
        // Shared subscriptions picked on other nodes (node number, `$share/G/F`).
        let mut node_picks = Vec::new();
        if !self.shared_view.is_empty() {
            let mut picks = std::mem::take(&mut self.shared_picks);
            let mut groups = std::mem::take(&mut self.shared_groups);
            picks.clear();
            groups.clear();
            self.shared_view.matches(&msg.topic, |g| groups.push(g));
            for &g in &groups {
                if let Some((m, sub)) = self.shared_view.pick_online(g) {
                    if let Some(node) = Self::node_member(m) {
                        node_picks.push((node, self.shared_key(g)));
                        continue;
                    }
                    if fanned && m.0 != self.id {
                        let sub = *sub;
                        fan_picks.push((m, sub, self.shared_key(g)));
                        continue;
                    }
                    picks.push((m, *sub));
                }
            }
            for &(member, sub) in &picks {
                self.deliver_to_member(member, &sub, &msg, acked, now);
            }
            // A delivery may have routed a will meanwhile: it used (and gave back) its own
            // lists, so these are simply put back.
            self.shared_picks = picks;
            self.shared_groups = groups;
        }
        if let Some((idx, origin)) = fan {
            if !fan_workers.is_empty() || !fan_picks.is_empty() {
                self.start_fanout(idx, &msg, origin, fan_workers, fan_picks);
            }
        }
        // Other nodes: those whose filters match or that were picked for a shared
        // subscription, and every node's store if retained.
        self.route_to_nodes(&msg, node_picks);
        true
    }

    /// Deliver `msg` to the shared-subscription member `(worker, session)` picked with `sub`:
    /// here, or by mail to its worker, the acknowledgement of publisher `acked` (if any)
    /// waiting for that worker (`persist.rs`).
    pub(super) fn deliver_to_member(
        &mut self,
        (worker, key): (u16, SessionKey),
        sub: &Subscription,
        msg: &Message,
        acked: Option<usize>,
        now: Instant,
    ) {
        let delivery = Delivery {
            qos: sub.options.qos,
            retain_as_published: sub.options.retain_as_published,
            subscription_ids: sub.subscription_id.into_iter().collect(),
        };
        if worker == self.id {
            self.deliver_to(key, msg, &delivery, now);
        } else {
            let ack = acked.map(|idx| (self.id, self.hold_for(idx, 1)));
            let msg = msg.clone();
            self.post(
                worker,
                Mail::Deliver {
                    session: key,
                    msg,
                    delivery,
                    ack,
                    fanout: None,
                },
            );
        }
    }

    /// Whether a subscription outside this worker's trie may match `topic`: a shared group
    /// (this worker's view has every group), a filter of another worker's sessions, or a
    /// change of another worker this worker's views have not applied yet (then: maybe).
    fn may_match_elsewhere(&self, topic: &str) -> bool {
        let mut found = false;
        self.shared_view.matches(topic, |_| found = true);
        if found {
            return true;
        }
        let behind = (0..self.shared.workers()).any(|w| {
            w != self.id as usize
                && self.shared.filter_changes[w].load(Ordering::Acquire)
                    != self.remote_filters.applied(w)
        });
        behind || self.remote_filters.matches(topic) || self.node_filters.matches(topic)
    }

    /// Whether this worker keeps the other workers' views of its filters (`Mail::Filter`).
    fn posts_filter_changes(&self) -> bool {
        self.limits.no_matching_subscribers_reason && self.shared.workers() > 1
    }

    /// Count one change of this worker's subscriptions for the other workers' views (before
    /// the mail carrying it is posted; see the module header).
    fn count_filter_change(&self) {
        self.shared.filter_changes[self.id as usize].fetch_add(1, Ordering::Release);
    }

    /// A (non-shared) filter of a session here was added or removed: tell the other views.
    fn post_filter_change(&mut self, filter: &str, add: bool) {
        if !self.posts_filter_changes() {
            return;
        }
        self.count_filter_change();
        if let Some(restored) = self.restored_filters.as_mut() {
            // At start: the views are filled from these lists in one go (`persist.rs`).
            self.remote_filters.note_restored(restored, filter);
            return;
        }
        let filter = ByteString::from(filter);
        for w in 0..self.shared.workers() as u16 {
            if w != self.id {
                let (from, filter) = (self.id, filter.clone());
                self.post(w, Mail::Filter { from, filter, add });
            }
        }
    }

    /// `Mail::Filter`: apply worker `from`'s change to this worker's view of its filters.
    pub(super) fn apply_filter(&mut self, from: u16, filter: &ByteString, add: bool) {
        self.remote_filters.apply(from, filter, add);
    }

    /// Deliver to every matching (non-shared) subscription of this worker's sessions: one copy
    /// per session, at the highest granted QoS, with every matching subscription identifier.
    /// Returns whether any subscription's filter matched (delivered or not: No Local, ACL).
    pub(super) fn route_local(&mut self, msg: &Message, now: Instant) -> bool {
        // The match list is a scratch vector the worker keeps: no allocation per message.
        let mut hits = std::mem::take(&mut self.route_hits);
        hits.clear();
        self.subs.matches(&msg.topic, |key, entry| {
            hits.push((key, entry.options, entry.subscription_id))
        });
        if hits.is_empty() {
            self.route_hits = hits;
            return false;
        }
        hits.sort_unstable_by_key(|h| (h.0.index, h.0.generation));
        let mut i = 0;
        while i < hits.len() {
            let key = hits[i].0;
            let end = i + hits[i..].iter().take_while(|h| h.0 == key).count();
            let group = &hits[i..end];
            i = end;
            // No Local: the publisher's own message skips its No Local subscriptions only; an
            // overlapping normal subscription still delivers it, with its own QoS and identifier.
            let own = group.iter().any(|h| h.1.no_local)
                && msg.publisher.is_some()
                && self
                    .session(key)
                    .is_some_and(|e| msg.publisher.as_deref() == Some(e.client_id.as_str()));
            let mut qos = QoS::AtMostOnce;
            let mut retain = false;
            let mut ids = Vec::new();
            let mut any = false;
            for &(_, opts, id) in group {
                if own && opts.no_local {
                    continue;
                }
                any = true;
                qos = qos.max(opts.qos);
                retain |= opts.retain_as_published;
                ids.extend(id);
            }
            if !any {
                continue;
            }
            let delivery = Delivery {
                qos,
                retain_as_published: retain,
                subscription_ids: ids,
            };
            self.deliver_routed(key, msg, delivery, now);
        }
        self.route_hits = hits;
        true
    }

    /// Hand one message to one session of this worker, online or offline.
    pub(super) fn deliver_to(
        &mut self,
        key: SessionKey,
        msg: &Message,
        delivery: &Delivery,
        now: Instant,
    ) {
        // ACL read check on every delivery (routed, shared pick, forwarded, retained): a
        // wildcard subscription must not carry topics the client may not read.
        if !self.may_read(key, &msg.topic) {
            add(&self.metrics.acl_denied, 1);
            return;
        }
        let soft_limit = self.shared.cfg.send_queue_limit / 2;
        let Some(entry) = self.sessions.get_mut(key.index as usize) else {
            return;
        };
        if entry.generation != key.generation {
            return;
        }
        match &mut entry.state {
            SessionState::Online { conn } => {
                let conn = *conn;
                let Some(idx) = self.client_index(conn) else {
                    return;
                };
                // What the socket cannot take now (`overflow.rs`): QoS 0 waits in the
                // client's QoS 0 queue, QoS 1/2 in the session's.
                if msg.qos.min(delivery.qos) == QoS::AtMostOnce && self.qos0_must_wait(idx) {
                    let id = self.session(key).map(|e| e.client_id.clone());
                    self.queue_qos0(idx, id.as_ref(), msg, delivery, now);
                    return;
                }
                let can_write = (self.clients[idx].queued as usize) < soft_limit;
                self.deliver_now(idx, msg, delivery, can_write, now);
            }
            SessionState::Offline(off) => {
                let s = &mut off.session;
                let before = s.stats();
                s.deliver_offline(msg, delivery, now, &self.limits);
                let after = s.stats();
                if after != before {
                    let id = entry.client_id.clone();
                    self.count_drops(before, after, Some(&id), now);
                }
                self.collect_offline(key);
            }
            SessionState::Moved(_) => self.relay(key, msg, delivery.clone(), false),
            SessionState::Pending { .. } => {}
        }
    }

    /// Mark a session's shared-subscription memberships offline (its connection ended, the
    /// session is kept) or online again (resumed, handed off or ended); other members of its
    /// groups are picked first while it is offline.
    pub(super) fn mark_shared_offline(
        &mut self,
        key: SessionKey,
        session: &crate::session::Session,
        offline: bool,
    ) {
        if session
            .subscriptions()
            .any(|(f, _)| parse_shared(f).is_some())
        {
            let member = (self.id, key);
            self.change_shared(SharedChange::Offline { member, offline }, None);
        }
    }

    /// Add a subscription of a session of this worker to the index: its own trie, or (shared)
    /// every worker's view. `hold`: the SUBACK waiting for the views (see `change_shared`).
    pub(super) fn add_subscription(
        &mut self,
        key: SessionKey,
        filter: &ByteString,
        entry: Subscription,
        hold: Option<u64>,
    ) {
        if let Some((group, f)) = parse_shared(filter) {
            if !self.shared_view.has_member(group, f, (self.id, key)) {
                self.filter_in_cluster(filter, true);
            }
            let change = SharedChange::Subscribe {
                group: ByteString::from(group),
                filter: ByteString::from(f),
                member: (self.id, key),
                sub: entry,
            };
            self.change_shared(change, hold);
            return;
        }
        match self.subs.insert(filter, key, entry) {
            Ok(None) => {
                self.shared.sub_counts[self.id as usize].fetch_add(1, Ordering::Relaxed);
                self.filter_in_cluster(filter, true);
                self.post_filter_change(filter, true);
            }
            Ok(Some(_)) => {}
            Err(_) => tracing::warn!(%filter, "filter too deep, not indexed"),
        }
    }

    pub(super) fn remove_subscription(&mut self, key: SessionKey, filter: &str) {
        if let Some((group, f)) = parse_shared(filter) {
            if self.shared_view.has_member(group, f, (self.id, key)) {
                self.filter_in_cluster(filter, false);
            }
            let change = SharedChange::Unsubscribe {
                group: ByteString::from(group),
                filter: ByteString::from(f),
                member: (self.id, key),
            };
            self.change_shared(change, None);
            return;
        }
        if self.subs.remove(filter, key).is_some() {
            self.shared.sub_counts[self.id as usize].fetch_sub(1, Ordering::Relaxed);
            self.post_filter_change(filter, false);
            self.filter_in_cluster(filter, false);
        }
    }

    /// Shared subscriptions without a lock: every worker keeps a view of every group (members
    /// on any worker) and picks from it when it routes. A member's own worker makes each change
    /// to it, applies it to its view and mails it to every other worker, so all views apply the
    /// changes of one member in the same order. A new member must be seen by every PUBLISH
    /// sent after its SUBACK, whatever worker it reaches: the client's output is held from
    /// that SUBACK on (`hold`) until every other worker has answered that the change is in its
    /// view (`SharedApplied`), and only then does the SUBACK go out.
    fn change_shared(&mut self, change: SharedChange, hold: Option<u64>) {
        self.apply_shared(change.clone());
        if self.posts_filter_changes() {
            self.count_filter_change();
        }
        let n = self.shared.workers();
        let ack = hold.map(|token| (self.id, token));
        if let Some(token) = hold {
            if let Some(idx) = self.holds.get(&token).and_then(|&c| self.client_index(c)) {
                if let Some(h) = self.clients[idx]
                    .extra
                    .as_mut()
                    .and_then(|e| e.hold.as_mut())
                {
                    h.waiting += n - 1;
                }
            }
        }
        for w in 0..n as u16 {
            if w != self.id {
                self.post(
                    w,
                    Mail::Shared {
                        change: change.clone(),
                        ack,
                    },
                );
            }
        }
    }

    /// Apply a change to this worker's view of the shared-subscription groups.
    pub(super) fn apply_shared(&mut self, change: SharedChange) {
        let from = match &change {
            SharedChange::Subscribe { member, .. }
            | SharedChange::Unsubscribe { member, .. }
            | SharedChange::Offline { member, .. } => member.0,
        };
        if from != self.id && self.posts_filter_changes() {
            // Counted by `from` in `change_shared` (the member's worker posts its changes).
            self.remote_filters.count(from);
        }
        match change {
            SharedChange::Subscribe {
                group,
                filter,
                member,
                sub,
            } => {
                if self
                    .shared_view
                    .subscribe(&group, &filter, member, sub)
                    .is_err()
                {
                    tracing::warn!(%filter, "shared filter too deep, not indexed");
                }
            }
            SharedChange::Unsubscribe {
                group,
                filter,
                member,
            } => {
                self.shared_view.unsubscribe(&group, &filter, member);
            }
            SharedChange::Offline { member, offline } => {
                self.shared_view.set_offline(member, offline)
            }
        }
    }

    /// Another worker's view has the change of hold `token`: release the held output once
    /// every worker has answered.
    pub(super) fn on_shared_applied(&mut self, token: u64) {
        let Some(idx) = self.holds.get(&token).and_then(|&c| self.client_index(c)) else {
            return;
        };
        let done = match self.clients[idx]
            .extra
            .as_mut()
            .and_then(|e| e.hold.as_mut())
        {
            Some(h) if h.token == token => {
                h.waiting = h.waiting.saturating_sub(1);
                h.waiting == 0
            }
            _ => false,
        };
        if done {
            self.release_hold(idx);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_subscribe(
        &mut self,
        idx: usize,
        filter: ByteString,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
        existed: bool,
        now: Instant,
    ) {
        let Some(key) = self.clients[idx].session else {
            return;
        };
        let shared = parse_shared(&filter).is_some();
        let hold = self.clients[idx]
            .extra
            .as_ref()
            .and_then(|e| e.hold.as_ref())
            .map(|h| h.token);
        self.add_subscription(
            key,
            &filter,
            Subscription {
                options,
                subscription_id,
            },
            hold,
        );
        // Retained messages: not for shared subscriptions; Retain Handling 0 always,
        // 1 only for a new subscription, 2 never.
        let send_retained = !shared
            && match options.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
        if !send_retained {
            return;
        }
        let mut found: Vec<Message> = Vec::new();
        self.shared
            .retained
            .lock()
            .matching(&filter, |m| found.push(m.clone()));
        for msg in found {
            let delivery = Delivery {
                qos: options.qos,
                retain_as_published: true,
                subscription_ids: subscription_id.into_iter().collect(),
            };
            self.deliver_to(key, &msg, &delivery, now);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, idx: usize, filter: &str) {
        if let Some(key) = self.clients[idx].session {
            self.remove_subscription(key, filter);
        }
    }

    /// `$SYS/broker/...` every `sys_interval_secs` (worker 0 only), retained.
    pub(super) fn maybe_publish_sys(&mut self, now: Instant, uptime: std::time::Duration) {
        let every = self.shared.cfg.sys_interval_secs;
        if every == 0 || now.duration_since(self.last_sys).as_secs() < every {
            return;
        }
        self.last_sys = now;
        let totals = crate::metrics::totals(&self.shared.metrics);
        let retained = self.shared.retained.lock().len();
        // Mosquitto's names where the figure is the same (`metrics::SysState`).
        let mut items =
            crate::metrics::SYS_STATE.with(|st| st.borrow_mut().topics(&totals, uptime, retained));
        if let Some(node) = self
            .shared
            .cfg
            .cluster
            .node_name
            .as_deref()
            .filter(|_| self.clustered())
        {
            // This node's cluster figures under `$SYS/cluster/{node}/`, which, unlike the
            // rest of `$SYS`, every node gets (retained): one view of the whole cluster.
            items.extend(crate::metrics::cluster_sys_topics(node, &totals));
        }
        for (topic, value) in items {
            let msg = Message::new(MessageData {
                topic: ByteString::from(topic),
                payload: bytes::Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Default::default(),
                expires_at: None,
                publisher: None,
            });
            self.route_publish(msg, now);
        }
    }
}
