//! An application message as the broker routes it (shared by sessions, the journal and the
//! router).
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use bytestring::ByteString;

use crate::protocol::{PublishProperties, QoS, Will};

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
