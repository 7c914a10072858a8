//! Session state: everything that survives the network connection and can move between workers.
use std::collections::VecDeque;
use std::time::Instant;

use bytestring::ByteString;
use hashbrown::{HashMap, HashSet};

pub use super::client_id::ClientId;
use super::config::ProtocolLimits;
pub use super::message::{Message, MessageData};
use crate::protocol::{ProtocolVersion, Publish, QoS, SubscriptionOptions, Will};

/// How one message is delivered to one client (computed by the router from the matching
/// subscriptions of that client).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Highest granted QoS among the matching subscriptions; sent at min(message qos, this).
    pub qos: QoS,
    /// Keep the message's RETAIN flag; otherwise RETAIN is sent as 0. Pass `true` for a
    /// retained message replayed because of a new subscription (its `retain` is then 1).
    pub retain_as_published: bool,
    /// Subscription Identifiers of every matching subscription (MQTT 5).
    pub subscription_ids: Vec<u32>,
}

/// One subscription of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    /// Options with the granted QoS.
    pub options: SubscriptionOptions,
    pub subscription_id: Option<u32>,
}

/// Counters of messages dropped for this session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Queue full (count or bytes bound).
    pub dropped_queue_full: u64,
    /// QoS 0 while the client could not take it (offline, or socket not writable).
    pub dropped_qos0: u64,
    /// Bigger than the client's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Message Expiry Interval elapsed before delivery started.
    pub dropped_expired: u64,
}

/// An outbound QoS 1/2 message in flight.
#[derive(Debug, Clone)]
pub(crate) struct Inflight {
    /// Send order, for resending in order.
    pub seq: u64,
    pub state: InflightState,
    /// The message's expiry, to send the remaining Message Expiry Interval on a resend.
    pub expires_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub(crate) enum InflightState {
    /// QoS 1 PUBLISH sent, awaiting PUBACK. The packet has the full topic, no alias.
    Qos1(Publish),
    /// QoS 2 PUBLISH sent, awaiting PUBREC.
    Qos2(Publish),
    /// PUBREL sent, awaiting PUBCOMP.
    Released,
}

/// A message waiting in the session queue.
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub msg: Message,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// A map that takes 8 bytes until its first insert (most sessions of an idle fleet never
/// subscribe), then a vector of exactly its entries while it has at most
/// [`SparseMap::SMALL`] (a device's handful of filters: no hash table, no spare buckets), then
/// a hash map. Once allocated it stays, like a `HashMap` keeps its capacity.
#[derive(Debug, Clone)]
pub(crate) struct SparseMap<K, V>(Option<Box<Sparse<K, V>>>);

#[derive(Debug, Clone)]
enum Sparse<K, V> {
    Small(Vec<(K, V)>),
    Large(HashMap<K, V>),
}

impl<K, V> Default for SparseMap<K, V> {
    fn default() -> Self {
        SparseMap(None)
    }
}

impl<K: std::hash::Hash + Eq, V> SparseMap<K, V> {
    const SMALL: usize = 16;

    pub(crate) fn len(&self) -> usize {
        match self.0.as_deref() {
            None => 0,
            Some(Sparse::Small(v)) => v.len(),
            Some(Sparse::Large(m)) => m.len(),
        }
    }
    pub(crate) fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized,
    {
        match self.0.as_deref()? {
            Sparse::Small(v) => v.iter().find(|(x, _)| k.equivalent(x)).map(|(_, v)| v),
            Sparse::Large(m) => m.get(k),
        }
    }
    /// Room for `n` more entries (a session read back with its subscriptions).
    pub(crate) fn reserve(&mut self, n: usize) {
        let len = self.len();
        match self
            .0
            .get_or_insert_with(|| Box::new(Sparse::Small(Vec::new())))
            .as_mut()
        {
            Sparse::Small(v) if len + n <= Self::SMALL => v.reserve_exact(n),
            Sparse::Small(_) => {}
            Sparse::Large(m) => m.reserve(n),
        }
    }
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        let map = self
            .0
            .get_or_insert_with(|| Box::new(Sparse::Small(Vec::new())));
        match map.as_mut() {
            Sparse::Small(vec) => {
                if let Some(slot) = vec.iter_mut().find(|(x, _)| *x == k) {
                    return Some(std::mem::replace(&mut slot.1, v));
                }
                if vec.len() < Self::SMALL {
                    crate::routing::levels::push_exact(vec, (k, v));
                    return None;
                }
                let mut m: HashMap<K, V> = std::mem::take(vec).into_iter().collect();
                m.insert(k, v);
                **map = Sparse::Large(m);
                None
            }
            Sparse::Large(m) => m.insert(k, v),
        }
    }
    pub(crate) fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized,
    {
        match self.0.as_deref_mut()? {
            Sparse::Small(v) => {
                let i = v.iter().position(|(x, _)| k.equivalent(x))?;
                Some(v.swap_remove(i).1)
            }
            Sparse::Large(m) => m.remove(k),
        }
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        let (small, large) = match self.0.as_deref() {
            None => (None, None),
            Some(Sparse::Small(v)) => (Some(v.iter().map(|(k, v)| (k, v))), None),
            Some(Sparse::Large(m)) => (None, Some(m.iter())),
        };
        small
            .into_iter()
            .flatten()
            .chain(large.into_iter().flatten())
    }
}

/// Session state of one client id. An idle session is 40 bytes: its id (shared with the
/// broker's tables), two boxes that exist once it subscribes or has a will, one for
/// everything messages need ([`SessionExtra`]), and three small numbers.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) client_id: ClientId,
    pub(crate) subscriptions: SparseMap<ByteString, Subscription>,
    pub(crate) will: Option<Box<Will>>,
    /// Created by the first message in flight, queued, received at QoS 2 or dropped, and for
    /// a durable session; then kept (see [`Session::extra_mut`]).
    pub(crate) extra: Option<Box<SessionExtra>>,
    pub(crate) session_expiry: u32,
    pub(crate) next_packet_id: u16,
    pub(crate) version: ProtocolVersion,
}

/// What only a session that carries messages (or is durable) has.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionExtra {
    pub inflight: HashMap<u16, Inflight>,
    pub next_seq: u64,
    pub queue: VecDeque<Queued>,
    pub queued_bytes: usize,
    /// Inbound QoS 2 packet ids: PUBREC sent, PUBREL not yet received.
    pub inbound_qos2: HashSet<u16>,
    pub stats: SessionStats,
    /// Changes not yet collected by the core for the log (`storage::record` sub-records);
    /// `None` for a session that is not durable.
    pub journal: Option<Journal>,
}

/// What `Session::extra` reads for a session that has none.
static NO_EXTRA: std::sync::LazyLock<SessionExtra> =
    std::sync::LazyLock::new(SessionExtra::default);

/// The changes of a durable session since its worker's core last collected them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Journal {
    pub buf: Vec<u8>,
    /// The whole session is to be written (it was just accepted or moved here): changes are
    /// not recorded one by one until then.
    pub image: bool,
}

impl Session {
    pub fn new(client_id: ByteString, version: ProtocolVersion) -> Self {
        Session::with_id(ClientId::new(client_id), version)
    }

    /// A session named by an id the broker's tables share.
    pub fn with_id(client_id: ClientId, version: ProtocolVersion) -> Self {
        Session {
            client_id,
            version,
            subscriptions: SparseMap::default(),
            extra: None,
            next_packet_id: 1,
            session_expiry: 0,
            will: None,
        }
    }

    /// The parts only a session with messages has (empty ones when it has none).
    pub(crate) fn extra(&self) -> &SessionExtra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA)
    }

    /// The parts only a session with messages has, created on first use. Once created they
    /// stay (as a `HashMap` keeps its capacity): a session that carried messages once
    /// likely carries more.
    pub(crate) fn extra_mut(&mut self) -> &mut SessionExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The parts only a session with messages has, if it has them (no allocation).
    pub(crate) fn extra_if_any(&mut self) -> Option<&mut SessionExtra> {
        self.extra.as_deref_mut()
    }

    /// Make the session durable (`Some`: its changes are noted for the log from here on) or
    /// not.
    pub(crate) fn set_journal(&mut self, journal: Option<Journal>) {
        match journal {
            Some(j) => self.extra_mut().journal = Some(j),
            None => {
                if let Some(x) = self.extra_if_any() {
                    x.journal = None;
                }
            }
        }
    }

    /// The changes noted for the log (a durable session only).
    pub(crate) fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.extra_if_any()?.journal.as_mut()
    }

    /// The client id as the broker's tables share it.
    pub fn shared_client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Name the session with `id` when it is the same string (the broker's tables then share
    /// one allocation with it).
    pub(crate) fn share_client_id(&mut self, id: &ClientId) {
        if self.client_id == *id {
            self.client_id = id.clone();
        }
    }

    /// Record a change for the log, if this session is durable (and not waiting for its
    /// image, which will hold the change anyway).
    pub(crate) fn jot(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(j) = self.journal_mut() {
            if !j.image {
                f(&mut j.buf);
            }
        }
    }

    /// Add a subscription directly (tools that build a data dir; the broker subscribes
    /// through the connection's state machine).
    #[doc(hidden)]
    pub fn subscribe_for_restore(&mut self, filter: ByteString, sub: Subscription) {
        self.subscriptions.insert(filter, sub);
    }

    /// Set the Session Expiry Interval directly (as `subscribe_for_restore`).
    #[doc(hidden)]
    pub fn set_expiry_for_restore(&mut self, secs: u32) {
        self.session_expiry = secs;
    }

    /// Whether changes of this session go to the log.
    pub fn is_durable(&self) -> bool {
        self.extra().journal.is_some()
    }

    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }
    /// Seconds the session outlives its connection (0: ends with it; 0xFFFFFFFF: never).
    pub fn session_expiry(&self) -> u32 {
        self.session_expiry
    }
    pub fn subscriptions(&self) -> impl Iterator<Item = (&ByteString, &Subscription)> {
        self.subscriptions.iter()
    }
    pub fn subscription(&self, filter: &str) -> Option<&Subscription> {
        self.subscriptions.get(filter)
    }
    pub fn will(&self) -> Option<&Will> {
        self.will.as_deref()
    }
    pub fn stats(&self) -> SessionStats {
        self.extra().stats
    }
    /// Counters of messages dropped for this session, to count one more.
    pub(crate) fn stats_mut(&mut self) -> &mut SessionStats {
        &mut self.extra_mut().stats
    }
    /// Outbound QoS 1/2 messages in flight (PUBLISH or PUBREL sent, not yet acknowledged).
    pub fn inflight_len(&self) -> usize {
        self.extra().inflight.len()
    }
    /// Messages waiting in the queue.
    pub fn queued_len(&self) -> usize {
        self.extra().queue.len()
    }
    pub fn queued_bytes(&self) -> usize {
        self.extra().queued_bytes
    }
    /// Inbound QoS 2 publishes awaiting PUBREL.
    pub fn inbound_qos2_len(&self) -> usize {
        self.extra().inbound_qos2.len()
    }

    /// Deliver to this session while no connection holds it: QoS 1/2 (and QoS 0 if
    /// `limits.queue_qos0_offline`) are queued within the bounds; others are dropped and
    /// counted. Expired messages are dropped. Returns whether the message was queued.
    pub fn deliver_offline(
        &mut self,
        msg: &Message,
        delivery: &Delivery,
        now: Instant,
        limits: &ProtocolLimits,
    ) -> bool {
        if msg.is_expired(now) {
            self.stats_mut().dropped_expired += 1;
            return false;
        }
        let qos = msg.qos.min(delivery.qos);
        if qos == QoS::AtMostOnce && !limits.queue_qos0_offline {
            self.stats_mut().dropped_qos0 += 1;
            return false;
        }
        self.enqueue(msg, delivery, qos, limits)
    }

    /// Append to the queue within the bounds (tail drop, counted).
    pub(crate) fn enqueue(
        &mut self,
        msg: &Message,
        delivery: &Delivery,
        qos: QoS,
        limits: &ProtocolLimits,
    ) -> bool {
        let size = msg.queued_size();
        let x = self.extra_mut();
        if x.queue.len() >= limits.max_queued_messages
            || x.queued_bytes + size > limits.max_queued_bytes
        {
            x.stats.dropped_queue_full += 1;
            return false;
        }
        x.queued_bytes += size;
        let q = Queued {
            msg: msg.clone(),
            qos,
            retain: delivery.retain_as_published && msg.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        };
        self.jot(|b| super::journal::put_queued(b, q.qos, q.retain, &q.subscription_ids, &q.msg));
        self.extra_mut().queue.push_back(q);
        true
    }

    pub(crate) fn pop_queued(&mut self) -> Option<Queued> {
        let x = self.extra_if_any()?;
        let q = x.queue.pop_front()?;
        x.queued_bytes -= q.msg.queued_size();
        self.jot(|b| b.push(super::journal::POP));
        Some(q)
    }

    /// A packet id not in flight outbound, or `None` if all 65535 are in use.
    pub(crate) fn alloc_packet_id(&mut self) -> Option<u16> {
        if self.inflight_len() >= usize::from(u16::MAX) {
            return None;
        }
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.extra().inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        let x = self.extra_mut();
        x.next_seq += 1;
        x.next_seq
    }
}
