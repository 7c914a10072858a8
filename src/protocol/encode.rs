//! Packet encoder:
//! `encode_packet(packet, version, out)` appends the wire form to `out` and returns the number
//! of bytes written. 3.1.1 encoding drops MQTT 5 only fields (properties, reason codes on acks,
//! maps CONNACK codes with `ReasonCode::to_v311_connack`). `encoded_len` gives the exact size
//! without encoding (used to honour a client's Maximum Packet Size).
//!
//! Details:
//! - The `version` argument decides the format of every packet, CONNECT included (its
//!   `protocol` field is not consulted).
//! - MQTT 5 PUBACK/PUBREC/PUBREL/PUBCOMP omit the reason code and properties when the reason is
//!   Success and there are no properties; DISCONNECT and AUTH likewise (remaining length 0).
//! - 3.1.1 SUBACK maps every failure code (>= 0x80) to 0x80; 3.1.1 UNSUBACK has no payload.
//! - MQTT 3.1 (`ProtocolVersion::V31`) is encoded as 3.1.1, except CONNECT (protocol name
//!   `MQIsdp`, level 3) and CONNACK (no Session Present flag: its byte is always 0).
//! - AUTH does not exist in 3.1.1: encoding it for 3.1.1 writes nothing and returns 0.
//! - Preconditions (guaranteed for anything the decoder produced): strings and binary fields are
//!   at most 65535 bytes, the packet fits a 4-byte remaining length, a Subscription Identifier
//!   is at most 268435455. Violations produce a wrong packet, never a panic.
use bytes::{BufMut, BytesMut};

use super::decode::*;
use super::reason::ReasonCode;
use super::types::*;

/// Appends the wire form of `packet` to `out`; returns the number of bytes written.
pub fn encode_packet(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> usize {
    let v5 = version.is_v5();
    let (first, body) = match header(packet, version) {
        Some(h) => h,
        None => return 0,
    };
    let total = 1 + vbi_len(body) + body;
    out.reserve(total);
    let start = out.len();
    out.put_u8(first);
    put_vbi(out, body as u32);
    match packet {
        Packet::Connect(c) => put_connect(out, c, version),
        Packet::ConnAck(c) => {
            // MQTT 3.1 has no Session Present flag: the byte is reserved (0).
            out.put_u8(c.session_present as u8 & (version != ProtocolVersion::V31) as u8);
            if v5 {
                out.put_u8(c.code.0);
                put_connack_props(out, &c.properties);
            } else {
                out.put_u8(c.code.to_v311_connack());
            }
        }
        Packet::Publish(p) => {
            put_str(out, &p.topic);
            if p.qos != QoS::AtMostOnce {
                out.put_u16(p.packet_id);
            }
            if v5 {
                put_publish_props(out, &p.properties);
            }
            out.put_slice(&p.payload);
        }
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            out.put_u16(r.packet_id);
            if v5 && body > 2 {
                out.put_u8(r.reason.0);
                if body > 3 {
                    put_ack_props(out, &r.properties);
                }
            }
        }
        Packet::Subscribe(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                let len = subscribe_props_len(&s.properties);
                put_vbi(out, len as u32);
                if let Some(id) = s.properties.subscription_identifier {
                    out.put_u8(SUBSCRIPTION_IDENTIFIER);
                    put_vbi(out, id);
                }
                put_user(out, &s.properties.user_properties);
            }
            for (filter, o) in &s.filters {
                put_str(out, filter);
                let mut b = o.qos as u8;
                if v5 {
                    b |= (o.no_local as u8) << 2
                        | (o.retain_as_published as u8) << 3
                        | (o.retain_handling & 0x03) << 4;
                }
                out.put_u8(b);
            }
        }
        Packet::SubAck(s) => {
            out.put_u16(s.packet_id);
            if v5 {
                put_ack_props(out, &s.properties);
                for r in &s.reasons {
                    out.put_u8(r.0);
                }
            } else {
                for r in &s.reasons {
                    out.put_u8(if r.is_error() { 0x80 } else { r.0 });
                }
            }
        }
        Packet::Unsubscribe(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                put_vbi(out, user_len(&u.user_properties) as u32);
                put_user(out, &u.user_properties);
            }
            for f in &u.filters {
                put_str(out, f);
            }
        }
        Packet::UnsubAck(u) => {
            out.put_u16(u.packet_id);
            if v5 {
                put_ack_props(out, &u.properties);
                for r in &u.reasons {
                    out.put_u8(r.0);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => {
            if v5 && body > 0 {
                out.put_u8(d.reason.0);
                if body > 1 {
                    put_disconnect_props(out, &d.properties);
                }
            }
        }
        Packet::Auth(a) => {
            if body > 0 {
                out.put_u8(a.reason.0);
                put_auth_props(out, &a.properties);
            }
        }
    }
    out.len() - start
}

/// Exact size of the wire form of `packet` (0 for AUTH in 3.1.1, which does not exist).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match header(packet, version) {
        Some((_, body)) => 1 + vbi_len(body) + body,
        None => 0,
    }
}

/// First byte and remaining length; `None` when the packet has no form in this version.
fn header(packet: &Packet, version: ProtocolVersion) -> Option<(u8, usize)> {
    let v5 = version.is_v5();
    Some(match packet {
        Packet::Connect(c) => (
            0x10,
            connect_body_len(c, v5)
                + if version == ProtocolVersion::V31 {
                    2
                } else {
                    0
                },
        ),
        Packet::ConnAck(c) => (
            0x20,
            2 + if v5 {
                with_len(connack_props_len(&c.properties))
            } else {
                0
            },
        ),
        Packet::Publish(p) => {
            let first = 0x30 | (p.dup as u8) << 3 | (p.qos as u8) << 1 | p.retain as u8;
            let mut n = 2 + p.topic.len() + p.payload.len();
            if p.qos != QoS::AtMostOnce {
                n += 2;
            }
            if v5 {
                n += with_len(publish_props_len(&p.properties));
            }
            (first, n)
        }
        Packet::PubAck(r) => (0x40, pub_resp_len(r, v5)),
        Packet::PubRec(r) => (0x50, pub_resp_len(r, v5)),
        Packet::PubRel(r) => (0x62, pub_resp_len(r, v5)),
        Packet::PubComp(r) => (0x70, pub_resp_len(r, v5)),
        Packet::Subscribe(s) => {
            let mut n = 2 + s.filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>();
            if v5 {
                n += with_len(subscribe_props_len(&s.properties));
            }
            (0x82, n)
        }
        Packet::SubAck(s) => {
            let mut n = 2 + s.reasons.len();
            if v5 {
                n += with_len(ack_props_len(&s.properties));
            }
            (0x90, n)
        }
        Packet::Unsubscribe(u) => {
            let mut n = 2 + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
            if v5 {
                n += with_len(user_len(&u.user_properties));
            }
            (0xA2, n)
        }
        Packet::UnsubAck(u) => {
            let mut n = 2;
            if v5 {
                n += with_len(ack_props_len(&u.properties)) + u.reasons.len();
            }
            (0xB0, n)
        }
        Packet::PingReq => (0xC0, 0),
        Packet::PingResp => (0xD0, 0),
        Packet::Disconnect(d) => {
            let n = if !v5 {
                0
            } else {
                // A reason code other than 0x00 always goes out with its property length
                // (0), although the specification lets a 1-byte body omit it: some clients
                // (rumqttc 0.24) cannot parse `E0 01 rc` and miss the reason (e.g. 0x8E).
                let props = disconnect_props_len(&d.properties);
                if props > 0 || d.reason != ReasonCode::NORMAL_DISCONNECTION {
                    1 + with_len(props)
                } else {
                    0
                }
            };
            (0xE0, n)
        }
        Packet::Auth(a) => {
            if !v5 {
                return None;
            }
            let props = auth_props_len(&a.properties);
            let n = if props == 0 && a.reason == ReasonCode::SUCCESS {
                0
            } else {
                1 + with_len(props)
            };
            (0xF0, n)
        }
    })
}

fn pub_resp_len(r: &PubResp, v5: bool) -> usize {
    if !v5 {
        return 2;
    }
    let props = ack_props_len(&r.properties);
    if props > 0 {
        3 + with_len(props)
    } else if r.reason != ReasonCode::SUCCESS {
        3
    } else {
        2
    }
}

// ---------------------------------------------------------------------------------------------
// Primitive sizes and writers
// ---------------------------------------------------------------------------------------------

#[inline]
fn vbi_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A property block: its length prefix plus its content.
#[inline]
fn with_len(props: usize) -> usize {
    vbi_len(props) + props
}

#[inline]
fn put_vbi(out: &mut BytesMut, mut v: u32) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.put_u8(b);
            return;
        }
        out.put_u8(b | 0x80);
    }
}

#[inline]
fn put_str(out: &mut BytesMut, s: &str) {
    put_bin(out, s.as_bytes());
}

#[inline]
fn put_bin(out: &mut BytesMut, b: &[u8]) {
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

fn user_len(u: &UserProperties) -> usize {
    u.iter().map(|(k, v)| 5 + k.len() + v.len()).sum()
}

fn put_user(out: &mut BytesMut, u: &UserProperties) {
    for (k, v) in u {
        out.put_u8(USER_PROPERTY);
        put_str(out, k);
        put_str(out, v);
    }
}

// Per-property sizes (identifier byte included).
fn l_u8(v: Option<u8>) -> usize {
    v.map_or(0, |_| 2)
}
fn l_u16(v: Option<u16>) -> usize {
    v.map_or(0, |_| 3)
}
fn l_u32(v: Option<u32>) -> usize {
    v.map_or(0, |_| 5)
}
fn l_bin<T: AsRef<[u8]>>(v: &Option<T>) -> usize {
    v.as_ref().map_or(0, |s| 3 + s.as_ref().len())
}

fn w_u8(out: &mut BytesMut, id: u8, v: Option<u8>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u8(v);
    }
}
fn w_u16(out: &mut BytesMut, id: u8, v: Option<u16>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u16(v);
    }
}
fn w_u32(out: &mut BytesMut, id: u8, v: Option<u32>) {
    if let Some(v) = v {
        out.put_u8(id);
        out.put_u32(v);
    }
}
fn w_bin<T: AsRef<[u8]>>(out: &mut BytesMut, id: u8, v: &Option<T>) {
    if let Some(v) = v {
        out.put_u8(id);
        put_bin(out, v.as_ref());
    }
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

fn connect_props_len(p: &ConnectProperties) -> usize {
    l_u32(p.session_expiry_interval)
        + l_u16(p.receive_maximum)
        + l_u32(p.maximum_packet_size)
        + l_u16(p.topic_alias_maximum)
        + l_u8(p.request_response_information)
        + l_u8(p.request_problem_information)
        + l_bin(&p.authentication_method)
        + l_bin(&p.authentication_data)
        + user_len(&p.user_properties)
}

fn will_props_len(p: &WillProperties) -> usize {
    l_u32(p.will_delay_interval)
        + l_u8(p.payload_format_indicator)
        + l_u32(p.message_expiry_interval)
        + l_bin(&p.content_type)
        + l_bin(&p.response_topic)
        + l_bin(&p.correlation_data)
        + user_len(&p.user_properties)
}

fn connect_body_len(c: &Connect, v5: bool) -> usize {
    // Protocol name (2 + 4), level, flags, keep alive.
    let mut n = 10 + 2 + c.client_id.len();
    if v5 {
        n += with_len(connect_props_len(&c.properties));
    }
    if let Some(w) = &c.will {
        n += 2 + w.topic.len() + 2 + w.payload.len();
        if v5 {
            n += with_len(will_props_len(&w.properties));
        }
    }
    if let Some(u) = &c.username {
        n += 2 + u.len();
    }
    if let Some(p) = &c.password {
        n += 2 + p.len();
    }
    n
}

fn put_connect(out: &mut BytesMut, c: &Connect, version: ProtocolVersion) {
    let v5 = version.is_v5();
    put_str(
        out,
        if version == ProtocolVersion::V31 {
            "MQIsdp"
        } else {
            "MQTT"
        },
    );
    out.put_u8(version.level());
    let mut flags = (c.clean_start as u8) << 1;
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos as u8) << 3 | (w.retain as u8) << 5;
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        let p = &c.properties;
        put_vbi(out, connect_props_len(p) as u32);
        w_u32(out, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
        w_u16(out, RECEIVE_MAXIMUM, p.receive_maximum);
        w_u32(out, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
        w_u16(out, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
        w_u8(
            out,
            REQUEST_RESPONSE_INFORMATION,
            p.request_response_information,
        );
        w_u8(
            out,
            REQUEST_PROBLEM_INFORMATION,
            p.request_problem_information,
        );
        w_bin(out, AUTHENTICATION_METHOD, &p.authentication_method);
        w_bin(out, AUTHENTICATION_DATA, &p.authentication_data);
        put_user(out, &p.user_properties);
    }
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        if v5 {
            let p = &w.properties;
            put_vbi(out, will_props_len(p) as u32);
            w_u32(out, WILL_DELAY_INTERVAL, p.will_delay_interval);
            w_u8(out, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
            w_u32(out, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
            w_bin(out, CONTENT_TYPE, &p.content_type);
            w_bin(out, RESPONSE_TOPIC, &p.response_topic);
            w_bin(out, CORRELATION_DATA, &p.correlation_data);
            put_user(out, &p.user_properties);
        }
        put_str(out, &w.topic);
        put_bin(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u);
    }
    if let Some(p) = &c.password {
        put_bin(out, p);
    }
}

// ---------------------------------------------------------------------------------------------
// Other property blocks
// ---------------------------------------------------------------------------------------------

fn connack_props_len(p: &ConnAckProperties) -> usize {
    l_u32(p.session_expiry_interval)
        + l_u16(p.receive_maximum)
        + l_u8(p.maximum_qos)
        + l_u8(p.retain_available)
        + l_u32(p.maximum_packet_size)
        + l_bin(&p.assigned_client_identifier)
        + l_u16(p.topic_alias_maximum)
        + l_bin(&p.reason_string)
        + l_u8(p.wildcard_subscription_available)
        + l_u8(p.subscription_identifiers_available)
        + l_u8(p.shared_subscription_available)
        + l_u16(p.server_keep_alive)
        + l_bin(&p.response_information)
        + l_bin(&p.server_reference)
        + l_bin(&p.authentication_method)
        + l_bin(&p.authentication_data)
        + user_len(&p.user_properties)
}

fn put_connack_props(out: &mut BytesMut, p: &ConnAckProperties) {
    put_vbi(out, connack_props_len(p) as u32);
    w_u32(out, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    w_u16(out, RECEIVE_MAXIMUM, p.receive_maximum);
    w_u8(out, MAXIMUM_QOS, p.maximum_qos);
    w_u8(out, RETAIN_AVAILABLE, p.retain_available);
    w_u32(out, MAXIMUM_PACKET_SIZE, p.maximum_packet_size);
    w_bin(
        out,
        ASSIGNED_CLIENT_IDENTIFIER,
        &p.assigned_client_identifier,
    );
    w_u16(out, TOPIC_ALIAS_MAXIMUM, p.topic_alias_maximum);
    w_bin(out, REASON_STRING, &p.reason_string);
    w_u8(
        out,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        p.wildcard_subscription_available,
    );
    w_u8(
        out,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        p.subscription_identifiers_available,
    );
    w_u8(
        out,
        SHARED_SUBSCRIPTION_AVAILABLE,
        p.shared_subscription_available,
    );
    w_u16(out, SERVER_KEEP_ALIVE, p.server_keep_alive);
    w_bin(out, RESPONSE_INFORMATION, &p.response_information);
    w_bin(out, SERVER_REFERENCE, &p.server_reference);
    w_bin(out, AUTHENTICATION_METHOD, &p.authentication_method);
    w_bin(out, AUTHENTICATION_DATA, &p.authentication_data);
    put_user(out, &p.user_properties);
}

fn publish_props_len(p: &PublishProperties) -> usize {
    l_u8(p.payload_format_indicator)
        + l_u32(p.message_expiry_interval)
        + l_u16(p.topic_alias)
        + l_bin(&p.response_topic)
        + l_bin(&p.correlation_data)
        + user_len(&p.user_properties)
        + p.subscription_identifiers
            .iter()
            .map(|&id| 1 + vbi_len(id as usize))
            .sum::<usize>()
        + l_bin(&p.content_type)
}

fn put_publish_props(out: &mut BytesMut, p: &PublishProperties) {
    // Fast path: the common PUBLISH has no properties at all.
    if p.payload_format_indicator.is_none()
        && p.message_expiry_interval.is_none()
        && p.topic_alias.is_none()
        && p.response_topic.is_none()
        && p.correlation_data.is_none()
        && p.user_properties.is_empty()
        && p.subscription_identifiers.is_empty()
        && p.content_type.is_none()
    {
        out.put_u8(0);
        return;
    }
    put_vbi(out, publish_props_len(p) as u32);
    w_u8(out, PAYLOAD_FORMAT_INDICATOR, p.payload_format_indicator);
    w_u32(out, MESSAGE_EXPIRY_INTERVAL, p.message_expiry_interval);
    w_u16(out, TOPIC_ALIAS, p.topic_alias);
    w_bin(out, RESPONSE_TOPIC, &p.response_topic);
    w_bin(out, CORRELATION_DATA, &p.correlation_data);
    put_user(out, &p.user_properties);
    for &id in &p.subscription_identifiers {
        out.put_u8(SUBSCRIPTION_IDENTIFIER);
        put_vbi(out, id);
    }
    w_bin(out, CONTENT_TYPE, &p.content_type);
}

fn ack_props_len(p: &AckProperties) -> usize {
    l_bin(&p.reason_string) + user_len(&p.user_properties)
}

fn put_ack_props(out: &mut BytesMut, p: &AckProperties) {
    put_vbi(out, ack_props_len(p) as u32);
    w_bin(out, REASON_STRING, &p.reason_string);
    put_user(out, &p.user_properties);
}

fn subscribe_props_len(p: &SubscribeProperties) -> usize {
    p.subscription_identifier
        .map_or(0, |id| 1 + vbi_len(id as usize))
        + user_len(&p.user_properties)
}

fn disconnect_props_len(p: &DisconnectProperties) -> usize {
    l_u32(p.session_expiry_interval)
        + l_bin(&p.reason_string)
        + l_bin(&p.server_reference)
        + user_len(&p.user_properties)
}

fn put_disconnect_props(out: &mut BytesMut, p: &DisconnectProperties) {
    put_vbi(out, disconnect_props_len(p) as u32);
    w_u32(out, SESSION_EXPIRY_INTERVAL, p.session_expiry_interval);
    w_bin(out, REASON_STRING, &p.reason_string);
    w_bin(out, SERVER_REFERENCE, &p.server_reference);
    put_user(out, &p.user_properties);
}

fn auth_props_len(p: &AuthProperties) -> usize {
    l_bin(&p.authentication_method)
        + l_bin(&p.authentication_data)
        + l_bin(&p.reason_string)
        + user_len(&p.user_properties)
}

fn put_auth_props(out: &mut BytesMut, p: &AuthProperties) {
    put_vbi(out, auth_props_len(p) as u32);
    w_bin(out, AUTHENTICATION_METHOD, &p.authentication_method);
    w_bin(out, AUTHENTICATION_DATA, &p.authentication_data);
    w_bin(out, REASON_STRING, &p.reason_string);
    put_user(out, &p.user_properties);
}
