//! Slow consumers: what happens to a message a client cannot take now, and how every message
//! the broker drops is counted and logged.
//!
//! | the client | QoS 0 | QoS 1/2 |
//! |---|---|---|
//! | connected, its socket holds less than half of `send_queue_limit`, no QoS 0 waiting | sent | sent within its in-flight window, else the session queue |
//! | connected, its socket holds more | its QoS 0 queue | the session queue |
//! | offline (session kept) | dropped, or the session queue with `queue_qos0_offline` | the session queue |
//!
//! - The QoS 0 queue holds at most `max_queued_qos0_messages` messages and
//!   `max_queued_qos0_bytes` bytes (topic and payload) per client, and the queues of one
//!   worker's clients together at most `worker_qos0_queue_limit` bytes, counting topic,
//!   payload and a [`QOS0_ENTRY`]-byte entry per message (a message queued for several
//!   clients counts for each, though they share it): a bound on the worker's memory. A message
//!   that does not fit is dropped, or with `qos0_overflow = "drop-oldest"` the client's
//!   oldest ones are until it fits (when it can: never other clients' messages).
//! - It follows as the socket drains: at `Input::Sent` with a quarter of `send_queue_limit` or
//!   less left, queued messages are sent until the socket holds half of it again. So a burst
//!   reaches a client that reads slower than it arrives, as with Mosquitto (which buffers
//!   without a bound), and the memory stays bounded.
//! - It belongs to the connection, not to the session: never written to the log, not handed
//!   over; what is left when the connection ends (or its session is taken over) goes the way
//!   of QoS 0 for an offline session.
//! - The session queue (`max_queued_messages`, `max_queued_bytes`) drops the new message for
//!   that session when full (`session::Session::enqueue`); the publisher is not told (as
//!   Mosquitto and EMQX): other subscribers may have it.
//!
//! Every drop is counted by [`DropReason`] (one metric each) and warned about, at most once a
//! second per worker, naming the client and how many drops of other clients the line passed
//! over. (Messages not handed to a worker whose mailbox is full, `mailbox_drops`, are counted
//! in `Core::post`: no client is known there.)

use std::time::{Duration, Instant};

use super::core::{Core, Link, Qos0Queue};
use crate::config::Qos0Overflow;
use crate::metrics::add;
use crate::protocol::QoS;
use crate::session::{ClientId, Delivery, Message, Session, SessionStats};

/// Why a message was dropped (one counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropReason {
    /// The client's QoS 0 queue held `max_queued_qos0_messages`.
    Qos0QueueMessages,
    /// The client's QoS 0 queue held `max_queued_qos0_bytes`.
    Qos0QueueBytes,
    /// The worker's QoS 0 queues held `worker_qos0_queue_limit`.
    Qos0WorkerBytes,
    /// QoS 0 for a session without a connection (`queue_qos0_offline = false`).
    Qos0Offline,
    /// The session queue held `max_queued_messages` or `max_queued_bytes`.
    QueueFull,
    /// The Message Expiry Interval passed before it was sent.
    Expired,
    /// Larger than the client's Maximum Packet Size.
    TooLarge,
}

impl DropReason {
    fn what(self) -> &'static str {
        match self {
            DropReason::Qos0QueueMessages => "QoS 0 queue full (max_queued_qos0_messages)",
            DropReason::Qos0QueueBytes => "QoS 0 queue full (max_queued_qos0_bytes)",
            DropReason::Qos0WorkerBytes => "worker's QoS 0 queues full (worker_qos0_queue_limit)",
            DropReason::Qos0Offline => "QoS 0 for a client that is not connected",
            DropReason::QueueFull => "session queue full (max_queued_messages / max_queued_bytes)",
            DropReason::Expired => "message expired",
            DropReason::TooLarge => "larger than the client's Maximum Packet Size",
        }
    }
}

/// What one queued QoS 0 message costs besides its topic and payload (which it shares with
/// every other client it goes to): its entry in the queue.
pub(super) const QOS0_ENTRY: usize = std::mem::size_of::<(Message, Delivery)>();

const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl Core {
    /// Whether a QoS 0 delivery to connected client `idx` must wait in its QoS 0 queue: the
    /// socket holds half of `send_queue_limit` or more, or earlier ones wait already.
    pub(super) fn qos0_must_wait(&self, idx: usize) -> bool {
        let c = &self.clients[idx];
        if c.link != Link::Open || !c.conn.is_connected() {
            return false;
        }
        c.queued as usize >= self.shared.cfg.send_queue_limit / 2
            || c.extra.as_ref().is_some_and(|e| e.qos0.is_some())
    }

    /// Queue a QoS 0 message for connected client `idx` whose socket cannot take it now,
    /// within the limits (see the module header).
    pub(super) fn queue_qos0(
        &mut self,
        idx: usize,
        client_id: Option<&ClientId>,
        msg: &Message,
        delivery: &Delivery,
        now: Instant,
    ) {
        let cfg = &self.shared.cfg;
        let (max_n, max_b, max_w) = (
            cfg.max_queued_qos0_messages,
            cfg.max_queued_qos0_bytes,
            cfg.worker_qos0_queue_limit,
        );
        let oldest_go = cfg.qos0_overflow == Qos0Overflow::DropOldest;
        let size = msg.queued_size();
        loop {
            let (n, b) = self.clients[idx]
                .extra
                .as_ref()
                .and_then(|e| e.qos0.as_ref())
                .map_or((0, 0), |q| (q.items.len(), q.bytes));
            let full = if n >= max_n {
                DropReason::Qos0QueueMessages
            } else if b + size > max_b {
                DropReason::Qos0QueueBytes
            } else if self.qos0_memory() + size + QOS0_ENTRY > max_w {
                DropReason::Qos0WorkerBytes
            } else {
                break;
            };
            // The oldest go only where that can make room for this one.
            let room = match full {
                DropReason::Qos0QueueMessages => max_n > 0,
                DropReason::Qos0QueueBytes => size <= max_b,
                _ => {
                    let others = self.qos0_memory().saturating_sub(b + n * QOS0_ENTRY);
                    others + size + QOS0_ENTRY <= max_w
                }
            };
            if !(oldest_go && n > 0 && room) {
                self.note_drop(full, 1, client_id, now);
                return;
            }
            self.pop_qos0(idx);
            self.note_drop(full, 1, client_id, now);
        }
        let extra = self.clients[idx].extra();
        let q = extra.qos0.get_or_insert_with(Box::default);
        q.items.push_back((msg.clone(), delivery.clone()));
        q.bytes += size;
        self.qos0_messages += 1;
        self.qos0_bytes += size;
        add(&self.metrics.qos0_queued_total, 1);
        self.qos0_gauges();
    }

    /// The oldest message of client `idx`'s QoS 0 queue, out of the queue (and the queue
    /// itself once empty: its memory goes back).
    fn pop_qos0(&mut self, idx: usize) -> Option<(Message, Delivery)> {
        let e = self.clients[idx].extra.as_mut()?;
        let q = e.qos0.as_mut()?;
        let item = q.items.pop_front();
        if let Some((m, _)) = &item {
            let size = m.queued_size();
            q.bytes -= size;
            self.qos0_messages -= 1;
            self.qos0_bytes -= size;
        }
        if q.items.is_empty() {
            e.qos0 = None;
        }
        self.qos0_gauges();
        item
    }

    /// Client `idx`'s socket drained: send its waiting QoS 0 messages until the socket holds
    /// half of `send_queue_limit` again (or none is left).
    pub(super) fn drain_qos0(&mut self, idx: usize, now: Instant) {
        let soft = self.shared.cfg.send_queue_limit / 2;
        loop {
            let c = &self.clients[idx];
            if c.link != Link::Open || c.queued as usize >= soft {
                return;
            }
            let Some((msg, delivery)) = self.pop_qos0(idx) else {
                return;
            };
            self.deliver_now(idx, &msg, &delivery, true, now);
        }
    }

    /// Deliver to connected client `idx`'s state machine, counting what it drops.
    pub(super) fn deliver_now(
        &mut self,
        idx: usize,
        msg: &Message,
        delivery: &Delivery,
        can_write: bool,
        now: Instant,
    ) {
        let stats = |core: &Core| {
            core.clients[idx]
                .conn
                .session()
                .map(|s| s.stats())
                .unwrap_or_default()
        };
        let before = stats(self);
        self.drive(idx, now, |c, out| {
            c.deliver(msg, delivery, now, can_write, out)
        });
        let after = stats(self);
        if after != before {
            let id = self.client_id_of(idx);
            self.count_drops(before, after, id.as_ref(), now);
        }
    }

    /// The client id of client `idx` (its session slot's), if it has one.
    pub(super) fn client_id_of(&self, idx: usize) -> Option<ClientId> {
        let key = self.clients[idx].session?;
        self.session(key).map(|e| e.client_id.clone())
    }

    /// Take client `idx`'s QoS 0 queue out (its connection ends, or its session leaves it).
    pub(super) fn take_qos0(&mut self, idx: usize) -> Option<Box<Qos0Queue>> {
        let q = self.clients[idx].extra.as_mut()?.qos0.take()?;
        self.qos0_messages -= q.items.len();
        self.qos0_bytes -= q.bytes;
        self.qos0_gauges();
        Some(q)
    }

    /// What was left in a QoS 0 queue whose connection ended: QoS 0 for `session` offline
    /// (kept with `queue_qos0_offline`, else dropped), or dropped when the session ends too.
    pub(super) fn end_qos0(
        &mut self,
        q: Option<Box<Qos0Queue>>,
        session: Option<&mut Session>,
        client_id: Option<&ClientId>,
        now: Instant,
    ) {
        let Some(q) = q else {
            return;
        };
        match session {
            Some(s) => {
                let before = s.stats();
                for (m, d) in &q.items {
                    s.deliver_offline(m, d, now, &self.limits);
                }
                let after = s.stats();
                self.count_drops(before, after, client_id, now);
            }
            None => {
                let n = q.items.len() as u64;
                self.note_drop(DropReason::Qos0Offline, n, client_id, now);
            }
        }
    }

    /// Count (and log) what a call into a session dropped, from its counters before and after.
    pub(super) fn count_drops(
        &mut self,
        before: SessionStats,
        after: SessionStats,
        client_id: Option<&ClientId>,
        now: Instant,
    ) {
        let reasons = [
            (
                after.dropped_qos0 - before.dropped_qos0,
                DropReason::Qos0Offline,
            ),
            (
                after.dropped_queue_full - before.dropped_queue_full,
                DropReason::QueueFull,
            ),
            (
                after.dropped_expired - before.dropped_expired,
                DropReason::Expired,
            ),
            (
                after.dropped_too_large - before.dropped_too_large,
                DropReason::TooLarge,
            ),
        ];
        for (n, reason) in reasons {
            if n > 0 {
                self.note_drop(reason, n, client_id, now);
            }
        }
    }

    /// Count `n` messages dropped for `reason`, and warn (at most once a second per worker).
    pub(super) fn note_drop(
        &mut self,
        reason: DropReason,
        n: u64,
        client_id: Option<&ClientId>,
        now: Instant,
    ) {
        let m = &self.metrics;
        let counter = match reason {
            DropReason::Qos0QueueMessages => &m.qos0_drops_queue_messages,
            DropReason::Qos0QueueBytes => &m.qos0_drops_queue_bytes,
            DropReason::Qos0WorkerBytes => &m.qos0_drops_worker_bytes,
            DropReason::Qos0Offline => &m.qos0_drops_offline,
            DropReason::QueueFull => &m.queue_drops,
            DropReason::Expired => &m.expired_drops,
            DropReason::TooLarge => &m.too_large_drops,
        };
        add(counter, n);
        if matches!(
            reason,
            DropReason::Qos0QueueMessages
                | DropReason::Qos0QueueBytes
                | DropReason::Qos0WorkerBytes
        ) {
            add(&m.slow_consumer_drops, n);
        }
        let log = &mut self.drop_log;
        if log
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < DROP_LOG_INTERVAL)
        {
            log.unlogged += n;
            return;
        }
        // `earlier`: drops on this worker since the previous warning that no line named.
        tracing::warn!(
            client_id = client_id.map_or("?", |c| c.as_str()),
            reason = reason.what(),
            dropped = n,
            earlier = log.unlogged,
            "messages dropped"
        );
        log.last = Some(now);
        log.unlogged = 0;
    }

    /// What the worker's QoS 0 queues hold, as `worker_qos0_queue_limit` counts it.
    fn qos0_memory(&self) -> usize {
        self.qos0_bytes + self.qos0_messages * QOS0_ENTRY
    }

    fn qos0_gauges(&self) {
        let m = &self.metrics;
        m.qos0_queued_messages.store(
            self.qos0_messages as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        m.qos0_queued_bytes
            .store(self.qos0_bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The QoS 0 queues' totals match the worker's counters (for `check_invariants`).
    pub(super) fn check_qos0_totals(&self) {
        let (mut n, mut b) = (0, 0);
        for (_, c) in self.clients.iter() {
            if let Some(q) = c.extra.as_ref().and_then(|e| e.qos0.as_ref()) {
                assert!(!q.items.is_empty(), "an empty QoS 0 queue is kept");
                assert!(
                    q.items
                        .iter()
                        .all(|(m, d)| m.qos.min(d.qos) == QoS::AtMostOnce),
                    "a QoS 1/2 delivery in a QoS 0 queue"
                );
                n += q.items.len();
                b += q.bytes;
            }
        }
        assert_eq!(
            (n, b),
            (self.qos0_messages, self.qos0_bytes),
            "QoS 0 queue totals"
        );
    }
}
