//! The writing half of the record format of `storage::record` that a session needs to note
//! its own changes (`Session::jot`): sub-record kinds and their encoders. They live here, not
//! in `storage`, so `session` does not depend on the storage layer (which reads sessions back).

use bytestring::ByteString;

use super::message::Message;
use super::wallclock as clock;
use crate::protocol::{Publish, PublishProperties, QoS, SubscriptionOptions, Will};

pub const IMAGE: u8 = 1;
pub const DROP: u8 = 2;
pub const SUB: u8 = 3;
pub const UNSUB: u8 = 4;
pub const QUEUE: u8 = 5;
pub const POP: u8 = 6;
pub const INFLIGHT: u8 = 7;
pub const RELEASED: u8 = 8;
pub const DONE: u8 = 9;
pub const IN2: u8 = 10;
pub const IN2_DONE: u8 = 11;
pub const OFFLINE: u8 = 12;
pub const EXPIRY: u8 = 13;

pub fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}

pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

pub fn put_opt<T>(out: &mut Vec<u8>, v: Option<T>, f: impl FnOnce(&mut Vec<u8>, T)) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            f(out, v);
        }
    }
}

pub fn put_opt_str(out: &mut Vec<u8>, v: Option<&ByteString>) {
    put_opt(out, v, |o, s| put_bytes(o, s.as_bytes()));
}

pub fn put_opt_time(out: &mut Vec<u8>, t: Option<std::time::Instant>) {
    put_opt(out, t, |o, t| put_u64(o, clock::wall_ms(t)));
}

/// A counted list of u32 (subscription identifiers).
pub fn put_ids(out: &mut Vec<u8>, ids: &[u32]) {
    put_u32(out, ids.len() as u32);
    for &id in ids {
        put_u32(out, id);
    }
}

/// A counted list of (name, value) strings.
pub fn put_user_properties(out: &mut Vec<u8>, props: &[(ByteString, ByteString)]) {
    put_u32(out, props.len() as u32);
    for (k, v) in props {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

pub fn put_props(out: &mut Vec<u8>, p: &PublishProperties) {
    put_opt(out, p.payload_format_indicator, put_u8);
    put_opt(out, p.message_expiry_interval, put_u32);
    put_opt_str(out, p.response_topic.as_ref());
    put_opt(out, p.correlation_data.as_ref(), |o, b| put_bytes(o, b));
    put_user_properties(out, &p.user_properties);
    put_ids(out, &p.subscription_identifiers);
    put_opt_str(out, p.content_type.as_ref());
}

pub fn put_message(out: &mut Vec<u8>, m: &Message) {
    put_bytes(out, m.topic.as_bytes());
    put_bytes(out, &m.payload);
    put_u8(out, m.qos as u8);
    put_u8(out, m.retain as u8);
    put_props(out, &m.properties);
    put_opt_time(out, m.expires_at);
    put_opt_str(out, m.publisher.as_ref());
}

pub fn put_publish(out: &mut Vec<u8>, p: &Publish) {
    put_u8(out, p.qos as u8);
    put_u8(out, p.retain as u8);
    put_bytes(out, p.topic.as_bytes());
    put_bytes(out, &p.payload);
    put_props(out, &p.properties);
}

pub fn put_will(out: &mut Vec<u8>, w: &Will) {
    put_bytes(out, w.topic.as_bytes());
    put_bytes(out, &w.payload);
    put_u8(out, w.qos as u8);
    put_u8(out, w.retain as u8);
    let p = &w.properties;
    put_opt(out, p.will_delay_interval, put_u32);
    put_opt(out, p.payload_format_indicator, put_u8);
    put_opt(out, p.message_expiry_interval, put_u32);
    put_opt_str(out, p.content_type.as_ref());
    put_opt_str(out, p.response_topic.as_ref());
    put_opt(out, p.correlation_data.as_ref(), |o, b| put_bytes(o, b));
    put_user_properties(out, &p.user_properties);
}

pub fn options_byte(o: &SubscriptionOptions) -> u8 {
    (o.qos as u8)
        | (o.no_local as u8) << 2
        | (o.retain_as_published as u8) << 3
        | o.retain_handling << 4
}

pub fn options_of(b: u8) -> Option<SubscriptionOptions> {
    Some(SubscriptionOptions {
        qos: QoS::from_u8(b & 3)?,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
    })
}

pub fn put_sub(
    out: &mut Vec<u8>,
    filter: &str,
    options: &SubscriptionOptions,
    subscription_id: Option<u32>,
) {
    put_u8(out, SUB);
    put_bytes(out, filter.as_bytes());
    put_u8(out, options_byte(options));
    put_opt(out, subscription_id, put_u32);
}

pub fn put_unsub(out: &mut Vec<u8>, filter: &str) {
    put_u8(out, UNSUB);
    put_bytes(out, filter.as_bytes());
}

/// A message appended to the session queue.
pub fn put_queued(
    out: &mut Vec<u8>,
    qos: QoS,
    retain: bool,
    subscription_ids: &[u32],
    msg: &Message,
) {
    put_u8(out, QUEUE);
    put_u8(out, qos as u8);
    put_u8(out, retain as u8);
    put_ids(out, subscription_ids);
    put_message(out, msg);
}

/// A delivery in flight under packet id `id`: its PUBLISH (None: PUBREL sent, waiting for
/// PUBCOMP), send order and expiry.
pub fn put_inflight(
    out: &mut Vec<u8>,
    id: u16,
    seq: u64,
    expires_at: Option<std::time::Instant>,
    publish: Option<&Publish>,
) {
    put_u8(out, INFLIGHT);
    put_u16(out, id);
    put_u64(out, seq);
    put_opt_time(out, expires_at);
    match publish {
        Some(p) => {
            put_u8(out, 0);
            put_publish(out, p);
        }
        None => put_u8(out, 1),
    }
}

pub fn put_id(out: &mut Vec<u8>, kind: u8, id: u16) {
    put_u8(out, kind);
    put_u16(out, id);
}

/// The connection ended and the session stays: when it expires and when its will is due.
pub fn put_offline(
    out: &mut Vec<u8>,
    expires_at: Option<std::time::Instant>,
    will_due: Option<std::time::Instant>,
) {
    put_u8(out, OFFLINE);
    put_opt_time(out, expires_at);
    put_opt_time(out, will_due);
}
