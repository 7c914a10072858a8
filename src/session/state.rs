//! Session state: everything that survives the network connection and can move between workers.
use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;
use hashbrown::{HashMap, HashSet};

use super::config::ProtocolLimits;
use crate::protocol::{
    ProtocolVersion, Publish, PublishProperties, QoS, SubscriptionOptions, Will,
};

/// An application message as routed between clients. Cheap to clone (one `Arc`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message(Arc<MessageData>);

/// The fields of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageData {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Never carries a Topic Alias or Subscription Identifiers; `message_expiry_interval`
    /// is the value received (the remaining time is derived from `expires_at` when sent).
    pub properties: PublishProperties,
    /// Absolute expiry from the Message Expiry Interval; `None` = never.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher (for No Local); `None` for broker-originated messages.
    pub publisher: Option<ByteString>,
}

impl Message {
    pub fn new(data: MessageData) -> Self {
        Message(Arc::new(data))
    }

    /// The very same message (one routing of one PUBLISH), not just equal contents.
    pub fn same(&self, other: &Message) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// Bytes counted against the queue bound.
    pub fn queued_size(&self) -> usize {
        self.topic.len() + self.payload.len()
    }

    /// The Will of a CONNECT as a message (Message Expiry counted from `published_at`).
    pub fn from_will(will: &Will, publisher: &ByteString, published_at: Instant) -> Message {
        let p = &will.properties;
        Message::new(MessageData {
            topic: will.topic.clone(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            properties: PublishProperties {
                payload_format_indicator: p.payload_format_indicator,
                message_expiry_interval: p.message_expiry_interval,
                topic_alias: None,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user_properties.clone(),
                subscription_identifiers: Vec::new(),
                content_type: p.content_type.clone(),
            },
            expires_at: p
                .message_expiry_interval
                .map(|s| published_at + std::time::Duration::from_secs(u64::from(s))),
            publisher: Some(publisher.clone()),
        })
    }
}

impl Deref for Message {
    type Target = MessageData;
    fn deref(&self) -> &MessageData {
        &self.0
    }
}

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

/// A map that takes 8 bytes until its first insert (most sessions of an idle fleet never have
/// a QoS 1/2 message in flight). Once allocated it stays, like a `HashMap` keeps its capacity.
#[derive(Debug, Clone)]
pub(crate) struct SparseMap<K, V>(Option<Box<HashMap<K, V>>>);

impl<K, V> Default for SparseMap<K, V> {
    fn default() -> Self {
        SparseMap(None)
    }
}

impl<K: std::hash::Hash + Eq, V> SparseMap<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
    pub(crate) fn contains_key(&self, k: &K) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(k))
    }
    pub(crate) fn get(&self, k: &K) -> Option<&V> {
        self.0.as_ref()?.get(k)
    }
    pub(crate) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.0.as_mut()?.get_mut(k)
    }
    pub(crate) fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.0.get_or_insert_with(Box::default).insert(k, v)
    }
    pub(crate) fn remove(&mut self, k: &K) -> Option<V> {
        self.0.as_mut()?.remove(k)
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

/// The set counterpart of [`SparseMap`].
#[derive(Debug, Clone)]
pub(crate) struct SparseSet<K>(Option<Box<HashSet<K>>>);

impl<K> Default for SparseSet<K> {
    fn default() -> Self {
        SparseSet(None)
    }
}

impl<K: std::hash::Hash + Eq> SparseSet<K> {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
    pub(crate) fn contains(&self, k: &K) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains(k))
    }
    pub(crate) fn insert(&mut self, k: K) -> bool {
        self.0.get_or_insert_with(Box::default).insert(k)
    }
    pub(crate) fn remove(&mut self, k: &K) -> bool {
        self.0.as_mut().is_some_and(|m| m.remove(k))
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &K> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

/// The queue counterpart of [`SparseMap`] (the box is the point: 8 bytes inline instead of a
/// `VecDeque`'s 32 while the session has never queued anything).
#[derive(Debug, Clone)]
#[allow(clippy::box_collection)]
pub(crate) struct SparseDeque<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for SparseDeque<T> {
    fn default() -> Self {
        SparseDeque(None)
    }
}

impl<T> SparseDeque<T> {
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub(crate) fn front(&self) -> Option<&T> {
        self.0.as_ref()?.front()
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|q| q.iter())
    }
    pub(crate) fn push_back(&mut self, v: T) {
        self.0.get_or_insert_with(Box::default).push_back(v)
    }
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        self.0.as_mut()?.pop_front()
    }
    pub(crate) fn retain(&mut self, f: impl FnMut(&T) -> bool) {
        if let Some(q) = self.0.as_mut() {
            q.retain(f);
        }
    }
    /// Empties it and gives the memory back (8 bytes inline again).
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

/// Session state of one client id.
#[derive(Debug, Clone)]
pub struct Session {
    pub(crate) client_id: ByteString,
    pub(crate) version: ProtocolVersion,
    pub(crate) subscriptions: HashMap<ByteString, Subscription>,
    pub(crate) inflight: SparseMap<u16, Inflight>,
    pub(crate) next_seq: u64,
    pub(crate) queue: SparseDeque<Queued>,
    pub(crate) queued_bytes: usize,
    /// Inbound QoS 2 packet ids: PUBREC sent, PUBREL not yet received.
    pub(crate) inbound_qos2: SparseSet<u16>,
    pub(crate) next_packet_id: u16,
    pub(crate) session_expiry: u32,
    pub(crate) will: Option<Box<Will>>,
    pub(crate) stats: SessionStats,
    /// Changes not yet collected by the core for the log (`storage::record` sub-records);
    /// `None` for a session that is not durable.
    pub(crate) journal: Option<Box<Journal>>,
}

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
        Session {
            client_id,
            version,
            subscriptions: HashMap::new(),
            inflight: SparseMap::default(),
            next_seq: 0,
            queue: SparseDeque::default(),
            queued_bytes: 0,
            inbound_qos2: SparseSet::default(),
            next_packet_id: 1,
            session_expiry: 0,
            will: None,
            stats: SessionStats::default(),
            journal: None,
        }
    }

    /// Record a change for the log, if this session is durable (and not waiting for its
    /// image, which will hold the change anyway).
    pub(crate) fn jot(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(j) = self.journal.as_mut() {
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
        self.journal.is_some()
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
        self.stats
    }
    /// Outbound QoS 1/2 messages in flight (PUBLISH or PUBREL sent, not yet acknowledged).
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }
    /// Messages waiting in the queue.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
    /// Inbound QoS 2 publishes awaiting PUBREL.
    pub fn inbound_qos2_len(&self) -> usize {
        self.inbound_qos2.len()
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
            self.stats.dropped_expired += 1;
            return false;
        }
        let qos = msg.qos.min(delivery.qos);
        if qos == QoS::AtMostOnce && !limits.queue_qos0_offline {
            self.stats.dropped_qos0 += 1;
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
        if self.queue.len() >= limits.max_queued_messages
            || self.queued_bytes + size > limits.max_queued_bytes
        {
            self.stats.dropped_queue_full += 1;
            return false;
        }
        self.queued_bytes += size;
        let q = Queued {
            msg: msg.clone(),
            qos,
            retain: delivery.retain_as_published && msg.retain,
            subscription_ids: delivery.subscription_ids.clone(),
        };
        self.jot(|b| crate::storage::record::put_queued(b, &q));
        self.queue.push_back(q);
        true
    }

    pub(crate) fn pop_queued(&mut self) -> Option<Queued> {
        let q = self.queue.pop_front()?;
        self.queued_bytes -= q.msg.queued_size();
        self.jot(|b| b.push(crate::storage::record::POP));
        Some(q)
    }

    /// A packet id not in flight outbound, or `None` if all 65535 are in use.
    pub(crate) fn alloc_packet_id(&mut self) -> Option<u16> {
        if self.inflight.len() >= usize::from(u16::MAX) {
            return None;
        }
        for _ in 0..u16::MAX {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}
