//! Operator policy for the per-connection protocol state machine.
use std::time::Duration;

use crate::protocol::QoS;

/// What an MQTT 3.1.1 connection gets when its Keep Alive is outside the operator policy
/// (above [`ProtocolLimits::max_keep_alive`], or 0 while
/// [`ProtocolLimits::keep_alive_when_zero`] / [`ProtocolLimits::server_keep_alive`] ask for
/// another value). MQTT 3.1.1 has no way to tell the client a different value, hence a choice.
/// The one policy type: the configuration file and flags (`v311_keep_alive_policy = "clamp" |
/// "refuse" | "accept"`) name these variants directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum V311KeepAlivePolicy {
    /// Use the client's value unchanged (the policy applies to MQTT 5 only). Default: a
    /// compliant client is never cut off for following the value it asked for.
    #[default]
    Accept,
    /// Enforce the policy value silently (1.5 x the policy value), although the client does
    /// not know it. A client pinging less often than that is disconnected. The broker's
    /// configured default (as Mosquitto does).
    Clamp,
    /// Refuse the connection: CONNACK return code 0x03 "Server unavailable" (reason code
    /// 0x88 in the [`crate::protocol::ConnAck`], mapped to 0x03 by the 3.1.1 encoder).
    Refuse,
}

/// Operator policy. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolLimits {
    /// A complete CONNECT must arrive (and the broker must answer it) within this time. 10 s.
    pub connect_timeout: Duration,
    /// Cap on the client's Keep Alive (seconds). MQTT 5: a larger request gets Server Keep
    /// Alive = this. 0 means no cap. Default 65535 (no effective cap).
    pub max_keep_alive: u16,
    /// MQTT 5: if `Some`, this value is always used and sent as Server Keep Alive (when it
    /// differs from the client's value). Default `None`.
    pub server_keep_alive: Option<u16>,
    /// If the client asks for 0 (no keep alive) and this is `Some`, that value is used
    /// (MQTT 5: sent as Server Keep Alive). Default `None` (0 is accepted).
    pub keep_alive_when_zero: Option<u16>,
    /// MQTT 3.1.1 behaviour when the client's Keep Alive is out of policy. Default `Accept`.
    pub v311_keep_alive_out_of_policy: V311KeepAlivePolicy,
    /// Our Receive Maximum (advertised in CONNACK when < 65535): the number of unacknowledged
    /// inbound QoS 1/2 PUBLISH; a client exceeding it gets DISCONNECT 0x93. Default 65535.
    pub receive_maximum: u16,
    /// Our Maximum Packet Size (advertised in CONNACK; the decoder enforces it). Default 1 MiB.
    pub max_packet_size: u32,
    /// Our Topic Alias Maximum (inbound aliases; advertised in CONNACK when > 0). Default 16.
    pub topic_alias_maximum: u16,
    /// Highest QoS we accept (PUBLISH above it: DISCONNECT 0x9B) and grant. Default QoS 2.
    pub max_qos: QoS,
    /// Retained messages supported (a retained PUBLISH otherwise: DISCONNECT 0x9A). Default true.
    pub retain_available: bool,
    /// Wildcard subscriptions supported (otherwise SUBACK 0xA2). Default true.
    pub wildcard_available: bool,
    /// Shared subscriptions supported (otherwise SUBACK 0x9E). Default true.
    pub shared_available: bool,
    /// Subscription identifiers supported (otherwise SUBACK 0xA1). Default true.
    pub sub_ids_available: bool,
    /// Cap on the requested MQTT 5 Session Expiry Interval (seconds). Default 0xFFFFFFFF.
    pub max_session_expiry: u32,
    /// How long an MQTT 3.1.1 Clean Session = 0 session outlives its connection (seconds,
    /// 0xFFFFFFFF = never expires). Default 0xFFFFFFFF.
    pub v311_persistent_session_expiry: u32,
    /// MQTT 3.1 client ids longer than 23 bytes (the 3.1 text's limit, section 3.1): refused with
    /// return code 0x02 when true; accepted when false (as Mosquitto and EMQX do). Default false.
    pub v31_strict_client_id: bool,
    /// MQTT 5: a QoS 1/2 PUBLISH the broker found no subscriber for gets PUBACK / PUBREC 0x10
    /// No matching subscribers (sections 3.4.2.1, 3.5.2.1; see
    /// [`crate::session::Connection::no_matching_subscribers`]). Default true.
    pub no_matching_subscribers_reason: bool,
    /// Cap on outbound QoS 1/2 in flight, even if the client's Receive Maximum is larger.
    /// Default 1024.
    pub max_inflight_out: u16,
    /// Bound on the per-session queue (offline, or beyond the inflight window): messages.
    /// Default 1000.
    pub max_queued_messages: usize,
    /// Bound on the per-session queue: topic + payload bytes. Default 16 MiB.
    pub max_queued_bytes: usize,
    /// Queue QoS 0 messages for an offline session. Default false.
    pub queue_qos0_offline: bool,
    /// Outbound topic aliases we use at most (further bounded by the client's Topic Alias
    /// Maximum). 0 disables outbound aliases. Default 0.
    pub max_outbound_topic_aliases: u16,
    /// Packets a client may pipeline after CONNECT before the broker answers it; beyond this
    /// the connection is closed. Default 64.
    pub max_pending_before_connack: usize,
    /// Sessions that outlive their connection are written to the log (`--data-dir`).
    pub durable: bool,
    /// Set while this worker's log cannot be written (disk full, I/O error): QoS 1/2
    /// PUBLISHes are refused (MQTT 5: 0x97 Quota exceeded; 3.1.1: the connection is
    /// closed) instead of acknowledging what cannot be kept.
    pub storage_failed: StorageFlag,
}

/// A flag set by the storage thread (compared by identity).
#[derive(Debug, Clone, Default)]
pub struct StorageFlag(pub Option<std::sync::Arc<std::sync::atomic::AtomicBool>>);

impl PartialEq for StorageFlag {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}
impl Eq for StorageFlag {}

impl ProtocolLimits {
    pub fn storage_failed(&self) -> bool {
        self.storage_failed
            .0
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for ProtocolLimits {
    fn default() -> Self {
        ProtocolLimits {
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: u16::MAX,
            server_keep_alive: None,
            keep_alive_when_zero: None,
            v311_keep_alive_out_of_policy: V311KeepAlivePolicy::Accept,
            receive_maximum: u16::MAX,
            max_packet_size: 1024 * 1024,
            topic_alias_maximum: 16,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_available: true,
            shared_available: true,
            sub_ids_available: true,
            max_session_expiry: u32::MAX,
            v311_persistent_session_expiry: u32::MAX,
            v31_strict_client_id: false,
            no_matching_subscribers_reason: true,
            max_inflight_out: 1024,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            queue_qos0_offline: false,
            max_outbound_topic_aliases: 0,
            max_pending_before_connack: 64,
            durable: false,
            storage_failed: StorageFlag(None),
        }
    }
}
