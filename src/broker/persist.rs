//! The core's side of durability (`--data-dir`): what goes into this worker's log, and the
//! rule that holds acknowledgements back until it is on disk.
//!
//! # Records
//! Durable sessions (those that outlive their connection) note their own changes as they
//! happen (`Session::jot`, in `session/`); the core collects them after every call into a
//! connection's state machine (`drive`) and after every offline delivery, and adds what
//! only it knows: a session's image when a CONNECT accepted it or a hand-off brought it,
//! `OFFLINE` when its connection ended, `DROP` when this copy ends, `RETAIN` for the
//! retained store. They are appended to `Persist::log`; the shell takes them after each
//! input (`Core::take_log`) and gives them to the storage thread.
//!
//! # The commit barrier (`durability = sync` and `batched`)
//! The first record of a batch puts a barrier into the effect queue: the effects queued
//! after it in that input for connections (acks, deliveries, closes) wait until the shell
//! reports the batch committed (`Input::Committed`): on disk (`sync`, after fdatasync) or
//! written to the kernel (`batched`, which syncs every `commit_interval_ms`; a crash of the
//! broker alone then loses nothing acknowledged, a crash of the machine up to that interval).
//! One barrier per batch, so a pass that acknowledges a thousand PUBLISHes waits for one
//! fdatasync. A later effect waits too when it is for a connection that has effects
//! waiting (order per connection). Mail waits only when it announces something logged
//! (`Core::post_after_commit`: `Mail::Stored`, the replies to `PublishAcked`); any other mail
//! goes at once, in the order of the decisions, which the cut-over of a take-over relies on.
//! Refusals, PINGRESP and other clients' traffic never wait for the disk. Output waiting for
//! a connection that closes or is taken over is dropped (`Core::drop_held`).
//!
//! A QoS 1/2 PUBLISH routed to other workers: its PUBACK/PUBREC is held (the hold of
//! `router.rs`) until every one of them answers that it has routed it, and they answer
//! behind their own barrier, so the acknowledgement leaves only when every copy the message
//! made is on disk.
//!
//! # A QoS 2 message that goes to other workers (fan-out)
//! Its PUBREC must mean every copy is on disk, and its packet id must be on disk with the
//! PUBREC, so a resent PUBLISH is not routed again. The two live in different workers' logs,
//! which no single commit covers, so the message itself is logged where it entered:
//! 1. The publisher's worker routes it to its own sessions and logs `FANOUT` (the message,
//!    the other workers it goes to and the shared groups whose member it picked on another
//!    worker, the publisher's client id and packet id) and the packet id, all in one batch. Only once that batch is on disk does `Mail::PublishAcked` go to
//!    those workers (`start_fanout`); the PUBREC waits for all of them.
//! 2. Each of them routes it and logs `ROUTED` after its copies, in their batch, and answers
//!    `FanoutRouted` behind its barrier (`note_routed`).
//! 3. The last answer releases the PUBREC and logs `FANOUT_DONE` (`fanout_answered`).
//!
//! A crash before step 1's batch is on disk leaves nothing: the publisher sends the message
//! again and it is routed as new. After it, recovery routes every `FANOUT` without
//! `FANOUT_DONE` again on each worker that has no `ROUTED` for it, and the publisher's resent
//! PUBLISH only gets its PUBREC (`storage/recover.rs`): every copy exists exactly once. A
//! `FANOUT` whose packet id is not on disk was in a batch cut short: ignored.
//!
//! Snapshots repeat what recovery needs: the origin's fan-outs still waiting, and each
//! worker's `ROUTED` for fan-outs at or above its origin's watermark (`Mail::PublishAcked`
//! carries it: the oldest fan-out whose `FANOUT_DONE` is not on disk yet).
//!
//! A shared-subscription member picked on another worker is a part of its own
//! (`Mail::Deliver` with the fan-out): recovery gives a missing one to a member of the same
//! group, one of that worker's if it has one. Not covered: other nodes get a QoS 2 message as
//! before: its packet id is logged after their copies, and a crash between the two can
//! deliver it twice when the publisher sends it again.
//!
//! # A session that moves (take-over)
//! The old copy stays valid on disk until the new owner has written its image: the old
//! owner keeps the image it handed off (`unconfirmed`, also written into its snapshots) and
//! writes `DROP` only when the new owner answers `Mail::Stored`, which the new owner posts
//! behind its barrier. Recovery keeps, per client id, the copy with the highest ownership
//! epoch, so at every moment exactly one copy wins.

use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::core::{Core, Fanning, Fx, Persist, SessionState, KEEP_DROPS, SNAPSHOT_LOG_BYTES};
use super::mail::Mail;
use crate::ownership::SessionKey;
use crate::protocol::Packet;
use crate::routing::remote::RestoredFilters;
use crate::session::Action;
use crate::session::{Message, Session, Subscription};
use crate::storage::recover::Restored;
use crate::storage::{record, Durability};

impl Core {
    /// Turn durability on (before the first input): sessions that outlive their
    /// connection are logged; QoS 1/2 PUBLISHes are refused while `failed` is set.
    pub fn enable_persist(
        &mut self,
        mode: Durability,
        snapshot_interval: Duration,
        failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
        now: Instant,
    ) {
        let mut l = (*self.limits).clone();
        l.durable = true;
        l.storage_failed = crate::session::config::StorageFlag(Some(failed));
        self.limits = std::sync::Arc::new(l);
        self.persist = Some(Persist::new(mode, snapshot_interval, now));
    }

    /// The filters `restore` indexed, each counted as one change for the other workers'
    /// views, which `apply_restored_filters` then fills; restoring is over.
    pub fn take_restored_filters(&mut self) -> RestoredFilters {
        self.restored_filters.take().unwrap_or_default()
    }

    /// Worker `from`'s restored filters into this worker's view (see `take_restored_filters`).
    pub fn apply_restored_filters(&mut self, from: u16, filters: &RestoredFilters) {
        self.remote_filters.add_restored(from, filters);
    }

    /// Publish the wills recovery found due (after every worker restored its sessions).
    pub fn publish_recovered_wills(&mut self, wills: Vec<Message>, now: Instant) {
        for w in wills {
            self.publish_will(w, now);
        }
        self.run_pending(now);
    }

    /// A record was appended: in `sync` mode, what follows waits for its batch.
    fn opened(&mut self) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        if p.mode != Durability::None && !p.barrier_open {
            p.barrier_open = true;
            let b = p.batch;
            self.effects.push_back(Fx::Barrier(b));
        }
    }

    /// Append a `SESSION` frame with `subs` for the copy (`client_id`, `epoch`).
    fn append(&mut self, client_id: &str, epoch: u64, subs: &[u8]) {
        let Some(p) = self.persist.as_mut().filter(|p| p.logs()) else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        record::session_frame(&mut p.log, client_id, epoch, subs);
        self.opened();
    }

    /// Append what `s` noted (or its image, if it asks for one) as a frame of the copy
    /// (`client_id`, `epoch`) to `p.log`; true if anything was appended.
    fn gather(
        p: &mut Persist,
        s: &mut Session,
        client_id: &str,
        epoch: u64,
        username: Option<&ByteString>,
    ) -> bool {
        let Some(j) = s.journal_mut() else {
            return false;
        };
        if !p.logs() {
            j.image = false;
            j.buf.clear();
            return false;
        }
        if j.image {
            j.image = false;
            j.buf.clear();
            let mut subs = std::mem::take(&mut p.scratch);
            subs.clear();
            record::put_image(&mut subs, s, username);
            record::session_frame(&mut p.log, client_id, epoch, &subs);
            p.scratch = subs;
            return true;
        }
        if j.buf.is_empty() {
            return false;
        }
        record::session_frame(&mut p.log, client_id, epoch, &j.buf);
        j.buf.clear();
        true
    }

    /// After a call into client `idx`'s state machine.
    pub(super) fn collect_client(&mut self, idx: usize) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(key) = self.clients[idx].session else {
            return;
        };
        let Some(e) = self
            .sessions
            .get(key.index as usize)
            .filter(|e| e.generation == key.generation)
        else {
            return;
        };
        let Some(s) = self.clients[idx].conn.session_mut() else {
            return;
        };
        if Self::gather(p, s, &e.client_id, e.epoch, e.username()) {
            self.opened();
        }
    }

    /// After a change of an offline session held in slot `key`.
    pub(super) fn collect_offline(&mut self, key: SessionKey) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(e) = self
            .sessions
            .get_mut(key.index as usize)
            .filter(|e| e.generation == key.generation)
        else {
            return;
        };
        let Some((s, client_id, epoch, username)) = e.offline_parts() else {
            return;
        };
        if Self::gather(p, s, client_id, epoch, username) {
            self.opened();
        }
    }

    /// A session just came to slot `key` whole (a hand-off nobody resumed): make it durable
    /// here if it outlives connections; its image is written by `collect_offline`.
    pub(super) fn adopt(&self, s: &mut Session) {
        s.set_journal((self.persist.is_some() && s.session_expiry() > 0).then(|| {
            crate::session::state::Journal {
                buf: Vec::new(),
                image: true,
            }
        }));
    }

    /// The connection of a durable session ended and the session stays offline.
    pub(super) fn persist_offline(
        &mut self,
        key: SessionKey,
        expires_at: Option<Instant>,
        will_due: Option<Instant>,
    ) {
        let Some(e) = self.sessions.get(key.index as usize) else {
            return;
        };
        let durable = match &e.state {
            SessionState::Offline(off) => off.session.is_durable(),
            _ => false,
        };
        if !durable {
            return;
        }
        let (id, epoch) = (e.client_id.clone(), e.epoch);
        let mut subs = Vec::new();
        record::put_offline(&mut subs, expires_at, will_due);
        self.append(&id, epoch, &subs);
    }

    /// Inbound QoS 2 ids of client `idx`'s durable session whose PUBREC is about to leave.
    pub(super) fn persist_in2(&mut self, idx: usize, ids: &[u16]) {
        let Some(e) = self.clients[idx].session.and_then(|k| self.session(k)) else {
            return;
        };
        let (id, epoch) = (e.client_id.clone(), e.epoch);
        let mut subs = Vec::with_capacity(3 * ids.len());
        for &pid in ids {
            record::put_id(&mut subs, record::IN2, pid);
        }
        self.append(&id, epoch, &subs);
    }

    /// This worker's copy of a session ends (expired, ended with its connection, taken over
    /// by a clean start, or stored by its new owner).
    pub(super) fn persist_drop(&mut self, client_id: &ByteString, epoch: u64, now: Instant) {
        let Some(p) = self.persist.as_mut().filter(|p| p.logs()) else {
            return;
        };
        p.recent_drops.push_back((now, client_id.clone(), epoch));
        while p
            .recent_drops
            .front()
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > KEEP_DROPS)
        {
            p.recent_drops.pop_front();
        }
        self.append(client_id, epoch, &[record::DROP]);
    }

    /// A session handed to another owner: keep its image until the owner stored it.
    pub(super) fn handed_off(&mut self, client_id: &ByteString, epoch: u64, s: &Session) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        if !s.is_durable() {
            return;
        }
        let mut subs = Vec::new();
        record::put_image(&mut subs, s, None);
        p.unconfirmed.insert(epoch, (client_id.clone(), subs));
    }

    /// The new owner stored the session we handed off (or let it end): our copy goes.
    pub(super) fn on_stored(&mut self, epoch: u64, now: Instant) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        if let Some((id, _)) = p.unconfirmed.remove(&epoch) {
            self.persist_drop(&id, epoch, now);
        }
    }

    /// A change of the retained store (`msg` None: deleted), with its broker-wide version.
    pub(super) fn persist_retain(&mut self, version: u64, topic: &str, msg: Option<&Message>) {
        let Some(p) = self.persist.as_mut().filter(|p| p.logs()) else {
            return;
        };
        record::retain_frame(&mut p.log, version, topic, msg);
        self.opened();
    }

    /// Client `idx`'s QoS 2 PUBLISH being routed starts a fan-out if its session is durable
    /// and logged: its client id and the packet id of the PUBREC waiting in the work queue.
    pub(super) fn fanout_origin(&self, idx: usize) -> Option<(ByteString, u16)> {
        self.persist.as_ref().filter(|p| p.logs())?;
        let c = &self.clients[idx];
        if !c.conn.session().is_some_and(|s| s.is_durable()) {
            return None;
        }
        let packet_id = self.work.iter().find_map(|(i, a)| match a {
            Action::Send(Packet::PubRec(r)) if *i == idx => Some(r.packet_id),
            _ => None,
        })?;
        let e = c.session.and_then(|k| self.session(k))?;
        Some(((*e.client_id).clone(), packet_id))
    }

    /// Log `msg` as a fan-out to `workers` and to the shared-subscription members `picks`
    /// (member, its subscription, `$share/G/F`) on other workers (after this worker's own
    /// copies, before the packet id, in one batch) and post it to them once that batch is on
    /// disk. Client `idx`'s PUBREC waits for every part to answer that its copies are on
    /// disk.
    pub(super) fn start_fanout(
        &mut self,
        idx: usize,
        msg: &Message,
        (client_id, packet_id): (ByteString, u16),
        workers: Vec<u16>,
        picks: Vec<((u16, SessionKey), Subscription, ByteString)>,
    ) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let seq = p.next_fanout;
        p.next_fanout += 1;
        let rec = record::Fanout {
            seq,
            client_id,
            packet_id,
            workers,
            groups: picks.iter().map(|(m, _, g)| (m.0, g.clone())).collect(),
            msg: msg.clone(),
        };
        record::fanout_frame(&mut p.log, &rec);
        let watermark = p.fanouts.keys().next().copied().unwrap_or(seq).min(seq);
        let workers = rec.workers.clone();
        p.fanouts.insert(
            seq,
            Fanning {
                rec,
                waiting: workers.len() + picks.len(),
                done_batch: None,
            },
        );
        self.opened();
        for w in workers {
            let token = self.hold_for(idx, 1);
            self.post_after_commit(
                w,
                Mail::PublishAcked {
                    msg: msg.clone(),
                    ack: (self.id, token),
                    fanout: Some((seq, watermark)),
                },
            );
        }
        for (i, ((w, session), sub, _)) in picks.into_iter().enumerate() {
            let token = self.hold_for(idx, 1);
            let delivery = crate::session::Delivery {
                qos: sub.options.qos,
                retain_as_published: sub.options.retain_as_published,
                subscription_ids: sub.subscription_id.into_iter().collect(),
            };
            self.post_after_commit(
                w,
                Mail::Deliver {
                    session,
                    msg: msg.clone(),
                    delivery,
                    ack: Some((self.id, token)),
                    fanout: Some((seq, watermark, i as u32 + 1)),
                },
            );
        }
        if let Some(h) = self.clients[idx]
            .extra
            .as_mut()
            .and_then(|e| e.hold.as_mut())
        {
            h.fanout_ids.push(packet_id);
        }
    }

    /// One worker answered fan-out `seq`: after the last, `FANOUT_DONE` is logged. Nothing
    /// waits for that record (the PUBREC's packet id is on disk already).
    pub(super) fn fanout_answered(&mut self, seq: u64) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        let Some(f) = p.fanouts.get_mut(&seq) else {
            return;
        };
        f.waiting = f.waiting.saturating_sub(1);
        if f.waiting == 0 && f.done_batch.is_none() {
            record::marker_frame(&mut p.log, record::FANOUT_DONE, seq);
            f.done_batch = Some(p.batch);
        }
    }

    /// Part `part` of worker `origin`'s fan-out `seq` was done here (`matched`: it made
    /// copies in this input): `ROUTED` after them, in their batch. The origin's `watermark`
    /// says which earlier ones need no record in snapshots any more.
    pub(super) fn note_routed(
        &mut self,
        origin: u16,
        (seq, part): (u64, u32),
        watermark: u64,
        matched: bool,
    ) {
        let Some(p) = self.persist.as_mut().filter(|p| p.logs()) else {
            return;
        };
        let e = p.routed.entry(origin).or_default();
        if watermark > e.0 {
            e.0 = watermark;
            e.1 = e.1.split_off(&(watermark, 0));
        }
        if matched {
            e.1.insert((seq, part));
            record::routed_frame(&mut p.log, origin, seq, part);
            self.opened();
        }
    }

    /// Messages recovery found fanned out to this worker but not routed here before the
    /// stop (`Recovered::fanouts`, `fanout_picks`): routed to its sessions, and each shared
    /// one to a member of its group (one of this worker's if it has one), before the first
    /// client.
    pub fn route_recovered(
        &mut self,
        msgs: Vec<Message>,
        picks: Vec<(ByteString, Message)>,
        now: Instant,
    ) {
        for m in msgs {
            self.route_local(&m, now);
        }
        for (group, m) in picks {
            let id = self.id;
            let Some(g) = crate::protocol::topic::parse_shared(&group)
                .and_then(|(name, f)| self.shared_view.group(name, f))
            else {
                continue;
            };
            let mut pick = self
                .shared_view
                .pick_online_where(g, |m| m.0 == id)
                .map(|(m, sub)| (m, *sub));
            if pick.is_none() {
                pick = self
                    .shared_view
                    .pick_online_where(g, |m| Self::node_member(m).is_none())
                    .map(|(m, sub)| (m, *sub));
            }
            if let Some((member, sub)) = pick {
                self.deliver_to_member(member, &sub, &m, None, now);
            }
        }
        self.run_pending(now);
    }

    /// With a log, a QoS 1/2 PUBLISH's ack waits for the commit of every worker it reaches.
    pub(super) fn acks_wait_for_commit(&self) -> bool {
        self.persist
            .as_ref()
            .is_some_and(|p| p.mode != Durability::None)
    }

    /// The records since the last call and their batch, for the storage thread (the shell
    /// calls it after every input; `buf` is given back empty for reuse).
    pub fn take_log(&mut self, buf: &mut Vec<u8>) -> Option<u64> {
        let p = self.persist.as_mut()?;
        if p.log.is_empty() {
            return None;
        }
        buf.clear();
        std::mem::swap(buf, &mut p.log);
        p.since_snapshot += buf.len() as u64;
        let b = p.batch;
        p.batch += 1;
        p.barrier_open = false;
        Some(b)
    }

    pub(super) fn on_committed(&mut self, batch: u64) {
        if let Some(p) = self.persist.as_mut() {
            p.committed = p.committed.max(batch);
            // Fan-outs done on disk, oldest first: the watermark is the oldest left.
            while let Some(e) = p.fanouts.first_entry() {
                if e.get().done_batch.is_none_or(|b| b > p.committed) {
                    break;
                }
                e.remove();
            }
        }
    }

    /// The highest batch on disk, as last reported.
    pub(super) fn committed(&self) -> u64 {
        self.persist.as_ref().map_or(u64::MAX, |p| p.committed)
    }

    /// A snapshot is due (interval, or the log grew past its bound).
    pub fn snapshot_due(&self, now: Instant) -> bool {
        // Not while an acknowledgement waits for other workers: the images would hold
        // inbound QoS 2 ids whose copies may not be on disk yet.
        let waiting = self.holds.values().any(|&c| {
            self.client_index(c)
                .and_then(|i| self.clients[i].extra.as_ref())
                .and_then(|e| e.hold.as_ref())
                .is_some_and(|h| h.durable)
        });
        !waiting
            && self.persist.as_ref().is_some_and(|p| {
                now.saturating_duration_since(p.last_snapshot) >= p.snapshot_interval
                    || p.since_snapshot >= SNAPSHOT_LOG_BYTES
            })
    }

    /// This worker's state as a snapshot: every durable session it holds (online ones as
    /// they are; offline ones with their deadlines), the images it handed off that were not
    /// confirmed yet, recent drops, the retained store, and the END frame. The caller must
    /// have taken the log first (the snapshot covers everything logged before it).
    pub fn snapshot(&mut self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        let mut subs = Vec::new();
        for (_, e) in self.sessions.iter() {
            let s: &Session = match &e.state {
                SessionState::Offline(off) => &off.session,
                SessionState::Online { conn } => match self
                    .client_index(*conn)
                    .and_then(|idx| self.clients[idx].conn.session())
                {
                    Some(s) => s,
                    None => continue,
                },
                _ => continue,
            };
            if !s.is_durable() {
                continue;
            }
            subs.clear();
            record::put_image(&mut subs, s, e.username());
            if let SessionState::Offline(off) = &e.state {
                let will_due = off.delayed_will.as_ref().map(|w| w.1);
                record::put_offline(&mut subs, off.expires_at, will_due);
            }
            record::session_frame(&mut out, &e.client_id, e.epoch, &subs);
        }
        if let Some(p) = self.persist.as_mut() {
            for (epoch, (id, img)) in &p.unconfirmed {
                record::session_frame(&mut out, id, *epoch, img);
            }
            for (_, id, epoch) in &p.recent_drops {
                record::session_frame(&mut out, id, *epoch, &[record::DROP]);
            }
            // Fan-outs not answered by every worker yet, and the ones routed here that
            // their origin may not have logged done (`recover.rs` settles both).
            for f in p.fanouts.values().filter(|f| f.done_batch.is_none()) {
                record::fanout_frame(&mut out, &f.rec);
            }
            for (&origin, (_, parts)) in &p.routed {
                for &(seq, part) in parts {
                    record::routed_frame(&mut out, origin, seq, part);
                }
            }
            p.last_snapshot = now;
            p.since_snapshot = 0;
        }
        retained_image(&self.shared, &mut out);
        record::marker_frame(&mut out, record::END, 0);
        out
    }

    /// Install the sessions recovered for this worker (before its first input).
    pub fn restore(&mut self, restored: Vec<Restored>) {
        self.restored_filters.get_or_insert_with(Default::default);
        let mut ids = Vec::new();
        for r in restored {
            if self.clustered() {
                ids.push((r.client_id.clone(), r.epoch));
            }
            let client_id = crate::session::ClientId::new(r.client_id);
            let key = self.new_session_entry(
                client_id.clone(),
                r.epoch,
                SessionState::Pending { conn: None },
                false,
            );
            let owner = crate::ownership::Owner {
                worker: self.id,
                session: key,
                epoch: r.epoch,
            };
            self.shared.owners.claim(&client_id, owner);
            let mut s = r.session;
            s.share_client_id(&client_id);
            s.set_journal(Some(Default::default()));
            if let Some(e) = self.session_mut(key) {
                e.set_username(r.username);
            }
            self.index_session(key, &s);
            self.keep_offline(key, s, r.expires_at, r.delayed_will, false);
        }
        if self.clustered() {
            self.restored_in_cluster(ids);
        }
    }
}

/// Append the whole retained store as of its current version to a snapshot.
fn retained_image(shared: &super::Shared, out: &mut Vec<u8>) {
    let store = shared.retained.lock();
    let version = shared
        .retain_version
        .load(std::sync::atomic::Ordering::Relaxed);
    record::marker_frame(out, record::RETAINED_IMAGE, version);
    store.for_each(|msg| record::retain_frame(out, version, &msg.topic, Some(msg)));
}
