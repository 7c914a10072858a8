//! MQTT 3.1.1 and 5.0 control packets as plain data.
//!
//! One set of types serves both protocol versions: fields that only exist in MQTT 5
//! (properties, reason codes on acks) are simply left at their defaults for 3.1.1.
//! Strings are [`ByteString`] (UTF-8 checked, backed by `Bytes`) and binary data is
//! [`Bytes`], so a decoded PUBLISH can share its topic and payload with every
//! subscriber without copying.

use bytes::Bytes;
use bytestring::ByteString;

use super::reason::ReasonCode;

/// Protocol level byte of CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`), protocol level 3. Encoded and handled as 3.1.1,
    /// except: client id 1-23 bytes (`v31_strict_client_id`), no Session Present flag in
    /// CONNACK, no SUBACK failure code.
    V31,
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl ProtocolVersion {
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Control packet type, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

pub type UserProperties = Vec<(ByteString, ByteString)>;

/// One decoded control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubResp),
    PubRec(PubResp),
    PubRel(PubResp),
    PubComp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CONNECT / CONNACK
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) or Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 disables keep-alive.
    pub keep_alive: u16,
    /// May be empty (the broker then assigns one, or refuses, per the rules).
    pub client_id: ByteString,
    pub will: Option<Will>,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub properties: ConnectProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectProperties {
    /// 0x11. Absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// 0x21. Absent means 65535. 0 is a protocol error.
    pub receive_maximum: Option<u16>,
    /// 0x27. Absent means no limit. 0 is a protocol error.
    pub maximum_packet_size: Option<u32>,
    /// 0x22. Absent means 0.
    pub topic_alias_maximum: Option<u16>,
    /// 0x19. 0 or 1.
    pub request_response_information: Option<u8>,
    /// 0x17. 0 or 1.
    pub request_problem_information: Option<u8>,
    /// 0x15
    pub authentication_method: Option<ByteString>,
    /// 0x16
    pub authentication_data: Option<Bytes>,
    /// 0x26
    pub user_properties: UserProperties,
}

/// The Will of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: WillProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WillProperties {
    /// 0x18. Absent means 0.
    pub will_delay_interval: Option<u32>,
    /// 0x01
    pub payload_format_indicator: Option<u8>,
    /// 0x02
    pub message_expiry_interval: Option<u32>,
    /// 0x03
    pub content_type: Option<ByteString>,
    /// 0x08
    pub response_topic: Option<ByteString>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    /// 0x26
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    /// MQTT 5 reason code. For 3.1.1 the encoder maps it to a return code
    /// (see [`ReasonCode::to_v311_connack`]).
    pub code: ReasonCode,
    pub properties: ConnAckProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckProperties {
    /// 0x11
    pub session_expiry_interval: Option<u32>,
    /// 0x21
    pub receive_maximum: Option<u16>,
    /// 0x24 (0 or 1; absent means 2)
    pub maximum_qos: Option<u8>,
    /// 0x25
    pub retain_available: Option<u8>,
    /// 0x27
    pub maximum_packet_size: Option<u32>,
    /// 0x12
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x22
    pub topic_alias_maximum: Option<u16>,
    /// 0x1F
    pub reason_string: Option<ByteString>,
    /// 0x28
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29
    pub subscription_identifiers_available: Option<u8>,
    /// 0x2A
    pub shared_subscription_available: Option<u8>,
    /// 0x13
    pub server_keep_alive: Option<u16>,
    /// 0x1A
    pub response_information: Option<ByteString>,
    /// 0x1C
    pub server_reference: Option<ByteString>,
    /// 0x15
    pub authentication_method: Option<ByteString>,
    /// 0x16
    pub authentication_data: Option<Bytes>,
    /// 0x26
    pub user_properties: UserProperties,
}

// ---------------------------------------------------------------------------------------------
// PUBLISH and its acknowledgements
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// May be empty in MQTT 5 when a Topic Alias property is present.
    pub topic: ByteString,
    /// 0 for QoS 0 (no packet identifier on the wire); non-zero otherwise.
    pub packet_id: u16,
    pub payload: Bytes,
    pub properties: PublishProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishProperties {
    /// 0x01
    pub payload_format_indicator: Option<u8>,
    /// 0x02
    pub message_expiry_interval: Option<u32>,
    /// 0x23
    pub topic_alias: Option<u16>,
    /// 0x08
    pub response_topic: Option<ByteString>,
    /// 0x09
    pub correlation_data: Option<Bytes>,
    /// 0x26
    pub user_properties: UserProperties,
    /// 0x0B, may repeat in PUBLISH sent by the server.
    pub subscription_identifiers: Vec<u32>,
    /// 0x03
    pub content_type: Option<ByteString>,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp {
    pub packet_id: u16,
    /// 0x00 Success by default; omitted on the wire when Success with no properties.
    pub reason: ReasonCode,
    pub properties: AckProperties,
}

impl PubResp {
    pub fn new(packet_id: u16) -> Self {
        PubResp {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }
}

/// Properties of PUBACK/PUBREC/PUBREL/PUBCOMP/SUBACK/UNSUBACK: Reason String and User Property.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckProperties {
    /// 0x1F
    pub reason_string: Option<ByteString>,
    /// 0x26
    pub user_properties: UserProperties,
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    /// Never empty in a valid packet.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    pub properties: SubscribeProperties,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    pub qos: QoS,
    /// MQTT 5 only.
    pub no_local: bool,
    /// MQTT 5 only.
    pub retain_as_published: bool,
    /// MQTT 5 only: 0 send retained on subscribe, 1 only if the subscription is new, 2 never.
    pub retain_handling: u8,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeProperties {
    /// 0x0B, 1..=268_435_455.
    pub subscription_identifier: Option<u32>,
    /// 0x26
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    /// One per filter. For 3.1.1 only 0x00, 0x01, 0x02 and 0x80 exist; the encoder maps
    /// any failure code to 0x80.
    pub reasons: Vec<ReasonCode>,
    pub properties: AckProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    /// Never empty in a valid packet.
    pub filters: Vec<ByteString>,
    /// Only User Property is allowed.
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    pub packet_id: u16,
    /// One per filter in MQTT 5; empty (and not encoded) in 3.1.1.
    pub reasons: Vec<ReasonCode>,
    pub properties: AckProperties,
}

// ---------------------------------------------------------------------------------------------
// DISCONNECT / AUTH
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// 0x00 Normal disconnection by default. 3.1.1 DISCONNECT has no body: decoded as 0x00.
    pub reason: ReasonCode,
    pub properties: DisconnectProperties,
}

impl Disconnect {
    pub fn new(reason: ReasonCode) -> Self {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DisconnectProperties {
    /// 0x11 (client to server only)
    pub session_expiry_interval: Option<u32>,
    /// 0x1F
    pub reason_string: Option<ByteString>,
    /// 0x1C (server to client only)
    pub server_reference: Option<ByteString>,
    /// 0x26
    pub user_properties: UserProperties,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// 0x00 Success, 0x18 Continue authentication, 0x19 Re-authenticate.
    pub reason: ReasonCode,
    pub properties: AuthProperties,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthProperties {
    /// 0x15
    pub authentication_method: Option<ByteString>,
    /// 0x16
    pub authentication_data: Option<Bytes>,
    /// 0x1F
    pub reason_string: Option<ByteString>,
    /// 0x26
    pub user_properties: UserProperties,
}
